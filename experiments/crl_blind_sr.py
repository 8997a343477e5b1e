"""What CRL-SR does: the same SR network and budget trained four ways on the same multi-source,
spatially variant degradations of T91 (not a test image), scored on identical LR images.

  l1        plain L1 (no auxiliary network)          configs/crl.py:l1
  crl       L1 + L_bc + L_srnce + L_rec              configs/crl.py
  no_bc     CRL-SR without L_bc                      configs/crl.py:no_bc
  no_srnce  CRL-SR without L_srnce (and D_rec)       configs/crl.py:no_srnce

Scored (PSNR/SSIM on Y, crop = scale, BasicSR conventions) on the fixed-seed benchmark of
experiments/crl_benchmark_data.py (Set14 + the first --bsd_limit BSD100 images, per difficulty
level), also inside "uniform" regions (one degradation rules: max mask >= 0.9) and "mixed"
regions (several blend: max mask < 0.7); and on real City100 pairs (same size, ~2.4-2.9x optical
zoom): the registered LR is MATLAB-bicubic downscaled by the model's scale and the model brings
it back to HR size; next to identity (LR vs HR) and bicubic (down + up). Several seeds; paired
differences against l1 (per seed, and per image averaged over seeds).

    nice -n 10 python experiments/crl_blind_sr.py --data_dir=../shared/data \
        --bench=/tmp/crl_bench --out=experiments/results/crl [--steps=1500 --seeds=0,1]

Writes OUT/results.json, OUT/table.md, OUT/crops/*.png; runs in --workroot (resumable).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "experiments"))

from jaxsr import metrics  # noqa: E402
from jaxsr.config_util import load_config_file, override  # noqa: E402
from jaxsr.imageio import list_images, read_image, write_image  # noqa: E402
from jaxsr.imresize import imresize_uint8  # noqa: E402
from jaxsr.inference import restore_image  # noqa: E402
from jaxsr.methods.crl import train as crl  # noqa: E402
from jaxsr.pixels import to_uint8  # noqa: E402
from jaxsr.run_config import load_run  # noqa: E402
from jaxsr.train.evaluate import baseline_output  # noqa: E402
from jaxsr.train.steps import make_apply_fn  # noqa: E402

VARIANTS = {"l1": "l1", "crl": "", "no_bc": "no_bc", "no_srnce": "no_srnce"}
LEVELS = crl.LEVELS
UNIFORM, MIXED = 0.9, 0.7


# ------------------------------------------------------------------------------ data
def bench_pairs(bench: pathlib.Path, name: str, scale: int, level: str, limit: int = 0):
    root = bench / name / f"x{scale}" / level
    files = list_images(root / "hr")
    files = files[:limit] if limit else files
    return [(read_image(root / "lr" / f.name), read_image(f),
             read_image(root / "uniformity" / f.name)[..., 0] / 255.0, f.stem) for f in files]


def city_pairs(data_dir: pathlib.Path, scale: int, limit: int):
    """[(lr_small uint8, hr uint8, lr_registered uint8, name)]: City100 Nikon + iPhone."""
    out = []
    for cam in ("nikon_d5500", "iphone_x"):
        root = data_dir / "city100" / cam
        for f in list_images(root / "hr")[:limit]:
            hr, lr = read_image(f), read_image(root / "lr" / f.name)
            h, w = hr.shape[0] // scale * scale, hr.shape[1] // scale * scale
            hr, lr = hr[:h, :w], lr[:h, :w]
            small = imresize_uint8(lr, output_shape=(h // scale, w // scale))
            out.append((small, hr, lr, f"{cam}/{f.stem}"))
    return out


# ------------------------------------------------------------------------------ scoring
def y_psnr_masked(out: np.ndarray, ref: np.ndarray, mask: np.ndarray, crop: int) -> float:
    """Y PSNR over the pixels where `mask` (H, W) bool is set (after cropping `crop`)."""
    a = metrics.rgb_to_y(out.astype(np.float64))[crop:-crop, crop:-crop]
    b = metrics.rgb_to_y(ref.astype(np.float64))[crop:-crop, crop:-crop]
    m = mask[crop:-crop, crop:-crop]
    if m.sum() < 256:
        return float("nan")
    mse = np.mean((a[m] - b[m]) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-10)))


def score(out: np.ndarray, hr: np.ndarray, uniformity: np.ndarray | None, crop: int) -> dict:
    r = {"psnr_y": metrics.psnr(out, hr, crop_border=crop, test_y_channel=True),
         "ssim_y": metrics.ssim(out, hr, crop_border=crop, test_y_channel=True)}
    if uniformity is not None:
        r["psnr_y_uniform"] = y_psnr_masked(out, hr, uniformity >= UNIFORM, crop)
        r["psnr_y_mixed"] = y_psnr_masked(out, hr, uniformity < MIXED, crop)
    return r


def evaluate(restore, conditions: dict, scale: int) -> dict:
    """{condition: [per-image metric dicts]} of `restore(lr uint8) -> uint8` (None: bicubic)."""
    res = {}
    for cond, pairs in conditions.items():
        rows = []
        for lr, hr, extra, name in pairs:
            out = baseline_output(lr, scale) if restore is None else restore(lr)
            u = extra if extra is not None and extra.ndim == 2 else None
            rows.append({"name": name, **score(out, hr, u, scale)})
        res[cond] = rows
    return res


def mean_of(rows: list[dict], key: str) -> float:
    vals = [r[key] for r in rows if key in r and np.isfinite(r[key])]
    return float(np.mean(vals)) if vals else float("nan")


# ------------------------------------------------------------------------------ training
def train_one(variant: str, seed: int, args, workroot: pathlib.Path) -> pathlib.Path:
    workdir = workroot / f"{variant}_s{seed}"
    if (workdir / "summary.json").exists():
        return workdir
    config = load_config_file(str(REPO / "configs" / "crl.py"), VARIANTS[variant])
    for k, v in {"seed": seed, "data.train_dir": str(args.data_dir / "t91"),
                 "data.val_count": 2, "train.num_steps": args.steps,
                 "train.eval_every": args.steps, "train.checkpoint_every": args.steps,
                 "train.log_every": 100, "model.scale": args.scale,
                 "data.hr_patch": 48 if args.scale == 2 else 64}.items():
        override(config, k, v)
    t0 = time.time()
    crl.train_and_evaluate(config, str(workdir))
    print(f"trained {variant} seed {seed} in {time.time() - t0:.0f}s", flush=True)
    return workdir


def restorer_of(workdir: pathlib.Path, scale: int):
    run = load_run(workdir)
    apply = make_apply_fn(run.model)
    fn = lambda x: apply(run.params, x)  # noqa: E731
    return lambda lr: to_uint8(restore_image(fn, lr.astype(np.float32) / 255.0, scale,
                                             tile=96, overlap=8, batch_tiles=4))


# ------------------------------------------------------------------------------ report
def summarize(results: dict, seeds: list[int], conds: list[str]) -> dict:
    """Means over images, then mean +- spread over seeds; paired differences against l1."""
    keys = ["psnr_y", "ssim_y", "psnr_y_uniform", "psnr_y_mixed"]
    table = {}
    for cond in conds:
        table[cond] = {"bicubic": {k: mean_of(results["bicubic"][cond], k) for k in keys}}
        if "identity" in results and cond in results["identity"]:
            table[cond]["identity"] = {k: mean_of(results["identity"][cond], k) for k in keys}
        for v in VARIANTS:
            per_seed = {k: [mean_of(results[f"{v}_s{s}"][cond], k) for s in seeds] for k in keys}
            entry = {k: {"mean": float(np.mean(x)), "per_seed": x} for k, x in per_seed.items()}
            if v != "l1":
                for k in keys:
                    d = [a - b for a, b in zip(per_seed[k], [mean_of(results[f"l1_s{s}"][cond], k)
                                                             for s in seeds])]
                    entry[k]["diff_vs_l1_per_seed"] = d
                    entry[k]["diff_vs_l1"] = float(np.mean(d))
                # per image, averaged over seeds: how many images improve on Y PSNR
                img = np.mean([[r["psnr_y"] - q["psnr_y"] for r, q in
                                zip(results[f"{v}_s{s}"][cond], results[f"l1_s{s}"][cond])]
                               for s in seeds], axis=0)
                entry["images_better_psnr_y"] = f"{int(np.sum(img > 0))}/{len(img)}"
            table[cond][v] = entry
    return table


def markdown(table: dict, seeds: list[int], args) -> str:
    lines = [f"CRL-SR blind SR, x{args.scale}, {args.steps} steps, seeds {seeds}; Y PSNR (dB) "
             "mean over images, mean over seeds; [d] = paired difference vs plain L1 "
             "(per seed: a, b).", ""]
    header = ("| condition | bicubic | L1 | CRL-SR [d] | no L_bc [d] | no L_srnce [d] |")
    for key, title in (("psnr_y", "whole image"), ("psnr_y_uniform", "uniform regions "
                       f"(max mask >= {UNIFORM})"), ("psnr_y_mixed", f"mixed regions (max mask "
                       f"< {MIXED})"), ("ssim_y", "SSIM-Y whole image")):
        lines += [f"**{title}**", "", header, "|---|---|---|---|---|---|"]
        for cond, t in table.items():
            if key != "psnr_y" and key != "ssim_y" and cond.startswith("city100"):
                continue
            fmt = "{:.4f}" if key == "ssim_y" else "{:.2f}"
            cells = [fmt.format(t["bicubic"][key]), fmt.format(t["l1"][key]["mean"])]
            for v in ("crl", "no_bc", "no_srnce"):
                e = t[v][key]
                ds = ", ".join(f"{d:+.3f}" if key != "ssim_y" else f"{d:+.4f}"
                               for d in e["diff_vs_l1_per_seed"])
                cells.append(f"{fmt.format(e['mean'])} [{ds}]")
            lines.append(f"| {cond} | " + " | ".join(cells) + " |")
        lines.append("")
    city = [c for c in table if c.startswith("city100")]
    if city:
        lines.append("City100 identity (registered LR vs HR, Y PSNR): " + ", ".join(
            f"{c}: {table[c]['identity']['psnr_y']:.2f}" for c in city))
    return "\n".join(lines) + "\n"


def save_crops(restorers: dict, pairs, out: pathlib.Path, scale: int, size: int = 96) -> None:
    """LR (nearest up) | bicubic | L1 | CRL-SR | HR crops at the least uniform spot of an image."""
    out.mkdir(parents=True, exist_ok=True)
    for lr, hr, u, name in pairs:
        # Crop centred on the pixel whose neighbourhood mixes degradations the most.
        y, x = np.unravel_index(np.argmin(u[size:-size, size:-size]), u[size:-size, size:-size].shape)
        y, x = y + size // 2, x + size // 2
        y, x = y // scale * scale, x // scale * scale
        tiles = [np.repeat(np.repeat(lr, scale, 0), scale, 1), baseline_output(lr, scale)]
        tiles += [r(lr) for r in restorers.values()] + [hr]
        row = np.concatenate([t[y:y + size, x:x + size] for t in tiles], axis=1)
        write_image(out / f"{name.replace('/', '_')}.png", row)
    (out / "README.md").write_text(
        "Each crop, left to right: LR (nearest) | bicubic | " + " | ".join(restorers) +
        " | HR; centred where the generator's blend masks mix the most.\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data_dir", type=pathlib.Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--bench", type=pathlib.Path, default=pathlib.Path("/tmp/crl_bench"))
    p.add_argument("--out", type=pathlib.Path, default=REPO / "experiments" / "results" / "crl")
    p.add_argument("--workroot", type=pathlib.Path, default=pathlib.Path("/tmp/crl_runs"))
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--bsd_limit", type=int, default=30)
    p.add_argument("--city_limit", type=int, default=20)
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    t_start = time.time()
    if not (args.bench / "meta.json").exists():
        from crl_benchmark_data import write_benchmark
        write_benchmark(args.data_dir, args.bench, scales=(args.scale,), limit=0)
    conditions = {}
    for name, limit in (("set14", 0), ("bsd100", args.bsd_limit)):
        for level in LEVELS:
            conditions[f"{name}/{level}"] = bench_pairs(args.bench, name, args.scale, level, limit)
    city = city_pairs(args.data_dir, args.scale, args.city_limit)
    conditions["city100 (down x%d)" % args.scale] = [(s, h, None, n) for s, h, _, n in city]
    results = {"bicubic": evaluate(None, conditions, args.scale)}
    results["identity"] = {c: [{"name": n, **score(reg, h, None, args.scale)}
                               for _, h, reg, n in city] for c in conditions if c.startswith("city")}
    restorers = {}
    for seed in seeds:
        for v in VARIANTS:
            workdir = train_one(v, seed, args, args.workroot)
            restore = restorer_of(workdir, args.scale)
            t0 = time.time()
            results[f"{v}_s{seed}"] = evaluate(restore, conditions, args.scale)
            print(f"scored {v} seed {seed} in {time.time() - t0:.0f}s", flush=True)
            if seed == seeds[0] and v in ("l1", "crl"):
                restorers[v] = restore
    table = summarize(results, seeds, list(conditions))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(
        {"args": {k: str(v) for k, v in vars(args).items()}, "table": table,
         "per_image": results, "wall_s": time.time() - t_start}, indent=1))
    md = markdown(table, seeds, args)
    (args.out / "table.md").write_text(md)
    crops = [conditions["set14/hard"][i] for i in (2, 5)] + [conditions["bsd100/hard"][0]]
    save_crops(restorers, crops, args.out / "crops", args.scale)
    print(md)
    print(f"wall {time.time() - t_start:.0f}s")


if __name__ == "__main__":
    main()
