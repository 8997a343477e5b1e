"""CRL-SR's degradation generator: spatially variant (two regions of one image get different
blur, measured on an impulse image), multi-source, deterministic per key, batch-invariant."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

from jaxsr.degradations.blur import anisotropic_gaussian_kernel
from jaxsr.methods.crl.degrade import (DegradationSpec, degrade, degrade_batch,
                                       degrade_with_masks, uniformity)

BLUR_ONLY = DegradationSpec(components=(2, 2), blur_sigma=(0.3, 3.0), noise_sigma=(0.0, 0.0),
                            jpeg_prob=0.0, mask_sharpness=(30.0, 30.0), kernel_size=15)


def impulses(size=96, step=12):
    """A gray image with isolated unit impulses on a grid (their blurred spread = the PSF)."""
    img = np.zeros((size, size, 3), np.float32)
    img[step // 2::step, step // 2::step] = 1.0
    return img


def spread(psf: np.ndarray) -> float:
    """Second moment (pixels^2) of a non-negative patch around its centre of mass."""
    psf = psf / psf.sum()
    y, x = np.mgrid[:psf.shape[0], :psf.shape[1]]
    cy, cx = (psf * y).sum(), (psf * x).sum()
    return float((psf * ((y - cy) ** 2 + (x - cx) ** 2)).sum())


def test_two_regions_of_one_image_get_different_blur():
    img = impulses()
    found = False
    for seed in range(6):
        lr, masks = degrade_with_masks(jax.random.key(seed), jnp.asarray(img), BLUR_ONLY, 1)
        lr, masks = np.asarray(lr)[..., 0], np.asarray(masks)
        assert masks.shape == (2, 96, 96)
        np.testing.assert_allclose(masks.sum(0), 1.0, atol=1e-5)
        # PSF spread at each impulse, and which component rules there.
        spreads, owner = [], []
        for y in range(6, 96, 12):
            for x in range(6, 96, 12):
                if 10 <= y < 86 and 10 <= x < 86 and masks[:, y, x].max() > 0.99:
                    spreads.append(spread(lr[y - 6:y + 7, x - 6:x + 7]))
                    owner.append(int(masks[:, y, x].argmax()))
        spreads, owner = np.array(spreads), np.array(owner)
        if len(set(owner)) < 2:
            continue
        a, b = spreads[owner == 0], spreads[owner == 1]
        # Within a region the PSF is constant (uniform there); across regions it differs.
        assert a.std() < 0.05 * a.mean() + 1e-3 and b.std() < 0.05 * b.mean() + 1e-3
        if abs(a.mean() - b.mean()) > 0.3:
            found = True
            break
    assert found, "no seed gave two regions with measurably different blur"


def test_blur_in_a_ruled_region_equals_that_components_kernel():
    """Where one mask is ~1 the output is the image convolved with one kernel (scipy check)."""
    img = impulses()
    lr, masks = degrade_with_masks(jax.random.key(3), jnp.asarray(img), BLUR_ONLY, 1)
    lr, masks = np.asarray(lr)[..., 0], np.asarray(masks)
    keys = jax.random.split(jax.random.key(3), 10)
    sig = np.asarray(jax.random.uniform(keys[3], (2, 2), jnp.float32, 0.3, 3.0)) * 0.5
    theta = np.asarray(jax.random.uniform(keys[4], (2,), jnp.float32, 0.0, np.pi))
    for k in range(2):
        kern = np.asarray(anisotropic_gaussian_kernel(sig[k, 0], sig[k, 1], theta[k], 15))
        ref = scipy.ndimage.convolve(img[..., 0], kern, mode="mirror")
        ruled = masks[k] > 0.999
        ruled[:8], ruled[-8:], ruled[:, :8], ruled[:, -8:] = False, False, False, False
        assert ruled.sum() > 50                   # key 3: both components rule a region
        np.testing.assert_allclose(lr[ruled], np.clip(ref, 0, 1)[ruled], atol=2e-3)


def test_deterministic_per_key_and_different_across_keys():
    spec = DegradationSpec()
    hr = jnp.asarray(np.random.default_rng(0).random((32, 32, 3), np.float32))
    a = np.asarray(degrade(jax.random.key(1), hr, spec, 2))
    b = np.asarray(degrade(jax.random.key(1), hr, spec, 2))
    c = np.asarray(degrade(jax.random.key(2), hr, spec, 2))
    assert a.shape == (16, 16, 3) and 0 <= a.min() and a.max() <= 1
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 1e-3


def test_batch_sample_does_not_depend_on_batch_size():
    spec = DegradationSpec()
    hr = jnp.asarray(np.random.default_rng(1).random((4, 32, 32, 3), np.float32))
    full = np.asarray(degrade_batch(jax.random.key(5), hr, spec, 2))
    part = np.asarray(degrade_batch(jax.random.key(5), hr[:2], spec, 2))
    np.testing.assert_allclose(full[:2], part, atol=1e-6)
    assert np.abs(full[0] - full[1]).mean() > 0  # per-sample parameters


def test_noise_and_jpeg_are_applied():
    """Multi-source: noise-only and JPEG-only specs change a flat image the way each should."""
    flat = jnp.full((32, 32, 3), 0.5, jnp.float32)
    noisy = DegradationSpec(components=(2, 2), blur_sigma=(0.1, 0.1), noise_sigma=(20.0, 20.0),
                            jpeg_prob=0.0, gray_prob=0.0)
    out = np.asarray(degrade(jax.random.key(0), flat, noisy, 1))
    assert abs(out.std() * 255 - 20.0) < 2.0      # sigma 20 on the 0-255 scale
    ramp = jnp.asarray(np.tile(np.linspace(0, 1, 32, dtype=np.float32)[None, :, None],
                               (32, 1, 3)))
    jpeg_only = DegradationSpec(components=(1, 1), blur_sigma=(0.01, 0.01),
                                noise_sigma=(0.0, 0.0), jpeg_prob=1.0, jpeg_quality=(10, 10))
    from jaxsr.degradations.jpeg import jpeg
    out = np.asarray(degrade(jax.random.key(0), ramp, jpeg_only, 1))
    np.testing.assert_allclose(out, np.asarray(jpeg(ramp, 10)), atol=2e-3)


def test_uniformity_is_one_where_a_component_rules():
    masks = jnp.asarray(np.stack([np.ones((4, 4)), np.zeros((4, 4))]).astype(np.float32))
    np.testing.assert_array_equal(np.asarray(uniformity(masks)), 1.0)
    with pytest.raises(ValueError, match="components"):
        DegradationSpec.from_config({"components": (3, 2)})
