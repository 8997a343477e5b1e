"""Injecting side-network outputs into a U-shaped restorer (IRConStyle style).

Two optional inputs of `UNet` / `NAFNet`:
  features  one map per encoder level, finest first: features[i] is (B, h_i, w_i, C_i) at the
            spatial size of level i's downsampling output, h_i = ceil(h / 2**(i+1)) for an input
            of height h (what a stride-2 encoder gives; zero-padded here like the input), or
            already the padded size. Fused right after that downsampling by `FeatureFuse`.
  code      a global vector (B, D), fused once at the bottleneck by `CodeFuse`.
Neither given: no injection module is built, so the restorer's parameters and outputs are exactly
those of the plain network.
"""
from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxsr.models.common import Dtype, conv, torch_conv_init


class FeatureFuse(nn.Module):
    """y = Conv1x1(cat(y, LeakyReLU_0.1(Conv1x1(fea)))), both convs to `width`, no bias.

    y (B, H, W, width), fea (B, H, W, C_f) -> (B, H, W, width). Parameters C_f*w + 2*w*w.
    """

    width: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, y: jax.Array, fea: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, use_bias=False)
        p = nn.leaky_relu(conv(self.width, 1, name="proj", **kw)(fea.astype(self.dtype)), 0.1)
        return conv(self.width, 1, name="fuse", **kw)(jnp.concatenate([y, p], axis=-1))


class CodeFuse(nn.Module):
    """b = Conv1x1(cat(b, b * Dense(code))) (Dense with bias, 1x1 conv without).

    b (B, H, W, width), code (B, D) -> (B, H, W, width). Parameters D*w + w + 2*w*w.
    """

    width: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, b: jax.Array, code: jax.Array) -> jax.Array:
        s = nn.Dense(self.width, dtype=self.dtype, param_dtype=self.param_dtype,
                     kernel_init=torch_conv_init, name="dense")(code.astype(self.dtype))
        fused = jnp.concatenate([b, b * s[:, None, None, :]], axis=-1)
        return conv(self.width, 1, use_bias=False, name="fuse", dtype=self.dtype,
                    param_dtype=self.param_dtype)(fused)


def level_sizes(h: int, w: int, levels: int) -> list[tuple[int, int]]:
    """Unpadded spatial size after each downsampling: [(ceil(h/2), ceil(w/2)), (ceil(h/4), ..)]."""
    return [(math.ceil(h / 2 ** (i + 1)), math.ceil(w / 2 ** (i + 1))) for i in range(levels)]


def prepare_features(model: str, features: Sequence[jax.Array] | None, x_shape: tuple,
                     levels: int) -> list[jax.Array] | None:
    """Check `features` against an input of shape x_shape = (B, h, w, C) and zero-pad each map
    bottom/right to its level's padded size (h padded to a multiple of 2**levels, / 2**(i+1)).

    Returns None for None; raises ValueError naming the expected shapes otherwise.
    """
    if features is None:
        return None
    b, h, w = x_shape[:3]
    pad_to = 2 ** levels
    hp, wp = h + (-h) % pad_to, w + (-w) % pad_to
    want = level_sizes(h, w, levels)
    padded = [(hp // 2 ** (i + 1), wp // 2 ** (i + 1)) for i in range(levels)]
    expected = ", ".join(f"(B={b}, {hh}, {ww}, C_{i})" for i, (hh, ww) in enumerate(want))
    if hasattr(features, "shape") or len(features) != levels:
        got = "one array" if hasattr(features, "shape") else f"{len(features)} maps"
        raise ValueError(f"{model}: features must be a sequence of {levels} maps (one per encoder "
                         f"level, finest first): {expected or 'none'}; got {got}")
    out = []
    for i, (fea, (hh, ww), (ph, pw)) in enumerate(zip(features, want, padded)):
        shape = tuple(getattr(fea, "shape", ()))
        ok = len(shape) == 4 and shape[0] == b and shape[1:3] in ((hh, ww), (ph, pw))
        if not ok:
            alt = f" or the padded ({ph}, {pw})" if (ph, pw) != (hh, ww) else ""
            raise ValueError(f"{model}: features[{i}] has shape {shape}; expected (B={b}, {hh}, "
                             f"{ww}, C_{i}){alt} for input {tuple(x_shape)}. All expected: "
                             f"{expected}")
        if shape[1:3] != (ph, pw):
            fea = jnp.pad(fea, ((0, 0), (0, ph - shape[1]), (0, pw - shape[2]), (0, 0)))
        out.append(fea)
    return out


def check_code(model: str, code: jax.Array | None, batch: int) -> None:
    """ValueError unless `code` is None or a (batch, D) array."""
    if code is None:
        return
    shape = tuple(getattr(code, "shape", ()))
    if len(shape) != 2 or shape[0] != batch:
        raise ValueError(f"{model}: code has shape {shape}; expected (B={batch}, D), one global "
                         "vector per image")
