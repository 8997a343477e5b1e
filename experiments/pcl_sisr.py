"""PCL-SR ablation, x4: one backbone pre-trained once with L1, then fine-tuned with the same
schedule, data order and seeds three ways -- L1 only, L1 + PCL (the paper's intent: L_CL's
gradient flows through the frozen embedding into the SR image), L1 + PCL as released (SR
features under no_grad, so L_CL never reaches the SR network) -- and evaluated on Set5 and
Set14 (official MATLAB-bicubic LR; PSNR/SSIM on Y, crop = scale, `jaxsr.train.evaluate`).

Training HR: T91 + BSD100 (not test images); LR made on device by MATLAB bicubic, 8-bit.
Writes OUT/results.json (every number, per image), OUT/results.md (tables: mean +- spread over
seeds, paired differences per seed), OUT/crops_*.png (bicubic | L1 | PCL | released | HR).

  nice -n 10 python experiments/pcl_sisr.py --data_dir ../shared/data \\
      --work_dir runs/pcl_sisr --out_dir experiments/results/pcl

Re-running the same command resumes every unfinished run (the harness checkpoints).
"""
from __future__ import annotations

import json
import pathlib
import time

import numpy as np
from absl import app, flags, logging

_DATA = flags.DEFINE_string("data_dir", "../shared/data",
                            "Folder with t91/, bsd100/, set5/, set14/.")
_WORK = flags.DEFINE_string("work_dir", "runs/pcl_sisr", "Run folders (checkpoints).")
_OUT = flags.DEFINE_string("out_dir", "experiments/results/pcl", "Tables, JSON and figures.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1"], "Fine-tuning seeds (data order, samples, "
                           "embedding init); the pre-trained backbone is shared.")
_PRE_STEPS = flags.DEFINE_integer("pretrain_steps", 2000, "L1 pre-training steps.")
_FT_STEPS = flags.DEFINE_integer("finetune_steps", 300, "Fine-tuning steps of every arm.")
_PRE_LR = flags.DEFINE_float("pretrain_lr", 5e-4, "Pre-training Adam rate (cosine).")
_FT_LR = flags.DEFINE_float("finetune_lr", 1e-4, "Fine-tuning Adam rate (cosine, one cycle).")
_BATCH = flags.DEFINE_integer("batch", 8, "Batch size.")
_PATCH = flags.DEFINE_integer("patch", 64, "HR patch side (multiple of 16).")
_BLOCKS = flags.DEFINE_integer("blocks", 4, "EDSR residual blocks.")
_FEATURES = flags.DEFINE_integer("features", 32, "EDSR features.")
_WIDTHS = flags.DEFINE_list("widths", ["16", "16", "32", "32", "64", "64", "128", "128"],
                            "Embedding network widths (the paper: 64,64,128,128,256,256,512,512).")
_ALPHA = flags.DEFINE_float("alpha", 5.0 / 255.0, "L_CL weight on [0,1] images (paper: 5 on "
                            "[0,255] images = 5/255 here).")

SCALE = 4
ARMS = {  # name: (alpha multiplier, released_code_gradient)
    "l1": (0.0, False),
    "pcl": (1.0, False),
    "pcl_released": (1.0, True),
}
TESTS = ("set5", "set14")


