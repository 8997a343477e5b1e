"""Super-resolution / restoration models (Flax Linen, NHWC) and their name registry.

    import jaxsr.models as models
    model = models.create("edsr_baseline", scale=4, dtype=jnp.bfloat16)
    params = model.init(key, jnp.zeros((1, 48, 48, 3)))
    sr = model.apply(params, lr)   # (B, h, w, 3) in [0, 1] -> (B, 4h, 4w, 3) float32

`names()` lists presets (edsr_baseline, edsr_large, rcan, nafnet_w32, nafnet_w64,
nafnet_sidd_w32, nafnet_sidd_w64, unet) and generic names (edsr, nafnet) that take explicit
fields. Every model has fields `scale` (1-4; NAFNet 1 only) and `dtype` (compute dtype; params are
float32).
"""
from jaxsr.models.common import (DIV2K_RGB_MEAN, Upsampler, count_params, pixel_shuffle,
                                 pixel_unshuffle)
from jaxsr.models.registry import create, describe, names, register
# Importing the model modules registers them.
from jaxsr.models.edsr import EDSR
from jaxsr.models.nafnet import NAFNet
from jaxsr.models.rcan import RCAN
from jaxsr.models.unet import UNet

__all__ = [
    "DIV2K_RGB_MEAN", "EDSR", "NAFNet", "RCAN", "UNet", "Upsampler", "count_params", "create",
    "describe", "names", "pixel_shuffle", "pixel_unshuffle", "register",
]
