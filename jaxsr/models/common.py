"""Building blocks shared by the models: PyTorch-order pixel shuffle, convs, upsampler, mean shift.

All tensors are NHWC. Convolutions use PyTorch-style symmetric padding (k // 2 each side) so that
official PyTorch weights convert one-to-one (kernel OIHW -> HWIO).
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any

# DIV2K training-set RGB mean used by EDSR and RCAN (MeanShift with rgb_range 1, std 1).
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)

SUPPORTED_SCALES = (1, 2, 3, 4)

# PyTorch's default Conv2d weight init (kaiming_uniform with a=sqrt(5)) is
# U(-1/sqrt(fan_in), 1/sqrt(fan_in)), i.e. variance 1/(3 fan_in). Biases start at zero.
torch_conv_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def check_scale(model: str, scale: int, allowed: Sequence[int] = SUPPORTED_SCALES) -> None:
    """Raise ValueError naming `model`, the bad `scale` and the allowed values."""
    if scale not in allowed:
        raise ValueError(f"{model}: scale={scale!r} is not supported; use one of {tuple(allowed)}")


def pixel_shuffle(x: jax.Array, r: int) -> jax.Array:
    """Depth-to-space in PyTorch `nn.PixelShuffle` channel order.

    x: (B, H, W, C*r*r) -> (B, H*r, W*r, C) with out[b, h*r+i, w*r+j, c] = x[b, h, w, c*r*r+i*r+j].
    """
    b, h, w, crr = x.shape
    if crr % (r * r):
        raise ValueError(f"pixel_shuffle: channels {crr} not divisible by r*r = {r * r}")
    c = crr // (r * r)
    x = x.reshape(b, h, w, c, r, r)
    x = x.transpose(0, 1, 4, 2, 5, 3)  # (b, h, i, w, j, c)
    return x.reshape(b, h * r, w * r, c)


def pixel_unshuffle(x: jax.Array, r: int) -> jax.Array:
    """Inverse of `pixel_shuffle`: (B, H*r, W*r, C) -> (B, H, W, C*r*r), PyTorch channel order."""
    b, hr, wr, c = x.shape
    if hr % r or wr % r:
        raise ValueError(f"pixel_unshuffle: spatial size {(hr, wr)} not divisible by r = {r}")
    x = x.reshape(b, hr // r, r, wr // r, r, c)
    x = x.transpose(0, 1, 3, 5, 2, 4)  # (b, h, w, c, i, j)
    return x.reshape(b, hr // r, wr // r, c * r * r)


def conv(features: int, kernel: int = 3, *, name: str | None = None, use_bias: bool = True,
         groups: int = 1, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
         stride: int = 1, padding: Any = None) -> nn.Conv:
    """`nn.Conv` with PyTorch semantics: padding k//2 each side (unless given), torch-like init."""
    if padding is None:
        p = kernel // 2
        padding = ((p, p), (p, p))
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=padding,
                   use_bias=use_bias, feature_group_count=groups, dtype=dtype,
                   param_dtype=param_dtype, kernel_init=torch_conv_init,
                   bias_init=nn.initializers.zeros, name=name)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_same(x: jax.Array, w: jax.Array, groups: int = 1) -> jax.Array:
    """Stride-1 convolution with symmetric padding k//2, x (B, H, W, I), w (k, k, I/groups, O),
    odd k, groups 1 or I (depthwise) -> (B, H, W, O): `lax.conv_general_dilated` exactly, with a
    backward pass that gives XLA kernels in HWIO order. JAX's own transpose rule uses the
    reversed kernel with input/output swapped (`01oi`), which XLA:CPU runs with a generic loop
    (8-30x slower) when the kernel is a slice of stacked weights inside an `nn.scan` loop
    (outside loops XLA rewrites it)."""
    return _conv_same(x, w, groups)


