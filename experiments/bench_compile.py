"""Compile time of a training step with unrolled vs scanned repeated blocks (`scan_blocks`).

  python experiments/bench_compile.py [--models=rcan,nafnet_w32] [--scan=false,true] \\
      [--batch=2] [--patch=48] [--steps=3]

The step is value_and_grad of an L1 loss + an Adam update under `jax.jit`, on random (B, patch,
patch, 3) LR inputs (HR targets patch * scale). compile_s is `lower` + `compile` of that step
(the persistent compilation cache is turned off, so every row compiles from scratch); step_ms the
mean of `steps` calls after one warm-up. Parameters are random numpy values of the model's
shapes (no init program is compiled). Rows: section, model, scale, scan, param_leaves (leaves
of the parameter tree), state_leaves (params + Adam moments + count), params (scalars), batch,
patch, compile_s, step_ms, backend, device_kind, time. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("JAXSR_COMPILATION_CACHE", "0")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_enable_compilation_cache", False)


def _row(name: str, scan: bool, args) -> dict:
    import optax

    from jaxsr import models
    from jaxsr.models import count_params

    scale = 1 if name.startswith("nafnet") else int(args.scale)
    model = models.create(name, scale=scale, scan_blocks=scan)
    x = np.random.default_rng(0).random((args.batch, args.patch, args.patch, 3), np.float32)
    y = np.random.default_rng(1).random((args.batch, args.patch * scale, args.patch * scale, 3),
                                        np.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct(x.shape,
                                                                                 jnp.float32))
    rng = np.random.default_rng(2)
    params = jax.tree_util.tree_map(
        lambda s: jnp.asarray(0.02 * rng.standard_normal(s.shape), s.dtype), shapes)
    opt = optax.adam(1e-4)
    state = (params, opt.init(params))

    def step(state, x, y):
        p, o = state
        loss, g = jax.value_and_grad(lambda p: jnp.mean(jnp.abs(model.apply(p, x) - y)))(p)
        upd, o = opt.update(g, o, p)
        return (optax.apply_updates(p, upd), o), loss

    t0 = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=0).lower(state, x, y).compile()
    compile_s = time.perf_counter() - t0
    print(f"{name} scan_blocks={scan}: compiled in {compile_s:.1f} s", file=sys.stderr,
          flush=True)
    state, loss = compiled(state, x, y)
    jax.block_until_ready(loss)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        state, loss = compiled(state, x, y)
    jax.block_until_ready(loss)
    step_ms = (time.perf_counter() - t0) / args.steps * 1e3
    return dict(section="compile", model=name, scale=scale, scan=scan,
                param_leaves=len(jax.tree_util.tree_leaves(params)),
                state_leaves=len(jax.tree_util.tree_leaves(state)),
                params=count_params(params), batch=args.batch, patch=args.patch,
                compile_s=round(compile_s, 2), step_ms=round(step_ms, 1),
                loss=float(loss), backend=jax.default_backend(),
                device_kind=jax.devices()[0].device_kind,
                time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def section(args) -> list[dict]:
    """One row per (model, scan) in `args.models` x `args.scan` (see the module doc)."""
    models_ = [m for m in str(args.models).split(",") if m]
    scans = [s.strip().lower() in ("1", "true", "yes") for s in str(args.scan).split(",") if s]
    return [_row(name, scan, args) for name in models_ for scan in scans]


def table(rows: list[dict]) -> str:
    lines = ["| model | scan | parameter leaves | state leaves | compile s | step ms |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} x{r['scale']} | {r['scan']} | {r['param_leaves']:,} | "
                     f"{r['state_leaves']:,} | {r['compile_s']:.1f} | {r['step_ms']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="rcan,nafnet_w32")
    p.add_argument("--scan", default="false,true", help="comma list of scan_blocks values")
    p.add_argument("--scale", type=int, default=2, help="SR scale (NAFNet: always 1)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--patch", type=int, default=48, help="LR patch size")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--out", default=None, help="append the rows as JSON lines to this file")
    args = p.parse_args(argv)
    rows = []
    for name in [m for m in args.models.split(",") if m]:
        for scan in args.scan.split(","):
            one = argparse.Namespace(**{**vars(args), "models": name, "scan": scan})
            row = section(one)[0]
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
