"""The IRConStyle Colab notebook: stored without outputs, and it runs end to end with `tiny`
(sigma-25 denoising on the shipped clean images: the cheapest degradation to compile)."""
import nbformat

from test_notebooks import NOTEBOOKS, execute, images_shown

NAME = "irconstyle_colab_tpu"


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOKS / f"{NAME}.ipynb", as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    assert f"experiments/notebooks/{NAME}.ipynb" in nb.cells[0].source


def test_notebook_runs_with_tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXSR_NB_TASK", "denoise25")
    nb, text = execute(NAME, tmp_path / "run", monkeypatch)
    assert "held-out PSNR-Y" in text and "diagonal mean" in text and "exported:" in text
    assert images_shown(nb) >= 2   # the contrastive picture and the before/after crops
    assert (tmp_path / "run" / "irconstyle_model.zip").is_file()
