"""Tests for jaxsr.metrics against hand numbers, skimage and between the numpy / JAX paths."""
from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image
from skimage.color import rgb2ycbcr
from skimage.metrics import structural_similarity

from jaxsr import metrics as M


def _pair(seed=0, shape=(32, 40, 3), noise=12.0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    wave = np.sin(xx / 4.0)[..., None] * np.cos(yy[..., None] / 6.0 + np.arange(shape[2]))
    base = 128 + 90 * wave
    ref = np.clip(np.round(base), 0, 255).astype(np.uint8)
    img = np.clip(np.round(base + rng.normal(0, noise, shape)), 0, 255).astype(np.uint8)
    return img, ref


def _skimage_ssim(img, ref):
    return structural_similarity(img, ref, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, data_range=255,
                                 channel_axis=-1 if img.ndim == 3 else None)


# --- PSNR --------------------------------------------------------------------------------------

def test_psnr_hand_formula():
    ref = np.zeros((4, 4, 3), np.uint8)
    img = ref.copy()
    img[1, 2, 0] = 255  # one wrong value out of 48 -> mse = 255^2 / 48
    assert M.psnr(img, ref) == pytest.approx(10 * math.log10(48), abs=1e-12)
    img2 = np.full((4, 4, 3), 10.0)
    ref2 = np.full((4, 4, 3), 13.0)  # mse = 9
    assert M.psnr(img2, ref2) == pytest.approx(10 * math.log10(255 ** 2 / 9), abs=1e-12)


def test_psnr_identical_is_inf_in_both_paths():
    img, _ = _pair()
    assert M.psnr(img, img) == float("inf")
    x = (img / 255.0)[None].astype(np.float32)
    assert np.all(np.isposinf(np.asarray(M.psnr_batch(x, x))))


def test_crop_border_removes_border_errors():
    img, _ = _pair()
    other = img.copy()
    other[:2] = 0
    other[:, -2:] = 255
    assert np.isfinite(M.psnr(other, img, crop_border=1))
    assert M.psnr(other, img, crop_border=2) == float("inf")
    assert M.ssim(other, img, crop_border=2) == pytest.approx(1.0, abs=1e-12)


# --- Y channel ---------------------------------------------------------------------------------

def test_rgb_to_y_hand_values():
    rgb = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255],
                     [128, 128, 128]]], np.uint8)
    want = [16.0, 235.0, 16 + 65.481, 16 + 128.553, 16 + 24.966, 16 + 128 * 219.0 / 255]
    np.testing.assert_allclose(M.rgb_to_y(rgb)[0], want, atol=1e-12)
    np.testing.assert_array_equal(M.rgb_to_y(rgb, rounded=True)[0], [16, 235, 81, 145, 41, 126])


def test_rgb_to_y_matches_skimage():
    img, _ = _pair(3)
    np.testing.assert_allclose(M.rgb_to_y(img), rgb2ycbcr(img / 255.0)[..., 0], atol=1e-10)


def test_y_channel_metrics_equal_gray_metrics_on_y_images():
    img, ref = _pair(4)
    for rounded in (False, True):
        yi, yr = M.rgb_to_y(img, rounded), M.rgb_to_y(ref, rounded)
        assert M.psnr(img, ref, 3, True, rounded) == pytest.approx(
            M.psnr(yi[3:-3, 3:-3], yr[3:-3, 3:-3]), abs=1e-12)
        assert M.ssim(img, ref, 3, True, rounded) == pytest.approx(
            M.ssim(yi[3:-3, 3:-3], yr[3:-3, 3:-3]), abs=1e-12)
    # rounding Y changes the result (slightly)
    assert M.psnr(img, ref, 0, True, True) != M.psnr(img, ref, 0, True, False)


