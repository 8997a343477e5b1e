"""Turns `config.data` into sources and a checkpointable batch iterator.

`config.data` fields: train_dir ('' = the shipped sample named by `sample`), lr_subdir,
hr_subdir, val_dir ('' = hold out the last `val_count` pairs of train_dir), val_count,
batch_size (global), hr_patch, augment, worker_count, synthetic_tasks (names from
`jaxsr.degradations.task_names()`; non-empty = HR-only folder, LR made on device each step),
mode ('down' | 'same', for synthetic tasks), cache_images.
"""
from __future__ import annotations

import pathlib
from typing import Any, Sequence

import ml_collections

from jaxsr import samples
from jaxsr.data import pipeline
from jaxsr.data.sources import ImageFolderSource, PairedFolderSource, cache_if_small
from jaxsr.train.mesh import local_batch_size


class Subset:
    """The records of `source` at `indices` (random access, picklable)."""

    def __init__(self, source: Any, indices: Sequence[int]):
        self.source, self.indices = source, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        return self.source[self.indices[i]]


def resolve_dir(path: str, sample: str) -> pathlib.Path:
    """`path`, or the shipped sample folder `sample` when path is empty."""
    return pathlib.Path(path).expanduser() if path else samples.path(sample)


def split_train_val(source: Any, val_count: int) -> tuple[Any, Any]:
    """Holds out the last `val_count` records (sorted by name) for evaluation."""
    n = len(source)
    if val_count >= n:
        from jaxsr.config_util import ConfigError
        raise ConfigError(f"config.data.val_count={val_count} leaves no training data "
                         f"({n} pairs); lower it or set config.data.val_dir")
    return Subset(source, range(n - val_count)), Subset(source, range(n - val_count, n))


def paired_sources(d: ml_collections.ConfigDict, scale: int) -> tuple[Any, Any]:
    """(train source, val source) of LR/HR pairs for `config.data`."""
    root = resolve_dir(d.train_dir, d.sample)
    source = PairedFolderSource(root, lr_subdir=d.lr_subdir, hr_subdir=d.hr_subdir, scale=scale)
    if d.val_dir:
        val = PairedFolderSource(pathlib.Path(d.val_dir).expanduser(), lr_subdir=d.lr_subdir,
                                 hr_subdir=d.hr_subdir, scale=scale)
        return source, val
    return split_train_val(source, d.val_count)


def hr_sources(d: ml_collections.ConfigDict) -> tuple[Any, Any]:
    """(train, val) HR-only sources for synthetic degradations."""
    root = resolve_dir(d.train_dir, d.sample)
    source = ImageFolderSource(root)
    if d.val_dir:
        return source, ImageFolderSource(pathlib.Path(d.val_dir).expanduser())
    return split_train_val(source, d.val_count)


def train_iterator(d: ml_collections.ConfigDict, source: Any, scale: int, seed: int,
                   paired: bool = True) -> pipeline.Batches:
    """Checkpointable batches of this process's share of each global batch; sets of at most
    `d.cache_images` images are decoded once and kept in memory."""
    source = cache_if_small(source, d.cache_images)
    kwargs = dict(batch_size=local_batch_size(d.batch_size, "config.data.batch_size"), hr_patch=d.hr_patch, seed=seed,
                  augment=d.augment, worker_count=d.worker_count)
    if paired:
        loader = pipeline.paired_loader(source, scale=scale, **kwargs)
    else:
        loader = pipeline.hr_loader(source, **kwargs)
    return pipeline.Batches(loader)
