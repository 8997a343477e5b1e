"""DIV2K (Agustsson & Timofte, NTIRE 2017): 800 train + 100 validation 2K images with LR
versions from the 'bicubic' (MATLAB imresize) and 'unknown' degradation tracks.

Configs 'bicubic_x2' ... 'unknown_x4'; splits 'train' (0001-0800) and 'validation'
(0801-0900); records {'lr', 'hr', 'name' ('0001')}. Sources, per part:
  1. manual_dir (or manual_dir/DIV2K) holding the extracted folders `DIV2K_train_HR/0001.png`,
     `DIV2K_train_LR_bicubic/X2/0001x2.png`, ... or the zips themselves
     (`DIV2K_train_HR.zip`, `DIV2K_train_LR_bicubic_X2.zip`, ...);
  2. without a manual dir: downloaded from https://data.vision.ee.ethz.ch/cvl/DIV2K/.

    DIV2K(config="bicubic_x4", manual_dir="/data/DIV2K", data_dir=...)

The tfds name is 'div2k_sr' so its prepared files never mix with tfds' own 'div2k' dataset.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import tempfile
import zipfile

from jaxsr.data.builders.base import Pair, PairedImageBuilder, SRConfig, find_child, pairs_in_dir

__all__ = ["DIV2K", "DIV2KConfig", "URL"]

URL = "https://data.vision.ee.ethz.ch/cvl/DIV2K/"


@dataclasses.dataclass(eq=False)
class DIV2KConfig(SRConfig):
    track: str = "bicubic"


def extract_zip(archive: pathlib.Path, download_dir: pathlib.Path) -> pathlib.Path:
    """Extracts `archive` once into download_dir/extracted/<name> and returns that folder.

    (tfds' own extractor needs TensorFlow; zipfile drops absolute and '..' member paths.)
    """
    dest = download_dir / "extracted" / archive.name.removesuffix(".zip")
    if (dest / ".complete").exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        with zipfile.ZipFile(archive) as z:
            z.extractall(tmp)
        (tmp / ".complete").touch()
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


class DIV2K(PairedImageBuilder, skip_registration=True):
    """DIV2K HR images with bicubic / unknown-degradation LR (x2, x3, x4)."""

    name = "div2k_sr"
    BUILDER_CONFIGS = [
        DIV2KConfig(name=f"{track}_x{s}", track=track, scale=s,
                    description=f"{track} LR, scale {s}")
        for track in ("bicubic", "unknown") for s in (2, 3, 4)
    ]
    HOMEPAGE = URL
    CITATION = """@inproceedings{agustsson2017ntire,
  title={NTIRE 2017 Challenge on Single Image Super-Resolution: Dataset and Study},
  author={Agustsson, Eirikur and Timofte, Radu}, booktitle={CVPR Workshops}, year={2017}}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""Optional (otherwise the files are downloaded from {URL}):
manual_dir holds, for each split (train, valid) you want, the HR part and the LR part of your
track/scale, either extracted (DIV2K_train_HR/0001.png, DIV2K_train_LR_bicubic/X2/0001x2.png)
or as the zips from {URL} (DIV2K_train_HR.zip, DIV2K_train_LR_bicubic_X2.zip)."""

    def _parts(self, split: str) -> dict[str, tuple[str, str]]:
        """role -> (folder inside the zip / manual dir, zip file name)."""
        cfg = self.builder_config
        lr = f"DIV2K_{split}_LR_{cfg.track}"
        return {"hr": (f"DIV2K_{split}_HR", f"DIV2K_{split}_HR.zip"),
                "lr": (f"{lr}/X{cfg.scale}", f"{lr}_X{cfg.scale}.zip")}

    def _locate(self, base: pathlib.Path | None, folder: str, zip_name: str, dl_manager):
        if base is None:
            archive = pathlib.Path(os.fspath(dl_manager.download(URL + zip_name)))
            return extract_zip(archive, pathlib.Path(os.fspath(dl_manager.download_dir))) / folder
        if (base / folder).is_dir():
            return base / folder
        if (base / zip_name).is_file():
            dest = pathlib.Path(os.fspath(dl_manager.download_dir))
            return extract_zip(base / zip_name, dest) / folder
        return None

    def _root(self, dl_manager, required: bool = False):
        return super()._root(dl_manager, required=False)

    def _find_pairs(self, root: pathlib.Path | None, dl_manager) -> dict[str, list[Pair]]:
        base = None if root is None else (find_child(root, "DIV2K") or root)
        splits, missing = {}, []
        for split, name in (("train", "train"), ("valid", "validation")):
            found = {role: self._locate(base, folder, zip_name, dl_manager)
                     for role, (folder, zip_name) in self._parts(split).items()}
            if all(found.values()):
                splits[name] = pairs_in_dir(found["lr"], found["hr"], r"(\d+)x\d+", r"(\d+)")
            elif any(found.values()):
                missing += [f"{folder}/ or {zip_name}" for role, (folder, zip_name)
                            in self._parts(split).items() if not found[role]]
        if missing or not splits:
            raise FileNotFoundError(
                f"DIV2K {self.builder_config.name}: missing in '{base}': "
                f"{missing or [p for s in ('train', 'valid') for p, _ in self._parts(s).values()]}"
                f"\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        return splits
