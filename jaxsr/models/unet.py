"""Plain U-Net restorer with optional super-resolution tail.

head conv 3x3 (3 -> width) -> per level i (channels c_i = width * 2**i): ConvBlock(c_i) [skip],
2x2 stride-2 conv c_i -> 2 c_i -> bottleneck ConvBlock(c_depth) -> per level, deepest first:
1x1 conv (no bias) c -> 2c + pixel_shuffle(2) (-> c/2), concat skip, ConvBlock(c/2) -> for
scale > 1 an EDSR Upsampler(width, scale) -> conv 3x3 (width -> 3) -> + input (bilinearly
upsampled for scale > 1) when `residual`. ConvBlock(c) = `convs_per_level` x (conv 3x3 -> c,
LeakyReLU 0.2). Inputs of any size are zero-padded bottom/right to a multiple of 2**depth and the
output is cropped back.

Optional side inputs (IRConStyle; see `jaxsr.models.injection`): `features[i]` is fused right after
down_i (`feat_fuse_i`: 1x1 conv + LeakyReLU 0.1 projection to 2 c_i, concat, 1x1 conv back to
2 c_i) and `code` after the bottleneck (`code_fuse`: b = Conv1x1(cat(b, b * Dense(code)))). With
neither, no extra parameters exist and the output is that of the plain U-Net.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxsr.models.common import Dtype, Upsampler, check_scale, conv, pixel_shuffle
from jaxsr.models.injection import CodeFuse, FeatureFuse, check_code, prepare_features
from jaxsr.models.registry import register


class ConvBlock(nn.Module):
    """`num_convs` x (conv 3x3 -> features, LeakyReLU 0.2). (B, H, W, any) -> (B, H, W, F)."""

    features: int
    num_convs: int = 2
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(self.num_convs):
            x = conv(self.features, 3, name=f"conv_{i}", dtype=self.dtype,
                     param_dtype=self.param_dtype)(x)
            x = nn.leaky_relu(x, 0.2)
        return x


@register("unet", doc="plain U-Net restorer, width 32, depth 3 (scale 1; scale 2-4 via tail)")
class UNet(nn.Module):
    """U-Net restorer / upscaler.

    __call__: x (B, h, w, 3) float32 in [0, 1], any h, w -> (B, h*scale, w*scale, 3) float32
    (not clipped). `dtype` is the compute dtype; parameters are `param_dtype` (float32).
    Optional `features`: `depth` maps, features[i] (B, ceil(h / 2**(i+1)), ceil(w / 2**(i+1)), any
    C_i); optional `code` (B, D). See the module docstring.
    """

    scale: int = 1
    width: int = 32
    depth: int = 3
    convs_per_level: int = 2
    num_channels: int = 3
    residual: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, features: Sequence[jax.Array] | None = None,
                 code: jax.Array | None = None) -> jax.Array:
        check_scale("UNet", self.scale)
        if self.depth < 0 or self.convs_per_level < 1:
            raise ValueError(f"UNet: need depth >= 0 and convs_per_level >= 1, got depth="
                             f"{self.depth}, convs_per_level={self.convs_per_level}")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        b, h, w, c_in = x.shape
        features = prepare_features("UNet", features, x.shape, self.depth)
        check_code("UNet", code, b)
        pad_to = 2 ** self.depth
        xf = x.astype(jnp.float32)
        y = jnp.pad(xf, ((0, 0), (0, (-h) % pad_to), (0, (-w) % pad_to), (0, 0)))

        y = conv(self.width, 3, name="head", **kw)(y.astype(self.dtype))
        skips = []
        ch = self.width
        for lvl in range(self.depth):
            y = ConvBlock(ch, self.convs_per_level, name=f"enc_{lvl}", **kw)(y)
            skips.append(y)
            y = conv(2 * ch, 2, stride=2, padding="VALID", name=f"down_{lvl}", **kw)(y)
            ch *= 2
            if features is not None:
                y = FeatureFuse(ch, name=f"feat_fuse_{lvl}", **kw)(y, features[lvl])
        y = ConvBlock(ch, self.convs_per_level, name="bottleneck", **kw)(y)
        if code is not None:
            y = CodeFuse(ch, name="code_fuse", **kw)(y, code)
        for lvl, skip in enumerate(skips[::-1]):
            y = pixel_shuffle(conv(2 * ch, 1, use_bias=False, name=f"up_{lvl}", **kw)(y), 2)
            ch //= 2
            y = jnp.concatenate([y, skip], axis=-1)
            y = ConvBlock(ch, self.convs_per_level, name=f"dec_{lvl}", **kw)(y)
        if self.scale > 1:
            y = Upsampler(self.width, self.scale, name="upsampler", **kw)(y)
        y = conv(self.num_channels, 3, name="tail", **kw)(y)
        out = y.astype(jnp.float32)[:, : h * self.scale, : w * self.scale, :]
        if self.residual:
            if self.scale > 1:
                xf = jax.image.resize(xf, (b, h * self.scale, w * self.scale, c_in), "bilinear")
            out = out + xf
        return out
