"""Shared code of the jaxsr tfds builders: paired LR/HR images read from folders.

Every builder here needs no TensorFlow. Records are
`{'lr': (h, w, 3) uint8, 'hr': (h*s, w*s, 3) uint8, 'name': bytes}` stored zlib-compressed in
array_record files, in the order of the (sorted) file names, and read with
`builder.as_data_source(split)`. ('name' comes back as bytes: that is how tfds decodes Text.)

A subclass only says where the pairs are: `_find_pairs(root, dl_manager)` returns
`{split: [Pair(name, lr_path, hr_path), ...]}`; `lr_path=None` means "HR only: make the LR with
MATLAB bicubic" (`jaxsr.imresize.imresize_uint8`, after cropping HR to a multiple of the scale).

The data folder is the builder's `manual_dir=` argument or tfds' usual
`download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=...))`.
"""
from __future__ import annotations

import abc
import dataclasses
import inspect
import os
import pathlib
import re
from typing import Callable, Iterator, NamedTuple, Sequence

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import utils as tfds_utils

from jaxsr.data.sources import infer_scale, match_pairs
from jaxsr.imageio import list_images, read_image, read_pair

__all__ = ["Pair", "PairedImageBuilder", "SRConfig", "pairs_by_stem", "pairs_in_dir",
           "find_child", "modcrop", "bicubic_lr"]

PathLike = str | os.PathLike


class Pair(NamedTuple):
    """One record to build: its name, the LR file (None: make it from HR) and the HR file."""
    name: str
    lr: pathlib.Path | None
    hr: pathlib.Path


@dataclasses.dataclass(eq=False)
class SRConfig(tfds.core.BuilderConfig):
    """A builder config with the integer HR/LR scale (1 for same-size pairs; None: infer)."""
    scale: int | None = 1


# ------------------------------------------------------------------------------------ helpers


def find_child(root: pathlib.Path, *names: str) -> pathlib.Path | None:
    """The first existing sub-folder of `root` among `names` (case-insensitive), else None."""
    if not root.is_dir():
        return None
    children = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    for name in names:
        exact = root / name
        if exact.is_dir():
            return exact
        if name.lower() in children:
            return children[name.lower()]
    return None


def _key_from(pattern: str | None) -> Callable[[pathlib.Path], str | None]:
    if pattern is None:
        return lambda p: p.stem
    regex = re.compile(pattern, re.IGNORECASE)

    def key(p: pathlib.Path) -> str | None:
        m = regex.fullmatch(p.stem)
        return m.group(1) if m else None

    return key


def pairs_in_dir(lr_dir: pathlib.Path, hr_dir: pathlib.Path, lr_pattern: str | None = None,
                 hr_pattern: str | None = None) -> list[Pair]:
    """Pairs the images of two folders (may be the same folder) by a name key.

    Args:
      lr_pattern / hr_pattern: regex on the file stem whose group 1 is the pair name (files
        that do not match are ignored); None: the whole stem.
    """
    pairs = match_pairs(list_images(lr_dir), list_images(hr_dir), lr_key=_key_from(lr_pattern),
                        hr_key=_key_from(hr_pattern), lr_dir=lr_dir, hr_dir=hr_dir)
    return [Pair(n, lr, hr) for n, lr, hr in pairs]


def pairs_by_stem(lr_dir: pathlib.Path, hr_dir: pathlib.Path) -> list[Pair]:
    """Pairs `lr_dir/*` and `hr_dir/*` with equal file stems."""
    return pairs_in_dir(lr_dir, hr_dir)


def hr_only(hr_dir: pathlib.Path) -> list[Pair]:
    """HR images whose LR is generated (MATLAB bicubic) when the dataset is built."""
    return [Pair(p.stem, None, p) for p in list_images(hr_dir)]


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crops (H, W, C) to H, W multiples of `scale` (top-left corner kept, like MATLAB code)."""
    h, w = img.shape[0] - img.shape[0] % scale, img.shape[1] - img.shape[1] % scale
    return img[:h, :w]


def bicubic_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB `imresize(hr, 1/scale)` (antialiased bicubic) of (H, W, 3) uint8 -> uint8."""
    from jaxsr.imresize import imresize_uint8  # only needed for HR-only sets

    return imresize_uint8(hr, scale=1.0 / scale)


