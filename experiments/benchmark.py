"""Throughput / compile-time / memory benchmark of the real jaxsr training and inference steps.

Usage:
  python experiments/benchmark.py [--section=supervised|drtl|compare|pcl|crl|irconstyle|
      pipeline|tiled|compile|scale] \
      [--models=edsr,edsr_baseline,rcan,nafnet_w32,unet] [--scale=2] [--dtype=float32,bfloat16] \
      [--batch=16] [--patch=96] [--steps=20] [--warmup=3] [--infer_size=256x256] \
      [--out=bench.jsonl] [--model_kwargs='{"edsr": {"num_blocks": 1}}'] [--isolate]

At real scale, one command and one run (`--section=scale`, issue 14): jaxsr vs PyTorch of the
same networks (`compare`, images/s ratio and MFU), train-step compile time with unrolled vs
scanned blocks (`compile`, experiments/bench_compile.py), tiled x4 inference 1000x750 ->
4000x3000 with the host blend vs the device program (`tiled`, bench_inference.py), input
pipeline crops/s on 2K PNG pairs decoded per crop vs the decoded store (`pipeline`,
bench_pipeline.py, `--pipeline_pairs`), and the DRTL steps at K = 8 (P per task vs one backward
pass, M vmapped vs a Python loop over tasks); one table per part:

  python experiments/benchmark.py --section=scale --batch=16 --patch=192 --dtype=bfloat16

`--models`, `--scale`, `--dtype`, `--batch` and `--patch` take comma lists; every combination is
run. Each grid point gives one JSON row (printed, and appended to `--out` as JSON lines); a table
is printed at the end.

Section `supervised` measures exactly what `jaxsr.train.supervised` runs: the optimizer, loss and
EMA of configs/supervised.py, `make_train_step` (paired uint8 batches, no synthesis) jitted by
`compile_step` on a mesh of all devices (replicated, donated state; batch sharded over 'data'),
and `make_apply_fn` for inference. Model `edsr` is the small EDSR of configs/supervised.py
(4 blocks, 32 features, global residual); the other names are registry presets as published.

Row fields (status 'ok'; 'skipped' / 'error' rows carry `note` / `error` instead of numbers):
  section, model, scale, dtype, batch (global), patch (HR side), lr_patch, params,
  lower_s / compile_s        jit lowering and XLA compilation of the train step (timed apart)
  step_ms, steps_per_s, images_per_s, train_hr_mpix_per_s
                             mean over --steps steps after --warmup steps; the device is synced
                             only at the end of the timed window
  loss                       loss of the last timed step (a finite number shows a real run)
  train_gflops_per_step      XLA cost analysis of the compiled step (null if not reported)
  train_temp_bytes, train_argument_bytes
                             XLA memory analysis of the compiled step (null if not reported)
  infer_size, infer_batch, infer_compile_s, infer_ms, infer_mpix_per_s
                             `make_apply_fn` on (infer_batch, H, W, 3) LR inputs; megapixels
                             counted on the output (H*scale x W*scale)
  peak_bytes_in_use          max over local devices of `memory_stats()['peak_bytes_in_use']`
                             (GPU/TPU; null on CPU). It is the peak since the process started,
                             so in one process it only grows along the grid: use --isolate for
                             a per-point number.
  max_rss_bytes              the process's max resident set size (getrusage), same caveat
  backend, device_kind, num_devices, num_processes, jax_version, jaxlib_version,
  flax_version, flags (this script's flag values), time (UTC)

NAFNet models are scale 1 only: scale > 1 points are skipped with a note. An exception in one
grid point gives an 'error' row and the grid goes on.

Section `drtl` measures the DRTL transfer steps exactly as `jaxsr.methods.drtl.train` jits them:
  python experiments/benchmark.py --section=drtl --models=edsr --dtype=float32 --batch=2 \
      --patch=32 [--tasks=bicubic,gaussian_blur,gaussian_noise,jpeg] [--inner_steps=1] \
      [--variants=all] [--steps=3] [--warmup=1] [--isolate]
configs/drtl.py (scale 1: its 'same' mode, distortions at aux_scale 3; scale s > 1: its 'x{s}'
variant, LR = HR / s) with drtl.tasks = --tasks (K tasks), the optimizer
`with_extra_args_support(chain(relation_weighted_sum(uniform weights), transfer optim))`,
`make_pretrain_step` / `make_meta_step` under `compile_step` (replicated, donated state;
aux_hr (K, b, P, P, 3) sharded over its batch axis, target_lr/hr over axis 0), random uint8
batches. `--batch` is per task; DRTL-M draws 2 x batch per task (support and query halves), as
the pipeline does. Model `edsr` is the config's small EDSR (4 blocks, 32 features, global
residual). Variants (`--variants`: 'all', groups P, M, M1, M2, or names):
  P-vmap, P-map, P-unroll
                       DRTL-P step with K per-task gradients (drtl.weighted_backward
                       'per_task'), drtl.task_map 'vmap' | 'map' (lax.map) | 'unroll'
                       (K task graphs in one jitted program)
  P-single             DRTL-P step, drtl.weighted_backward 'single' (what 'auto', the default,
                       picks on GPU/TPU): one forward and backward pass of sum_k w_k L_k over
                       all K*B samples
  P-loop               baseline without vmap: K jitted per-task (synthesis + value_and_grad)
                       calls, then one jitted stack + relation-weighted sum + optimizer + EMA
                       update (state donated); same numbers as the real step
  M2-loop              the same baseline for DRTL-M: K jitted per-task calls of the second-order
                       meta-gradient (maml.hvp_meta_grad: support/query halves, inner SGD steps,
                       HVP backward pass), then the one jitted update; same numbers as M2-vmap
  M2-*, M2ad-*, M1-*   DRTL-M step: second order with meta.hessian 'hvp' (M2, the default:
                       explicit backward pass with Hessian-vector products) or 'autodiff'
                       (M2ad: grad through the scanned inner loop, meta.remat off | on
                       '-remat'), or first order (M1, meta.first_order); each with task_map
                       vmap | map | unroll; meta.num_inner_steps = --inner_steps
drtl row fields (besides section, model, scale, dtype, batch (per task), patch, status):
  variant, pipeline ('pretrain' | 'meta'), task_map ('vmap' | 'map' | 'unroll' | 'loop'),
  first_order, remat, hessian ('hvp' | 'autodiff'; null for DRTL-P), inner_steps (null for
  DRTL-P), K, tasks, per_task_batch (images per task per step), lr_patch, mode, aux_scale,
  params, executables (1, or K + 1 for the loop)
  lower_s / compile_s        summed over the executables (the loop compiles K + 1)
  step_ms, steps_per_s       mean over --steps steps after --warmup, synced at the window ends
  tasks_per_s                K * steps_per_s
  images_per_s               K * per_task_batch * steps_per_s (HR crops through the step)
  loss, grad_norm            relation-weighted loss and norm of the relation-weighted
                             (meta-)gradient of the last timed step
  train_gflops_per_step      XLA cost analysis (summed over the loop's executables); for
                             task_map 'map' XLA counts the lax.map body once, i.e. about 1/K
                             of the step's FLOPs
  train_temp_bytes, train_argument_bytes
                             XLA memory analysis (max over the loop's executables): a
                             per-variant number even without --isolate
  peak_bytes_in_use, max_rss_bytes, and the environment fields, as above. --isolate runs each
  point and variant in its own process (per-variant peak memory on GPU).

Sections `pcl`, `crl`, `irconstyle` time a method's real jitted training step against an L1
step of the same network (the method's overhead), each from its module in experiments/:
  python experiments/benchmark.py --section=pcl [--method_variant=rcan] --batch=8 --patch=64 \
      --steps=10 --warmup=2             # bench_pcl.py: kind l1 | pcl, step_ms, ratio_to_l1
  python experiments/benchmark.py --section=crl [--method_variant=x4] --steps=20 \
      --infer_size=128x128              # bench_crl.py: ms_per_step, relative, inference MP/s
  python experiments/benchmark.py --section=irconstyle [--method_variant=denoise25] --steps=10 \
      --infer_size=256x256              # bench_irconstyle.py: ConStyle-NAFNet phases 1 and 2 vs
                                        # NAFNet of the same size, step ms, inference MP/s, memory
Their rows carry the fields those modules document, plus the environment fields.

Section `compare` puts jaxsr's training step beside the PyTorch step of the same network
(experiments/torch_models.py: EDSR, RCAN, NAFNet written layer for layer like jaxsr's, same
parameter count and outputs) in one run, with model FLOP utilisation:
  python experiments/benchmark.py --section=compare [--models=edsr_baseline,rcan,nafnet_w32] \
      [--scale=2] [--dtype=float32,bfloat16] [--batch=16] [--patch=96] [--steps=20] [--warmup=3] \
      [--torch_compile] [--torch_device=auto] [--peak_tflops=0] [--isolate] [--out=cmp.jsonl]
  (smoke run on CPU: --models=edsr_baseline --dtype=float32 --batch=2 --patch=32 --steps=2
   --warmup=1; PyTorch from `pip install -e .[bench]` or `pip install torch`)
Per point (NAFNet runs at scale 1 whatever --scale says): the jaxsr step is the `supervised`
section's (registry preset, --model_kwargs on top, no global residual; configs/supervised.py's
Adam, L1 loss and EMA, uint8 batch converted on device); the PyTorch step takes the same uint8
batch, L1 loss + Adam (same lr/betas/eps; fused on CUDA) + the same EMA (torch._foreach_lerp_),
channels_last, `torch.autocast` to bf16/fp16 for --dtype=bfloat16/float16 (float32 weights and
loss, like jaxsr), cudnn.benchmark on, --torch_compile compiles the network. PyTorch runs first
(its cache emptied after), then jaxsr; JAX's GPU preallocation is switched off for this section
(XLA_PYTHON_CLIENT_PREALLOCATE=false unless set) so both fit. Each side: untimed warmup steps
(PyTorch at least 1), then --steps timed steps synced at the window ends.
compare row fields (besides section, model, scale, dtype, batch, patch, status, environment):
  lr_patch, params, torch_params   trainable parameters of each side (they must agree)
  fwd_gflops_per_image       analytic forward FLOPs of one LR patch (flops.py: 2 x conv/dot MACs)
  train_gflops_per_step      analytic training-step FLOPs = 3 x forward x batch
  xla_fwd_gflops_per_image   XLA's HLO cost analysis of the same forward, blocks unrolled
                             (cross-check of fwd_gflops_per_image: it adds elementwise work and
                             skips taps in the zero padding, so it sits a few % apart)
  xla_gflops_per_step        XLA cost analysis of the compiled jaxsr step (counts the body of
                             scanned blocks once: far below the real count for scanned models)
  peak_tflops, peak_source   peak dense TFLOP/s of the device for --dtype (flops.PEAK_TFLOPS by
                             device_kind, float32 = TF32 on NVIDIA; 'flag' for --peak_tflops;
                             null on CPU: MFU blank)
  jax_lower_s, jax_compile_s, jax_step_ms, jax_images_per_s, jax_tflops_per_s, jax_mfu,
  jax_loss, jax_peak_bytes (device peak_bytes_in_use, null on CPU), jax_temp_bytes,
  jax_argument_bytes (XLA memory analysis)
  torch_status               'ok', 'torch not installed' or 'error: ...' (then no torch numbers)
  torch_version, torch_device, torch_device_name, torch_compile, torch_first_step_s (first
  step: cudnn autotuning, and compilation with --torch_compile), torch_step_ms,
  torch_images_per_s, torch_tflops_per_s, torch_mfu, torch_loss,
  torch_peak_bytes, torch_peak_kind ('cuda_max_allocated' | 'max_rss': process max RSS on CPU)
  ratio_jax_over_torch       jax_images_per_s / torch_images_per_s (> 1: jaxsr faster)
  max_rss_bytes              process max RSS after both sides
A markdown table follows the JSON lines.

Adding a section: write `def my_section(cfg: Settings) -> list[dict]` (use `grid(cfg)` and
`guarded(...)` to keep one row per point and errors contained) and add it to SECTIONS.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import gc
import importlib.util
import itertools
import json
import math
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[1]
EXPERIMENTS = pathlib.Path(__file__).resolve().parent
if str(EXPERIMENTS) not in sys.path:   # sibling modules (flops, torch_models, bench_*) by name
    sys.path.insert(0, str(EXPERIMENTS))
try:
    import jaxsr  # noqa: F401
except ImportError:  # run as a script from a checkout without installing
    sys.path.insert(0, str(REPO))

import flops  # noqa: E402
import ml_collections  # noqa: E402

from jaxsr import models  # noqa: E402
from jaxsr.degradations import get_task, synthesize  # noqa: E402
from jaxsr.methods.drtl import steps as drtl_steps  # noqa: E402
from jaxsr.methods.drtl.maml import hvp_meta_grad  # noqa: E402
from jaxsr.methods.drtl.reweight import (TASK_MAPS, get_weights,  # noqa: E402
                                         relation_weighted_sum, uniform_weights, weighted_sum)
from jaxsr.model_factory import build_model, init_params  # noqa: E402
from jaxsr.pixels import to_float  # noqa: E402
from jaxsr.train import mesh as mesh_lib  # noqa: E402
from jaxsr.train import steps as train_steps  # noqa: E402
from jaxsr.train.optim import make_optimizer  # noqa: E402
from jaxsr.train.state import apply_update, create_state, step_key  # noqa: E402

DEFAULT_MODELS = ["edsr", "edsr_baseline", "rcan", "nafnet_w32", "unet"]
COMPARE_MODELS = ("edsr_baseline", "rcan", "nafnet_w32")   # --section=compare without --models
DRTL_DEFAULT_TASKS = ("bicubic", "gaussian_blur", "gaussian_noise", "jpeg")
SCALE1_ONLY = (models.NAFNet,)   # model classes that only restore (output size = input size)

_SECTION = flags.DEFINE_string("section", "supervised",
                               "What to benchmark: 'supervised' (the supervised trainer's step), "
                               "'drtl' (the DRTL-P / DRTL-M transfer steps), 'compare' (jaxsr "
                               "vs PyTorch train step of the same network, with MFU), or a "
                               "method's step against an L1 step of the same network: 'pcl', "
                               "'crl', 'irconstyle'.")
_MODELS = flags.DEFINE_list("models", DEFAULT_MODELS,
                            "Comma list of model registry names (compare: default "
                            f"{','.join(COMPARE_MODELS)}).")
_BATCH = flags.DEFINE_list("batch", ["16"], "Comma list of global batch sizes.")
_PATCH = flags.DEFINE_list("patch", ["96"], "Comma list of HR patch sides (divisible by scale).")
_SCALE = flags.DEFINE_list("scale", ["2"], "Comma list of scales (1-4; NAFNet 1 only).")
_DTYPE = flags.DEFINE_list("dtype", ["float32", "bfloat16"],
                           "Comma list of compute dtypes (float32, bfloat16, float16).")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed train steps per point.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed train steps before the timed window.")
_INFER_SIZE = flags.DEFINE_string("infer_size", "256x256",
                                  "LR input HxW for inference ('' or 0 = skip inference).")
_INFER_BATCH = flags.DEFINE_integer("infer_batch", 1, "Images per inference call.")
_INFER_STEPS = flags.DEFINE_integer("infer_steps", 3, "Timed inference calls (after 1 untimed).")
_MODEL_KWARGS = flags.DEFINE_string(
    "model_kwargs", "",
    'JSON {model name: {field: value}} overriding model fields, e.g. '
    '\'{"edsr": {"num_blocks": 1, "features": 8}}\'; the key "global_residual" sets '
    "config.model.global_residual.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed for parameters and the random batch.")
_OUT = flags.DEFINE_string("out", "", "JSON-lines file the rows are appended to ('' = none).")
_TASKS = flags.DEFINE_list("tasks", list(DRTL_DEFAULT_TASKS),
                           "drtl: comma list of auxiliary distortion task names (K = their count).")
_INNER_STEPS = flags.DEFINE_integer("inner_steps", 1, "drtl: MAML inner SGD steps (DRTL-M).")
_VARIANTS = flags.DEFINE_list(
    "variants", ["all"],
    "drtl: which step variants: 'all', groups P / M / M1 (first order) / M2 (second order) / "
    "M2ad (second order by autodiff), or names P-vmap, P-unroll, P-loop, M2-vmap, M2-unroll, "
    "M2ad-vmap-remat, M1-map, ...")
_METHOD_VARIANT = flags.DEFINE_string(
    "method_variant", "",
    "pcl / crl / irconstyle: variant of configs/<method>.py ('' = pcl's default, crl 'x2', "
    "irconstyle 'derain'). These sections take --steps, --warmup (pcl), the first --batch and "
    "--patch (pcl) and --infer_size (crl, irconstyle: the square side).")
_TORCH_COMPILE = flags.DEFINE_bool("torch_compile", False,
                                   "compare: torch.compile the PyTorch network (its first step, "
                                   "torch_first_step_s, then includes the compilation).")
_TORCH_DEVICE = flags.DEFINE_string("torch_device", "auto",
                                    "compare: PyTorch device: 'auto' (cuda when JAX runs on a GPU "
                                    "and torch sees one, else cpu), 'cuda' or 'cpu'.")
_PIPELINE_PAIRS = flags.DEFINE_integer("pipeline_pairs", 200, "pipeline / scale: synthetic 2K "
                                      "PNG pairs (DIV2K has 800).")
_TILED_SIZES = flags.DEFINE_string("tiled_sizes", "1000x750", "tiled / scale: input sizes WxH, "
                                   "comma separated (x4: 1000x750 -> 4000x3000).")
_PEAK_TFLOPS = flags.DEFINE_float("peak_tflops", 0.0,
                                  "compare: peak dense TFLOP/s of one device for MFU (0 = the "
                                  "table in experiments/flops.py by device kind and dtype; none "
                                  "for CPU, so MFU stays blank there).")
_ISOLATE = flags.DEFINE_bool("isolate", False,
                             "Run every grid point in a fresh process (per-point peak memory).")

_GRID_FLAGS = ("models", "scale", "dtype", "batch", "patch")


@dataclasses.dataclass(frozen=True)
class Settings:
    """What to run: the grid lists and the per-point knobs (mirrors the flags)."""
    section: str = "supervised"
    models: tuple[str, ...] = tuple(DEFAULT_MODELS)
    scales: tuple[int, ...] = (2,)
    dtypes: tuple[str, ...] = ("float32", "bfloat16")
    batches: tuple[int, ...] = (16,)
    patches: tuple[int, ...] = (96,)
    steps: int = 20
    warmup: int = 3
    infer_size: tuple[int, int] | None = (256, 256)
    infer_batch: int = 1
    infer_steps: int = 3
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    seed: int = 0
    tasks: tuple[str, ...] = DRTL_DEFAULT_TASKS     # drtl only
    inner_steps: int = 1                            # drtl only
    variants: tuple[str, ...] = ("all",)            # drtl only
    method_variant: str = ""                        # pcl / crl / irconstyle only
    torch_compile: bool = False                     # compare only
    torch_device: str = "auto"                      # compare only
    peak_tflops: float = 0.0                        # compare only (0 = flops.PEAK_TFLOPS)


@dataclasses.dataclass(frozen=True)
class Point:
    """One grid point."""
    model: str
    scale: int
    dtype: str
    batch: int
    patch: int


def grid(cfg: Settings) -> Iterator[Point]:
    for m, s, d, b, p in itertools.product(cfg.models, cfg.scales, cfg.dtypes, cfg.batches,
                                           cfg.patches):
        yield Point(m, s, d, b, p)


# ----------------------------------------------------------------------------- helpers

def parse_size(text: str) -> tuple[int, int] | None:
    """'256x256' / '256' -> (256, 256); '' / '0' -> None (no inference)."""
    text = text.strip().lower()
    if text in ("", "0", "none"):
        return None
    parts = text.split("x")
    try:
        h, w = (int(parts[0]), int(parts[0])) if len(parts) == 1 else map(int, parts)
    except ValueError:
        raise ValueError(f"--infer_size={text!r} is not HxW; use e.g. --infer_size=256x256"
                         ) from None
    if h <= 0 or w <= 0:
        raise ValueError(f"--infer_size={text!r} must be positive; use e.g. 256x256")
    return h, w


def _ints(name: str, values: list[str]) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in values)
    except ValueError:
        raise ValueError(f"--{name}={','.join(values)} must be a comma list of integers") from None


def settings_from_flags() -> Settings:
    kwargs = json.loads(_MODEL_KWARGS.value) if _MODEL_KWARGS.value.strip() else {}
    if not isinstance(kwargs, dict) or not all(isinstance(v, dict) for v in kwargs.values()):
        raise ValueError('--model_kwargs must be a JSON object {model: {field: value}}, e.g. '
                         '\'{"edsr": {"num_blocks": 1}}\'')
    model_names = tuple(_MODELS.value)
    if _SECTION.value == "compare" and not flags.FLAGS["models"].present:
        model_names = COMPARE_MODELS
    return Settings(
        section=_SECTION.value, models=model_names, scales=_ints("scale", _SCALE.value),
        dtypes=tuple(_DTYPE.value), batches=_ints("batch", _BATCH.value),
        patches=_ints("patch", _PATCH.value), steps=_STEPS.value, warmup=_WARMUP.value,
        infer_size=parse_size(_INFER_SIZE.value), infer_batch=_INFER_BATCH.value,
        infer_steps=_INFER_STEPS.value, model_kwargs=kwargs, seed=_SEED.value,
        tasks=tuple(_TASKS.value), inner_steps=_INNER_STEPS.value,
        variants=tuple(_VARIANTS.value), method_variant=_METHOD_VARIANT.value,
        torch_compile=_TORCH_COMPILE.value, torch_device=_TORCH_DEVICE.value,
        peak_tflops=_PEAK_TFLOPS.value)


def load_config(name: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """`get_config(arg)` of configs/<name>.py (the trainer's config file)."""
    path = REPO / "configs" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_jaxsr_bench_config_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def environment() -> dict[str, Any]:
    import flax
    import jaxlib
    dev = jax.devices()[0]
    return {"backend": jax.default_backend(), "device_kind": dev.device_kind,
            "num_devices": jax.device_count(), "num_processes": jax.process_count(),
            "jax_version": jax.__version__, "jaxlib_version": jaxlib.__version__,
            "flax_version": flax.__version__}


def peak_device_bytes() -> int | None:
    """Max `peak_bytes_in_use` over local devices, or None where the backend reports none."""
    peaks = []
    for dev in jax.local_devices():
        try:
            stats = dev.memory_stats()
        except Exception:  # noqa: BLE001 - some backends raise instead of returning None
            stats = None
        if stats and "peak_bytes_in_use" in stats:
            peaks.append(int(stats["peak_bytes_in_use"]))
    return max(peaks) if peaks else None


def max_rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)   # Linux reports KiB


