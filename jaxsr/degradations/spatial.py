"""Spatially variant degradation: blend several degraded versions of one image with smooth,
random per-pixel weights that sum to 1 (e.g. blur that changes across the frame)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxsr.degradations.fields import smooth_field


def blend_masks(key: jax.Array, shape: tuple[int, int], count: int, grid: int = 4,
                sharpness=2.0) -> jax.Array:
    """(count, H, W) float32 weights >= 0, summing to 1 at every pixel.

    Softmax over `count` smooth random fields (see `smooth_field`) scaled by `sharpness`
    (0 = equal weights; larger = crisper regions). `sharpness` may be traced.
    """
    fields = smooth_field(key, shape, count, grid)
    return jax.nn.softmax(jnp.asarray(sharpness, jnp.float32) * fields, axis=0)


def spatial_blend(images: jax.Array, masks: jax.Array) -> jax.Array:
    """sum_k masks[k] * images[k]: images (K, H, W, C), masks (K, H, W) -> (H, W, C)."""
    if images.shape[:3] != masks.shape:
        raise ValueError(
            f"spatial_blend needs images (K, H, W, C) and masks (K, H, W) with the same K, H, W; "
            f"got {images.shape} and {masks.shape}.")
    return jnp.sum(images * masks[..., None], axis=0).astype(images.dtype)
