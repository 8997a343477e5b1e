"""Learning curves of target-only fine-tuning on few real pairs, on *validation* pairs.

What limits learning from a few shots? Every recipe (a named list of config overrides of
`configs/drtl.py:targetonly`) is trained on N shots and evaluated every --eval_every steps on
validation pairs that are neither shots nor evaluation pairs: the last --exclude_last pairs of the
folder (the pairs reported in the few-shot tables) are never read; of the rest, the last
--val_count are the validation pairs and the shots are drawn (per seed) from the others.

  python experiments/fewshot_curves.py --data_dir=../shared/data/city100/nikon_d5500 \\
      --recipes=current,lr1e-3,lr1e-3_p96 --shots=5 --seeds=1 --steps=2000 --eval_every=250 \\
      --out_dir=runs/curves_nikon

Writes OUT/results.json (every evaluation of every run), OUT/curves.md (tables), OUT/curves.png
(validation PSNR-Y vs steps per recipe; vs shots at the last step when several shot counts ran)
and each run's workdir (metrics.jsonl, TensorBoard, checkpoints).
"""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import time

from absl import app, flags

_DATA = flags.DEFINE_string("data_dir", None, "Paired folder with lr/ and hr/.", required=True)
_VARIANT = flags.DEFINE_string("variant", "targetonly", "configs/drtl.py variant string.")
_EXCLUDE = flags.DEFINE_integer("exclude_last", 10, "Evaluation pairs (the last N by name): "
                                "never read here.")
_VAL = flags.DEFINE_integer("val_count", 10, "Validation pairs: the last N of the rest.")
_SHOTS = flags.DEFINE_list("shots", ["5"], "Shot counts.")
_SEEDS = flags.DEFINE_integer("seeds", 1, "Seeds 0..S-1 (shots drawn with shot_seed 1000+s).")
_STEPS = flags.DEFINE_integer("steps", 2000, "Fine-tune steps.")
_EVERY = flags.DEFINE_integer("eval_every", 250, "Validation every N steps.")
_RECIPES = flags.DEFINE_list("recipes", ["current"], "Recipe names (see RECIPES).")
_OUT = flags.DEFINE_string("out_dir", "runs/curves", "Output folder.")
_SET = flags.DEFINE_multi_string("set", [], "Extra overrides for every run, key=value.")

RECIPES: dict[str, list[str]] = {
    # configs/drtl.py as the few-shot tables ran target-only: Adam 2e-4 cosine, 48-px patches,
    # batch 8, EDSR 4x32 with a ReZero global residual (gain 0 at the start).
    "current": ["model.residual_init=rezero"],
    "lr1e-3": ["model.residual_init=rezero", "finetune.optim.lr=1e-3"],
    "lr3e-3": ["model.residual_init=rezero", "finetune.optim.lr=3e-3"],
    "lr1e-3_p96": ["model.residual_init=rezero", "finetune.optim.lr=1e-3", "data.hr_patch=96"],
    "zero_tail": ["model.residual_init=zero_tail"],
    "zero_tail_lr1e-3": ["model.residual_init=zero_tail", "finetune.optim.lr=1e-3"],
    "zero_tail_lr1e-3_p96": ["model.residual_init=zero_tail", "finetune.optim.lr=1e-3",
                             "data.hr_patch=96"],
    "zero_tail_lr1e-3_p96_big": ["model.residual_init=zero_tail", "finetune.optim.lr=1e-3",
                                 "data.hr_patch=96", "model.kwargs.num_blocks=8",
                                 "model.kwargs.features=64"],
}


def validation_folder(out: pathlib.Path) -> pathlib.Path:
    """OUT/pairs: links to every pair but the last --exclude_last (the evaluation pairs)."""
    from jaxsr.methods.drtl.data import set_aside_last
    return set_aside_last(_DATA.value, out / "pairs", _EXCLUDE.value)


