"""PCL-SR parts against independent references: Haar DWT (numpy 2x2 Haar matrices), the embedding
network's parameter count (hand formula), L_CL / L_CLD (float64 numpy), the samples' frequency
behaviour on a real image, the sharpening against PIL and the blur against scipy."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image, ImageEnhance

from jaxsr import samples as shipped
from jaxsr.imageio import list_images, read_image
from jaxsr.methods.pcl import embedding, losses, samples, wavelet
from jaxsr.model_factory import build_side_model


def real_image(size=48, index=0) -> np.ndarray:
    """A crop of a shipped clean HR photograph, (size, size, 3) uint8."""
    path = list_images(shipped.path("clean_hr"))[index]
    return read_image(path)[:size, :size]


# --------------------------------------------------------------------------- Haar DWT
def numpy_haar(x):
    """Per 2x2 block X: H X H^T with H = [[1, 1], [1, -1]] / sqrt(2) -> [[LL, HL], [LH, HH]]."""
    h = np.array([[1.0, 1.0], [1.0, -1.0]]) / np.sqrt(2.0)
    b, hh, ww, c = x.shape
    blocks = x.reshape(b, hh // 2, 2, ww // 2, 2, c)
    t = np.einsum("ij,bpjqkc,lk->bpiqlc", h, blocks, h)
    return t[:, :, 0, :, 0], t[:, :, 1, :, 0], t[:, :, 0, :, 1], t[:, :, 1, :, 1]


def test_haar_dwt_matches_numpy_and_reconstructs_with_ll():
    x = np.random.default_rng(0).normal(size=(2, 8, 6, 3))
    bands = wavelet.haar_dwt(jnp.asarray(x, jnp.float32))
    for got, want in zip(bands, numpy_haar(x)):
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)
    np.testing.assert_allclose(np.asarray(wavelet.haar_idwt(*bands)), x, atol=1e-5)
    # Orthonormal: energy is preserved.
    energy = sum(float(jnp.sum(b ** 2)) for b in bands)
    assert energy == pytest.approx(float(np.sum(x ** 2)), rel=1e-5)
    # Detail bands: band-major [LH, HL, HH], 9 channels at half size; LH sees horizontal edges.
    d = np.asarray(wavelet.detail_bands(jnp.asarray(x, jnp.float32)))
    assert d.shape == (2, 4, 3, 9)
    np.testing.assert_allclose(d[..., 3:6], numpy_haar(x)[2], atol=1e-5)
    rows = np.zeros((1, 4, 4, 1))
    rows[:, 1::2] = 1.0  # every odd row bright: horizontal stripes
    _, lh, hl, hh = (np.asarray(b) for b in wavelet.haar_dwt(jnp.asarray(rows)))
    assert np.all(lh == -1.0) and np.all(hl == 0) and np.all(hh == 0)
    with pytest.raises(ValueError, match="even"):
        wavelet.haar_dwt(jnp.zeros((1, 5, 4, 3)))


# --------------------------------------------------------------------------- embedding network
@pytest.mark.parametrize("widths", [(64, 64, 128, 128, 256, 256, 512, 512), (4, 6, 8, 8, 12)])
def test_embedding_parameter_count_matches_hand_formula(widths):
    net = build_side_model({"name": "vgg_discriminator",
                            "kwargs": {"widths": widths, "strides": (1, 2, 1, 2, 1, 2, 1, 2)
                                       [:len(widths)]}})
    shapes = jax.eval_shape(lambda: embedding.init_embedding(net, jax.random.key(0), 64))[0]
    count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
    assert count == embedding.param_count_formula(9, widths)
    if widths[0] == 64:
        # by hand: sum_i 9 c_{i-1} c_i + 2 c_i over the 8 blocks (c_{-1} = 9), + 512 + 1
        assert count == 4_691_265


def test_embedding_features_shape_and_batch_stats_update():
    net = build_side_model({"name": "vgg_discriminator",
                            "kwargs": {"widths": (4, 4, 8, 8, 8), "strides": (1, 2, 1, 2, 1)}})
    params, stats = embedding.init_embedding(net, jax.random.key(0), 32)
    img = jnp.asarray(real_image(32)[None], jnp.float32) / 255.0
    logits, feats, new = embedding.embed(net, params, stats, img, 4)
    assert logits.shape == (1, 4, 4) and feats.shape == (1, 4, 4, 8)  # block 4 at HR / 8
    moved = [float(jnp.max(jnp.abs(a - b))) for a, b in
             zip(jax.tree.leaves(new), jax.tree.leaves(stats))]
    assert max(moved) > 0


# --------------------------------------------------------------------------- losses
def np_cos_mean(a, b):
    na = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-8)
    nb = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-8)
    return np.mean(np.sum(na * nb, axis=-1), axis=(1, 2))  # (B,)


def test_contrastive_loss_both_forms_match_numpy():
    rng = np.random.default_rng(1)
    sr = rng.normal(size=(2, 3, 2, 5))
    pos = rng.normal(size=(4, 2, 3, 2, 5))
    neg = rng.normal(size=(4, 2, 3, 2, 5))
    s_pos = np.stack([np_cos_mean(sr, p) for p in pos])  # (4, B)
    s_neg = np.stack([np_cos_mean(sr, n) for n in neg])
    want = 0.0
    for j in range(4):
        for b in range(2):
            logits = np.concatenate([[s_pos[j, b]], s_neg[:, b]])
            want += np.log(np.sum(np.exp(logits))) - logits[0]
    want /= 8
    f = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    got = losses.contrastive_loss(f(sr), f(pos), f(neg), "infonce")
    assert float(got) == pytest.approx(want, rel=1e-5)
    got = losses.contrastive_loss(f(sr), f(pos), f(neg), "cosine")
    assert float(got) == pytest.approx(s_neg.mean() - s_pos.mean(), abs=1e-6)
    with pytest.raises(ValueError, match="cl_form"):
        losses.contrastive_loss(f(sr), f(pos), f(neg), "l1")


def test_dual_contrastive_loss_matches_numpy():
    rng = np.random.default_rng(2)
    real, fake = rng.normal(size=(2, 2, 2)), rng.normal(size=(3, 2))
    r, fk = real.ravel(), fake.ravel()
    half1 = np.mean([np.log(np.exp(x) + np.exp(fk).sum()) - x for x in r])
    half2 = np.mean([np.log(np.exp(-y) + np.exp(-r).sum()) + y for y in fk])
    got = losses.dual_contrastive_loss(jnp.asarray(real), jnp.asarray(fake))
    assert float(got) == pytest.approx(half1 + half2, rel=1e-5)
    # A separated discriminator (real >> fake) scores near zero.
    assert float(losses.dual_contrastive_loss(jnp.full(4, 20.0), jnp.full(4, -20.0))) < 1e-6


# --------------------------------------------------------------------------- samples
def high_freq_energy(x) -> np.ndarray:
    """Per image: energy of the three Haar detail bands, (B,)."""
    return np.asarray(jnp.sum(wavelet.detail_bands(jnp.asarray(x)) ** 2, axis=(1, 2, 3)))


def test_sharpen_matches_pil_image_enhance():
    img = real_image(40)
    want = np.asarray(ImageEnhance.Sharpness(Image.fromarray(img)).enhance(2.2)).astype(int)
    got = samples.quantize(samples.sharpen(jnp.asarray(img[None], jnp.float32) / 255.0,
                                           jnp.asarray([2.2])))
    got = np.round(np.asarray(got[0]) * 255).astype(int)
    diff = np.abs(got - want)
    # PIL rounds its smoothed image to uint8 before blending: at most ~f/2 + 1 levels apart.
    assert diff.max() <= 3 and np.mean(diff == 0) > 0.6
    np.testing.assert_array_equal(got[0], want[0])  # borders: only the blend (smooth = x there)


def test_gaussian_blur_matches_scipy_and_short_kernels_are_exact():
    from scipy.ndimage import correlate1d
    x = np.random.default_rng(3).random((1, 20, 24, 3))
    sizes, sigmas = np.array([5, 9]), np.array([0.8, 1.7])
    want = x
    for axis, (k, s) in zip((1, 2), zip(sizes, sigmas)):
        t = np.arange(k) - k // 2
        g = np.exp(-0.5 * (t / s) ** 2)
        want = correlate1d(want, g / g.sum(), axis=axis, mode="mirror")  # = torch 'reflect'
    got = samples.gaussian_blur(jnp.asarray(x, jnp.float32), jnp.asarray(sizes),
                                jnp.asarray(sigmas))
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)


def test_positives_and_negatives_have_the_stated_frequency_behaviour():
    hr_u8 = np.stack([real_image(48, i) for i in range(3)])
    hr = jnp.asarray(hr_u8, jnp.float32) / 255.0
    e_hr = high_freq_energy(hr)
    # Fixed parameters: a sharpened copy has more high-frequency energy than HR, a blurred one
    # less, and the energy grows with the strength.
    e_sharp = [high_freq_energy(samples.sharpen(hr, jnp.full(3, f))) for f in (1.5, 2.0, 2.9)]
    assert np.all(e_sharp[0] > e_hr) and np.all(e_sharp[1] > e_sharp[0])
    assert np.all(e_sharp[2] > e_sharp[1])
    e_blur = high_freq_energy(samples.gaussian_blur(hr, jnp.array([5, 5]), jnp.array([1., 1.])))
    assert np.all(e_blur < 0.7 * e_hr)

    lr = jnp.asarray(np.stack([np.asarray(jax.image.resize(h, (12, 12, 3), "cubic"))
                               for h in np.asarray(hr)]))
    pos, neg, p = samples.make_samples(jax.random.key(0), hr, lr)
    assert pos.shape == neg.shape == (4, 3, 48, 48, 3)
    for s in (pos, neg):  # 8-bit values in [0, 1]
        np.testing.assert_allclose(np.asarray(s) * 255, np.round(np.asarray(s) * 255),
                                   atol=1e-3)
    np.testing.assert_allclose(np.asarray(pos[0]), np.asarray(hr), atol=1e-6)
    strength = np.asarray(p["strength"])
    assert strength.min() >= 0.5 and strength.max() < 3.0
    assert len(np.unique(strength)) == strength.size  # per-sample random
    for k in range(3):  # f > 1 boosts, f < 1 cuts the high frequencies
        e = high_freq_energy(pos[k + 1])
        assert np.all((e > e_hr) == (strength[k] > 1.0))
    assert np.all(high_freq_energy(neg[0]) < 0.5 * e_hr)  # bicubic-upsampled LR
    for k in range(3):
        assert np.all(high_freq_energy(neg[k + 1]) <= e_hr * 1.0001)
    sizes = np.asarray(p["blur_size"])
    assert set(sizes.ravel()) <= {3, 5, 7, 9, 11}
    # Another key draws other samples; the same key the same ones (deterministic on device).
    pos2, _, _ = samples.make_samples(jax.random.key(1), hr, lr)
    assert not np.allclose(np.asarray(pos2[1:]), np.asarray(pos[1:]))
    pos3, _, _ = jax.jit(samples.make_samples)(jax.random.key(0), hr, lr)
    np.testing.assert_allclose(np.asarray(pos3), np.asarray(pos), atol=1e-6)
