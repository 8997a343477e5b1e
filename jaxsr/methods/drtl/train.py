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

import dataclasses
import functools
import logging
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxsr.data import pipeline
from jaxsr.deployable import Deployable, describe_data
from jaxsr.degradations import default_auxiliary_tasks, get_task, synthesize_tasks
from jaxsr.methods.drtl import data as drtl_data
from jaxsr.methods.drtl import steps as drtl_steps
from jaxsr.methods.drtl.graph_io import load_graph, save_graph
from jaxsr.methods.drtl.relation import DistortionRelationNet, knowledge_graph, train_drn
from jaxsr.methods.drtl.reweight import (embedding_weights, get_weights, relation_weighted_sum,
                                         uniform_weights)
from jaxsr.model_factory import build_model, init_params
from jaxsr.train import mesh as mesh_lib
from jaxsr.train.evaluate import Evaluator
from jaxsr.train.harness import Run
from jaxsr.train.optim import make_optimizer
from jaxsr.train.state import create_state, deployable_params
from jaxsr.train.steps import make_train_step

GRAPH_JSON, GRAPH_PNG = "relation_graph.json", "relation_graph.png"
PIPELINES = ("pretrain", "meta", "none")


def task_names(config: ml_collections.ConfigDict) -> list[str]:
    names = list(config.drtl.tasks) or default_auxiliary_tasks()
    for n in names:
        get_task(n)  # Unknown names fail here with close matches.
    return names


# ------------------------------------------------------------------------------- relation
def mix_task_batch(names: list[str], key: jax.Array, lr: jax.Array, fraction: float,
                   scale: int, mode: str) -> tuple[jax.Array, jax.Array]:
    """Two-distortion mixtures for DRN training, with soft labels.

    `lr` `(K, B, h, w, 3)` in [0, 1]: row k distorted by task k. With probability `fraction` a
    sample of row j instead gets task j applied on top of row perm[j]'s sample (perm a random
    permutation of the K tasks; at `scale` in 'same' mode, else at scale 1, so sizes hold) and
    the label 0.5 / 0.5 over {j, perm[j]}: the memory bank then learns where mixtures lie, and a
    target with several distortions embeds between their prototypes instead of on the most
    salient one. Returns (images `(K, B, h, w, 3)`, soft labels `(K, B, K)`)."""
    K, B = lr.shape[:2]
    k_perm, k_syn, k_mask = jax.random.split(key, 3)
    perm = jax.random.permutation(k_perm, K)
    second = synthesize_tasks(names, k_syn, lr[perm], scale if mode == "same" else 1, "same")
    onehot = jnp.eye(K, dtype=jnp.float32)
    pure = jnp.broadcast_to(onehot[:, None, :], (K, B, K))
    mixed = jnp.broadcast_to((0.5 * onehot + 0.5 * onehot[perm])[:, None, :], (K, B, K))
    mask = jax.random.bernoulli(k_mask, fraction, (K, B))
    images = jnp.where(mask[..., None, None, None], second, lr)
    return images, jnp.where(mask[..., None], mixed, pure)


def train_relation_net(config, names: list[str]):
    """Trains the DRN + memory bank on the K auxiliary distortions; returns (model, variables).
    Depends only on the auxiliary data and the seed, so one network serves every target."""
    rc, K = config.relation, len(names)
    aux_scale, mode = config.drtl.aux_scale, config.drtl.mode
    pool = _hr_pool(config, rc.crop * (aux_scale if mode == "down" else 1), rc.pool_size)
    per_task = rc.batch_per_task

    mix = float(rc.get("mix_fraction", 0.0))

    def sample(key):
        k_idx, k_syn = jax.random.split(key)
        idx = jax.random.randint(k_idx, (K, per_task), 0, pool.shape[0])
        hr = pool[idx].astype(jnp.float32) / 255.0
        lr = synthesize_tasks(names, k_syn, hr, aux_scale, mode)
        if mix > 0:
            lr, labels = mix_task_batch(names, jax.random.fold_in(key, 1), lr, mix, aux_scale,
                                        mode)
            return lr.reshape((K * per_task,) + lr.shape[2:]), labels.reshape(K * per_task, K)
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
@dataclasses.dataclass
class Context:
    """What every DRTL phase shares: the run, the SR model, the task names, the target split."""
    config: ml_collections.ConfigDict
    run: Run
    model: Any
    names: list[str]
    split: drtl_data.TargetSplit


def _batch_shardings(mesh, shard: str):
    """Shardings for the joint batch: aux (K, B, ...) over tasks or batch; target over batch."""
    aux_axis = 0 if shard == "task" else 1
    return {"aux_hr": mesh_lib.batch_sharding(mesh, aux_axis),
            "target_lr": mesh_lib.batch_sharding(mesh), "target_hr": mesh_lib.batch_sharding(mesh)}


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


def transfer_phase(ctx: Context, params, weights):
    """DRTL-P or DRTL-M from `params`; returns (transferred parameters, final weights (K,)).

    DRTL-M with `meta.pretrain_fraction` > 0 first pre-trains (relation-weighted, checkpoints
    under `transfer_warmstart/`) and meta-learns from there for the remaining steps: MZSR's
    meta-transfer learning, which keeps MAML from settling at the identity mapping."""
    config = ctx.config
    warm = warm_start_steps(config)
    if warm:
        params, weights = _transfer(ctx, params, weights, pipeline="pretrain", num_steps=warm,
                                    name="transfer_warmstart", seed=config.seed)
    # A warm-started MAML phase draws fresh data and step keys (not the warm-up's again).
    return _transfer(ctx, params, weights, pipeline=config.drtl.pipeline,
                     num_steps=config.transfer.num_steps - warm, name="transfer",
                     seed=config.seed + (2 if warm else 0))


