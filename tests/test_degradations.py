"""Per-image degradation functions against scipy / numpy references, hand values and invariants."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage as ndi

from jaxsr.degradations import blur as B
from jaxsr.degradations import color as C
from jaxsr.degradations import noise as N
from jaxsr.degradations import resize as R
from jaxsr.degradations import spatial as S
from jaxsr.degradations import weather as W
from jaxsr.degradations.fields import smooth_field

SIZE = B.KERNEL_SIZE
MID = SIZE // 2


def _rand_img(seed=0, shape=(16, 20, 3)):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def _delta(size=SIZE):
    d = np.zeros((size, size), np.float64)
    d[size // 2, size // 2] = 1.0
    return d


# ---------------------------------------------------------------------------------- blur ----

def test_kernels_sum_to_one_with_traced_parameters():
    params = jnp.array([0.0, 0.3, 1.7, 4.0])
    kernels = jax.jit(jax.vmap(lambda p: jnp.stack([
        B.gaussian_kernel(p),
        B.anisotropic_gaussian_kernel(p, 2.0 * p + 0.5, 0.7 * p),
        B.motion_kernel(3.0 * p, 0.4 + p),
        B.disk_kernel(p),
    ])))(params)
    assert kernels.shape == (4, 4, SIZE, SIZE)
    np.testing.assert_allclose(np.asarray(kernels).sum((-1, -2)), 1.0, atol=1e-5)
    assert np.all(np.asarray(kernels) >= 0)


@pytest.mark.parametrize("sigma", [0.5, 1.3, 3.0])
def test_gaussian_kernel_matches_scipy_gaussian_filter(sigma):
    # gaussian_filter of a delta with radius 10 = normalised separable Gaussian taps.
    ref = ndi.gaussian_filter(_delta(), sigma, mode="constant", truncate=MID / sigma)
    np.testing.assert_allclose(np.asarray(B.gaussian_kernel(sigma)), ref, atol=1e-6)


def test_gaussian_kernel_tiny_sigma_is_delta():
    np.testing.assert_array_equal(np.asarray(B.gaussian_kernel(0.0)), _delta())


def test_anisotropic_axes_and_equal_sigmas():
    sx, sy = 1.0, 2.5
    # theta = 0: sigma_x along columns, sigma_y along rows (scipy sigma order: rows, cols).
    ref = ndi.gaussian_filter1d(_delta(), sy, axis=0, mode="constant", truncate=MID / sy)
    ref = ndi.gaussian_filter1d(ref, sx, axis=1, mode="constant", truncate=MID / sx)
    k0 = np.asarray(B.anisotropic_gaussian_kernel(sx, sy, 0.0))
    np.testing.assert_allclose(k0, ref, atol=1e-6)
    # equal sigmas: isotropic, whatever the angle
    np.testing.assert_allclose(np.asarray(B.anisotropic_gaussian_kernel(1.7, 1.7, 0.9)),
                               np.asarray(B.gaussian_kernel(1.7)), atol=1e-6)
    # rotation by pi/2 swaps the axes
    k90 = np.asarray(B.anisotropic_gaussian_kernel(sx, sy, math.pi / 2))
    np.testing.assert_allclose(k90, k0.T, atol=1e-6)
    np.testing.assert_allclose(k90, np.asarray(B.anisotropic_gaussian_kernel(sy, sx, 0.0)),
                               atol=1e-6)


def test_anisotropic_matches_rotated_coordinates_formula():
    sx, sy, th = 0.8, 3.0, 0.6
    r = np.arange(SIZE) - MID
    y, x = np.meshgrid(r, r, indexing="ij")
    u = x * np.cos(th) + y * np.sin(th)    # coordinate along the sigma_x axis
    v = -x * np.sin(th) + y * np.cos(th)   # along the sigma_y axis
    ref = np.exp(-0.5 * (u ** 2 / sx ** 2 + v ** 2 / sy ** 2))
    ref /= ref.sum()
    np.testing.assert_allclose(np.asarray(B.anisotropic_gaussian_kernel(sx, sy, th)), ref,
                               atol=1e-6)


def test_motion_kernel_hand_values():
    for angle in (0.0, 0.5, 1.2, 2.9):                  # zero length: delta at any angle
        np.testing.assert_array_equal(np.asarray(B.motion_kernel(0.0, angle)), _delta())
    # length 4 horizontal: box [-2, 2] * 1-px tent -> taps 0.5, 1, 1, 1, 0.5 (sum 4)
    ref4 = np.zeros((SIZE, SIZE))
    ref4[MID, MID - 2:MID + 3] = np.array([0.5, 1, 1, 1, 0.5]) / 4
    np.testing.assert_allclose(np.asarray(B.motion_kernel(4.0, 0.0)), ref4, atol=1e-6)
    # length 5: taps 1/8, 7/8, 1, 1, 1, 7/8, 1/8 (up to the 64-point quadrature)
    ref5 = np.zeros((SIZE, SIZE))
    ref5[MID, MID - 3:MID + 4] = np.array([1 / 8, 7 / 8, 1, 1, 1, 7 / 8, 1 / 8]) / 5
    np.testing.assert_allclose(np.asarray(B.motion_kernel(5.0, 0.0)), ref5, atol=2e-4)
    np.testing.assert_allclose(np.asarray(B.motion_kernel(5.0, math.pi / 2)), ref5.T, atol=2e-4)
    kd = np.asarray(B.motion_kernel(9.0, math.pi / 4))  # diagonal: symmetric about it
    np.testing.assert_allclose(kd, kd.T, atol=1e-7)
    np.testing.assert_allclose(kd, kd[::-1, ::-1], atol=1e-7)
    assert kd[MID + 3, MID + 3] > 0 and kd[MID + 3, MID - 3] == 0


def test_motion_kernel_moments():
    yy, xx = np.mgrid[:SIZE, :SIZE] - MID
    k = np.asarray(B.motion_kernel(9.0, 0.0), np.float64)
    # variance along the motion: box of length 9 (81/12) plus the splat tent (1/6)
    assert abs((k * xx ** 2).sum() - (81 / 12 + 1 / 6)) < 0.01
    theta = 0.6
    k = np.asarray(B.motion_kernel(11.0, theta), np.float64)
    assert abs((k * xx).sum()) < 1e-5 and abs((k * yy).sum()) < 1e-5       # centred
    cov = np.array([[(k * xx * xx).sum(), (k * xx * yy).sum()],
                    [(k * xx * yy).sum(), (k * yy * yy).sum()]])
    vals, vecs = np.linalg.eigh(cov)
    main = vecs[:, 1]
    assert abs(np.arctan2(main[1], main[0]) % math.pi - theta) < 0.01    # principal axis


def test_disk_kernel_area_and_symmetry():
    np.testing.assert_array_equal(np.asarray(B.disk_kernel(0.0)), _delta())
    for r in (2.0, 3.0, 4.0):
        k = np.asarray(B.disk_kernel(r))
        # the centre weight is 1 before normalisation, so 1 / k[centre] = anti-aliased area
        assert abs(1.0 / k[MID, MID] - math.pi * r * r) / (math.pi * r * r) < 0.05
        np.testing.assert_allclose(k, k.T, atol=1e-7)
        np.testing.assert_allclose(k, k[::-1], atol=1e-7)
        yy, xx = np.mgrid[:SIZE, :SIZE] - MID
        assert np.all(k[np.hypot(yy, xx) >= r + 0.5] == 0)


@pytest.mark.parametrize("ksize", [3, 7, 21])
def test_blur_matches_scipy_convolve_mirror(ksize):
    img = _rand_img(1, (16, 23, 3))
    kernel = np.random.default_rng(2).random((ksize, ksize)).astype(np.float32)
    kernel /= kernel.sum()          # asymmetric: checks the flip (convolution, not correlation)
    out = np.asarray(jax.jit(B.blur)(img, kernel))
    ref = np.stack([ndi.convolve(img[..., c].astype(np.float64), kernel.astype(np.float64),
                                 mode="mirror") for c in range(3)], -1)
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_blur_stack_equals_separate_blurs():
    img = _rand_img(4)
    kernels = jnp.stack([B.gaussian_kernel(1.0), B.motion_kernel(7.0, 0.3), B.disk_kernel(2.0)])
    out = np.asarray(B.blur_stack(img, kernels))
    assert out.shape == (3,) + img.shape
    for j in range(3):
        np.testing.assert_allclose(out[j], np.asarray(B.blur(img, kernels[j])), atol=1e-6)


def test_blur_delta_is_identity_and_vmap_matches_loop():
    img = _rand_img(3)
    # FFT convolution: a delta kernel is the identity up to float32 rounding.
    np.testing.assert_allclose(np.asarray(B.blur(img, B.gaussian_kernel(0.0))), img, atol=1e-6)
    imgs = np.stack([_rand_img(s) for s in range(3)])
    sigmas = jnp.array([0.5, 1.5, 2.5])
    batched = jax.vmap(lambda x, s: B.blur(x, B.gaussian_kernel(s)))(imgs, sigmas)
    for i in range(3):
        np.testing.assert_allclose(np.asarray(batched[i]),
                                   np.asarray(B.blur(imgs[i], B.gaussian_kernel(sigmas[i]))),
                                   atol=1e-6)


# --------------------------------------------------------------------------------- noise ----

def test_gaussian_noise_statistics_colour_and_gray():
    img = jnp.full((64, 64, 3), 0.5, jnp.float32)
    sigma = 20.0
    for gray in (False, True):
        res = np.asarray(N.gaussian_noise(jax.random.key(0), img, sigma, gray)) - 0.5
        n = res.size
        assert abs(res.mean()) < 4 * (sigma / 255) / math.sqrt(n)
        assert abs(res.std() / (sigma / 255) - 1) < 0.05
        corr = np.corrcoef(res[..., 0].ravel(), res[..., 1].ravel())[0, 1]
        if gray:
            np.testing.assert_array_equal(res[..., 0], res[..., 1])
            np.testing.assert_array_equal(res[..., 0], res[..., 2])
        else:
            assert abs(corr) < 0.1
    np.testing.assert_array_equal(np.asarray(N.gaussian_noise(jax.random.key(0), img, 0.0)), img)


def test_gaussian_noise_per_sample_traced_sigma():
    img = jnp.full((4, 48, 48, 3), 0.5, jnp.float32)
    sigmas = jnp.array([2.0, 5.0, 10.0, 20.0])
    keys = jax.random.split(jax.random.key(1), 4)
    gray = jnp.array([0.0, 1.0, 0.0, 1.0])
    out = jax.jit(jax.vmap(N.gaussian_noise))(keys, img, sigmas, gray)
    stds = np.asarray(out - 0.5).std(axis=(1, 2, 3))
    np.testing.assert_allclose(stds, np.asarray(sigmas) / 255, rtol=0.08)
    np.testing.assert_allclose(np.asarray(out[1, ..., 0]), np.asarray(out[1, ..., 2]), atol=1e-6)
    assert np.abs(np.asarray(out[0, ..., 0] - out[0, ..., 2])).mean() > 1e-3


_poisson = jax.jit(N.poisson_noise)   # (key, img, peak, strength, gray); one compile for all


def test_poisson_noise_statistics():
    v, peak = 0.3, 100.0
    img = jnp.full((64, 64, 3), v, jnp.float32)
    key = jax.random.key(2)
    out = np.asarray(_poisson(key, img, peak, 1.0, 0.0))
    counts = out * peak
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-3)   # discrete photon counts
    assert abs(out.mean() - v) < 4 * math.sqrt(v / peak / out.size)
    assert abs(out.var() / (v / peak) - 1) < 0.1                     # Var = v / peak
    # strength scales the residual; strength 0 is the identity
    out2 = np.asarray(_poisson(key, img, peak, 0.5, 0.0))
    np.testing.assert_allclose(out2 - v, 0.5 * (out - v), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(_poisson(key, img, peak, 0.0, 0.0)),
                                  np.asarray(img))


def test_poisson_gray_noise_uses_luma_and_is_shared():
    img = jnp.broadcast_to(jnp.array([0.2, 0.5, 0.8], jnp.float32), (64, 64, 3))
    out = np.asarray(_poisson(jax.random.key(3), img, 200.0, 1.0, 1.0))
    res = out - np.asarray(img)
    np.testing.assert_allclose(res[..., 0], res[..., 1], atol=1e-6)
    np.testing.assert_allclose(res[..., 0], res[..., 2], atol=1e-6)
    y = 0.299 * 0.2 + 0.587 * 0.5 + 0.114 * 0.8
    assert abs(res[..., 0].var() / (y / 200.0) - 1) < 0.15


# -------------------------------------------------------------------------------- resize ----

def test_scale_step_shapes_identity_and_constant():
    img = _rand_img(4, (24, 36, 3))
    assert R.scale_step(img, 3, "down").shape == (8, 12, 3)
    assert R.scale_step(img, 3, "same").shape == (24, 36, 3)
    np.testing.assert_array_equal(np.asarray(R.scale_step(img, 1, "down")), img)
    np.testing.assert_array_equal(np.asarray(R.scale_step(img, 1, "same")), img)
    flat = np.full((24, 36, 3), 0.25, np.float32)
    for mode in ("down", "same"):
        np.testing.assert_allclose(np.asarray(R.scale_step(flat, 2, mode)), 0.25, atol=1e-6)
    for mode in ("down", "same"):     # bicubic overshoot is clipped
        out = np.asarray(R.scale_step((img > 0.5).astype(np.float32), 2, mode))
        assert out.min() >= 0 and out.max() <= 1


def test_box_downscale_is_block_mean():
    img = _rand_img(5, (16, 24, 3))
    out = np.asarray(R.scale_step(img, 2, "down", method="box"))
    ref = img.reshape(8, 2, 12, 2, 3).mean((1, 3))
    np.testing.assert_allclose(out, ref, atol=1e-6)


def test_scale_step_errors_name_the_problem():
    img = _rand_img(6, (17, 16, 3))
    with pytest.raises(ValueError, match="not divisible by scale 2"):
        R.scale_step(img, 2, "down")
    with pytest.raises(ValueError, match="unknown scale mode"):
        R.scale_step(img[:16], 2, "up")


# --------------------------------------------------------------------------------- color ----

def test_color_shift_identity_and_gray():
    img = _rand_img(7)
    np.testing.assert_allclose(np.asarray(C.color_shift(img)), img, atol=1e-6)
    gray = np.asarray(C.color_shift(img, saturation=0.0))
    luma = img @ np.array([0.299, 0.587, 0.114], np.float32)
    for c in range(3):
        np.testing.assert_allclose(gray[..., c], luma, atol=1e-6)


def test_color_shift_matches_numpy_formula():
    img = _rand_img(8)
    gains, gamma, sat, expo = np.array([1.15, 0.9, 0.8]), 1.2, 1.25, 1.1
    x = np.clip(img.astype(np.float64) * expo * gains, 0, 1) ** gamma
    y = (x * [0.299, 0.587, 0.114]).sum(-1, keepdims=True)
    ref = np.clip(y + sat * (x - y), 0, 1)
    out = jax.jit(C.color_shift)(img, jnp.asarray(gains), gamma, sat, expo)
    np.testing.assert_allclose(np.asarray(out), ref, atol=1e-5)


# ------------------------------------------------------------------------------- weather ----

def test_haze_identity_monotone_and_invertible():
    img = _rand_img(9)
    depth = np.asarray(W.random_depth(jax.random.key(0), img.shape[:2]))
    assert depth.min() >= 0 and depth.max() <= 1
    assert depth[:4].mean() > depth[-4:].mean()          # top of the frame is farther
    np.testing.assert_array_equal(np.asarray(W.haze(img, 0.0, 0.9, depth)), img)
    a = np.array([0.85, 0.9, 0.95], np.float32)
    prev = np.abs(img - a)
    for beta in (0.5, 1.0, 2.0):
        hazy = np.asarray(W.haze(img, beta, a, depth))
        dist = np.abs(hazy - a)
        assert np.all(dist <= prev + 1e-6)                 # pulled towards the airlight
        prev = dist
        t = np.exp(-beta * depth)[..., None]
        np.testing.assert_allclose((hazy - a * (1 - t)) / t, img, atol=1e-5)


def test_rain_identity_brightens_and_orientation():
    img = _rand_img(10, (48, 48, 3)) * 0.3       # 0.3 + brightness 0.7 never clips
    key = jax.random.key(4)
    np.testing.assert_array_equal(np.asarray(W.rain(key, img, 0.01, 9.0, 1.0, 0.0)), img)
    np.testing.assert_array_equal(np.asarray(W.rain(key, img, 0.0, 9.0, 1.0, 0.7)), img)
    rainy = np.asarray(W.rain(key, img, 0.01, 9.0, 1.0, 0.7))
    assert np.all(rainy >= img) and np.any(rainy > img)
    res = rainy - img
    np.testing.assert_allclose(res[..., 0], res[..., 1], atol=1e-6)   # same streaks in RGB
    for angle, along_axis in ((math.pi / 2, 0), (0.0, 1)):
        layer = np.asarray(W.rain_layer(key, (48, 48), 0.01, 11.0, angle))
        along = np.abs(np.diff(layer, axis=along_axis)).sum()
        across = np.abs(np.diff(layer, axis=1 - along_axis)).sum()
        assert along < 0.5 * across                       # streaks run along the angle
    sparse = np.asarray(W.rain_layer(key, (48, 48), 0.003, 9.0, 1.0))
    dense = np.asarray(W.rain_layer(key, (48, 48), 0.02, 9.0, 1.0))
    assert (sparse > 0).mean() < (dense > 0).mean()


# ------------------------------------------------------------------------------- spatial ----

def test_blend_masks_partition_of_unity():
    fn = jax.jit(S.blend_masks, static_argnames=("shape", "count", "grid"))
    masks = np.asarray(fn(jax.random.key(5), shape=(32, 40), count=4, sharpness=2.0))
    assert masks.shape == (4, 32, 40)
    assert masks.min() >= 0
    np.testing.assert_allclose(masks.sum(0), 1.0, atol=1e-5)
    assert masks.std(axis=(1, 2)).min() > 0.02            # they vary across the frame
    flat = np.asarray(fn(jax.random.key(5), shape=(32, 40), count=4, sharpness=0.0))
    np.testing.assert_allclose(flat, 0.25, atol=1e-6)


def test_spatial_blend_identical_and_one_hot():
    img = _rand_img(11)
    masks = S.blend_masks(jax.random.key(6), img.shape[:2], 3)
    np.testing.assert_allclose(np.asarray(S.spatial_blend(jnp.stack([img] * 3), masks)), img,
                               atol=1e-6)
    imgs = np.stack([_rand_img(s) for s in (12, 13, 14)])
    one_hot = np.zeros((3,) + img.shape[:2], np.float32)
    one_hot[1, :, :10] = 1
    one_hot[2, :, 10:] = 1
    out = np.asarray(S.spatial_blend(imgs, one_hot))
    np.testing.assert_array_equal(out[:, :10], imgs[1][:, :10])
    np.testing.assert_array_equal(out[:, 10:], imgs[2][:, 10:])


def test_smooth_field_is_low_frequency():
    f = np.asarray(smooth_field(jax.random.key(7), (64, 64), count=2, grid=4))
    assert f.shape == (2, 64, 64)
    step = np.abs(np.diff(f, axis=-1)).mean()
    assert step < 0.1 * f.std()                           # white noise would give ~1.1 std
