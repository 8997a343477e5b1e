"""Super-resolution / restoration models (Flax Linen, NHWC) and their name registry.

    import jaxsr.models as models
    model = models.create("edsr_baseline", scale=4, dtype=jnp.bfloat16)
    params = model.init(key, jnp.zeros((1, 48, 48, 3)))
    sr = model.apply(params, lr)   # (B, h, w, 3) in [0, 1] -> (B, 4h, 4w, 3) float32

`names()` lists presets (edsr_baseline, edsr_large, rcan, nafnet_w32, nafnet_w64,
nafnet_sidd_w32, nafnet_sidd_w64, unet, crl_sr) and generic names (edsr, nafnet) that take explicit
fields. Every model has fields `scale` (1-4; NAFNet 1 only) and `dtype` (compute dtype; params are
float32). UNet and NAFNet take optional side inputs `features` / `code` (`jaxsr.models.injection`).

Side networks (never deployed, no `scale`) have their own registry: `side_names()` lists
vgg_discriminator and conv_encoder, `create_side(name, **kwargs)` builds one (`jaxsr.models.side`).
"""
from jaxsr.models.common import (DIV2K_RGB_MEAN, Upsampler, count_params, pixel_shuffle,
                                 pixel_unshuffle)
from jaxsr.models.registry import (create, create_side, describe, describe_side, names,
                                   register, register_side, side_names)
# Importing the model modules registers them.
from jaxsr.models.edsr import EDSR
from jaxsr.models.crl import CRLSR
from jaxsr.models.nafnet import NAFNet
from jaxsr.models.rcan import RCAN
from jaxsr.models.side import ConvEncoder, VGGDiscriminator
from jaxsr.models.unet import UNet
# IRConStyle's deployed network (encoder + restorer) lives with its method; importing it here
# registers constyle, constyle_nafnet, constyle_unet so build_model / predict / export find them.
import jaxsr.methods.irconstyle.model  # noqa: E402,F401

__all__ = [
    "CRLSR", "ConvEncoder", "DIV2K_RGB_MEAN", "EDSR", "NAFNet", "RCAN", "UNet", "Upsampler",
    "VGGDiscriminator", "count_params", "create", "create_side", "describe", "describe_side",
    "names", "pixel_shuffle", "pixel_unshuffle", "register", "register_side", "side_names",
]
