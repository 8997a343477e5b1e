"""CRL-SR's deployed network: the degradation remover `E_l` followed by the SR decoder.

    E_l:      LR (B, h, w, 3) -> conv 3x3 -> encoder_blocks x ResBlock -> conv 3x3 (+ head skip)
              -> resolution-invariant features f_l (B, h, w, features) at LR size
    decoder:  f_l -> decoder_blocks x ResBlock -> Upsampler (omitted at scale 1) -> conv 3x3 -> RGB

The features are `sow`n as intermediates['features'] so the CRL-SR training step gets f_l and the
SR output from one forward pass (`model.apply(..., mutable=['intermediates'])`), also through the
model factory's `GlobalResidual` wrapper. The auxiliary networks of training (details remover,
feature extractor, reconstruction decoder, projection heads) are in `jaxsr.methods.crl.networks`
and are never part of this module: what is exported is exactly E_l + decoder.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxsr.models.common import Dtype, Upsampler, check_scale, conv, mean_shift
from jaxsr.models.edsr import ResBlock
from jaxsr.models.registry import register


class DegradationRemover(nn.Module):
    """E_l: LR image (B, h, w, 3) in [0, 1] -> features (B, h, w, features) float32."""
    features: int = 32
    num_blocks: int = 4
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = mean_shift(x.astype(jnp.float32), -1).astype(self.dtype)
        head = conv(self.features, 3, name="head", dtype=self.dtype)(x)
        y = head
        for i in range(self.num_blocks):
            y = ResBlock(self.features, dtype=self.dtype, name=f"block_{i}")(y)
        y = conv(self.features, 3, name="body_conv", dtype=self.dtype)(y)
        return (y + head).astype(jnp.float32)


class SRDecoder(nn.Module):
    """Features (B, h, w, F) -> image (B, h*scale, w*scale, 3) float32 (not clipped)."""
    scale: int = 2
    features: int = 32
    num_blocks: int = 2
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, f: jax.Array) -> jax.Array:
        y = f.astype(self.dtype)
        for i in range(self.num_blocks):
            y = ResBlock(self.features, dtype=self.dtype, name=f"block_{i}")(y)
        if self.scale > 1:
            y = Upsampler(self.features, self.scale, name="upsampler", dtype=self.dtype)(y)
        y = conv(3, 3, name="tail", dtype=self.dtype)(y)
        return mean_shift(y.astype(jnp.float32), +1)


@register("crl_sr", doc="CRL-SR deployed network: degradation remover E_l + SR decoder")
class CRLSR(nn.Module):
    """x (B, h, w, 3) float32 in [0, 1] -> (B, h*scale, w*scale, 3) float32.

    Parameters: {'encoder': E_l, 'decoder': SR decoder} and nothing else.
    """
    scale: int = 2
    features: int = 32
    encoder_blocks: int = 4
    decoder_blocks: int = 2
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        check_scale("CRLSR", self.scale)
        f = DegradationRemover(self.features, self.encoder_blocks, self.dtype, name="encoder")(x)
        self.sow("intermediates", "features", f)
        return SRDecoder(self.scale, self.features, self.decoder_blocks, self.dtype,
                         name="decoder")(f)