# --- SSIM vs skimage ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(32, 40, 3), (24, 24, 1), (20, 30)])
@pytest.mark.parametrize("noise", [3.0, 25.0])
def test_ssim_matches_skimage(shape, noise):
    # skimage filters with 'reflect' padding and then drops (win_size - 1) // 2 = 5 pixels per
    # side before averaging; with sigma=1.5 its window is 2 * int(3.5 * 1.5 + 0.5) + 1 = 11 taps,
    # so its mean covers exactly our 'valid' region and the two agree to rounding error.
    img, ref = _pair(1, shape if len(shape) == 3 else shape + (1,), noise)
    if len(shape) == 2:
        img, ref = img[..., 0], ref[..., 0]
    assert M.ssim(img, ref) == pytest.approx(_skimage_ssim(img, ref), abs=1e-9)
    # and with a border crop: same as skimage on the cropped images
    c = 4
    assert M.ssim(img, ref, crop_border=c) == pytest.approx(
        _skimage_ssim(img[c:-c, c:-c], ref[c:-c, c:-c]), abs=1e-9)


def test_ssim_identical_is_one_and_constant_offset_hand_value():
    img, _ = _pair(5)
    assert M.ssim(img, img) == pytest.approx(1.0, abs=1e-12)
    # Constant images a and b: sigma terms vanish, SSIM = (2ab + c1) / (a^2 + b^2 + c1).
    a, b = 100.0, 110.0
    c1 = (0.01 * 255) ** 2
    want = (2 * a * b + c1) / (a * a + b * b + c1)
    got = M.ssim(np.full((16, 16, 3), a), np.full((16, 16, 3), b))
    assert got == pytest.approx(want, abs=1e-12)


def test_gaussian_window():
    g = M.gaussian_window()
    assert g.shape == (11,)
    np.testing.assert_allclose(g.sum(), 1.0, atol=1e-15)
    np.testing.assert_allclose(g[5] / g[6], math.exp(1 / (2 * 1.5 ** 2)), rtol=1e-12)


# --- input validation --------------------------------------------------------------------------

def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(8, 8, 3\).*\(8, 9, 3\)"):
        M.psnr(np.zeros((8, 8, 3)), np.zeros((8, 9, 3)))
    with pytest.raises(ValueError, match=r"\(16, 16, 3\).*\(16, 16\)"):
        M.ssim(np.zeros((16, 16, 3)), np.zeros((16, 16)))
    with pytest.raises(ValueError, match=r"\(1, 8, 8, 3\).*\(1, 8, 8, 1\)"):
        M.psnr_batch(np.zeros((1, 8, 8, 3)), np.zeros((1, 8, 8, 1)))


def test_other_invalid_inputs():
    with pytest.raises(ValueError, match="crop_border=4"):
        M.psnr(np.zeros((8, 8, 3)), np.zeros((8, 8, 3)), crop_border=4)
    with pytest.raises(ValueError, match="at least 11x11"):
        M.ssim(np.zeros((16, 16, 3)), np.zeros((16, 16, 3)), crop_border=3)
    with pytest.raises(ValueError, match="RGB"):
        M.psnr(np.zeros((8, 8, 1)), np.zeros((8, 8, 1)), test_y_channel=True)
    with pytest.raises(ValueError, match=r"\(8, 8\)"):
        M.rgb_to_y(np.zeros((8, 8)))


# --- JAX batched path == numpy path ------------------------------------------------------------

@pytest.mark.parametrize("crop,y_channel,y_rounded", [(0, False, False), (2, False, False),
                                                      (3, True, False), (4, True, True)])
def test_batched_jax_metrics_equal_numpy(crop, y_channel, y_rounded):
    pairs = [_pair(s, (32, 28, 3), n) for s, n in ((10, 2.0), (11, 10.0), (12, 40.0))]
    x = np.stack([p[0] for p in pairs]).astype(np.float32) / 255.0
    y = np.stack([p[1] for p in pairs]).astype(np.float32) / 255.0
    got_p = np.asarray(M.psnr_batch(x, y, crop, y_channel, y_rounded))
    got_s = np.asarray(M.ssim_batch(x, y, crop, y_channel, y_rounded))
    assert got_p.shape == got_s.shape == (3,)
    want_p = [M.psnr(a, b, crop, y_channel, y_rounded) for a, b in pairs]
    want_s = [M.ssim(a, b, crop, y_channel, y_rounded) for a, b in pairs]
    np.testing.assert_allclose(got_p, want_p, atol=2e-4)
    np.testing.assert_allclose(got_s, want_s, atol=2e-6)


