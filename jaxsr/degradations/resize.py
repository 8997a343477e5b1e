"""The scale step of a distortion task: MATLAB-compatible down- (and back up-) sampling.

Modes (static):
  'down': LR = imresize(x, 1/scale)                        -> (H/scale, W/scale, 3)
  'same': LR = imresize(imresize(x, 1/scale), (H, W))      -> (H, W, 3), bicubic back up
          (same-size pairs as in City100 / NTIRE'19 RealSR).
Results are clipped to [0, 1] (bicubic overshoots). `scale` is a static int >= 1; scale 1 is the
identity in both modes. The down method ('bicubic', 'bilinear', 'box') is static too.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

MODES = ("down", "same")


def check_scale_mode(shape: tuple[int, ...], scale: int, mode: str) -> None:
    """Raise a ValueError naming the problem when (H, W) is not divisible by `scale` etc."""
    if mode not in MODES:
        raise ValueError(f"unknown scale mode {mode!r}; use 'down' (LR = HR/scale) or 'same' "
                         "(down then bicubic back up to the HR size).")
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
        raise ValueError(f"scale must be a Python int >= 1, got {scale!r}.")
    h, w = shape[-3], shape[-2]
    if h % scale or w % scale:
        raise ValueError(f"HR size {h}x{w} is not divisible by scale {scale}; crop the HR "
                         f"image to a multiple of {scale} first.")


def downscale(img: jax.Array, scale: int, method: str = "bicubic") -> jax.Array:
    """(..., H, W, 3) -> (..., H/scale, W/scale, 3), antialiased MATLAB imresize, clipped."""
    if scale == 1:
        return img
    from jaxsr.imresize import imresize
    h, w = img.shape[-3], img.shape[-2]
    out = imresize(img, output_shape=(h // scale, w // scale), method=method)
    return jnp.clip(out, 0.0, 1.0).astype(img.dtype)


def upscale_to(img: jax.Array, size: tuple[int, int]) -> jax.Array:
    """(..., h, w, 3) -> (..., size[0], size[1], 3), MATLAB bicubic, clipped."""
    if tuple(img.shape[-3:-1]) == tuple(size):
        return img
    from jaxsr.imresize import imresize
    out = imresize(img, output_shape=tuple(size), method="bicubic")
    return jnp.clip(out, 0.0, 1.0).astype(img.dtype)


def scale_step(img: jax.Array, scale: int, mode: str = "down",
               method: str = "bicubic") -> jax.Array:
    """The pure scale step (no other distortion): 'down' or 'same' as described above."""
    check_scale_mode(img.shape, scale, mode)
    lr = downscale(img, scale, method)
    return upscale_to(lr, img.shape[-3:-1]) if mode == "same" else lr
