"""Nothing a user does loses work (issue 13): one test per defect, each failing on the old code.

1. predict beside a live training run (real processes) leaves the run alone;
2. re-exporting into an artifact folder keeps the files export did not write;
3. predict/export on an unfinished multi-phase run create nothing in its workdir;
4. images above PIL's pixel limit are restored, too-large ones are skipped and listed;
6. outputs honour the umask; metrics.jsonl holds each step once after a resume.
(5, the training-time data and config errors, and the CLI side of 2 and 4, are in
tests/test_bad_input.py.)
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

import jaxsr
from test_bad_input import TINY, cli, huge_header_png, png

ROOT = pathlib.Path(jaxsr.__file__).resolve().parents[1]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    wd = tmp_path_factory.mktemp("reliability") / "run"
    r = cli("main", f"--config={TINY}", f"--workdir={wd}")
    assert r.returncode == 0, r.stderr[-3000:]
    return wd


# ------------------------------------------------------------- 1. predict beside a live run
def _predict_beside_training(tmp_path, num_steps: int, checkpoint_every: int,
                             extra: tuple = (), predicts: int = 5, stagger: float = 1.5) -> dict:
    """Starts a real training process and, once it has a checkpoint, `predicts` real predict
    processes on its workdir, one every `stagger` seconds (each overlapping the next, so that
    they span the training whatever the machine's load); each predict must succeed. Returns
    what the caller checks: `overlapped` (predicts that ran start to end while the run
    trained), `steps` (the checkpoint step each predict restored), `checkpoints` (step folders
    left), `stray` (non-step entries in checkpoints/), `final_psnr_y`, `last_logged_step`."""
    wd = tmp_path / "live"
    image = png(tmp_path / "in" / "x.png", 20, 20)
    log = open(tmp_path / "train.log", "w")
    # The training compiles as a user's first run does (no compilation cache: its evaluation
    # program compiles mid-run).
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    env.pop("JAXSR_VERBOSE", None)
    train_env = {k: v for k, v in env.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    train = subprocess.Popen(
        [sys.executable, "-m", "jaxsr.main", f"--config={TINY}", f"--workdir={wd}",
         f"--config.train.num_steps={num_steps}",
         f"--config.train.checkpoint_every={checkpoint_every}", *extra],
        cwd=ROOT, env={**train_env, "JAXSR_COMPILATION_CACHE": "0"}, stdout=log,
        stderr=subprocess.STDOUT)
    running = []   # [process, output folder, training alive at its start]
    try:
        deadline = time.time() + 120
        while not any((wd / "checkpoints").glob("[0-9]*")) and time.time() < deadline:
            assert train.poll() is None, (tmp_path / "train.log").read_text()[-3000:]
            time.sleep(0.2)
        for i in range(predicts):
            out = tmp_path / f"out{i}"
            running.append([subprocess.Popen(
                [sys.executable, "-m", "jaxsr.predict", f"--workdir={wd}", f"--input={image}",
                 f"--output={out}", "--tile=32"], cwd=ROOT, env=env, text=True,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), out, train.poll() is None])
            time.sleep(stagger)
        overlapped, steps = 0, []
        for proc, out, alive in running:
            _, err = proc.communicate(timeout=300)
            overlapped += alive and train.poll() is None  # training ran through this predict
            assert proc.returncode == 0, err[-3000:]
            assert (out / "x.png").is_file()
            steps.append(int(err.split(" step ")[1].split()[0]))
        assert train.wait(timeout=600) == 0, (tmp_path / "train.log").read_text()[-3000:]
    finally:
        for proc, _, _ in running:
            if proc.poll() is None:
                proc.kill()
        if train.poll() is None:
            train.kill()
        log.close()
    entries = list((wd / "checkpoints").iterdir())
    return {
        "overlapped": overlapped, "steps": steps,
        "checkpoints": sorted(int(p.name) for p in entries if p.name.isdigit()),
        "stray": [p.name for p in entries if not p.name.isdigit()],
        "final_psnr_y": json.loads((wd / "summary.json").read_text())["final"]["psnr_y"],
        "last_logged_step": json.loads(
            (wd / "metrics.jsonl").read_text().splitlines()[-1])["step"]}


def _assert_training_survived(got: dict, num_steps: int, checkpoint_every: int) -> None:
    assert got["overlapped"] >= 3, f"only {got['overlapped']} predicts ran while the run trained"
    # every predict restored a committed step, never a half-written one
    assert min(got["steps"]) >= checkpoint_every and max(got["steps"]) <= num_steps
    assert got["checkpoints"][-1] == num_steps   # training reached its last step and saved it
    assert got["stray"] == []                    # no temp folder left behind by a predict
    assert np.isfinite(got["final_psnr_y"])
    assert got["last_logged_step"] == num_steps


def test_predict_beside_a_live_run(tmp_path):
    """CI version: 400 steps with a checkpoint every 10 (a save, and a keep-3 deletion, about
    every second), five overlapping predicts started 1.5 s apart."""
    got = _predict_beside_training(tmp_path, 400, 10, ("--config.train.eval_every=100",))
    _assert_training_survived(got, 400, 10)


@pytest.mark.slow
def test_predict_beside_a_live_run_as_in_the_issue(tmp_path):
    """The issue's exact reproduction: tiny, 1500 steps, a checkpoint every 50 (~3.5 min)."""
    got = _predict_beside_training(tmp_path, 1500, 50)
    _assert_training_survived(got, 1500, 50)


# ----------------------------------------------------------- 2. re-export keeps other files
def _files(version: str) -> dict[str, bytes]:
    from jaxsr.export import FILES
    return {name: f"{name} {version}".encode() for name in FILES}


def test_reexport_replaces_only_its_own_files(tmp_path):
    from jaxsr.export import FILES, write_artifact
    art = tmp_path / "art" / "x4"
    write_artifact(_files("v1"), art)
    png(art / "restored" / "a.png")                    # the user predicted into it
    (art / "notes.txt").write_text("mine")
    keep = {p: p.read_bytes() for p in [art / "restored" / "a.png", art / "notes.txt"]}
    write_artifact(_files("v2"), art)
    assert all(p.read_bytes() == b for p, b in keep.items())
    assert all((art / n).read_bytes() == f"{n} v2".encode() for n in FILES)
    # a folder holding only the artifact is swapped whole; no temporary folder is left behind
    only = tmp_path / "only"
    write_artifact(_files("v1"), only)
    write_artifact(_files("v2"), only)
    assert sorted(p.name for p in only.iterdir()) == sorted(FILES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art", "only"]
    assert (only / "metadata.json").read_bytes() == b"metadata.json v2"
    # the folder honours the umask (mkdtemp alone makes 0700)
    assert stat.S_IMODE(only.stat().st_mode) == 0o777 & ~_umask()


# -------------------------------------------------- 3. an unfinished multi-phase run stays usable
def _tree(path: pathlib.Path) -> dict[str, tuple]:
    return {str(p.relative_to(path)): (p.is_dir(), p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(path.rglob("*"))}


def test_unfinished_multiphase_run_is_read_only_and_recovers(run, tmp_path):
    """A run whose deployed phase ('finetune') has not started: predict/export fail with a
    clear message and create nothing; once that phase has checkpoints they are used."""
    from jaxsr.checkpoint import CheckpointError
    from jaxsr.export import export_run
    from jaxsr.run_config import load_run
    wd = tmp_path / "drtl_like"
    shutil.copytree(run, wd)
    deployed = json.loads((wd / "deployable.json").read_text())
    (wd / "deployable.json").write_text(json.dumps({**deployed, "folder": "finetune"}))
    (wd / "transfer").mkdir()
    shutil.move(str(wd / "checkpoints"), str(wd / "transfer" / "checkpoints"))
    before = _tree(wd)
    for _ in range(2):
        with pytest.raises(CheckpointError, match="finetune/checkpoints"):
            load_run(wd)
        with pytest.raises(CheckpointError, match="finetune/checkpoints"):
            export_run(wd, tmp_path / "art", platforms=("cpu",))
    assert _tree(wd) == before  # nothing created (no empty checkpoints/ folder), nothing cleaned
    assert not (tmp_path / "art").exists()
    shutil.copytree(wd / "transfer" / "checkpoints", wd / "finetune" / "checkpoints")
    before = _tree(wd)
    restored = load_run(wd)
    assert restored.checkpoint_dir == wd / "finetune" and restored.step == 20
    export_run(wd, tmp_path / "art", platforms=("cpu",))
    assert _tree(wd) == before


# ------------------------------------------------------------------------ 4. large images
def _identity():
    from jaxsr.predict import Restorer
    return Restorer(lambda x: x, 1, "identity")


def test_images_above_pils_limit_are_read_and_restored(tmp_path, monkeypatch):
    """PIL refuses images above its own limit (2x it: DecompressionBombError): jaxsr lifts it
    (a stand-in limit of 100 pixels plays PIL's ~89 megapixels for a 40x30 image)."""
    from PIL import Image
    from jaxsr.imageio import image_size, read_image
    from jaxsr.predict import predict
    path = png(tmp_path / "in" / "big.png", 30, 40, seed=3)
    want = np.asarray(Image.open(path).convert("RGB"))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    np.testing.assert_array_equal(read_image(path), want)
    assert image_size(path) == (30, 40)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    [r] = predict(tmp_path / "in", tmp_path / "out", _identity(), tile=16, overlap=4,
                  progress=False)
    assert r["out_shape"] == (30, 40, 3)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "big.png")), want)