def _conv_same(x: jax.Array, w: jax.Array, groups: int) -> jax.Array:
    p = w.shape[0] // 2
    return jax.lax.conv_general_dilated(x, w, (1, 1), ((p, p), (p, p)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        feature_group_count=groups)


def _conv_same_fwd(x, w, groups):
    return _conv_same(x, w, groups), (x, w)


def _conv_same_bwd(groups, res, dy):
    x, w = res
    k = w.shape[0]
    p = k // 2
    xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    h, v = x.shape[1], x.shape[2]
    if groups == 1:
        # d/dx: correlation of dy with the spatially flipped kernel, in/out swapped (HWIO).
        w_t = jax.lax.optimization_barrier(jnp.transpose(w[::-1, ::-1], (0, 1, 3, 2)))
        dx = _conv_same(dy, w_t, 1)
        # d/dw[a, b, i, o] = sum_{n,h,v} xpad[n, h+a, v+b, i] dy[n, h, v, o]: a VALID
        # convolution with the input channels as batch and the batch as features.
        dw = jax.lax.conv_general_dilated(jnp.transpose(xp, (3, 1, 2, 0)),
                                          jnp.transpose(dy, (1, 2, 0, 3)), (1, 1), "VALID",
                                          dimension_numbers=("NHWC", "HWIO", "NHWC"))
        dw = jnp.transpose(dw, (1, 2, 0, 3))
    else:  # depthwise: w (k, k, 1, C)
        dx = _conv_same(dy, jax.lax.optimization_barrier(w[::-1, ::-1]), groups)
        dw = jnp.stack([jnp.stack([jnp.sum(xp[:, a:a + h, b:b + v, :] * dy, axis=(0, 1, 2))
                                   for b in range(k)]) for a in range(k)])[:, :, None, :]
    return dx.astype(x.dtype), dw.astype(w.dtype)


conv_same.defvjp(_conv_same_fwd, _conv_same_bwd)


class LoopConv(nn.Module):
    """What `conv(features, kernel, groups=groups)` builds (same parameter names, shapes, init
    and forward numbers) for odd kernels, stride 1, groups 1 or depthwise, computed on CPU by
    `conv_same` so that its gradient is fast inside `nn.scan` there (plain convolution elsewhere).
    (B, H, W, I) -> (B, H, W, features)."""

    features: int
    kernel: int = 3
    groups: int = 1
    use_bias: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.param("kernel", torch_conv_init, (self.kernel, self.kernel,
                                                   x.shape[-1] // self.groups, self.features),
                       self.param_dtype)
        # The hand-written backward pass is a workaround for XLA:CPU; GPU/TPU compilers handle
        # JAX's own transpose rule inside loops, and their autotuned kernels are kept.
        fn = conv_same if jax.default_backend() == "cpu" else _conv_same
        if not self.use_bias:
            x, k = nn.dtypes.promote_dtype(x, k, dtype=self.dtype)
            return fn(x, k, self.groups)
        b = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
        x, k, b = nn.dtypes.promote_dtype(x, k, b, dtype=self.dtype)
        return fn(x, k, self.groups) + b.reshape(1, 1, 1, -1)


def dense_conv(features: int, kernel: int = 3, *, loop: bool, name: str | None = None,
               groups: int = 1, dtype: Dtype = jnp.float32,
               param_dtype: Dtype = jnp.float32) -> nn.Module:
    """`conv(features, kernel, groups=groups)` (stride 1, bias, padding k//2); `loop=True`
    (inside a scanned block) builds the equivalent `LoopConv`, whose backward pass is fast in
    XLA:CPU loops. groups: 1 or the input channels (depthwise)."""
    if loop and kernel % 2 == 1:
        return LoopConv(features, kernel, groups, dtype=dtype, param_dtype=param_dtype, name=name)
    return conv(features, kernel, name=name, groups=groups, dtype=dtype,
                param_dtype=param_dtype)


def upsampler_stages(scale: int) -> list[int]:
    """Shuffle factors of the EDSR upsampler: 2^n -> [2]*n, 3 -> [3], 1 -> []."""
    if scale == 1:
        return []
    if scale == 3:
        return [3]
    if scale > 1 and scale & (scale - 1) == 0:
        return [2] * int(math.log2(scale))
    raise ValueError(f"Upsampler: scale={scale!r} not supported; use 1, 3 or a power of 2")


class Upsampler(nn.Module):
    """EDSR upsampler: per stage a 3x3 conv to features*r*r then `pixel_shuffle(r)`.

    x4 is two x2 stages; x2/x3 one stage. (B, H, W, F) -> (B, H*scale, W*scale, F).
    Submodules are named conv_0, conv_1 (PyTorch `tail.0.0`, `tail.0.2`).
    """

    features: int
    scale: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i, r in enumerate(upsampler_stages(self.scale)):
            x = conv(self.features * r * r, 3, name=f"conv_{i}", dtype=self.dtype,
                     param_dtype=self.param_dtype)(x)
            x = pixel_shuffle(x, r)
        return x


def block_class(cls: type, remat: bool, scan: bool) -> type:
    """`cls`, wrapped in `nn.remat` when `remat` (inside a scan without CSE prevention, which the
    scan's loop boundary already gives)."""
    return nn.remat(cls, prevent_cse=not scan) if remat else cls


def repeat_blocks(make: Callable[[str], nn.Module], x: jax.Array, n: int, *, scan: bool,
                  name: str = "block") -> jax.Array:
    """Applies `n` blocks in sequence, x -> block_{n-1}(... block_0(x)); each maps (B, H, W, F)
    to the same shape. `make(module_name)` builds one (unbound) block.

    scan=False: `n` submodules `{name}_0` ... `{name}_{n-1}` (the program holds n copies).
    scan=True: one submodule `{name}s` run by `nn.scan` over parameters stacked on a new leading
    axis (leaves (n, ...)), so the program holds one copy of the block: much smaller pytrees
    and compile times, same numbers for the same weights. `jaxsr.models.stacking` converts
    between the two layouts. Each stacked block gets its own init key (split over the scan).
    """
    if n <= 0:
        return x
    if not scan:
        for i in range(n):
            x = make(f"{name}_{i}")(x)
        return x

    def body(block: nn.Module, carry: jax.Array, _: Any) -> tuple[jax.Array, None]:
        return block(carry), None

    y, _ = nn.scan(body, variable_axes={"params": 0}, split_rngs={"params": True},
                   length=n)(make(f"{name}s"), x, None)
    return y


def mean_shift(x: jax.Array, sign: int, mean: Sequence[float] = DIV2K_RGB_MEAN) -> jax.Array:
    """x + sign * mean over the RGB (last) axis; fixed constants, not parameters."""
    return x + sign * jnp.asarray(mean, dtype=x.dtype)


def count_params(tree: Any) -> int:
    """Number of scalars in a pytree of arrays or `jax.ShapeDtypeStruct`s (e.g. from eval_shape)."""
    return int(sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree)))
