"""Analytic FLOP counts and peak FLOP/s for model FLOP utilisation (MFU) in `benchmark.py`.

FLOPs are counted the way MFU is usually defined: 2 x the multiply-accumulates of the convolutions
and matrix products of one forward pass (elementwise work, norms, activations, pooling are not
counted), and a training step = 3 x forward (backward = grads w.r.t. activations + w.r.t.
weights). The MACs come from the model's own forward graph (`jax.make_jaxpr` of
`model.apply`, never compiled or run), so any registry model at any input size is counted; a
conv contributes out_elements x kernel_h x kernel_w x in_channels / groups, a dot_general
out_elements x contracted size; `lax.scan` bodies (scanned blocks) count `length` times, `cond`
its costliest branch, other sub-programs (jit, remat, custom_vjp) once.

    fwd = forward_flops(model, (B, h, w, 3))        # FLOPs of model.apply on that input
    step = train_step_flops(model, (B, h, w, 3))    # 3 * fwd
    xla_forward_flops(model, (B, h, w, 3))           # XLA's count of the same forward
    mfu(step * steps_per_s, peak_flops(device_kind, dtype))

`peak_flops` reads a table of dense peaks per device kind (`jax.devices()[0].device_kind`) and
compute dtype; unknown devices (CPU) give None, so MFU stays blank. float32 on NVIDIA Ampere and
later uses the TF32 tensor-core peak, since JAX (default matmul precision) and PyTorch
(`torch.backends.cudnn.allow_tf32`, on by default) both run float32 convolutions in TF32; on TPU
float32 uses the bf16 peak (default precision is one bf16 pass).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp

# (substring of the lower-cased device_kind, {dtype: peak dense TFLOP/s}, note). First match wins.
# 'float32' is what a float32 run gets (TF32 tensor cores on NVIDIA); 'fp32' the non-tensor-core
# peak, for reference (`peak_flops(kind, 'fp32')`).
PEAK_TFLOPS: tuple[tuple[str, dict[str, float], str], ...] = (
    ("h200", {"bfloat16": 989.0, "float16": 989.0, "float32": 495.0, "fp32": 67.0},
     "H200 SXM (same tensor cores as H100 SXM)"),
    ("h100 pcie", {"bfloat16": 756.0, "float16": 756.0, "float32": 378.0, "fp32": 51.2},
     "H100 PCIe"),
    ("h100", {"bfloat16": 989.0, "float16": 989.0, "float32": 495.0, "fp32": 67.0},
     "H100 SXM"),
    ("a100", {"bfloat16": 312.0, "float16": 312.0, "float32": 156.0, "fp32": 19.5},
     "A100 (SXM/PCIe)"),
    ("v6", {"bfloat16": 918.0, "float32": 918.0}, "TPU v6e"),
    ("v5 lite", {"bfloat16": 197.0, "float32": 197.0}, "TPU v5e"),
    ("v5e", {"bfloat16": 197.0, "float32": 197.0}, "TPU v5e"),
    ("v5", {"bfloat16": 459.0, "float32": 459.0}, "TPU v5p"),
    ("v4", {"bfloat16": 275.0, "float32": 275.0}, "TPU v4"),
)


def peak_flops(device_kind: str, dtype: str, override_tflops: float | None = None
               ) -> float | None:
    """Peak dense FLOP/s of one device of `device_kind` for compute `dtype` ('float32' means the
    TF32 tensor-core peak on NVIDIA, see the module doc); `override_tflops` (> 0) wins; None where
    unknown (CPU)."""
    if override_tflops:
        return float(override_tflops) * 1e12
    kind = device_kind.lower()
    for key, table, _ in PEAK_TFLOPS:
        if key in kind:
            tflops = table.get(dtype)
            return None if tflops is None else tflops * 1e12
    return None


def mfu(achieved_flops_per_s: float | None, peak: float | None) -> float | None:
    """achieved / peak (a fraction), None if either is unknown."""
    if not achieved_flops_per_s or not peak:
        return None
    return achieved_flops_per_s / peak


# ----------------------------------------------------------------------------- counting

def _conv_macs(eqn) -> int:
    out = eqn.outvars[0].aval.shape
    rhs = eqn.invars[1].aval.shape
    dn = eqn.params["dimension_numbers"]
    rhs_spec = dn.rhs_spec   # (out feature dim, in feature dim, *spatial dims)
    per_output = rhs[rhs_spec[1]] * math.prod(rhs[d] for d in rhs_spec[2:])
    # batch_group_count > 1 (weight gradients) splits the batch, not the per-output work.
    return math.prod(out) * per_output


def _dot_macs(eqn) -> int:
    out = eqn.outvars[0].aval.shape
    lhs = eqn.invars[0].aval.shape
    (lhs_contract, _), _ = eqn.params["dimension_numbers"]
    return math.prod(out) * math.prod(lhs[d] for d in lhs_contract)


def _sub_jaxprs(value: Any) -> list:
    from jax.extend import core as jcore
    if isinstance(value, jcore.ClosedJaxpr):
        return [value.jaxpr]
    if isinstance(value, jcore.Jaxpr):
        return [value]
    if isinstance(value, (tuple, list)):
        return [j for v in value for j in _sub_jaxprs(v)]
    return []


def jaxpr_macs(jaxpr) -> int:
    """Multiply-accumulates of the convolutions and dot products in a (closed) jaxpr."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "conv_general_dilated":
            total += _conv_macs(eqn)
        elif name == "dot_general":
            total += _dot_macs(eqn)
        else:
            subs = [j for v in eqn.params.values() for j in _sub_jaxprs(v)]
            if not subs:
                continue
            counts = [jaxpr_macs(j) for j in subs]
            if name == "cond":
                total += max(counts)
            elif name == "scan":
                total += int(eqn.params["length"]) * sum(counts)
            else:
                total += sum(counts)
    return total


