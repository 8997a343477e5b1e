"""Smooth random fields: low-resolution Gaussian noise upsampled to the image size.

Used for spatially variant masks (spatial.py) and synthetic depth maps (weather.py).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def smooth_field(key: jax.Array, shape: tuple[int, int], count: int = 1,
                 grid: int = 4) -> jax.Array:
    """(count, H, W) float32 fields with unit-variance grid values, smooth at scale H/grid.

    N(0, 1) values on a (grid, grid) lattice, resized to `shape` (static ints) with MATLAB
    bicubic `imresize` (two small static matrix products: cheap to compile).
    """
    from jaxsr.imresize import imresize
    h, w = shape
    coarse = jax.random.normal(key, (count, grid, grid, 1), jnp.float32)
    return imresize(coarse, output_shape=(h, w), method="bicubic")[..., 0]


def normalise01(field: jax.Array) -> jax.Array:
    """Affinely map a (H, W) field to [0, 1] (a constant field maps to 0)."""
    lo, hi = jnp.min(field), jnp.max(field)
    return (field - lo) / jnp.maximum(hi - lo, 1e-6)