def test_too_large_image_is_skipped_listed_and_the_batch_goes_on(tmp_path, monkeypatch):
    import jaxsr.imageio as imageio
    from jaxsr.predict import predict
    folder = tmp_path / "in"
    a, c = png(folder / "a.png", 20, 20, seed=1), png(folder / "c.png", 20, 20, seed=2)
    huge_header_png(folder / "b.png")                                   # 10^10 pixels claimed
    results = predict(folder, tmp_path / "out", _identity(), tile=16, overlap=4,
                      progress=False, skip_errors=True)
    assert [pathlib.Path(r["input"]).name for r in results] == ["a.png", "b.png", "c.png"]
    assert "error" in results[1] and "JAXSR_MAX_IMAGE_PIXELS" in results[1]["error"]
    assert "10000 megapixels" in results[1]["error"]
    for src in (a, c):  # the images after the bad one are written, exactly (identity model)
        np.testing.assert_array_equal(imageio.read_image(tmp_path / "out" / src.name),
                                      imageio.read_image(src))
    assert not (tmp_path / "out" / "b.png").exists()
    monkeypatch.setattr(imageio, "MAX_IMAGE_PIXELS", 399)  # the stated bound applies: 20x20 > it
    with pytest.raises(imageio.ImageReadError, match="above jaxsr's limit of 0 megapixels"):
        imageio.read_image(a)


