"""Random-access image sources over folders (for grain loaders; picklable, read lazily).

`PairedFolderSource(root)` reads `root/lr/*` and `root/hr/*` matched by file stem (the
extensions may differ): `source[i] -> {'lr': (h, w, 3) uint8, 'hr': (h*s, w*s, 3) uint8,
'name': str}`. `ImageFolderSource(root)` reads `root/*`: `{'hr': (H, W, 3) uint8, 'name': str}`.
Construction lists the folders and reads every file's header (names, sizes and a decodable
header checked up front, in parallel threads, before any training step: ~1 ms per file); pixels
are read in `__getitem__`. Problems raise `DataError` listing the files and the fix.
"""
from __future__ import annotations

import os
import pathlib
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from jaxsr.imageio import ImageReadError, image_size, list_images, read_image, read_pair

__all__ = ["PairedFolderSource", "ImageFolderSource", "match_pairs", "infer_scale", "DataError",
           "check_headers", "identity_name", "files_fingerprint"]


class DataError(ValueError):
    """A training/evaluation folder is unusable; the message names the files and the fix."""


class FolderNotFoundError(DataError, FileNotFoundError):
    """A data folder does not exist (also a FileNotFoundError, as it always was)."""


_SHOWN = 5  # problems listed in a DataError


def _headers(paths: Sequence[str]) -> list[tuple[int, int] | ImageReadError]:
    """(H, W) from each file's header, or the ImageReadError, in threads (I/O bound)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(path: str):
        try:
            return image_size(path)
        except ImageReadError as e:
            return e
    if len(paths) < 16:
        return [one(p) for p in paths]
    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(one, paths, chunksize=64))


def _raise_problems(problems: list[str], what: str, fix: str) -> None:
    if problems:
        shown = problems[:_SHOWN]
        more = f"\n  ... and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
        raise DataError(f"{len(problems)} {what}:\n  " + "\n  ".join(shown) + more
                        + f"\nFix: {fix}")


def check_headers(paths: Sequence[str]) -> list[tuple[int, int]]:
    """(H, W) of every image from its header; DataError listing the undecodable ones."""
    sizes = _headers(paths)
    _raise_problems([str(r) for r in sizes if isinstance(r, ImageReadError)],
                    "image file(s) cannot be read",
                    "replace or remove them (check the whole folder before training again)")
    return sizes  # type: ignore[return-value]

PathLike = str | os.PathLike


def files_fingerprint(kind: str, paths: Sequence[str], *extra: Any) -> str:
    """sha256 hex of `kind`, `extra` and every file's (path, size, mtime): changes when a file is
    added, removed, renamed or rewritten (what keys a decoded store, `jaxsr.data.store`)."""
    import hashlib
    import json
    entries = []
    for path in paths:
        st = os.stat(path)
        entries.append([os.path.abspath(path), st.st_size, st.st_mtime_ns])
    blob = json.dumps([kind, list(extra), entries], separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def identity_name(source: Any) -> str:
    """The name a source's checkpointed data positions are valid for: `source.identity_name`,
    else the module and name of `source.identity_class`, else of its class. Caching wrappers
    (InMemorySource, DiskStore) report the source they cache, so a saved position stays valid
    when caching is switched on or off."""
    name = getattr(source, "identity_name", None)
    if isinstance(name, str):
        return name
    cls = getattr(source, "identity_class", type(source))
    return f"{cls.__module__}.{cls.__qualname__}"


def _by_key(files: Iterable[pathlib.Path], key: Callable[[pathlib.Path], str | None],
            folder: pathlib.Path, role: str) -> dict[str, pathlib.Path]:
    out: dict[str, pathlib.Path] = {}
    for f in files:
        k = key(f)
        if k is None:
            continue
        if k in out:
            raise DataError(f"two {role} files in '{folder}' have the same name '{k}': "
                             f"'{out[k].name}' and '{f.name}'; keep only one of them")
        out[k] = f
    return out


def match_pairs(lr_files: Iterable[PathLike], hr_files: Iterable[PathLike], *,
                lr_key: Callable[[pathlib.Path], str | None] = lambda p: p.stem,
                hr_key: Callable[[pathlib.Path], str | None] = lambda p: p.stem,
                lr_dir: PathLike | None = None, hr_dir: PathLike | None = None,
                ) -> list[tuple[str, pathlib.Path, pathlib.Path]]:
    """Pairs LR and HR files by a name key (default: the file stem).

    Args:
      lr_key / hr_key: path -> pair name, or None to ignore the file.
      lr_dir / hr_dir: folders named in error messages.

    Returns:
      [(name, lr_path, hr_path)] sorted by name.

    Raises:
      ValueError: a file without partner (naming it and where the partner was expected),
        duplicate names, or no pairs at all.
    """
    lr_files = [pathlib.Path(p) for p in lr_files]
    hr_files = [pathlib.Path(p) for p in hr_files]
    lr_dir = pathlib.Path(lr_dir) if lr_dir else (lr_files[0].parent if lr_files else None)
    hr_dir = pathlib.Path(hr_dir) if hr_dir else (hr_files[0].parent if hr_files else None)
    lr = _by_key(lr_files, lr_key, lr_dir, "LR")
    hr = _by_key(hr_files, hr_key, hr_dir, "HR")
    if not lr and not hr:
        raise DataError(f"no images found in LR folder '{lr_dir}' nor HR folder '{hr_dir}'; "
                         "check the path and the folder layout")
    only_lr = sorted(set(lr) - set(hr))
    only_hr = sorted(set(hr) - set(lr))
    if only_lr or only_hr:
        lines = [f"LR '{lr[k]}' has no HR partner named '{k}' in '{hr_dir}'" for k in only_lr[:5]]
        lines += [f"HR '{hr[k]}' has no LR partner named '{k}' in '{lr_dir}'" for k in only_hr[:5]]
        more = len(only_lr) + len(only_hr) - len(lines)
        if more > 0:
            lines.append(f"... and {more} more")
        raise DataError("unpaired images:\n  " + "\n  ".join(lines)
                         + "\nFix: add the missing partners or remove the extra files "
                           "(pairs are matched by file name without extension)")
    return [(k, lr[k], hr[k]) for k in sorted(lr)]


def infer_scale(lr_path: PathLike, hr_path: PathLike) -> int:
    """Integer scale HR / LR of one pair from the image headers (1 for same-size pairs)."""
    (lh, lw), (hh, hw) = image_size(lr_path), image_size(hr_path)
    if hh % lh or hw % lw or hh // lh != hw // lw or hh < lh:
        raise DataError(f"cannot infer an integer scale from LR '{lr_path}' ({lh}x{lw}) and HR "
                         f"'{hr_path}' ({hh}x{hw}); pass scale= explicitly or fix the pair")
    return hh // lh


class PairedFolderSource:
    """LR/HR pairs from `root/lr_subdir` and `root/hr_subdir`, matched by file stem.

    Args:
      root: folder holding the two subfolders.
      scale: integer HR/LR size ratio (1: same-size pairs, e.g. City100, deraining); None
        infers it from the first pair's headers.
      check: read every file's header now and raise DataError for undecodable files or pairs
        whose sizes disagree with the scale (before training, not when the sampler gets there).

    `source[i]` -> {'lr': (h, w, 3) uint8, 'hr': (h*scale, w*scale, 3) uint8, 'name': str},
    sorted by name.
    """

    def __init__(self, root: PathLike, lr_subdir: str = "lr", hr_subdir: str = "hr",
                 scale: int | None = None, check: bool = True):
        self.root = pathlib.Path(root)
        lr_dir, hr_dir = self.root / lr_subdir, self.root / hr_subdir
        for d, role in ((lr_dir, "LR"), (hr_dir, "HR")):
            if not d.is_dir():
                raise FolderNotFoundError(
                    f"{role} folder '{d}' not found; PairedFolderSource expects "
                    f"'{self.root}/{lr_subdir}/' and '{self.root}/{hr_subdir}/' with matching "
                    "file names (set lr_subdir= / hr_subdir= for other names)")
        pairs = match_pairs(list_images(lr_dir), list_images(hr_dir), lr_dir=lr_dir,
                            hr_dir=hr_dir)
        self._names = [n for n, _, _ in pairs]
        self._lr = [str(p) for _, p, _ in pairs]
        self._hr = [str(p) for _, _, p in pairs]
        if scale is None:
            scale = infer_scale(self._lr[0], self._hr[0])
        if int(scale) != scale or scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale!r}")
        self.scale = int(scale)
        if check:
            self._check_pairs()

    def _check_pairs(self) -> None:
        lr_sizes = check_headers(self._lr)
        hr_sizes = check_headers(self._hr)
        s = self.scale
        _raise_problems(
            [f"LR '{lr}' is {lh}x{lw} (HxW) and HR '{hr}' is {hh}x{hw}, but scale {s} needs HR "
             f"= {lh * s}x{lw * s}" for lr, hr, (lh, lw), (hh, hw)
             in zip(self._lr, self._hr, lr_sizes, hr_sizes) if (hh, hw) != (lh * s, lw * s)],
            f"pair(s) in '{self.root}' disagree with scale {s}",
            "crop the HR images to scale x the LR size (or the LR to HR / scale), or fix the "
            "scale (config.model.scale)")

    @property
    def names(self) -> list[str]:
        return list(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def _index(self, i: int) -> int:
        n = len(self._names)
        j = int(i) + n if int(i) < 0 else int(i)
        if not 0 <= j < n:
            raise IndexError(f"index {i} out of range for {n} pairs in '{self.root}'")
        return j

    def __getitem__(self, i: int) -> dict[str, np.ndarray | str]:
        j = self._index(i)
        lr, hr = read_pair(self._lr[j], self._hr[j], self.scale)
        return {"lr": lr, "hr": hr, "name": self._names[j]}

    def fingerprint(self) -> str:
        """Changes when any file of the pairs (or the scale) changes; keys a decoded store."""
        return files_fingerprint("PairedFolderSource", self._lr + self._hr, self.scale,
                                 self._names)

    def __repr__(self) -> str:
        return f"PairedFolderSource('{self.root}', pairs={len(self)}, scale={self.scale})"


class ImageFolderSource:
    """Single images (e.g. clean HR images) from `root`, sorted by file name.

    `source[i]` -> {'hr': (H, W, 3) uint8, 'name': str (file stem)}.
    """

    def __init__(self, root: PathLike, *, recursive: bool = False, check: bool = True):
        self.root = pathlib.Path(root)
        files = list_images(self.root, recursive=recursive)
        if not files:
            raise DataError(f"no images (.png .jpg .jpeg .bmp .tif .tiff) in '{self.root}'; "
                             "check the path")

        def name(p: pathlib.Path) -> str:
            return p.relative_to(self.root).with_suffix("").as_posix()

        by_name = _by_key(files, name, self.root, "image")
        self._names: Sequence[str] = list(by_name)
        self._paths = [str(p) for p in by_name.values()]
        if check:  # every header decodable, before training
            check_headers(self._paths)

    @property
    def names(self) -> list[str]:
        return list(self._names)

    def __len__(self) -> int:
        return len(self._paths)

    def __getitem__(self, i: int) -> dict[str, np.ndarray | str]:
        n = len(self._paths)
        j = int(i) + n if int(i) < 0 else int(i)
        if not 0 <= j < n:
            raise IndexError(f"index {i} out of range for {n} images in '{self.root}'")
        return {"hr": read_image(self._paths[j]), "name": self._names[j]}

    def fingerprint(self) -> str:
        """Changes when any image file changes; keys a decoded store."""
        return files_fingerprint("ImageFolderSource", self._paths, list(self._names))

    def __repr__(self) -> str:
        return f"ImageFolderSource('{self.root}', images={len(self)})"


class InMemorySource:
    """Every record of `source` decoded once and kept in memory (random access, picklable).

    For small sets read every step, such as few-shot target pairs or a small pool of clean
    images: decoding a 512x512 PNG pair costs more than a small model's train step.
    """

    def __init__(self, source: Any):
        self.records = [source[i] for i in range(len(source))]
        # What the input pipeline names this source by (for checkpointed data positions).
        self.identity_class = getattr(source, "identity_class", type(source))
        self.identity_name = identity_name(source)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        return self.records[index]


def cache_if_small(source: Any, max_records: int) -> Any:
    """`InMemorySource(source)` when it has at most `max_records` records, else `source`."""
    return InMemorySource(source) if len(source) <= max_records else source
