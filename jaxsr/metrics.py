"""PSNR / SSIM with the BasicSR / MATLAB conventions used by SR papers.

Two paths that give the same numbers:

* numpy float64 (host, for evaluation tables): `psnr`, `ssim`, `rgb_to_y` on single images
  (H, W, C) or (H, W) in [0, 255] (uint8 or float).
* JAX float32 (device, jittable, batched): `psnr_batch`, `ssim_batch` on (B, H, W, C) in
  [0, 1] (or [0, 255] with `data_range=255.0`); they scale to [0, 255] internally so their
  values equal the numpy path (to float32 precision, ~1e-4 dB / ~1e-6 SSIM).

Conventions: `crop_border` pixels are removed on each side before measuring; the Y channel is
BT.601 `Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255` (MATLAB `rgb2ycbcr` on [0, 255]);
`y_rounded=True` rounds Y to an integer as MATLAB does for uint8 images (the classic SR tables,
e.g. bicubic Set5 x2 = 33.66 dB, used that). SSIM: 11x11 Gaussian window (sigma 1.5) in 'valid'
mode, c1 = (0.01 * 255)^2, c2 = (0.03 * 255)^2, computed per channel and averaged.

PSNR of identical images is +inf in both paths (no cap); average PSNR over a set with
`np.mean` is then inf too, which is the honest answer.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["psnr", "ssim", "rgb_to_y", "psnr_batch", "ssim_batch", "gaussian_window"]

_Y_COEFFS = np.array([65.481, 128.553, 24.966]) / 255.0
_SSIM_C1 = (0.01 * 255.0) ** 2
_SSIM_C2 = (0.03 * 255.0) ** 2
_WIN_SIZE = 11
_WIN_SIGMA = 1.5


def gaussian_window(size: int = _WIN_SIZE, sigma: float = _WIN_SIGMA) -> np.ndarray:
    """Normalized 1-D Gaussian taps, (size,) float64; the SSIM window is its outer product."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


# ------------------------------------------------------------------------------------------------
# numpy float64 path
# ------------------------------------------------------------------------------------------------

def rgb_to_y(img, rounded: bool = False) -> np.ndarray:
    """Luma of an RGB image: (H, W, 3) in [0, 255] -> (H, W) float64 in [16, 235].

    `rounded=True` rounds to the nearest integer (half up), like MATLAB's `rgb2ycbcr` on uint8.
    """
    img = np.asarray(img, dtype=np.float64)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"rgb_to_y: expected an (H, W, 3) RGB image, got shape {img.shape}")
    y = 16.0 + img @ _Y_COEFFS
    return np.floor(y + 0.5) if rounded else y


def _prepare(img, ref, crop_border: int, test_y_channel: bool, y_rounded: bool, fn: str):
    img = np.asarray(img)
    ref = np.asarray(ref)
    if img.shape != ref.shape:
        raise ValueError(f"{fn}: image shape {img.shape} != reference shape {ref.shape}; "
                         "crop or resize one of them so both match (HWC)")
    if img.ndim == 2:
        img, ref = img[..., None], ref[..., None]
    if img.ndim != 3:
        raise ValueError(f"{fn}: expected (H, W, C) or (H, W) images, got shape {img.shape}")
    crop_border = int(crop_border)
    h, w = img.shape[:2]
    if crop_border < 0 or 2 * crop_border >= min(h, w):
        raise ValueError(f"{fn}: crop_border={crop_border} is invalid for {h}x{w} images "
                         f"(need 0 <= crop_border < {min(h, w) / 2})")
    img = img.astype(np.float64)
    ref = ref.astype(np.float64)
    if crop_border:
        img = img[crop_border:-crop_border, crop_border:-crop_border]
        ref = ref[crop_border:-crop_border, crop_border:-crop_border]
    if test_y_channel:
        if img.shape[-1] != 3:
            raise ValueError(f"{fn}: test_y_channel=True needs RGB images, got {img.shape[-1]} "
                             "channel(s); pass test_y_channel=False for gray images")
        img = rgb_to_y(img, y_rounded)[..., None]
        ref = rgb_to_y(ref, y_rounded)[..., None]
    return img, ref


