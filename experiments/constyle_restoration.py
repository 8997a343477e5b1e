"""ConStyle-NAFNet vs NAFNet of the same size vs a wider NAFNet, equal data and steps.

(a) deraining: trained on Rain100L + Rain100H pairs 001-040 (80 real pairs), scored on pairs
    041-050 of each and on Rain12; (b) Gaussian colour denoising sigma 25: trained on clean
    T91 + BSD100 (noise drawn on device each step), scored on Kodak24 with fixed-seed noise.
Every run: the `irconstyle` method (jaxsr/methods/irconstyle/train.py) with the same data,
optimizer, steps and seed; the NAFNets are trained by the same code with L1 only (a model that is
not a ConStyleNet has no ConStyle phase). No model selection: the final step's network is scored.
Writes results.json, a markdown table (table.md) and crops (crops_<task>.png) to --out.

    nice -n 10 .venv/bin/python experiments/constyle_restoration.py \
        --data_dir=../shared/data --out=experiments/results/irconstyle
"""
from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jaxsr.config_util import load_config_file, override  # noqa: E402
from jaxsr.data import pipeline  # noqa: E402
from jaxsr.methods.irconstyle import data as ic_data  # noqa: E402
from jaxsr.methods.irconstyle import train as ic_train  # noqa: E402

METRICS = ("psnr_rgb", "ssim_rgb", "psnr_y", "ssim_y")


def models(args) -> dict[str, tuple[str, dict]]:
    """name -> (registry name, kwargs): reduced sizes (see --help and experiments/RESULTS.md)."""
    blocks = dict(enc_blocks=(1, 1, 1), middle_blocks=1, dec_blocks=(1, 1, 1))
    return {
        "constyle_nafnet": ("constyle", dict(restorer="nafnet", width=args.width, **blocks)),
        "nafnet_same_size": ("nafnet", dict(width=args.same_width, **blocks)),
        "nafnet_wide": ("nafnet", dict(width=args.wide_width, **blocks)),
    }


def task_config(args, task: str, model: tuple[str, dict], seed: int):
    config = load_config_file(str(REPO / "configs" / "irconstyle.py"),
                              "derain" if task == "derain" else "denoise25")
    name, kwargs = model
    import ml_collections
    config.unlock()
    config.model.name = name
    config.model.kwargs = ml_collections.ConfigDict(kwargs)
    d = pathlib.Path(args.data_dir)
    if task == "derain":
        config.data.pair_dirs = (str(d / "rain100l"), str(d / "rain100h"))
        config.data.train_range, config.data.val_range = "1-40", "41-50"
    else:
        config.data.clean_dir = str(args.clean_pool)
        config.data.val_clean_dir = str(d / "kodak24")
    config.lock()
    for key, value in {"seed": seed, "train.num_steps": args.steps,
                       "constyle.steps": args.constyle_steps,
                       "constyle.queue_size": args.queue, "data.batch_size": args.batch,
                       "data.hr_patch": args.patch, "optim.lr": args.lr,
                       "train.eval_every": 10 ** 9, "train.checkpoint_every": args.steps,
                       "train.log_every": 50, "eval.tile": 128, "eval.num_images": 0}.items():
        override(config, key, value)
    return config


def test_sets(args, task: str, config) -> dict:
    d = pathlib.Path(args.data_dir)
    if task == "derain":
        cfg = config.data
        return {"rain100l_041-050": pipeline.eval_pairs(ic_data.paired_source(
                    [d / "rain100l"], cfg, "41-50")),
                "rain100h_041-050": pipeline.eval_pairs(ic_data.paired_source(
                    [d / "rain100h"], cfg, "41-50")),
                "rain12": pipeline.eval_pairs(ic_data.paired_source([d / "rain12"], cfg, ""))}
    _, pairs, _ = ic_data.sources(config)   # Kodak24 with fixed-seed sigma-25 noise
    return {"kodak24_sigma25": pairs}


