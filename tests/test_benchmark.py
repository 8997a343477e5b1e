"""experiments/benchmark.py: row schema, arithmetic invariants between its columns, the parameter
count of a hand-counted EDSR, the NAFNet scale>1 skip and per-point error rows, DRTL variants that
must agree (vmap vs Python loop), and the jaxsr-vs-PyTorch `compare` section. No timing checks."""
import importlib.util
import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / "experiments" / "benchmark.py"

OK_KEYS = {
    "section", "model", "scale", "dtype", "batch", "patch", "status", "lr_patch", "params",
    "lower_s", "compile_s", "step_ms", "steps_per_s", "images_per_s", "train_hr_mpix_per_s",
    "loss", "train_gflops_per_step", "train_temp_bytes", "train_argument_bytes", "infer_size",
    "infer_batch", "infer_compile_s", "infer_ms", "infer_mpix_per_s", "peak_bytes_in_use",
    "max_rss_bytes", "backend", "device_kind", "num_devices", "num_processes", "jax_version",
    "jaxlib_version", "flax_version", "time", "flags",
}
POSITIVE = ("params", "lower_s", "compile_s", "step_ms", "steps_per_s", "images_per_s",
            "train_hr_mpix_per_s", "loss", "infer_compile_s", "infer_ms", "infer_mpix_per_s",
            "max_rss_bytes")


def _load():
    """The script as a module, loaded once (it defines absl flags at import)."""
    name = "jaxsr_experiments_benchmark"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def edsr_param_count(features: int, num_blocks: int, scale: int) -> int:
    """EDSR parameters by hand: 3x3 convs with bias; head, blocks (2 convs), body end, x2
    upsampler (conv c -> 4c), tail (c -> 3)."""
    conv = lambda cin, cout: 9 * cin * cout + cout  # noqa: E731
    assert scale == 2
    c = features
    return conv(3, c) + num_blocks * 2 * conv(c, c) + conv(c, c) + conv(c, 4 * c) + conv(c, 3)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "rows.jsonl"
    out.write_text("")   # --out appends
    cmd = [sys.executable, str(SCRIPT), "--models=edsr,nafnet_w32,no_such_model", "--scale=2",
           "--dtype=float32", "--batch=2", "--patch=16", "--steps=2", "--warmup=1",
           "--infer_size=8x12", "--infer_steps=1", f"--out={out}",
           '--model_kwargs={"edsr": {"num_blocks": 1, "features": 8, "global_residual": false}}']
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    return rows, proc.stdout


def test_cli_ok_row(cli_run):
    rows, stdout = cli_run
    assert [r["model"] for r in rows] == ["edsr", "nafnet_w32", "no_such_model"]
    row = rows[0]
    assert row["status"] == "ok", row
    assert OK_KEYS <= set(row), OK_KEYS - set(row)
    for key in POSITIVE:
        assert isinstance(row[key], (int, float)) and math.isfinite(row[key]) and row[key] > 0, key
    assert row["params"] == edsr_param_count(8, 1, 2) == 4531
    assert row["lr_patch"] == 8 and row["infer_size"] == "8x12" and row["infer_batch"] == 1
    # Columns derived from the same timed window agree with each other.
    assert row["images_per_s"] == pytest.approx(2 * row["steps_per_s"], rel=1e-9)
    assert row["step_ms"] * row["steps_per_s"] == pytest.approx(1000.0, rel=1e-9)
    assert row["train_hr_mpix_per_s"] == pytest.approx(row["images_per_s"] * 16 * 16 / 1e6,
                                                       rel=1e-9)
    # One call makes a (1, 16, 24, 3) output: 384 pixels.
    assert row["infer_mpix_per_s"] * row["infer_ms"] / 1e3 == pytest.approx(384 / 1e6, rel=1e-9)
    assert row["backend"] == "cpu" and row["peak_bytes_in_use"] is None
    assert row["flags"]["steps"] == 2 and row["flags"]["models"][0] == "edsr"
    # Every row is also printed as the same JSON line, then a table.
    printed = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert printed == rows
    assert "compile_s" in stdout and "steps/s" in stdout


