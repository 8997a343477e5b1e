"""One-level orthonormal 2-D Haar wavelet transform (PCL-SR's embedding input).

For each 2x2 block [[a, b], [c, d]] of every channel:
    LL = (a + b + c + d) / 2     LH = (a + b - c - d) / 2
    HL = (a - b + c - d) / 2     HH = (a - b - c + d) / 2
The transform is orthonormal, so `haar_idwt(*haar_dwt(x)) == x` and energy is preserved.
LH responds to horizontal edges (a change between rows), HL to vertical ones, HH to diagonals.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def haar_dwt(x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """(B, H, W, C) float, H and W even -> (LL, LH, HL, HH), each (B, H/2, W/2, C) float32."""
    if x.ndim != 4 or x.shape[1] % 2 or x.shape[2] % 2:
        raise ValueError(f"haar_dwt: expected (B, H, W, C) with even H and W, got {x.shape}; "
                         "crop the image (or the HR patch) to even sizes")
    x = x.astype(jnp.float32)
    a, b = x[:, 0::2, 0::2], x[:, 0::2, 1::2]
    c, d = x[:, 1::2, 0::2], x[:, 1::2, 1::2]
    return ((a + b + c + d) / 2, (a + b - c - d) / 2, (a - b + c - d) / 2, (a - b - c + d) / 2)


def haar_idwt(ll: jax.Array, lh: jax.Array, hl: jax.Array, hh: jax.Array) -> jax.Array:
    """Inverse of `haar_dwt`: four (B, h, w, C) bands -> (B, 2h, 2w, C) float32."""
    a = (ll + lh + hl + hh) / 2
    b = (ll + lh - hl - hh) / 2
    c = (ll - lh + hl - hh) / 2
    d = (ll - lh - hl + hh) / 2
    top = jnp.stack([a, b], axis=3)          # (B, h, w, 2, C): columns 2j, 2j+1
    bottom = jnp.stack([c, d], axis=3)
    rows = jnp.stack([top, bottom], axis=2)  # (B, h, 2, w, 2, C)
    bsz, h, _, w, _, ch = rows.shape
    return rows.reshape(bsz, 2 * h, 2 * w, ch)


def detail_bands(x: jax.Array) -> jax.Array:
    """The embedding network's input: (B, H, W, C) -> (B, H/2, W/2, 3C) float32, the bands
    concatenated band-major [LH (C channels), HL (C), HH (C)]; LL is dropped."""
    _, lh, hl, hh = haar_dwt(x)
    return jnp.concatenate([lh, hl, hh], axis=-1)
