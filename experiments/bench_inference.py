"""Tiled whole-image inference and evaluation: the host path against the device path.

  python experiments/bench_inference.py [--model=edsr_baseline] [--scale=4] \\
      [--sizes=1000x750,4000x3000] [--repeats=2] [--eval_size=2040x1356] [--tiles=]

Inference rows (one per mode and input size) restore a random uint8-valued image with a
random-weight model (`jaxsr.models.create(model, scale)`, the forward `jaxsr.run_config
.make_forward` jitted with its params bound, as predict does) to uint8:

* host: `jaxsr.inference.restore_host` with the settings before the device path (128-px tiles,
  4 per call, float32 tiles to the host, numpy blend, `quantize` per band), a fair "before";
* device: `restore_image(mode='device', dtype=uint8)` with the backend's default tiling
  (`default_tiling`), or each `--tiles=T/B,...` given.

Each row: first_s (first call: compile included, a fresh jit per row), warm_s (median of
`--repeats` further calls), out_mp_s (output megapixels per warm second), tile, batch_tiles.
Evaluation rows time `jaxsr.train.evaluate.evaluate_pairs` on one random LR/HR pair with HR
`--eval_size` (metrics on a random-weight output): host float64 metrics (the final tables)
against device metrics (periodic evaluation in the loop), first and warm.
Rows: section, kind, model, scale, size, mode, tile, batch_tiles, first_s, warm_s, out_mp_s,
backend, device_kind, time.
"""
from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time

import jax
import numpy as np


def _hw(text: str) -> tuple[int, int]:
    """'WxH' (as photos are named: width first) -> (h, w)."""
    w, h = (int(v) for v in text.lower().split("x"))
    return h, w


def _timed(fn, repeats: int) -> tuple[float, float, object]:
    t0 = time.perf_counter()
    result = fn()
    first = time.perf_counter() - t0
    warm = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        warm.append(time.perf_counter() - t0)
    return first, statistics.median(warm) if warm else float("nan"), result


def _forward(model, params):
    from jaxsr.run_config import make_forward
    return functools.partial(jax.jit(make_forward(model)), params)  # a fresh jit: compile counted


def section(args) -> list[dict]:
    """Inference rows (host, device per size) and evaluation rows (see the module doc)."""
    from jaxsr import models
    from jaxsr.inference import default_tiling, quantize, restore_host, restore_image
    from jaxsr.train.evaluate import evaluate_pairs

    scale = int(args.scale)
    model = models.create(args.model, scale=scale)
    params = model.init(jax.random.key(0), np.zeros((1, 16, 16, 3), np.float32))["params"]
    rng = np.random.default_rng(0)
    common = dict(section="inference", model=args.model, scale=scale,
                  backend=jax.default_backend(), device_kind=jax.devices()[0].device_kind,
                  time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    tilings = ([tuple(int(v) for v in t.split("/")) for t in args.tiles.split(",")]
               if args.tiles else [default_tiling("device")])
    rows = []
    for size in args.sizes.split(","):
        h, w = _hw(size)
        image = rng.integers(0, 256, (h, w, 3)).astype(np.float32) / 255.0
        out_mp = h * w * scale * scale / 1e6

        def host(fwd=None):
            out = np.empty((h * scale, w * scale, 3), np.uint8)
            return restore_host(fwd, image, scale, tile=128, overlap=16, batch_tiles=4,
                                out=out, finish=quantize)

        runs = [("host", 128, 4, functools.partial(host, _forward(model, params)))]
        for t, b in tilings:
            runs.append(("device", t, b, functools.partial(
                restore_image, _forward(model, params), image, scale, tile=t, overlap=16,
                batch_tiles=b, mode="device", dtype=np.uint8)))
        results = {}
        for mode, t, b, fn in runs:
            first, warm, out = _timed(fn, args.repeats)
            results[(mode, t, b)] = out
            rows.append(dict(common, kind="restore", size=size, mode=mode, tile=t,
                             batch_tiles=b, first_s=round(first, 3), warm_s=round(warm, 3),
                             out_mp_s=round(out_mp / warm, 3)))
        ref = results[("host", 128, 4)]
        for (mode, t, b), out in results.items():  # same tiles -> same pixels (within 1 level)
            if (t, b) == (128, 4) and mode == "device":
                assert np.abs(out.astype(int) - ref).max() <= 1, "device != host output"
    if args.eval_size:
        h, w = _hw(args.eval_size)
        hr = rng.integers(0, 256, (h - h % scale, w - w % scale, 3), dtype=np.uint8)
        lr = hr[::scale, ::scale].copy()
        pairs = [(lr, hr, "bench")]
        for mode, on_device in (("host_float64", False), ("device_float32", True)):
            fwd = _forward(model, params)
            run = functools.partial(evaluate_pairs, fwd, pairs, scale, tile=None,
                                    batch_tiles=None, device_metrics=on_device)
            first, warm, (mean, _, _) = _timed(run, args.repeats)
            rows.append(dict(common, kind="evaluate", size=args.eval_size, mode=mode,
                             tile=default_tiling("device")[0], batch_tiles=None,
                             first_s=round(first, 3), warm_s=round(warm, 3),
                             out_mp_s=round(hr.shape[0] * hr.shape[1] / 1e6 / warm, 3),
                             psnr_rgb=mean["psnr_rgb"], ssim_y=mean["ssim_y"]))
    return rows


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="edsr_baseline", help="registry name ('edsr': tiny)")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--sizes", default="1000x750", help="input sizes WxH, comma separated "
                   "(add 4000x3000 for the large case)")
    p.add_argument("--repeats", type=int, default=2, help="warm calls (median reported)")
    p.add_argument("--tiles", default="", help="device tilings T/B,... (default: the backend's)")
    p.add_argument("--eval_size", default="2040x1356", help="HR size WxH of the evaluation "
                   "pair ('' skips the evaluation rows)")
    return p


def main(argv: list[str]) -> None:
    rows = section(parser().parse_args(argv))
    keys = ("kind", "model", "size", "mode", "tile", "batch_tiles", "first_s", "warm_s",
            "out_mp_s")
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
