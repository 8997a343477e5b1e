"""CRL-SR speed: training-step cost relative to a plain-L1 step of the same SR network (the
auxiliary networks E_h, E_f, D_rec, the heads and the contrastive losses are the overhead; both
steps include the on-device degradation generator), and inference megapixels/s (output pixels)
of the deployable network (E_l + SR decoder).

    python experiments/bench_crl.py [--variant=x2] [--steps=20] [--size=128]

`section(args) -> list[dict]` rows for experiments/benchmark.py (args: .crl_variant, .crl_steps,
.crl_size with the defaults below when absent).
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jaxsr.config_util import load_config_file  # noqa: E402
from jaxsr.methods.crl import train as crl  # noqa: E402
from jaxsr.train.steps import make_apply_fn  # noqa: E402


def _step_seconds(variant: str, steps: int) -> tuple[float, float, int, int]:
    """(seconds per step, compile seconds, deployed params, auxiliary params)."""
    config = load_config_file(str(REPO / "configs" / "crl.py"), variant)
    terms, nets = crl.Terms.of(config), crl.build_networks(config)
    tx, aux_tx = crl.make_optimizers(config)
    state = crl.init_state(config, nets, terms, tx, aux_tx)
    n_main = sum(x.size for x in jax.tree.leaves(state.params))
    n_aux = sum(x.size for x in jax.tree.leaves([a.params for a in state.aux.values()]))
    step = jax.jit(crl.make_step(nets, terms, config, tx, aux_tx, crl.level_spec(config, "train")),
                   donate_argnums=0)
    b, p = int(config.data.batch_size), int(config.data.hr_patch)
    rng = np.random.default_rng(0)
    batch = {"hr": jnp.asarray(rng.integers(0, 256, (b, p, p, 3), dtype=np.uint8))}
    t0 = time.perf_counter()
    state, m = step(state, batch)
    jax.block_until_ready(m["loss"])
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        state, m = step(state, batch)
    jax.block_until_ready(m["loss"])
    return (time.perf_counter() - t0) / steps, compile_s, int(n_main), int(n_aux)


def _inference_mps(variant: str, size: int, reps: int = 5) -> float:
    """Output megapixels per second of the deployed network on a (1, size, size, 3) LR input."""
    config = load_config_file(str(REPO / "configs" / "crl.py"), variant)
    nets = crl.build_networks(config)
    params = crl.init_params(nets.model, jax.random.key(0), size)
    apply = make_apply_fn(nets.model)
    x = jnp.asarray(np.random.default_rng(0).random((1, size, size, 3), np.float32))
    jax.block_until_ready(apply(params, x))
    t0 = time.perf_counter()
    for _ in range(reps):
        y = apply(params, x)
    jax.block_until_ready(y)
    seconds = (time.perf_counter() - t0) / reps
    return y.shape[1] * y.shape[2] / seconds / 1e6


def section(args) -> list[dict]:
    variant = getattr(args, "crl_variant", "x2")
    steps = int(getattr(args, "crl_steps", 20))
    size = int(getattr(args, "crl_size", 128))
    sep = "," if variant else ""
    crl_s, crl_c, n_main, n_aux = _step_seconds(variant, steps)
    l1_s, l1_c, _, _ = _step_seconds(variant + sep + "l1", steps)
    mps = _inference_mps(variant, size)
    backend = jax.default_backend()
    return [
        {"method": "crl", "what": f"train step ({variant}), plain L1", "backend": backend,
         "ms_per_step": 1e3 * l1_s, "relative": 1.0, "compile_s": l1_c,
         "params_deployed": n_main, "params_aux": 0},
        {"method": "crl", "what": f"train step ({variant}), CRL-SR (L1+L_bc+L_srnce+L_rec)",
         "backend": backend, "ms_per_step": 1e3 * crl_s, "relative": crl_s / l1_s,
         "compile_s": crl_c, "params_deployed": n_main, "params_aux": n_aux},
        {"method": "crl", "what": f"inference {size}x{size} LR -> output MP/s", "backend": backend,
         "megapixels_per_s": mps, "params_deployed": n_main},
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", dest="crl_variant", default="x2")
    parser.add_argument("--steps", dest="crl_steps", type=int, default=20)
    parser.add_argument("--size", dest="crl_size", type=int, default=128)
    rows = section(parser.parse_args())
    keys = ["what", "backend", "ms_per_step", "relative", "compile_s", "megapixels_per_s",
            "params_deployed", "params_aux"]
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        cells = [f"{r[k]:.3g}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
