"""The CRL-SR Colab notebook is stored without outputs and runs end to end on CPU with `tiny`:
it trains, shows the generator, the contrastive similarity maps and before/after crops,
prints PSNR against bicubic, and exports the deployed network."""
import re


from test_notebooks import NOTEBOOKS, execute, images_shown, nbformat


def test_crl_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOKS / "crl_colab_tpu.ipynb", as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    assert "experiments/notebooks/crl_colab_tpu.ipynb" in nb.cells[0].source


def test_crl_notebook_runs(tmp_path, monkeypatch):
    nb, text = execute("crl_colab_tpu", tmp_path / "run", monkeypatch)
    m = re.search(r"held-out PSNR-Y: ([\d.]+) dB \(bicubic ([\d.]+) dB\)", text)
    assert m and 10 < float(m.group(1)) < 50, text[-2000:]
    assert images_shown(nb) >= 3           # generator, similarity maps, before/after
    assert "auxiliary (not deployed)" in text
    assert (tmp_path / "run" / "crl_model.zip").is_file()
