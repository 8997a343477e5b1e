"""DRTL pipeline: relation graph -> relation-weighted transfer -> few-shot fine-tune -> evaluate.

Phases (each resumable; re-running the same command continues where it stopped):
  1. relation: train the Distortion Relation Network + memory bank on the K auxiliary
     distortions, embed the few-shot target LR crops, write `relation_graph.json/.png`, and set
     the relation weights (`relation.mode`: embedding | gradient | uniform).
  2. transfer (`drtl.pipeline`): 'pretrain' (DRTL-P), 'meta' (DRTL-M) or 'none' (target-only);
     checkpoints under `transfer/` (DRTL-M's warm-start pre-training: `transfer_warmstart/`).
  3. finetune on the N target pairs; checkpoints under `finetune/`.
  4. evaluate the held-out target pairs at full size (tiled): identity/bicubic, after transfer,
     after fine-tuning; `summary.json` and a printed table.
"""
from __future__ import annotations

import functools
import json
import logging
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxsr.checkpoint import Checkpointer, abstract_like
from jaxsr.data import pipeline
from jaxsr.degradations import default_auxiliary_tasks, get_task, synthesize_tasks
from jaxsr.methods.drtl import data as drtl_data
from jaxsr.methods.drtl import steps as drtl_steps
from jaxsr.methods.drtl.graph_io import load_graph, save_graph
from jaxsr.methods.drtl.relation import DistortionRelationNet, knowledge_graph, train_drn
from jaxsr.methods.drtl.reweight import (embedding_weights, get_weights, relation_weighted_sum,
                                         uniform_weights)
from jaxsr.model_factory import build_model, init_params
from jaxsr.train import evaluate as eval_lib
from jaxsr.train import mesh as mesh_lib
from jaxsr.train.loop import LoopConfig, run_loop
from jaxsr.train.optim import make_optimizer
from jaxsr.train.state import create_state
from jaxsr.train.supervised import compile_step, make_apply_fn, make_train_step
from jaxsr.train.writer import MetricWriter, comparison_grid

GRAPH_JSON, GRAPH_PNG = "relation_graph.json", "relation_graph.png"
PIPELINES = ("pretrain", "meta", "none")


def task_names(config: ml_collections.ConfigDict) -> list[str]:
    names = list(config.drtl.tasks) or default_auxiliary_tasks()
    for n in names:
        get_task(n)  # Unknown names fail here with close matches.
    return names


