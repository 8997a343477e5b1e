"""NAFNet (Chen et al., "Simple Baselines for Image Restoration", ECCV 2022). Restoration only.

U-shaped: intro conv 3x3 (3 -> width) -> per level [NAFBlocks, 2x2 stride-2 conv doubling the
channels] -> middle NAFBlocks -> per level [1x1 conv (no bias) to 2C + pixel_shuffle(2), + encoder
skip, NAFBlocks] -> ending conv 3x3 (width -> 3) -> + input. The input is zero-padded at the
bottom/right to a multiple of 2**levels and the output cropped back.

NAFBlock(c): LayerNorm2d -> 1x1 conv c->2c -> 3x3 depthwise -> SimpleGate (split channels, multiply)
-> simplified channel attention (global mean -> 1x1 conv, multiply) -> 1x1 conv -> x*beta + input;
then LayerNorm2d -> 1x1 conv c->2c -> SimpleGate -> 1x1 conv -> x*gamma + previous. beta and gamma
are per-channel layer scales initialised to zero (so every block starts as identity). Dropout of
the official code is 0 in all published configs and is left out. The test-time local
("TLC", NAFNetLocal) average pooling of the GoPro models is not implemented: pooling is global.

Optional side inputs (IRConStyle; see `jaxsr.models.injection`): `features[i]` is fused right after
down_i (`feat_fuse_i`, to that level's 2 c_i channels) and `code` after the middle blocks
(`code_fuse`: b = Conv1x1(cat(b, b * Dense(code)))). With neither, no extra parameters exist and
the output is that of the plain NAFNet.

Presets (block counts from the official option files; parameter counts derived from the
architecture; the GoPro ones agree with the quoted 17.11M / 67.89M):
  nafnet_w32       GoPro width 32, enc (1,1,1,28), middle 1, dec (1,1,1,1): 17,111,907 (17.11M)
  nafnet_w64       GoPro width 64, same blocks:                             67,888,835 (67.89M)
  nafnet_sidd_w32  SIDD width 32, enc (2,2,4,8), middle 12, dec (2,2,2,2):  29,159,715 (29.16M)
  nafnet_sidd_w64  SIDD width 64, same blocks:                             115,982,915 (115.98M)
"""
from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxsr.models.common import (Dtype, block_class, conv, dense_conv, pixel_shuffle,
                                 repeat_blocks)
from jaxsr.models.injection import CodeFuse, FeatureFuse, check_code, prepare_features
from jaxsr.models.registry import register


