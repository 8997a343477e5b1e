"""`PairedFolder`: your own `lr/` + `hr/` folders (matching file names) as a tfds dataset.

    builder = PairedFolder(root="my_pairs", data_dir="~/tfds", test_fraction=0.1)
    builder.download_and_prepare()
    train = builder.as_data_source("train")   # {'lr', 'hr', 'name'}

The config name is derived from the folder's absolute path and the options, so two different
folders (or split options) never share prepared files in one data_dir.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import re
from typing import Sequence

import numpy as np

from jaxsr.data.builders.base import Pair, PairedImageBuilder, SRConfig, pairs_by_stem

__all__ = ["PairedFolder", "PairedFolderConfig"]


@dataclasses.dataclass(eq=False)
class PairedFolderConfig(SRConfig):
    """root: folder with `lr_subdir/` and `hr_subdir/`; scale None = infer from the first pair.

    Test split: the pairs named in `test_names`, plus (if `test_fraction` > 0) a seeded random
    `round(test_fraction * n)` of the others. Without either there is only a 'train' split.
    """
    root: str = ""
    lr_subdir: str = "lr"
    hr_subdir: str = "hr"
    scale: int | None = None
    test_names: tuple[str, ...] = ()
    test_fraction: float = 0.0
    seed: int = 0


def config_for(root, *, lr_subdir="lr", hr_subdir="hr", scale=None, test_names=(),
               test_fraction=0.0, seed=0, name=None) -> PairedFolderConfig:
    root = str(pathlib.Path(root).expanduser().resolve())
    test_names = tuple(sorted(str(n) for n in test_names))
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if name is None:
        key = repr((root, lr_subdir, hr_subdir, scale, test_names, float(test_fraction), seed))
        base = re.sub(r"[^a-z0-9_]+", "_", pathlib.Path(root).name.lower()).strip("_") or "data"
        name = f"{base}_{hashlib.sha1(key.encode()).hexdigest()[:8]}"
    return PairedFolderConfig(name=name, root=root, lr_subdir=lr_subdir, hr_subdir=hr_subdir,
                              scale=scale, test_names=test_names, test_fraction=test_fraction,
                              seed=seed, description=f"LR/HR pairs from {root}")


class PairedFolder(PairedImageBuilder, skip_registration=True):
    """Generic LR/HR pairs from `root/lr/*` and `root/hr/*` matched by file stem.

    Args:
      root: the folder (or pass config=PairedFolderConfig(...)); other options: see
        PairedFolderConfig. name: config name (default: folder name + hash of the options).
      Remaining keyword arguments go to PairedImageBuilder / tfds (data_dir, ...).
    """

    name = "paired_folder"

    def __init__(self, root: str | os.PathLike | None = None, *, lr_subdir: str = "lr",
                 hr_subdir: str = "hr", scale: int | None = None,
                 test_names: Sequence[str] = (), test_fraction: float = 0.0, seed: int = 0,
                 name: str | None = None, config: PairedFolderConfig | None = None, **kwargs):
        if config is None:
            if root is None:
                raise ValueError("PairedFolder needs root='folder with lr/ and hr/' or "
                                 "config=PairedFolderConfig(...)")
            config = config_for(root, lr_subdir=lr_subdir, hr_subdir=hr_subdir, scale=scale,
                                test_names=test_names, test_fraction=test_fraction, seed=seed,
                                name=name)
        elif not isinstance(config, PairedFolderConfig):
            raise TypeError(f"PairedFolder: config must be a PairedFolderConfig, got {config!r}")
        super().__init__(config=config, **kwargs)

    def _find_pairs(self, root, dl_manager) -> dict[str, list[Pair]]:
        cfg = self.builder_config
        base = pathlib.Path(cfg.root)
        pairs = pairs_by_stem(base / cfg.lr_subdir, base / cfg.hr_subdir)
        names = [p.name for p in pairs]
        missing = sorted(set(cfg.test_names) - set(names))
        if missing:
            raise ValueError(f"PairedFolder: test_names {missing} are not pairs in '{base}' "
                             f"(names are file stems, e.g. {names[:3]})")
        test = set(cfg.test_names)
        rest = [n for n in names if n not in test]
        n_random = int(round(cfg.test_fraction * len(rest)))
        if n_random:
            pick = np.random.default_rng(cfg.seed).permutation(len(rest))[:n_random]
            test |= {rest[i] for i in pick}
        splits = {"train": [p for p in pairs if p.name not in test]}
        if test:
            splits["test"] = [p for p in pairs if p.name in test]
        return splits

    def _root(self, dl_manager, required: bool = True):
        return pathlib.Path(self.builder_config.root)