def psnr(img, ref, crop_border: int = 0, test_y_channel: bool = False,
         y_rounded: bool = False) -> float:
    """PSNR in dB of `img` against `ref`, both (H, W, C) or (H, W) in [0, 255].

    MSE is averaged over all pixels and channels; peak 255. Identical images give +inf.
    """
    img, ref = _prepare(img, ref, crop_border, test_y_channel, y_rounded, "psnr")
    mse = np.mean((img - ref) ** 2)
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(255.0 ** 2 / mse))


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of (H, W) with the outer product of g: (H-k+1, W-k+1)."""
    k = g.size
    x = np.lib.stride_tricks.sliding_window_view(x, k, axis=0) @ g
    return np.lib.stride_tricks.sliding_window_view(x, k, axis=1) @ g


def _ssim_map(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    g = gaussian_window()
    mu_x, mu_y = _filter_valid(x, g), _filter_valid(y, g)
    sxx = _filter_valid(x * x, g) - mu_x ** 2
    syy = _filter_valid(y * y, g) - mu_y ** 2
    sxy = _filter_valid(x * y, g) - mu_x * mu_y
    num = (2 * mu_x * mu_y + _SSIM_C1) * (2 * sxy + _SSIM_C2)
    den = (mu_x ** 2 + mu_y ** 2 + _SSIM_C1) * (sxx + syy + _SSIM_C2)
    return num / den


def ssim(img, ref, crop_border: int = 0, test_y_channel: bool = False,
         y_rounded: bool = False) -> float:
    """SSIM of `img` against `ref`, both (H, W, C) or (H, W) in [0, 255].

    11x11 Gaussian window (sigma 1.5), valid filtering, mean over the map, then over channels.
    Images must be at least 11x11 after cropping.
    """
    img, ref = _prepare(img, ref, crop_border, test_y_channel, y_rounded, "ssim")
    if min(img.shape[:2]) < _WIN_SIZE:
        raise ValueError(f"ssim: images are {img.shape[0]}x{img.shape[1]} after cropping; "
                         f"SSIM needs at least {_WIN_SIZE}x{_WIN_SIZE} (reduce crop_border)")
    return float(np.mean([_ssim_map(img[..., c], ref[..., c]).mean()
                          for c in range(img.shape[-1])]))


# ------------------------------------------------------------------------------------------------
# JAX float32 batched path
# ------------------------------------------------------------------------------------------------

def _prepare_batch(x, y, crop_border: int, y_channel: bool, y_rounded: bool, fn: str,
                   data_range: float = 1.0):
    x = jnp.asarray(x, jnp.float32)
    y = jnp.asarray(y, jnp.float32)
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"{fn}: expected two (B, H, W, C) batches of the same shape, got "
                         f"{x.shape} and {y.shape}")
    h, w = x.shape[1:3]
    if crop_border < 0 or 2 * crop_border >= min(h, w):
        raise ValueError(f"{fn}: crop_border={crop_border} is invalid for {h}x{w} images")
    if data_range != 255.0:
        x = x * (255.0 / data_range)
        y = y * (255.0 / data_range)
    if crop_border:
        x = x[:, crop_border:-crop_border, crop_border:-crop_border]
        y = y[:, crop_border:-crop_border, crop_border:-crop_border]
    if y_channel:
        if x.shape[-1] != 3:
            raise ValueError(f"{fn}: y_channel=True needs RGB (C=3) batches, got C={x.shape[-1]}")
        coeffs = jnp.asarray(_Y_COEFFS, jnp.float32)

        def to_y(v):
            v = 16.0 + jnp.einsum("bhwc,c->bhw", v, coeffs,
                                  precision=jax.lax.Precision.HIGHEST)[..., None]
            return jnp.floor(v + 0.5) if y_rounded else v

        x, y = to_y(x), to_y(y)
    return x, y


@functools.partial(jax.jit,
                   static_argnames=("crop_border", "y_channel", "y_rounded", "data_range"))
def psnr_batch(x, y, crop_border: int = 0, y_channel: bool = False,
               y_rounded: bool = False, data_range: float = 1.0) -> jax.Array:
    """Per-image PSNR (dB) of x against y, both (B, H, W, C) float in [0, 1] -> (B,) float32.

    Same numbers as `psnr` on the images times 255 (Y from unrounded [0, 255] values unless
    `y_rounded`). Identical images give +inf (no cap). `data_range=255.0` takes images already
    in [0, 255] (e.g. uint8 cast to float32, used exactly, with no rescaling).
    """
    # XLA may fuse the [0, 255] scaling into x and y differently (FMA), so identical inputs
    # are detected on the raw values to return exactly +inf like the numpy path.
    xs, ys = _prepare_batch(x, y, crop_border, y_channel, y_rounded, "psnr_batch", data_range)
    b = crop_border
    raw_x = jnp.asarray(x)[:, b:x.shape[1] - b, b:x.shape[2] - b]
    raw_y = jnp.asarray(y)[:, b:y.shape[1] - b, b:y.shape[2] - b]
    mse = jnp.mean(jnp.square(xs - ys), axis=(1, 2, 3))
    identical = jnp.all(raw_x == raw_y, axis=(1, 2, 3)) | (mse == 0)
    return jnp.where(identical, jnp.inf, 10.0 * jnp.log10(255.0 ** 2 / mse))


def _filter_valid_batch(v: jax.Array, g: np.ndarray) -> jax.Array:
    """Separable 'valid' Gaussian filter of (B, H, W, C): weighted sums of k shifted slices per
    axis (elementwise work that XLA fuses; a depthwise convolution at HIGHEST precision is ~10x
    slower on CPU)."""
    k = g.shape[0]
    taps = [np.float32(t) for t in g]
    h = v.shape[1] - k + 1
    v = sum(taps[i] * v[:, i:i + h] for i in range(k))
    w = v.shape[2] - k + 1
    return sum(taps[i] * v[:, :, i:i + w] for i in range(k))


@functools.partial(jax.jit,
                   static_argnames=("crop_border", "y_channel", "y_rounded", "data_range"))
def ssim_batch(x, y, crop_border: int = 0, y_channel: bool = False,
               y_rounded: bool = False, data_range: float = 1.0) -> jax.Array:
    """Per-image SSIM of x against y, both (B, H, W, C) float in [0, 1] -> (B,) float32.

    Same numbers as `ssim` on the images times 255 (`data_range=255.0`: images already in
    [0, 255], used as they are). Second moments are taken about the
    per-image, per-channel mean to limit float32 cancellation (SSIM's sigma terms are
    shift-invariant, so the result is unchanged mathematically).
    """
    x, y = _prepare_batch(x, y, crop_border, y_channel, y_rounded, "ssim_batch", data_range)
    if min(x.shape[1:3]) < _WIN_SIZE:
        raise ValueError(f"ssim_batch: images are {x.shape[1]}x{x.shape[2]} after cropping; "
                         f"SSIM needs at least {_WIN_SIZE}x{_WIN_SIZE}")
    g = gaussian_window()
    mu_x = _filter_valid_batch(x, g)
    mu_y = _filter_valid_batch(y, g)
    xc = x - jnp.mean(x, axis=(1, 2), keepdims=True)
    yc = y - jnp.mean(y, axis=(1, 2), keepdims=True)
    mu_xc = _filter_valid_batch(xc, g)
    mu_yc = _filter_valid_batch(yc, g)
    sxx = _filter_valid_batch(xc * xc, g) - mu_xc ** 2
    syy = _filter_valid_batch(yc * yc, g) - mu_yc ** 2
    sxy = _filter_valid_batch(xc * yc, g) - mu_xc * mu_yc
    num = (2 * mu_x * mu_y + _SSIM_C1) * (2 * sxy + _SSIM_C2)
    den = (mu_x ** 2 + mu_y ** 2 + _SSIM_C1) * (sxx + syy + _SSIM_C2)
    return jnp.mean(num / den, axis=(1, 2, 3))
