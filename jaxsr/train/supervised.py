"""Supervised SR/restoration training: paired folders or on-the-fly synthetic degradations.

`train_and_evaluate(config, workdir)` builds the model, optimizer, mesh and data from the config,
resumes from the newest checkpoint in `workdir` if there is one, trains with periodic evaluation
and checkpoints, and returns the final evaluation metrics (with the identity/bicubic baseline).
"""
from __future__ import annotations

import functools
import json
import logging
import pathlib
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxsr.checkpoint import Checkpointer, abstract_like
from jaxsr.data import pipeline
from jaxsr.model_factory import build_model, init_params
from jaxsr.train import data as data_lib
from jaxsr.train import evaluate as eval_lib
from jaxsr.train import mesh as mesh_lib
from jaxsr.train.loop import LoopConfig, run_loop
from jaxsr.train.optim import make_optimizer
from jaxsr.train.state import TrainState, apply_update, create_state, pixel_loss, step_key
from jaxsr.train.writer import MetricWriter, comparison_grid


def to_float(images: jax.Array) -> jax.Array:
    """uint8 [0, 255] -> float32 [0, 1]."""
    return images.astype(jnp.float32) / 255.0


def make_synthesizer(config: ml_collections.ConfigDict) -> Callable | None:
    """(key, hr (B, H, W, 3) float) -> LR made by a random task from config.data.synthetic_tasks
    for each batch, or None for paired data."""
    names = tuple(config.data.synthetic_tasks)
    if not names:
        return None
    from jaxsr import degradations
    scale, mode = int(config.model.scale), config.data.mode
    fns = [functools.partial(degradations.synthesize, name, scale=scale, mode=mode)
           for name in names]

    def synthesize(key: jax.Array, hr: jax.Array) -> jax.Array:
        pick, key = jax.random.split(key)
        index = jax.random.randint(pick, (), 0, len(fns))
        return jax.lax.switch(index, [lambda k, x, f=f: f(k, x) for f in fns], key, hr)
    return synthesize


def make_train_step(model, optimizer, loss_kind: str = "l1", ema_decay: float = 0.0,
                    synthesize: Callable | None = None):
    """The pure train step `(state, batch) -> (state, metrics)` (not yet jitted).

    batch: {'lr': uint8 (B, h, w, 3), 'hr': uint8 (B, H, W, 3)} ('lr' unused with `synthesize`).
    """
    ema_decay = float(ema_decay)

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        hr = to_float(batch["hr"])
        if synthesize is not None:
            lr = synthesize(step_key(state), hr)
        else:
            lr = to_float(batch["lr"])

        def loss_fn(params):
            return pixel_loss(model.apply({"params": params}, lr), hr, loss_kind)

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        new_state = apply_update(state, grads, loss, optimizer, ema_decay)
        return new_state, {"loss": loss, "grad_norm": _global_norm(grads)}
    return train_step


def _global_norm(tree) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


def compile_step(step_fn, mesh, state_sharding, batch_sharding=None):
    """jit with replicated state in/out, sharded batch, and the old state's buffers donated."""
    batch_sharding = batch_sharding or mesh_lib.batch_sharding(mesh)
    return jax.jit(step_fn, in_shardings=(state_sharding, batch_sharding),
                   out_shardings=(state_sharding, mesh_lib.replicated(mesh)), donate_argnums=0)


def make_apply_fn(model, mesh) -> Callable:
    """jitted (params, x) -> model output, clipped to [0, 1]."""
    @jax.jit
    def apply(params, x):
        return jnp.clip(model.apply({"params": params}, x), 0.0, 1.0)
    return apply


