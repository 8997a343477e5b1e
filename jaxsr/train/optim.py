"""Optimizers and learning-rate schedules from a config (`config.optim`).

Fields (all in configs/*.py):
  name: 'adam' | 'adamw'; lr; b1; b2; eps; weight_decay (adamw);
  schedule: 'constant' | 'multistep' | 'cosine' | 'cosine_restarts';
  milestones (fractions of total steps or step numbers, multistep), gamma (multistep factor);
  restarts (cosine_restarts: number of equal cycles), min_lr_ratio;
  warmup_steps; grad_clip (global norm, 0 = off).
"""
from __future__ import annotations

import ml_collections
import optax

SCHEDULES = ("constant", "multistep", "cosine", "cosine_restarts")
OPTIMIZERS = ("adam", "adamw", "sgd")


def make_schedule(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """Learning rate as a function of the step, with optional linear warm-up."""
    lr, warmup = float(cfg.lr), int(cfg.get("warmup_steps", 0))
    steps = max(1, total_steps - warmup)
    name = cfg.get("schedule", "constant")
    if name == "constant":
        main = optax.constant_schedule(lr)
    elif name == "multistep":
        bounds = {}
        for m in cfg.get("milestones", (0.5, 0.75)):
            step = int(round(m * steps)) if m < 1 else int(m)
            bounds[step] = float(cfg.get("gamma", 0.5))
        main = optax.piecewise_constant_schedule(lr, bounds)
    elif name == "cosine":
        main = optax.cosine_decay_schedule(lr, steps, alpha=float(cfg.get("min_lr_ratio", 0.0)))
    elif name == "cosine_restarts":
        cycles = max(1, int(cfg.get("restarts", 4)))
        length = max(1, steps // cycles)
        alpha = float(cfg.get("min_lr_ratio", 0.0))
        main = optax.join_schedules([optax.cosine_decay_schedule(lr, length, alpha=alpha)
                                     for _ in range(cycles)],
                                    boundaries=[length * (i + 1) for i in range(cycles - 1)])
    else:
        raise ValueError(f"config.optim.schedule={name!r} is unknown; use one of {SCHEDULES}")
    if warmup > 0:
        return optax.join_schedules(
            [optax.linear_schedule(lr / max(warmup, 1), lr, warmup), main], [warmup])
    return main


def make_optimizer(cfg: ml_collections.ConfigDict, total_steps: int,
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Returns (optimizer, schedule) for `config.optim`."""
    schedule = make_schedule(cfg, total_steps)
    name = cfg.get("name", "adam")
    b1, b2, eps = float(cfg.get("b1", 0.9)), float(cfg.get("b2", 0.99)), float(cfg.get("eps", 1e-8))
    if name == "adam":
        opt = optax.adam(schedule, b1=b1, b2=b2, eps=eps)
    elif name == "adamw":
        opt = optax.adamw(schedule, b1=b1, b2=b2, eps=eps,
                          weight_decay=float(cfg.get("weight_decay", 1e-4)))
    elif name == "sgd":
        opt = optax.sgd(schedule, momentum=cfg.get("momentum", None))
    else:
        raise ValueError(f"config.optim.name={name!r} is unknown; use one of {OPTIMIZERS}")
    clip = float(cfg.get("grad_clip", 0.0))
    if clip > 0:
        opt = optax.chain(optax.clip_by_global_norm(clip), opt)
    return opt, schedule