class LayerNorm2d(nn.Module):
    """Per-pixel LayerNorm over channels (eps 1e-6) with learnable `weight`/`bias` (C,).

    Statistics in float32; (B, H, W, C) -> same, in `dtype`.
    """

    eps: float = 1e-6
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        weight = self.param("weight", nn.initializers.ones, (c,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (c,), self.param_dtype)
        xf = x.astype(jnp.float32)
        mu = jnp.mean(xf, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(xf - mu), axis=-1, keepdims=True)
        y = (xf - mu) * jax.lax.rsqrt(var + self.eps)
        y = y * weight.astype(jnp.float32) + bias.astype(jnp.float32)
        return y.astype(self.dtype)


def simple_gate(x: jax.Array) -> jax.Array:
    """SimpleGate: split channels in two halves and multiply. (..., 2C) -> (..., C)."""
    a, b = jnp.split(x, 2, axis=-1)
    return a * b


class NAFBlock(nn.Module):
    """Nonlinear-activation-free block. (B, H, W, C) -> same."""

    channels: int
    dw_expand: int = 2
    ffn_expand: int = 2
    scanned: bool = False   # inside nn.scan: convs as LoopConv (fast gradients on CPU)
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, inp: jax.Array) -> jax.Array:
        c = self.channels
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        conv = functools.partial(dense_conv, loop=self.scanned)
        dw = c * self.dw_expand
        x = LayerNorm2d(name="norm1", **kw)(inp)
        x = conv(dw, 1, name="conv1", **kw)(x)
        x = conv(dw, 3, groups=dw, name="conv2", **kw)(x)
        x = simple_gate(x)
        # Simplified channel attention: global mean (accumulated in float32) -> 1x1 conv.
        s = jnp.mean(x, axis=(1, 2), keepdims=True, dtype=jnp.float32).astype(self.dtype)
        x = x * conv(dw // 2, 1, name="sca", **kw)(s)
        x = conv(c, 1, name="conv3", **kw)(x)
        beta = self.param("beta", nn.initializers.zeros, (c,), self.param_dtype)
        y = inp + x * beta.astype(self.dtype)

        ffn = c * self.ffn_expand
        x = LayerNorm2d(name="norm2", **kw)(y)
        x = conv(ffn, 1, name="conv4", **kw)(x)
        x = simple_gate(x)
        x = conv(c, 1, name="conv5", **kw)(x)
        gamma = self.param("gamma", nn.initializers.zeros, (c,), self.param_dtype)
        return y + x * gamma.astype(self.dtype)


@register("nafnet_sidd_w64", width=64, enc_blocks=(2, 2, 4, 8), middle_blocks=12,
          dec_blocks=(2, 2, 2, 2), doc="NAFNet SIDD (denoising) width 64 (115.98M params)")
@register("nafnet_sidd_w32", width=32, enc_blocks=(2, 2, 4, 8), middle_blocks=12,
          dec_blocks=(2, 2, 2, 2), doc="NAFNet SIDD (denoising) width 32 (29.16M params)")
@register("nafnet_w64", width=64, enc_blocks=(1, 1, 1, 28), middle_blocks=1,
          dec_blocks=(1, 1, 1, 1), doc="NAFNet GoPro (deblurring) width 64 (67.89M params)")
@register("nafnet_w32", width=32, enc_blocks=(1, 1, 1, 28), middle_blocks=1,
          dec_blocks=(1, 1, 1, 1), doc="NAFNet GoPro (deblurring) width 32 (17.11M params)")
@register("nafnet", doc="NAFNet with explicit fields (defaults = GoPro width 32)")
class NAFNet(nn.Module):
    """NAFNet image restoration network (scale 1 only).

    __call__: x (B, h, w, 3) float32 in [0, 1], any h, w -> (B, h, w, 3) float32 (not clipped).
    `dtype` is the compute dtype; parameters are `param_dtype` (float32). `remat=True`
    rematerialises each NAFBlock in the backward pass. `scan_blocks=True` (default) runs the
    blocks of each encoder level, the middle and each decoder level with `nn.scan` over
    parameters stacked under `enc_{i}_blocks`, `middle_blocks`, `dec_{i}_blocks` (leaves (n,
    ...)); False keeps one submodule per block (`enc_{i}_block_{j}`, ...). Same numbers for the
    same weights; `jaxsr.models.stacking` converts the layouts. Optional `features`: one map per
    level, features[i] (B, ceil(h / 2**(i+1)), ceil(w / 2**(i+1)), any C_i); optional `code` (B, D).
    """

    scale: int = 1
    width: int = 32
    enc_blocks: Sequence[int] = (1, 1, 1, 28)
    middle_blocks: int = 1
    dec_blocks: Sequence[int] = (1, 1, 1, 1)
    dw_expand: int = 2
    ffn_expand: int = 2
    num_channels: int = 3
    remat: bool = False
    scan_blocks: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, features: Sequence[jax.Array] | None = None,
                 code: jax.Array | None = None) -> jax.Array:
        if self.scale != 1:
            raise ValueError(
                f"NAFNet is a restoration model (output size = input size); got scale="
                f"{self.scale!r}. Use scale=1, or a super-resolution model such as 'edsr_baseline',"
                " 'rcan' or 'unet' (which takes scale 1-4).")
        if len(self.enc_blocks) != len(self.dec_blocks):
            raise ValueError(f"NAFNet: enc_blocks {tuple(self.enc_blocks)} and dec_blocks "
                             f"{tuple(self.dec_blocks)} must have the same length (one per level)")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        block = block_class(NAFBlock, self.remat, self.scan_blocks)

        def blocks(y: jax.Array, n: int, name: str) -> jax.Array:
            ch = y.shape[-1]
            return repeat_blocks(
                lambda nm: block(ch, self.dw_expand, self.ffn_expand, self.scan_blocks,
                                 name=nm, **kw), y, n,
                scan=self.scan_blocks, name=name)

        b, h, w, _ = x.shape
        features = prepare_features("NAFNet", features, x.shape, len(self.enc_blocks))
        check_code("NAFNet", code, b)
        pad_to = 2 ** len(self.enc_blocks)
        ph, pw = (-h) % pad_to, (-w) % pad_to
        inp = jnp.pad(x.astype(jnp.float32), ((0, 0), (0, ph), (0, pw), (0, 0)))

        y = conv(self.width, 3, name="intro", **kw)(inp.astype(self.dtype))
        skips = []
        ch = self.width
        for lvl, n in enumerate(self.enc_blocks):
            y = blocks(y, n, f"enc_{lvl}_block")
            skips.append(y)
            y = conv(2 * ch, 2, stride=2, padding="VALID", name=f"down_{lvl}", **kw)(y)
            ch *= 2
            if features is not None:
                y = FeatureFuse(ch, name=f"feat_fuse_{lvl}", **kw)(y, features[lvl])
        y = blocks(y, self.middle_blocks, "middle_block")
        if code is not None:
            y = CodeFuse(ch, name="code_fuse", **kw)(y, code)
        for lvl, (n, skip) in enumerate(zip(self.dec_blocks, skips[::-1])):
            y = conv(2 * ch, 1, use_bias=False, name=f"up_{lvl}", **kw)(y)
            y = pixel_shuffle(y, 2)
            ch //= 2
            y = y + skip
            y = blocks(y, n, f"dec_{lvl}_block")
        y = conv(self.num_channels, 3, name="ending", **kw)(y)
        out = y.astype(jnp.float32) + inp
        return out[:, :h, :w, :]
