"""Sampled positions of LR features (E_l, at LR size) and HR features (E_h / E_f, stride-s
stem) refer to the same image region, at every scale."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsr.losses import gather_positions, sample_positions
from jaxsr.methods.crl.networks import StridedEncoder, StridedStem
from jaxsr.methods.crl.positions import hr_block, hr_block_indices


@pytest.mark.parametrize("scale", [1, 2, 3, 4])
def test_block_indices_are_the_hr_pixels_an_lr_pixel_covers(scale):
    h, w = 5, 7
    idx = np.asarray(sample_positions(jax.random.key(scale), h, w, 12))
    blocks = np.asarray(hr_block_indices(idx, w, scale))
    region = np.arange(h * w).reshape(h, w).repeat(scale, 0).repeat(scale, 1).reshape(-1)
    for i, b in zip(idx, blocks):   # the HR pixels of block i are exactly those labelled i
        np.testing.assert_array_equal(np.sort(b), np.flatnonzero(region == i))
    top, left = (np.asarray(t) for t in hr_block(idx, w, scale))
    np.testing.assert_array_equal(top, idx // w * scale)
    np.testing.assert_array_equal(left, idx % w * scale)


@pytest.mark.parametrize("scale", [1, 2, 3, 4])
def test_lr_and_hr_features_at_sampled_positions_describe_the_same_region(scale):
    """HR image whose s x s block (i, j) holds a unique value; LR = that block's value. The
    stem (an averaging kernel) and the LR map give equal vectors at every sampled position."""
    h, w = 4, 6
    labels = np.arange(1, h * w + 1, dtype=np.float32).reshape(h, w) / (h * w)
    hr = np.repeat(np.repeat(labels, scale, 0), scale, 1)[None, ..., None].repeat(3, -1)
    lr = labels[None, ..., None].repeat(3, -1)
    stem = StridedStem(3, scale)
    kernel = np.zeros((scale, scale, 3, 3), np.float32)
    for c in range(3):
        kernel[:, :, c, c] = 1.0 / scale ** 2
    params = {"conv": {"kernel": jnp.asarray(kernel), "bias": jnp.zeros(3)}}
    f_h = stem.apply({"params": params}, jnp.asarray(hr))
    assert f_h.shape == (1, h, w, 3)
    idx = sample_positions(jax.random.key(0), h, w, 10)
    np.testing.assert_allclose(np.asarray(gather_positions(f_h, idx)),
                               np.asarray(gather_positions(jnp.asarray(lr), idx)), atol=1e-6)


@pytest.mark.parametrize("scale", [2, 4])
def test_stem_feature_depends_only_on_its_hr_block(scale):
    """Changing the HR block of LR pixel (i, j) changes the stem output at (i, j) only; the full
    encoder's output map has the LR size."""
    h, w = 4, 4
    stem = StridedStem(5, scale)
    x = jnp.asarray(np.random.default_rng(0).random((1, h * scale, w * scale, 3), np.float32))
    params = stem.init(jax.random.key(0), x)["params"]
    i, j = 1, 2
    y = x.at[0, i * scale:(i + 1) * scale, j * scale:(j + 1) * scale].add(0.5)
    diff = np.abs(np.asarray(stem.apply({"params": params}, y) - stem.apply({"params": params},
                                                                         x))).sum(-1)[0]
    assert diff[i, j] > 0
    diff[i, j] = 0
    np.testing.assert_array_equal(diff, 0)
    enc = StridedEncoder(8, 1, scale)
    out = enc.apply(enc.init(jax.random.key(1), x), x)
    assert out.shape == (1, h, w, 8)
