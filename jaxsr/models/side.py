"""Side networks: trained next to a restorer, never deployed. Built by name with
`jaxsr.models.create_side` (no `scale`). Flax Linen, NHWC, float32 parameters, compute `dtype`;
every returned array is float32. BatchNorm statistics live in the 'batch_stats' collection:
`apply(variables, x, train=True, mutable=['batch_stats'])` updates them, `train=False` uses them.

vgg_discriminator  SRGAN/ESRGAN-style patch discriminator; the defaults are PCL-SR's embedding
                   network (9 Haar detail bands in, 8 conv+BN blocks, 4x4 patch logits out).
conv_encoder       strided conv encoder -> per-scale maps + a global code; the defaults are
                   IRConStyle's ConStyle encoder.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxsr.models.common import Dtype, conv, torch_conv_init
from jaxsr.models.registry import register_side


def adaptive_pool_matrix(n: int, p: int) -> np.ndarray:
    """(p, n) averaging matrix of PyTorch's AdaptiveAvgPool over one axis: bin i averages
    positions [floor(i n / p), ceil((i + 1) n / p)). Works for n < p too (bins repeat)."""
    m = np.zeros((p, n), np.float32)
    for i in range(p):
        lo, hi = (i * n) // p, -((-(i + 1) * n) // p)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


def adaptive_avg_pool(x: jax.Array, p: int) -> jax.Array:
    """(B, H, W, C) -> (B, p, p, C) float32, PyTorch `AdaptiveAvgPool2d(p)` bins."""
    mh = jnp.asarray(adaptive_pool_matrix(x.shape[1], p))
    mw = jnp.asarray(adaptive_pool_matrix(x.shape[2], p))
    return jnp.einsum("ph,bhwc,qw->bpqc", mh, x.astype(jnp.float32), mw)


def batch_norm(train: bool, momentum: float, name: str, dtype: Dtype,
               param_dtype: Dtype) -> nn.BatchNorm:
    """BatchNorm over all axes but the last, PyTorch defaults (eps 1e-5, running-average
    momentum 0.9 in Flax terms = 0.1 in PyTorch's); batch statistics only when `train`."""
    return nn.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=1e-5,
                        dtype=dtype, param_dtype=param_dtype, name=name)


@register_side("vgg_discriminator",
               doc="VGG-style patch discriminator (defaults: PCL-SR embedding network, 4.69M)")
class VGGDiscriminator(nn.Module):
    """Blocks i = 0..L-1: conv 3x3 (`widths[i]`, stride `strides[i]`, bias only without BN)
    [+ BatchNorm], LeakyReLU(`negative_slope`); then adaptive average pool to `pool_size`^2 and a
    1x1 conv (with bias) to one logit per pooled patch.

    Defaults = PCL-SR (Aitical/PCL-SISR, patch discriminator): widths 64,64,128,128,256,256,512,512,
    strides 1,2,1,2,1,2,1,2, BatchNorm on every block including the first, LeakyReLU 0.2, pool 4.
    `bn_first=False` gives the SRGAN/ESRGAN stem (conv with bias, no BN); `use_bn=False` no BN.
    Any input channel count (PCL feeds the 9 Haar detail bands LH, HL, HH of an RGB image).

    Parameters: sum_i [9 c_{i-1} c_i + (2 c_i with BN, else c_i)] + c_{L-1} + 1, c_{-1} = C_in;
    4,691,265 for the defaults with C_in = 9.

    __call__(x (B, H, W, C) any range, train) -> logits (B, p, p) float32; with
    `return_features=True` also a dict with 'block{i}_preact' (block i after conv/BN, before the
    activation) and 'block{i}' (after it), (B, H_i, W_i, widths[i]) float32, H_i = H halved
    (rounding up) once per stride-2 block up to i. PCL's contrastive feature is 'block4_preact':
    256 channels at H/4 of the (half-resolution) wavelet input, i.e. 1/8 of the HR image.
    """

    widths: Sequence[int] = (64, 64, 128, 128, 256, 256, 512, 512)
    strides: Sequence[int] = (1, 2, 1, 2, 1, 2, 1, 2)
    use_bn: bool = True
    bn_first: bool = True
    negative_slope: float = 0.2
    pool_size: int = 4
    bn_momentum: float = 0.9
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, return_features: bool = False):
        if len(self.widths) != len(self.strides) or not self.widths:
            raise ValueError(f"VGGDiscriminator: widths {tuple(self.widths)} and strides "
                             f"{tuple(self.strides)} must be non-empty and of the same length")
        if x.ndim != 4:
            raise ValueError(f"VGGDiscriminator: expected x of shape (B, H, W, C), got {x.shape}")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        feats = {}
        y = x.astype(self.dtype)
        for i, (width, stride) in enumerate(zip(self.widths, self.strides)):
            bn = self.use_bn and (i > 0 or self.bn_first)
            y = conv(width, 3, stride=stride, use_bias=not bn, name=f"conv_{i}", **kw)(y)
            if bn:
                y = batch_norm(train, self.bn_momentum, f"bn_{i}", **kw)(y)
            feats[f"block{i}_preact"] = y.astype(jnp.float32)
            y = nn.leaky_relu(y, self.negative_slope)
            feats[f"block{i}"] = y.astype(jnp.float32)
        pooled = adaptive_avg_pool(y, self.pool_size).astype(self.dtype)
        logits = conv(1, 1, name="head", **kw)(pooled)[..., 0].astype(jnp.float32)
        return (logits, feats) if return_features else logits


