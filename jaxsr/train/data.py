"""Turns `config.data` into sources and a checkpointable batch iterator.

`config.data` fields: train_dir ('' = the shipped sample named by `sample`), lr_subdir,
hr_subdir, val_dir ('' = hold out the last `val_count` pairs of train_dir), val_count,
batch_size (global), hr_patch, augment, worker_count, synthetic_tasks (names from
`jaxsr.degradations.task_names()`; non-empty = HR-only folder, LR made on device each step),
mode ('down' | 'same', for synthetic tasks), cache_images, store ('auto' | 'memory' | 'disk' |
'none': how training records are kept decoded, see `stored_source`), store_dir ('' = the
environment variable JAXSR_STORE_DIR, else ~/.cache/jaxsr/stores).
"""
from __future__ import annotations

import hashlib
import logging
import pathlib
from typing import Any, Sequence

import ml_collections

from jaxsr import samples
from jaxsr.data import pipeline
from jaxsr.data import store as store_lib
from jaxsr.data.sources import ImageFolderSource, InMemorySource, PairedFolderSource
from jaxsr.train.mesh import local_batch_size


class Subset:
    """The records of `source` at `indices` (random access, picklable)."""

    def __init__(self, source: Any, indices: Sequence[int]):
        self.source, self.indices = source, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        return self.source[self.indices[i]]

    def fingerprint(self) -> str | None:
        """The source's fingerprint and the indices (None if the source has none)."""
        inner = store_lib.source_fingerprint(self.source)
        if inner is None:
            return None
        return hashlib.sha256(f"{inner}:{self.indices}".encode()).hexdigest()


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


STORE_MODES = ("auto", "memory", "disk", "none")


def stored_source(d: ml_collections.ConfigDict, source: Any) -> Any:
    """`source` as `d.store` keeps it decoded (same records, same batches, same resume):

    'memory': `InMemorySource` (decoded once, a copy per grain worker process);
    'disk': `jaxsr.data.store.disk_store` (decoded once into memory-mapped files under
      `d.store_dir`, reused by later runs, shared by worker processes; crops are slices);
    'none': decoded per crop (for sources that are cheap to read);
    'auto' (default): 'memory' for at most `d.cache_images` records, else 'disk' when the source
      has a fingerprint() (folder sources), else 'none'.
    """
    from jaxsr.config_util import ConfigError
    mode = d.get("store", "auto")
    if mode not in STORE_MODES:
        raise ConfigError(f"config.data.store={mode!r} is not one of {', '.join(STORE_MODES)} "
                          "(e.g. --config.data.store=disk)")
    if mode == "none":
        return source
    if mode == "memory" or (mode == "auto" and len(source) <= d.cache_images):
        return InMemorySource(source)
    if store_lib.source_fingerprint(source) is None:
        if mode == "disk":
            raise ConfigError(f"config.data.store='disk' needs a source with a fingerprint(); "
                              f"{type(source).__name__} has none: use store='memory' or 'none'")
        logging.info("%s has no fingerprint(): its %d records are decoded per crop",
                     type(source).__name__, len(source))
        return source
    return store_lib.disk_store(source, d.get("store_dir", "") or None)


def train_iterator(d: ml_collections.ConfigDict, source: Any, scale: int, seed: int,
                   paired: bool = True) -> pipeline.Batches:
    """Checkpointable batches of this process's share of each global batch; records are kept
    decoded as `d.store` says (`stored_source`)."""
    source = stored_source(d, source)
    kwargs = dict(batch_size=local_batch_size(d.batch_size, "config.data.batch_size"), hr_patch=d.hr_patch, seed=seed,
                  augment=d.augment, worker_count=d.worker_count)
    if paired:
        loader = pipeline.paired_loader(source, scale=scale, **kwargs)
    else:
        loader = pipeline.hr_loader(source, **kwargs)
    return pipeline.Batches(loader)
