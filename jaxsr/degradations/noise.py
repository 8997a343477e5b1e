"""Additive Gaussian and Poisson (shot) noise on one image (H, W, 3) float32 in [0, 1].

Parameters may be traced scalars (per-sample values inside vmap/jit). `gray` may be a Python
bool or a traced bool/0-1 flag: gray noise is one noise field shared by the three channels.
Outputs are clipped to [0, 1].
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

# BT.601 luma weights (as in OpenCV's RGB2GRAY), used for gray shot noise.
LUMA = (0.299, 0.587, 0.114)


def luma(img: jax.Array) -> jax.Array:
    """(H, W, 3) -> (H, W, 1) BT.601 luma."""
    return jnp.sum(img * jnp.asarray(LUMA, img.dtype), axis=-1, keepdims=True)


def gaussian_noise(key: jax.Array, img: jax.Array, sigma, gray=False) -> jax.Array:
    """img + N(0, (sigma/255)^2), clipped; `sigma` on the 0-255 scale (e.g. 1..25).

    Colour noise draws each channel independently; gray noise draws one field for all three.
    """
    sigma = jnp.asarray(sigma, jnp.float32) / 255.0
    colour = jax.random.normal(key, img.shape, jnp.float32)
    shared = jnp.broadcast_to(colour[..., :1], img.shape)
    n = jnp.where(jnp.asarray(gray) > 0, shared, colour)
    return jnp.clip(img + sigma * n, 0.0, 1.0).astype(img.dtype)


def poisson_noise(key: jax.Array, img: jax.Array, peak, strength=1.0, gray=False) -> jax.Array:
    """Shot noise: img + strength * (Poisson(v * peak) / peak - v), clipped.

    `peak` = photon count of a white pixel (larger = cleaner); `strength` scales the noise
    (1 = physical shot noise, 0 = none; Real-ESRGAN uses peak 255 with strength 0.05..3).
    Colour noise uses v = each channel; gray noise uses v = luma and adds the same residual to
    all channels.
    """
    peak = jnp.asarray(peak, jnp.float32)
    gray = jnp.asarray(gray) > 0
    v = jnp.where(gray, jnp.broadcast_to(luma(img), img.shape), img)
    lam = jnp.clip(v, 0.0, None) * peak
    counts = jax.random.poisson(key, lam, img.shape).astype(jnp.float32)
    resid = counts / peak - v
    resid = jnp.where(gray, jnp.broadcast_to(resid[..., :1], img.shape), resid)
    return jnp.clip(img + jnp.asarray(strength, jnp.float32) * resid, 0.0, 1.0).astype(img.dtype)