def _transfer(ctx: Context, params, weights, *, pipeline: str, num_steps: int, name: str,
              seed: int):
    """`num_steps` relation-weighted steps of `pipeline` ('pretrain' | 'meta'), checkpointed
    under `workdir/name`; returns (parameters, final weights (K,))."""
    config, K = ctx.config, len(ctx.names)
    base, _ = make_optimizer(config.transfer.optim, num_steps)
    optimizer = optax.with_extra_args_support(
        optax.chain(relation_weighted_sum(weights=weights), base))
    mesh_lib.check_batch_size(config.data.batch_size if config.drtl.shard == "batch" else K,
                              ctx.run.mesh, "config.data.batch_size (or K with drtl.shard='task')")
    per_task = config.data.batch_size * (2 if pipeline == "meta" else 1)
    build = drtl_steps.make_meta_step if pipeline == "meta" else drtl_steps.make_pretrain_step
    state, _ = ctx.run.phase(
        name, state=create_state(params, optimizer, seed),
        step_fn=build(ctx.model, optimizer, config, ctx.names),
        batches=drtl_data.joint_iterator(config.data, ctx.split, K, per_task,
                                         config.model.scale, seed),
        num_steps=num_steps, batch_sharding=_batch_shardings(ctx.run.mesh, config.drtl.shard),
        description=f"DRTL-{'M' if pipeline == 'meta' else 'P'} ({config.relation.mode})",
        vector_labels=tuple(ctx.names))
    final_w = np.asarray(jax.device_get(get_weights(state.opt_state)))
    if config.relation.mode == "gradient":
        logging.info("%s: final gradient-relation weights: %s", name,
                     format_weights(ctx.names, final_w))
    return deployable_params(state, config.train.ema_decay > 0), final_w


def finetune_phase(ctx: Context, params, evaluator: Evaluator):
    """Fine-tunes on the few-shot target pairs; returns the fine-tuned parameters."""
    config, fc = ctx.config, ctx.config.finetune
    optimizer, _ = make_optimizer(fc.optim, fc.num_steps)
    state, _ = ctx.run.phase(
        "finetune", state=create_state(params, optimizer, config.seed + 1),
        step_fn=make_train_step(ctx.model, optimizer, config.train.loss, fc.ema_decay),
        batches=drtl_data.target_iterator(config.data, ctx.split, config.model.scale,
                                          config.seed),
        num_steps=fc.num_steps, evaluate=evaluator.for_loop("finetune/", fc.ema_decay > 0),
        eval_every=fc.eval_every, best_metric="psnr_y", description="fine-tune")
    return deployable_params(state, fc.ema_decay > 0)


# ------------------------------------------------------------------------------- entry point
def deployable(config: ml_collections.ConfigDict) -> Deployable:
    """The deployed network: the fine-tuned `config.model` in `workdir/finetune/`."""
    return Deployable.of(config.model, folder="finetune", use_ema=config.finetune.ema_decay > 0,
                         method="drtl", training_data=describe_data(config.data.get("target_dir", ""),
                                                                    config.data.get("target_sample", "")))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Runs DRTL end to end per `config` in `workdir`; returns the summary dict."""
    if config.drtl.pipeline not in PIPELINES:
        raise ValueError(f"config.drtl.pipeline={config.drtl.pipeline!r}; use one of {PIPELINES}")
    run = Run(config, workdir)
    run.describe(deployable(config))
    scale = int(config.model.scale)
    names = task_names(config)
    split = drtl_data.split_target(config.data, scale)
    logging.info("target: %s", drtl_data.describe(split))
    model = build_model(config.model)
    ctx = Context(config=config, run=run, model=model, names=names, split=split)
    evaluator = Evaluator(model, pipeline.eval_pairs(split.heldout), scale, config.eval)
    baseline = evaluator.baseline()
    weights = relation_phase(config, run.workdir, split, names)
    logging.info("relation weights (%s, tau=%g): %s", config.relation.mode, config.relation.tau,
                 format_weights(names, weights))

    params = init_params(model, jax.random.key(config.seed), config.data.hr_patch // scale)
    final_weights = weights
    if config.drtl.pipeline != "none":
        params, final_weights = transfer_phase(ctx, params, weights)
    before, _, _ = evaluator(params)
    params = finetune_phase(ctx, params, evaluator)
    after, per_image, outs = evaluator(params, keep=len(evaluator.pairs))
    run.writer.write_images(config.finetune.num_steps, evaluator.images(outs, "final/"))
    summary = {
        "pipeline": config.drtl.pipeline, "relation_mode": config.relation.mode,
        "shots": split.shot_names, "heldout": split.heldout_names,
        "weights": dict(zip(names, map(float, weights))),
        "final_weights": dict(zip(names, map(float, final_weights))),
        "baseline": baseline, "before_finetune": before, "after_finetune": after,
        "per_image": per_image,
    }
    run.finish(summary)
    _print_table(config, summary, scale, len(evaluator.pairs))
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
    for name, m in rows:  # the 'realsr' protocol measures Y only
        rgb = (f"{m['psnr_rgb']:6.2f}   {m['ssim_rgb']:.4f}" if "psnr_rgb" in m else
               "     -        -")
        lines.append(f"{name:36s} {m['psnr_y']:6.2f}  {m['ssim_y']:.4f}  {rgb}")
    print("\n".join(lines), flush=True)