def run_one(out: pathlib.Path, pairs: pathlib.Path, recipe: str, shots: int, seed: int) -> dict:
    workdir = out / recipe / f"shots{shots}" / f"seed{seed}"
    overrides = [f"data.target_dir={pairs}", f"data.shots={shots}", f"data.shot_seed={1000 + seed}",
                 f"data.eval_count={_VAL.value}", f"seed={seed}",
                 f"finetune.num_steps={_STEPS.value}", f"finetune.eval_every={_EVERY.value}",
                 "relation.build_graph_for_uniform=False",
                 *RECIPES[recipe], *_SET.value]
    cmd = [sys.executable, "-m", "jaxsr.main", f"--config=configs/drtl.py:{_VARIANT.value}",
           f"--workdir={workdir}", *[f"--config.{o}" for o in overrides]]
    t0 = time.time()
    if not (workdir / "summary.json").exists():
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"{recipe} shots {shots} seed {seed} failed:\n{proc.stderr[-3000:]}")
    curve = []
    for line in (workdir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)  # keys like 'finetune/eval/psnr_y'
        ev = {k.rsplit("eval/", 1)[1]: v for k, v in row.items() if "eval/" in k}
        if "psnr_y" in ev:
            curve.append({"step": row["step"], **ev})
    summary = json.loads((workdir / "summary.json").read_text())
    return {"recipe": recipe, "shots": shots, "seed": seed, "curve": curve,
            "baseline": summary.get("baseline", {}), "seconds": round(time.time() - t0, 1),
            "command": " ".join(cmd)}


def write_outputs(out: pathlib.Path, results: list[dict]) -> None:
    import numpy as np
    lines = ["| recipe | shots | seeds | identity | " + " | ".join(
        f"step {s['step']}" for s in results[0]["curve"]) + " |", ""]
    lines[1] = "|" + "---|" * (4 + len(results[0]["curve"]))
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["recipe"], r["shots"]), []).append(r)
    for (recipe, shots), runs in groups.items():
        steps = [c["step"] for c in runs[0]["curve"]]
        cells = []
        for i in range(len(steps)):
            v = [r["curve"][i]["psnr_y"] for r in runs if i < len(r["curve"])]
            cells.append(f"{np.mean(v):.3f}" + (f" +- {np.std(v):.3f}" if len(v) > 1 else ""))
        base = runs[0]["baseline"].get("psnr_y", float("nan"))
        lines.append(f"| {recipe} | {shots} | {len(runs)} | {base:.3f} | " + " | ".join(cells)
                     + " |")
    (out / "curves.md").write_text("Validation PSNR-Y (dB) vs fine-tune step\n\n"
                                   + "\n".join(lines) + "\n")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    shot_counts = sorted({r["shots"] for r in results})
    fig, axes = plt.subplots(1, 2 if len(shot_counts) > 1 else 1, figsize=(11, 4.2),
                             squeeze=False)
    ax = axes[0, 0]
    for (recipe, shots), runs in groups.items():
        steps = [c["step"] for c in runs[0]["curve"]]
        mean = [np.mean([r["curve"][i]["psnr_y"] for r in runs]) for i in range(len(steps))]
        ax.plot(steps, mean, marker="o", ms=3, label=f"{recipe}, {shots} shots")
    base = results[0]["baseline"].get("psnr_y")
    if base is not None:
        ax.axhline(base, color="k", ls="--", lw=1, label="identity")
    ax.set_xlabel("fine-tune step"), ax.set_ylabel("validation PSNR-Y (dB)")
    ax.legend(fontsize=7), ax.grid(alpha=0.3)
    if len(shot_counts) > 1:
        ax = axes[0, 1]
        for recipe in dict.fromkeys(r["recipe"] for r in results):
            ys = [np.mean([r["curve"][-1]["psnr_y"] for r in groups.get((recipe, s), [])] or
                          [np.nan]) for s in shot_counts]
            ax.plot(shot_counts, ys, marker="o", label=recipe)
        if base is not None:
            ax.axhline(base, color="k", ls="--", lw=1, label="identity")
        ax.set_xlabel("shots"), ax.set_ylabel("validation PSNR-Y at the last step")
        ax.legend(fontsize=7), ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=120)


def main(argv):
    del argv
    out = pathlib.Path(_OUT.value)
    out.mkdir(parents=True, exist_ok=True)
    unknown = [r for r in _RECIPES.value if r not in RECIPES]
    if unknown:
        raise app.UsageError(f"unknown recipes {unknown}; known: {sorted(RECIPES)}")
    pairs = validation_folder(out)
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.exists() else []
    done = {(r["recipe"], r["shots"], r["seed"]) for r in results}
    for seed in range(_SEEDS.value):
        for shots in map(int, _SHOTS.value):
            for recipe in _RECIPES.value:
                if (recipe, shots, seed) in done:
                    continue
                r = run_one(out, pairs, recipe, shots, seed)
                print(f"{recipe:>16} shots {shots} seed {seed}: " + " ".join(
                    f"{c['step']}:{c['psnr_y']:.3f}" for c in r["curve"])
                    + f"  (identity {r['baseline'].get('psnr_y', float('nan')):.3f}, "
                      f"{r['seconds']:.0f} s)", flush=True)
                results.append(r)
                path.write_text(json.dumps(results, indent=1))
                write_outputs(out, results)


if __name__ == "__main__":
    app.run(main)
