"""experiments/fewshot_realsr.py end to end on the shipped City100 Nikon sample (tiny config).

Every row kind runs (target-only, uniform/DRTL pre-training, uniform/DRTL MAML) for a few steps;
the identity row is checked against a numpy PSNR of the held-out LR/HR files, the table and
figures are checked on disk, a second invocation resumes (trains nothing) and --tables_only
merges a second results folder.
"""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / "experiments" / "fewshot_realsr.py"
DATA = REPO / "jaxsr" / "samples" / "city100_nikon"
METHODS = ["target_only", "uniform_P", "DRTL_P", "uniform_M", "DRTL_M"]


def _run(out, *extra, methods=METHODS):
    cmd = [sys.executable, str(SCRIPT), f"--data_dir={DATA}", "--variant=tiny", "--shots=1",
           "--seeds=1", "--eval_count=2", "--transfer_steps=3", "--finetune_steps=2",
           f"--methods={','.join(methods)}", f"--out_dir={out}", "--set=relation.drn_steps=4",
           "--set=drtl.task_map=unroll", *extra]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _psnr_rgb(a, b, border=1):
    a = a[border:-border, border:-border].astype(np.float64)
    b = b[border:-border, border:-border].astype(np.float64)
    return 10 * np.log10(255.0 ** 2 / np.mean((a - b) ** 2))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fewshot")
    proc = _run(out)
    return out, proc, json.loads((out / "results.json").read_text())


def test_every_row_runs_with_finite_metrics(run):
    out, _, rows = run
    assert [r["method"] for r in rows] == METHODS
    names = sorted(p.stem for p in (DATA / "hr").iterdir())
    for r in rows:
        assert r["heldout"] == names[-2:]                  # the last eval_count pairs
        assert len(r["shot_names"]) == 1 and r["shot_names"][0] in names[:-2]
        assert all(np.isfinite(r["metrics"][m]) for m in ("psnr_y", "ssim_y", "psnr_rgb"))
        assert (out / "seed0" / "shots1" / r["method"] / "sample_output.npy").exists()
        has_weights = r["method"] != "target_only"
        assert (r["weights"] is not None) == has_weights
        if has_weights:
            w = np.array(list(r["weights"].values()))
            assert w.sum() == pytest.approx(1.0, abs=1e-5)
            if r["method"].startswith("uniform"):
                np.testing.assert_allclose(w, 1.0 / len(w), rtol=1e-6)


def test_identity_row_equals_numpy_psnr_of_heldout_files(run):
    _, _, rows = run
    expected = np.mean([_psnr_rgb(np.asarray(Image.open(DATA / "lr" / f"{n}.png").convert("RGB")),
                                  np.asarray(Image.open(DATA / "hr" / f"{n}.png").convert("RGB")))
                        for n in rows[0]["heldout"]])
    assert rows[0]["baseline"]["psnr_rgb"] == pytest.approx(expected, rel=1e-6)


def test_table_figures_resume_and_merge(run, tmp_path):
    out, first, rows = run
    table = (out / "results.md").read_text()
    for method in ["identity", *METHODS]:
        assert f"| 1 | {method} |" in table
    assert (out / "figures" / "crops_shots1.png").stat().st_size > 5_000
    assert (out / "figures" / "graph_DRTL_P_shots1_seed0.png").exists()
    # Resume: every row is done, so nothing is trained and results.json is unchanged.
    again = _run(out)
    assert "DRTL-P" in first.stderr and "DRTL-M" in first.stderr   # progress bars of training
    assert "DRTL-P" not in again.stderr and "DRTL-M" not in again.stderr
    assert json.loads((out / "results.json").read_text()) == rows
    # Merge: a second folder's rows join the table under a label.
    other = tmp_path / "other"
    other.mkdir()
    fake = {"DRTL_P": 99.0, "uniform_P": 98.25}
    (other / "results.json").write_text(json.dumps([
        {**r, "metrics": {**r["metrics"], "psnr_y": fake[r["method"]]}}
        for r in rows if r["method"] in fake]))
    _run(out, "--tables_only", f"--extra_results={other}:relabelled")
    merged = (out / "results.md").read_text()
    assert "| 1 | DRTL_P (relabelled) | 99.000 +- 0.000 |" in merged
    # A labelled relation-guided row is paired with the uniform row of the same label.
    assert "DRTL_P (relabelled) vs uniform_P (relabelled)" in merged
    assert "| 0 | 1 | 98.250 | 99.000 | +0.750 |" in merged
    # Paired gains: relation-guided row minus its uniform counterpart, same seed and shots.
    psnr = {r["method"]: r["metrics"]["psnr_y"] for r in rows}
    for ours, theirs in (("DRTL_P", "uniform_P"), ("DRTL_M", "uniform_M")):
        gain = psnr[ours] - psnr[theirs]
        assert (f"| 0 | 1 | {psnr[theirs]:.3f} | {psnr[ours]:.3f} | {gain:+.3f} |") in merged


