"""RCAN (Zhang et al., "Image Super-Resolution Using Very Deep Residual Channel Attention
Networks", ECCV 2018).

head conv -> num_groups x ResidualGroup(num_blocks x RCAB, conv, + skip) -> conv -> + head output
-> Upsampler -> conv (F -> 3). RCAB = conv-ReLU-conv-ChannelAttention + identity; channel
attention = global average pool -> 1x1 conv F -> F/reduction -> ReLU -> 1x1 conv -> F -> sigmoid,
multiplying the features. DIV2K RGB mean subtracted/added as fixed constants (rgb_range 1).

Preset `rcan` (10 groups x 20 RCAB, 64 features, reduction 16) trainable parameter counts:
x2 15,444,643, x3 15,629,283, x4 15,592,355 (the paper's "about 16M", commonly quoted 15.4M/15.6M;
the official PyTorch model reports 24 more, 15,444,667 at x2, counting its two frozen MeanShift
1x1 convs).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxsr.models.common import (Dtype, Upsampler, block_class, check_scale, conv, dense_conv,
                                 mean_shift, repeat_blocks)
from jaxsr.models.registry import register


class ChannelAttention(nn.Module):
    """Squeeze-excitation style channel attention. (B, H, W, F) -> same, features * gate."""

    features: int
    reduction: int = 16
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        # Spatial mean accumulated in float32 even for bf16 compute.
        y = jnp.mean(x, axis=(1, 2), keepdims=True, dtype=jnp.float32).astype(self.dtype)
        y = conv(max(self.features // self.reduction, 1), 1, name="down", **kw)(y)
        y = nn.relu(y)
        y = conv(self.features, 1, name="up", **kw)(y)
        return x * nn.sigmoid(y)


class RCAB(nn.Module):
    """Residual channel attention block: x + CA(conv(relu(conv(x)))). (B, H, W, F) -> same.
    `scanned=True` (the block runs inside `nn.scan`): the 3x3 convs as `LoopConv`."""

    features: int
    reduction: int = 16
    scanned: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        y = dense_conv(self.features, 3, name="conv1", loop=self.scanned, **kw)(x)
        y = nn.relu(y)
        y = dense_conv(self.features, 3, name="conv2", loop=self.scanned, **kw)(y)
        y = ChannelAttention(self.features, self.reduction, name="ca", **kw)(y)
        return x + y


class ResidualGroup(nn.Module):
    """num_blocks RCABs, a 3x3 conv, plus the group input. (B, H, W, F) -> same."""

    features: int
    num_blocks: int = 20
    reduction: int = 16
    remat: bool = False
    scan_blocks: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        block = block_class(RCAB, self.remat, self.scan_blocks)
        y = repeat_blocks(lambda name: block(self.features, self.reduction, self.scan_blocks,
                                             name=name, **kw), x,
                          self.num_blocks, scan=self.scan_blocks)
        y = dense_conv(self.features, 3, name="conv", loop=self.scan_blocks, **kw)(y)
        return x + y


@register("rcan", doc="RCAN: 10 residual groups x 20 RCAB, 64 features (15.4M params at x2)")
class RCAN(nn.Module):
    """RCAN super-resolution network.

    __call__: x (B, h, w, 3) float32 in [0, 1] -> (B, h*scale, w*scale, 3) float32 (not clipped).
    `dtype` is the compute dtype; parameters are `param_dtype` (float32). `remat=True`
    rematerialises each RCAB in the backward pass. `scan_blocks=True` (default) runs the groups
    with `nn.scan`, and the RCABs of each group with an inner `nn.scan`: parameters live under
    `groups` (leaves (num_groups, ...)) and `groups/blocks` (leaves (num_groups, num_blocks,
    ...)), and the program holds one RCAB instead of num_groups * num_blocks. False keeps one
    submodule per group and block (`group_0/block_0`, ...). Same numbers for the same weights;
    `jaxsr.models.stacking` converts the layouts.
    """

    scale: int = 2
    features: int = 64
    num_groups: int = 10
    num_blocks: int = 20
    reduction: int = 16
    num_channels: int = 3
    remat: bool = False
    scan_blocks: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        check_scale("RCAN", self.scale)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = mean_shift(x.astype(jnp.float32), -1).astype(self.dtype)
        x = conv(self.features, 3, name="head", **kw)(x)
        y = repeat_blocks(
            lambda name: ResidualGroup(self.features, self.num_blocks, self.reduction, self.remat,
                                       self.scan_blocks, name=name, **kw),
            x, self.num_groups, scan=self.scan_blocks, name="group")
        y = conv(self.features, 3, name="body_conv", **kw)(y)
        y = y + x
        if self.scale > 1:
            y = Upsampler(self.features, self.scale, name="upsampler", **kw)(y)
        y = conv(self.num_channels, 3, name="tail", **kw)(y)
        return mean_shift(y.astype(jnp.float32), +1)
