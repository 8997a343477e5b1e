"""Rain100L / Rain100H deraining pairs (Yang et al., "Deep Joint Rain Detection and Removal
from a Single Image", CVPR 2017): records {'lr': rainy, 'hr': clean, 'name'} (same size).

manual_dir is the set's folder (or one containing `Rain100L/` / `Rain100H/`). If it has
`train/` and/or `test/` subfolders each becomes a split, otherwise the folder is the 'test'
split. Inside a split folder, any of these layouts (names are paired with a leading 'rain-' /
'norain-' removed, so `rain-001.png` and `norain-001.png` form the pair '001'):

  rain/ + clean/           (jaxsr)
  input/ + target/         (Restormer / MPRNet)
  rainy/ + norain/, rain/ + norain/, rainy/ + gt/ (or GT/)
  rainy/rain-NNN.png + norain-NNN.png next to rainy/ (original JORDER / PReNet release)

    Rain100L(manual_dir="/data/Rain100L", data_dir=...)
"""
from __future__ import annotations

import pathlib

from jaxsr.data.builders.base import Pair, PairedImageBuilder, find_child, pairs_in_dir
from jaxsr.imageio import list_images

__all__ = ["Rain100L", "Rain100H"]

_LAYOUTS = (("rain", "clean"), ("input", "target"), ("rainy", "norain"), ("rain", "norain"),
            ("rainy", "gt"))
_KEY = r"(?:(?:no)?rain-)?(.+?)"
_INSTRUCTIONS = "\n\n".join(__doc__.split("\n\n")[1:3]).strip()


def _split_pairs(d: pathlib.Path) -> list[Pair] | None:
    for lr_name, hr_name in _LAYOUTS:
        lr, hr = find_child(d, lr_name), find_child(d, hr_name)
        if lr is not None and hr is not None:
            return pairs_in_dir(lr, hr, _KEY, _KEY)
    rainy = find_child(d, "rainy")
    if rainy is not None and any(p.stem.lower().startswith("norain-") for p in list_images(d)):
        return pairs_in_dir(rainy, d, _KEY, r"norain-(.+)")
    return None


class _Rain100(PairedImageBuilder, skip_registration=True):
    """Base of Rain100L / Rain100H."""

    ALIAS = ""
    HOMEPAGE = "https://www.icst.pku.edu.cn/struct/Projects/joint_rain_removal.html"
    CITATION = """@inproceedings{yang2017deep,
  title={Deep Joint Rain Detection and Removal from a Single Image},
  author={Yang, Wenhan and Tan, Robby T and Feng, Jiashi and Liu, Jiaying and Guo, Zongming
  and Yan, Shuicheng}, booktitle={CVPR}, year={2017}}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS

    def _find_pairs(self, root: pathlib.Path, dl_manager) -> dict[str, list[Pair]]:
        d = find_child(root, self.ALIAS) or root
        split_dirs = {s: find_child(d, s) for s in ("train", "test")}
        split_dirs = {s: p for s, p in split_dirs.items() if p is not None} or {"test": d}
        splits = {}
        for split, folder in split_dirs.items():
            pairs = _split_pairs(folder)
            if pairs is None:
                raise FileNotFoundError(
                    f"{type(self).__name__}: no rainy/clean folders in '{folder}'.\n"
                    f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
            splits[split] = pairs
        return splits


class Rain100L(_Rain100, skip_registration=True):
    """Rain100L: light synthetic rain streaks (100 test pairs)."""
    name = "rain100l"
    ALIAS = "Rain100L"


class Rain100H(_Rain100, skip_registration=True):
    """Rain100H: heavy synthetic rain streaks (100 test pairs)."""
    name = "rain100h"
    ALIAS = "Rain100H"
