"""EDSR (Lim et al., "Enhanced Deep Residual Networks for Single Image Super-Resolution", 2017).

head conv 3x3 (3 -> F) -> num_blocks x ResBlock(conv-ReLU-conv, * res_scale, + skip) -> conv 3x3
-> + head output -> Upsampler (omitted for scale 1) -> conv 3x3 (F -> 3). The DIV2K RGB mean is
subtracted before and added after (fixed constants, rgb_range 1).

Presets (trainable parameter counts, equal to the official PyTorch model without its frozen
MeanShift convs, which add 24 scalars there and none here):
  edsr_baseline: 16 blocks x 64 features, res_scale 1   -> x2 1,369,859 (1.37M), x3 1,554,499,
                 x4 1,517,571
  edsr_large:    32 blocks x 256 features, res_scale 0.1 -> x2 40,729,603 (40.7M), x3 43,680,003,
                 x4 43,089,923
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxsr.models.common import (Dtype, Upsampler, block_class, check_scale, conv, dense_conv,
                                 mean_shift, repeat_blocks)
from jaxsr.models.registry import register


class ResBlock(nn.Module):
    """conv3x3 - ReLU - conv3x3, scaled by res_scale, plus identity. (B, H, W, F) -> same.
    `scanned=True` (the block runs inside `nn.scan`): the same convs as `LoopConv`."""

    features: int
    res_scale: float = 1.0
    scanned: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, loop=self.scanned)
        y = dense_conv(self.features, 3, name="conv1", **kw)(x)
        y = nn.relu(y)
        y = dense_conv(self.features, 3, name="conv2", **kw)(y)
        if self.res_scale != 1.0:
            y = y * jnp.asarray(self.res_scale, y.dtype)
        return x + y


@register("edsr_large", features=256, num_blocks=32, res_scale=0.1,
          doc="EDSR large: 32 blocks x 256 features, res_scale 0.1 (40.7M params at x2)")
@register("edsr_baseline", features=64, num_blocks=16, res_scale=1.0,
          doc="EDSR baseline: 16 blocks x 64 features (1.37M params at x2)")
@register("edsr", doc="EDSR with explicit fields (defaults = baseline)")
class EDSR(nn.Module):
    """EDSR super-resolution network.

    __call__: x (B, h, w, 3) float32 in [0, 1] -> (B, h*scale, w*scale, 3) float32 (not clipped).
    `dtype` is the compute dtype (e.g. bfloat16); parameters are `param_dtype` (float32).
    `remat=True` rematerialises each residual block in the backward pass (saves memory).
    `scan_blocks=True` (default) runs the residual blocks with `nn.scan` over parameters stacked
    under `blocks` (leaves (num_blocks, ...)); False keeps one submodule per block (`block_0`,
    ...). Same numbers for the same weights; `jaxsr.models.stacking` converts the layouts.
    """

    scale: int = 2
    features: int = 64
    num_blocks: int = 16
    res_scale: float = 1.0
    num_channels: int = 3
    remat: bool = False
    scan_blocks: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        check_scale("EDSR", self.scale)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = mean_shift(x.astype(jnp.float32), -1).astype(self.dtype)
        x = conv(self.features, 3, name="head", **kw)(x)
        block = block_class(ResBlock, self.remat, self.scan_blocks)
        y = repeat_blocks(lambda name: block(self.features, self.res_scale, self.scan_blocks,
                                             name=name, **kw), x,
                          self.num_blocks, scan=self.scan_blocks)
        y = conv(self.features, 3, name="body_conv", **kw)(y)
        y = y + x
        if self.scale > 1:
            y = Upsampler(self.features, self.scale, name="upsampler", **kw)(y)
        y = conv(self.num_channels, 3, name="tail", **kw)(y)
        return mean_shift(y.astype(jnp.float32), +1)
