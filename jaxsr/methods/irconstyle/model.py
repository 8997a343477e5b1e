"""The deployed IRConStyle network: ConStyle encoder + U-Net restorer in one params tree.

    net = jaxsr.models.create("constyle_nafnet")          # 48 / [7,8,9] / 9 / [9,8,7]
    params = net.init(key, jnp.zeros((1, 64, 64, 3)))["params"]
    out = net.apply({"params": params}, x)                  # (B, H, W, 3) in [0,1] -> same size

Params tree: {'encoder': {'params': ConvEncoder params, 'batch_stats': its BatchNorm running
statistics}, 'restorer': ...}. The encoder's BN statistics are part of the deployed tree because
inference needs them; they are never trained by the optimizer (train.py masks them) and are
written by the training step from the train-mode BatchNorm update.

Restorers (`restorer` field):
  'nafnet'  ConStyle-NAFNet [CODE of Dongqi-Fan/IRConStyle, as described in
            ../shared/methods/irconstyle.md]: intro conv 3x3 (3 -> d); level i in 0..L-1 has width
            c_i = (i+1) d: NAFBlocks, skip, then downsampling = conv 3x3 (c_i -> c_i/4, no bias)
            + PixelUnshuffle(2) (-> c_i) concatenated with the ConStyle feature of that scale
            (fea_{i+1} through conv 1x1 (no bias) + LeakyReLU 0.1 to d channels) -> c_i + d;
            bottleneck NAFBlocks at (L+1) d, then b = Conv1x1(cat(b, b * Dense(code)));
            decoder level i (deepest first): conv 3x3 (c_{i+1} -> 4 c_i, no bias) +
            PixelShuffle(2) -> c_i, concat skip, conv 1x1 (2 c_i -> c_i, no bias), NAFBlocks;
            ending conv 3x3 (d -> 3) + input.
  'unet'    ConStyle on the plain jaxsr U-Net (`jaxsr.models.unet.UNet` with `features=` and
            `code=`, see jaxsr/models/injection.py); `inject=False` gives the plain U-Net.

Inputs of any size are zero-padded bottom/right to a multiple of 2**levels (encoder and restorer
see the same padded image) and the output is cropped back.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxsr.models.common import Dtype, conv, pixel_shuffle, pixel_unshuffle
from jaxsr.models.injection import CodeFuse
from jaxsr.models.nafnet import NAFBlock
from jaxsr.models.registry import register
from jaxsr.models.side import ConvEncoder
from jaxsr.models.unet import UNet

RESTORERS = ("nafnet", "unet")
ENCODER_STAGES = ((16, 16, 32), (32, 64), (128, 128), (256, 256))


def nafblock_params(c: int, dw_expand: int = 2, ffn_expand: int = 2) -> int:
    """Parameters of one NAFBlock of width c (2 c^2 + 33 c... for the default expansions:
    7 c^2 + 33 c)."""
    dw, ffn = c * dw_expand, c * ffn_expand
    return (2 * c + (c * dw + dw) + (9 * dw + dw) + ((dw // 2) ** 2 + dw // 2)
            + (dw // 2 * c + c) + c + 2 * c + (c * ffn + ffn) + (ffn // 2 * c + c) + c)


class ConStyleNAFNetRestorer(nn.Module):
    """ConStyle-NAFNet restorer (see the module doc). x (B, H, W, 3) with H, W multiples of
    2**L, features[i] (B, H / 2**(i+1), W / 2**(i+1), any C_i), code (B, D) -> (B, H, W, 3)."""

    width: int = 48
    enc_blocks: Sequence[int] = (7, 8, 9)
    middle_blocks: int = 9
    dec_blocks: Sequence[int] = (9, 8, 7)
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, features: Sequence[jax.Array], code: jax.Array):
        if len(self.enc_blocks) != len(self.dec_blocks) or len(features) != len(self.enc_blocks):
            raise ValueError(f"ConStyleNAFNetRestorer: enc_blocks {tuple(self.enc_blocks)}, "
                             f"dec_blocks {tuple(self.dec_blocks)} and the {len(features)} "
                             "feature maps must have the same length (one per level)")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        d = self.width
        y = conv(d, 3, name="intro", **kw)(x.astype(self.dtype))
        skips = []
        for lvl, n in enumerate(self.enc_blocks):
            ch = (lvl + 1) * d
            for j in range(n):
                y = NAFBlock(ch, name=f"enc_{lvl}_block_{j}", **kw)(y)
            skips.append(y)
            y = pixel_unshuffle(conv(ch // 4, 3, use_bias=False, name=f"down_{lvl}", **kw)(y), 2)
            fea = conv(d, 1, use_bias=False, name=f"fea_proj_{lvl}", **kw)(
                features[lvl].astype(self.dtype))
            y = jnp.concatenate([y, nn.leaky_relu(fea, 0.1)], axis=-1)
        ch = (len(self.enc_blocks) + 1) * d
        for j in range(self.middle_blocks):
            y = NAFBlock(ch, name=f"middle_block_{j}", **kw)(y)
        y = CodeFuse(ch, name="code_fuse", **kw)(y, code)
        for i, (n, skip) in enumerate(zip(self.dec_blocks, skips[::-1])):
            lvl = len(self.enc_blocks) - 1 - i
            ch = (lvl + 1) * d
            y = pixel_shuffle(conv(4 * ch, 3, use_bias=False, name=f"up_{i}", **kw)(y), 2)
            y = conv(ch, 1, use_bias=False, name=f"reduce_{i}", **kw)(
                jnp.concatenate([y, skip], axis=-1))
            for j in range(n):
                y = NAFBlock(ch, name=f"dec_{i}_block_{j}", **kw)(y)
        y = conv(3, 3, name="ending", **kw)(y)
        return y.astype(jnp.float32) + x.astype(jnp.float32)


def restorer_params(width: int, enc_blocks: Sequence[int], middle_blocks: int,
                    dec_blocks: Sequence[int], feature_channels: Sequence[int],
                    code_dim: int) -> int:
    """Hand formula for the parameters of ConStyleNAFNetRestorer (d = width, c_i = (i+1) d):
    intro 27 d + d; per level i: n_i NAFBlock(c_i) + 9 c_i (c_i / 4) (down) + C_i d (proj);
    bottleneck m NAFBlock(c_L) + D c_L + c_L + 2 c_L^2 (code fuse); decoder level i: 9 c_{i+1}
    4 c_i (up) + 2 c_i c_i (reduce) + n'_i NAFBlock(c_i); ending 9 d 3 + 3."""
    d, levels = width, len(enc_blocks)
    total = 27 * d + d + 9 * d * 3 + 3
    for i, n in enumerate(enc_blocks):
        c = (i + 1) * d
        total += n * nafblock_params(c) + 9 * c * (c // 4) + feature_channels[i] * d
    cl = (levels + 1) * d
    total += middle_blocks * nafblock_params(cl) + code_dim * cl + cl + 2 * cl * cl
    for i, n in enumerate(dec_blocks):
        lvl = levels - 1 - i
        c = (lvl + 1) * d
        total += 9 * (c + d) * 4 * c + 2 * c * c + n * nafblock_params(c)
    return total


@register("constyle_unet", restorer="unet", width=32,
          doc="ConStyle encoder + plain U-Net (width 32, depth 3), IRConStyle injection")
@register("constyle_nafnet", restorer="nafnet", width=48, enc_blocks=(7, 8, 9), middle_blocks=9,
          dec_blocks=(9, 8, 7),
          doc="ConStyle-NAFNet (IRConStyle): ConStyle encoder + 48-wide concat-down NAFNet U-Net")
@register("constyle", doc="ConStyle encoder + U-Net restorer with explicit fields")
class ConStyleNet(nn.Module):
    """Deployed IRConStyle network (see the module doc).

    __call__(x (B, h, w, 3) float32 in [0, 1], encoder_out=None) -> (B, h, w, 3) float32 (not
    clipped). `encoder_out` = (code (B, D), [fea_1, ...]) computed by the caller on the padded
    input (training runs the encoder in train mode itself); None = run the stored encoder with
    its BatchNorm running statistics (inference).
    """

    scale: int = 1
    restorer: str = "nafnet"
    width: int = 48
    enc_blocks: Sequence[int] = (7, 8, 9)     # nafnet: blocks per level
    middle_blocks: int = 9
    dec_blocks: Sequence[int] = (9, 8, 7)
    unet_depth: int = 3                        # unet restorer only
    unet_convs: int = 2
    inject: bool = True                        # unet only: False = the plain U-Net (baseline)
    encoder_stages: Sequence[Sequence[int]] = ENCODER_STAGES
    encoder_hidden: Sequence[int] = (128,)
    code_dim: int = 128
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @property
    def levels(self) -> int:
        return len(self.enc_blocks) if self.restorer == "nafnet" else int(self.unet_depth)

    def encoder_module(self) -> ConvEncoder:
        """The ConStyle encoder (unbound): query encoder here, key encoder in training."""
        return ConvEncoder(stages=tuple(tuple(s) for s in self.encoder_stages),
                           hidden_dims=tuple(self.encoder_hidden), code_dim=self.code_dim,
                           dtype=self.dtype, param_dtype=self.param_dtype, parent=None)

    def pad(self, x: jax.Array) -> jax.Array:
        """Zero-pads (B, h, w, C) bottom/right to a multiple of 2**levels."""
        m = 2 ** self.levels
        h, w = x.shape[1:3]
        return jnp.pad(x, ((0, 0), (0, (-h) % m), (0, (-w) % m), (0, 0)))

    @nn.compact
    def __call__(self, x: jax.Array, encoder_out: Any = None) -> jax.Array:
        if self.scale != 1:
            raise ValueError(f"ConStyleNet restores at the input size; got scale={self.scale}")
        if self.restorer not in RESTORERS:
            raise ValueError(f"ConStyleNet: restorer={self.restorer!r} is unknown; use one of "
                             f"{RESTORERS}")
        if len(self.encoder_stages) - 1 < self.levels:
            raise ValueError(f"ConStyleNet: the encoder gives {len(self.encoder_stages) - 1} "
                             f"feature maps, the restorer needs {self.levels}")
        b, h, w, _ = x.shape
        xp = self.pad(x.astype(jnp.float32))
        encoder = self.encoder_module()
        enc_vars = self.param("encoder", lambda rng: dict(encoder.init(rng, xp[:1], train=False)))
        if encoder_out is None:
            encoder_out = encoder.apply(enc_vars, xp, train=False)
        code, feats = encoder_out
        feats = list(feats)[: self.levels]
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if self.restorer == "nafnet":
            out = ConStyleNAFNetRestorer(self.width, tuple(self.enc_blocks), self.middle_blocks,
                                         tuple(self.dec_blocks), name="restorer", **kw)(
                xp, feats, code)
        else:
            net = UNet(scale=1, width=self.width, depth=self.unet_depth,
                       convs_per_level=self.unet_convs, name="restorer", **kw)
            out = net(xp, features=feats, code=code) if self.inject else net(xp)
        return out[:, :h, :w, :]