def clean_pool(args, out: pathlib.Path) -> pathlib.Path:
    """T91 + BSD100 in one folder of links (the synthetic loader reads one folder)."""
    pool = out / "_clean_pool"
    if not pool.exists():
        pool.mkdir(parents=True)
        d = pathlib.Path(args.data_dir)
        for p in sorted((d / "t91").glob("*.bmp")) + sorted((d / "bsd100" / "hr").glob("*.png")):
            (pool / f"{p.parent.name}_{p.name}").symlink_to(p.resolve())
    return pool


def crops(results, task, out, size=96):
    """Crops of the first test image of each set: input | each model (seed 0) | clean."""
    from PIL import Image
    rows = []
    for set_name, pairs in results["_pairs"][task].items():
        lq, clean, _ = pairs[0]
        h, w = clean.shape[:2]
        y, x = (h - size) // 2, (w - size) // 2
        tiles = [lq] + [results["_outputs"][task][m][set_name][0]
                        for m in results["_outputs"][task]] + [clean]
        rows.append(np.concatenate([t[y:y + size, x:x + size] for t in tiles], axis=1))
    Image.fromarray(np.concatenate(rows, axis=0)).save(out / f"crops_{task}.png")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data_dir", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--out", default=str(REPO / "experiments" / "results" / "irconstyle"))
    p.add_argument("--tasks", default="derain,denoise25")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--constyle_steps", type=int, default=100)
    p.add_argument("--queue", type=int, default=1024)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--patch", type=int, default=48)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--width", type=int, default=16, help="ConStyle-NAFNet width d")
    p.add_argument("--same_width", type=int, default=36, help="NAFNet of the same size")
    p.add_argument("--wide_width", type=int, default=48, help="the wider NAFNet")
    p.add_argument("--keep_runs", action="store_true", help="keep the run folders")
    p.add_argument("--models", default="constyle_nafnet,nafnet_same_size,nafnet_wide",
                   help="subset of the models (several processes can share the work)")
    p.add_argument("--tag", default="", help="results_<tag>.json instead of results.json")
    p.add_argument("--merge", action="store_true",
                   help="only merge every results*.json and outputs under --out into "
                        "results_all.json, table.md and crops_<task>.png")
    args = p.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        return merge(out)
    runs = out / "_runs"
    args.clean_pool = clean_pool(args, out)
    tasks, seeds = args.tasks.split(","), [int(s) for s in args.seeds.split(",")]
    results = {"args": {k: str(v) for k, v in vars(args).items()}, "runs": [],
               "_pairs": {}, "_outputs": {}}
    import jax
    # Seeds share their compiled programs: cache them across runs (compile is most of a short run).
    jax.config.update("jax_compilation_cache_dir", str(out / "_jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    for task in tasks:
        results["_outputs"][task] = {}
        for mname, model in models(args).items():
            if mname not in args.models.split(","):
                continue
            for seed in seeds:
                config = task_config(args, task, model, seed)
                sets = test_sets(args, task, config)
                results["_pairs"][task] = sets
                workdir = runs / f"{task}_{mname}_s{seed}"
                shutil.rmtree(workdir, ignore_errors=True)
                t0 = time.time()
                summary = ic_train.train_and_evaluate(config, str(workdir), test_sets=sets,
                                                      keep_outputs=1)
                import jaxsr.models as M
                net = M.create(model[0], **model[1])
                import jax.numpy as jnp
                n_params = sum(x.size for x in jax.tree.leaves(jax.eval_shape(
                    lambda: net.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))["params"]))
                row = {"task": task, "model": mname, "seed": seed, "params": int(n_params),
                       "seconds": round(time.time() - t0, 1), "test": summary["test"],
                       "identity": summary["test_baseline"]}
                results["runs"].append(row)
                if seed == seeds[0]:
                    results["_outputs"][task][mname] = summary["outputs"]
                    (out / "_outputs").mkdir(exist_ok=True)
                    np.savez_compressed(out / "_outputs" / f"{task}__{mname}.npz", **{
                        f"{s}__out": o[0] for s, o in summary["outputs"].items()},
                        **{f"{s}__lq": sets[s][0][0] for s in sets},
                        **{f"{s}__clean": sets[s][0][1] for s in sets})
                print(json.dumps({k: row[k] for k in ("task", "model", "seed", "params",
                                                      "seconds")}),
                      {s: round(m["psnr_y"], 3) for s, m in row["test"].items()}, flush=True)
                if not args.keep_runs:
                    shutil.rmtree(workdir, ignore_errors=True)
                (out / f"results{'_' + args.tag if args.tag else ''}.json").write_text(json.dumps(
                    {k: v for k, v in results.items() if not k.startswith("_")}, indent=2))
    merge(out)


def merge(out: pathlib.Path) -> None:
    """results*.json (also in sub-folders) -> results_all.json + table.md; saved first-image
    outputs -> crops_<task>.png (input | each model, seed 0 | clean, one row per test set)."""
    runs, seen = [], set()
    for f in sorted(out.rglob("results*.json")):
        if f.name == "results_all.json":
            continue
        for r in json.loads(f.read_text())["runs"]:
            key = (r["task"], r["model"], r["seed"])
            if key not in seen:
                seen.add(key)
                runs.append(r)
    (out / "results_all.json").write_text(json.dumps({"runs": runs}, indent=2))
    (out / "table.md").write_text(table(runs))
    print(table(runs))
    from PIL import Image
    for task in sorted({r["task"] for r in runs}):
        files = sorted(out.rglob(f"_outputs/{task}__*.npz"))
        if not files:
            continue
        data = {f.stem.split("__", 1)[1]: np.load(f) for f in files}
        first = next(iter(data.values()))
        sets = sorted({k.split("__")[0] for k in first.files})
        rows, size = [], 96
        for s in sets:
            lq, clean = first[f"{s}__lq"], first[f"{s}__clean"]
            y, x = (clean.shape[0] - size) // 2, (clean.shape[1] - size) // 2
            tiles = [lq] + [d[f"{s}__out"] for d in data.values()] + [clean]
            rows.append(np.concatenate([t[y:y + size, x:x + size] for t in tiles], axis=1))
        Image.fromarray(np.concatenate(rows, axis=0)).save(out / f"crops_{task}.png")
        (out / f"crops_{task}.txt").write_text(
            "columns: input | " + " | ".join(data) + " | clean; rows: " + ", ".join(sets) + "\n")


def table(runs) -> str:
    """Mean ± half-range over seeds per (task, set, model), and paired differences vs
    ConStyle-NAFNet (same seed)."""
    lines = ["| task | test set | model | params | PSNR RGB | SSIM RGB | PSNR Y | SSIM Y |"
             " ΔPSNR-Y vs ConStyle (paired) |", "|" + "---|" * 9]
    keyed = {}
    for r in runs:
        for s, m in r["test"].items():
            keyed.setdefault((r["task"], s), {}).setdefault(r["model"], []).append((r, m))
    for (task, s), by_model in keyed.items():
        ident = next(iter(by_model.values()))[0][0]["identity"][s]
        lines.append(f"| {task} | {s} | input (identity) | 0 | {ident['psnr_rgb']:.2f} | "
                     f"{ident['ssim_rgb']:.4f} | {ident['psnr_y']:.2f} | {ident['ssim_y']:.4f} |"
                     " |")
        ref = {r["seed"]: m["psnr_y"] for r, m in by_model.get("constyle_nafnet", [])}
        for model, items in by_model.items():
            cells = []
            for k in METRICS:
                v = np.array([m[k] for _, m in items])
                fmt = ".2f" if k.startswith("psnr") else ".4f"
                cells.append(f"{v.mean():{fmt}} ± {(v.max() - v.min()) / 2:{fmt}}")
            diffs = [m["psnr_y"] - ref[r["seed"]] for r, m in items if r["seed"] in ref]
            dcell = (" ".join(f"{x:+.2f}" for x in diffs) + f" (mean {np.mean(diffs):+.2f})"
                     if model != "constyle_nafnet" and diffs else "")
            lines.append(f"| {task} | {s} | {model} | {items[0][0]['params']:,} | "
                         + " | ".join(cells) + f" | {dcell} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