def test_ssim_batch_float32_is_accurate_on_bright_low_contrast_images():
    # Bright, nearly flat images are where E[x^2] - mu^2 cancels badly in float32.
    rng = np.random.default_rng(7)
    ref = np.clip(np.round(245 + rng.normal(0, 1.5, (2, 24, 24, 3))), 0, 255)
    img = np.clip(np.round(ref + rng.normal(0, 1.0, ref.shape)), 0, 255)
    got = np.asarray(M.ssim_batch((img / 255).astype(np.float32), (ref / 255).astype(np.float32)))
    want = [M.ssim(a, b) for a, b in zip(img, ref)]
    np.testing.assert_allclose(got, want, atol=2e-6)


# --- published bicubic baselines (real data) ---------------------------------------------------

def _baseline_module():
    """experiments/bicubic_baseline.py, loaded once (it defines absl flags at import)."""
    import importlib.util
    import pathlib
    import sys

    name = "jaxsr_experiments_bicubic_baseline"
    if name not in sys.modules:
        path = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "bicubic_baseline.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]


def test_bicubic_set5_reproduces_published_table(shared_data):
    # VDSR Table 3, bicubic Set5 (PSNR / SSIM on Y, crop = scale), classic Y-only protocol.
    bb = _baseline_module()
    for scale, (pub_psnr, pub_ssim) in ((2, (33.66, 0.9299)), (3, (30.39, 0.8682)),
                                        (4, (28.42, 0.8104))):
        rows = bb.evaluate_set(shared_data, "set5", scale, protocols=("classic",))
        assert len(rows) == 5
        assert np.mean([r["psnr_classic"] for r in rows]) == pytest.approx(pub_psnr, abs=0.01)
        assert np.mean([r["ssim_classic"] for r in rows]) == pytest.approx(pub_ssim, abs=5e-4)


def test_bicubic_set5_from_released_rgb_lr_is_close_to_published(shared_data):
    # Upsampling the released RGB LR (which MATLAB rounded to uint8 per pass) instead of
    # degrading Y alone costs ~0.015 dB at x2 and less at x3 / x4 (measured 33.6455 / 30.3876 /
    # 28.4189 with rounded Y).
    bb = _baseline_module()
    for scale, pub in ((2, 33.66), (3, 30.39), (4, 28.42)):
        rows = bb.evaluate_set(shared_data, "set5", scale, protocols=("rgb",))
        got = np.mean([r["psnr_y_rounded"] for r in rows])
        assert got == pytest.approx(pub, abs=0.02)
        assert got < pub  # the RGB-LR protocol is consistently a little lower


def test_set14_gray_file_explains_offset(shared_data):
    # Set14 '003' (bridge) is a single-channel file. Mapping it to Y = 16 + 219/255 * v shrinks
    # errors by 219/255, i.e. +20 log10(255/219) = +1.32 dB, which is +0.094 dB on the mean of 14.
    bb = _baseline_module()
    root = shared_data / "set14" / "x3" / "hr"
    assert bb.is_single_channel_file(root / "003.png")
    assert not any(bb.is_single_channel_file(p) for p in sorted(root.glob("*.png"))
                   if p.name != "003.png")
    hr = np.asarray(Image.open(root / "003.png").convert("RGB"))
    ref_raw, up_raw = bb.classic_luma(hr, 3, single_channel=True)
    ref_y, up_y = bb.classic_luma(hr, 3, single_channel=False)
    raw, mapped = M.psnr(up_raw, ref_raw, 3), M.psnr(up_y, ref_y, 3)
    assert mapped - raw == pytest.approx(20 * math.log10(255 / 219), abs=0.01)


