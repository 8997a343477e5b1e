"""Bicubic baseline on Set5 / Set14: checks jaxsr.imresize + jaxsr.metrics against published tables.

Usage:
  python experiments/bicubic_baseline.py [--data_dir ../shared/data] [--sets set5,set14]
      [--scales 2,3,4] [--per_image]

Two protocols, both with crop_border = scale and metrics averaged over the images of a set:

* "RGB LR" (BasicSR-style): the released RGB LR image is upsampled with `jaxsr.imresize`
  (bicubic, float) and rounded to uint8; PSNR/SSIM on Y with Y rounded to an integer (MATLAB
  uint8 `rgb2ycbcr`), on unrounded Y, and on RGB. Gray files are read as RGB (R = G = B).
* "classic" (the protocol of the SRCNN / VDSR era tables, e.g. bicubic Set5 x2 = 33.66 dB): only
  the luma is degraded: Y = rgb2ycbcr(HR) rounded, then (Y / 255) is downscaled and upscaled
  in float with the same imresize, rounded to uint8 and compared with Y. Single-channel files
  (Set14 'bridge') are used as they are, without the Y mapping 16 + 219/255 * v, as the MATLAB
  scripts did (`if size(im, 3) > 1, im = rgb2ycbcr(im); ...`).

The published columns are the bicubic rows of VDSR (Kim et al., CVPR 2016, Table 3).
"""
from __future__ import annotations

import functools
import pathlib
import sys
import time

import jax
import numpy as np
from absl import app, flags
from PIL import Image

try:
    import jaxsr  # noqa: F401
except ImportError:  # run as a script from a checkout without installing
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from jaxsr import metrics
from jaxsr.imageio import read_image
from jaxsr.imresize import imresize

# (set, scale) -> (PSNR on Y, SSIM on Y), bicubic, VDSR Table 3.
PUBLISHED = {
    ("set5", 2): (33.66, 0.9299), ("set5", 3): (30.39, 0.8682), ("set5", 4): (28.42, 0.8104),
    ("set14", 2): (30.24, 0.8688), ("set14", 3): (27.55, 0.7742), ("set14", 4): (26.00, 0.7027),
}

_DATA_DIR = flags.DEFINE_string("data_dir", "../shared/data",
                                "Folder with set5/ and set14/ (x{s}/hr, x{s}/lr).")
_SETS = flags.DEFINE_list("sets", ["set5", "set14"], "Comma-separated test sets.")
_SCALES = flags.DEFINE_list("scales", ["2", "3", "4"], "Comma-separated integer scales.")
_PER_IMAGE = flags.DEFINE_bool("per_image", False, "Also print one row per image.")


def _round_uint8(x) -> np.ndarray:
    return np.clip(np.floor(np.asarray(x, np.float64) + 0.5), 0, 255).astype(np.uint8)


def is_single_channel_file(path: pathlib.Path) -> bool:
    """True when the file stores one gray channel (PIL modes 1, L, LA, I, I;16...)."""
    with Image.open(path) as im:
        return im.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


# One compiled program per image shape (cheaper than op-by-op dispatch for new shapes).
@functools.partial(jax.jit, static_argnums=1)
def _upsample(x, scale: int):
    return imresize(x, scale)


@functools.partial(jax.jit, static_argnums=1)
def _down_up(y, scale: int):
    return imresize(imresize(y, 1.0 / scale), output_shape=y.shape[:2])


def upsample_rgb(lr: np.ndarray, scale: int) -> np.ndarray:
    """(h, w, 3) uint8 -> (h*scale, w*scale, 3) uint8: float bicubic imresize, then rounded."""
    return _round_uint8(_upsample(lr.astype(np.float32), scale))


def classic_luma(hr: np.ndarray, scale: int, single_channel: bool):
    """Classic protocol on the luma: (reference Y, bicubic Y), each (H, W) float64 in [0, 255]."""
    ref = hr[..., 0].astype(np.float64) if single_channel else metrics.rgb_to_y(hr, rounded=True)
    up = _down_up((ref / 255.0).astype(np.float32)[..., None], scale)
    return ref, _round_uint8(np.asarray(up)[..., 0] * 255.0).astype(np.float64)


