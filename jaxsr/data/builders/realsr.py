"""RealSR v3 (Cai et al., ICCV 2019): real LR/HR pairs from Canon 5D3 and Nikon D810 zooms.

Version 3 layout (manual download from github.com/csjcai/RealSR):
`RealSR(V3)/{Canon,Nikon}/{Train,Test}/{2,3,4}/<Camera>_NNN_HR.png` and `..._LR{2,3,4}.png`,
with HR = scale x LR. Configs: 'canon_x2' ... 'nikon_x4'; splits 'train' and 'test'.

    RealSR(config="canon_x4", manual_dir="/data/RealSR(V3)", data_dir=...)
"""
from __future__ import annotations

import dataclasses
import pathlib

from jaxsr.data.builders.base import Pair, PairedImageBuilder, SRConfig, find_child, pairs_in_dir

__all__ = ["RealSR", "RealSRConfig"]


@dataclasses.dataclass(eq=False)
class RealSRConfig(SRConfig):
    camera: str = "Canon"


class RealSR(PairedImageBuilder, skip_registration=True):
    """RealSR v3 real LR/HR pairs (Canon / Nikon, x2 / x3 / x4)."""

    name = "realsr"
    BUILDER_CONFIGS = [
        RealSRConfig(name=f"{camera.lower()}_x{s}", camera=camera, scale=s,
                     description=f"{camera} pairs, scale {s}")
        for camera in ("Canon", "Nikon") for s in (2, 3, 4)
    ]
    HOMEPAGE = "https://github.com/csjcai/RealSR"
    CITATION = """@inproceedings{cai2019toward,
  title={Toward Real-World Single Image Super-Resolution: A New Benchmark and A New Model},
  author={Cai, Jianrui and Zeng, Hui and Yong, Hongwei and Cao, Zisheng and Zhang, Lei},
  booktitle={ICCV}, year={2019}}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = """manual_dir is the RealSR version-3 folder 'RealSR(V3)' (or
its parent), holding Canon/ and Nikon/, each with Train/{2,3,4}/ and Test/{2,3,4}/ containing
<Camera>_NNN_HR.png and <Camera>_NNN_LR<scale>.png."""

    def _find_pairs(self, root: pathlib.Path, dl_manager) -> dict[str, list[Pair]]:
        cfg = self.builder_config
        camera = find_child(root, cfg.camera)
        if camera is None:  # root is the parent of 'RealSR(V3)' (any name holding the camera)
            for child in sorted(p for p in root.iterdir() if p.is_dir()):
                camera = camera or find_child(child, cfg.camera)
        if camera is None:
            raise FileNotFoundError(f"RealSR: no '{cfg.camera}/' folder in '{root}' or its "
                                    f"subfolders.\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        splits = {}
        for split, folder in (("train", "Train"), ("test", "Test")):
            scale_dir = find_child(find_child(camera, folder) or camera / folder, str(cfg.scale))
            if scale_dir is not None:
                splits[split] = pairs_in_dir(scale_dir, scale_dir, rf"(.+)_LR{cfg.scale}",
                                             r"(.+)_HR")
        if not splits:
            raise FileNotFoundError(f"RealSR: neither '{camera}/Train/{cfg.scale}' nor "
                                    f"'{camera}/Test/{cfg.scale}' exists.\n"
                                    f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        return splits
