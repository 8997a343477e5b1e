"""The PCL-SR Colab notebook: stored without outputs, Colab-only lines guarded, and it runs
end to end on CPU with the tiny variant (train, the samples picture, before/after, export)."""
import json
import re

import pytest

from test_notebooks import NOTEBOOKS, _enclosing_ifs, execute, images_shown

nbformat = pytest.importorskip("nbformat", reason="notebook tests need nbformat (test extras)")
NAME = "pcl_colab_tpu"


def test_pcl_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOKS / f"{NAME}.ipynb", as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    header = nb.cells[0].source
    assert "https://colab.research.google.com/github/" in header
    assert f"experiments/notebooks/{NAME}.ipynb" in header
    for cell in nb.cells:
        lines = cell.source.splitlines() if cell.cell_type == "code" else []
        for i, line in enumerate(lines):
            if "google.colab" in line and "sys.modules" not in line or "/content" in line:
                assert _enclosing_ifs(lines, i), f"unguarded Colab-only line: {line.strip()}"


def test_pcl_notebook_runs(tmp_path, monkeypatch):
    from jaxsr import export
    workdir = tmp_path / "pcl"
    nb, text = execute(NAME, workdir, monkeypatch)
    assert "CPU (no accelerator found)" in text  # the fallback path on this machine
    summary = json.loads((workdir / "summary.json").read_text())
    match = re.search(r"held-out PSNR-Y: ([\d.]+) dB", text)
    assert match and float(match.group(1)) == pytest.approx(summary["final"]["psnr_y"], abs=0.01)
    sims = re.search(r"s\(SR, positives\): \[([^\]]+)\]\s+s\(SR, negatives\): \[([^\]]+)\]",
                     text)
    assert sims and len(sims.group(1).split()) == 4 and len(sims.group(2).split()) == 4
    loaded = export.load(workdir / "pcl_model.zip")
    assert loaded.metadata["method"] == "pcl"
    assert images_shown(nb) >= 2  # the samples picture and the before/after crops