# ------------------------------------------------------------------------------- relation
def train_relation_net(config, names: list[str]):
    """Trains the DRN + memory bank on the K auxiliary distortions; returns (model, variables).
    Depends only on the auxiliary data and the seed, so one network serves every target."""
    rc, K = config.relation, len(names)
    aux_scale, mode = config.drtl.aux_scale, config.drtl.mode
    pool = _hr_pool(config, rc.crop * (aux_scale if mode == "down" else 1), rc.pool_size)
    per_task = rc.batch_per_task

    def sample(key):
        k_idx, k_syn = jax.random.split(key)
        idx = jax.random.randint(k_idx, (K, per_task), 0, pool.shape[0])
        hr = pool[idx].astype(jnp.float32) / 255.0
        lr = synthesize_tasks(names, k_syn, hr, aux_scale, mode)
        return lr.reshape((K * per_task,) + lr.shape[2:]), jnp.repeat(jnp.arange(K), per_task)

    model = DistortionRelationNet(num_tasks=K, embed_dim=rc.embed_dim, widths=tuple(rc.widths),
                                  input_mode=rc.input_mode)
    result = train_drn(jax.random.key(config.seed + 7), sample, rc.drn_steps, model=model,
                       learning_rate=rc.drn_lr, logit_scale=rc.logit_scale,
                       steps_per_call=rc.steps_per_call)
    acc = float(jnp.mean(result.accuracies[-max(1, rc.drn_steps // 10):]))
    logging.info("DRN: %d steps, train accuracy (last 10%%) %.3f over %d distortions",
                 rc.drn_steps, acc, K)
    return model, result.params


def relation_weights_for_target(config, workdir: pathlib.Path, split, names: list[str],
                                drn) -> np.ndarray:
    """Knowledge graph of the target (JSON + heatmap in `workdir`) and the initial weights (K,):
    softmax(cos(e_T, M) / tau) in 'embedding' mode, uniform otherwise ('gradient' refreshes
    them inside the train step)."""
    rc, K = config.relation, len(names)
    model, params = drn
    crops = drtl_data.target_lr_crops(split, rc.crop, rc.target_crops_per_image, config.seed)
    graph = jax.jit(functools.partial(knowledge_graph, model))(
        params, jnp.asarray(crops, jnp.float32) / 255.0)
    if rc.mode == "embedding":
        weights = embedding_weights(graph["target_aux"], rc.tau, clip_negative=rc.clip_negative)
    else:
        weights = uniform_weights(K)
    weights = np.asarray(weights, np.float32)
    if jax.process_index() == 0:
        save_graph(workdir / GRAPH_JSON, workdir / GRAPH_PNG, graph, names, weights, tau=rc.tau,
                   mode=rc.mode)
    return weights


def relation_phase(config, workdir: pathlib.Path, split, names: list[str]) -> np.ndarray:
    """Loads the saved graph's weights, or trains the DRN and builds the graph; returns (K,)."""
    graph_path = workdir / GRAPH_JSON
    if graph_path.exists():
        saved = load_graph(graph_path)
        if saved["task_names"] == names and saved.get("mode") == config.relation.mode:
            logging.info("relation graph loaded from %s", graph_path)
            return np.asarray(saved["weights"], np.float32)
    if config.relation.mode == "uniform" and not config.relation.build_graph_for_uniform:
        return np.asarray(uniform_weights(len(names)))
    return relation_weights_for_target(config, workdir, split, names,
                                       train_relation_net(config, names))


def _hr_pool(config, size: int, count: int) -> jnp.ndarray:
    """(count, size, size, 3) uint8 random crops of the auxiliary HR images, on device."""
    source = drtl_data.aux_source(config.data)
    rng = np.random.default_rng(config.seed)
    crops = []
    for i in range(count):
        hr = source[i % len(source)]["hr"]
        h, w = hr.shape[:2]
        if h < size or w < size:
            raise ValueError(f"auxiliary image {source[i % len(source)]['name']} is {h}x{w}, "
                             f"smaller than the crop {size}; lower config.relation.crop")
        y, x = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
        crops.append(hr[y:y + size, x:x + size])
    return jnp.asarray(np.stack(crops))


def format_weights(names, weights) -> str:
    order = np.argsort(-np.asarray(weights))
    return " | ".join(f"{names[i]} {weights[i]:.3f}" for i in order)


# ------------------------------------------------------------------------------- phases
def _batch_shardings(mesh, shard: str):
    """Shardings for the joint batch: aux (K, B, ...) over tasks or batch; target over batch."""
    aux_axis = 0 if shard == "task" else 1
    return {"aux_hr": mesh_lib.batch_sharding(mesh, aux_axis),
            "target_lr": mesh_lib.batch_sharding(mesh), "target_hr": mesh_lib.batch_sharding(mesh)}


def _put(batch: dict, shardings: dict) -> dict:
    return {k: jax.make_array_from_process_local_data(shardings[k], np.asarray(v))
            for k, v in batch.items()}


def _resume(checkpointer: Checkpointer, state, iterator, name: str, num_steps: int):
    """Restores the newest checkpoint; the data position only matters for an unfinished phase
    (a finished, shared transfer may be reused with another target split)."""
    if checkpointer.latest_step() is None:
        return state
    state, data_state, meta = checkpointer.restore(None, abstract_like(state))
    if data_state and meta["step"] < num_steps:
        iterator.set_state(data_state)
    logging.info("%s: resumed from step %d", name, meta["step"])
    return state


def warm_start_steps(config) -> int:
    """DRTL-M warm start: relation-weighted pre-training steps run before MAML, counted inside
    `transfer.num_steps` (round(meta.pretrain_fraction * num_steps), leaving MAML at least one
    step; 0 for DRTL-P/none)."""
    if config.drtl.pipeline != "meta":
        return 0
    fraction = float(config.meta.get("pretrain_fraction", 0.0))
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"config.meta.pretrain_fraction={fraction}; use 0 <= f < 1 (0 = MAML "
                         "from the initialisation, 0.5 = half the transfer steps pre-training)")
    num_steps = config.transfer.num_steps
    return max(0, min(int(round(fraction * num_steps)), num_steps - 1))


def transfer_phase(config, workdir, model, params, names, weights, split, mesh, writer):
    """DRTL-P or DRTL-M from `params`; returns (transferred parameters, final weights (K,)).

    DRTL-M with `meta.pretrain_fraction` > 0 first pre-trains (relation-weighted, checkpoints
    under `transfer_warmstart/`) and meta-learns from there for the remaining steps: MZSR's
    meta-transfer learning, which keeps MAML from settling at the identity mapping."""
    warm = warm_start_steps(config)
    total = config.transfer.num_steps
    if warm:
        params, weights = _transfer(config, workdir, model, params, names, weights, split, mesh,
                                    writer, pipeline="pretrain", num_steps=warm,
                                    name="transfer_warmstart", seed=config.seed)
    # A warm-started MAML phase draws fresh data and step keys (not the warm-up's again).
    return _transfer(config, workdir, model, params, names, weights, split, mesh, writer,
                     pipeline=config.drtl.pipeline, num_steps=total - warm, name="transfer",
                     seed=config.seed + (2 if warm else 0))


def _transfer(config, workdir, model, params, names, weights, split, mesh, writer, *,
              pipeline: str, num_steps: int, name: str, seed: int):
    """`num_steps` relation-weighted steps of `pipeline` ('pretrain' | 'meta'), checkpointed
    under `workdir/name`; returns (parameters, final weights (K,))."""
    tc, K = config.transfer, len(names)
    base, _ = make_optimizer(tc.optim, num_steps)
    optimizer = optax.with_extra_args_support(
        optax.chain(relation_weighted_sum(weights=weights), base))
    state = jax.device_put(create_state(params, optimizer, seed), mesh_lib.replicated(mesh))
    shardings = _batch_shardings(mesh, config.drtl.shard)
    mesh_lib.check_batch_size(config.data.batch_size if config.drtl.shard == "batch" else K,
                              mesh, "config.data.batch_size (or K with drtl.shard='task')")
    per_task = config.data.batch_size * (2 if pipeline == "meta" else 1)
    batches = drtl_data.joint_iterator(config.data, split, K, per_task, config.model.scale, seed)
    ckpt = Checkpointer(workdir / name, keep=config.train.keep_checkpoints, best_metric=None)
    state = _resume(ckpt, state, batches, name, num_steps)
    build = drtl_steps.make_meta_step if pipeline == "meta" else drtl_steps.make_pretrain_step
    step = compile_step(build(model, optimizer, config, names), mesh, mesh_lib.replicated(mesh),
                        shardings)
    loop = LoopConfig(num_steps=num_steps, log_every=config.train.log_every,
                      eval_every=10 ** 12, checkpoint_every=config.train.checkpoint_every,
                      description=f"DRTL-{'M' if pipeline == 'meta' else 'P'} "
                                  f"({config.relation.mode})", vector_labels=tuple(names))
    state, _ = run_loop(state=state, train_step=step, batches=batches,
                        put_batch=functools.partial(_put, shardings=shardings),
                        data_state=batches.get_state, loop=loop, checkpointer=ckpt,
                        writer=writer.scoped(f"{name}/"), config=config)
    ckpt.close()
    final_w = np.asarray(jax.device_get(get_weights(state.opt_state)))
    if config.relation.mode == "gradient":
        logging.info("%s: final gradient-relation weights: %s", name,
                     format_weights(names, final_w))
    return (state.ema_params if config.train.ema_decay > 0 else state.params), final_w


def finetune_phase(config, workdir, model, params, split, mesh, writer, evaluate):
    """Fine-tunes on the few-shot target pairs; returns the fine-tuned parameters."""
    fc = config.finetune
    optimizer, _ = make_optimizer(fc.optim, fc.num_steps)
    state = jax.device_put(create_state(params, optimizer, config.seed + 1),
                           mesh_lib.replicated(mesh))
    loader, batches = drtl_data.target_iterator(config.data, split, config.model.scale,
                                                config.seed)
    ckpt = Checkpointer(workdir / "finetune", keep=config.train.keep_checkpoints,
                        best_metric="psnr_y")
    if ckpt.latest_step() is not None:
        state, data_state, meta = ckpt.restore(None, abstract_like(state))
        batches = pipeline.restore_iterator(loader, data_state["iterator"])
        logging.info("finetune: resumed from step %d", meta["step"])
    step = compile_step(make_train_step(model, optimizer, config.train.loss, fc.ema_decay), mesh,
                        mesh_lib.replicated(mesh))
    loop = LoopConfig(num_steps=fc.num_steps, log_every=config.train.log_every,
                      eval_every=fc.eval_every, checkpoint_every=config.train.checkpoint_every,
                      description="fine-tune")
    state, _ = run_loop(
        state=state, train_step=step, batches=batches,
        put_batch=functools.partial(mesh_lib.put_global_batch, mesh=mesh),
        data_state=lambda: {"iterator": pipeline.iterator_state(batches)}, loop=loop,
        checkpointer=ckpt, writer=writer.scoped("finetune/"),
        evaluate=lambda st: evaluate(st.ema_params if fc.ema_decay > 0 else st.params),
        config=config)
    ckpt.close()
    return state.ema_params if fc.ema_decay > 0 else state.params


# ------------------------------------------------------------------------------- entry point
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Runs DRTL end to end per `config` in `workdir`; returns the summary dict."""
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if config.drtl.pipeline not in PIPELINES:
        raise ValueError(f"config.drtl.pipeline={config.drtl.pipeline!r}; use one of {PIPELINES}")
    scale = int(config.model.scale)
    mesh = mesh_lib.make_mesh()
    names = task_names(config)
    split = drtl_data.split_target(config.data, scale)
    logging.info("target: %s", drtl_data.describe(split))
    pairs = [(r["lr"], r["hr"], str(r["name"]))
             for r in (split.heldout[i] for i in range(len(split.heldout)))]
    writer = MetricWriter(workdir)
    if jax.process_index() == 0:
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))

    model = build_model(config.model)
    apply = make_apply_fn(model, mesh)
    ev = config.eval

    def evaluate(params, keep: int = 0):
        mean, per_image, outs = eval_lib.evaluate_pairs(
            functools.partial(apply, params), pairs, scale, tile=ev.tile,
            overlap=ev.overlap, batch_tiles=ev.batch_tiles, keep_outputs=keep)
        return mean, per_image, outs

    def evaluate_for_loop(params):
        mean, _, outs = evaluate(params, keep=ev.num_images)
        return mean, {f"finetune/{pairs[i][2]}": comparison_grid([pairs[i][0], outs[i],
                                                                 pairs[i][1]])
                      for i in range(len(outs))}

    baseline, _, _ = eval_lib.evaluate_pairs(None, pairs, scale)
    weights = relation_phase(config, workdir, split, names)
    logging.info("relation weights (%s, tau=%g): %s", config.relation.mode, config.relation.tau,
                 format_weights(names, weights))

    lr_patch = config.data.hr_patch // scale
    params = init_params(model, jax.random.key(config.seed), lr_patch)
    final_weights = weights
    if config.drtl.pipeline != "none":
        params, final_weights = transfer_phase(config, workdir, model, params, names, weights,
                                               split, mesh, writer)
    before, _, _ = evaluate(params)
    params = finetune_phase(config, workdir, model, params, split, mesh, writer,
                            evaluate_for_loop)
    after, per_image, outs = evaluate(params, keep=len(pairs))
    if jax.process_index() == 0:
        for (lr, hr, name), out in zip(pairs, outs):
            writer.write_images(config.finetune.num_steps,
                                {f"final/{name}": comparison_grid([lr, out, hr])})
    summary = {
        "pipeline": config.drtl.pipeline, "relation_mode": config.relation.mode,
        "shots": split.shot_names, "heldout": split.heldout_names,
        "weights": dict(zip(names, map(float, weights))),
        "final_weights": dict(zip(names, map(float, final_weights))),
        "baseline": baseline, "before_finetune": before, "after_finetune": after,
        "per_image": per_image,
    }
    if jax.process_index() == 0:
        (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    _print_table(config, summary, scale, len(pairs))
    writer.close()
    return summary


def _print_table(config, summary, scale, n):
    label = {"pretrain": "DRTL-P", "meta": "DRTL-M", "none": "target-only"}[config.drtl.pipeline]
    if config.relation.mode == "uniform" and config.drtl.pipeline != "none":
        label = "uniform " + label.split("-")[1].replace("P", "pre-training").replace("M", "MAML")
    rows = [("identity" if scale == 1 else "bicubic", summary["baseline"]),
            (f"{label} (before fine-tune)", summary["before_finetune"]),
            (f"{label} + fine-tune", summary["after_finetune"])]
    lines = [f"held-out target pairs: {n}; shots: {len(summary['shots'])}",
             f"{'':36s} PSNR-Y  SSIM-Y  PSNR-RGB SSIM-RGB"]
    for name, m in rows:
        lines.append(f"{name:36s} {m['psnr_y']:6.2f}  {m['ssim_y']:.4f}  {m['psnr_rgb']:6.2f}   "
                     f"{m['ssim_rgb']:.4f}")
    print("\n".join(lines), flush=True)
