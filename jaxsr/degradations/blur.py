"""Blur kernels with traced parameters and a depthwise blur of one image.

Kernels are (size, size) float32, size odd and static (default 21), centred, summing to 1.
Coordinates: x runs along columns (to the right), y along rows (downwards); an angle theta
turns the x axis towards the y axis (theta = pi/2 points down the rows).
All parameters may be traced scalars, so kernels can be drawn per sample inside vmap/jit.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

KERNEL_SIZE = 21
MOTION_SAMPLES = 64


def _grid(size: int) -> tuple[jax.Array, jax.Array]:
    """(x, y) coordinate grids, each (size, size), 0 at the centre pixel."""
    if size % 2 != 1 or size < 1:
        raise ValueError(f"kernel size must be a positive odd integer, got {size}; use e.g. 21.")
    r = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2
    y, x = jnp.meshgrid(r, r, indexing="ij")
    return x, y


def _normalise(k: jax.Array) -> jax.Array:
    return k / jnp.sum(k)


def gaussian_kernel(sigma, size: int = KERNEL_SIZE) -> jax.Array:
    """Isotropic Gaussian, std `sigma` pixels (sigma -> 0 gives the identity delta)."""
    x, y = _grid(size)
    s2 = jnp.maximum(jnp.asarray(sigma, jnp.float32), 1e-6) ** 2
    return _normalise(jnp.exp(-(x * x + y * y) / (2.0 * s2)))


def anisotropic_gaussian_kernel(sigma_x, sigma_y, theta, size: int = KERNEL_SIZE) -> jax.Array:
    """Gaussian with covariance R diag(sigma_x^2, sigma_y^2) R^T, R the rotation by `theta`.

    theta = 0: `sigma_x` along columns, `sigma_y` along rows.
    """
    x, y = _grid(size)
    sx2 = jnp.maximum(jnp.asarray(sigma_x, jnp.float32), 1e-6) ** 2
    sy2 = jnp.maximum(jnp.asarray(sigma_y, jnp.float32), 1e-6) ** 2
    c, s = jnp.cos(theta), jnp.sin(theta)
    # Inverse covariance R diag(1/sx2, 1/sy2) R^T, written out.
    a = c * c / sx2 + s * s / sy2
    b = c * s * (1.0 / sx2 - 1.0 / sy2)
    d = s * s / sx2 + c * c / sy2
    q = a * x * x + 2.0 * b * x * y + d * y * y
    return _normalise(jnp.exp(-0.5 * q))


def motion_kernel(length, theta, size: int = KERNEL_SIZE,
                  samples: int = MOTION_SAMPLES) -> jax.Array:
    """Straight motion of `length` pixels along angle `theta`, centred, anti-aliased.

    The segment [-length/2, length/2] * (cos theta, sin theta) is sampled at `samples` evenly
    spaced points (midpoint rule) and each point is splatted bilinearly onto the pixel grid,
    so the kernel varies smoothly with traced `length` and `theta` (it approximates the box of
    the given length convolved with a 1-pixel tent). length 0 gives the delta exactly; lengths
    beyond size - 3 are truncated by the kernel window.
    """
    x, y = _grid(size)
    length = jnp.maximum(jnp.asarray(length, jnp.float32), 0.0)
    t = (jnp.arange(samples, dtype=jnp.float32) + 0.5) / samples - 0.5   # (S,) in (-0.5, 0.5)
    px = length * t * jnp.cos(theta)
    py = length * t * jnp.sin(theta)
    wx = jnp.clip(1.0 - jnp.abs(x[None] - px[:, None, None]), 0.0, None)
    wy = jnp.clip(1.0 - jnp.abs(y[None] - py[:, None, None]), 0.0, None)
    return _normalise(jnp.sum(wx * wy, axis=0))


def disk_kernel(radius, size: int = KERNEL_SIZE) -> jax.Array:
    """Defocus (pillbox) disk of `radius` pixels with a 1-pixel anti-aliased rim.

    Weight clip(radius + 0.5 - distance, 0, 1); radius 0 gives the delta.
    """
    x, y = _grid(size)
    r = jnp.maximum(jnp.asarray(radius, jnp.float32), 0.0)
    dist = jnp.sqrt(x * x + y * y)
    return _normalise(jnp.clip(r + 0.5 - dist, 0.0, 1.0))


def blur(img: jax.Array, kernel: jax.Array) -> jax.Array:
    """Convolve each channel of `img` (H, W, C) with `kernel` (k, k), k odd.

    True convolution (kernel flipped) with reflect padding that does not repeat the edge
    pixel (numpy 'reflect' = scipy.ndimage 'mirror'), so the output equals
    `scipy.ndimage.convolve(img[..., c], kernel, mode='mirror')`. The kernel is used as given
    (not renormalised). Returns (H, W, C) in the dtype of `img`; no clipping.
    """
    if kernel.ndim != 2:
        raise ValueError(f"blur expects one (k, k) kernel, got shape {kernel.shape}; use "
                         "blur_stack for several kernels.")
    return blur_stack(img, kernel[None])[0]


def blur_stack(img: jax.Array, kernels: jax.Array) -> jax.Array:
    """Blur `img` (H, W, C) with each of `kernels` (n, k, k) (one FFT of the image).

    Returns (n, H, W, C): out[j] == blur(img, kernels[j]).
    """
    if img.ndim != 3 or kernels.ndim != 3 or kernels.shape[1] != kernels.shape[2]:
        raise ValueError(
            f"blur expects img (H, W, C) and square kernels (n, k, k); got {img.shape} and "
            f"{kernels.shape}. vmap over the batch for (B, H, W, C).")
    k = kernels.shape[1]
    if k % 2 != 1:
        raise ValueError(f"blur kernel size must be odd, got {k}.")
    # Linear convolution of the mirror-padded image by FFT: exact up to float rounding (~1e-6)
    # and, with per-sample traced kernels under vmap, ~50x faster on CPU than XLA's grouped
    # convolution (1.5 ms vs 82 ms for 8 images of 48x48 with 21x21 kernels).
    p = k // 2
    h, wd = img.shape[:2]
    x = jnp.pad(img, ((p, p), (p, p), (0, 0)), mode="reflect").astype(jnp.float32)
    size = (x.shape[0], x.shape[1])
    spectrum = jnp.fft.rfft2(x, axes=(0, 1))                                 # (H', W'', C)
    kernel_spectra = jnp.fft.rfft2(kernels.astype(jnp.float32), s=size)      # (n, H', W'')
    out = jnp.fft.irfft2(spectrum[None] * kernel_spectra[..., None], s=size, axes=(1, 2))
    # Full linear convolution output index i + 2p corresponds to padded input index i + p.
    return out[:, 2 * p:2 * p + h, 2 * p:2 * p + wd].astype(img.dtype)