def test_pre_finetune_evaluates_each_transfer_checkpoint(run):
    out, _, rows = run
    cmd = [sys.executable, str(REPO / "experiments" / "fewshot_pre_finetune.py"),
           f"--data_dir={DATA}", "--variant=tiny", "--eval_count=2", f"--out_dir={out}"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    pre = json.loads((out / "pre_finetune.json").read_text())
    assert [r["method"] for r in pre] == METHODS[1:]        # every row with a transfer phase
    after = {r["method"]: r["metrics"] for r in rows}
    for r in pre:
        assert r["after"] == after[r["method"]]
        assert np.isfinite(r["before"]["psnr_y"]) and 0 < r["before"]["ssim_y"] <= 1


def _load_script(script: pathlib.Path = SCRIPT):
    """The script as a module, for its pure functions. Its absl flags are defined on the global
    FLAGS only while it loads: flags of the same names that other scripts' tests defined in this
    process (e.g. 'data_dir') are set aside and put back, so neither side sees a duplicate."""
    import importlib.util
    import re
    from absl import flags
    names = set(re.findall(r'DEFINE_\w+\(\s*"(\w+)"', script.read_text()))
    saved = {n: flags.FLAGS[n] for n in names if n in flags.FLAGS}
    for n in saved:
        delattr(flags.FLAGS, n)
    try:
        spec = importlib.util.spec_from_file_location(f"{script.stem}_mod", script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        for n in names:
            if n in flags.FLAGS:
                delattr(flags.FLAGS, n)
        for n, flag in saved.items():
            flags.FLAGS[n] = flag
    return module


def test_single_distortion_rows_and_oracle_correlation():
    """'only_<task>_P' rows pre-train on one distortion; the oracle table ranks the distortions
    by their gain and reports the Spearman correlation with each DRTL row's weights (checked
    against a hand computation: Spearman = Pearson of the ranks)."""
    fs = _load_script()
    assert fs.method_spec("only_rain_P") == ("pretrain", "uniform", ("rain",))
    assert fs.method_spec("DRTL_P") == ("pretrain", None, None)
    assert fs.expand_methods(["target_only", "only_each_P"], ("a", "b")) == [
        "target_only", "only_a_P", "only_b_P"]
    with pytest.raises(Exception, match="unknown method 'DRTL_X'"):
        fs.method_spec("DRTL_X")
    gains = {"blur": 0.40, "noise": -0.05, "jpeg": 0.10, "rain": -0.20}
    weights = {"blur": 0.5, "noise": 0.1, "jpeg": 0.3, "rain": 0.2}   # ranks 4,1,3,2 (gains 4,2,3,1)
    base = {"psnr_y": 29.0}
    results = [{"seed": 0, "shots": 5, "method": f"only_{t}_P", "baseline": base,
                "metrics": {"psnr_y": 29.0 + g}} for t, g in gains.items()]
    results.append({"seed": 0, "shots": 5, "method": "DRTL_P", "baseline": base,
                    "metrics": {"psnr_y": 29.3}, "weights": weights})
    text = "\n".join(fs.oracle_correlation(results))
    d = np.array([4, 2, 3, 1]) - np.array([4, 1, 3, 2])      # rank differences
    rho = 1 - 6 * np.sum(d ** 2) / (4 * (4 ** 2 - 1))         # = 0.8
    assert f"oracle vs DRTL_P weights: {rho:+.2f}" in text
    assert text.index("| blur | +0.400") < text.index("| jpeg | +0.100") < text.index("| rain |")
    assert fs.method_order("only_rain_P") > fs.method_order("DRTL_M")


def test_paired_gains_against_every_baseline_and_strongest():
    """Each DRTL row is paired with its uniform counterpart, target-only, single-distortion rows
    and the strongest non-DRTL row (highest mean PSNR-Y); gains are hand-computed differences."""
    fs = _load_script()
    psnr = {("target_only", 0): 29.5, ("target_only", 1): 29.7, ("uniform_P", 0): 29.4,
            ("uniform_P", 1): 29.5, ("only_blur_P", 0): 29.8, ("only_blur_P", 1): 29.6,
            ("DRTL_P_gradient", 0): 29.9, ("DRTL_P_gradient", 1): 29.65}
    results = [{"seed": s, "shots": 5, "method": m, "metrics": {"psnr_y": v}}
               for (m, s), v in psnr.items()]
    text = "\n".join(fs.paired_gains(results))
    assert "DRTL_P_gradient vs uniform_P, PSNR-Y" in text
    assert "DRTL_P_gradient vs target_only, PSNR-Y" in text
    # only_blur_P has the highest mean (29.70 vs 29.60 and 29.45)
    assert "DRTL_P_gradient vs only_blur_P (the strongest baseline)" in text
    assert "| 0 | 5 | 29.800 | 29.900 | +0.100 |" in text
    assert "| 1 | 5 | 29.600 | 29.650 | +0.050 |" in text
    assert "| mean | | | | +0.075 +- 0.025 (2/2 positive) |" in text
    assert fs.method_spec("DRTL_P_gradient") == ("pretrain", "gradient", None)


def test_oracle_uses_weights_at_the_end_of_the_transfer():
    """Gradient-mode rows start uniform (a constant: no rank correlation); the oracle table uses
    the weights the transfer ended with, averaged over seeds."""
    fs = _load_script()
    gains = {"blur": 0.4, "noise": 0.1, "rain": -0.2}
    base = {"psnr_y": 29.0}
    results = [{"seed": s, "shots": 5, "method": f"only_{t}_P", "baseline": base,
                "metrics": {"psnr_y": 29.0 + g + 0.01 * s}} for t, g in gains.items()
               for s in (0, 1)]
    uniform = {t: 1 / 3 for t in gains}
    for s, final in ((0, {"blur": 0.5, "noise": 0.3, "rain": 0.2}),
                     (1, {"blur": 0.3, "noise": 0.5, "rain": 0.2})):
        results.append({"seed": s, "shots": 5, "method": "DRTL_P_gradient", "baseline": base,
                        "metrics": {"psnr_y": 29.3}, "relation_mode": "gradient",
                        "weights": uniform, "final_weights": final})
    text = "\n".join(fs.oracle_correlation(results))
    assert "| blur | +0.405 +- 0.005 | 0.400 |" in text      # seed-mean gain and weight
    assert "| noise | +0.105 +- 0.005 | 0.400 |" in text
    # mean weights (0.4, 0.4, 0.2) vs gains ranked (3, 2, 1): ties ranked 2.5 -> rho = 0.87
    assert "oracle vs DRTL_P_gradient weights (gradient relations): +0.87" in text
    assert "seed 0 +1.00, seed 1 +0.50" in text


def test_relation_quality_oracle_after_and_before_fine_tuning(tmp_path):
    """relation_quality.py's oracle: the seed-mean PSNR-Y gain of each only_<task>_P row over
    the identity, after fine-tuning (results.json) or before it (pre_finetune.json)."""
    rq = _load_script(REPO / "experiments" / "relation_quality.py")
    rows, pre = [], []
    for seed, (a, b) in enumerate([(0.3, 0.1), (0.5, 0.3)]):
        for task, after, before in (("blur", 29.0 + a, 28.5 + b), ("rain", 29.1, 28.4),
                                    ("noise", 29.2, 28.0)):
            rows.append({"seed": seed, "shots": 5, "method": f"only_{task}_P",
                         "metrics": {"psnr_y": after}, "baseline": {"psnr_y": 28.5}})
            pre.append({"seed": seed, "shots": 5, "method": f"only_{task}_P",
                        "before": {"psnr_y": before}})
    rows.append({"seed": 0, "shots": 5, "method": "DRTL_P", "metrics": {"psnr_y": 30.0},
                 "baseline": {"psnr_y": 28.5}})
    (tmp_path / "results.json").write_text(json.dumps(rows))
    (tmp_path / "pre_finetune.json").write_text(json.dumps(pre))
    after = rq.oracle_gains(tmp_path / "results.json")
    before = rq.oracle_gains(tmp_path / "results.json", "before")
    assert after == pytest.approx({"blur": 0.9, "rain": 0.6, "noise": 0.7})
    assert before == pytest.approx({"blur": 0.2, "rain": -0.1, "noise": -0.5})


def test_pre_finetune_finds_single_distortion_transfers_where_they_are_saved():
    """Single-distortion rows do not depend on the target: fewshot_realsr.py trains them once per
    seed under seedS/shared_<method>/ (as uniform rows), where fewshot_pre_finetune looks."""
    pre = _load_script(REPO / "experiments" / "fewshot_pre_finetune.py")
    fs = _load_script()
    out = pathlib.Path("/o")
    row = {"seed": 2, "shots": 5, "method": "only_rain_P"}
    assert fs.method_spec("only_rain_P")[1] == "uniform"     # saved by the shared branch
    assert pre.transfer_dir(out, row) == out / "seed2" / "shared_only_rain_P" / "transfer"
    assert pre.transfer_dir(out, {**row, "method": "DRTL_P"}) == (
        out / "seed2" / "shots5" / "DRTL_P" / "transfer")
    assert pre.transfer_dir(out, {**row, "method": "target_only"}) is None


def test_set_aside_last_links_all_pairs_but_the_last_n(tmp_path):
    """The validation folder holds links to every pair but the last N by name (matched by stem,
    whatever the extension); the set-aside pairs are absent from both subfolders."""
    from jaxsr.methods.drtl.data import set_aside_last
    src = tmp_path / "src"
    for sub, ext in (("noisy", ".JPG"), ("clean", ".png")):
        (src / sub).mkdir(parents=True)
        for name in ("a", "b", "c", "d"):
            (src / sub / f"{name}{ext}").write_text(name)
    dst = set_aside_last(src, tmp_path / "pairs", 1, ("noisy", "clean"))
    assert sorted(p.name for p in (dst / "noisy").iterdir()) == ["a.JPG", "b.JPG", "c.JPG"]
    assert sorted(p.name for p in (dst / "clean").iterdir()) == ["a.png", "b.png", "c.png"]
    assert (dst / "clean" / "b.png").read_text() == "b"
    set_aside_last(src, tmp_path / "pairs", 1, ("noisy", "clean"))   # idempotent


def test_parse_override_reads_literals_and_keeps_strings():
    from jaxsr.config_util import ConfigError, parse_override
    assert parse_override("finetune.optim.lr=1e-3") == ("finetune.optim.lr", 1e-3)
    assert parse_override("relation.widths=(8, 16)") == ("relation.widths", (8, 16))
    assert parse_override("model.residual_init=zero_tail") == ("model.residual_init", "zero_tail")
    with pytest.raises(ConfigError, match="not key=value"):
        parse_override("relation.tau")
