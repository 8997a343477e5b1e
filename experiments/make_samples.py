"""Regenerates the small sample images shipped in jaxsr/samples from the shared real-image data.

Usage:
  python experiments/make_samples.py --data_dir ../shared/data [--out_dir jaxsr/samples]

What it writes (all PNG, optimize=True), plus LICENSES.md with sources, licenses and crop boxes:
  city100_nikon/{lr,hr}/NNN.png   Nikon D5500 pairs, one aligned 256x256 box per pair (same box
                                  in LR and HR; City100 LR is registered onto the HR grid)
  city100_iphone/{lr,hr}/NNN.png  iPhone X pairs, same
  clean_hr/NNN.png                192x192 crops of BSD100 HR images
NNN keeps the number of the source image. The box is picked automatically: among boxes on a
32-pixel grid, the one with the most texture (mean absolute gradient of the HR gray image) whose
LR-vs-HR PSNR is at least --min_psnr dB (guards against a badly registered corner). Deterministic.
"""
from __future__ import annotations

import argparse
import pathlib
import shutil

import numpy as np
from PIL import Image

CITY100 = {  # sample name -> (folder under data_dir, image numbers)
    "city100_nikon": ("city100/nikon_d5500", [1, 2, 3, 4, 5, 6, 7, 8]),
    "city100_iphone": ("city100/iphone_x", [1, 2, 3, 4]),
}
CLEAN_HR = ("bsd100/hr", [1, 2, 3, 4, 5, 6, 7, 8])


def _read(path: pathlib.Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; pass --data_dir pointing at the shared data "
                                "folder (it has city100/ and bsd100/)")
    return np.asarray(Image.open(path).convert("RGB"))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10.0 * np.log10(255.0**2 / max(mse, 1e-12)))


def _texture(gray: np.ndarray) -> float:
    return float(np.abs(np.diff(gray, axis=0)).mean() + np.abs(np.diff(gray, axis=1)).mean())


def pick_box(hr: np.ndarray, size: int, lr: np.ndarray | None = None, min_psnr: float = 0.0,
             stride: int = 32) -> tuple[int, int]:
    """Top-left (y, x) of the most textured size x size box (PSNR(lr, hr) >= min_psnr if lr)."""
    gray = hr.astype(np.float64).mean(-1)
    best, best_score = None, -1.0
    for y in range(0, hr.shape[0] - size + 1, stride):
        for x in range(0, hr.shape[1] - size + 1, stride):
            if lr is not None and _psnr(lr[y:y + size, x:x + size],
                                        hr[y:y + size, x:x + size]) < min_psnr:
                continue
            score = _texture(gray[y:y + size, x:x + size])
            if score > best_score:
                best, best_score = (y, x), score
    if best is None:
        raise ValueError(f"no {size}x{size} box with PSNR >= {min_psnr} dB; lower --min_psnr")
    return best


def _save(img: np.ndarray, path: pathlib.Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, optimize=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", type=pathlib.Path, required=True)
    parser.add_argument("--out_dir", type=pathlib.Path,
                        default=pathlib.Path(__file__).resolve().parents[1] / "jaxsr" / "samples")
    parser.add_argument("--pair_size", type=int, default=256)
    parser.add_argument("--clean_size", type=int, default=192)
    parser.add_argument("--min_psnr", type=float, default=19.0)
    args = parser.parse_args(argv)

    rows = []
    for name, (folder, ids) in CITY100.items():
        shutil.rmtree(args.out_dir / name, ignore_errors=True)
        for i in ids:
            lr = _read(args.data_dir / folder / "lr" / f"{i:03d}.png")
            hr = _read(args.data_dir / folder / "hr" / f"{i:03d}.png")
            y, x = pick_box(hr, args.pair_size, lr, args.min_psnr)
            box = (slice(y, y + args.pair_size), slice(x, x + args.pair_size))
            _save(lr[box], args.out_dir / name / "lr" / f"{i:03d}.png")
            _save(hr[box], args.out_dir / name / "hr" / f"{i:03d}.png")
            rows.append((f"{name}/{{lr,hr}}/{i:03d}.png", f"{folder}/{{lr,hr}}/{i:03d}.png",
                         y, x, args.pair_size, f"{_psnr(lr[box], hr[box]):.2f}"))
    shutil.rmtree(args.out_dir / "clean_hr", ignore_errors=True)
    folder, ids = CLEAN_HR
    for i in ids:
        hr = _read(args.data_dir / folder / f"{i:03d}.png")
        y, x = pick_box(hr, args.clean_size)
        _save(hr[y:y + args.clean_size, x:x + args.clean_size],
              args.out_dir / "clean_hr" / f"{i:03d}.png")
        rows.append((f"clean_hr/{i:03d}.png", f"{folder}/{i:03d}.png", y, x, args.clean_size, "-"))

    table = "\n".join(f"| `{a}` | `{b}` | ({y}, {x}) | {s}x{s} | {p} |"
                      for a, b, y, x, s, p in rows)
    (args.out_dir / "LICENSES.md").write_text(LICENSES.format(table=table))
    print(f"wrote {len(rows)} samples to {args.out_dir}")


LICENSES = """\
# Sample images shipped with jaxsr: sources, licenses, crops

These are small crops of real photographs, for examples, smoke tests and tutorials. They were made
by `experiments/make_samples.py --data_dir <shared data>` (deterministic; rerun it to regenerate).

## Sources and licenses

- `city100_nikon/`, `city100_iphone/`: City100 dataset, Chen et al., "Camera Lens
  Super-Resolution", CVPR 2019, https://github.com/ngchc/CameraSR, **MIT license**
  (Copyright (c) the CameraSR authors). Real optical-zoom LR/HR pairs (Nikon D5500 and iPhone X);
  the LR was captured at a shorter focal length and registered onto the HR grid, so LR and HR have
  the same size (scale 1 pairs; the optical zoom factor is about 2.9 for the Nikon and 2.4 for the
  iPhone). Our source is the central 512x512 crop of each pair.
- `clean_hr/`: BSD100 HR images (Martin et al., Berkeley Segmentation Dataset) as distributed in
  the SelfExSR release (Huang et al., CVPR 2015, https://github.com/jbhuang0604/SelfExSR),
  **academic / research use only**. Cropped to a multiple of 4 before we cropped again.

## How each file was cropped

The box is the most textured one (mean absolute gradient of the HR gray image) on a 32-pixel grid
whose LR-vs-HR PSNR is at least 19 dB (City100 only). The same box is cut from LR and HR, so the
pairs stay aligned. Box = (top, left) in the 512x512 City100 source or in the full BSD100 image.

| file | source | box (y, x) | size | PSNR LR vs HR (dB) |
|---|---|---|---|---|
{table}
"""

if __name__ == "__main__":
    main()
