"""The RealSR evaluation protocol against an independent transcription of the release's MATLAB
(`patchLocation.m` linear indices, `rgb2ycbcr` on uint8, `Cal_PSNRSSIM.m`) and scikit-image."""
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from jaxsr import eval_protocols as ep


def _matlab_patch_location(size, size_patch, size_skip):
    """patchLocation.m literally: 1-based, meshgrid, column-major linear indices."""
    y = list(range(1, size[0] - size_patch[0] + 2, size_skip[0])) + [size[0] - size_patch[0] + 1]
    x = list(range(1, size[1] - size_patch[1] + 2, size_skip[1])) + [size[1] - size_patch[1] + 1]
    Y, X = np.meshgrid(y, x)                       # MATLAB meshgrid(y, x): rows follow x
    dY, dX = np.meshgrid(np.arange(size_patch[0]), np.arange(size_patch[1]))
    n = Y.size
    Yf, Xf = Y.reshape(-1, order="F"), X.reshape(-1, order="F")
    dY = Yf[None, None, :] + dY[..., None]
    dX = Xf[None, None, :] + dX[..., None]
    return dY + (dX - 1) * size[0], n               # 1-based linear index into a (H, W) array


def _matlab_y_uint8(rgb):
    """MATLAB rgb2ycbcr on uint8: Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255, cast to
    uint8 the MATLAB way (round half away from zero; np.round would round half to even)."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    return np.floor(16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255 + 0.5).astype(np.uint8)


def test_patch_starts_follow_patch_location():
    assert ep.patch_starts(2000) == [0, 800, 800]        # the last start repeats: kept
    assert ep.patch_starts(1700) == [0, 500]
    assert ep.patch_starts(2812) == [0, 800, 1600, 1612]
    assert ep.patch_starts(1200) == [0, 0]
    assert ep.realsr_boxes(1201, 5000)[0] == (0, 0, 1200, 1200)
    assert ep.realsr_boxes(1200, 5000) == [(0, 0, 1200, 5000)]   # not > 1200 on both sides
    assert ep.realsr_boxes(900, 700) == [(0, 0, 900, 700)]


def test_boxes_equal_the_matlab_linear_indices():
    h, w = 2003, 1705
    size = (h - h % 4, w - w % 4)
    lin, n = _matlab_patch_location(size, (1200, 1200), (800, 800))
    img = np.arange(size[0] * size[1]).reshape(size)
    want = [img.reshape(-1, order="F")[lin[..., k] - 1].T for k in range(n)]  # (1200, 1200) each
    got = [img[y:y + hh, x:x + ww] for y, x, hh, ww in ep.realsr_boxes(*size)]
    key = lambda a: (int(a[0, 0]), int(a[-1, -1]))  # noqa: E731
    assert sorted(map(key, got)) == sorted(map(key, want)) and len(got) == n == 6
    for g, wnt in zip(sorted(got, key=key), sorted(want, key=key)):
        np.testing.assert_array_equal(g, wnt)


@pytest.mark.parametrize("shape", [(1307, 1251, 3), (403, 517, 3)])
def test_metrics_equal_an_independent_transcription(shape):
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, shape, dtype=np.uint8)
    noise = rng.normal(0, 6, shape)
    out = np.clip(hr + noise, 0, 255).astype(np.uint8)
    got = ep.realsr_patch_metrics(out, hr)
    h, w = shape[0] - shape[0] % 4, shape[1] - shape[1] % 4
    yo, yr = _matlab_y_uint8(out[:h, :w]), _matlab_y_uint8(hr[:h, :w])
    if h > 1200 and w > 1200:
        lin, n = _matlab_patch_location((h, w), (1200, 1200), (800, 800))
        pairs = [(yo.reshape(-1, order="F")[lin[..., k] - 1], yr.reshape(-1, order="F")[
            lin[..., k] - 1]) for k in range(n)]
    else:
        pairs = [(yo, yr)]
    assert len(got) == len(pairs)
    want_psnr = sorted(peak_signal_noise_ratio(b.astype(float), a.astype(float), data_range=255)
                       for a, b in pairs)
    want_ssim = sorted(structural_similarity(a.astype(float), b.astype(float), data_range=255,
                                             gaussian_weights=True, sigma=1.5,
                                             use_sample_covariance=False) for a, b in pairs)
    # Y values within ~1e-12 of a .5 tie may round differently with another order of float
    # operations (a few of the 1.6M pixels here): a few 1e-6 dB, far below table precision.
    np.testing.assert_allclose(sorted(p["psnr_y"] for p in got), want_psnr, rtol=0, atol=2e-5)
    np.testing.assert_allclose(sorted(p["ssim_y"] for p in got), want_ssim, rtol=0, atol=1e-7)


def test_mean_is_over_patches_not_images():
    per_image = [[{"psnr_y": 30.0, "ssim_y": 0.9}] * 6, [{"psnr_y": 20.0, "ssim_y": 0.5}]]
    m = ep.mean_over_patches(per_image)
    assert m["psnr_y"] == pytest.approx((6 * 30 + 20) / 7)
    assert m["ssim_y"] == pytest.approx((6 * 0.9 + 0.5) / 7)


def test_bad_inputs_name_the_problem():
    a = np.zeros((20, 20, 3), np.uint8)
    with pytest.raises(ValueError, match="output must be"):
        ep.realsr_patch_metrics(a.astype(np.float32), a)
    with pytest.raises(ValueError, match=r"output \(20, 20, 3\) != target \(24, 20, 3\)"):
        ep.realsr_patch_metrics(a, np.zeros((24, 20, 3), np.uint8))
    with pytest.raises(ValueError, match="config.eval.protocol='matlab' is unknown"):
        ep.check_protocol("matlab")


def test_evaluator_option_realsr_averages_patches():
    """evaluate_pairs(protocol='realsr') = the mean over every patch of the set (not of the
    per-image means), here for the identity baseline on one large and one small pair."""
    from jaxsr.train.evaluate import evaluate_pairs
    rng = np.random.default_rng(1)
    pairs = []
    for shape in [(1605, 1210, 3), (300, 260, 3)]:
        hr = rng.integers(0, 256, shape, dtype=np.uint8)
        lr = np.clip(hr + rng.normal(0, 8, shape), 0, 255).astype(np.uint8)
        pairs.append((lr, hr, f"{shape[0]}"))
    mean, per_image, _ = evaluate_pairs(None, pairs, scale=1, protocol="realsr")
    assert set(mean) == {"psnr_y", "ssim_y"}
    patches = [ep.realsr_patch_metrics(lr, hr) for lr, hr, _ in pairs]
    assert [len(p) for p in patches] == [4, 1]   # 1604x1208: y starts 0, 404; x 0, 8
    want = np.mean([p["psnr_y"] for image in patches for p in image])
    assert mean["psnr_y"] == pytest.approx(want, abs=1e-12)
    assert mean["psnr_y"] != pytest.approx(np.mean([m["psnr_y"] for m in per_image]), abs=1e-6)
    with pytest.raises(ValueError, match="protocol='x' is unknown"):
        evaluate_pairs(None, pairs, scale=1, protocol="x")
