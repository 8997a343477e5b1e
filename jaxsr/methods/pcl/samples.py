"""PCL-SR's positive and negative samples "in frequency space", made on device (jittable).

Positives (1 + 3): the HR patch and 3 sharpened copies (PIL `ImageEnhance.Sharpness`: blend of the
image with its 3x3 smoothed version [[1,1,1],[1,5,1],[1,1,1]]/13, border pixels kept), with a
per-image strength f in [0.5, 3): `out = smooth + f * (x - smooth)` (f > 1 boosts the high
frequencies, f < 1 cuts them a little; PIL's range).
Negatives (1 + 3): the LR input upsampled to the HR size with MATLAB bicubic, and 3 Gaussian-
blurred HR copies (kernel size from {3, 5, 7, 9, 11} and sigma in [0.1, 2.0), drawn independently
per axis, one draw per negative shared across the batch, reflect padding).
Every sample is clipped to [0, 1] and quantized to 8 bits, as the released code makes them from
uint8 images.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxsr.imresize import imresize

SMOOTH_KERNEL = ((1, 1, 1), (1, 5, 1), (1, 1, 1))  # / 13, PIL ImageFilter.SMOOTH
STRENGTH_RANGE = (0.5, 3.0)
BLUR_SIZES = (3, 5, 7, 9, 11)
SIGMA_RANGE = (0.1, 2.0)
NUM_AUGMENTED = 3  # sharpened positives and blurred negatives beside HR / bicubic LR


def quantize(x: jax.Array) -> jax.Array:
    """Clip to [0, 1] and round to the 256 levels of an 8-bit image (float32)."""
    return jnp.round(jnp.clip(x.astype(jnp.float32), 0.0, 1.0) * 255.0) / 255.0


def smooth(x: jax.Array) -> jax.Array:
    """(B, H, W, C) -> (B, H, W, C): the 3x3 SMOOTH filter on the interior, clipped to [0, 1];
    the one-pixel border is copied from x (as PIL does)."""
    k = jnp.asarray(SMOOTH_KERNEL, jnp.float32) / 13.0
    h, w = x.shape[1], x.shape[2]
    inner = sum(k[i, j] * x[:, i:h - 2 + i, j:w - 2 + j] for i in range(3) for j in range(3))
    return x.at[:, 1:-1, 1:-1].set(jnp.clip(inner, 0.0, 1.0))


def sharpen(x: jax.Array, strength: jax.Array) -> jax.Array:
    """(B, H, W, C) float in [0, 1], strength (B,) -> `smooth(x) + f (x - smooth(x))`, clipped."""
    s = smooth(x)
    f = jnp.reshape(strength, (-1, 1, 1, 1)).astype(jnp.float32)
    return jnp.clip(s + f * (x - s), 0.0, 1.0)


def gaussian_taps(size: jax.Array, sigma: jax.Array, max_size: int = max(BLUR_SIZES)
                  ) -> jax.Array:
    """A normalised 1-D Gaussian of odd length `size` (traced int), centred in `max_size` taps
    (zeros outside): (max_size,) float32. Equals torchvision's kernel of length `size`."""
    t = jnp.arange(max_size, dtype=jnp.float32) - (max_size // 2)
    g = jnp.exp(-0.5 * (t / sigma) ** 2) * (jnp.abs(t) <= size // 2)
    return g / jnp.sum(g)


def _filter_axis(x: jax.Array, taps: jax.Array, axis: int) -> jax.Array:
    """Correlates x with `taps` along `axis` (1 = rows, 2 = columns), reflect padding. Zero taps
    at the ends read only reflected pixels a shorter kernel would also read, so a centred short
    kernel padded with zeros gives exactly the short kernel's result."""
    r = taps.shape[0] // 2
    pad = [(0, 0)] * x.ndim
    pad[axis] = (r, r)
    xp = jnp.pad(x, pad, mode="reflect")
    n = x.shape[axis]
    return sum(taps[t] * jax.lax.slice_in_dim(xp, t, t + n, axis=axis)
               for t in range(taps.shape[0]))


def gaussian_blur(x: jax.Array, sizes: jax.Array, sigmas: jax.Array) -> jax.Array:
    """(B, H, W, C) float -> blurred, sizes (2,) odd ints (rows, cols), sigmas (2,) floats;
    H and W must exceed max(BLUR_SIZES) // 2 (reflect padding)."""
    y = _filter_axis(x, gaussian_taps(sizes[0], sigmas[0]), axis=1)
    return _filter_axis(y, gaussian_taps(sizes[1], sigmas[1]), axis=2)


def make_samples(key: jax.Array, hr: jax.Array, lr: jax.Array) -> tuple[jax.Array, jax.Array,
                                                                         dict]:
    """Positives and negatives of one batch.

    hr: (B, H, W, 3) float in [0, 1] (8-bit values); lr: (B, H/s, W/s, 3) float in [0, 1].
    Returns positives (4, B, H, W, 3) = [HR, 3 sharpened], negatives (4, B, H, W, 3) =
    [bicubic-upsampled LR, 3 blurred], all 8-bit quantized float32, and the drawn parameters
    {'strength' (3, B), 'blur_size' (3, 2), 'blur_sigma' (3, 2)}.
    """
    k_f, k_size, k_sigma = jax.random.split(key, 3)
    n, b = NUM_AUGMENTED, hr.shape[0]
    hr = quantize(hr)
    strength = jax.random.uniform(k_f, (n, b), minval=STRENGTH_RANGE[0], maxval=STRENGTH_RANGE[1])
    sizes = jnp.asarray(BLUR_SIZES)[jax.random.randint(k_size, (n, 2), 0, len(BLUR_SIZES))]
    sigmas = jax.random.uniform(k_sigma, (n, 2), minval=SIGMA_RANGE[0], maxval=SIGMA_RANGE[1])
    positives = [hr] + [quantize(sharpen(hr, strength[i])) for i in range(n)]
    up = imresize(lr.astype(jnp.float32), output_shape=hr.shape[1:3])
    negatives = [quantize(up)] + [quantize(gaussian_blur(hr, sizes[i], sigmas[i]))
                                  for i in range(n)]
    params = {"strength": strength, "blur_size": sizes, "blur_sigma": sigmas}
    return jnp.stack(positives), jnp.stack(negatives), params
