"""Tiled whole-image inference equals untiled inference (independent reference: one big call)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

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


@pytest.mark.parametrize("scale", [1, 2])
def test_tiled_equals_untiled(scale):
    model = TinyNet(scale)
    rng = np.random.default_rng(0)
    image = rng.uniform(0.2, 0.8, (45, 70, 3)).astype(np.float32)
    params = model.init(jax.random.key(0), image[None])
    apply = jax.jit(lambda x: model.apply(params, x))
    full = np.clip(np.asarray(apply(image[None]))[0], 0, 1)
    # The blend gives ~0 weight to the outer quarter of each overlap: with overlap 16 that
    # 4-px band covers the 3-px radius of the zero-padding artefacts, so tiling is exact to 1e-4.
    tiled = restore_image(apply, image, scale, tile=32, overlap=16, batch_tiles=3)
    assert tiled.shape == full.shape
    np.testing.assert_allclose(tiled, full, atol=1e-4)
    # With a narrow overlap (8 px: 2-px dead band < 3-px radius) seams show a small error only.
    narrow = restore_image(apply, image, scale, tile=24, overlap=8, batch_tiles=3)
    assert np.abs(narrow - full).max() < 0.05
    s = scale  # Interior of the first tile, away from any seam, is exact.
    np.testing.assert_allclose(narrow[3 * s:12 * s, 3 * s:12 * s], full[3 * s:12 * s, 3 * s:12 * s],
                               atol=1e-5)


def test_tile_larger_than_image_is_padded_and_cropped():
    apply = jax.jit(lambda x: x * 0.5)
    image = np.random.default_rng(1).uniform(0, 1, (10, 13, 3)).astype(np.float32)
    out = restore_image(apply, image, 1, tile=32, overlap=4)
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
    got = restore_image(apply, image, scale, tile=tile, overlap=overlap, batch_tiles=5)
    np.testing.assert_array_equal(got, ref)


def test_preallocated_uint_output_and_finish():
    model = TinyNet(2)
    image = np.random.default_rng(3).uniform(0, 1, (37, 29, 3)).astype(np.float32)
    params = model.init(jax.random.key(2), image[None])
    apply = jax.jit(lambda x: model.apply(params, x))
    ref = restore_image(apply, image, 2, tile=16, overlap=6, batch_tiles=2)
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
