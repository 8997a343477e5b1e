"""Whole-image inference of any size with fixed-size overlapping tiles.

Every tile has the same shape, so the forward pass compiles once for all images; memory on the
device is bounded by `tile` and `batch_tiles`. Tile outputs are blended with a separable weight that
ramps linearly over the overlap, so seams vanish; pixels covered by one tile's interior are exactly
that tile's output.

Host memory is bounded too: tiles are visited row by row, and the float accumulators hold one
horizontal band of tiles (tile * scale output rows). When a row of tiles is done, the output rows
no later tile touches are normalised, clipped, passed through `finish` (e.g. quantised to uint8 or
uint16) and written into the output array, which may be preallocated by the caller in its final
dtype. The blend is the same sum in the same order as accumulating the whole image at once, so
the result is bit-identical to it.
"""
from __future__ import annotations

from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

ApplyFn = Callable[[jax.Array], jax.Array]  # (b, T, T, 3) [0,1] -> (b, T*s, T*s, 3)
FinishFn = Callable[[np.ndarray], np.ndarray]  # (r, W*s, C) float32 [0,1] -> (r, W*s, K)


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


def quantize(x: np.ndarray, dtype=np.uint8) -> np.ndarray:
    """Float in [0, 1] -> uint8 / uint16 with round-half-up (floor(x * max + 0.5)), as
    `jaxsr.imageio.write_image` does for float input."""
    top = float(np.iinfo(dtype).max)
    return np.floor(np.clip(x, 0.0, 1.0) * top + 0.5).astype(dtype)


class _Band:
    """Float accumulators for the output rows [top, top + rows) and the code that flushes
    finished rows into the output array."""

    CHUNK = 32  # rows normalised and finished at a time (small temporaries on wide images)

    def __init__(self, rows: int, width: int, channels: int, out: np.ndarray, out_h: int,
                 out_w: int, finish: FinishFn | None):
        self.acc = np.zeros((rows, width, channels), np.float32)
        self.weight = np.zeros((rows, width, 1), np.float32)
        self.top = 0
        self.out, self.out_h, self.out_w, self.finish = out, out_h, out_w, finish

    def add(self, y: int, x: int, pred: np.ndarray, wt: np.ndarray) -> None:
        r, c = y - self.top, pred.shape[1]
        self.acc[r:r + pred.shape[0], x:x + c] += pred * wt
        self.weight[r:r + pred.shape[0], x:x + c] += wt

    def flush(self, until: int) -> None:
        """Writes the output rows [top, until) (all complete) and shifts the band to `until`."""
        n = until - self.top
        if n <= 0:
            return
        rows = min(until, self.out_h) - self.top
        for r0 in range(0, max(rows, 0), self.CHUNK):
            r1 = min(rows, r0 + self.CHUNK)
            band = self.acc[r0:r1, :self.out_w] / self.weight[r0:r1, :self.out_w]
            np.clip(band, 0.0, 1.0, out=band)
            if self.finish is not None:
                band = self.finish(band)
            self.out[self.top + r0:self.top + r1, :, :band.shape[-1]] = band
        keep = self.acc.shape[0] - n
        if keep > 0:
            self.acc[:keep] = self.acc[n:]
            self.weight[:keep] = self.weight[n:]
        self.acc[max(keep, 0):] = 0.0
        self.weight[max(keep, 0):] = 0.0
        self.top = until


def restore_image(apply_fn: ApplyFn, image: np.ndarray, scale: int, tile: int = 128,
                  overlap: int = 16, batch_tiles: int = 4, progress: bool | str = False,
                  out: np.ndarray | None = None, finish: FinishFn | None = None) -> np.ndarray:
    """Restores one image of any size by tiles.

    Args:
      apply_fn: jitted function (b, tile, tile, C) float32 in [0,1] -> (b, tile*s, tile*s, C).
      image: (H, W, C) float32 in [0, 1] (host numpy). Images smaller than `tile` are padded
        by reflection (edge replication when tiny) and cropped back.
      scale: the model's scale s (1 for restoration).
      tile, overlap: tile size and overlap in input pixels; overlap < tile.
      batch_tiles: tiles per forward call (the last call is padded, so one shape compiles).
      progress: show a tqdm bar over tile batches (a string is used as its description).
      out: optional preallocated (H*s, W*s, K) array (any dtype) to write the result into;
        default a new float32 (H*s, W*s, C) array.
      finish: optional function applied to each finished band of rows, (r, W*s, C) float32
        clipped to [0, 1] -> (r, W*s, K') with K' <= K, before it is stored in `out[..., :K']`
        (e.g. `quantize` to uint8, or RGB -> gray). Default: stored as is.
    Returns:
      `out`: (H*s, W*s, C) float32 clipped to [0, 1] by default.
    """
    if overlap >= tile:
        raise ValueError(f"overlap={overlap} must be smaller than tile={tile}")
    image = np.asarray(image, np.float32)
    h, w, c = image.shape
    if out is None:
        out = np.empty((h * scale, w * scale, c), np.float32)
    elif out.shape[:2] != (h * scale, w * scale):
        raise ValueError(f"out has shape {out.shape}; expected ({h * scale}, {w * scale}, K) for "
                         f"a {h}x{w} image at scale {scale}")
    ph, pw = max(0, tile - h), max(0, tile - w)
    if ph or pw:
        mode = "reflect" if (ph < h and pw < w) else "edge"
        image = np.pad(image, ((0, ph), (0, pw), (0, 0)), mode=mode)
    H, W = image.shape[:2]
    ys, xs = tile_starts(H, tile, overlap), tile_starts(W, tile, overlap)
    boxes = [(y, x) for y in ys for x in xs]
    to = tile * scale
    band = _Band(to, W * scale, c, out, h * scale, w * scale, finish)
    weights: dict[tuple, np.ndarray] = {}

    def tile_weight(y: int, x: int) -> np.ndarray:
        key = (y == 0, y + tile >= H, x == 0, x + tile >= W)
        if key not in weights:
            wy = _ramp(to, overlap * scale, key[0], key[1])
            wx = _ramp(to, overlap * scale, key[2], key[3])
            weights[key] = (wy[:, None] * wx[None, :])[..., None]
        return weights[key]

    def launch(group: list) -> jax.Array:
        tiles = np.stack([image[y:y + tile, x:x + tile] for y, x in group])
        if len(group) < batch_tiles:  # Pad to a constant batch so nothing recompiles.
            tiles = np.concatenate(
                [tiles, np.zeros((batch_tiles - len(group),) + tiles.shape[1:], np.float32)])
        return apply_fn(jnp.asarray(tiles))

    groups = list(_batches(boxes, batch_tiles))
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(boxes), unit="tile", leave=False,
                   desc=progress if isinstance(progress, str) else None)
    pending = launch(groups[0])
    for i, group in enumerate(groups):
        # Dispatch the next batch before blending this one, so the device and host overlap.
        result = pending
        if i + 1 < len(groups):
            pending = launch(groups[i + 1])
        result = np.asarray(jax.device_get(result), np.float32)
        for (y, x), pred in zip(group, result):
            if y * scale > band.top:
                band.flush(y * scale)  # no later tile reaches rows above y * s
            band.add(y * scale, x * scale, pred, tile_weight(y, x))
        if bar is not None:
            bar.update(len(group))
    band.flush(H * scale)
    if bar is not None:
        bar.close()
    return out
