"""Tests for jaxsr.imresize against hand computations and MATLAB-made LR images."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxsr import imresize as ir


# --- kernel and weights, by hand ---------------------------------------------------------------

def test_cubic_kernel_hand_values():
    # Keys a = -0.5: 1.5|x|^3 - 2.5|x|^2 + 1 (|x| <= 1); -0.5|x|^3 + 2.5|x|^2 - 4|x| + 2 (1..2).
    x = np.array([0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, -0.5, -1.5])
    want = [1.0, 0.8671875, 0.5625, 0.2265625, 0.0, -0.0703125, -0.0625, -0.0234375, 0.0, 0.0,
            0.5625, -0.0625]
    np.testing.assert_allclose(ir._cubic(x), want, atol=1e-15)


def test_downscale_by_2_interior_weights_match_hand_computation():
    # Scale 1/2 stretches the kernel to width 8; an interior output sits half way between two
    # inputs, so the taps are at distances +-0.5, 1.5, 2.5, 3.5 and weight 0.5 * cubic(d / 2).
    w = ir.resize_weights(32, 16, 0.5)
    assert w.shape == (16, 32)
    hand = 0.5 * np.array([-0.0234375, -0.0703125, 0.2265625, 0.8671875,
                           0.8671875, 0.2265625, -0.0703125, -0.0234375])
    # Output 8 (0-based) covers inputs 16 and 17 -> taps 13..20.
    np.testing.assert_allclose(w[8, 13:21], hand, atol=1e-15)
    assert np.all(w[8, :13] == 0) and np.all(w[8, 21:] == 0)
    np.testing.assert_allclose(hand.sum(), 1.0, atol=1e-15)


@pytest.mark.parametrize("method", ["bicubic", "bilinear", "box"])
@pytest.mark.parametrize("boundary", ["replicate", "symmetric"])
@pytest.mark.parametrize("n_in,n_out", [(12, 6), (12, 4), (9, 3), (7, 13), (5, 20), (16, 11)])
def test_weight_rows_sum_to_one(method, boundary, n_in, n_out):
    w = ir.resize_weights(n_in, n_out, n_out / n_in, method, True, boundary)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)


def _loop_resize_1d(x: np.ndarray, n_out: int, scale: float, kernel, width: float, pad_mode: str):
    """Independent 1-D reference: pad with np.pad, then evaluate the formula tap by tap."""
    if scale < 1:
        kern = lambda t: scale * kernel(scale * t)  # noqa: E731
        width = width / scale
    else:
        kern = kernel
    pad = int(np.ceil(width)) + 4
    xp = np.pad(x, pad, mode=pad_mode)
    out = np.zeros(n_out)
    for i in range(n_out):
        u = (i + 1) / scale + 0.5 * (1 - 1 / scale) - 1  # 0-based input coordinate
        taps = range(int(np.floor(u - width / 2)), int(np.ceil(u + width / 2)) + 1)
        ws = np.array([kern(np.array(u - j)) for j in taps], dtype=np.float64)
        vals = np.array([xp[j + pad] for j in taps])
        out[i] = np.sum(ws * vals) / np.sum(ws)
    return out


@pytest.mark.parametrize("boundary,pad_mode", [("replicate", "edge"), ("symmetric", "symmetric")])
@pytest.mark.parametrize("method", ["bicubic", "bilinear"])
@pytest.mark.parametrize("n_in,n_out", [(20, 10), (21, 7), (20, 5), (8, 16), (6, 18), (10, 15)])
def test_weights_match_padded_loop_reference(boundary, pad_mode, method, n_in, n_out):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, n_in)
    kernel, width = ir.METHODS[method]
    scale = n_out / n_in
    ref = _loop_resize_1d(x, n_out, scale, kernel, width, pad_mode)
    got = ir.resize_weights(n_in, n_out, scale, method, True, boundary) @ x
    np.testing.assert_allclose(got, ref, atol=1e-9)


def test_box_downscale_by_2_is_block_mean():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (2, 8, 12, 3)).astype(np.float32)
    got = np.asarray(ir.imresize(x, 0.5, method="box"))
    want = x.reshape(2, 4, 2, 6, 2, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_bilinear_upscale_by_2_interior_is_quarter_three_quarter():
    a = np.arange(10, dtype=np.float64) ** 2
    w = ir.resize_weights(10, 20, 2.0, "bilinear")
    y = w @ a
    k = np.arange(1, 9)
    np.testing.assert_allclose(y[2 * k], 0.25 * a[k - 1] + 0.75 * a[k], atol=1e-12)
    np.testing.assert_allclose(y[2 * k + 1], 0.75 * a[k] + 0.25 * a[k + 1], atol=1e-12)


def test_replicate_and_symmetric_differ_only_at_the_borders():
    wr = ir.resize_weights(40, 20, 0.5, boundary="replicate")
    ws = ir.resize_weights(40, 20, 0.5, boundary="symmetric")
    differs = np.nonzero(np.abs(wr - ws).max(axis=1) > 0)[0]
    # The width-8 kernel reaches 3 taps outside the image for the first / last output (input
    # indices 0, -1, -2 in MATLAB's 1-based terms); for the second only index 0 is outside, and
    # both rules map that to 1 (the symmetric mirror repeats the edge).
    np.testing.assert_array_equal(differs, [0, 19])
    np.testing.assert_allclose(wr[0, :4], [0.43359375 + 0.11328125 - 0.03515625 - 0.01171875,
                                           0.43359375, 0.11328125, -0.03515625], atol=1e-15)
    np.testing.assert_allclose(ws[0, :4], [0.43359375 + 0.11328125, 0.43359375 - 0.03515625,
                                           0.11328125 - 0.01171875, -0.03515625], atol=1e-15)


# --- image-level behaviour ---------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [dict(scale=2), dict(scale=3), dict(scale=1.5),
                                    dict(scale=0.5), dict(output_shape=(23, 7))])
@pytest.mark.parametrize("method", ["bicubic", "bilinear", "box"])
def test_constant_image_stays_constant(kwargs, method):
    x = np.full((1, 12, 10, 3), 0.37, np.float32)
    y = np.asarray(ir.imresize(x, method=method, **kwargs))
    np.testing.assert_allclose(y, 0.37, atol=1e-6)


def test_output_sizes_follow_matlab():
    assert ir.output_size((255, 510), scale=1 / 3)[0] == (85, 170)  # 255 * (1/3) snapped
    assert ir.output_size((7, 9), scale=0.5)[0] == (4, 5)  # ceil
    assert ir.output_size((10, 20), output_shape=(None, 30)) == ((15, 30), (1.5, 1.5))
    assert ir.output_size((10, 20), scale=(2, 0.5))[0] == (20, 10)
    x = jnp.zeros((3, 2, 8, 12, 1))
    assert ir.imresize(x, 1 / 4).shape == (3, 2, 2, 3, 1)
    assert ir.imresize(x, output_shape=(5, 7)).shape == (3, 2, 5, 7, 1)


def test_batched_jit_vmap_agree_with_per_image_and_float64():
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, (3, 16, 12, 3)).astype(np.float32)
    eager = np.asarray(ir.imresize(x, 0.5))
    per_image = np.stack([np.asarray(ir.imresize(im, 0.5)) for im in x])
    jitted = np.asarray(jax.jit(functools.partial(ir.imresize, scale=0.5))(x))
    vmapped = np.asarray(jax.vmap(lambda im: ir.imresize(im, 0.5))(x))
    # float64 reference with the weight matrices
    wh, ww = ir.resize_weights(16, 8, 0.5), ir.resize_weights(12, 6, 0.5)
    ref = np.einsum("oh,bhwc,pw->bopc", wh, x.astype(np.float64), ww)
    for got in (eager, per_image, jitted, vmapped):
        np.testing.assert_allclose(got, ref, atol=2e-6)


def test_integer_input_becomes_float32_and_up_down_is_close_on_smooth_image():
    yy, xx = np.mgrid[0:32, 0:32]
    img = (127 + 100 * np.sin(xx / 5.0) * np.cos(yy / 7.0)).astype(np.uint8)[..., None]
    y = ir.imresize(img, 2)
    assert y.dtype == jnp.float32 and y.shape == (64, 64, 1)
    back = np.asarray(ir.imresize(y, 0.5))
    assert np.abs(back - img)[4:-4, 4:-4].max() < 3.0


def test_bad_arguments_raise_with_clear_messages():
    x = np.zeros((8, 8, 3), np.float32)
    with pytest.raises(ValueError, match="exactly one"):
        ir.imresize(x, scale=2, output_shape=(16, 16))
    with pytest.raises(ValueError, match="exactly one"):
        ir.imresize(x)
    with pytest.raises(ValueError, match="unknown method 'lanczos'"):
        ir.imresize(x, 2, method="lanczos")
    with pytest.raises(ValueError, match="unknown boundary"):
        ir.imresize(x, 2, boundary="wrap")
    with pytest.raises(ValueError, match=r"\(8, 8\)"):
        ir.imresize(np.zeros((8, 8)), 2)
    with pytest.raises(ValueError, match="uint8"):
        ir.imresize_uint8(x, 2)


def test_imresize_uint8_rounds_half_away_from_zero_and_saturates():
    # A 2x upscale of a step 0 | 255 overshoots: bicubic ringing must be clipped to [0, 255].
    img = np.zeros((4, 8, 1), np.uint8)
    img[:, 4:] = 255
    out = ir.imresize_uint8(img, 2)
    ref = np.asarray(ir.imresize(img.astype(np.float64), 2))
    assert ref.min() < -1 and ref.max() > 256  # overshoot exists before saturation
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.clip(np.floor(ref + 0.5), 0, 255).astype(np.uint8))


# --- real data: the MATLAB-made LR images of Set5 / Set14 ----------------------------------------

def _load(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _pairs(root, sets=("set5", "set14"), scales=(2, 3, 4)):
    for name in sets:
        for s in scales:
            for hr_path in sorted((root / name / f"x{s}" / "hr").glob("*.png")):
                yield name, s, _load(hr_path), _load(hr_path.parent.parent / "lr" / hr_path.name)


def test_imresize_uint8_reproduces_matlab_lr_bit_exactly(shared_data):
    n = 0
    for name, s, hr, lr in _pairs(shared_data):
        out = ir.imresize_uint8(hr, 1 / s)
        assert out.shape == lr.shape, (name, s)
        np.testing.assert_array_equal(out, lr, err_msg=f"{name} x{s}")
        n += 1
    assert n == 3 * (5 + 14)


def test_jax_imresize_per_axis_with_uint8_rounding_reproduces_matlab_lr(shared_data):
    # The float JAX path, run one axis at a time with MATLAB's uint8 rounding in between.
    def rnd(v):
        return jnp.clip(jnp.floor(v + 0.5), 0, 255)

    stats = []
    for name, s, hr, lr in _pairs(shared_data, sets=("set5",)):
        h, w = lr.shape[:2]
        x = jnp.asarray(hr, jnp.float32)
        y = rnd(ir.imresize(x, output_shape=(h, hr.shape[1])))
        y = np.asarray(rnd(ir.imresize(y, output_shape=(h, w)))).astype(np.uint8)
        d = np.abs(y.astype(int) - lr)
        stats.append((d.max(), (d == 0).mean()))
        # and the plain float path (no rounding between passes) is within 2 levels
        one_pass = np.asarray(rnd(ir.imresize(x, 1 / s))).astype(int)
        assert np.abs(one_pass - lr).max() <= 2, (name, s)
    # measured: bit-exact on every Set5 and Set14 image (float32 is enough here)
    assert max(m for m, _ in stats) == 0
    assert min(f for _, f in stats) == 1.0


def test_symmetric_boundary_matches_matlab_lr_only_inside(shared_data):
    # Documents which MATLAB boundary rule made the data: mirroring differs at the borders.
    for name, s, hr, lr in _pairs(shared_data, sets=("set5",), scales=(2,)):
        out = ir.imresize_uint8(hr, 1 / s, boundary="symmetric")
        np.testing.assert_array_equal(out[3:-3, 3:-3], lr[3:-3, 3:-3])
        assert np.any(out != lr)
