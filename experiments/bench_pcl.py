"""Cost of one PCL-SR step relative to an L1 step of the same backbone.

  python experiments/bench_pcl.py [--variant=] [--batch=8] [--patch=64] [--steps=10] \\
      [--warmup=2] [--widths=16,16,32,32,64,64,128,128] [--model_kwargs='{"num_blocks": 4}']

Both steps are what the trainers jit: `jaxsr.methods.pcl.train.make_step` (8 samples made on
device, 8 embedding calls + L_CLD update, 9 embedding calls in the SR update, gradient through
the embedding) and `jaxsr.train.steps.make_train_step` (L1 on the same backbone with LR made on
device by the same MATLAB bicubic), both under `compile_step` on a mesh of every device with
random uint8 HR batches. Rows (one per step kind): section, kind, model, batch, patch,
embed_widths, compile_s, step_ms, ratio_to_l1, backend, device_kind, num_devices, time.
The lead wires `section(args)` into experiments/benchmark.py.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import numpy as np


def _timed(step, state, batch, steps: int, warmup: int) -> tuple[float, float, object]:
    t0 = time.perf_counter()
    state, m = step(state, batch)
    jax.block_until_ready(m["loss"])
    compile_s = time.perf_counter() - t0
    for _ in range(warmup - 1):
        state, m = step(state, batch)
    jax.block_until_ready(m["loss"])
    t0 = time.perf_counter()
    for _ in range(steps):
        state, m = step(state, batch)
    jax.block_until_ready(m["loss"])
    return compile_s, (time.perf_counter() - t0) / steps * 1e3, m


def section(args) -> list[dict]:
    """Two rows (l1, pcl) for the backbone and sizes in `args` (see the module doc)."""
    from jaxsr.config_util import load_config_file, override
    from jaxsr.methods.pcl import train as pcl
    from jaxsr.model_factory import build_model
    from jaxsr.train import mesh as mesh_lib
    from jaxsr.train.steps import compile_step, make_train_step

    config = load_config_file("configs/pcl.py", args.variant or None)
    override(config, "data.batch_size", int(args.batch))
    override(config, "data.hr_patch", int(args.patch))
    if args.widths:
        override(config, "pcl.embed.kwargs.widths", tuple(int(w) for w in args.widths.split(",")))
    if args.model_kwargs:
        config.model.kwargs.update(json.loads(args.model_kwargs))
    mesh = mesh_lib.make_mesh()
    rep = mesh_lib.replicated(mesh)
    scale = int(config.model.scale)
    model, net = build_model(config.model), pcl.build_embedding(config.pcl)
    sr_tx, embed_tx = pcl.sr_optimizer(config), pcl.embed_optimizer(config)
    hr = np.random.default_rng(0).integers(0, 256, (args.batch, args.patch, args.patch, 3),
                                           dtype=np.uint8)
    batch = mesh_lib.put_global_batch({"hr": hr}, mesh)
    common = dict(section="pcl", model=config.model.name, batch=args.batch, patch=args.patch,
                  embed_widths=list(config.pcl.embed.kwargs.widths),
                  backend=jax.default_backend(), device_kind=jax.devices()[0].device_kind,
                  num_devices=mesh.devices.size,
                  time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    rows = []
    # L1 step: same backbone, same on-device bicubic LR.
    l1_state = jax.device_put(pcl.init_state(config, model, net, sr_tx, embed_tx), rep)
    l1_state = l1_state.replace(aux={}, buffers={})
    synth = lambda key, x: pcl.make_lr(x, scale)  # noqa: E731
    l1_step = compile_step(make_train_step(model, sr_tx, "l1", 0.0, synth), mesh, rep)
    c, ms, m = _timed(l1_step, l1_state, batch, args.steps, args.warmup)
    rows.append(dict(common, kind="l1", compile_s=round(c, 2), step_ms=round(ms, 2),
                     ratio_to_l1=1.0, loss=float(m["loss"])))
    state = jax.device_put(pcl.init_state(config, model, net, sr_tx, embed_tx), rep)
    step = compile_step(pcl.make_step(model, net, config, sr_tx, embed_tx), mesh, rep)
    c, ms2, m = _timed(step, state, batch, args.steps, args.warmup)
    rows.append(dict(common, kind="pcl", compile_s=round(c, 2), step_ms=round(ms2, 2),
                     ratio_to_l1=round(ms2 / ms, 2), loss=float(m["loss"])))
    return rows


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="", help="configs/pcl.py variant (default: CPU default)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--patch", type=int, default=64, help="HR patch side (multiple of 16)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--widths", default="", help="embedding widths (default: the config's)")
    p.add_argument("--model_kwargs", default="", help="JSON merged into config.model.kwargs")
    return p


if __name__ == "__main__":
    rows = section(parser().parse_args(sys.argv[1:]))
    keys = ("kind", "model", "batch", "patch", "compile_s", "step_ms", "ratio_to_l1")
    print(" | ".join(keys))
    for r in rows:
        print(" | ".join(str(r[k]) for k in keys))
    print(json.dumps(rows))