# ------------------------------------------------------------------------------------ builder


class PairedImageBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the jaxsr builders (see the module docstring).

    Args (constructor, keyword-only):
      manual_dir: folder with the dataset (overrides tfds' DownloadConfig.manual_dir).
      file_format: record format, 'array_record' (random access) by default.
      data_dir, config, version: as in `tfds.core.DatasetBuilder`.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First jaxsr release."}
    DESCRIPTION = ""
    HOMEPAGE = ""
    CITATION = ""
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Put the dataset folder in the manual dir."

    def __init__(self, *, manual_dir: PathLike | None = None,
                 file_format: str = "array_record", **kwargs):
        self._manual_dir_arg = pathlib.Path(manual_dir).expanduser() if manual_dir else None
        super().__init__(file_format=file_format, **kwargs)
        self._original_state = dict(self._original_state, manual_dir=manual_dir,
                                    file_format=file_format)

    @tfds_utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        """The builder's source file. (tfds' own version needs the `importlib_resources`
        package, which tfds only declares for Python < 3.9.)"""
        return epath.Path(inspect.getfile(cls))

    def _info(self) -> tfds.core.DatasetInfo:
        image = tfds.features.Tensor(shape=(None, None, 3), dtype=np.uint8, encoding="zlib")
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION or (self.__doc__ or "").strip().split("\n")[0],
            features=tfds.features.FeaturesDict(
                {"lr": image, "hr": image, "name": tfds.features.Text()}),
            homepage=self.HOMEPAGE or None,
            citation=self.CITATION or None,
            disable_shuffling=True,  # records in file-name order
        )

    # -- where the data is
    def _root(self, dl_manager, required: bool = True) -> pathlib.Path | None:
        if self._manual_dir_arg is not None:
            if not self._manual_dir_arg.is_dir():
                raise FileNotFoundError(
                    f"{type(self).__name__}: manual_dir '{self._manual_dir_arg}' is not a "
                    f"folder.\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
            return self._manual_dir_arg
        try:
            return pathlib.Path(os.fspath(dl_manager.manual_dir))
        except AssertionError as err:
            if not required:
                return None
            raise FileNotFoundError(
                f"{type(self).__name__}: no data folder. Pass manual_dir=... to the builder or "
                "download_and_prepare(download_config=tfds.download.DownloadConfig("
                f"manual_dir=...)).\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}\n({err})") from err

    @abc.abstractmethod
    def _find_pairs(self, root: pathlib.Path | None, dl_manager) -> dict[str, list[Pair]]:
        """{split name: [Pair, ...]} found under `root` (the manual dir)."""

    def _scale(self) -> int | None:
        return getattr(self.builder_config, "scale", 1)

    def _split_generators(self, dl_manager):
        splits = self._find_pairs(self._root(dl_manager), dl_manager)
        splits = {k: v for k, v in splits.items() if v}
        if not splits:
            raise ValueError(f"{type(self).__name__}: no images found.\n"
                             f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        scale = self._scale()
        if scale is None:
            first = next(p for pairs in splits.values() for p in pairs)
            scale = infer_scale(first.lr, first.hr) if first.lr is not None else 1
        return {split: self._generate_examples(pairs, scale) for split, pairs in splits.items()}

    def _generate_examples(self, pairs: Sequence[Pair], scale: int
                           ) -> Iterator[tuple[str, dict]]:
        for pair in pairs:
            if pair.lr is None:
                hr = modcrop(read_image(pair.hr), scale)
                lr = bicubic_lr(hr, scale) if scale > 1 else hr
            else:
                lr, hr = read_pair(pair.lr, pair.hr, scale)
            yield pair.name, {"lr": lr, "hr": hr, "name": pair.name}