def test_cli_nafnet_scale2_skipped_and_bad_model_is_an_error_row(cli_run):
    rows, stdout = cli_run
    skipped, error = rows[1], rows[2]
    assert skipped["status"] == "skipped" and "scale 1 only" in skipped["note"]
    assert "params" not in skipped
    assert "note: nafnet_w32" in stdout
    assert error["status"] == "error" and "no_such_model" in error["error"]


def test_skip_needs_no_model_build():
    bench = _load()
    cfg = bench.Settings(models=("nafnet_w32", "nafnet"), scales=(2, 4), dtypes=("float32",),
                         batches=(2,), patches=(16,), steps=1, warmup=0, infer_size=None)
    rows = bench.supervised_section(cfg)
    assert [(r["model"], r["scale"], r["status"]) for r in rows] == [
        ("nafnet_w32", 2, "skipped"), ("nafnet_w32", 4, "skipped"),
        ("nafnet", 2, "skipped"), ("nafnet", 4, "skipped")]
    point = bench.Point
    assert bench.skip_reason(point("nafnet_w32", 1, "float32", 2, 16)) is None
    assert bench.skip_reason(point("edsr_baseline", 4, "float32", 2, 16)) is None


def test_grid_and_parse_size():
    bench = _load()
    cfg = bench.Settings(models=("a", "b"), scales=(2, 3), dtypes=("float32", "bfloat16"),
                         batches=(4,), patches=(48, 96))
    points = list(bench.grid(cfg))
    assert len(points) == 2 * 2 * 2 * 1 * 2 == len(set(points))
    assert bench.parse_size("256x128") == (256, 128)
    assert bench.parse_size("64") == (64, 64)
    assert bench.parse_size("") is None and bench.parse_size("0") is None
    with pytest.raises(ValueError, match="infer_size"):
        bench.parse_size("12xab")


def test_patch_not_divisible_is_an_error_row():
    bench = _load()
    cfg = bench.Settings(models=("edsr",), scales=(3,), dtypes=("float32",), batches=(2,),
                         patches=(16,), steps=1, warmup=0, infer_size=None)
    (row,) = bench.supervised_section(cfg)
    assert row["status"] == "error" and "--patch=16" in row["error"]


# ----------------------------------------------------------------------------- drtl section

DRTL_KEYS = {
    "section", "model", "scale", "dtype", "batch", "patch", "status", "variant", "pipeline",
    "task_map", "first_order", "remat", "hessian", "inner_steps", "K", "tasks", "per_task_batch",
    "lr_patch", "mode", "aux_scale", "params", "executables", "lower_s", "compile_s", "step_ms",
    "steps_per_s", "tasks_per_s", "images_per_s", "loss", "train_gflops_per_step",
    "train_temp_bytes", "train_argument_bytes", "peak_bytes_in_use", "max_rss_bytes",
}
DRTL_POSITIVE = ("params", "lower_s", "compile_s", "step_ms", "steps_per_s", "tasks_per_s",
                 "images_per_s", "loss", "max_rss_bytes")
TINY_EDSR = {"edsr": {"num_blocks": 1, "features": 8}}


def _drtl_settings(bench, variants, tasks=("bicubic", "gaussian_noise"), **kw):
    return bench.Settings(section="drtl", models=("edsr",), scales=(2,), dtypes=("float32",),
                          batches=(2,), patches=(16,), steps=2, warmup=1, infer_size=None,
                          model_kwargs=TINY_EDSR, tasks=tasks, variants=variants, **kw)