def synthetic_eval_pairs(config, val_source, synthesize_one) -> list:
    """Fixed (seeded) synthetic LR for each held-out HR image, for comparable evaluations."""
    pairs = []
    for i in range(len(val_source)):
        rec = val_source[i]
        hr = rec["hr"]
        key = jax.random.fold_in(jax.random.key(config.seed + 12345), i)
        lr = synthesize_one(key, to_float(jnp.asarray(hr))[None])[0]
        pairs.append((eval_lib.to_uint8(np.asarray(lr)), hr, str(rec["name"])))
    return pairs


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains per `config`, writing checkpoints, logs and images to `workdir`."""
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    scale = int(config.model.scale)
    mesh = mesh_lib.make_mesh()
    mesh_lib.check_batch_size(config.data.batch_size, mesh)
    logging.info("devices: %d (%s), processes: %d", mesh.devices.size, jax.default_backend(),
                 jax.process_count())

    synthesize = make_synthesizer(config)
    if synthesize is None:
        train_src, val_src = data_lib.paired_sources(config.data, scale)
        pairs = data_lib.eval_pairs(val_src)
    else:
        train_src, val_src = data_lib.hr_sources(config.data)
        pairs = synthetic_eval_pairs(config, val_src, jax.jit(synthesize))
    loader, batches = data_lib.train_iterator(config.data, train_src, scale, config.seed,
                                              paired=synthesize is None)

    model = build_model(config.model)
    lr_patch = config.data.hr_patch // scale if config.data.mode != "same" else config.data.hr_patch
    params = init_params(model, jax.random.key(config.seed), lr_patch)
    optimizer, schedule = make_optimizer(config.optim, config.train.num_steps)
    state = create_state(params, optimizer, config.seed)
    state_sharding = mesh_lib.replicated(mesh)
    state = jax.device_put(state, state_sharding)
    n_params = sum(x.size for x in jax.tree.leaves(params))
    logging.info("model %s: %s parameters", config.model.name, f"{n_params:,}")

    checkpointer = Checkpointer(workdir, keep=config.train.keep_checkpoints,
                                best_metric=config.train.best_metric)
    if checkpointer.latest_step() is not None:
        state, data_state, meta = checkpointer.restore(None, abstract_like(state))
        batches = pipeline.restore_iterator(loader, data_state["iterator"])
        logging.info("resumed from step %d in %s", meta["step"], checkpointer.directory)

    writer = MetricWriter(workdir)
    if jax.process_index() == 0:
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
    baseline, _, _ = eval_lib.evaluate_pairs(None, pairs, scale)
    writer.write_scalars(int(jax.device_get(state.step)), baseline, prefix="baseline/")
    logging.info("baseline (%s) on %d held-out pairs: %s", "identity" if scale == 1 else
                 "bicubic", len(pairs), _fmt(baseline))

    train_step = compile_step(make_train_step(model, optimizer, config.train.loss,
                                              config.train.ema_decay, synthesize),
                              mesh, state_sharding)
    apply = make_apply_fn(model, mesh)
    ev = config.eval

    def evaluate(st: TrainState) -> tuple[dict, dict]:
        params = st.ema_params if config.train.ema_decay > 0 else st.params
        fn = functools.partial(apply, params)
        mean, _, outs = eval_lib.evaluate_pairs(fn, pairs, scale, tile=ev.tile,
                                                overlap=ev.overlap, batch_tiles=ev.batch_tiles,
                                                keep_outputs=ev.num_images)
        images = {f"eval/{pairs[i][2]}": comparison_grid([pairs[i][0], outs[i], pairs[i][1]])
                  for i in range(len(outs))}
        return mean, images

    put = functools.partial(mesh_lib.put_global_batch, mesh=mesh)
    loop = LoopConfig(num_steps=config.train.num_steps, log_every=config.train.log_every,
                      eval_every=config.train.eval_every,
                      checkpoint_every=config.train.checkpoint_every,
                      description=f"{config.model.name} x{scale}")
    state, final = run_loop(state=state, train_step=train_step, batches=batches, put_batch=put,
                            data_state=lambda: {"iterator": pipeline.iterator_state(batches)}, loop=loop,
                            checkpointer=checkpointer, writer=writer, evaluate=evaluate,
                            config=config)
    checkpointer.close()
    summary = {"step": int(jax.device_get(state.step)), "baseline": baseline, "final": final,
               "gain_psnr_y": final.get("psnr_y", float("nan")) - baseline["psnr_y"]}
    if jax.process_index() == 0:
        (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    logging.info("final: %s | baseline: %s | PSNR-Y gain %+.3f dB", _fmt(final), _fmt(baseline),
                 summary["gain_psnr_y"])
    writer.close()
    return summary


def _fmt(m: dict) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in m.items())
