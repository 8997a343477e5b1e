"""Supervised SR/restoration training: paired folders or on-the-fly synthetic degradations.

`train_and_evaluate(config, workdir)` builds the model, optimizer and data from the config, and
trains one phase through the run harness (resuming from the newest checkpoint in `workdir`),
with periodic evaluation and checkpoints; it returns the final evaluation metrics next to the
identity/bicubic baseline. The deployed network is `params` (EMA when `train.ema_decay > 0`) of
`workdir/checkpoints/`.
"""
from __future__ import annotations

import functools
import logging
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections

from jaxsr.data import pipeline
from jaxsr.deployable import Deployable, describe_data
from jaxsr.model_factory import build_model, init_params
from jaxsr.pixels import to_float, to_uint8
from jaxsr.train import data as data_lib
from jaxsr.train import mesh as mesh_lib
from jaxsr.train.evaluate import Evaluator
from jaxsr.train.harness import Run
from jaxsr.train.optim import make_optimizer
from jaxsr.train.state import create_state
from jaxsr.train.steps import make_train_step


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


def synthetic_eval_pairs(config, val_source, synthesize_one) -> list:
    """Fixed (seeded) synthetic LR for each held-out HR image, for comparable evaluations."""
    pairs = []
    for i in range(len(val_source)):
        rec = val_source[i]
        hr = rec["hr"]
        key = jax.random.fold_in(jax.random.key(config.seed + 12345), i)
        lr = synthesize_one(key, to_float(jnp.asarray(hr))[None])[0]
        pairs.append((to_uint8(lr), hr, str(rec["name"])))
    return pairs


def deployable(config: ml_collections.ConfigDict) -> Deployable:
    """The deployed network: `config.model` from `workdir/checkpoints/`."""
    return Deployable.of(config.model, folder="", use_ema=config.train.ema_decay > 0,
                         method="supervised",
                         training_data=describe_data(config.data.get("train_dir", ""),
                                                     config.data.get("sample", "")))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains per `config`, writing checkpoints, logs and images to `workdir`."""
    run = Run(config, workdir)
    run.describe(deployable(config))
    scale = int(config.model.scale)
    mesh_lib.check_batch_size(config.data.batch_size, run.mesh)

    synthesize = make_synthesizer(config)
    if synthesize is None:
        train_src, val_src = data_lib.paired_sources(config.data, scale)
        pairs = pipeline.eval_pairs(val_src)
    else:
        train_src, val_src = data_lib.hr_sources(config.data)
        pairs = synthetic_eval_pairs(config, val_src, jax.jit(synthesize))
    batches = data_lib.train_iterator(config.data, train_src, scale, config.seed,
                                      paired=synthesize is None)

    model = build_model(config.model)
    lr_patch = config.data.hr_patch // scale if config.data.mode != "same" else config.data.hr_patch
    params = init_params(model, jax.random.key(config.seed), lr_patch)
    optimizer, _ = make_optimizer(config.optim, config.train.num_steps)
    state = create_state(params, optimizer, config.seed)
    n_params = sum(x.size for x in jax.tree.leaves(params))
    logging.info("model %s: %s parameters", config.model.name, f"{n_params:,}")

    evaluator = Evaluator(model, pairs, scale, config.eval)
    baseline = evaluator.baseline()
    logging.info("baseline (%s) on %d held-out pairs: %s", "identity" if scale == 1 else
                 "bicubic", len(pairs), _fmt(baseline))
    run.writer.write_scalars(0, baseline, prefix="baseline/")
    state, final = run.phase(
        "train", folder="", log_prefix="", state=state,
        step_fn=make_train_step(model, optimizer, config.train.loss, config.train.ema_decay,
                                synthesize),
        batches=batches, num_steps=config.train.num_steps,
        evaluate=evaluator.for_loop("eval/", use_ema=config.train.ema_decay > 0),
        eval_every=config.train.eval_every, best_metric=config.train.best_metric,
        description=f"{config.model.name} x{scale}")
    summary = {"step": int(jax.device_get(state.step)), "baseline": baseline, "final": final,
               "gain_psnr_y": final.get("psnr_y", float("nan")) - baseline["psnr_y"]}
    logging.info("final: %s | baseline: %s | PSNR-Y gain %+.3f dB", _fmt(final), _fmt(baseline),
                 summary["gain_psnr_y"])
    return run.finish(summary)


def _fmt(m: dict) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in m.items())
