"""Evaluation protocols: how a restored image and its ground truth become table numbers.

* `basicsr` (jaxsr's default, `jaxsr.train.evaluate.image_metrics`): whole image, `crop_border`
  = scale, PSNR/SSIM on RGB and on float Y.
* `realsr`: the protocol of the RealSR release (Cai et al., ICCV 2019, `Test/Test.m` with
  `Cal_PSNRSSIM.m`), so numbers compare with RealSR papers:
  1. both images cropped to a multiple of 4 (`modcrop(img, 4)`, top-left kept);
  2. MATLAB `rgb2ycbcr` on uint8 RGB: the Y channel rounded to integers in [16, 235];
  3. no border crop;
  4. an image larger than 1200 px on *both* sides is split into 1200x1200 patches at stride 800
     (starts 0, 800, 1600, ... and always the last one, `H - 1200`, even when it repeats a start,
     as `patchLocation.m` does); smaller images are one patch;
  5. PSNR (peak 255) and SSIM (11x11 Gaussian sigma 1.5, valid, K = 0.01 / 0.03) per patch, and
     the table value is the mean over every patch of the test set (not per image).
  Test.m runs the network on each patch; here the network restores the whole image (tiled, with
  blended overlaps) and the patches are cut from the result, which differs from Test.m only
  within a few pixels of patch borders, and only for images split into patches.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from jaxsr import metrics

PROTOCOLS = ("basicsr", "realsr")
REALSR_MODCROP = 4
REALSR_PATCH = 1200
REALSR_STRIDE = 800
REALSR_METRICS = ("psnr_y", "ssim_y")


def check_protocol(name: str, what: str = "config.eval.protocol") -> str:
    if name not in PROTOCOLS:
        raise ValueError(f"{what}={name!r} is unknown; use one of {list(PROTOCOLS)}")
    return name


def patch_starts(length: int, patch: int = REALSR_PATCH, stride: int = REALSR_STRIDE) -> list[int]:
    """0-based starts of `patch`-long windows along `length` as RealSR's `patchLocation.m`:
    0, stride, 2 stride, ... up to length - patch, then length - patch again (kept if repeated)."""
    if length < patch:
        raise ValueError(f"length {length} is shorter than the patch {patch}")
    return list(range(0, length - patch + 1, stride)) + [length - patch]


def realsr_boxes(height: int, width: int) -> list[tuple[int, int, int, int]]:
    """(y, x, h, w) boxes the RealSR protocol scores in a (height, width) image (after modcrop):
    one box for the whole image unless both sides exceed 1200 px."""
    if height > REALSR_PATCH and width > REALSR_PATCH:
        return [(y, x, REALSR_PATCH, REALSR_PATCH)
                for y in patch_starts(height) for x in patch_starts(width)]
    return [(0, 0, height, width)]


def modcrop(img: np.ndarray, modulo: int = REALSR_MODCROP) -> np.ndarray:
    """Top-left crop to height and width multiples of `modulo` (MATLAB `modcrop`)."""
    h, w = img.shape[:2]
    return img[:h - h % modulo, :w - w % modulo]


def realsr_patch_metrics(output: np.ndarray, target: np.ndarray) -> list[dict[str, float]]:
    """Per-patch {'psnr_y', 'ssim_y'} of two (H, W, 3) uint8 RGB images under the RealSR protocol.

    Their sum over a test set divided by the number of patches is the table value
    (`mean_over_patches`)."""
    for name, img in (("output", output), ("target", target)):
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[-1] != 3:
            raise ValueError(f"realsr protocol: {name} must be (H, W, 3) uint8, got "
                             f"{img.shape} {img.dtype}")
    if output.shape != target.shape:
        raise ValueError(f"realsr protocol: output {output.shape} != target {target.shape}")
    y_out = metrics.rgb_to_y(modcrop(output), rounded=True)
    y_ref = metrics.rgb_to_y(modcrop(target), rounded=True)
    scores = []
    for y, x, h, w in realsr_boxes(*y_out.shape):
        a, b = y_out[y:y + h, x:x + w], y_ref[y:y + h, x:x + w]
        scores.append({"psnr_y": metrics.psnr(a, b), "ssim_y": metrics.ssim(a, b)})
    return scores


def mean_over_patches(per_image: Sequence[Sequence[dict[str, float]]]) -> dict[str, float]:
    """The RealSR table value: the mean of each metric over every patch of every image."""
    patches = [p for image in per_image for p in image]
    if not patches:
        raise ValueError("no patches to average (empty test set)")
    return {k: float(np.mean([p[k] for p in patches])) for k in REALSR_METRICS}
