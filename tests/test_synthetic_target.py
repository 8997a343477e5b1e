"""experiments/make_synthetic_target.py: the known-mix target (disk blur + Poisson noise)."""
import os
import pathlib
import subprocess
import sys

import numpy as np
from scipy import ndimage

from jaxsr.imageio import read_image

REPO = pathlib.Path(__file__).resolve().parents[1]
CLEAN = REPO / "jaxsr" / "samples" / "clean_hr"


def test_lr_is_the_disk_blur_plus_poisson_noise_of_hr(tmp_path):
    """LR - blur(HR) is zero-mean noise whose variance follows the Poisson law v / peak; the blur
    is scipy's convolution with a hand-built anti-aliased disk (mirror edges)."""
    src = tmp_path / "src"
    src.mkdir()
    for p in sorted(CLEAN.glob("*.png"))[:2]:
        (src / p.name).symlink_to(p)
    out = tmp_path / "out"
    peak, radius = 400.0, 3.0
    proc = subprocess.run([sys.executable, str(REPO / "experiments" / "make_synthetic_target.py"),
                           f"--src_dir={src}", f"--out_dir={out}", "--crop=0",
                           f"--radius={radius}", f"--peak={peak}"],
                          capture_output=True, text=True, env={**os.environ,
                                                               "JAX_PLATFORMS": "cpu"}, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = np.arange(-5, 6, dtype=np.float64)
    dist = np.hypot(*np.meshgrid(r, r, indexing="ij"))
    disk = np.clip(radius + 0.5 - dist, 0, 1)
    disk /= disk.sum()
    for p in sorted(src.iterdir()):
        hr = read_image(p).astype(np.float64) / 255.0
        lr = read_image(out / "lr" / f"{p.stem}.png").astype(np.float64) / 255.0
        assert np.array_equal(read_image(out / "hr" / f"{p.stem}.png"), read_image(p))
        blurred = np.stack([ndimage.convolve(hr[..., c], disk, mode="mirror")
                            for c in range(3)], -1)
        inner = (blurred > 0.1) & (blurred < 0.9)   # away from clipping
        resid = (lr - blurred)[inner]
        assert abs(resid.mean()) < 2e-3
        expected_var = np.mean(blurred[inner] / peak) + 1 / (12 * 255 ** 2)  # + uint8 rounding
        assert abs(resid.var() / expected_var - 1) < 0.1
