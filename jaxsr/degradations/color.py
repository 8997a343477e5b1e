"""Camera-like colour shift of one image (H, W, 3) float32 in [0, 1].

out = saturate(clip(exposure * gains * img) ** gamma, saturation), clipped to [0, 1], where
saturate(x, s) = luma(x) + s * (x - luma(x)) (s = 0: gray, s = 1: unchanged).
All parameters may be traced.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxsr.degradations.noise import luma


def color_shift(img: jax.Array, gains=(1.0, 1.0, 1.0), gamma=1.0, saturation=1.0,
                exposure=1.0) -> jax.Array:
    """White balance `gains` (3,) per RGB channel, `exposure` (scalar gain), `gamma`
    (out = in ** gamma; > 1 darkens mid-tones), `saturation` (0 = gray). (H, W, 3) -> (H, W, 3).
    """
    gains = jnp.asarray(gains, jnp.float32).reshape(3)
    x = jnp.clip(img * (jnp.asarray(exposure, jnp.float32) * gains), 0.0, 1.0)
    x = jnp.power(x, jnp.asarray(gamma, jnp.float32))
    y = luma(x)
    x = y + jnp.asarray(saturation, jnp.float32) * (x - y)
    return jnp.clip(x, 0.0, 1.0).astype(img.dtype)