def evaluate_image(hr: np.ndarray, lr: np.ndarray, scale: int, single_channel: bool = False,
                   protocols=("rgb", "classic")) -> dict:
    """Metrics of the bicubic baseline for one (HR, LR) uint8 pair; keys listed in COLUMNS."""
    out = {}
    c = scale
    if "rgb" in protocols:
        sr = upsample_rgb(lr, scale)
        if sr.shape != hr.shape:
            raise ValueError(f"upsampled LR {sr.shape} != HR {hr.shape}; the LR must be HR/{scale}")
        out["psnr_y_rounded"] = metrics.psnr(sr, hr, c, test_y_channel=True, y_rounded=True)
        out["ssim_y_rounded"] = metrics.ssim(sr, hr, c, test_y_channel=True, y_rounded=True)
        out["psnr_y_float"] = metrics.psnr(sr, hr, c, test_y_channel=True)
        out["ssim_y_float"] = metrics.ssim(sr, hr, c, test_y_channel=True)
        out["psnr_rgb"] = metrics.psnr(sr, hr, c)
        out["ssim_rgb"] = metrics.ssim(sr, hr, c)
    if "classic" in protocols:
        ref, up = classic_luma(hr, scale, single_channel)
        out["psnr_classic"] = metrics.psnr(up, ref, c)
        out["ssim_classic"] = metrics.ssim(up, ref, c)
    return out


def evaluate_set(data_dir, name: str, scale: int, protocols=("rgb", "classic")) -> list[dict]:
    """Per-image metrics for data_dir/name/x{scale}/{hr,lr}/*.png, sorted by file name."""
    hr_dir = pathlib.Path(data_dir) / name / f"x{scale}" / "hr"
    files = sorted(hr_dir.glob("*.png"))
    if not files:
        raise FileNotFoundError(f"no HR images in {hr_dir}; pass --data_dir pointing at the folder "
                                f"that holds {name}/x{scale}/hr and lr")
    rows = []
    for hr_path in files:
        lr_path = hr_dir.parent / "lr" / hr_path.name
        row = evaluate_image(read_image(hr_path), read_image(lr_path), scale,
                             is_single_channel_file(hr_path), protocols)
        rows.append({"image": hr_path.stem, **row})
    return rows


COLUMNS = [  # key, header, format
    ("psnr_y_rounded", "PSNR-Y (rounded Y)", "{:.4f}"),
    ("ssim_y_rounded", "SSIM-Y (rounded Y)", "{:.4f}"),
    ("psnr_y_float", "PSNR-Y (float Y)", "{:.4f}"),
    ("ssim_y_float", "SSIM-Y (float Y)", "{:.4f}"),
    ("psnr_rgb", "PSNR-RGB", "{:.4f}"),
    ("ssim_rgb", "SSIM-RGB", "{:.4f}"),
    ("psnr_classic", "PSNR-Y classic", "{:.4f}"),
    ("ssim_classic", "SSIM-Y classic", "{:.4f}"),
]


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main(argv) -> None:
    del argv
    scales = [int(s) for s in _SCALES.value]
    summary, start = [], time.time()
    for name in _SETS.value:
        for s in scales:
            rows = evaluate_set(_DATA_DIR.value, name, s)
            means = {k: float(np.mean([r[k] for r in rows])) for k, _, _ in COLUMNS}
            pub = PUBLISHED.get((name, s), (float("nan"), float("nan")))
            summary.append([name, f"x{s}", str(len(rows))]
                           + [f.format(means[k]) for k, _, f in COLUMNS]
                           + [f"{pub[0]:.2f}", f"{pub[1]:.4f}"])
            if _PER_IMAGE.value:
                print(f"\n{name} x{s}, per image:\n")
                print(_table(["image"] + [h for _, h, _ in COLUMNS],
                             [[r["image"]] + [f.format(r[k]) for k, _, f in COLUMNS]
                              for r in rows]))
    print("\nBicubic baseline, crop_border = scale, mean over images. RGB-LR columns: released "
          "RGB LR upsampled with jaxsr.imresize and rounded; classic: Y-only pipeline (see "
          "module docstring).\n")
    print(_table(["set", "scale", "n"] + [h for _, h, _ in COLUMNS]
                 + ["published PSNR-Y", "published SSIM-Y"], summary))
    print(f"\n({time.time() - start:.1f} s)")


if __name__ == "__main__":
    app.run(main)
