"""Shipped sample images: present, aligned, small, and reachable through jaxsr.samples.path."""
import pathlib

import numpy as np
import pytest
from PIL import Image

from jaxsr import samples


def _read(p: pathlib.Path) -> np.ndarray:
    return np.asarray(Image.open(p).convert("RGB"))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10.0 * np.log10(255.0**2 / mse)


def test_names_and_paths():
    assert set(samples.names()) == {"city100_nikon", "city100_iphone", "clean_hr"}
    for name in samples.names():
        p = samples.path(name)
        assert isinstance(p, pathlib.Path) and p.is_dir() and p.name == name


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="city100_nikon.*city100_iphone.*clean_hr"):
        samples.path("city100")


@pytest.mark.parametrize("name,count", [("city100_nikon", 8), ("city100_iphone", 4)])
def test_pairs_are_aligned_and_same_size(name, count):
    root = samples.path(name)
    lr_files = sorted((root / "lr").glob("*.png"))
    hr_files = sorted((root / "hr").glob("*.png"))
    assert len(lr_files) == count
    assert [f.name for f in lr_files] == [f.name for f in hr_files]
    for lr_f, hr_f in zip(lr_files, hr_files):
        lr, hr = _read(lr_f), _read(hr_f)
        assert lr.shape == hr.shape and lr.shape[0] >= 192 and lr.shape[2] == 3
        assert _psnr(lr, hr) > 18.0, lr_f
        # Alignment is real, not just similar colours: shifting the HR by 8 px lowers the PSNR.
        assert _psnr(lr[8:], hr[8:]) > _psnr(lr[8:], hr[:-8]) + 1.0, lr_f
        # Texture, not flat sky: mean absolute gradient of the HR gray image.
        g = hr.astype(np.float64).mean(-1)
        assert np.abs(np.diff(g, axis=1)).mean() > 4.0, hr_f


def test_clean_hr_images():
    files = sorted(samples.path("clean_hr").glob("*.png"))
    assert len(files) == 8
    for f in files:
        img = _read(f)
        assert img.shape[2] == 3 and min(img.shape[:2]) >= 64
        assert img.std() > 10.0, f


def test_total_size_and_licenses():
    root = pathlib.Path(samples.__file__).parent
    total = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    assert total < 6 * 1024 * 1024
    text = (root / "LICENSES.md").read_text()
    assert "MIT" in text and "CameraSR" in text and "SelfExSR" in text
    for f in root.rglob("*.png"):  # every shipped image is listed with its crop box
        rel = f.relative_to(root)
        paired = rel.parts[0].startswith("city100")
        key = f"{rel.parts[0]}/{{lr,hr}}/{f.name}" if paired else rel.as_posix()
        assert f"`{key}`" in text, rel