@register_side("conv_encoder",
               doc="strided conv encoder -> per-scale maps + code (defaults: ConStyle, 1.19M)")
class ConvEncoder(nn.Module):
    """Stages of conv 3x3 + LeakyReLU(`negative_slope`); the last conv of each stage has stride 2.
    The outputs of all stages but the last are the per-scale features (H/2, H/4, ... rounding
    up); the last stage is global-average-pooled and goes through an MLP head: per layer Dense
    [+ BatchNorm] + GELU (exact), widths `hidden_dims` then `code_dim`.

    Defaults = the ConStyle encoder of IRConStyle (Dongqi-Fan/IRConStyle): stages
    (16, 16, 32), (32, 64), (128, 128), (256, 256) without conv bias, LeakyReLU 0.1; head
    256 -> 128 -> 128 with BatchNorm; features fea1 (H/2, 32), fea2 (H/4, 64), fea3 (H/8, 128).

    Parameters: sum over convs 9 c_in c_out (+ c_out with `conv_bias`) + sum over head layers
    (d_in d_out + d_out + 2 d_out with BN); 1,190,832 for the defaults (published "about 1.19 M").

    __call__(x (B, H, W, C) any range, train) -> (code (B, code_dim), [fea_1, ..., fea_{S-1}]),
    all float32, fea_s (B, ceil(H / 2**s), ceil(W / 2**s), stages[s-1][-1]). With
    `return_hidden=True` also the list of every head layer's output (the last is `code`; ConStyle's
    style loss uses the first and the second).
    """

    stages: Sequence[Sequence[int]] = ((16, 16, 32), (32, 64), (128, 128), (256, 256))
    hidden_dims: Sequence[int] = (128,)
    code_dim: int = 128
    use_bn: bool = True
    conv_bias: bool = False
    negative_slope: float = 0.1
    bn_momentum: float = 0.9
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, return_hidden: bool = False):
        if not self.stages or any(len(s) == 0 for s in self.stages):
            raise ValueError(f"ConvEncoder: stages {tuple(self.stages)} must be a non-empty list "
                             "of non-empty width lists")
        if x.ndim != 4:
            raise ValueError(f"ConvEncoder: expected x of shape (B, H, W, C), got {x.shape}")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        feats = []
        y = x.astype(self.dtype)
        for s, widths in enumerate(self.stages):
            for j, width in enumerate(widths):
                stride = 2 if j == len(widths) - 1 else 1
                y = conv(width, 3, stride=stride, use_bias=self.conv_bias,
                         name=f"stage{s}_conv{j}", **kw)(y)
                y = nn.leaky_relu(y, self.negative_slope)
            if s < len(self.stages) - 1:
                feats.append(y.astype(jnp.float32))
        h = jnp.mean(y, axis=(1, 2), dtype=jnp.float32).astype(self.dtype)
        hidden = []
        for k, d in enumerate((*self.hidden_dims, self.code_dim)):
            h = nn.Dense(d, kernel_init=torch_conv_init, name=f"mlp_{k}", **kw)(h)
            if self.use_bn:
                h = batch_norm(train, self.bn_momentum, f"mlp_{k}_bn", **kw)(h)
            h = nn.gelu(h, approximate=False)
            hidden.append(h.astype(jnp.float32))
        code = hidden[-1]
        return (code, feats, hidden) if return_hidden else (code, feats)
