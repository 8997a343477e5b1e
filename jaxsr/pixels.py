"""Pixel value conversions shared by training, evaluation and image writing."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def to_float(images: jax.Array) -> jax.Array:
    """uint8 [0, 255] (any shape) -> float32 [0, 1], on device."""
    return images.astype(jnp.float32) / 255.0


def to_uint8(img) -> np.ndarray:
    """float in [0, 1] (or uint8, returned as it is) -> uint8 [0, 255] on the host, rounded to
    nearest and clipped (any shape)."""
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return img
    return np.clip(np.round(img.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