@pytest.mark.slow
def test_bicubic_set14_reproduces_published_table(shared_data):
    # VDSR Table 3, bicubic Set14: 30.24 / 27.55 / 26.00 dB (needs the gray file used raw).
    bb = _baseline_module()
    for scale, pub in ((2, 30.24), (3, 27.55), (4, 26.00)):
        rows = bb.evaluate_set(shared_data, "set14", scale, protocols=("classic",))
        assert np.mean([r["psnr_classic"] for r in rows]) == pytest.approx(pub, abs=0.01)


# --- device evaluation metrics (jaxsr.train.evaluate) against the float64 tables -------------

def _device_and_float64_metrics(shape, crop):
    """[(name, device float32 value, float64 table value)] for two SR-like error levels."""
    import jax.numpy as jnp
    from jaxsr.train.evaluate import METRIC_NAMES, _device_image_metrics, image_metrics
    rows = []
    for noise in (2.0, 6.0):  # ~42 dB and ~32 dB: SR-like error levels
        out, hr = _pair(seed=3, shape=shape, noise=noise)
        pad = np.zeros((shape[0] + 7, shape[1] + 5, 3), np.uint8)  # the device path's bucket
        pad[:shape[0], :shape[1]] = out
        dev = np.asarray(_device_image_metrics(jnp.asarray(pad), jnp.asarray(hr), shape[:2],
                                               crop))
        ref = image_metrics(out, hr, crop)
        rows += [(name, float(v), ref[name]) for name, v in zip(METRIC_NAMES, dev)]
    return rows


def _tolerance(name):
    return 1e-3 if name.startswith("psnr") else 1e-4   # dB / SSIM units


def test_device_eval_metrics_match_float64_on_large_images():
    rows = _device_and_float64_metrics((678, 1020, 3), crop=4)
    assert len(rows) == 8
    for name, dev, ref in rows:
        assert abs(dev - ref) < _tolerance(name), (name, dev, ref)


@pytest.mark.slow
def test_device_eval_metrics_match_float64_on_div2k_size_images():
    rows = _device_and_float64_metrics((1356, 2040, 3), crop=4)
    assert len(rows) == 8
    for name, dev, ref in rows:
        assert abs(dev - ref) < _tolerance(name), (name, dev, ref)


def test_evaluate_pairs_device_metrics_same_keys_and_values():
    import functools

    import jax
    import jax.numpy as jnp

    from jaxsr.train.evaluate import evaluate_pairs
    hr, _ = _pair(seed=4, shape=(64, 90, 3), noise=3.0)
    lr = hr[::2, ::2].copy()
    fwd = jax.jit(lambda p, x: jnp.clip(jnp.repeat(jnp.repeat(x * p, 2, 1), 2, 2), 0, 1))
    apply = functools.partial(fwd, jnp.float32(1.0137))  # no exact .5 ties (rounding rules differ)
    pairs = [(lr, hr, "a"), (lr[:20, :30], hr[:40, :60], "b")]
    kw = dict(tile=24, overlap=4, batch_tiles=2, keep_outputs=1)
    host = evaluate_pairs(apply, pairs, 2, **kw)
    dev = evaluate_pairs(apply, pairs, 2, device_metrics=True, **kw)
    assert list(dev[0]) == list(host[0])  # same keys, same order: logs unchanged
    for a, b in zip(host[1], dev[1]):
        assert a["name"] == b["name"]
        for k in host[0]:
            assert abs(a[k] - b[k]) < (1e-3 if k.startswith("psnr") else 1e-4)
    assert dev[2][0].shape == hr.shape and dev[2][0].dtype == np.uint8
    assert np.abs(dev[2][0].astype(int) - host[2][0]).max() <= 1
