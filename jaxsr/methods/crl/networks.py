"""CRL-SR's networks. Deployed: `CRLSR` = E_l (degradation remover) + SR decoder, registered as
model 'crl_sr' in `jaxsr.models.crl`. Auxiliary (training only, in `state.aux`):

  E_h  details remover      HR (B, hs, ws, 3) -> (B, h, w, F): stride-s stem, ResBlocks
  E_f  feature extractor    image (B, hs, ws, 3) -> (B, h, w, F): same shape as E_h, own weights
  D_rec reconstruction dec. E_f features (B, h, w, F) -> HR (B, hs, ws, 3) (keeps E_f informative)
  heads 2-layer MLPs        (B, M, F) -> (B, M, P) for f_l, f_h and E_f's features

The stride-s stem is an s x s convolution with stride s, so map position (i, j) of E_h / E_f
depends (at the stem) only on the HR block LR pixel (i, j) covers (see positions.py).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxsr.models.common import Dtype, conv, mean_shift
from jaxsr.models.crl import CRLSR, DegradationRemover, SRDecoder
from jaxsr.models.edsr import ResBlock

__all__ = ["CRLSR", "DegradationRemover", "SRDecoder", "StridedStem", "StridedEncoder",
           "ProjectionHead", "ReconstructionDecoder"]


class StridedStem(nn.Module):
    """(B, h*s, w*s, 3) -> (B, h, w, F): an s x s convolution with stride s (no overlap)."""
    features: int
    scale: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        s = self.scale
        return nn.Conv(self.features, (s, s), strides=(s, s), padding="VALID", dtype=self.dtype,
                       name="conv")(x)


class StridedEncoder(nn.Module):
    """E_h / E_f: image (B, h*s, w*s, 3) in [0, 1] -> features (B, h, w, F) float32.

    Stride-s stem, ReLU, conv 3x3, num_blocks ResBlocks, conv 3x3 (+ stem skip)."""
    features: int = 32
    num_blocks: int = 2
    scale: int = 2
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = mean_shift(x.astype(jnp.float32), -1).astype(self.dtype)
        stem = StridedStem(self.features, self.scale, self.dtype, name="stem")(x)
        y = conv(self.features, 3, name="conv_in", dtype=self.dtype)(nn.relu(stem))
        for i in range(self.num_blocks):
            y = ResBlock(self.features, dtype=self.dtype, name=f"block_{i}")(y)
        y = conv(self.features, 3, name="conv_out", dtype=self.dtype)(y)
        return (y + stem).astype(jnp.float32)


class ProjectionHead(nn.Module):
    """2-layer MLP on sampled vectors: (..., F) -> (..., dim) float32 (normalised by the loss)."""
    dim: int = 64

    @nn.compact
    def __call__(self, v: jax.Array) -> jax.Array:
        v = nn.relu(nn.Dense(self.dim, name="fc1")(v.astype(jnp.float32)))
        return nn.Dense(self.dim, name="fc2")(v)


class ReconstructionDecoder(SRDecoder):
    """D_rec: E_f features (B, h, w, F) -> HR estimate (B, h*s, w*s, 3) float32. The SR
    decoder's architecture (ResBlocks, upsampler, RGB conv) with its own weights; one block by
    default."""
    num_blocks: int = 1
