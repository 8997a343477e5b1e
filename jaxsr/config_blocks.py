"""Config blocks every method's config file shares (`configs/*.py` import them).

Each returns a fresh `ml_collections.ConfigDict` with every field a block of that name has, so
the method's config only states what differs. Field meanings: `jaxsr.model_factory` (model),
`jaxsr.train.optim` (optim), `jaxsr.train.evaluate.Evaluator` (eval), `jaxsr.train.harness`
(train).
"""
from __future__ import annotations

import ml_collections


def model(name: str = "edsr", scale: int = 1, kwargs: dict | None = None,
          global_residual: bool = True, dtype: str = "auto") -> ml_collections.ConfigDict:
    """`config.model`: registry name, scale, compute dtype ('auto': bfloat16 on GPU/TPU, float32
    on CPU; parameters, losses and metrics stay float32), global residual, constructor kwargs
    (default: the small CPU-sized EDSR, 4 blocks of 32 features)."""
    kwargs = {"num_blocks": 4, "features": 32} if kwargs is None else kwargs
    return ml_collections.ConfigDict({
        "name": name, "scale": scale, "dtype": dtype, "global_residual": global_residual,
        "residual_init": "rezero", "scan_blocks": True,
        "kwargs": ml_collections.ConfigDict(kwargs)})


def optim(lr: float, schedule: str = "cosine", warmup: int = 0, min_lr_ratio: float = 0.05,
          **overrides) -> ml_collections.ConfigDict:
    """`config.optim` (or a phase's): Adam(b1 0.9, b2 0.99) with `schedule`; every field of
    `jaxsr.train.optim` present, `overrides` replacing any of them."""
    block = ml_collections.ConfigDict({
        "name": "adam", "lr": lr, "b1": 0.9, "b2": 0.99, "eps": 1e-8, "weight_decay": 0.0,
        "schedule": schedule, "milestones": (0.5, 0.75), "gamma": 0.5, "restarts": 4,
        "min_lr_ratio": min_lr_ratio, "warmup_steps": warmup, "grad_clip": 0.0})
    for key, value in overrides.items():
        if key not in block:
            raise KeyError(f"optim block has no field {key!r}; fields: {sorted(block)}")
        block[key] = value
    return block


def evaluation(tile: int = 128, overlap: int = 16, batch_tiles: int = 4,
               num_images: int = 2, device_metrics: bool | str = "auto",
               protocol: str = "basicsr") -> ml_collections.ConfigDict:
    """`config.eval`: tiled full-image evaluation (tile and overlap in LR pixels, tiles per
    forward call; 0 = the backend's default, `jaxsr.inference.default_tiling`), how many example
    images to save, and whether periodic evaluation in the loop measures PSNR/SSIM on the device
    in float32 (True / False / 'auto': on GPU/TPU, not on CPU; final tables always use the
    float64 host path), and the metric protocol: 'basicsr' (RGB and Y, border = scale) or 'realsr'
    (the RealSR release's Test.m: `jaxsr.eval_protocols`)."""
    return ml_collections.ConfigDict({"tile": tile, "overlap": overlap,
                                      "batch_tiles": batch_tiles, "num_images": num_images,
                                      "device_metrics": device_metrics, "protocol": protocol})


def train(log_every: int = 25, checkpoint_every: int = 100, keep_checkpoints: int = 2,
          loss: str = "l1", ema_decay: float = 0.0, **extra) -> ml_collections.ConfigDict:
    """`config.train`: what every harness phase reads (log and checkpoint cadence, checkpoints
    kept), the pixel loss and the EMA of the deployed network; `extra` adds method fields."""
    return ml_collections.ConfigDict({
        "loss": loss, "ema_decay": ema_decay, "log_every": log_every,
        "checkpoint_every": checkpoint_every, "keep_checkpoints": keep_checkpoints, **extra})
