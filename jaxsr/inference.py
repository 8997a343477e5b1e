"""Whole-image inference of any size with fixed-size overlapping tiles.

Every tile has the same shape, so the forward pass compiles once for all images; memory on the
device is bounded by `tile` and `batch_tiles`. Tile outputs are blended with a separable weight that
ramps linearly over the overlap, so seams vanish; pixels covered by one tile's interior are exactly
that tile's output.
"""
from __future__ import annotations

from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

ApplyFn = Callable[[jax.Array], jax.Array]  # (b, T, T, 3) [0,1] -> (b, T*s, T*s, 3)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size `tile` covering [0, length) with >= `overlap` overlap."""
    if length <= tile:
        return [0]
    stride = max(1, tile - overlap)
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def _ramp(length: int, overlap: int, at_start: bool, at_end: bool) -> np.ndarray:
    """1-D blending weight: 1 inside; at inner tile edges ~0 over the outer quarter of the
    overlap (pixels a network sees next to the tile's artificial border), then a linear ramp."""
    w = np.ones(length, np.float32)
    if overlap <= 0:
        return w
    margin = overlap // 4
    span = max(1, overlap - 2 * margin)
    ramp = np.clip((np.arange(overlap, dtype=np.float32) + 0.5 - margin) / span, 1e-4, 1.0)
    if not at_start:
        w[:overlap] = np.minimum(w[:overlap], ramp)
    if not at_end:
        w[-overlap:] = np.minimum(w[-overlap:], ramp[::-1])
    return w


def _batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def restore_image(apply_fn: ApplyFn, image: np.ndarray, scale: int, tile: int = 128,
                  overlap: int = 16, batch_tiles: int = 4, progress: bool = False) -> np.ndarray:
    """Restores one image of any size by tiles.

    Args:
      apply_fn: jitted function (b, tile, tile, C) float32 in [0,1] -> (b, tile*s, tile*s, C).
      image: (H, W, C) float32 in [0, 1] (host numpy). Images smaller than `tile` are padded
        by reflection (edge replication when tiny) and cropped back.
      scale: the model's scale s (1 for restoration).
      tile, overlap: tile size and overlap in input pixels; overlap < tile.
      batch_tiles: tiles per forward call (the last call is padded, so one shape compiles).
    Returns:
      (H*s, W*s, C) float32, clipped to [0, 1].
    """
    if overlap >= tile:
        raise ValueError(f"overlap={overlap} must be smaller than tile={tile}")
    image = np.asarray(image, np.float32)
    h, w, c = image.shape
    ph, pw = max(0, tile - h), max(0, tile - w)
    if ph or pw:
        mode = "reflect" if (ph < h and pw < w) else "edge"
        image = np.pad(image, ((0, ph), (0, pw), (0, 0)), mode=mode)
    H, W = image.shape[:2]
    ys, xs = tile_starts(H, tile, overlap), tile_starts(W, tile, overlap)
    boxes = [(y, x) for y in ys for x in xs]
    out = np.zeros((H * scale, W * scale, c), np.float32)
    weight = np.zeros((H * scale, W * scale, 1), np.float32)
    to = tile * scale
    iterator = _batches(boxes, batch_tiles)
    if progress:
        from tqdm import tqdm
        iterator = tqdm(iterator, total=-(-len(boxes) // batch_tiles), unit="batch", leave=False)
    for group in iterator:
        tiles = np.stack([image[y:y + tile, x:x + tile] for y, x in group])
        if len(group) < batch_tiles:  # Pad to a constant batch so nothing recompiles.
            tiles = np.concatenate(
                [tiles, np.zeros((batch_tiles - len(group),) + tiles.shape[1:], np.float32)])
        result = np.asarray(jax.device_get(apply_fn(jnp.asarray(tiles))), np.float32)
        for (y, x), pred in zip(group, result):
            wy = _ramp(to, overlap * scale, y == 0, y + tile >= H)
            wx = _ramp(to, overlap * scale, x == 0, x + tile >= W)
            wt = (wy[:, None] * wx[None, :])[..., None]
            out[y * scale:y * scale + to, x * scale:x * scale + to] += pred * wt
            weight[y * scale:y * scale + to, x * scale:x * scale + to] += wt
    out /= weight
    return np.clip(out[:h * scale, :w * scale], 0.0, 1.0)
