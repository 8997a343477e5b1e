"""Tiled whole-image inference equals untiled inference (independent reference: one big call)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import functools

from jaxsr import inference
from jaxsr.inference import quantize, restore_image, tile_starts


class TinyNet(nn.Module):
    """3 convs (receptive field 7x7) + pixel-repeat upsampling by `scale`."""
    scale: int = 1

    @nn.compact
    def __call__(self, x):
        y = nn.relu(nn.Conv(8, (3, 3))(x))
        y = nn.relu(nn.Conv(8, (3, 3))(y))
        y = nn.Conv(3, (3, 3))(y) + x
        return jnp.repeat(jnp.repeat(y, self.scale, 1), self.scale, 2)


@pytest.mark.parametrize("mode", ["host", "device"])
@pytest.mark.parametrize("scale", [1, 2])
def test_tiled_equals_untiled(scale, mode):
    model = TinyNet(scale)
    rng = np.random.default_rng(0)
    image = rng.uniform(0.2, 0.8, (45, 70, 3)).astype(np.float32)
    params = model.init(jax.random.key(0), image[None])
    apply = jax.jit(lambda x: model.apply(params, x))
    full = np.clip(np.asarray(apply(image[None]))[0], 0, 1)
    # The blend gives ~0 weight to the outer quarter of each overlap: with overlap 16 that
    # 4-px band covers the 3-px radius of the zero-padding artefacts, so tiling is exact to 1e-4.
    tiled = restore_image(apply, image, scale, tile=32, overlap=16, batch_tiles=3, mode=mode)
    assert tiled.shape == full.shape
    np.testing.assert_allclose(tiled, full, atol=1e-4)
    # With a narrow overlap (8 px: 2-px dead band < 3-px radius) seams show a small error only.
    narrow = restore_image(apply, image, scale, tile=24, overlap=8, batch_tiles=3, mode=mode)
    assert np.abs(narrow - full).max() < 0.05
    s = scale  # Interior of the first tile, away from any seam, is exact.
    np.testing.assert_allclose(narrow[3 * s:12 * s, 3 * s:12 * s], full[3 * s:12 * s, 3 * s:12 * s],
                               atol=1e-5)


@pytest.mark.parametrize("mode", ["host", "device"])
def test_tile_larger_than_image_is_padded_and_cropped(mode):
    apply = jax.jit(lambda x: x * 0.5)
    image = np.random.default_rng(1).uniform(0, 1, (10, 13, 3)).astype(np.float32)
    out = restore_image(apply, image, 1, tile=32, overlap=4, mode=mode)
    np.testing.assert_allclose(out, image * 0.5, atol=1e-6)


def test_tile_starts_cover_the_image():
    for length, tile, overlap in [(100, 32, 8), (32, 32, 8), (33, 32, 8), (5, 32, 8)]:
        starts = tile_starts(length, tile, overlap)
        covered = np.zeros(max(length, tile), bool)
        for s in starts:
            covered[s:s + tile] = True
        assert covered[:length].all()
        assert starts[-1] + tile >= length
        assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))


def test_overlap_must_be_smaller_than_tile():
    with pytest.raises(ValueError, match="overlap"):
        restore_image(lambda x: x, np.zeros((8, 8, 3), np.float32), 1, tile=8, overlap=8)


def _whole_image_blend(apply, image, scale, tile, overlap, batch_tiles):
    """Reference: the blend accumulated over the whole image at once (the pre-band algorithm)."""
    from jaxsr.inference import _ramp
    h, w, c = image.shape
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    boxes = [(y, x) for y in ys for x in xs]
    acc = np.zeros((h * scale, w * scale, c), np.float32)
    wsum = np.zeros((h * scale, w * scale, 1), np.float32)
    to = tile * scale
    for i in range(0, len(boxes), batch_tiles):
        group = boxes[i:i + batch_tiles]
        tiles = np.stack([image[y:y + tile, x:x + tile] for y, x in group])
        tiles = np.concatenate([tiles, np.zeros((batch_tiles - len(group),) + tiles.shape[1:],
                                                np.float32)])
        for (y, x), pred in zip(group, np.asarray(apply(tiles))):
            wt = (_ramp(to, overlap * scale, y == 0, y + tile >= h)[:, None]
                  * _ramp(to, overlap * scale, x == 0, x + tile >= w)[None, :])[..., None]
            acc[y * scale:y * scale + to, x * scale:x * scale + to] += pred * wt
            wsum[y * scale:y * scale + to, x * scale:x * scale + to] += wt
    return np.clip(acc / wsum, 0.0, 1.0)


@pytest.mark.parametrize("scale,tile,overlap", [(1, 16, 6), (2, 12, 4), (3, 20, 8)])
def test_banded_blend_is_bit_identical_to_whole_image_blend(scale, tile, overlap):
    model = TinyNet(scale)
    image = np.random.default_rng(2).uniform(0, 1, (53, 41, 3)).astype(np.float32)
    params = model.init(jax.random.key(1), image[None])
    apply = jax.jit(lambda x: model.apply(params, x))
    ref = _whole_image_blend(apply, image, scale, tile, overlap, 5)
    got = restore_image(apply, image, scale, tile=tile, overlap=overlap, batch_tiles=5,
                        mode="host")
    np.testing.assert_array_equal(got, ref)
    # The device path blends the same tiles with the same weights in the same order; XLA may
    # fuse a multiply-add differently (an ulp), never more.
    dev = restore_image(apply, image, scale, tile=tile, overlap=overlap, batch_tiles=5,
                        mode="device")
    np.testing.assert_allclose(dev, ref, rtol=0, atol=1e-6)


def test_preallocated_uint_output_and_finish():
    model = TinyNet(2)
    image = np.random.default_rng(3).uniform(0, 1, (37, 29, 3)).astype(np.float32)
    params = model.init(jax.random.key(2), image[None])
    apply = jax.jit(lambda x: model.apply(params, x))
    ref = restore_image(apply, image, 2, tile=16, overlap=6, batch_tiles=2, mode="host")
    # uint16 output written band by band equals rounding the float result.
    out16 = np.zeros((74, 58, 4), np.uint16)
    res = restore_image(apply, image, 2, tile=16, overlap=6, batch_tiles=2, out=out16,
                        finish=lambda b: quantize(b, np.uint16))
    assert res is out16
    np.testing.assert_array_equal(out16[..., :3], np.floor(ref * 65535 + 0.5).astype(np.uint16))
    assert not out16[..., 3].any()  # the spare (alpha) channel is left alone
    # A finish that reduces channels (RGB -> mean gray), uint8.
    gray = np.zeros((74, 58, 1), np.uint8)
    restore_image(apply, image, 2, tile=16, overlap=6, batch_tiles=2, out=gray,
                  finish=lambda b: quantize(b.mean(-1, keepdims=True)))
    np.testing.assert_array_equal(gray[..., 0], np.floor(ref.mean(-1) * 255 + 0.5))
    with pytest.raises(ValueError, match="out has shape"):
        restore_image(apply, image, 2, tile=16, overlap=6, out=np.zeros((10, 10, 3)))


def _tiny(scale, seed=0, dtype=jnp.float32):
    """TinyNet as predict and evaluation hold it: a jitted (params, x) forward with params bound."""
    model = TinyNet(scale)
    params = model.init(jax.random.key(seed), np.zeros((1, 8, 8, 3), np.float32))
    fwd = jax.jit(lambda p, x: jnp.clip(model.apply(p, x), 0, 1).astype(dtype))
    return fwd, params


@pytest.mark.parametrize("scale,shape,tile,overlap,batch",
                         [(1, (53, 41), 16, 6, 5), (2, (37, 70), 24, 8, 3), (3, (30, 29), 20, 8, 1),
                          (4, (19, 23), 16, 4, 2)])
def test_device_path_matches_host_path_uint8(scale, shape, tile, overlap, batch):
    fwd, params = _tiny(scale)
    apply = functools.partial(fwd, params)
    image = np.random.default_rng(4).uniform(0, 1, shape + (3,)).astype(np.float32)
    kw = dict(tile=tile, overlap=overlap, batch_tiles=batch)
    for dtype in (np.uint8, np.uint16):
        host = restore_image(apply, image, scale, mode="host", dtype=dtype, **kw)
        dev = restore_image(apply, image, scale, mode="device", dtype=dtype, **kw)
        assert dev.dtype == host.dtype == dtype and dev.shape == host.shape
        diff = np.abs(dev.astype(np.int64) - host)
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # float summation order only
    # Gray output (BT.601 luma of the restored RGB) and a preallocated array with a spare channel.
    luma = np.array([0.299, 0.587, 0.114], np.float32)[:, None]
    out = np.zeros(host.shape[:2] + (2,), np.uint8)
    restore_image(apply, image, scale, mode="device", dtype=np.uint8, mix=luma, out=out, **kw)
    ref = restore_image(apply, image, scale, mode="host", **kw)
    want = quantize(np.clip(ref @ luma, 0, 1))
    assert np.abs(out[..., :1].astype(int) - want).max() <= 1 and not out[..., 1].any()


def test_device_path_compiles_once_per_bucket():
    fwd, params = _tiny(2)
    rng = np.random.default_rng(5)
    kw = dict(tile=16, overlap=4, batch_tiles=2, mode="device", dtype=np.uint8)
    assert inference.bucket_size(30, 16, 4) == inference.bucket_size(40, 16, 4) == 40
    restore_image(functools.partial(fwd, params), rng.uniform(0, 1, (30, 35, 3)), 2, **kw)
    before = inference.device_traces()
    # Other sizes in the same bucket, new params of the same shapes: no new program.
    for h, w in [(40, 40), (33, 29), (31, 38)]:
        new = jax.tree_util.tree_map(lambda p: p * 1.01, params)
        restore_image(functools.partial(fwd, new), rng.uniform(0, 1, (h, w, 3)), 2, **kw)
    assert inference.device_traces() == before
    restore_image(functools.partial(fwd, params), rng.uniform(0, 1, (41, 29, 3)), 2, **kw)
    assert inference.device_traces() == before + 1  # the next bucket: one more


def test_device_path_accepts_bfloat16_model_outputs():
    fwd, params = _tiny(2, dtype=jnp.bfloat16)
    apply = functools.partial(fwd, params)
    image = np.random.default_rng(6).uniform(0, 1, (30, 27, 3)).astype(np.float32)
    host = restore_image(apply, image, 2, tile=16, overlap=4, mode="host")
    dev = restore_image(apply, image, 2, tile=16, overlap=4, mode="device")
    assert dev.dtype == np.float32
    np.testing.assert_allclose(dev, host, atol=1e-6)


def test_auto_mode_picks_host_when_the_accumulators_do_not_fit():
    fwd, params = _tiny(2)
    apply = functools.partial(fwd, params)
    image = np.random.default_rng(7).uniform(0, 1, (21, 18, 3)).astype(np.float32)
    kw = dict(tile=16, overlap=4, batch_tiles=1, dtype=np.uint8)
    need = inference.device_bytes(image.shape, 2, 16, 4, np.uint8)
    assert need == 56 * 56 * (4 * 4 + 3) + 28 * 28 * 3 * 4  # 21, 18 -> bucket 28 (16 + 12k)
    host = restore_image(apply, image, 2, mode="host", **kw)
    traces = inference.device_traces()
    small = restore_image(apply, image, 2, mode="auto", budget=need - 1, **kw)
    assert inference.device_traces() == traces  # host path: no device program
    np.testing.assert_array_equal(small, host)
    big = restore_image(apply, image, 2, mode="auto", budget=need, **kw)
    assert inference.device_traces() == traces + 1
    assert np.abs(big.astype(int) - host).max() <= 1
    with pytest.raises(ValueError, match="finish"):
        restore_image(apply, image, 2, mode="device", finish=quantize, tile=16, overlap=4)
