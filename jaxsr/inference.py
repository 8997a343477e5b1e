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

import functools
import os
from typing import Any, Callable, Iterator, NamedTuple

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


def restore_host(apply_fn: ApplyFn, image: np.ndarray, scale: int, tile: int = 128,
                 overlap: int = 16, batch_tiles: int = 4, progress: bool | str = False,
                 out: np.ndarray | None = None, finish: FinishFn | None = None) -> np.ndarray:
    """Restores one image of any size by tiles, blending on the host band by band (the
    memory-bounded path of `restore_image`; same arguments).

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


# ------------------------------------------------------------------------------- device path
HOST_TILING = (128, 4)  # (tile, batch_tiles) of the host path (its defaults before the device path)
# Device path defaults per backend. CPU: 256-px tiles one at a time measured fastest for EDSR x4
# (128 px pays per-call overhead; 512 px spills caches); GPU/TPU: 512-px tiles, one per step
# (an x4 EDSR-baseline tile needs ~2-3 GB of activations in float32).
DEVICE_TILING = {"cpu": (256, 1), "gpu": (512, 1), "tpu": (512, 1)}

_TRACES = [0]


def device_traces() -> int:
    """How many times the device program has been traced (compiled) in this process; tests use
    it to check that image sizes sharing a bucket share one program."""
    return _TRACES[0]


def default_tiling(mode: str = "device", backend: str | None = None) -> tuple[int, int]:
    """(tile, batch_tiles) defaults of `mode` ('device' or 'host') on `backend` (default: JAX's)."""
    if mode == "host":
        return HOST_TILING
    return DEVICE_TILING.get(backend or jax.default_backend(), DEVICE_TILING["gpu"])


def device_budget_bytes(device: Any = None) -> int:
    """Bytes the device path may use for its accumulators: half the free memory of an
    accelerator (the network's activations get the rest); 0 on CPU, so that mode 'auto' takes
    the host path there (on XLA:CPU the device path measured no faster: EDSR-baseline x4,
    1000x750 -> 4000x3000, 21.6 s vs 20.1 s; EDSR 4x32 18.9 s vs 16.5 s; and the host path
    bounds memory). `JAXSR_DEVICE_BUDGET_MB` overrides it."""
    env = os.environ.get("JAXSR_DEVICE_BUDGET_MB")
    if env:
        return int(float(env) * 2 ** 20)
    device = device or jax.devices()[0]
    if device.platform == "cpu":
        return 0
    try:
        stats = device.memory_stats()
    except Exception:  # backends without memory statistics
        stats = None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0)) // 2
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (ValueError, OSError, AttributeError):
        return 2 * 2 ** 30


