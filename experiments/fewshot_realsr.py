"""Few-shot real-image SR on any paired folder: does relation guidance beat uniform transfer?

Runs, for every shot count and seed, with the same model, initialisation and step budget:
  identity (same-size pairs) / bicubic,  target-only (fine-tune from scratch for T+F steps),
  uniform pre-training + fine-tune,  DRTL-P + fine-tune,  uniform MAML + fine-tune,
  DRTL-M + fine-tune,  and 'only_<task>_P' (pre-training on one auxiliary distortion +
  fine-tune; `--methods=only_each_P` runs one per distortion: the oracle relations, whose rank
  correlation with DRTL's weights the table reports)  (T transfer steps + F fine-tune steps each; the MAML rows spend
  meta.pretrain_fraction of T on pre-training first, 0.5 by default).
Held-out pairs are the last --eval_count pairs of the folder for every run; the shots are drawn
from the other pairs per seed. The reported numbers are the final fine-tune step's (no
checkpoint selection on the held-out pairs). The DRN and the uniform transfers do not depend on
the target, so they are trained once per seed and shared.

  python experiments/fewshot_realsr.py --data_dir ../shared/data/city100/nikon_d5500 \\
      --shots 1,5,10 --seeds 2 --out_dir runs/fewshot_nikon

Writes OUT/results.json (every run), OUT/results.md (mean +- std over seeds), OUT/figures/
(relation graphs, sample crops) and each run's workdir (logs, checkpoints).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import shutil
import sys
import time

from absl import app, flags

_DATA = flags.DEFINE_string("data_dir", None, "Paired folder with lr/ and hr/.", required=True)
_SHOTS = flags.DEFINE_list("shots", ["1", "5", "10"], "Shot counts.")
_SEEDS = flags.DEFINE_integer("seeds", 2, "Number of seeds (0..S-1): shots, init, data order.")
_OUT = flags.DEFINE_string("out_dir", "runs/fewshot", "Output folder.")
_CONFIG = flags.DEFINE_string("config", "configs/drtl.py", "Base DRTL config file.")
_VARIANT = flags.DEFINE_string("variant", "", "Config variant string (e.g. 'x4').")
_EVAL = flags.DEFINE_integer("eval_count", 10, "Held-out pairs (the last N by name).")
_EXCLUDE = flags.DEFINE_integer(
    "exclude_last", 0, "Set aside the last N pairs by name (the evaluation pairs) before the split, "
    "never reading them: the held-out pairs are then validation pairs (the last --eval_count of "
    "the rest), e.g. to choose a recipe or the single best auxiliary family.")
_T = flags.DEFINE_integer("transfer_steps", 300, "Transfer (pre-training / meta) steps.")
_F = flags.DEFINE_integer("finetune_steps", 200, "Fine-tune steps.")
_MODE = flags.DEFINE_enum("relation_mode", "embedding", ["embedding", "gradient"],
                          "Relation mode of the DRTL rows.")
_METHODS = flags.DEFINE_list(
    "methods", ["target_only", "uniform_P", "DRTL_P", "uniform_M", "DRTL_M"], "Rows to run.")
_TABLES_ONLY = flags.DEFINE_bool("tables_only", False, "Only rewrite the table and figures from "
                                  "OUT/results.json (and --extra_results); train nothing.")
_EXTRA = flags.DEFINE_list("extra_results", [], "More runs to merge into the table, as "
                           "DIR:LABEL (rows shown as 'METHOD (LABEL)'), e.g. "
                           "runs/fewshot_nikon_gradient:gradient.")
_OVERRIDES = flags.DEFINE_multi_string("set", [], "Config overrides key=value (e.g. "
                                       "relation.tau=0.05).")

METHODS = {  # name -> (pipeline, relation mode or None for the DRTL mode flag)
    "target_only": ("none", "uniform"), "uniform_P": ("pretrain", "uniform"),
    "DRTL_P": ("pretrain", None), "uniform_M": ("meta", "uniform"), "DRTL_M": ("meta", None),
    # the other relation mode in the same table, whatever --relation_mode says
    "DRTL_P_embedding": ("pretrain", "embedding"), "DRTL_P_gradient": ("pretrain", "gradient"),
    "DRTL_M_embedding": ("meta", "embedding"), "DRTL_M_gradient": ("meta", "gradient"),
}
METRICS = ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb")
# 'only_<task>_P': pre-training on that one auxiliary distortion, then fine-tuning (a hand-picked
# prior, and the oracle relation of <task>: its held-out gain). '--methods=only_each_P' expands to
# one such row per auxiliary distortion of the config.
ONLY_PREFIX, ONLY_SUFFIX = "only_", "_P"


def method_spec(method: str) -> tuple[str, str | None, tuple[str, ...] | None]:
    """(pipeline, relation mode or None for the DRTL mode flag, tasks or None for the config's)."""
    if method.startswith(ONLY_PREFIX) and method.endswith(ONLY_SUFFIX):
        return "pretrain", "uniform", (method[len(ONLY_PREFIX):-len(ONLY_SUFFIX)],)
    if method not in METHODS:
        raise app.UsageError(f"unknown method {method!r}; use {sorted(METHODS)}, "
                             f"{ONLY_PREFIX}<task>{ONLY_SUFFIX} or {ONLY_PREFIX}each{ONLY_SUFFIX}")
    return (*METHODS[method], None)


def expand_methods(methods: list[str], tasks: tuple[str, ...]) -> list[str]:
    out = []
    for m in methods:
        out += ([f"{ONLY_PREFIX}{t}{ONLY_SUFFIX}" for t in tasks]
                if m == f"{ONLY_PREFIX}each{ONLY_SUFFIX}" else [m])
    return out


def pairs_folder(out: pathlib.Path, lr_subdir: str, hr_subdir: str) -> str:
    """--data_dir, or with --exclude_last N, OUT/pairs: links to every pair but the last N."""
    if not _EXCLUDE.value:
        return str(pathlib.Path(_DATA.value).expanduser().resolve())
    from jaxsr.methods.drtl.data import set_aside_last
    return str(set_aside_last(_DATA.value, out / "pairs", _EXCLUDE.value, (lr_subdir, hr_subdir)))


def make_config(base, seed: int, shots: int, method: str, data_dir: str):
    c = base.copy_and_resolve_references()
    c.unlock()
    pipeline, mode, tasks = method_spec(method)
    c.seed = seed
    if tasks is not None:
        c.drtl.tasks = tasks
    c.drtl.pipeline = pipeline
    c.relation.mode = mode or _MODE.value
    c.data.target_dir = data_dir
    c.data.shots = shots
    c.data.shot_seed = 1000 + seed
    c.data.eval_count = _EVAL.value
    c.transfer.num_steps = _T.value
    c.finetune.num_steps = _F.value + (_T.value if pipeline == "none" else 0)
    c.finetune.eval_every = 10 ** 9  # evaluate once, at the end
    from jaxsr.config_util import override, parse_override
    for item in _OVERRIDES.value:
        override(c, *parse_override(item))
    c.lock()
    return c


def main(argv):
    del argv
    from jaxsr.logs import quiet_library_logs
    quiet_library_logs()
    import jax
    import numpy as np
    from jaxsr.methods.drtl import data as drtl_data
    from jaxsr.methods.drtl import train as drtl
    from jaxsr.data import pipeline as data_pipeline
    from jaxsr.model_factory import build_model, init_params
    from jaxsr.train.evaluate import Evaluator
    from jaxsr.train.harness import Run

    out = pathlib.Path(_OUT.value)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    from jaxsr.config_util import load_config_file
    base = load_config_file(_CONFIG.value, _VARIANT.value)
    probe = make_config(base, 0, 1, "target_only", _DATA.value)  # --set applied
    subdirs = (probe.data.lr_subdir, probe.data.hr_subdir)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else []
    if _TABLES_ONLY.value:
        merged = [{**r, "run_root": str(out)} for r in results]
        for item in _EXTRA.value:
            folder, _, label = item.partition(":")
            for r in json.loads((pathlib.Path(folder) / "results.json").read_text()):
                merged.append({**r, "run_root": folder,
                               "method": f"{r['method']} ({label})" if label else r["method"]})
        write_table(out, merged, same_size=int(base.model.scale) == 1)
        write_crops(out, merged, *subdirs)
        return
    data_dir = pairs_folder(out, *subdirs)
    done = {(r["seed"], r["shots"], r["method"]) for r in results}
    t_start = time.time()
    methods = expand_methods(_METHODS.value, drtl.task_names(base))
    for seed in range(_SEEDS.value):
        drn = None
        for shots in map(int, _SHOTS.value):
            for method in methods:
                if (seed, shots, method) in done:
                    continue
                config = make_config(base, seed, shots, method, data_dir)
                names = drtl.task_names(config)
                scale = int(config.model.scale)
                split = drtl_data.split_target(config.data, scale)
                run_dir = out / f"seed{seed}" / f"shots{shots}" / method
                run = Run(config, run_dir)
                model = build_model(config.model)
                ctx = drtl.Context(config=config, run=run, model=model, names=names, split=split)
                evaluator = Evaluator(model, data_pipeline.eval_pairs(split.heldout), scale,
                                      config.eval)
                params = init_params(model, jax.random.key(seed), config.data.hr_patch // scale)
                pipeline, mode, _ = method_spec(method)
                if pipeline != "none":
                    if method.startswith("DRTL"):  # weights from this target's few shots
                        if drn is None:
                            drn = drtl.train_relation_net(config, names)
                        weights = drtl.relation_weights_for_target(config, run_dir, split, names,
                                                                   drn)
                        params, final_w = drtl.transfer_phase(ctx, params, weights)
                    else:  # uniform: independent of the target, shared across shot counts
                        weights = np.full(len(names), 1.0 / len(names), np.float32)
                        shared = Run(config, out / f"seed{seed}" / f"shared_{method}")
                        params, final_w = drtl.transfer_phase(
                            dataclasses.replace(ctx, run=shared), params, weights)
                        shared.writer.close()
                else:
                    weights = final_w = None
                params = drtl.finetune_phase(ctx, params, evaluator)
                mean, per_image, outs = evaluator(params, keep=1)
                baseline = evaluator.baseline()
                np.save(run_dir / "sample_output.npy", outs[0])
                run.writer.close()
                row = {"seed": seed, "shots": shots, "method": method, "metrics": mean,
                       "relation_mode": config.relation.mode,
                       "baseline": baseline, "shot_names": split.shot_names,
                       "heldout": split.heldout_names, "per_image": per_image,
                       "weights": None if weights is None else
                       dict(zip(names, map(float, weights))),
                       "final_weights": None if final_w is None else
                       dict(zip(names, map(float, final_w))),
                       "elapsed_s": round(time.time() - t_start, 1)}
                results.append(row)
                results_path.write_text(json.dumps(results, indent=2))
                logging.info("seed %d shots %d %-12s PSNR-Y %.3f (baseline %.3f)", seed, shots,
                             method, mean["psnr_y"], baseline["psnr_y"])
                if method.startswith("DRTL") and (run_dir / drtl.GRAPH_PNG).exists():
                    shutil.copy(run_dir / drtl.GRAPH_PNG,
                                out / "figures" / f"graph_{method}_shots{shots}_seed{seed}.png")
    write_table(out, results, same_size=int(base.model.scale) == 1)
    write_crops(out, results, *subdirs)


def method_order(method: str) -> tuple[int, str]:
    """Sort key of a table row: the METHODS order, labelled rows ('DRTL_M (cold start)') after
    their unlabelled method, single-distortion rows last."""
    base = method.split(" ")[0]
    return (list(METHODS).index(base) if base in METHODS else len(METHODS)), method


def write_table(out: pathlib.Path, results: list[dict], same_size: bool) -> None:
    import numpy as np
    held = (f"validation pairs: the last {_EVAL.value} by name after setting aside the last "
            f"{_EXCLUDE.value} (never read)" if _EXCLUDE.value else
            f"held-out pairs: {_EVAL.value} (the last by name)")
    lines = [f"Data: `{_DATA.value}`; {held}; seeds: "
             f"{_SEEDS.value}; transfer {_T.value} + fine-tune {_F.value} steps "
             f"(target-only: {_T.value + _F.value} fine-tune steps). Mean +- std over seeds; "
             "'vs id.' = PSNR-Y gain over the "
             f"{'identity' if same_size else 'bicubic'} output.", ""]
    header = "| shots | method | PSNR-Y | vs id. | SSIM-Y | PSNR-RGB | SSIM-RGB | seeds |"
    lines += [header, "|---|---|---|---|---|---|---|---|"]
    shots_list = sorted({r["shots"] for r in results})
    for shots in shots_list:
        rows = [r for r in results if r["shots"] == shots]
        base = rows[0]["baseline"]
        name = "identity" if same_size else "bicubic"
        lines.append(f"| {shots} | {name} | {base['psnr_y']:.3f} | - | {base['ssim_y']:.4f} | "
                     f"{base['psnr_rgb']:.3f} | {base['ssim_rgb']:.4f} | - |")
        methods = sorted({r["method"] for r in rows}, key=method_order)
        for method in methods:
            runs = [r for r in rows if r["method"] == method]
            cells = []
            for m in METRICS:
                v = np.array([r["metrics"][m] for r in runs])
                digits = 3 if m.startswith("psnr") else 4
                cells.append(f"{v.mean():.{digits}f} +- {v.std():.{digits}f}")
                if m == "psnr_y":
                    g = v - np.array([r["baseline"]["psnr_y"] for r in runs])
                    cells.append(f"{g.mean():+.3f}")
            lines.append(f"| {shots} | {method} | " + " | ".join(cells) + f" | {len(runs)} |")
    lines += paired_gains(results)
    lines += oracle_correlation(results)
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def uniform_counterpart(method: str, methods) -> str | None:
    """The uniform row a relation-guided row is compared with: 'DRTL_M (cold start)' ->
    'uniform_M (cold start)' when that label exists among `methods`, else 'uniform_M'."""
    base, _, label = method.partition(" ")
    if not base.startswith("DRTL_"):
        return None
    uniform = "uniform_" + base.split("_")[1]   # DRTL_P_gradient -> uniform_P
    labelled = f"{uniform} {label}" if label else uniform
    return next((m for m in (labelled, uniform) if m in methods), None)


def baselines_of(method: str, methods, by_key) -> list[str]:
    """Rows a relation-guided row is compared with, paired: its uniform counterpart, target-only,
    every single-distortion row, and the strongest non-DRTL row (highest mean PSNR-Y)."""
    import numpy as np
    if not method.startswith("DRTL"):
        return []
    others = [m for m in methods if not m.startswith("DRTL")]
    out = [m for m in [uniform_counterpart(method, methods), "target_only",
                       *[m for m in others if m.startswith(ONLY_PREFIX)]] if m in others]
    if others:
        strongest = max(others, key=lambda m: np.mean(
            [v for (_, _, mm), v in by_key.items() if mm == m]))
        if strongest not in out:
            out.append(strongest)
    return out


def paired_gains(results: list[dict]) -> list[str]:
    """Markdown lines: PSNR-Y of each relation-guided row minus each of its baselines
    (`baselines_of`), paired by (seed, shots) (same shots, initialisation and data order)."""
    import numpy as np
    by_key = {(r["seed"], r["shots"], r["method"]): r["metrics"]["psnr_y"] for r in results}
    methods = sorted({m for _, _, m in by_key}, key=method_order)
    means = {m: np.mean([v for (_, _, mm), v in by_key.items() if mm == m]) for m in methods}
    strongest = max((m for m in methods if not m.startswith("DRTL")), key=means.get,
                    default=None)
    lines = []
    for ours in methods:
        for theirs in baselines_of(ours, methods, by_key):
            pairs = sorted((seed, shots) for seed, shots, m in by_key if m == ours
                           and (seed, shots, theirs) in by_key)
            if not pairs:
                continue
            tag = " (the strongest baseline)" if theirs == strongest else ""
            lines += ["", f"{ours} vs {theirs}{tag}, PSNR-Y paired by seed and shots:", "",
                      f"| seed | shots | {theirs} | {ours} | gain |", "|---|---|---|---|---|"]
            gains = []
            for seed, shots in pairs:
                a, b = by_key[(seed, shots, theirs)], by_key[(seed, shots, ours)]
                gains.append(b - a)
                lines.append(f"| {seed} | {shots} | {a:.3f} | {b:.3f} | {b - a:+.3f} |")
            g = np.array(gains)
            lines.append(f"| mean | | | | {g.mean():+.3f} +- {g.std():.3f} "
                         f"({np.sum(g > 0)}/{len(g)} positive) |")
    return lines


def relation_of(row: dict) -> dict | None:
    """A DRTL row's relation weights per distortion: the weights at the end of the transfer
    (gradient mode refreshes them; embedding mode keeps its initial ones)."""
    return row.get("final_weights") or row.get("weights")


def oracle_correlation(results: list[dict]) -> list[str]:
    """Markdown lines: per shot count, the oracle relation of each auxiliary distortion (PSNR-Y
    gain over the identity/bicubic of pre-training on it alone then fine-tuning, the
    'only_<task>_P' rows; mean over seeds) and the Spearman rank correlation with the weights of
    every DRTL row (embedding or gradient relations), per seed and for the seed-mean weights."""
    import numpy as np
    from scipy.stats import spearmanr
    lines = []
    for shots in sorted({r["shots"] for r in results if r["method"].startswith(ONLY_PREFIX)}):
        rows = [r for r in results if r["shots"] == shots]
        gains: dict[str, list[float]] = {}
        for r in rows:
            if r["method"].startswith(ONLY_PREFIX):
                task = r["method"][len(ONLY_PREFIX):-len(ONLY_SUFFIX)]
                gains.setdefault(task, []).append(r["metrics"]["psnr_y"] - r["baseline"]["psnr_y"])
        if len(gains) < 3:
            continue
        oracle = {t: float(np.mean(v)) for t, v in gains.items()}
        tasks = sorted(oracle, key=lambda t: -oracle[t])
        drtl = [r for r in rows if r["method"].startswith("DRTL") and relation_of(r)
                and set(tasks) <= set(relation_of(r))]
        labels = sorted({r["method"] for r in drtl})
        mean_w = {m: {t: float(np.mean([relation_of(r)[t] for r in drtl if r["method"] == m]))
                      for t in tasks} for m in labels}
        seeds = sorted({r["seed"] for r in rows if r["method"].startswith(ONLY_PREFIX)})
        lines += ["", f"Oracle relations ({shots} shots, seeds {seeds}): PSNR-Y gain over the "
                  "identity of pre-training on one distortion then fine-tuning (mean over seeds), "
                  "and DRTL's weights at the end of the transfer (mean over seeds):", "",
                  "| distortion | oracle gain dB | " + " | ".join(f"{m} weight" for m in labels)
                  + " |", "|---|---|" + "---|" * len(labels)]
        for t in tasks:
            lines.append(f"| {t} | {oracle[t]:+.3f} +- {np.std(gains[t]):.3f} | " + " | ".join(
                f"{mean_w[m][t]:.3f}" for m in labels) + " |")
        lines.append("")
        for m in labels:
            rho, pval = spearmanr([oracle[t] for t in tasks], [mean_w[m][t] for t in tasks])
            per_seed = []
            for r in (r for r in drtl if r["method"] == m):
                rs, _ = spearmanr([oracle[t] for t in tasks], [relation_of(r)[t] for t in tasks])
                per_seed.append(f"seed {r['seed']} {rs:+.2f}")
            mode = next((r.get("relation_mode") for r in drtl if r["method"] == m), None)
            lines.append(f"- Spearman rank correlation, oracle vs {m} weights"
                         f"{f' ({mode} relations)' if mode else ''}: {rho:+.2f} "
                         f"(p = {pval:.2f}, {len(tasks)} distortions; "
                         + ", ".join(per_seed) + ")")
    return lines


def write_crops(out: pathlib.Path, results: list[dict], lr_subdir: str = "lr",
                hr_subdir: str = "hr") -> None:
    """A labelled figure of one held-out crop: LR, each method (seed 0), HR, per shot count.

    Rows merged from other folders carry `run_root` (where their seed0/ outputs are)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from jaxsr.imageio import read_image
    for shots in sorted({r["shots"] for r in results}):
        rows = [r for r in results if r["shots"] == shots and r["seed"] == 0]
        if not rows:
            continue
        name = rows[0]["heldout"][0]
        lr = read_image(next((pathlib.Path(_DATA.value) / lr_subdir).glob(f"{name}.*")))
        hr = read_image(next((pathlib.Path(_DATA.value) / hr_subdir).glob(f"{name}.*")))
        panels = [("LR", lr)]
        for r in rows:
            root = pathlib.Path(r.get("run_root", out))
            method_dir = root / "seed0" / f"shots{shots}" / r["method"].split(" ")[0]
            path = method_dir / "sample_output.npy"
            if path.exists():
                panels.append((f"{r['method']} {r['metrics']['psnr_y']:.2f} dB", np.load(path)))
        panels.append(("HR", hr))
        h, w = hr.shape[:2]
        c = min(128, h // 2, w // 2)
        y0, x0 = h // 2 - c // 2, w // 2 - c // 2
        fig, axes = plt.subplots(1, len(panels), figsize=(2.2 * len(panels), 2.6))
        for ax, (title, img) in zip(axes, panels):
            s = max(1, h // img.shape[0])  # the LR panel is smaller when scale > 1
            crop = img[y0 // s:(y0 + c) // s, x0 // s:(x0 + c) // s]
            ax.imshow(crop, interpolation="nearest")
            ax.set_title(title, fontsize=7)
            ax.axis("off")
        fig.suptitle(f"held-out {name}, {shots} shot(s), seed 0", fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "figures" / f"crops_shots{shots}.png", dpi=130)
        plt.close(fig)


if __name__ == "__main__":
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    app.run(main)