def _check_drtl_rows(rows, names, k, batch=2, inner_steps=1):
    assert [r["variant"] for r in rows] == names
    for r in rows:
        assert r["status"] == "ok", r.get("error")
        assert DRTL_KEYS <= set(r), DRTL_KEYS - set(r)
        for key in DRTL_POSITIVE:
            assert isinstance(r[key], (int, float)) and math.isfinite(r[key]) and r[key] > 0, \
                (r["variant"], key)
        meta = r["variant"].startswith("M")
        assert r["pipeline"] == ("meta" if meta else "pretrain") and r["K"] == k
        single = r["variant"] == "P-single"
        assert r["task_map"] == ("vmap" if single else r["variant"].split("-")[1])
        assert r["backward"] == (None if meta else "single" if single else "per_task")
        assert r["first_order"] == (r["variant"].startswith("M1") if meta else None)
        assert r["remat"] == (r["variant"].endswith("-remat") if meta else None)
        assert r["hessian"] == (("autodiff" if r["variant"].startswith("M2ad") else "hvp")
                                if meta else None)
        assert r["inner_steps"] == (inner_steps if meta else None)
        # DRTL-M draws support and query halves of `batch` each per task.
        assert r["per_task_batch"] == batch * (2 if meta else 1)
        assert r["executables"] == (k + 1 if r["task_map"] == "loop" else 1)
        # configs/drtl.py keeps its global residual: EDSR + a per-channel gain (3).
        assert r["params"] == edsr_param_count(8, 1, 2) + 3 == 4534
        assert r["lr_patch"] == 8 and r["mode"] == "down" and r["aux_scale"] == 2
        assert r["tasks_per_s"] == pytest.approx(k * r["steps_per_s"], rel=1e-9)
        assert r["images_per_s"] == pytest.approx(r["per_task_batch"] * r["tasks_per_s"],
                                                  rel=1e-9)
        assert r["step_ms"] * r["steps_per_s"] == pytest.approx(1000.0, rel=1e-9)
        assert r["peak_bytes_in_use"] is None   # CPU reports none


def _same_loss(rows, prefix):
    """Variants of one pipeline and order compute the same thing from the same seed and batch
    (vmap vs lax.map vs the Python loop, remat on/off), so the last step's loss and the norm of
    its relation-weighted (meta-)gradient agree (after warmup + steps updates: the gradients of
    the earlier steps agree too)."""
    for key in ("loss", "grad_norm"):
        values = [r[key] for r in rows if r["variant"].startswith(prefix)]
        assert len(values) >= 2
        assert values == [pytest.approx(values[0], rel=1e-4)] * len(values), key


def test_drtl_section_in_process():
    bench = _load()
    names = ["P-vmap", "P-loop", "P-single"]   # DRTL-M: the CLI test and the slow test
    rows = bench.drtl_section(_drtl_settings(bench, tuple(names)))
    _check_drtl_rows(rows, names, k=2)
    assert rows[0]["tasks"] == ["bicubic", "gaussian_noise"]
    _same_loss(rows, "P-")    # the real step's one vmap and K separate calls: same gradients
    assert "tasks/s" in bench.format_table(rows) and "P-loop" in bench.format_table(rows)


@pytest.mark.slow
def test_drtl_section_every_variant():
    bench = _load()
    names = [v.name for v in bench.DRTL_VARIANTS]
    assert len(names) == 5 + 4 + 3 * 2 + 3
    rows = bench.drtl_section(_drtl_settings(bench, ("all",)))
    _check_drtl_rows(rows, names, k=2)
    _same_loss(rows, "P-")    # vmap, lax.map, unroll, the Python loop and one backward pass
    _same_loss(rows, "M2")    # hvp vs autodiff, remat, lax.map, unroll, the Python loop
    _same_loss(rows, "M1-")


def test_drtl_meta_loop_matches_vmap():
    """M2-loop (K jitted per-task second-order meta-gradient calls + one jitted update) reaches
    the real step's (M2-vmap) loss and meta-gradient norm, with 2 inner steps."""
    bench = _load()
    names = ["M2-vmap", "M2-loop"]
    rows = bench.drtl_section(_drtl_settings(bench, tuple(names), inner_steps=2))
    _check_drtl_rows(rows, names, k=2, inner_steps=2)
    assert rows[1]["executables"] == 3 and rows[1]["hessian"] == "hvp"
    _same_loss(rows, "M2-")
    assert "M2-loop" in bench.format_table(rows)


