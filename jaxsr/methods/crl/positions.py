"""Position correspondence between LR-size feature maps and HR images.

E_l sees the LR image (h, w); E_h and E_f see the HR image (h*s, w*s) through a stride-s stem
(an s x s kernel with stride s), so their maps are (h, w) too and map position (i, j) is computed
from the HR block rows [i*s, (i+1)*s), cols [j*s, (j+1)*s), the area LR pixel (i, j) covers.
Positions are sampled once on the (h, w) grid (`jaxsr.losses.sample_positions`) and gathered from
every map (`jaxsr.losses.gather_positions`), so f_l[i] and f_h[i] describe the same region.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def hr_block(index: jax.Array, lr_width: int, scale: int) -> tuple[jax.Array, jax.Array]:
    """Flat LR-grid positions (num,) -> (top, left) (num,) int32 of the HR s x s block each covers."""
    index = jnp.asarray(index, jnp.int32)
    return (index // lr_width) * scale, (index % lr_width) * scale


def hr_block_indices(index: jax.Array, lr_width: int, scale: int) -> jax.Array:
    """Flat LR-grid positions (num,) -> (num, s*s) flat row-major HR pixel indices of each block
    (HR width lr_width * s)."""
    top, left = hr_block(index, lr_width, scale)
    dy, dx = jnp.meshgrid(jnp.arange(scale), jnp.arange(scale), indexing="ij")
    rows = top[:, None] + dy.reshape(-1)[None]
    cols = left[:, None] + dx.reshape(-1)[None]
    return rows * (lr_width * scale) + cols
