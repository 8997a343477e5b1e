"""City100 (Chen et al., "Camera Lens Super-Resolution", CVPR 2019): real optical-zoom pairs.

LR and HR are the same size (the LR, shot at a shorter focal length, is registered onto the HR
grid), so scale = 1. Configs: 'nikon' (Nikon D5500, DSLR) and 'iphone' (iPhone X).
Splits: 'test' = pairs 001, 016, 048, 060, 098 (the ones the authors' inference script
evaluates), 'train' = the rest.

    City100(config="nikon", manual_dir="/data/City100", data_dir=...)
"""
from __future__ import annotations

import dataclasses
import pathlib

from jaxsr.data.builders.base import Pair, PairedImageBuilder, SRConfig, find_child, pairs_in_dir

__all__ = ["City100", "City100Config", "TEST_IDS"]

TEST_IDS = ("001", "016", "048", "060", "098")


@dataclasses.dataclass(eq=False)
class City100Config(SRConfig):
    folder: str = ""  # jaxsr layout: <root>/<folder>/{lr,hr}/NNN.png
    release_folder: str = ""  # original release: <root>/<release_folder>/NNN{L,H}.PNG


class City100(PairedImageBuilder, skip_registration=True):
    """City100 real LR/HR camera pairs (same size; scale 1)."""

    name = "city100"
    BUILDER_CONFIGS = [
        City100Config(name="nikon", folder="nikon_d5500", release_folder="City100_NikonD5500",
                      scale=1, description="Nikon D5500 (DSLR) pairs"),
        City100Config(name="iphone", folder="iphone_x", release_folder="City100_iPhoneX",
                      scale=1, description="iPhone X (smartphone) pairs"),
    ]
    HOMEPAGE = "https://github.com/ngchc/CameraSR"
    CITATION = """@inproceedings{chen2019camera,
  title={Camera Lens Super-Resolution}, author={Chen, Chang and Xiong, Zhiwei and Tian, Xinmei
  and Zha, Zheng-Jun and Wu, Feng}, booktitle={CVPR}, year={2019}}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = """manual_dir is one of:
  * a folder with nikon_d5500/{lr,hr}/NNN.png and iphone_x/{lr,hr}/NNN.png (jaxsr layout);
  * the original release (github.com/ngchc/CameraSR): a folder holding City100/ or directly
    City100_NikonD5500/ and City100_iPhoneX/ with NNNL.PNG (LR) and NNNH.PNG (HR);
  * one camera's folder with lr/ and hr/ subfolders."""

    def _find_pairs(self, root: pathlib.Path, dl_manager) -> dict[str, list[Pair]]:
        cfg = self.builder_config
        pairs = None
        camera = find_child(root, cfg.folder)
        release = (find_child(root, cfg.release_folder)
                   or find_child(find_child(root, "City100") or root, cfg.release_folder))
        if camera is not None and find_child(camera, "lr") and find_child(camera, "hr"):
            pairs = pairs_in_dir(find_child(camera, "lr"), find_child(camera, "hr"))
        elif release is not None:
            pairs = pairs_in_dir(release, release, r"(\d+)L", r"(\d+)H")
        elif find_child(root, "lr") and find_child(root, "hr"):
            pairs = pairs_in_dir(find_child(root, "lr"), find_child(root, "hr"))
        if pairs is None:
            raise FileNotFoundError(f"City100 '{cfg.name}': no '{cfg.folder}/' nor "
                                    f"'{cfg.release_folder}/' under '{root}'.\n"
                                    f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        return {"train": [p for p in pairs if p.name not in TEST_IDS],
                "test": [p for p in pairs if p.name in TEST_IDS]}