def compiled_stats(compiled) -> dict[str, float | None]:
    """FLOPs and memory of a compiled executable as XLA reports them (None where it does not)."""
    out = {"gflops": None, "temp_bytes": None, "argument_bytes": None}
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        if cost and cost.get("flops", -1) > 0:
            out["gflops"] = float(cost["flops"]) / 1e9
    except Exception:  # noqa: BLE001 - optional, backend dependent
        pass
    try:
        mem = compiled.memory_analysis()
        if mem is not None:
            out["temp_bytes"] = int(mem.temp_size_in_bytes)
            out["argument_bytes"] = int(mem.argument_size_in_bytes)
    except Exception:  # noqa: BLE001
        pass
    return out


def point_row(section: str, p: Point, **fields: Any) -> dict[str, Any]:
    return {"section": section, "model": p.model, "scale": p.scale, "dtype": p.dtype,
            "batch": p.batch, "patch": p.patch, **fields}


def guarded(section: str, p: Point, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """fn() -> row fields; an exception becomes an 'error' row (printed), and the grid goes on."""
    try:
        return point_row(section, p, status="ok", **fn())
    except Exception as e:  # noqa: BLE001 - one bad point must not end the grid
        traceback.print_exc(file=sys.stderr)
        msg = f"{type(e).__name__}: {e}"
        print(f"error: {section} {p.model} x{p.scale} {p.dtype} b{p.batch} p{p.patch}: "
              f"{msg.splitlines()[0][:300]}", flush=True)
        return point_row(section, p, status="error", error=msg[:2000])
    finally:
        gc.collect()


def skip_reason(p: Point) -> str | None:
    """Why a grid point cannot run (None = it can)."""
    try:
        cls = models.registry.get(p.model).cls
    except ValueError:
        return None   # unknown names fail inside the point, as an error row
    if p.scale != 1 and issubclass(cls, SCALE1_ONLY):
        return (f"{p.model} is a restoration model (scale 1 only); skipping scale {p.scale}. "
                "Run it with --scale=1.")
    return None


# ----------------------------------------------------------------------------- supervised

def supervised_model_config(base: ml_collections.ConfigDict, p: Point, cfg: Settings,
                            ) -> ml_collections.ConfigDict:
    """The trainer config for one point: configs/supervised.py with model/data/steps replaced.

    `edsr` keeps the config file's small EDSR (kwargs, global residual); other names are the
    registry presets (no kwargs, no global residual, as in the ':paper' variant).
    """
    config = ml_collections.ConfigDict(base.to_dict())
    set_point_model(config, base, p, cfg)
    config.data.batch_size = p.batch
    config.data.hr_patch = p.patch
    config.train.num_steps = cfg.warmup + cfg.steps
    return config


def set_point_model(config: ml_collections.ConfigDict, base: ml_collections.ConfigDict, p: Point,
                    cfg: Settings) -> None:
    """config.model for point `p`: the config file's model when `p.model` is its model name
    (its kwargs and global residual), else the registry preset (no kwargs, no global residual);
    then `--model_kwargs` of `p.model` on top ("global_residual" sets config.model.global_residual).
    """
    overrides = dict(cfg.model_kwargs.get(p.model, {}))
    if p.model != base.model.name:
        config.model.kwargs = {}
        config.model.global_residual = False
    config.model.global_residual = bool(overrides.pop("global_residual",
                                                      config.model.global_residual))
    config.model.kwargs = {**dict(config.model.kwargs), **overrides}
    config.model.name = p.model
    config.model.scale = p.scale
    config.model.dtype = p.dtype


def random_batch(rng: np.random.Generator, batch: int, hr: int, lr: int) -> dict[str, np.ndarray]:
    """This process's share of a paired uint8 batch {'lr': (b, lr, lr, 3), 'hr': (b, hr, hr, 3)}."""
    local = batch // jax.process_count()
    return {"lr": rng.integers(0, 256, (local, lr, lr, 3), dtype=np.uint8),
            "hr": rng.integers(0, 256, (local, hr, hr, 3), dtype=np.uint8)}


def bench_supervised_point(p: Point, cfg: Settings, base: ml_collections.ConfigDict,
                           ) -> dict[str, Any]:
    if p.patch % p.scale:
        raise ValueError(f"--patch={p.patch} is not divisible by --scale={p.scale}; "
                         f"use a multiple of {p.scale}")
    config = supervised_model_config(base, p, cfg)
    mesh = mesh_lib.make_mesh()
    mesh_lib.check_batch_size(p.batch, mesh, what="--batch")
    lr_patch = p.patch // p.scale
    model = build_model(config.model)
    params = init_params(model, jax.random.key(cfg.seed), lr_patch)
    n_params = models.count_params(params)
    optimizer, _ = make_optimizer(config.optim, config.train.num_steps)
    state_sharding = mesh_lib.replicated(mesh)
    state = jax.device_put(create_state(params, optimizer, cfg.seed), state_sharding)
    del params
    rng = np.random.default_rng(cfg.seed)
    batch = mesh_lib.put_global_batch(random_batch(rng, p.batch, p.patch, lr_patch), mesh)

    step_fn = train_steps.make_train_step(model, optimizer, loss_kind=config.train.loss,
                                         ema_decay=config.train.ema_decay)
    step = train_steps.compile_step(step_fn, mesh, state_sharding)
    t0 = time.perf_counter()
    lowered = step.lower(state, batch)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    stats = compiled_stats(compiled)

    metrics = None
    for _ in range(cfg.warmup):
        state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    t3 = time.perf_counter()
    for _ in range(cfg.steps):
        state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    train_s = time.perf_counter() - t3
    loss = float(jax.device_get(metrics["loss"])) if metrics is not None else None

    row: dict[str, Any] = {
        "lr_patch": lr_patch, "params": n_params,
        "lower_s": t1 - t0, "compile_s": t2 - t1,
        "step_ms": 1e3 * train_s / cfg.steps, "steps_per_s": cfg.steps / train_s,
        "images_per_s": cfg.steps * p.batch / train_s,
        "train_hr_mpix_per_s": cfg.steps * p.batch * p.patch ** 2 / train_s / 1e6,
        "loss": loss, "train_gflops_per_step": stats["gflops"],
        "train_temp_bytes": stats["temp_bytes"], "train_argument_bytes": stats["argument_bytes"],
    }
    del compiled, lowered, batch
    if cfg.infer_size is not None:
        row.update(bench_inference(model, mesh, state.params, p.scale, cfg))
    del state
    row["peak_bytes_in_use"] = peak_device_bytes()
    row["max_rss_bytes"] = max_rss_bytes()
    return row


def bench_inference(model, mesh, params, scale: int, cfg: Settings) -> dict[str, Any]:
    """`make_apply_fn` throughput on (infer_batch, H, W, 3) inputs; megapixels of the output."""
    h, w = cfg.infer_size
    n = cfg.infer_batch
    x = np.random.default_rng(cfg.seed + 1).random((n, h, w, 3), dtype=np.float32)
    sharding = (mesh_lib.batch_sharding(mesh) if n % mesh.devices.size == 0
                else mesh_lib.replicated(mesh))
    x = jax.device_put(x, sharding)
    apply = train_steps.make_apply_fn(model, mesh)
    t0 = time.perf_counter()
    compiled = apply.lower(params, x).compile()
    compile_s = time.perf_counter() - t0
    y = compiled(params, x)
    jax.block_until_ready(y)
    if y.shape != (n, h * scale, w * scale, 3):
        raise RuntimeError(f"inference output shape {y.shape} != {(n, h * scale, w * scale, 3)}")
    t1 = time.perf_counter()
    for _ in range(cfg.infer_steps):
        y = compiled(params, x)
    jax.block_until_ready(y)
    dt = time.perf_counter() - t1
    return {"infer_size": f"{h}x{w}", "infer_batch": n, "infer_compile_s": compile_s,
            "infer_ms": 1e3 * dt / cfg.infer_steps,
            "infer_mpix_per_s": cfg.infer_steps * n * h * w * scale ** 2 / dt / 1e6}


def supervised_section(cfg: Settings) -> list[dict[str, Any]]:
    """One row per grid point for the supervised trainer's step."""
    base = load_config("supervised")
    rows = []
    for p in grid(cfg):
        reason = skip_reason(p)
        if reason:
            print(f"note: {reason}", flush=True)
            rows.append(point_row("supervised", p, status="skipped", note=reason))
            continue
        print(f"running: supervised {p.model} x{p.scale} {p.dtype} batch {p.batch} "
              f"patch {p.patch}", flush=True)
        rows.append(guarded("supervised", p,
                            lambda p=p: bench_supervised_point(p, cfg, base)))
    return rows


# ----------------------------------------------------------------------------- drtl

@dataclasses.dataclass(frozen=True)
class DrtlVariant:
    """One way of computing the DRTL transfer step.

    pipeline: 'pretrain' (DRTL-P) or 'meta' (DRTL-M). task_map: 'vmap' | 'map' | 'unroll'
    (config drtl.task_map of the real step) or 'loop' (the Python-loop baseline: P-loop, and
    M2-loop with hessian 'hvp').
    first_order / remat / hessian: meta.first_order / remat / hessian (None for DRTL-P).
    backward: drtl.weighted_backward of DRTL-P ('per_task': K gradients through the
    relation-weighted transform; 'single': one backward pass of the weighted loss).
    """
    name: str
    pipeline: str
    task_map: str
    first_order: bool | None = None
    remat: bool | None = None
    hessian: str | None = None
    backward: str = "per_task"


DRTL_VARIANTS: tuple[DrtlVariant, ...] = (
    *(DrtlVariant(f"P-{m}", "pretrain", m) for m in (*TASK_MAPS, "loop")),
    DrtlVariant("P-single", "pretrain", "vmap", backward="single"),
    *(DrtlVariant(f"M2-{m}", "meta", m, False, False, "hvp") for m in (*TASK_MAPS, "loop")),
    *(DrtlVariant(f"M2ad-{m}{'-remat' if r else ''}", "meta", m, False, r, "autodiff")
      for r in (False, True) for m in TASK_MAPS),
    *(DrtlVariant(f"M1-{m}", "meta", m, True, False, "hvp") for m in TASK_MAPS),
)


def select_variants(items: tuple[str, ...]) -> tuple[DrtlVariant, ...]:
    """DRTL variants named by `--variants` items, in DRTL_VARIANTS order.

    An item is a variant name ('P-loop', 'M2ad-map-remat'), a group ('P', 'M', 'M1' = first
    order, 'M2' = second order (hvp and autodiff), 'M2ad' = second order by autodiff) or 'all'.
    """
    names = [v.name for v in DRTL_VARIANTS]
    chosen = set()
    for item in items:
        group = item in ("P", "M", "M1", "M2", "M2ad")
        hits = {n for n in names
                if item in ("all", n) or group and n.split("-")[0].startswith(item)}
        if not hits:
            raise ValueError(f"--variants item {item!r} is unknown; use 'all', a group (P, M, M1, "
                             f"M2) or names from {', '.join(names)}")
        chosen |= hits
    return tuple(v for v in DRTL_VARIANTS if v.name in chosen)


def drtl_point_config(base: ml_collections.ConfigDict, p: Point, v: DrtlVariant, cfg: Settings,
                      ) -> ml_collections.ConfigDict:
    """configs/drtl.py for one point and variant: model as in `set_point_model`, tasks,
    task_map, meta.first_order / remat / num_inner_steps, batch per task and patch."""
    config = ml_collections.ConfigDict(base.to_dict())
    set_point_model(config, base, p, cfg)
    config.drtl.pipeline = v.pipeline
    config.drtl.tasks = tuple(cfg.tasks)
    config.drtl.shard = "batch"
    if v.task_map != "loop":
        config.drtl.task_map = v.task_map
    config.drtl.weighted_backward = v.backward
    if v.pipeline == "meta":
        config.meta.first_order = bool(v.first_order)
        config.meta.remat = bool(v.remat)
        config.meta.hessian = v.hessian
        config.meta.num_inner_steps = cfg.inner_steps
    config.data.batch_size = p.batch
    config.data.hr_patch = p.patch
    config.transfer.num_steps = cfg.warmup + cfg.steps
    return config


def drtl_shardings(mesh) -> dict[str, Any]:
    """The transfer phase's batch shardings (drtl.shard='batch'): aux over its batch axis 1."""
    return {"aux_hr": mesh_lib.batch_sharding(mesh, 1),
            "target_lr": mesh_lib.batch_sharding(mesh),
            "target_hr": mesh_lib.batch_sharding(mesh)}


def drtl_random_batch(rng: np.random.Generator, k: int, per_task: int, batch: int, hr: int,
                      lr: int) -> dict[str, np.ndarray]:
    """This process's share of a joint DRTL batch: aux_hr uint8 (K, per_task, hr, hr, 3),
    target_lr (batch, lr, lr, 3), target_hr (batch, hr, hr, 3)."""
    n = jax.process_count()
    return {"aux_hr": rng.integers(0, 256, (k, per_task // n, hr, hr, 3), dtype=np.uint8),
            "target_lr": rng.integers(0, 256, (batch // n, lr, lr, 3), dtype=np.uint8),
            "target_hr": rng.integers(0, 256, (batch // n, hr, hr, 3), dtype=np.uint8)}


def make_loop_baseline(model, optimizer, config: ml_collections.ConfigDict,
                       names: list[str], mesh, pipeline: str = "pretrain"):
    """DRTL without vmap: K jitted per-task `(state, aux_hr_k (B, P, P, 3)) -> (loss, grads)`
    (task k synthesized with the k-th of K keys split from the step key, as `synthesize_tasks`
    does) and one jitted `(state, losses, grads) -> (state, metrics)` that stacks the K
    gradients, applies the relation-weighted optimizer and EMA (state donated).

    pipeline 'pretrain' (P-loop): each call is `value_and_grad` of the task's loss; same numbers
    as `make_pretrain_step`. 'meta' (M2-loop): each call is the task's MAML query loss and
    meta-gradient, `maml.hvp_meta_grad` (what `meta_grads` maps over the tasks for
    meta.hessian='hvp') on the support (first) and query (second) halves of the task's batch,
    meta.inner_lr / num_inner_steps / first_order; same numbers as `make_meta_step`. Both in
    embedding/uniform relation mode (the weights are read, not refreshed)."""
    loss_fn = drtl_steps.sr_loss(model, config.train.loss)
    k_total, aux_scale, mode = len(names), config.drtl.aux_scale, config.drtl.mode
    rep = mesh_lib.replicated(mesh)
    if pipeline not in ("pretrain", "meta"):
        raise ValueError(f"make_loop_baseline: pipeline={pipeline!r}; use 'pretrain' or 'meta'")
    mc = config.meta

    def task_grad(k: int):
        def grad_k(state, aux_k):
            key = jax.random.split(step_key(state), k_total)[k]
            hr = to_float(aux_k)
            lr = synthesize(names[k], key, hr, aux_scale, mode)
            batch = {"lr": lr, "hr": hr}
            if pipeline == "pretrain":
                return jax.value_and_grad(loss_fn)(state.params, batch)
            half = hr.shape[0] // 2   # as drtl_steps.split_support_query, per task
            support = jax.tree.map(lambda x: x[:half], batch)
            query = jax.tree.map(lambda x: x[half:], batch)
            return hvp_meta_grad(loss_fn, state.params, support, query,
                                 inner_lr=mc.inner_lr, num_inner_steps=mc.num_inner_steps,
                                 first_order=mc.first_order)
        return jax.jit(grad_k, in_shardings=(rep, mesh_lib.batch_sharding(mesh)),
                       out_shardings=rep)

    def update(state, losses, grads):
        grads = jax.tree.map(lambda *g: jnp.stack(g), *grads)
        losses = jnp.stack(losses)
        w = get_weights(state.opt_state)
        loss = jnp.sum(w * losses)
        new_state = apply_update(state, grads, loss, optimizer, config.train.ema_decay)
        return new_state, {"loss": loss, "task_loss": losses, "weight": w,
                           "grad_norm": optax.tree.norm(weighted_sum(grads, w))}

    return ([task_grad(k) for k in range(k_total)],
            jax.jit(update, in_shardings=(rep, rep, rep), out_shardings=(rep, rep),
                    donate_argnums=0))


def _timed_loop(run_step: Callable, state, cfg: Settings):
    """`cfg.warmup` then `cfg.steps` calls of run_step(state) -> (state, metrics); seconds of the
    timed window (device synced only at its ends)."""
    metrics = None
    for _ in range(cfg.warmup):
        state, metrics = run_step(state)
    jax.block_until_ready((state, metrics))
    t0 = time.perf_counter()
    for _ in range(cfg.steps):
        state, metrics = run_step(state)
    jax.block_until_ready((state, metrics))
    return state, metrics, time.perf_counter() - t0


def bench_drtl_point(p: Point, v: DrtlVariant, cfg: Settings, base: ml_collections.ConfigDict,
                     ) -> dict[str, Any]:
    config = drtl_point_config(base, p, v, cfg)
    names = list(config.drtl.tasks)
    if not names:
        raise ValueError("--tasks is empty; give distortion task names, e.g. "
                         "--tasks=bicubic,gaussian_blur")
    for n in names:
        get_task(n)   # unknown names fail here with close matches
    k = len(names)
    aux_scale, mode = int(config.drtl.aux_scale), config.drtl.mode
    if p.patch % p.scale or p.patch % aux_scale:
        raise ValueError(f"--patch={p.patch} must be divisible by the scale {p.scale} and the "
                         f"distortions' aux_scale {aux_scale} (configs/drtl.py, mode {mode!r}); "
                         f"use a multiple of {math.lcm(p.scale, aux_scale)}")
    mesh = mesh_lib.make_mesh()
    mesh_lib.check_batch_size(p.batch, mesh, what="--batch (per task)")
    lr_patch = p.patch // p.scale
    model = build_model(config.model)
    params = init_params(model, jax.random.key(cfg.seed), lr_patch)
    n_params = models.count_params(params)
    base_opt, _ = make_optimizer(config.transfer.optim, config.transfer.num_steps)
    optimizer = optax.with_extra_args_support(
        optax.chain(relation_weighted_sum(weights=uniform_weights(k)), base_opt))
    rep = mesh_lib.replicated(mesh)
    state = jax.device_put(create_state(params, optimizer, cfg.seed), rep)
    del params
    per_task = p.batch * (2 if v.pipeline == "meta" else 1)   # meta: support + query halves
    host = drtl_random_batch(np.random.default_rng(cfg.seed), k, per_task, p.batch, p.patch,
                             lr_patch)
    shardings = drtl_shardings(mesh)

    if v.task_map == "loop":
        if v.pipeline == "meta" and v.hessian != "hvp":
            raise ValueError(f"variant {v.name}: the loop baseline of DRTL-M uses "
                             "meta.hessian='hvp'")
        grad_fns, update = make_loop_baseline(model, optimizer, config, names, mesh, v.pipeline)
        aux = [jax.device_put(host["aux_hr"][i], mesh_lib.batch_sharding(mesh))
               for i in range(k)]
        lower_s = compile_s = 0.0
        compiled_grads, stats = [], []
        for i, fn in enumerate(grad_fns):
            t0 = time.perf_counter()
            lowered = fn.lower(state, aux[i])
            t1 = time.perf_counter()
            compiled_grads.append(lowered.compile())
            lower_s, compile_s = lower_s + t1 - t0, compile_s + time.perf_counter() - t1
            stats.append(compiled_stats(compiled_grads[-1]))
        outs = [jax.eval_shape(fn, state, aux[i]) for i, fn in enumerate(grad_fns)]
        t0 = time.perf_counter()
        lowered = update.lower(state, [o[0] for o in outs], [o[1] for o in outs])
        t1 = time.perf_counter()
        compiled_update = lowered.compile()
        lower_s, compile_s = lower_s + t1 - t0, compile_s + time.perf_counter() - t1
        stats.append(compiled_stats(compiled_update))

        def run_step(st):
            got = [g(st, a) for g, a in zip(compiled_grads, aux)]
            return compiled_update(st, [x[0] for x in got], [x[1] for x in got])
        executables = k + 1
    else:
        build = (drtl_steps.make_meta_step if v.pipeline == "meta"
                 else drtl_steps.make_pretrain_step)
        step = train_steps.compile_step(build(model, optimizer, config, names), mesh, rep,
                                       shardings)
        batch = {key: jax.make_array_from_process_local_data(shardings[key], val)
                 for key, val in host.items()}
        t0 = time.perf_counter()
        lowered = step.lower(state, batch)
        t1 = time.perf_counter()
        compiled = lowered.compile()
        t2 = time.perf_counter()
        lower_s, compile_s = t1 - t0, t2 - t1
        stats = [compiled_stats(compiled)]

        def run_step(st):
            return compiled(st, batch)
        executables = 1
    del lowered
    state, metrics, train_s = _timed_loop(run_step, state, cfg)
    loss = float(jax.device_get(metrics["loss"])) if metrics is not None else None
    grad_norm = float(jax.device_get(metrics["grad_norm"])) if metrics is not None else None
    gflops = [s["gflops"] for s in stats]
    temps = [s["temp_bytes"] for s in stats]
    args = [s["argument_bytes"] for s in stats]
    steps_per_s = cfg.steps / train_s
    row = {
        "K": k, "tasks": names, "per_task_batch": per_task, "lr_patch": lr_patch,
        "mode": mode, "aux_scale": aux_scale, "params": n_params, "executables": executables,
        "lower_s": lower_s, "compile_s": compile_s,
        "step_ms": 1e3 * train_s / cfg.steps, "steps_per_s": steps_per_s,
        "tasks_per_s": k * steps_per_s, "images_per_s": k * per_task * steps_per_s,
        "loss": loss, "grad_norm": grad_norm,
        "train_gflops_per_step": None if None in gflops else sum(gflops),
        "train_temp_bytes": None if None in temps else max(temps),
        "train_argument_bytes": None if None in args else max(args),
    }
    del state, metrics, run_step
    row["peak_bytes_in_use"] = peak_device_bytes()
    row["max_rss_bytes"] = max_rss_bytes()
    return row


def variant_fields(v: DrtlVariant, cfg: Settings) -> dict[str, Any]:
    return {"variant": v.name, "pipeline": v.pipeline, "task_map": v.task_map,
            "backward": v.backward if v.pipeline == "pretrain" else None,
            "first_order": v.first_order, "remat": v.remat, "hessian": v.hessian,
            "inner_steps": cfg.inner_steps if v.pipeline == "meta" else None}


def drtl_section(cfg: Settings) -> list[dict[str, Any]]:
    """One row per grid point and DRTL variant (`--variants`) for the DRTL transfer steps."""
    variants = select_variants(cfg.variants)
    bases: dict[int, ml_collections.ConfigDict] = {}
    rows = []
    for p in grid(cfg):
        for v in variants:
            head = {**variant_fields(v, cfg)}
            reason = skip_reason(p)
            if reason:
                print(f"note: {reason}", flush=True)
                rows.append({**point_row("drtl", p, **head), "status": "skipped", "note": reason})
                continue
            if p.scale not in bases:   # scale s > 1: the 'x{s}' variant (LR = HR / s)
                bases[p.scale] = load_config("drtl", f"x{p.scale}" if p.scale > 1 else None)
            print(f"running: drtl {v.name} {p.model} x{p.scale} {p.dtype} batch {p.batch}/task "
                  f"patch {p.patch} K={len(cfg.tasks)}", flush=True)
            row = guarded("drtl", p, lambda p=p, v=v: bench_drtl_point(p, v, cfg, bases[p.scale]))
            rows.append({**point_row("drtl", p, **head), **row})
    return rows


# ----------------------------------------------------------------------------- compare
# jaxsr's supervised train step beside the PyTorch step of the same network, with MFU.

def compare_points(cfg: Settings) -> list[Point]:
    """The grid of the compare section: restoration-only models (NAFNet) at scale 1 whatever
    --scale says (one point per distinct setting)."""
    points: list[Point] = []
    for p in grid(cfg):
        if skip_reason(p):
            p = dataclasses.replace(p, scale=1)
        if p not in points:
            points.append(p)
    return points


def compare_base_config() -> ml_collections.ConfigDict:
    """configs/supervised.py with no model of its own: every name is a registry preset (no
    global residual; --model_kwargs on top), as the PyTorch references are."""
    base = load_config("supervised")
    base.model.name = ""
    return base


def resolve_torch_device(torch, name: str) -> str:
    if name == "auto":
        gpu = jax.default_backend() == "gpu"
        return "cuda" if gpu and torch.cuda.is_available() else "cpu"
    if name not in ("cuda", "cpu"):
        raise ValueError(f"--torch_device={name!r}; use auto, cuda or cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--torch_device=cuda but torch sees no GPU (a CPU-only torch build?); "
                         "use --torch_device=cpu")
    return name


def bench_torch_point(p: Point, cfg: Settings, config: ml_collections.ConfigDict,
                      ) -> dict[str, Any]:
    """The PyTorch train step of `config.model` on point `p` (see the module doc); torch_* row
    fields. Without torch: {'torch_status': 'torch not installed'}."""
    try:
        import torch
    except ImportError:
        return {"torch_status": "torch not installed"}
    device = resolve_torch_device(torch, cfg.torch_device)
    row = _torch_train(torch, device, p, cfg, config)
    gc.collect()   # the network, optimizer and batch are gone with _torch_train's frame
    if device == "cuda":
        torch.cuda.empty_cache()   # give the cached blocks back before the jaxsr side runs
    return row


def _torch_train(torch, device: str, p: Point, cfg: Settings,
                 config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Build, warm up and time the PyTorch step on `device` ('cuda' | 'cpu'); torch_* fields."""
    import torch_models

    cuda = device == "cuda"
    torch.manual_seed(cfg.seed)
    torch.backends.cudnn.benchmark = True
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    lr_patch = p.patch // p.scale
    net = torch_models.create(p.model, scale=p.scale, **dict(config.model.kwargs))
    n_params = torch_models.count_params(net)
    net = net.to(device).to(memory_format=torch.channels_last).train()
    params = [q for q in net.parameters() if q.requires_grad]
    oc = config.optim
    opt = torch.optim.Adam(params, lr=float(oc.lr), betas=(float(oc.b1), float(oc.b2)),
                           eps=float(oc.eps), **({"fused": True} if cuda else {}))
    ema_decay = float(config.train.ema_decay)
    ema = [q.detach().clone() for q in params] if ema_decay > 0 else None
    forward = torch.compile(net) if cfg.torch_compile else net
    amp = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(p.dtype)
    if amp is None and p.dtype != "float32":
        raise ValueError(f"--dtype={p.dtype!r}: use float32, bfloat16 or float16")
    host = random_batch(np.random.default_rng(cfg.seed), p.batch, p.patch, lr_patch)
    lr_u8 = torch.from_numpy(host["lr"]).to(device)   # NHWC uint8, as jaxsr's batch
    hr_u8 = torch.from_numpy(host["hr"]).to(device)

    def step():
        # NHWC -> NCHW view: channels_last strides, no copy; float in [0, 1] on device.
        lr = lr_u8.permute(0, 3, 1, 2).float().div_(255.0)
        hr = hr_u8.permute(0, 3, 1, 2).float().div_(255.0)
        with torch.autocast(device_type=device, dtype=amp or torch.float32,
                            enabled=amp is not None):
            out = forward(lr)
        loss = (out.float() - hr).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if ema is not None:
            with torch.no_grad():
                torch._foreach_lerp_(ema, params, 1.0 - ema_decay)
        return loss.detach()

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    t0 = time.perf_counter()
    loss = step()
    sync()
    first_s = time.perf_counter() - t0
    for _ in range(max(cfg.warmup, 1) - 1):
        loss = step()
    sync()
    t1 = time.perf_counter()
    for _ in range(cfg.steps):
        loss = step()
    sync()
    train_s = time.perf_counter() - t1
    row = {"torch_status": "ok", "torch_version": torch.__version__, "torch_device": device,
           "torch_device_name": (torch.cuda.get_device_name() if cuda else "cpu"),
           "torch_compile": cfg.torch_compile, "torch_params": n_params,
           "torch_first_step_s": first_s, "torch_step_ms": 1e3 * train_s / cfg.steps,
           "torch_images_per_s": cfg.steps * p.batch / train_s, "torch_loss": float(loss),
           "torch_peak_bytes": (int(torch.cuda.max_memory_allocated()) if cuda
                                else max_rss_bytes()),
           "torch_peak_kind": "cuda_max_allocated" if cuda else "max_rss"}
    return row


def bench_compare_point(p: Point, cfg: Settings, base: ml_collections.ConfigDict,
                        ) -> dict[str, Any]:
    if p.patch % p.scale:
        raise ValueError(f"--patch={p.patch} is not divisible by --scale={p.scale}; "
                         f"use a multiple of {p.scale}")
    config = supervised_model_config(base, p, cfg)
    lr_patch = p.patch // p.scale
    model = build_model(config.model)
    fwd = flops.forward_flops(model, (p.batch, lr_patch, lr_patch, 3))
    xla_fwd = flops.xla_forward_flops(model, (p.batch, lr_patch, lr_patch, 3))
    step_flops = 3 * fwd
    peak = flops.peak_flops(jax.devices()[0].device_kind, p.dtype, cfg.peak_tflops)
    try:
        torch_row = bench_torch_point(p, cfg, config)
    except Exception as e:  # noqa: BLE001 - the jaxsr side still runs
        traceback.print_exc(file=sys.stderr)
        torch_row = {"torch_status": f"error: {type(e).__name__}: {e}"[:2000]}
    gc.collect()
    jax_row = bench_supervised_point(p, dataclasses.replace(cfg, infer_size=None), base)
    jax_ips = jax_row["images_per_s"]
    row = {
        "lr_patch": lr_patch, "params": jax_row["params"],
        "fwd_gflops_per_image": fwd / p.batch / 1e9, "train_gflops_per_step": step_flops / 1e9,
        "xla_fwd_gflops_per_image": xla_fwd and xla_fwd / p.batch / 1e9,
        "xla_gflops_per_step": jax_row["train_gflops_per_step"],
        "peak_tflops": peak and peak / 1e12,
        "peak_source": None if peak is None else "flag" if cfg.peak_tflops else "table",
        "jax_lower_s": jax_row["lower_s"], "jax_compile_s": jax_row["compile_s"],
        "jax_step_ms": jax_row["step_ms"], "jax_images_per_s": jax_ips,
        "jax_tflops_per_s": step_flops * jax_row["steps_per_s"] / 1e12,
        "jax_mfu": flops.mfu(step_flops * jax_row["steps_per_s"], peak),
        "jax_loss": jax_row["loss"], "jax_peak_bytes": jax_row["peak_bytes_in_use"],
        "jax_temp_bytes": jax_row["train_temp_bytes"],
        "jax_argument_bytes": jax_row["train_argument_bytes"],
        **torch_row,
    }
    if torch_row["torch_status"] == "ok":
        torch_flops_per_s = step_flops * torch_row["torch_images_per_s"] / p.batch
        same_device = (torch_row["torch_device"] == "cuda") == (jax.default_backend() == "gpu")
        row["torch_tflops_per_s"] = torch_flops_per_s / 1e12
        row["torch_mfu"] = flops.mfu(torch_flops_per_s, peak) if same_device else None
        row["ratio_jax_over_torch"] = jax_ips / torch_row["torch_images_per_s"]
        if row["torch_params"] != row["params"]:
            row["note"] = (f"parameter counts differ: jaxsr {row['params']}, PyTorch "
                           f"{row['torch_params']} (different networks; check --model_kwargs)")
    row["max_rss_bytes"] = max_rss_bytes()
    return row


def compare_section(cfg: Settings) -> list[dict[str, Any]]:
    """One row per point: jaxsr and PyTorch train steps of the same network, ratio and MFU."""
    base = compare_base_config()
    rows = []
    for p in compare_points(cfg):
        print(f"running: compare {p.model} x{p.scale} {p.dtype} batch {p.batch} patch {p.patch}",
              flush=True)
        rows.append(guarded("compare", p, lambda p=p: bench_compare_point(p, cfg, base)))
    return rows


def format_compare_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of the compare rows: throughput of both sides, ratio, MFU, compile time,
    memory."""
    def mib(v):
        return _num(v and v / 2 ** 20, ".0f")

    def pct(v):
        return _num(v and 100 * v, ".1f") + ("%" if v else "")

    def torch_col(r, key, fmt):
        if r.get("torch_status", "ok") != "ok":
            return r.get("torch_status", "-")[:40] if key == "torch_images_per_s" else "-"
        return _num(r.get(key), fmt)

    def jax_mem(r):
        if r.get("jax_peak_bytes"):
            return mib(r["jax_peak_bytes"])
        t, a = r.get("jax_temp_bytes"), r.get("jax_argument_bytes")
        return f"{mib(t + a)}*" if t is not None and a is not None else "-"

    def torch_mem(r):
        if r.get("torch_status") != "ok":
            return "-"
        return mib(r.get("torch_peak_bytes")) + ("" if r.get("torch_peak_kind") ==
                                                 "cuda_max_allocated" else " (RSS)")

    cols = [
        ("model", lambda r: r["model"]), ("x", lambda r: str(r["scale"])),
        ("dtype", lambda r: r["dtype"]), ("batch", lambda r: str(r["batch"])),
        ("patch", lambda r: str(r["patch"])),
        ("params", lambda r: _num(r.get("params") and r["params"] / 1e6, ".3f") + "M"
         if r.get("params") else "-"),
        ("fwd GFLOP/img", lambda r: _num(r.get("fwd_gflops_per_image"), ".3f")),
        ("XLA fwd GFLOP/img", lambda r: _num(r.get("xla_fwd_gflops_per_image"), ".3f")),
        ("train GFLOP/step", lambda r: _num(r.get("train_gflops_per_step"), ".1f")),
        ("jaxsr img/s", lambda r: _num(r.get("jax_images_per_s"), ".2f")),
        ("torch img/s", lambda r: torch_col(r, "torch_images_per_s", ".2f")),
        ("jaxsr/torch", lambda r: _num(r.get("ratio_jax_over_torch"), ".2f")),
        ("jaxsr MFU", lambda r: pct(r.get("jax_mfu"))),
        ("torch MFU", lambda r: pct(r.get("torch_mfu"))),
        ("jaxsr compile s", lambda r: _num(r.get("jax_compile_s") and
                                           r["jax_compile_s"] + r["jax_lower_s"], ".2f")),
        ("torch 1st step s", lambda r: torch_col(r, "torch_first_step_s", ".2f")),
        ("jaxsr MiB", jax_mem), ("torch MiB", torch_mem),
        ("status", lambda r: r["status"] + (f" ({r.get('note') or r.get('error')})"[:90]
                                            if r["status"] != "ok" or r.get("note") else "")),
    ]
    lines = ["| " + " | ".join(name for name, _ in cols) + " |",
             "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(f(r) for _, f in cols) + " |" for r in rows]
    device = next((r.get("device_kind") for r in rows if r.get("device_kind")), "?")
    lines.append(f"\nDevice: {device}. fwd GFLOP/img: analytic forward FLOPs of one LR patch "
                 "(2 x conv/dot MACs); train GFLOP/step = 3 x forward x batch, the FLOPs in MFU; "
                 "XLA fwd: XLA's cost analysis of the same forward. jaxsr compile s: lower + "
                 "compile. torch 1st step s: first step (autotuning; compilation with "
                 "--torch_compile). MiB: jaxsr device peak (* = XLA temp + argument bytes where "
                 "the device reports none), PyTorch cuda max allocated (RSS = process max RSS "
                 "on CPU). MFU blank where the device's peak is unknown (CPU; --peak_tflops "
                 "sets one).")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- methods
# Each method's module in experiments/ (bench_pcl.py, bench_crl.py, bench_irconstyle.py) times its
# real training step against an L1 step of the same network; these adapt the flags to them.
METHOD_SECTIONS = ("pcl", "crl", "irconstyle")


def _infer_side(cfg: Settings, default: int) -> int:
    return int(cfg.infer_size[0]) if cfg.infer_size else default


def pcl_section(cfg: Settings) -> list[dict[str, Any]]:
    import bench_pcl   # experiments/ is on sys.path when this file runs as a script
    args = bench_pcl.parser().parse_args([
        f"--variant={cfg.method_variant}", f"--batch={cfg.batches[0]}",
        f"--patch={cfg.patches[0]}", f"--steps={cfg.steps}", f"--warmup={max(cfg.warmup, 1)}"])
    return [{**r, "status": "ok"} for r in bench_pcl.section(args)]


def crl_section(cfg: Settings) -> list[dict[str, Any]]:
    import bench_crl
    args = argparse.Namespace(crl_variant=cfg.method_variant or "x2", crl_steps=cfg.steps,
                              crl_size=_infer_side(cfg, 128))
    return [{"section": "crl", **r, "status": "ok"} for r in bench_crl.section(args)]


def irconstyle_section(cfg: Settings) -> list[dict[str, Any]]:
    import bench_irconstyle
    args = argparse.Namespace(irconstyle_variant=cfg.method_variant or "derain",
                              irconstyle_steps=cfg.steps,
                              irconstyle_size=_infer_side(cfg, 256))
    return [{**r, "status": "ok"} for r in bench_irconstyle.section(args)]


def format_method_table(rows: list[dict[str, Any]]) -> str:
    """A markdown table of every numeric or short field the method rows carry."""
    skip = {"flags", "time", "status", "section", "jax_version", "jaxlib_version", "python",
            "platform", "cpu", "hostname"}
    keys = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in skip]
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- at scale
# The issue-14 measurements, each also a script of its own (experiments/bench_*.py).
SCALE_DRTL_TASKS = ("bicubic", "gaussian_blur", "aniso_gaussian_blur", "defocus_blur",
                    "gaussian_noise", "jpeg", "rain", "haze")
SCALE_DRTL_VARIANTS = ("P-vmap", "P-single", "M2-vmap", "M2-loop")


def pipeline_section(cfg: Settings) -> list[dict[str, Any]]:
    """bench_pipeline: crops/s of 2K PNG pairs decoded per crop vs the decoded store."""
    import bench_pipeline
    args = bench_pipeline.parser().parse_args(
        [f"--n={_PIPELINE_PAIRS.value}", "--batches=10", "--workers=0,2"])
    return [{"section": "pipeline", **r, "status": "ok"} for r in bench_pipeline.section(args)]


def tiled_section(cfg: Settings) -> list[dict[str, Any]]:
    """bench_inference: tiled x4 EDSR-baseline inference, host blend vs the device program."""
    import bench_inference
    args = bench_inference.parser().parse_args(
        ["--model=edsr_baseline", "--scale=4", f"--sizes={_TILED_SIZES.value}", "--repeats=2"])
    return [{**r, "section": "tiled", "status": "ok"} for r in bench_inference.section(args)]


def compile_section(cfg: Settings) -> list[dict[str, Any]]:
    """bench_compile: train-step compile time with unrolled vs scanned blocks."""
    import bench_compile
    names = [m for m in cfg.models if m in ("edsr_baseline", "rcan", "nafnet_w32")]
    args = argparse.Namespace(models=",".join(names or ["rcan", "nafnet_w32"]),
                              scan="false,true", scale=2, batch=2, patch=48, steps=2)
    return [{**r, "status": "ok"} for r in bench_compile.section(args)]


def scale_section(cfg: Settings) -> list[dict[str, Any]]:
    """Everything issue 14 compares, in one run: jaxsr vs PyTorch (compare, with MFU), compile
    time (scanned vs unrolled), tiled 4K x4 inference, pipeline crops/s, and the DRTL steps at
    K = 8 (DRTL-P per task vs one backward pass, DRTL-M vmapped vs a Python loop over tasks)."""
    models_ = tuple(m for m in cfg.models if m in ("edsr_baseline", "rcan", "nafnet_w32")) or (
        "edsr_baseline", "rcan", "nafnet_w32")
    rows = compare_section(dataclasses.replace(cfg, models=models_))
    rows += compile_section(cfg)
    rows += tiled_section(cfg)
    rows += pipeline_section(cfg)
    drtl_cfg = dataclasses.replace(cfg, models=("edsr",), scales=(2,), dtypes=("float32",),
                                   batches=(2,), patches=(48,), tasks=SCALE_DRTL_TASKS,
                                   variants=SCALE_DRTL_VARIANTS)
    rows += drtl_section(drtl_cfg)
    return rows


SECTIONS: dict[str, Callable[[Settings], list[dict[str, Any]]]] = {
    "supervised": supervised_section,
    "drtl": drtl_section,
    "compare": compare_section,
    "pcl": pcl_section,
    "crl": crl_section,
    "irconstyle": irconstyle_section,
    "pipeline": pipeline_section,
    "tiled": tiled_section,
    "compile": compile_section,
    "scale": scale_section,
}

# Table printer per section (format_table, the grid table, for the others).
TABLES: dict[str, Callable[[list[dict[str, Any]]], str]] = {
    "compare": format_compare_table,
    **{name: format_method_table for name in (*METHOD_SECTIONS, "pipeline", "tiled", "compile")},
}


def format_tables(section: str, rows: list[dict[str, Any]]) -> str:
    """One table per section the rows come from (the 'scale' section mixes several)."""
    if section != "scale":
        return TABLES.get(section, format_table)(rows)
    parts = []
    for name in dict.fromkeys(r.get("section", section) for r in rows):
        part = [r for r in rows if r.get("section", section) == name]
        parts.append(f"### {name}\n\n" + TABLES.get(name, format_table)(part))
    return "\n\n".join(parts)


# ----------------------------------------------------------------------------- driver

def run(cfg: Settings) -> list[dict[str, Any]]:
    """Rows of `cfg.section` with the environment added to each."""
    if cfg.section not in SECTIONS:
        raise ValueError(f"--section={cfg.section!r} is unknown; use one of {sorted(SECTIONS)}")
    env = environment()
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return [{**row, **env, "time": stamp} for row in SECTIONS[cfg.section](cfg)]


def isolation_units(cfg: Settings) -> list[tuple[Point, str | None]]:
    """What one isolated process runs: a grid point (and, for drtl, one variant)."""
    if cfg.section == "drtl":
        return [(p, v.name) for p in grid(cfg) for v in select_variants(cfg.variants)]
    if cfg.section == "compare":
        return [(p, None) for p in compare_points(cfg)]
    return [(p, None) for p in grid(cfg)]


def run_isolated(cfg: Settings) -> list[dict[str, Any]]:
    """Each grid point (drtl: each point and variant) in a fresh `python benchmark.py` process."""
    rows = []
    passthrough = [f.serialize() for f in _own_flags()
                   if f.name not in _GRID_FLAGS + ("out", "variants")]
    for p, variant in isolation_units(cfg):
        print(f"running (isolated): {cfg.section} {variant or ''} {p.model} x{p.scale} {p.dtype} "
              f"batch {p.batch} patch {p.patch}", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "rows.jsonl")
            cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), *passthrough,
                   f"--models={p.model}", f"--scale={p.scale}", f"--dtype={p.dtype}",
                   f"--batch={p.batch}", f"--patch={p.patch}", "--noisolate", f"--out={out}",
                   f"--variants={variant or ','.join(cfg.variants)}"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            sys.stderr.write(proc.stderr)
            got = ([json.loads(line) for line in open(out) if line.strip()]
                   if os.path.exists(out) else [])
            if proc.returncode or not got:
                msg = f"subprocess exited with {proc.returncode}: {proc.stderr.strip()[-500:]}"
                print(f"error: {p}: {msg}", flush=True)
                extra = ({"variant": variant} if variant else {})
                got = [point_row(cfg.section, p, **extra, status="error", error=msg)]
            for line in proc.stdout.splitlines():
                if line.startswith(("note:", "error:")):
                    print(line, flush=True)
            rows += got
    return rows


def _own_flags() -> list:
    """The flags this file defines (whatever module name it runs under)."""
    return flags.FLAGS.get_flags_for_module(sys.modules[__name__])


def flag_values() -> dict[str, Any]:
    return {f.name: f.value for f in _own_flags()}


def _num(v, fmt: str) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)


def _mib(key: str) -> Callable[[dict], str]:
    return lambda r: _num(r.get(key) and r[key] / 2 ** 20, ".0f")


def format_table(rows: list[dict[str, Any]]) -> str:
    drtl = any(r.get("section") == "drtl" for r in rows)
    cols = [("model", 14, lambda r: r["model"]), ("x", 2, lambda r: str(r["scale"])),
            ("dtype", 8, lambda r: r["dtype"]), ("batch", 5, lambda r: str(r["batch"])),
            ("patch", 5, lambda r: str(r["patch"]))]
    if drtl:
        cols += [("variant", 13, lambda r: str(r.get("variant", "-"))),
                 ("K", 2, lambda r: str(r.get("K", "-")))]
    cols += [("params", 8, lambda r: _num(r.get("params") and r["params"] / 1e6, ".3f") + "M"
              if r.get("params") else "-"),
             ("lower_s", 7, lambda r: _num(r.get("lower_s"), ".2f")),
             ("compile_s", 9, lambda r: _num(r.get("compile_s"), ".2f")),
             ("step_ms", 9, lambda r: _num(r.get("step_ms"), ".1f")),
             ("steps/s", 8, lambda r: _num(r.get("steps_per_s"), ".3f"))]
    if drtl:
        cols += [("tasks/s", 8, lambda r: _num(r.get("tasks_per_s"), ".2f")),
                 ("img/s", 8, lambda r: _num(r.get("images_per_s"), ".2f")),
                 ("tempMiB", 7, lambda r: _num(r.get("train_temp_bytes") and
                                               r["train_temp_bytes"] / 2 ** 20, ".1f"))]
    else:
        cols += [("img/s", 8, lambda r: _num(r.get("images_per_s"), ".2f")),
                 ("inferMP/s", 9, lambda r: _num(r.get("infer_mpix_per_s"), ".3f"))]
    cols += [("peakMiB", 8, _mib("peak_bytes_in_use")), ("rssMiB", 7, _mib("max_rss_bytes")),
             ("status", 0, lambda r: r["status"] + (f" ({r.get('note') or r.get('error')})"[:90]
                                                   if r["status"] != "ok" else ""))]
    lines = ["  ".join(name.ljust(w) for name, w, _ in cols).rstrip()]
    for r in rows:
        lines.append("  ".join(f(r).ljust(w) for _, w, f in cols).rstrip())
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    extra = argv[1:]
    if extra:
        raise app.UsageError(f"unexpected arguments {extra}; all options are --flags")
    cfg = settings_from_flags()
    if cfg.steps < 1 or cfg.warmup < 0 or cfg.infer_steps < 1 or cfg.inner_steps < 0:
        raise app.UsageError("--steps and --infer_steps must be >= 1, --warmup and --inner_steps "
                             ">= 0")
    if cfg.section == "drtl":
        try:
            select_variants(cfg.variants)
        except ValueError as e:
            raise app.UsageError(str(e)) from None
    if cfg.section in METHOD_SECTIONS and _ISOLATE.value:
        raise app.UsageError(f"--isolate is for the grid sections, not --section={cfg.section}")
    if cfg.section in ("compare", "scale"):   # PyTorch shares the GPU: no 75% preallocation
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    rows = run_isolated(cfg) if _ISOLATE.value else run(cfg)
    if jax.process_index() != 0:   # multi-process runs: process 0 reports
        return
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(_OUT.value, "a")) if _OUT.value else None
        for row in rows:
            line = json.dumps({**row, "flags": flag_values()})
            print(line, flush=True)
            if out:
                out.write(line + "\n")
    print(format_tables(cfg.section, rows), flush=True)


if __name__ == "__main__":
    app.run(main)