def fn_flops(fn, *args: Any) -> int:
    """2 x conv/dot MACs of `fn(*args)`; args may be arrays or `jax.ShapeDtypeStruct`s."""
    return 2 * jaxpr_macs(jax.make_jaxpr(fn)(*args))


def forward_flops(model, input_shape: Sequence[int], dtype: Any = jnp.float32) -> int:
    """FLOPs (2 x MACs) of one `model.apply` on an input of `input_shape` (B, h, w, C)."""
    x = jax.ShapeDtypeStruct(tuple(input_shape), dtype)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    return fn_flops(model.apply, variables, x)


def xla_forward_flops(model, input_shape: Sequence[int], dtype: Any = jnp.float32,
                      ) -> float | None:
    """XLA's HLO cost analysis of the same forward (lowered, not compiled), a cross-check of
    `forward_flops`; None where the backend reports none. Scanned blocks are unrolled first
    (`scan_blocks=False`: XLA counts a loop body once). XLA also counts elementwise work and
    skips kernel taps that fall in the zero padding, so on small inputs it sits a few percent
    below `forward_flops` for 3x3-conv networks."""
    if hasattr(model, "scan_blocks"):
        model = model.clone(scan_blocks=False)
    x = jax.ShapeDtypeStruct(tuple(input_shape), dtype)
    try:
        variables = jax.eval_shape(model.init, jax.random.key(0), x)
        cost = jax.jit(model.apply).lower(variables, x).cost_analysis()
    except Exception:  # noqa: BLE001 - optional, backend dependent
        return None
    cost = cost[0] if isinstance(cost, (list, tuple)) and cost else cost
    value = cost.get("flops") if cost else None
    return float(value) if value and value > 0 else None


def train_step_flops(model, input_shape: Sequence[int], dtype: Any = jnp.float32) -> int:
    """FLOPs of one training step on a batch of `input_shape`: 3 x `forward_flops`."""
    return 3 * forward_flops(model, input_shape, dtype)
