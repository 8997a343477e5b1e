"""Weather degradations of one image (H, W, 3) float32 in [0, 1]: rain streaks and haze.
All strength parameters may be traced; image sizes are static."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxsr.degradations.blur import KERNEL_SIZE, blur, motion_kernel
from jaxsr.degradations.fields import normalise01, smooth_field


def rain_layer(key: jax.Array, shape: tuple[int, int], density, length, angle,
               size: int = KERNEL_SIZE) -> jax.Array:
    """(H, W) streak layer in [0, 1]: sparse random drops (a fraction `density` of pixels,
    intensities U(0.5, 1)) smeared into lines of `length` pixels at `angle` (pi/2 = vertical)."""
    k_seed, k_val = jax.random.split(key)
    seeds = jax.random.uniform(k_seed, shape) < density
    drops = jnp.where(seeds, jax.random.uniform(k_val, shape, jnp.float32, 0.5, 1.0), 0.0)
    kernel = motion_kernel(length, angle, size)
    kernel = kernel / jnp.max(kernel)  # peak 1: a streak keeps its drop's brightness
    return jnp.clip(blur(drops[..., None], kernel)[..., 0], 0.0, 1.0)


def rain(key: jax.Array, img: jax.Array, density, length, angle, brightness) -> jax.Array:
    """clip(img + brightness * rain_layer), the same streaks in all channels."""
    layer = rain_layer(key, img.shape[:2], density, length, angle)
    out = img + jnp.asarray(brightness, jnp.float32) * layer[..., None]
    return jnp.clip(out, 0.0, 1.0).astype(img.dtype)


def haze(img: jax.Array, beta, airlight, depth: jax.Array) -> jax.Array:
    """Atmospheric scattering I = J t + A (1 - t), t = exp(-beta * depth).

    img J (H, W, 3); airlight A scalar or (3,); depth (H, W) >= 0. beta = 0 is the identity.
    """
    t = jnp.exp(-jnp.asarray(beta, jnp.float32) * depth)[..., None]
    a = jnp.asarray(airlight, jnp.float32)
    return jnp.clip(img * t + a * (1.0 - t), 0.0, 1.0).astype(img.dtype)


def random_depth(key: jax.Array, shape: tuple[int, int], gradient_weight=0.6,
                 grid: int = 3) -> jax.Array:
    """(H, W) synthetic depth in [0, 1]: a top-far/bottom-near vertical ramp mixed with a
    smooth random field (weight 1 - gradient_weight); far = 1."""
    h, w = shape
    ramp = jnp.broadcast_to(jnp.linspace(1.0, 0.0, h, dtype=jnp.float32)[:, None], (h, w))
    field = normalise01(smooth_field(key, shape, 1, grid)[0])
    g = jnp.asarray(gradient_weight, jnp.float32)
    return jnp.clip(g * ramp + (1.0 - g) * field, 0.0, 1.0)