def bucket_size(length: int, tile: int, overlap: int) -> int:
    """The padded length the device program is compiled for: `tile + k * (tile - overlap)`, the
    smallest that holds `length` (all lengths with the same number of tile starts share it)."""
    if length <= tile:
        return tile
    stride = max(1, tile - overlap)
    return tile + -(-(length - tile) // stride) * stride


class _Geometry(NamedTuple):
    """Static shape of one device program (its compile-cache key besides the apply function)."""
    height: int  # bucketed input height / width (the image array's shape)
    width: int
    channels: int
    tile: int
    overlap: int
    batch_tiles: int
    scale: int
    ny: int  # tile rows / columns
    nx: int
    dtype: str  # 'float32', 'uint8' or 'uint16'
    mix: tuple | None  # (C, K) channel matrix applied after the blend, as nested tuples


def _split_apply(apply_fn: Callable) -> tuple[Callable, tuple]:
    """`functools.partial(f, *arrays)` (e.g. a jitted (params, x) forward with params bound) ->
    (f, arrays): the arrays become arguments of the device program, not constants baked into
    it, and the program is cached on `f`, which outlives the partial."""
    if (isinstance(apply_fn, functools.partial) and not apply_fn.keywords and apply_fn.args
            and all(isinstance(leaf, (jax.Array, np.ndarray))
                    for leaf in jax.tree_util.tree_leaves(apply_fn.args))):
        return apply_fn.func, tuple(apply_fn.args)
    return apply_fn, ()


def _weight_table(length: int, overlap: int) -> np.ndarray:
    """(4, length) `_ramp`s indexed by at_start + 2 * at_end."""
    return np.stack([_ramp(length, overlap, bool(k & 1), bool(k & 2)) for k in range(4)])


@functools.partial(jax.jit, static_argnames=("fn", "geom"))
def _device_program(fn: Callable, geom: _Geometry, args: tuple, image: jax.Array,
                    ys: jax.Array, xs: jax.Array, ky: jax.Array, kx: jax.Array) -> jax.Array:
    """(Hb, Wb, C) float32 image -> (Hb*s, Wb*s, K) blended output in `geom.dtype`."""
    _TRACES[0] += 1
    g = geom
    t, s, bt = g.tile, g.scale, g.batch_tiles
    to = t * s
    n = g.ny * g.nx
    wy = jnp.asarray(_weight_table(to, g.overlap * s))
    wx = wy
    acc = jnp.zeros((g.height * s, g.width * s, g.channels), jnp.float32)
    wsum = jnp.zeros((g.height * s, g.width * s, 1), jnp.float32)

    def batch(b, carry):
        idx = b * bt + jnp.arange(bt)
        valid = (idx < n).astype(jnp.float32)
        idx = jnp.minimum(idx, n - 1)  # padding slots repeat the last tile with weight 0
        i, j = idx // g.nx, idx % g.nx
        tiles = jax.vmap(lambda y, x: jax.lax.dynamic_slice(
            image, (y, x, 0), (t, t, g.channels)))(ys[i], xs[j])
        pred = fn(*args, tiles).astype(jnp.float32)

        def add(k, carry):  # tile by tile, in the host path's order
            acc, wsum = carry
            y0, x0 = ys[i[k]] * s, xs[j[k]] * s
            wt = (wy[ky[i[k]]][:, None] * wx[kx[j[k]]][None, :])[..., None] * valid[k]
            a = jax.lax.dynamic_slice(acc, (y0, x0, 0), (to, to, g.channels))
            w = jax.lax.dynamic_slice(wsum, (y0, x0, 0), (to, to, 1))
            acc = jax.lax.dynamic_update_slice(acc, a + pred[k] * wt, (y0, x0, 0))
            wsum = jax.lax.dynamic_update_slice(wsum, w + wt, (y0, x0, 0))
            return acc, wsum

        return jax.lax.fori_loop(0, bt, add, carry)

    acc, wsum = jax.lax.fori_loop(0, -(-n // bt), batch, (acc, wsum))
    out = jnp.clip(acc / jnp.where(wsum > 0, wsum, 1.0), 0.0, 1.0)  # 0 outside the image
    if g.mix is not None:
        mix = jnp.asarray(np.asarray(g.mix, np.float32))
        out = jnp.clip(jnp.einsum("hwc,ck->hwk", out, mix, precision=jax.lax.Precision.HIGHEST),
                       0.0, 1.0)
    if g.dtype == "float32":
        return out
    top = float(np.iinfo(g.dtype).max)
    return jnp.floor(out * top + 0.5).astype(g.dtype)


def fitted_tile(tile: int, overlap: int, h: int, w: int) -> int:
    """The device path's tile for an (h, w) image: `tile`, or for an image smaller than it on
    both sides one tile of max(h, w) rounded up to a multiple of 32 (a 512-px tile would mostly
    compute padding; few distinct sizes, so few programs)."""
    if max(h, w) >= tile:
        return tile
    return min(tile, max(-(-max(h, w) // 32) * 32, overlap + 1))


def _pad_small(image: np.ndarray, tile: int) -> np.ndarray:
    """Pads an image smaller than `tile` up to it (reflection; edge replication when tiny), as
    the host path does."""
    h, w = image.shape[:2]
    ph, pw = max(0, tile - h), max(0, tile - w)
    if ph or pw:
        mode = "reflect" if (ph < h and pw < w) else "edge"
        image = np.pad(image, ((0, ph), (0, pw), (0, 0)), mode=mode)
    return image


def device_bytes(shape: tuple[int, ...], scale: int, tile: int, overlap: int,
                 dtype: Any = np.float32, channels_out: int | None = None) -> int:
    """Device memory the device path's arrays need for an (h, w, C) image (accumulators, weight
    sums, input and output; not the network's activations)."""
    h, w, c = shape
    tile = fitted_tile(tile, overlap, h, w)
    hb = bucket_size(max(h, tile), tile, overlap) * scale
    wb = bucket_size(max(w, tile), tile, overlap) * scale
    k = c if channels_out is None else channels_out
    return hb * wb * (4 * (c + 1) + k * np.dtype(dtype).itemsize) + hb * wb // scale ** 2 * c * 4


def restore_device(apply_fn: ApplyFn, image: np.ndarray, scale: int, tile: int | None = None,
                   overlap: int = 16, batch_tiles: int | None = None, dtype: Any = np.float32,
                   mix: np.ndarray | None = None) -> tuple[jax.Array, tuple[int, int]]:
    """The device path of `restore_image`, without the transfer.

    Returns:
      (device array (Hb*s, Wb*s, K) in `dtype` (float32 in [0, 1], or uint8 / uint16 quantised
      with round-half-up), (h*s, w*s)): the result is `array[:h*s, :w*s]`; the rest is padding.
    """
    dt, db = default_tiling("device")
    tile, batch_tiles = int(tile or dt), int(batch_tiles or db)
    if overlap >= tile:
        raise ValueError(f"overlap={overlap} must be smaller than tile={tile}")
    image = np.asarray(image, np.float32)
    h, w, c = image.shape
    tile = fitted_tile(tile, overlap, h, w)
    image = _pad_small(image, tile)
    H, W = image.shape[:2]
    hb, wb = bucket_size(H, tile, overlap), bucket_size(W, tile, overlap)
    if (hb, wb) != (H, W):
        image = np.pad(image, ((0, hb - H), (0, wb - W), (0, 0)))
    ys, xs = tile_starts(H, tile, overlap), tile_starts(W, tile, overlap)
    kind = lambda starts, length: [int(a == 0) + 2 * int(a + tile >= length)  # noqa: E731
                                   for a in starts]
    geom = _Geometry(hb, wb, c, tile, int(overlap), batch_tiles, int(scale), len(ys), len(xs),
                     np.dtype(dtype).name,
                     None if mix is None else tuple(map(tuple, np.asarray(mix, np.float32)
                                                        .reshape(c, -1).tolist())))
    fn, args = _split_apply(apply_fn)
    as_i32 = lambda v: jnp.asarray(np.asarray(v, np.int32))  # noqa: E731
    result = _device_program(fn, geom, args, jnp.asarray(image), as_i32(ys), as_i32(xs),
                             as_i32(kind(ys, H)), as_i32(kind(xs, W)))
    return result, (h * scale, w * scale)


def restore_image(apply_fn: ApplyFn, image: np.ndarray, scale: int, tile: int | None = None,
                  overlap: int = 16, batch_tiles: int | None = None,
                  progress: bool | str = False, out: np.ndarray | None = None,
                  finish: FinishFn | None = None, *, mode: str = "auto", dtype: Any = None,
                  mix: np.ndarray | None = None, budget: int | None = None) -> np.ndarray:
    """Restores one image of any size by tiles (on the device or blending on the host).

    Args:
      apply_fn: jitted function (b, tile, tile, C) float32 in [0,1] -> (b, tile*s, tile*s, C)
        (any float dtype; blended in float32). A `functools.partial(jitted, params)` passes
        the params to the device program as arguments, so new params do not recompile it.
      image: (H, W, C) float32 in [0, 1] (host numpy). Images smaller than `tile` are padded
        by reflection (edge replication when tiny) and cropped back.
      scale: the model's scale s (1 for restoration).
      tile, overlap: tile size and overlap in input pixels; overlap < tile. tile / batch_tiles
        None: `default_tiling(mode)` (host 128 / 4; device 512 / 1 on GPU/TPU, 256 / 1 on CPU).
      batch_tiles: tiles per forward call (the last call is padded, so one shape compiles).
      progress: show a tqdm bar over tiles (a string is used as its description); the device
        path completes it in one step.
      out: optional preallocated (H*s, W*s, K) array (any dtype) to write the result into;
        default a new (H*s, W*s, K) array of `dtype`.
      finish: optional host function applied to each finished band of rows, (r, W*s, C)
        float32 clipped to [0, 1] -> (r, W*s, K') with K' <= K, before it is stored in
        `out[..., :K']` (e.g. `quantize` to uint8, or RGB -> gray). Host path only: prefer
        `dtype` and `mix`, which both paths apply.
      mode: 'device', 'host', or 'auto' (device when `device_bytes` fits `budget`, default
        `device_budget_bytes()`, and no `finish` is given).
      dtype: output dtype: float32 (default; clipped to [0, 1]) or uint8 / uint16 (quantised
        with round-half-up, like `quantize`).
      mix: optional (C, K) matrix applied to the clipped RGB before quantising (result clipped
        to [0, 1] again), e.g. BT.601 luma weights for gray output.
    Returns:
      `out`, or a new (H*s, W*s, K) array in `dtype`.
    """
    if mode not in ("auto", "device", "host"):
        raise ValueError(f"mode={mode!r}: use 'auto', 'device' or 'host'")
    image = np.asarray(image, np.float32)
    h, w, c = image.shape
    dtype = np.dtype(np.float32 if dtype is None else dtype)
    k = c if mix is None else np.asarray(mix).reshape(c, -1).shape[1]
    if mode == "auto":
        t = tile or default_tiling("device")[0]
        need = device_bytes(image.shape, scale, t, overlap, dtype, k)
        mode = "device" if finish is None and need <= (budget or device_budget_bytes()) \
            else "host"
    if out is not None and out.shape[:2] != (h * scale, w * scale):
        raise ValueError(f"out has shape {out.shape}; expected ({h * scale}, {w * scale}, K) for "
                         f"a {h}x{w} image at scale {scale}")
    if mode == "host":
        ht, hb = default_tiling("host")
        tile, batch_tiles = tile or ht, batch_tiles or hb
        if finish is None and (mix is not None or dtype != np.float32):
            finish = functools.partial(_finish, mix=mix, dtype=dtype)
        if out is None:
            out = np.empty((h * scale, w * scale, k), dtype)
        return restore_host(apply_fn, image, scale, tile=tile, overlap=overlap,
                            batch_tiles=batch_tiles, progress=progress, out=out, finish=finish)
    if finish is not None:
        raise ValueError("mode='device' cannot run a host `finish` function; pass dtype= and "
                         "mix= instead, or mode='host'")
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=1, unit="image", leave=False,
                   desc=progress if isinstance(progress, str) else None)
    result, (oh, ow) = restore_device(apply_fn, image, scale, tile, overlap, batch_tiles, dtype,
                                      mix)
    result = np.asarray(jax.device_get(result))[:oh, :ow]
    if bar is not None:
        bar.update(1)
        bar.close()
    if out is None:
        return np.ascontiguousarray(result)
    out[..., :result.shape[-1]] = result
    return out


def _finish(band: np.ndarray, mix: np.ndarray | None, dtype: np.dtype) -> np.ndarray:
    """The host path's version of the device path's mix + quantise."""
    if mix is not None:
        band = np.clip(band @ np.asarray(mix, np.float32).reshape(band.shape[-1], -1), 0.0, 1.0)
    return band if dtype == np.float32 else quantize(band, dtype)