def base_config(seed: int, steps: int, lr: float):
    from jaxsr.config_util import load_config_file
    c = load_config_file("configs/pcl.py", None)
    c.unlock()
    d = pathlib.Path(_DATA.value)
    c.seed = seed
    c.model.kwargs.num_blocks = _BLOCKS.value
    c.model.kwargs.features = _FEATURES.value
    c.pcl.embed.kwargs.widths = tuple(int(w) for w in _WIDTHS.value)
    c.data.train_dir = f"{d / 't91'},{d / 'bsd100' / 'hr'}"
    c.data.val_dir = str(d / "set5" / f"x{SCALE}")
    c.data.batch_size, c.data.hr_patch = _BATCH.value, _PATCH.value
    c.optim.lr = lr
    c.train.num_steps = steps
    c.train.eval_every = steps            # evaluate once, at the end (Set5)
    c.train.checkpoint_every = max(50, steps // 4)
    c.train.log_every = 25
    c.lock()
    return c


def test_pairs(name: str):
    from jaxsr.data import pipeline
    from jaxsr.data.sources import PairedFolderSource
    src = PairedFolderSource(pathlib.Path(_DATA.value) / name / f"x{SCALE}", scale=SCALE)
    return pipeline.eval_pairs(src)


def evaluate_run(workdir: pathlib.Path, pairs: dict) -> tuple[dict, dict]:
    """{test: mean metrics}, {test: per-image list} and outputs of the run's deployed network."""
    from jaxsr.run_config import load_run
    from jaxsr.train.evaluate import Evaluator
    run = load_run(workdir)
    means, per, outs = {}, {}, {}
    for test, p in pairs.items():
        ev = Evaluator(run.model, p, SCALE, run.config.eval)
        m, per_image, outputs = ev(run.params, keep=len(p))
        means[test], per[test], outs[test] = m, per_image, outputs
    return {"mean": means, "per_image": per}, outs


def best_edge_crop(hr: np.ndarray, size: int = 80) -> tuple[int, int]:
    """Top-left corner of the size x size window with the most gradient energy."""
    g = np.abs(np.diff(hr.astype(float).mean(-1), axis=0))[:, :-1] + \
        np.abs(np.diff(hr.astype(float).mean(-1), axis=1))[:-1]
    best, where = -1.0, (0, 0)
    for y in range(0, g.shape[0] - size, 8):
        for x in range(0, g.shape[1] - size, 8):
            e = g[y:y + size, x:x + size].sum()
            if e > best:
                best, where = e, (y, x)
    return where


def main(argv):
    del argv
    from jaxsr import methods
    from jaxsr.logs import quiet_library_logs
    from jaxsr.train.evaluate import baseline_output
    from jaxsr.train.writer import comparison_grid
    from PIL import Image
    quiet_library_logs()
    work, out = pathlib.Path(_WORK.value), pathlib.Path(_OUT.value)
    out.mkdir(parents=True, exist_ok=True)
    train = methods.get("pcl")
    t_start = time.time()
    timings = {}

    # 1. One backbone, pre-trained once with L1 (the PCL method with alpha 0 = plain L1 step).
    pre_dir = work / "pretrain"
    c = base_config(0, _PRE_STEPS.value, _PRE_LR.value)
    c.pcl.alpha = 0.0
    t0 = time.time()
    train(c, str(pre_dir))
    timings["pretrain_s"] = time.time() - t0

    # 2. Fine-tune three ways, same schedule and seeds.
    runs = {}
    for seed in (int(s) for s in _SEEDS.value):
        for arm, (mult, released) in ARMS.items():
            c = base_config(seed, _FT_STEPS.value, _FT_LR.value)
            c.init_from = str(pre_dir)
            c.pcl.alpha = _ALPHA.value * mult
            c.pcl.released_code_gradient = released
            d = work / f"seed{seed}" / arm
            t0 = time.time()
            train(c, str(d))
            timings[f"seed{seed}/{arm}_s"] = time.time() - t0
            runs[(seed, arm)] = d
            logging.info("done %s seed %d in %.0f s", arm, seed, timings[f"seed{seed}/{arm}_s"])

    # 3. Evaluate on Set5 and Set14.
    pairs = {t: test_pairs(t) for t in TESTS}
    results = {"config": {k: v.value for k, v in {
        "seeds": _SEEDS, "pretrain_steps": _PRE_STEPS, "finetune_steps": _FT_STEPS,
        "pretrain_lr": _PRE_LR, "finetune_lr": _FT_LR, "batch": _BATCH, "patch": _PATCH,
        "blocks": _BLOCKS, "features": _FEATURES, "widths": _WIDTHS, "alpha": _ALPHA}.items()},
        "runs": {}}
    from jaxsr.train.evaluate import evaluate_pairs
    results["bicubic"] = {t: evaluate_pairs(None, p, SCALE)[0] for t, p in pairs.items()}
    start, _ = evaluate_run(pre_dir, pairs)
    results["pretrained"] = start
    outputs = {}
    for (seed, arm), d in runs.items():
        res, outs = evaluate_run(d, pairs)
        results["runs"][f"seed{seed}/{arm}"] = res
        outputs[(seed, arm)] = outs

    # 4. Tables: mean +- spread (half range) over seeds, paired differences per seed.
    seeds = [int(s) for s in _SEEDS.value]
    lines = [f"PCL-SR ablation x{SCALE}: EDSR {_BLOCKS.value}x{_FEATURES.value} pre-trained "
             f"{_PRE_STEPS.value} L1 steps on T91+BSD100, fine-tuned {_FT_STEPS.value} steps "
             f"(batch {_BATCH.value}, HR {_PATCH.value}, lr {_FT_LR.value:g} cosine) per arm; "
             f"embedding widths {','.join(_WIDTHS.value)}; alpha {_ALPHA.value:.5f}; seeds "
             f"{seeds}. PSNR/SSIM on Y, crop 4.", "",
             "| model | Set5 PSNR-Y | Set5 SSIM-Y | Set14 PSNR-Y | Set14 SSIM-Y |",
             "|---|---|---|---|---|"]
    fmt = lambda m, t: f"{m[t]['psnr_y']:.3f} | {m[t]['ssim_y']:.4f}"  # noqa: E731
    lines.append(f"| bicubic | {fmt(results['bicubic'], 'set5')} | "
                 f"{fmt(results['bicubic'], 'set14')} |")
    lines.append(f"| pre-trained (start) | {fmt(start['mean'], 'set5')} | "
                 f"{fmt(start['mean'], 'set14')} |")
    summary = {}
    for arm in ARMS:
        cells = []
        for t in TESTS:
            for k, nd in (("psnr_y", 3), ("ssim_y", 4)):
                v = np.array([results["runs"][f"seed{s}/{arm}"]["mean"][t][k] for s in seeds])
                summary[f"{arm}/{t}/{k}"] = v.tolist()
                cells.append(f"{v.mean():.{nd}f} ± {(v.max() - v.min()) / 2:.{nd}f}")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    lines += ["", "Paired differences against L1-only fine-tuning (same seed), PSNR-Y dB:", "",
              "| difference | seed | Set5 | Set14 | Set5 images better | Set14 images better |",
              "|---|---|---|---|---|---|"]
    diffs = {}
    for arm in ("pcl", "pcl_released"):
        for s in seeds:
            row = [f"{arm} - l1", str(s)]
            wins = []
            for t in TESTS:
                a = results["runs"][f"seed{s}/{arm}"]["per_image"][t]
                b = results["runs"][f"seed{s}/l1"]["per_image"][t]
                per = np.array([x["psnr_y"] - y["psnr_y"] for x, y in zip(a, b)])
                diffs[f"{arm}-l1/seed{s}/{t}"] = per.tolist()
                row.append(f"{per.mean():+.4f}")
                wins.append(f"{int(np.sum(per > 0))}/{len(per)}")
            lines.append("| " + " | ".join(row + wins) + " |")
        for t in TESTS:
            m = [np.mean(diffs[f"{arm}-l1/seed{s}/{t}"]) for s in seeds]
            diffs[f"{arm}-l1/mean/{t}"] = float(np.mean(m))
        lines.append(f"| {arm} - l1 | mean | {diffs[f'{arm}-l1/mean/set5']:+.4f} | "
                     f"{diffs[f'{arm}-l1/mean/set14']:+.4f} | | |")
    # Identity check: the released variant's SR network sees only L1's gradient.
    same = []
    from jaxsr.run_config import load_run
    import jax
    for s in seeds:
        a = load_run(runs[(s, "pcl_released")]).params
        b = load_run(runs[(s, "l1")]).params
        same.append(max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
                        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))))
    lines += ["", "Largest |parameter difference| between the released-code arm and L1-only "
              f"fine-tuning, per seed: {', '.join(f'{v:.2e}' for v in same)}"]
    results.update(summary=summary, paired_differences=diffs, released_vs_l1_max_param_diff=same)

    # 5. Crops side by side: bicubic | L1 | PCL | released | HR (seed of the first run).
    s0 = seeds[0]
    figs = []
    for t, idx in (("set14", None), ("set5", None)):
        p = pairs[t]
        # the image where PCL and L1 differ most (edges are where L_CL should act)
        per = np.abs(np.array(diffs[f"pcl-l1/seed{s0}/{t}"]))
        i = int(np.argmax(per)) if idx is None else idx
        lr, hr, name = p[i]
        y, x = best_edge_crop(hr)
        cols = [baseline_output(lr, SCALE)] + [outputs[(s0, a)][t][i] for a in ARMS] + [hr]
        crops = [c[y:y + 80, x:x + 80] for c in cols]
        crops = [np.repeat(np.repeat(c, 3, 0), 3, 1) for c in crops]
        path = out / f"crops_{t}_{name}.png"
        Image.fromarray(comparison_grid(crops)).save(path)
        figs.append(str(path))
    lines += ["", "Crops (x3 nearest): bicubic | L1 | L1+PCL | L1+PCL released | HR: "
              + ", ".join(pathlib.Path(f).name for f in figs)]
    timings["total_s"] = time.time() - t_start
    results.update(timings=timings, figures=figs)
    lines += ["", "Wall time: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items())]
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    app.run(main)
