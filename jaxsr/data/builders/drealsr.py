"""DRealSR (Wei et al., "Component Divide-and-Conquer for Real-World Image Super-Resolution",
ECCV 2020): real LR/HR pairs from five DSLR cameras.

Release layout (manual download, github.com/xiezw5/Component-Divide-and-Conquer-for-Real-World-
Image-Super-Resolution): `x{s}/Train_x{s}/train_HR/*.png` + `train_LR/*.png` (training patches)
and `x{s}/Test_x{s}/test_HR/*.png` + `test_LR/*.png` (test images); HR and LR names differ only
in a `_x<k>` suffix (e.g. `Canon_10_x1.png` / `Canon_10_x4.png`), which is removed to pair them
and to name the record. The folders are searched for under manual_dir (extra nesting such as
`x4/Test_x4/Test_x4/test_HR` is fine). Configs: 'x2', 'x3', 'x4'; splits 'train' and 'test'.
Pairs must satisfy HR = scale x LR.

    DRealSR(config="x4", manual_dir="/data/DRealSR", data_dir=...)
"""
from __future__ import annotations

import os
import pathlib

from jaxsr.data.builders.base import Pair, PairedImageBuilder, SRConfig, pairs_in_dir

__all__ = ["DRealSR"]

_SUFFIX = r"(.+?)(?:_x\d+)?"


def _find_dirs(root: pathlib.Path, name: str, scale: int, max_depth: int = 5
               ) -> list[pathlib.Path]:
    """Folders called `name` (case-insensitive) under root, preferring paths that mention
    x{scale} (the release keeps every scale in one tree)."""
    found = []
    root_depth = len(root.parts)
    for dirpath, dirnames, _ in os.walk(root):
        here = pathlib.Path(dirpath)
        if len(here.parts) - root_depth >= max_depth:
            dirnames[:] = []
        for d in list(dirnames):
            if d.lower() == name.lower():
                found.append(here / d)
                dirnames.remove(d)  # do not descend into image folders
    tag = f"x{scale}"
    tagged = [p for p in found if any(tag in part.lower().split("_")
                                      for part in p.relative_to(root).parts[:-1])
              or tag == root.name.lower() or root.name.lower().endswith("_" + tag)]
    return tagged if tagged else (found if len(found) == 1 else [])


class DRealSR(PairedImageBuilder, skip_registration=True):
    """DRealSR real LR/HR pairs (x2 / x3 / x4)."""

    name = "drealsr"
    BUILDER_CONFIGS = [SRConfig(name=f"x{s}", scale=s, description=f"scale {s}")
                       for s in (2, 3, 4)]
    HOMEPAGE = ("https://github.com/xiezw5/"
                "Component-Divide-and-Conquer-for-Real-World-Image-Super-Resolution")
    CITATION = """@inproceedings{wei2020cdc,
  title={Component Divide-and-Conquer for Real-World Image Super-Resolution},
  author={Wei, Pengxu and Xie, Ziwei and Lu, Hannan and Zhan, ZongYuan and Ye, Qixiang and
  Zuo, Wangmeng and Lin, Liang}, booktitle={ECCV}, year={2020}}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = """manual_dir holds the DRealSR release: x{s}/Train_x{s}/
{train_HR,train_LR}/ and/or x{s}/Test_x{s}/{test_HR,test_LR}/ for the scale you build (HR and
LR files named <name>_x<k>.png)."""

    def _find_pairs(self, root: pathlib.Path, dl_manager) -> dict[str, list[Pair]]:
        scale = self.builder_config.scale
        splits = {}
        for split in ("train", "test"):
            hr = _find_dirs(root, f"{split}_HR", scale)
            lr = _find_dirs(root, f"{split}_LR", scale)
            if len(hr) > 1 or len(lr) > 1:
                raise ValueError(f"DRealSR x{scale}: several candidate folders for the "
                                 f"{split} split: {[str(p) for p in hr + lr]}; point "
                                 f"manual_dir at the x{scale} folder")
            if hr and lr:
                splits[split] = pairs_in_dir(lr[0], hr[0], _SUFFIX, _SUFFIX)
        if not splits:
            raise FileNotFoundError(f"DRealSR x{scale}: no train_HR/train_LR or "
                                    f"test_HR/test_LR folders under '{root}'.\n"
                                    f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        return splits
