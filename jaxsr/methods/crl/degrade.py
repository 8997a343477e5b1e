"""CRL-SR's degradation generator: multi-source AND spatially variant, on device, per sample.

One HR image (H, W, 3) float32 in [0, 1] becomes LR (H/s, W/s, 3) by, in order:
  1. spatially variant blur: K in [components_min, components_max] anisotropic Gaussian kernels
     (sigma_x, sigma_y ~ U(blur_sigma), angle ~ U(0, pi)), the image blurred by each
     (`jaxsr.degradations.blur.blur_stack`, one FFT) and blended with K smooth random masks
     (softmax of `jaxsr.degradations.fields.smooth_field`s as in `spatial.blend_masks`, sharpness ~
     U(mask_sharpness)) that sum to 1 at every pixel;
  2. MATLAB bicubic downsampling by s (`jaxsr.degradations.resize.downscale`);
  3. spatially variant Gaussian noise: one level sigma_k ~ U(noise_sigma) (0-255 scale) per
     component, blended with the same masks (box-downsampled to LR size) into a per-pixel
     sigma map (`jaxsr.degradations.noise.gaussian_noise`, gray with probability gray_prob);
  4. JPEG with probability jpeg_prob, quality ~ U{jpeg_quality} (`jaxsr.degradations.jpeg`).
Components beyond the drawn K get an excluded mask logit, so K is random under jit with static
shapes (components_max images are always blurred). Everything is a pure function of the key:
the same key gives the same LR. Blur sigmas are in HR pixels; with `sigma_scales_with_factor`
the ranges are given for x2 and multiplied by s/2 (a x4 LR is blurred proportionally more).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from jaxsr.degradations.blur import anisotropic_gaussian_kernel, blur_stack
from jaxsr.degradations.jpeg import jpeg
from jaxsr.degradations.noise import gaussian_noise
from jaxsr.degradations.resize import check_scale_mode, downscale
from jaxsr.degradations.fields import smooth_field
from jaxsr.degradations.spatial import spatial_blend

_EXCLUDED = -1e9  # mask logit of an inactive component (softmax weight exactly 0)


@dataclasses.dataclass(frozen=True)
class DegradationSpec:
    """Ranges of one difficulty level (static, hashable). Pairs are (low, high) inclusive."""
    components: tuple[int, int] = (2, 4)
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    noise_sigma: tuple[float, float] = (0.0, 25.0)
    jpeg_prob: float = 0.7
    jpeg_quality: tuple[int, int] = (30, 95)
    gray_prob: float = 0.3
    mask_grid: int = 4
    mask_sharpness: tuple[float, float] = (2.0, 6.0)
    kernel_size: int = 21
    sigma_scales_with_factor: bool = True

    @classmethod
    def from_config(cls, cfg: Any) -> "DegradationSpec":
        """From a ConfigDict / mapping with (a subset of) these field names."""
        names = {f.name for f in dataclasses.fields(cls)}
        data = dict(cfg.items()) if hasattr(cfg, "items") else dict(cfg)
        bad = sorted(set(data) - names)
        if bad:
            raise ValueError(f"degradation level has unknown fields {bad}; valid: {sorted(names)}")
        data = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in data.items()}
        spec = cls(**data)
        lo, hi = spec.components
        if not 1 <= lo <= hi:
            raise ValueError(f"components={spec.components}: need 1 <= low <= high")
        return spec


def _uniform(key, shape, bounds) -> jax.Array:
    lo, hi = bounds
    return jax.random.uniform(key, shape, jnp.float32, lo, hi)


def degrade_with_masks(key: jax.Array, hr: jax.Array, spec: DegradationSpec,
                       scale: int) -> tuple[jax.Array, jax.Array]:
    """One image: hr (H, W, 3) float32 in [0, 1] -> (lr (H/s, W/s, 3) in [0, 1], masks
    (components_max, H, W) >= 0 summing to 1: the blend weights, zero for inactive ones)."""
    check_scale_mode(hr.shape, scale, "down")
    n = spec.components[1]
    keys = jax.random.split(key, 10)
    h, w = hr.shape[0], hr.shape[1]
    count = jax.random.randint(keys[0], (), spec.components[0], spec.components[1] + 1)
    # Masks: softmax over smooth fields, inactive components excluded.
    sharp = _uniform(keys[1], (), spec.mask_sharpness)
    fields = smooth_field(keys[2], (h, w), n, spec.mask_grid) * sharp
    active = jnp.arange(n) < count
    masks = jax.nn.softmax(jnp.where(active[:, None, None], fields, _EXCLUDED), axis=0)
    # 1. spatially variant blur.
    factor = scale / 2.0 if spec.sigma_scales_with_factor else 1.0
    sigma = _uniform(keys[3], (n, 2), spec.blur_sigma) * factor
    theta = jax.random.uniform(keys[4], (n,), jnp.float32, 0.0, jnp.pi)
    kernels = jax.vmap(lambda sx, sy, t: anisotropic_gaussian_kernel(sx, sy, t, spec.kernel_size)
                       )(sigma[:, 0], sigma[:, 1], theta)
    blurred = spatial_blend(blur_stack(hr, kernels), masks)
    # 2. downsampling.
    lr = downscale(jnp.clip(blurred, 0.0, 1.0), scale)
    # 3. spatially variant noise (same regions as the blur).
    masks_lr = masks if scale == 1 else _box_down(masks, scale)
    levels = _uniform(keys[5], (n,), spec.noise_sigma)
    sigma_map = jnp.sum(masks_lr * levels[:, None, None], axis=0)[..., None]   # (h, w, 1)
    gray = jax.random.bernoulli(keys[6], spec.gray_prob)
    lr = gaussian_noise(keys[7], lr, sigma_map, gray)
    # 4. JPEG (computed always, kept with probability jpeg_prob: static shapes under vmap).
    lo, hi = spec.jpeg_quality
    quality = jax.random.randint(keys[8], (), lo, hi + 1)
    use_jpeg = jax.random.bernoulli(keys[9], spec.jpeg_prob)
    lr = jnp.where(use_jpeg, jpeg(lr, quality), lr)
    return jnp.clip(lr, 0.0, 1.0), masks


def _box_down(masks: jax.Array, scale: int) -> jax.Array:
    """(K, H, W) -> (K, H/s, W/s) means over s x s blocks (still sum to 1)."""
    k, h, w = masks.shape
    return masks.reshape(k, h // scale, scale, w // scale, scale).mean(axis=(2, 4))


def degrade(key: jax.Array, hr: jax.Array, spec: DegradationSpec, scale: int) -> jax.Array:
    """One image: hr (H, W, 3) float32 in [0, 1] -> lr (H/s, W/s, 3) float32 in [0, 1]."""
    return degrade_with_masks(key, hr, spec, scale)[0]


def degrade_batch(key: jax.Array, hr: jax.Array, spec: DegradationSpec, scale: int) -> jax.Array:
    """hr (B, H, W, 3) float32 in [0, 1] -> lr (B, H/s, W/s, 3); sample i uses fold_in(key, i),
    so a sample's LR does not depend on the batch size or on how the batch is sharded."""
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(hr.shape[0]))
    return jax.vmap(lambda k, x: degrade(k, x, spec, scale))(keys, hr)


def uniformity(masks: jax.Array) -> jax.Array:
    """(K, H, W) blend weights -> (H, W) max_k weight in (0, 1]: 1 where one degradation rules
    the pixel (a uniform region), about 1/K on the boundaries where several mix."""
    return jnp.max(masks, axis=0)

