"""Building blocks shared by the models: PyTorch-order pixel shuffle, convs, upsampler, mean shift.

All tensors are NHWC. Convolutions use PyTorch-style symmetric padding (k // 2 each side) so that
official PyTorch weights convert one-to-one (kernel OIHW -> HWIO).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any

# DIV2K training-set RGB mean used by EDSR and RCAN (MeanShift with rgb_range 1, std 1).
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)

SUPPORTED_SCALES = (1, 2, 3, 4)

# PyTorch's default Conv2d weight init (kaiming_uniform with a=sqrt(5)) is
# U(-1/sqrt(fan_in), 1/sqrt(fan_in)), i.e. variance 1/(3 fan_in). Biases start at zero.
torch_conv_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def check_scale(model: str, scale: int, allowed: Sequence[int] = SUPPORTED_SCALES) -> None:
    """Raise ValueError naming `model`, the bad `scale` and the allowed values."""
    if scale not in allowed:
        raise ValueError(f"{model}: scale={scale!r} is not supported; use one of {tuple(allowed)}")


def pixel_shuffle(x: jax.Array, r: int) -> jax.Array:
    """Depth-to-space in PyTorch `nn.PixelShuffle` channel order.

    x: (B, H, W, C*r*r) -> (B, H*r, W*r, C) with out[b, h*r+i, w*r+j, c] = x[b, h, w, c*r*r+i*r+j].
    """
    b, h, w, crr = x.shape
    if crr % (r * r):
        raise ValueError(f"pixel_shuffle: channels {crr} not divisible by r*r = {r * r}")
    c = crr // (r * r)
    x = x.reshape(b, h, w, c, r, r)
    x = x.transpose(0, 1, 4, 2, 5, 3)  # (b, h, i, w, j, c)
    return x.reshape(b, h * r, w * r, c)


def pixel_unshuffle(x: jax.Array, r: int) -> jax.Array:
    """Inverse of `pixel_shuffle`: (B, H*r, W*r, C) -> (B, H, W, C*r*r), PyTorch channel order."""
    b, hr, wr, c = x.shape
    if hr % r or wr % r:
        raise ValueError(f"pixel_unshuffle: spatial size {(hr, wr)} not divisible by r = {r}")
    x = x.reshape(b, hr // r, r, wr // r, r, c)
    x = x.transpose(0, 1, 3, 5, 2, 4)  # (b, h, w, c, i, j)
    return x.reshape(b, hr // r, wr // r, c * r * r)


def conv(features: int, kernel: int = 3, *, name: str | None = None, use_bias: bool = True,
         groups: int = 1, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
         stride: int = 1, padding: Any = None) -> nn.Conv:
    """`nn.Conv` with PyTorch semantics: padding k//2 each side (unless given), torch-like init."""
    if padding is None:
        p = kernel // 2
        padding = ((p, p), (p, p))
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=padding,
                   use_bias=use_bias, feature_group_count=groups, dtype=dtype,
                   param_dtype=param_dtype, kernel_init=torch_conv_init,
                   bias_init=nn.initializers.zeros, name=name)


def upsampler_stages(scale: int) -> list[int]:
    """Shuffle factors of the EDSR upsampler: 2^n -> [2]*n, 3 -> [3], 1 -> []."""
    if scale == 1:
        return []
    if scale == 3:
        return [3]
    if scale > 1 and scale & (scale - 1) == 0:
        return [2] * int(math.log2(scale))
    raise ValueError(f"Upsampler: scale={scale!r} not supported; use 1, 3 or a power of 2")


class Upsampler(nn.Module):
    """EDSR upsampler: per stage a 3x3 conv to features*r*r then `pixel_shuffle(r)`.

    x4 is two x2 stages; x2/x3 one stage. (B, H, W, F) -> (B, H*scale, W*scale, F).
    Submodules are named conv_0, conv_1 (PyTorch `tail.0.0`, `tail.0.2`).
    """

    features: int
    scale: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i, r in enumerate(upsampler_stages(self.scale)):
            x = conv(self.features * r * r, 3, name=f"conv_{i}", dtype=self.dtype,
                     param_dtype=self.param_dtype)(x)
            x = pixel_shuffle(x, r)
        return x


def mean_shift(x: jax.Array, sign: int, mean: Sequence[float] = DIV2K_RGB_MEAN) -> jax.Array:
    """x + sign * mean over the RGB (last) axis; fixed constants, not parameters."""
    return x + sign * jnp.asarray(mean, dtype=x.dtype)


def count_params(tree: Any) -> int:
    """Number of scalars in a pytree of arrays or `jax.ShapeDtypeStruct`s (e.g. from eval_shape)."""
    return int(sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree)))
