"""IRConStyle speed: training step with the ConStyle losses (phase 1: query + momentum key
encoder, InfoNCE against the queue, content, style, enqueue) and without them (phase 2: encoder
frozen, L1 only), and inference megapixels/s of the deployed network (encoder + restorer),
against a NAFNet of about the same parameter count trained by the same L1 step. Memory per
compiled program from XLA's memory analysis (arguments + temporaries: on CPU the only per-program
figure; the queue at its published size, K = 65760 x 128 float32 = 33.7 MB, is an argument of
the phase-1 step), plus the process's max RSS.

    python experiments/bench_irconstyle.py [--variant=derain] [--steps=10] [--size=256] \
        [--queue=65760] [--same_width=36]

`section(args) -> list[dict]` rows for experiments/benchmark.py (args: .irconstyle_variant,
.irconstyle_steps, .irconstyle_size, .irconstyle_queue, .irconstyle_same_width; defaults below
when absent).
"""
from __future__ import annotations

import argparse
import pathlib
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jaxsr.config_util import load_config_file, override  # noqa: E402
from jaxsr.methods.irconstyle import data as ic_data  # noqa: E402
from jaxsr.methods.irconstyle import train as ic_train  # noqa: E402
from jaxsr.model_factory import build_model  # noqa: E402
from jaxsr.train.steps import make_apply_fn  # noqa: E402

DEFAULTS = {"variant": "derain", "steps": 10, "size": 256, "queue": 65760, "same_width": 36}


def _config(variant: str, queue: int, model: tuple[str, dict] | None = None):
    config = load_config_file(str(REPO / "configs" / "irconstyle.py"), variant)
    override(config, "constyle.queue_size", queue)
    if model is not None:
        import ml_collections
        config.unlock()
        config.model.name = model[0]
        config.model.kwargs = ml_collections.ConfigDict(model[1])
        config.lock()
    return config


def _memory(compiled) -> int | None:
    try:
        m = compiled.memory_analysis()
        return int(m.argument_size_in_bytes + m.temp_size_in_bytes)
    except Exception:  # noqa: BLE001 - backend dependent
        return None


def _time_step(make, config, steps: int) -> dict:
    net = build_model(config.model)
    n1 = ic_train.constyle_steps(config, net)
    tx = ic_train.make_irconstyle_optimizer(config.optim, config.train.num_steps,
                                            n1 if hasattr(net, "encoder_module") else None)
    state = ic_train.init_state(config, net, tx)
    degrade = ic_data.make_degrader(config.data)
    b, p = int(config.data.batch_size), int(config.data.hr_patch)
    batch = {"hr": jnp.asarray(np.random.default_rng(0).integers(0, 256, (b, p, p, 3),
                                                                  dtype=np.uint8))}
    fn = jax.jit(make(net, tx, config, degrade), donate_argnums=0)
    t0 = time.perf_counter()
    compiled = fn.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    state, m = compiled(state, batch)
    jax.block_until_ready(m["loss"])
    t0 = time.perf_counter()
    for _ in range(steps):
        state, m = compiled(state, batch)
    jax.block_until_ready(m["loss"])
    sec = (time.perf_counter() - t0) / steps
    return {"params": int(sum(x.size for x in jax.tree.leaves(state.params))),
            "step_ms": 1e3 * sec, "images_per_s": b / sec, "compile_s": compile_s,
            "program_bytes": _memory(compiled), "batch": b, "patch": p}


def _inference(config, size: int, reps: int = 3) -> dict:
    net = build_model(config.model)
    params = jax.jit(lambda k: net.init(k, jnp.zeros((1, size, size, 3))))(
        jax.random.key(0))["params"]
    apply = make_apply_fn(net)
    x = jnp.asarray(np.random.default_rng(0).random((1, size, size, 3), np.float32))
    compiled = apply.lower(params, x).compile()
    jax.block_until_ready(compiled(params, x))
    t0 = time.perf_counter()
    for _ in range(reps):
        y = compiled(params, x)
    jax.block_until_ready(y)
    sec = (time.perf_counter() - t0) / reps
    return {"infer_mp_per_s": size * size / 1e6 / sec, "infer_program_bytes": _memory(compiled)}


def section(args=None) -> list[dict]:
    """Rows: ConStyle-NAFNet phase 1 (with ConStyle losses), phase 2 (L1), NAFNet (L1)."""
    get = lambda k: getattr(args, f"irconstyle_{k}", None) or DEFAULTS[k]  # noqa: E731
    variant, steps, size, queue = get("variant"), get("steps"), get("size"), get("queue")
    blocks = dict(enc_blocks=(1, 1, 1), middle_blocks=1, dec_blocks=(1, 1, 1))
    rows = []
    cs = _config(variant, queue)
    base = {"section": "irconstyle", "backend": jax.default_backend(),
            "devices": jax.device_count(), "variant": variant, "queue": queue}
    inf = _inference(cs, size)
    for phase, make in (("with ConStyle losses (phase 1)", ic_train.make_constyle_step),
                        ("L1 only, encoder frozen (phase 2)", ic_train.make_restore_step)):
        rows.append({**base, "model": f"ConStyle-{cs.model.name}", "step": phase,
                     **_time_step(make, cs, steps), **inf})
    naf = _config(variant, queue, ("nafnet", dict(width=get("same_width"), **blocks)))
    rows.append({**base, "model": f"NAFNet w{get('same_width')} (same size)", "step": "L1",
                 **_time_step(ic_train.make_restore_step, naf, steps), **_inference(naf, size)})
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    for r in rows:
        r["max_rss_bytes"] = int(rss)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    for k, v in DEFAULTS.items():
        p.add_argument(f"--{k}", type=type(v), default=v)
    a = p.parse_args()
    ns = argparse.Namespace(**{f"irconstyle_{k}": v for k, v in vars(a).items()})
    rows = section(ns)
    print(f"backend {rows[0]['backend']}, devices {rows[0]['devices']}, variant {a.variant}, "
          f"queue {a.queue}, inference on {a.size}x{a.size}")
    print("| model | step | params | batch x patch | step ms | img/s | step program MB | "
          "infer MP/s | infer program MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    mb = lambda b: f"{b / 2**20:.1f}" if b else "n/a"  # noqa: E731
    for r in rows:
        print(f"| {r['model']} | {r['step']} | {r['params']:,} | {r['batch']}x{r['patch']} | "
              f"{r['step_ms']:.1f} | {r['images_per_s']:.1f} | {mb(r['program_bytes'])} | "
              f"{r['infer_mp_per_s']:.3f} | {mb(r['infer_program_bytes'])} |")
    print(f"max RSS {rows[-1]['max_rss_bytes'] / 2**20:.0f} MB")


if __name__ == "__main__":
    main()