def test_drtl_cli_flags_and_error_rows(tmp_path):
    out = tmp_path / "rows.jsonl"
    cmd = [sys.executable, str(SCRIPT), "--section=drtl", "--models=edsr", "--scale=2,3",
           "--dtype=float32", "--batch=2", "--patch=16", "--steps=1", "--warmup=0",
           "--tasks=bicubic,jpeg,gaussian_blur", "--inner_steps=2", "--variants=M1-vmap",
           f"--out={out}", f"--model_kwargs={json.dumps(TINY_EDSR)}"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    ok, bad = rows
    _check_drtl_rows([ok], ["M1-vmap"], k=3, inner_steps=2)
    assert ok["tasks"] == ["bicubic", "jpeg", "gaussian_blur"]
    assert ok["flags"]["section"] == "drtl" and ok["flags"]["inner_steps"] == 2
    # 16 is not a multiple of 3: an error row that names the flag, and the run goes on.
    assert bad["status"] == "error" and bad["variant"] == "M1-vmap" and "--patch=16" in bad["error"]
    assert "tasks/s" in proc.stdout and "M1-vmap" in proc.stdout


def test_drtl_select_variants():
    bench = _load()
    names = lambda items: [v.name for v in bench.select_variants(items)]  # noqa: E731
    assert names(("P",)) == ["P-vmap", "P-map", "P-unroll", "P-loop", "P-single"]
    assert names(("M1",)) == ["M1-vmap", "M1-map", "M1-unroll"]
    assert names(("M2ad",)) == ["M2ad-vmap", "M2ad-map", "M2ad-unroll", "M2ad-vmap-remat",
                                "M2ad-map-remat", "M2ad-unroll-remat"]
    assert names(("M2",))[:4] == ["M2-vmap", "M2-map", "M2-unroll", "M2-loop"]
    assert len(names(("M2",))) == 10
    assert len(names(("M",))) == 13 and len(names(("all",))) == 18
    assert names(("M2ad-map-remat", "P-loop")) == ["P-loop", "M2ad-map-remat"]   # canonical order
    with pytest.raises(ValueError, match="P-vmap"):
        bench.select_variants(("P-pmap",))
    cfg = bench.Settings(section="drtl", models=("edsr",), scales=(2,), dtypes=("float32",),
                         batches=(2,), patches=(16,), variants=("P",))
    units = bench.isolation_units(cfg)
    assert [v for _, v in units] == ["P-vmap", "P-map", "P-unroll", "P-loop", "P-single"]


# ----------------------------------------------------------------------------- compare section

COMPARE_KEYS = {
    "lr_patch", "params", "fwd_gflops_per_image", "train_gflops_per_step",
    "xla_fwd_gflops_per_image", "xla_gflops_per_step", "peak_tflops", "peak_source",
    "jax_lower_s", "jax_compile_s", "jax_step_ms", "jax_images_per_s", "jax_tflops_per_s",
    "jax_mfu", "jax_loss", "jax_peak_bytes", "jax_temp_bytes", "jax_argument_bytes",
    "torch_status", "max_rss_bytes",
}
TORCH_KEYS = {
    "torch_version", "torch_device", "torch_device_name", "torch_compile", "torch_params",
    "torch_first_step_s", "torch_step_ms", "torch_images_per_s", "torch_tflops_per_s",
    "torch_mfu", "torch_loss", "torch_peak_bytes", "torch_peak_kind", "ratio_jax_over_torch",
}
TINY_COMPARE = {"edsr_baseline": {"num_blocks": 1, "features": 8},
                "nafnet_w32": {"width": 8, "enc_blocks": [1, 1], "middle_blocks": 1,
                               "dec_blocks": [1, 1]}}


def _compare_settings(bench, models=("edsr_baseline", "nafnet_w32"), **kw):
    return bench.Settings(section="compare", models=models, scales=(2,), dtypes=("float32",),
                          batches=(2,), patches=(16,), steps=2, warmup=1, infer_size=None,
                          model_kwargs=TINY_COMPARE, **kw)


def _check_compare_row(r, batch=2):
    assert r["status"] == "ok", r.get("error")
    assert COMPARE_KEYS <= set(r), COMPARE_KEYS - set(r)
    assert r["train_gflops_per_step"] == pytest.approx(3 * batch * r["fwd_gflops_per_image"])
    assert r["jax_tflops_per_s"] == pytest.approx(
        r["train_gflops_per_step"] / 1e3 * r["jax_images_per_s"] / batch)
    if r["xla_fwd_gflops_per_image"] is not None:   # XLA's count of the same forward: close
        assert 0.7 < r["xla_fwd_gflops_per_image"] / r["fwd_gflops_per_image"] < 1.4
    assert r["jax_loss"] > 0 and math.isfinite(r["jax_loss"])


def test_compare_section_tiny_models_with_torch():
    pytest.importorskip("torch")
    bench = _load()
    cfg = _compare_settings(bench, peak_tflops=0.5)
    # NAFNet restores only: it runs at scale 1 whatever --scale says.
    assert [(p.model, p.scale) for p in bench.compare_points(cfg)] == [
        ("edsr_baseline", 2), ("nafnet_w32", 1)]
    rows = bench.compare_section(cfg)
    assert [(r["model"], r["scale"]) for r in rows] == [("edsr_baseline", 2), ("nafnet_w32", 1)]
    for r in rows:
        _check_compare_row(r)
        assert TORCH_KEYS <= set(r), TORCH_KEYS - set(r)
        assert r["torch_status"] == "ok" and r["torch_device"] == "cpu"
        # The same network on both sides: same parameter count, same loss scale at init.
        assert r["torch_params"] == r["params"] and "note" not in r
        assert r["torch_loss"] == pytest.approx(r["jax_loss"], rel=0.5)
        assert r["ratio_jax_over_torch"] == pytest.approx(
            r["jax_images_per_s"] / r["torch_images_per_s"])
        # --peak_tflops: MFU = achieved / peak on both sides.
        assert r["peak_tflops"] == 0.5 and r["peak_source"] == "flag"
        assert r["jax_mfu"] == pytest.approx(r["jax_tflops_per_s"] / 0.5)
        assert r["torch_mfu"] == pytest.approx(r["torch_tflops_per_s"] / 0.5)
        assert r["torch_peak_kind"] == "max_rss" and r["torch_peak_bytes"] > 0
    assert rows[0]["params"] == edsr_param_count(8, 1, 2)
    table = bench.format_compare_table(rows)
    lines = table.splitlines()
    assert lines[0].startswith("| model |") and "jaxsr/torch" in lines[0]
    assert "torch MFU" in lines[0] and lines[1].startswith("|---|")
    assert lines[2].startswith("| edsr_baseline | 2 | float32 |")
    assert lines[3].startswith("| nafnet_w32 | 1 | float32 |")
    assert all(line.count("|") == lines[0].count("|") for line in lines[1:4])


def test_compare_without_torch(monkeypatch):
    """`import torch` failing: the torch columns say so, the jaxsr side runs, MFU blank on CPU."""
    bench = _load()
    monkeypatch.setitem(sys.modules, "torch", None)   # makes `import torch` raise ImportError
    (row,) = bench.compare_section(_compare_settings(bench, models=("edsr_baseline",)))
    _check_compare_row(row)
    assert row["torch_status"] == "torch not installed"
    assert not TORCH_KEYS & set(row)
    assert row["peak_tflops"] is None and row["jax_mfu"] is None   # CPU: no peak in the table
    assert "torch not installed" in bench.format_compare_table([row])


def test_compare_table_is_registered():
    bench = _load()
    assert "compare" in bench.SECTIONS and bench.TABLES["compare"] is bench.format_compare_table
    cfg = _compare_settings(bench)
    assert [(p.model, p.scale) for p, _ in bench.isolation_units(cfg)] == [
        ("edsr_baseline", 2), ("nafnet_w32", 1)]


def test_scale_section_runs_every_part_and_prints_one_table_each(monkeypatch):
    """--section=scale runs compare, compile, tiled, pipeline and the K = 8 DRTL steps in one run
    (the parts stubbed here; each has its own test or script) and prints a table per part."""
    bench = _load()
    calls = []

    def part(name):
        def run(cfg):
            calls.append((name, cfg))
            return [{"section": name, "model": "m", "value": 1.5, "status": "ok"}]
        return run
    for name in ("compare", "compile", "tiled", "pipeline", "drtl"):
        monkeypatch.setattr(bench, f"{name}_section", part(name))
    cfg = bench.Settings(section="scale", models=("edsr_baseline", "unet"))
    rows = bench.scale_section(cfg)
    assert [c[0] for c in calls] == ["compare", "compile", "tiled", "pipeline", "drtl"]
    assert calls[0][1].models == ("edsr_baseline",)               # compare: the networks
    drtl_cfg = calls[-1][1]
    assert len(drtl_cfg.tasks) == 8 and drtl_cfg.variants == bench.SCALE_DRTL_VARIANTS
    assert {"scale", "pipeline", "tiled", "compile"} <= set(bench.SECTIONS)
    # (compare and drtl rows need their real fields for their tables)
    text = bench.format_tables("scale", [r for r in rows if r["section"] not in ("compare", "drtl")])
    assert text.count("### ") == 3 and "### pipeline" in text and "| 1.5 |" in text
