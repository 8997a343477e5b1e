"""Full-image evaluation on held-out pairs: PSNR/SSIM on RGB and Y (BasicSR conventions).

Images are restored whole by fixed-size tiles (`jaxsr.inference.restore_image`), so every image
size shares one compiled forward pass. Metrics use the float64 numpy path of `jaxsr.metrics` on
uint8-rounded outputs, as published tables do (`Evaluator.__call__`, the final tables).

Periodic evaluation inside the training loop (`Evaluator.for_loop`) takes the device path
(`config.eval.device_metrics`: True, False, or 'auto', the default: on GPU/TPU, not on a CPU,
where XLA's float32 SSIM measured ~2x slower than numpy's float64): the output is restored, quantised to uint8 and
measured on the device (`jaxsr.metrics.psnr_batch` / `ssim_batch` in float32, same crop and Y
conventions), and only the metric scalars and the few example images come back to the host. The
numbers agree with the float64 path to ~1e-3 dB PSNR and ~1e-4 SSIM (tests/test_metrics.py).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsr import eval_protocols, metrics
from jaxsr.inference import restore_device, restore_image
from jaxsr.pixels import to_uint8
from jaxsr.train.state import deployable_params
from jaxsr.train.steps import make_apply_fn
from jaxsr.train.writer import comparison_grid

METRIC_NAMES = ("psnr_rgb", "ssim_rgb", "psnr_y", "ssim_y")


def image_metrics(output: np.ndarray, target: np.ndarray, crop_border: int) -> dict[str, float]:
    """PSNR/SSIM of two (H, W, 3) uint8 images on RGB and on (float) Y."""
    out, ref = output.astype(np.float64), target.astype(np.float64)
    return {
        "psnr_rgb": metrics.psnr(out, ref, crop_border=crop_border),
        "ssim_rgb": metrics.ssim(out, ref, crop_border=crop_border),
        "psnr_y": metrics.psnr(out, ref, crop_border=crop_border, test_y_channel=True),
        "ssim_y": metrics.ssim(out, ref, crop_border=crop_border, test_y_channel=True),
    }


def mean_metrics(per_image: Sequence[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([m[k] for m in per_image])) for k in METRIC_NAMES}


def baseline_output(lr: np.ndarray, scale: int) -> np.ndarray:
    """The identity (scale 1) or MATLAB-bicubic (scale > 1) estimate of HR from uint8 LR."""
    if scale == 1:
        return lr
    from jaxsr.imresize import imresize
    up = imresize(lr.astype(np.float32) / 255.0, scale=scale)
    return to_uint8(np.asarray(up))


@functools.partial(jax.jit, static_argnames=("hw", "crop"))
def _device_image_metrics(out: jax.Array, hr: jax.Array, hw: tuple[int, int],
                          crop: int) -> jax.Array:
    """(Hb, Wb, 3) uint8 device output (padded; the image is out[:h, :w]), (h, w, 3) uint8 HR ->
    (4,) float32 metrics in METRIC_NAMES order (float32 on [0, 255], BasicSR conventions)."""
    x = out[:hw[0], :hw[1]].astype(jnp.float32)[None]
    y = hr.astype(jnp.float32)[None]
    kw = dict(crop_border=crop, data_range=255.0)
    return jnp.concatenate([metrics.psnr_batch(x, y, **kw), metrics.ssim_batch(x, y, **kw),
                            metrics.psnr_batch(x, y, y_channel=True, **kw),
                            metrics.ssim_batch(x, y, y_channel=True, **kw)])


def _evaluate_on_device(apply_fn, pairs, scale: int, crop: int, tile: int | None, overlap: int,
                        batch_tiles: int | None, keep_outputs: int):
    """`evaluate_pairs` with restoration, uint8 rounding and metrics on the device; one
    transfer of the (N, 4) metrics and the kept outputs at the end."""
    values, kept, names = [], [], []
    for lr, hr, name in pairs:
        out, hw = restore_device(apply_fn, lr.astype(np.float32) / 255.0, scale, tile, overlap,
                                 batch_tiles, dtype=np.uint8)
        if hw != hr.shape[:2]:
            raise ValueError(f"pair {name!r}: output {hw + (3,)} != HR {hr.shape}; is the config "
                             f"scale ({scale}) right for this data?")
        values.append(_device_image_metrics(out, jnp.asarray(hr), hw, crop))
        names.append(name)
        if len(kept) < keep_outputs:
            kept.append((out, hw))
    values, kept = jax.device_get((values, kept))
    per_image = [{"name": name, **{k: float(v) for k, v in zip(METRIC_NAMES, row)}}
                 for name, row in zip(names, values)]
    outputs = [np.ascontiguousarray(np.asarray(o)[:hw[0], :hw[1]]) for o, hw in kept]
    return mean_metrics(per_image), per_image, outputs


def evaluate_pairs(apply_fn: Callable[[jax.Array], jax.Array] | None,
                   pairs: Sequence[tuple[np.ndarray, np.ndarray, str]], scale: int,
                   crop_border: int | None = None, tile: int | None = 128, overlap: int = 16,
                   batch_tiles: int | None = 4, keep_outputs: int = 0,
                   device_metrics: bool = False, mode: str = "auto",
                   protocol: str = "basicsr"):
    """Evaluates a model (or, with apply_fn=None, the identity/bicubic baseline) on full pairs.

    Args:
      apply_fn: jitted (b, tile, tile, 3) [0,1] -> (b, tile*s, tile*s, 3), or None for baseline.
      pairs: (lr uint8 (h, w, 3), hr uint8 (h*s, w*s, 3), name) triples.
      crop_border: pixels ignored at each border (default: the scale).
      tile, overlap, batch_tiles: tiling (`jaxsr.inference.restore_image`; None = its default).
      keep_outputs: how many restored uint8 outputs to return (for example images).
      device_metrics: restore, round to uint8 and measure on the device in float32 (fast, for
        evaluation during training); default False: float64 metrics on the host (tables).
      mode: `restore_image` mode of the host-metrics path ('auto', 'device', 'host').
      protocol: 'basicsr' (PSNR/SSIM on RGB and Y, `crop_border`, mean over images) or
        'realsr' (`jaxsr.eval_protocols`: the RealSR release's Test.m; psnr_y/ssim_y only, on
        1200-px patches of large images, mean over every patch; host float64 metrics).
    Returns:
      (mean metrics dict, per-image list of dicts with 'name', outputs list).
    """
    crop = scale if crop_border is None else crop_border
    eval_protocols.check_protocol(protocol)
    if protocol == "realsr":
        device_metrics = False
    if device_metrics and apply_fn is not None:
        return _evaluate_on_device(apply_fn, pairs, scale, crop, tile, overlap, batch_tiles,
                                   keep_outputs)
    per_image, outputs = [], []
    for lr, hr, name in pairs:
        if apply_fn is None:
            out = baseline_output(lr, scale)
        else:
            out = to_uint8(restore_image(apply_fn, lr.astype(np.float32) / 255.0, scale,
                                         tile=tile, overlap=overlap, batch_tiles=batch_tiles,
                                         mode=mode))
        if out.shape != hr.shape:
            raise ValueError(f"pair {name!r}: output {out.shape} != HR {hr.shape}; is the config "
                             f"scale ({scale}) right for this data?")
        if protocol == "realsr":
            patches = eval_protocols.realsr_patch_metrics(out, hr)
            per_image.append({"name": name, **eval_protocols.mean_over_patches([patches]),
                              "patches": patches})
        else:
            per_image.append({"name": name, **image_metrics(out, hr, crop)})
        if len(outputs) < keep_outputs:
            outputs.append(out)
    if protocol == "realsr":
        return (eval_protocols.mean_over_patches([m["patches"] for m in per_image]), per_image,
                outputs)
    return mean_metrics(per_image), per_image, outputs


Pairs = Sequence[tuple[np.ndarray, np.ndarray, str]]


class Evaluator:
    """Evaluation of one network on fixed held-out pairs, for the loop and the final tables.

    pairs: (lr uint8 (h, w, 3), hr uint8 (h*s, w*s, 3), name); eval_cfg: `config.eval` (tile,
    overlap, batch_tiles, num_images, device_metrics, protocol). The forward pass is jitted once for all
    images; `__call__` (final tables) measures in float64 on the host, `for_loop` (periodic
    evaluation) on the device per `eval_cfg.device_metrics` (True, False, 'auto': not on CPU).
    """

    def __init__(self, model, pairs: Pairs, scale: int, eval_cfg: Any):
        self.pairs, self.scale, self.cfg = list(pairs), int(scale), eval_cfg
        self._apply = make_apply_fn(model)

    @property
    def protocol(self) -> str:
        return str(self.cfg.get("protocol", "basicsr"))

    def baseline(self) -> dict[str, float]:
        """Mean metrics of the identity (scale 1) or bicubic estimate."""
        return evaluate_pairs(None, self.pairs, self.scale, protocol=self.protocol)[0]

    def __call__(self, params: Any, keep: int = 0, device_metrics: bool = False):
        """(mean metrics, per-image metrics, the first `keep` uint8 outputs) of `params`;
        float64 host metrics unless `device_metrics`."""
        ev = self.cfg
        return evaluate_pairs(functools.partial(self._apply, params), self.pairs, self.scale,
                              tile=ev.tile or None, overlap=ev.overlap,
                              batch_tiles=ev.batch_tiles or None, keep_outputs=keep,
                              device_metrics=device_metrics, protocol=self.protocol)

    def images(self, outputs: Sequence[np.ndarray], prefix: str) -> dict[str, np.ndarray]:
        """{prefix + name: LR | output | HR side by side} for the first len(outputs) pairs."""
        return {f"{prefix}{name}": comparison_grid([lr, out, hr])
                for (lr, hr, name), out in zip(self.pairs, outputs)}

    def for_loop(self, prefix: str, use_ema: bool) -> Callable[[Any], tuple[dict, dict]]:
        """`evaluate(state) -> (mean metrics, example images)` for `run_loop`."""
        on_device = str(getattr(self.cfg, "device_metrics", "auto")).lower()
        if on_device not in ("auto", "true", "false"):
            raise ValueError(f"config.eval.device_metrics={on_device!r}: use 'auto' (device "
                             "metrics on GPU/TPU, not on CPU), 'true' or 'false'")
        on_device = (jax.default_backend() != "cpu" if on_device == "auto"  # XLA's float32
                     else on_device == "true")  # SSIM is ~2x slower than numpy's on a CPU

        def evaluate(state):
            mean, _, outs = self(deployable_params(state, use_ema), keep=self.cfg.num_images,
                                 device_metrics=on_device)
            return mean, self.images(outs, prefix)
        return evaluate
