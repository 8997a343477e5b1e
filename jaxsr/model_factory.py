"""Builds the restoration network a config names (`config.model`), for training and inference.

`config.model` fields: name (registry name, see `jaxsr.models.names()`), scale, dtype
('auto' | 'float32' | 'bfloat16' | 'float16': the compute dtype; 'auto' is bfloat16 on GPU/TPU and
float32 on CPU, see `resolve_dtype`; parameters are float32 in every case), global_residual (add the bicubic-upsampled input to the network output,
so the network learns a correction; with scale 1 that is the input itself), residual_init
('rezero' | 'zero_tail', see `GlobalResidual`), scan_blocks (EDSR/RCAN/NAFNet: repeated blocks
with `nn.scan` over stacked parameters, True, or unrolled, False; other networks ignore it), kwargs (passed to the
model constructor, e.g. num_blocks, features).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
DTYPE_NAMES = ("auto", *DTYPES)
# Platforms on which 'auto' computes in bfloat16 (their matrix units run bf16 at full rate; XLA:CPU
# emulates bf16 convolutions, which is slower than float32 there).
BF16_PLATFORMS = ("gpu", "cuda", "rocm", "tpu")


def resolve_dtype(name: str, platform: str | None = None, what: str = "config.model.dtype"):
    """The compute dtype for the dtype name `name` on `platform` (default: JAX's default backend).

    'auto' -> bfloat16 on GPU/TPU, float32 on CPU; other names map to themselves. Raises
    ValueError naming `what` and the allowed names for an unknown name."""
    if name == "auto":
        platform = (platform or jax.default_backend()).lower()
        return jnp.bfloat16 if platform in BF16_PLATFORMS else jnp.float32
    if name not in DTYPES:
        raise ValueError(f"{what}={name!r} is unknown; use one of {list(DTYPE_NAMES)}")
    return DTYPES[name]


def dtype_name(dtype) -> str:
    """'float32' / 'bfloat16' / 'float16' for a jnp dtype."""
    return jnp.dtype(dtype).name


RESIDUAL_INITS = ("rezero", "zero_tail")
TAIL_NAMES = ("tail", "ending")  # the final conv of the registry's networks


class GlobalResidual(nn.Module):
    """y = up(x) + g * net(x): `up` is MATLAB bicubic for scale > 1 and the identity for scale 1;
    `g` is a learnable per-channel gain. Training starts exactly at the bicubic/identity baseline
    either way (`residual_init`):
      'rezero': g = 0 at the start. Adam moves g by about the learning rate per step, so at a
        small learning rate the network's contribution stays damped for thousands of steps.
      'zero_tail': g = 1 and the network's final conv (`tail` / `ending`) zero-initialised by
        `init_params`: every layer trains at full scale from the second step.
    """
    net: nn.Module
    scale: int
    residual_init: str = "rezero"

    @nn.compact
    def __call__(self, x: jax.Array, **side_inputs) -> jax.Array:
        """x: (B, h, w, 3) float32 in [0, 1] -> (B, h*s, w*s, 3) float32. `side_inputs`
        (e.g. `features=`, `code=` of a U-Net or NAFNet) go to the network unchanged."""
        base = x
        if self.scale > 1:
            from jaxsr.imresize import imresize
            b, h, w, c = x.shape
            base = imresize(x, output_shape=(h * self.scale, w * self.scale))
        init = nn.initializers.ones if self.residual_init == "zero_tail" else nn.initializers.zeros
        gain = self.param("residual_gain", init, (x.shape[-1],), jnp.float32)
        return base + gain * self.net(x, **side_inputs).astype(jnp.float32)


def build_model(model_cfg: ml_collections.ConfigDict, platform: str | None = None) -> nn.Module:
    """The Flax module for `config.model`; its `apply({'params': p}, x)` maps
    (B, h, w, 3) float32 in [0, 1] to (B, h*scale, w*scale, 3) float32. `platform` ('cpu',
    'gpu', 'tpu'; default JAX's default backend) resolves dtype 'auto'."""
    from jaxsr import models
    dtype = resolve_dtype(model_cfg.get("dtype", "float32"), platform)
    kwargs = dict(model_cfg.get("kwargs", {}))
    scan = model_cfg.get("scan_blocks", None)
    from jaxsr.models import registry
    if scan is not None and "scan_blocks" in registry.fields_of(registry.get(model_cfg.name).cls):
        kwargs.setdefault("scan_blocks", bool(scan))  # models without repeated blocks: ignored
    net = models.create(model_cfg.name, scale=int(model_cfg.scale), dtype=dtype, **kwargs)
    if model_cfg.get("global_residual", False):
        residual_init = model_cfg.get("residual_init", "rezero")
        if residual_init not in RESIDUAL_INITS:
            raise ValueError(f"config.model.residual_init={residual_init!r} is unknown; use one "
                             f"of {list(RESIDUAL_INITS)}")
        return GlobalResidual(net=net, scale=int(model_cfg.scale), residual_init=residual_init)
    return net


def build_side_model(side_cfg) -> nn.Module:
    """The Flax module for a side network (discriminator, encoder; see
    `jaxsr.models.side_names()`) from a ConfigDict / mapping with fields name, dtype ('auto' |
    'float32' | 'bfloat16', default float32) and kwargs (network fields). Side networks take no `scale`;
    their `apply` signatures are in `jaxsr.models.side`."""
    from jaxsr import models
    allowed = ("name", "dtype", "kwargs")
    extra = sorted(set(side_cfg.keys()) - set(allowed))
    if extra:
        raise ValueError(f"side network config has unknown fields {extra}; use only "
                         f"{list(allowed)} and put network fields (widths, ...) into kwargs")
    if "name" not in side_cfg:
        raise ValueError(f"side network config needs a name, one of {models.side_names()}")
    dtype = resolve_dtype(side_cfg.get("dtype", "float32"),
                          what=f"side network {side_cfg['name']!r}: dtype")
    kwargs = dict(side_cfg.get("kwargs", None) or {})
    return models.create_side(side_cfg["name"], dtype=dtype, **kwargs)


def init_params(model: nn.Module, rng: jax.Array, lr_patch: int) -> dict:
    """Initial float32 parameters for inputs of size (1, lr_patch, lr_patch, 3)."""
    x = jnp.zeros((1, lr_patch, lr_patch, 3), jnp.float32)
    params = model.init(rng, x)["params"]
    if getattr(model, "residual_init", None) == "zero_tail":
        params = zero_tail(model, params, lr_patch)
    return params


def zero_tail(model: GlobalResidual, params: dict, size: int = 16) -> dict:
    """`params` of a GlobalResidual whose network outputs exactly 0 at the start: its final conv
    (`net/tail` or `net/ending`) gets a zero kernel and the bias that cancels the constants the
    network adds after it (e.g. EDSR's/RCAN's mean shift). Raises ValueError for a network whose
    output still depends on its input then (e.g. one that adds its input itself)."""
    net = dict(params["net"])
    name = next((n for n in TAIL_NAMES if n in net), None)
    if name is None:
        raise ValueError(f"residual_init='zero_tail' needs a final conv named one of "
                         f"{list(TAIL_NAMES)}; this network has {sorted(net)}: use "
                         "residual_init='rezero'")
    net[name] = jax.tree.map(jnp.zeros_like, net[name])
    probe = jax.random.uniform(jax.random.key(0), (2, size, size, 3), jnp.float32)
    out = model.net.apply({"params": net}, probe).astype(jnp.float32)
    const = out[0, 0, 0]
    if float(jnp.max(jnp.abs(out - const))) > 1e-6:
        raise ValueError(f"residual_init='zero_tail': {type(model.net).__name__}'s output still "
                         "depends on its input with a zero final conv (it adds its input "
                         "itself); use residual_init='rezero' or global_residual=False")
    if "bias" in net[name]:
        net[name] = {**net[name], "bias": net[name]["bias"] - const}
    elif float(jnp.max(jnp.abs(const))) > 0:
        raise ValueError("residual_init='zero_tail': the final conv has no bias to cancel the "
                         "network's constant output; use residual_init='rezero'")
    return {**params, "net": net}