def test_output_location_is_checked_before_any_image(tmp_path):
    """(The CLI checks it before the model loads: tests/test_bad_input.py.)"""
    import jaxsr.predict as pr
    png(tmp_path / "in" / "a.png")
    (tmp_path / "taken").write_text("x")
    with pytest.raises(pr.PredictError, match="is an existing file"):
        pr.predict(tmp_path / "in", tmp_path / "taken", _identity(), progress=False)
    with pytest.raises(pr.PredictError, match="cannot write into --output"):
        pr.check_output_dir(tmp_path / "taken" / "sub")
    assert (tmp_path / "taken").read_text() == "x"


# ---------------------------------------------------------------- 6. umask, resumed metrics
def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_written_images_honour_the_umask(tmp_path, mask):
    from jaxsr.imageio import write_image
    old = os.umask(mask)
    try:
        path = write_image(tmp_path / "x.png", np.zeros((4, 4, 3), np.uint8))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


def test_metrics_hold_each_step_once_after_a_resume(run, tmp_path):
    """A run killed after logging steps its last checkpoint does not hold (here: checkpoint 20
    removed, so it resumes from 10 and logs 15 and 20 again)."""
    wd = tmp_path / "resumed"
    shutil.copytree(run, wd)
    shutil.rmtree(wd / "checkpoints" / "20")
    first = [json.loads(x) for x in (wd / "metrics.jsonl").read_text().splitlines()]
    r = cli("main", f"--config={TINY}", f"--workdir={wd}")
    assert r.returncode == 0, r.stderr[-3000:]
    records = [json.loads(x) for x in (wd / "metrics.jsonl").read_text().splitlines()]
    keys = [(rec["step"], tuple(sorted(k for k in rec if k not in ("step", "time"))))
            for rec in records]
    assert len(keys) == len(set(keys)), keys  # each step once per kind of record
    assert sorted(keys) == sorted((rec["step"], tuple(sorted(k for k in rec if k not in
                                   ("step", "time")))) for rec in first)  # the same steps
    kept = [rec for rec in records if 0 < rec["step"] <= 10]
    assert kept == [rec for rec in first if 0 < rec["step"] <= 10]  # up to the resume: kept
    # the step-0 baseline the resumed run evaluates again replaces the earlier one
    assert all(rec["time"] > max(x["time"] for x in first) for rec in records
               if rec["step"] > 10)  # after it: the resumed run's values
