"""Host-side training input pipeline: grain loaders of aligned random patches.

Works over any random-access source (`len(source)`, `source[i]` -> dict of numpy arrays):
paired records `{'lr': (h, w, 3) uint8, 'hr': (h*s, w*s, 3) uint8, 'name': str}` or HR-only
records `{'hr': (H, W, 3) uint8, 'name': str}` (PairedFolderSource, ImageFolderSource, tfds
`builder.as_data_source()`, or a plain list of dicts).

    loader = paired_loader(source, batch_size=16, hr_patch=96, scale=4, seed=0)
    it = iter(loader)                      # grain DataLoaderIterator
    batch = next(it)                       # {'lr': (16, 24, 24, 3) uint8, 'hr': (16, 96, 96, 3)}
    state = iterator_state(it)             # JSON str; save it with the model checkpoint
    it = restore_iterator(loader, state)   # continues with exactly the batches that would follow

Sources that decode images per record (the folder sources) cost a full decode per crop; wrap
them in `jaxsr.data.store.disk_store` (decoded once into a shared memory-mapped file: a crop is
then an array slice) or `InMemorySource` (small sets). Either gives the same batches.

Randomness: records are shuffled per epoch and every record draws its crop position and its
dihedral augmentation from a numpy Generator that grain derives from (seed, global position in
the stream), so a given seed gives the same batches on every run, and a restored iterator resumes
bit-exactly. Sharding: each JAX process reads a disjoint part of the records (by default
`jax.process_index()` of `jax.process_count()`), see `paired_loader`.

Orbax: grain ships an orbax handler. Inside a CheckpointManager composite, save with
`CheckpointSave(it)` and restore with `CheckpointRestore(it)` (re-exported here), e.g.
`args=ocp.args.Composite(state=ocp.args.StandardSave(state), data=CheckpointSave(it))`; it writes
one JSON file per process. Alternatively store `iterator_state(it)` with `ocp.args.JsonSave`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import grain
import numpy as np

from jaxsr.data.sources import identity_name

# Orbax checkpoint args for grain iterators (registered with orbax when orbax is importable).
CheckpointHandler = grain.checkpoint.CheckpointHandler
CheckpointSave = getattr(grain.checkpoint, "CheckpointSave", None)
CheckpointRestore = getattr(grain.checkpoint, "CheckpointRestore", None)

__all__ = [
    "paired_loader", "hr_loader", "iterator_state", "restore_iterator", "eval_pairs", "Batches",
    "CheckpointHandler", "CheckpointSave", "CheckpointRestore",
]


def _record_name(record: dict[str, Any], key: int) -> str:
    name = record.get("name", None)
    if isinstance(name, np.ndarray) and name.ndim == 0:
        name = name.item()
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    return f"record {key}" if name is None else f"record {key} ({name!r})"


def _image(record: dict[str, Any], field: str, key: int) -> np.ndarray:
    if field not in record:
        hint = " (an HR-only source? use hr_loader)" if field == "lr" else ""
        raise KeyError(f"{_record_name(record, key)} has no {field!r} field{hint}; "
                       f"fields: {sorted(record)}")
    img = np.asarray(record[field])
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"{_record_name(record, key)}: {field!r} must be (H, W, 3) uint8, got "
                         f"{img.shape} {img.dtype}; convert the source to RGB uint8")
    return img


class _KeyedSource:
    """Wraps a source: adds the record key to each record and gives a stable repr.

    grain validates a restored iterator state against `repr(source)`; the default repr of a
    Python object contains its memory address and would differ between runs.
    """

    def __init__(self, source: Sequence[dict[str, Any]]):
        self._source = source
        self._len = len(source)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, key: int) -> dict[str, Any]:
        record = dict(self._source[int(key)])
        record["_key"] = int(key)
        return record

    def __repr__(self) -> str:
        # A caching wrapper (InMemorySource, the decoded store) reports the source it caches:
        # same records, so a saved data position stays valid when caching is switched on or off.
        return f"{identity_name(self._source)}(len={self._len})"


def _dihedral(img: np.ndarray, flips: np.ndarray) -> np.ndarray:
    """Applies hflip, vflip, then rot90 (counter-clockwise) per the three 0/1 entries of `flips`."""
    if flips[0]:
        img = img[:, ::-1]
    if flips[1]:
        img = img[::-1]
    if flips[2]:
        img = np.rot90(img)
    return np.ascontiguousarray(img)


@dataclasses.dataclass(frozen=True)
class _RandomPatch(grain.transforms.RandomMap):
    """Aligned random crop (+ identical dihedral augmentation) of a paired or HR-only record."""

    hr_patch: int
    scale: int
    augment: bool
    paired: bool

    def random_map(self, record: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        key = record["_key"]
        s, lp = self.scale, self.hr_patch // self.scale
        hr = _image(record, "hr", key)
        if self.paired:
            lr = _image(record, "lr", key)
            h, w = lr.shape[:2]
            if hr.shape[:2] != (h * s, w * s):
                raise ValueError(
                    f"{_record_name(record, key)}: HR is {hr.shape[0]}x{hr.shape[1]} but LR is "
                    f"{h}x{w}; with scale={s} HR must be {h * s}x{w * s}. Check `scale`.")
        else:
            h, w = hr.shape[:2]
        if h < lp or w < lp:
            what = f"LR {h}x{w} is smaller than hr_patch//scale = {lp}" if self.paired else (
                f"HR {h}x{w} is smaller than hr_patch = {lp}")
            raise ValueError(f"{_record_name(record, key)}: {what}; use a smaller hr_patch or "
                             "remove this image from the source")
        y = int(rng.integers(0, h - lp + 1))
        x = int(rng.integers(0, w - lp + 1))
        flips = rng.integers(0, 2, size=3) if self.augment else np.zeros(3, np.int64)
        if self.paired:
            out = {"lr": lr[y:y + lp, x:x + lp],
                   "hr": hr[y * s:(y + lp) * s, x * s:(x + lp) * s]}
        else:
            out = {"hr": hr[y:y + lp, x:x + lp]}
        return {k: _dihedral(v, flips) for k, v in out.items()}


def _derived_seed(seed: int) -> int:
    """31-bit seed decorrelated from its neighbours.

    grain seeds each record's Generator with `seed + position` and each epoch's shuffle with
    `seed + epoch`, so seeds 0 and 1 would give shifted copies of the same stream.
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return int(np.random.SeedSequence([int(seed), 0x5EED]).generate_state(1)[0] >> 1)


def _shard_options(shard_index: int | None, shard_count: int | None, num_records: int,
                   drop_remainder: bool) -> grain.sharding.ShardOptions:
    if shard_index is None and shard_count is None:
        import jax  # deferred: only needed for the default
        shard_index, shard_count = jax.process_index(), jax.process_count()
    elif shard_index is None or shard_count is None:
        raise ValueError(f"give both shard_index and shard_count or neither (got shard_index="
                         f"{shard_index}, shard_count={shard_count})")
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index={shard_index} must be in [0, shard_count={shard_count})")
    if num_records < shard_count:
        raise ValueError(f"source has {num_records} records, fewer than shard_count="
                         f"{shard_count}; every shard needs at least one record")
    return grain.sharding.ShardOptions(shard_index=shard_index, shard_count=shard_count,
                                       drop_remainder=drop_remainder)


def _loader(source, *, batch_size: int, hr_patch: int, scale: int, seed: int, augment: bool,
            paired: bool, shard_index: int | None, shard_count: int | None,
            num_epochs: int | None, worker_count: int,
            read_options: grain.ReadOptions | None) -> grain.DataLoader:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if scale < 1 or hr_patch < scale or hr_patch % scale:
        raise ValueError(f"hr_patch={hr_patch} must be a positive multiple of scale={scale}")
    num_records = len(source)
    if num_records == 0:
        raise ValueError(f"the source {type(source).__name__} is empty")
    # Infinite stream: every record is used (shards may differ by one record). Finite epochs:
    # equal shards (up to shard_count - 1 records dropped) so all processes yield as many batches.
    shard = _shard_options(shard_index, shard_count, num_records,
                           drop_remainder=num_epochs is not None)
    sampler = grain.samplers.IndexSampler(
        num_records=num_records, shard_options=shard, shuffle=True, num_epochs=num_epochs,
        seed=_derived_seed(seed))
    if read_options is None:
        # Records are full images: keep the read-ahead buffer small (grain's default is 500).
        read_options = grain.ReadOptions(num_threads=4, prefetch_buffer_size=max(8, 2 * batch_size))
    return grain.DataLoader(
        data_source=_KeyedSource(source),
        sampler=sampler,
        operations=[_RandomPatch(hr_patch, scale, augment, paired),
                    grain.transforms.Batch(batch_size=batch_size, drop_remainder=True)],
        worker_count=worker_count,
        shard_options=shard,
        read_options=read_options,
    )


def paired_loader(source, *, batch_size: int, hr_patch: int, scale: int, seed: int,
                  augment: bool = True, shard_index: int | None = None,
                  shard_count: int | None = None, num_epochs: int | None = None,
                  worker_count: int = 0,
                  read_options: grain.ReadOptions | None = None) -> grain.DataLoader:
    """grain DataLoader of aligned random LR/HR patches from a paired source.

    Each record ({'lr': (h, w, 3), 'hr': (h*scale, w*scale, 3)} uint8) gives one LR patch of
    size p = hr_patch // scale at a random (y, x) and the HR patch at (y*scale, x*scale); with
    `augment`, a random hflip / vflip / rot90 (all 8 dihedral variants) is applied identically to
    both. scale=1 means same-size pairs (e.g. City100). Batches: {'lr': (B, p, p, 3) uint8,
    'hr': (B, hr_patch, hr_patch, 3) uint8}; the last incomplete batch is dropped; names dropped.

    Records are shuffled anew every epoch; `num_epochs=None` repeats forever. Sharding: shard
    `shard_index` of `shard_count` reads a disjoint, contiguous part of the records (default:
    this JAX process of all). With num_epochs=None every record is used; with a finite
    num_epochs the shards are made equal by dropping up to shard_count - 1 records, so all
    processes yield the same number of batches. `worker_count` > 0 uses that many processes
    (the source must be picklable and absl flags parsed, e.g. under `absl.app.run`); the batches
    depend on worker_count, so keep it fixed when resuming. A record smaller than the patch
    raises ValueError naming it. `read_options` (grain.ReadOptions) default to 4 read threads
    and a read-ahead of max(8, 2 * batch_size) records.
    """
    return _loader(source, batch_size=batch_size, hr_patch=hr_patch, scale=scale, seed=seed,
                   augment=augment, paired=True, shard_index=shard_index,
                   shard_count=shard_count, num_epochs=num_epochs, worker_count=worker_count,
                   read_options=read_options)


def hr_loader(source, *, batch_size: int, hr_patch: int, seed: int, augment: bool = True,
              shard_index: int | None = None, shard_count: int | None = None,
              num_epochs: int | None = None, worker_count: int = 0,
              read_options: grain.ReadOptions | None = None) -> grain.DataLoader:
    """grain DataLoader of random HR patches {'hr': (B, hr_patch, hr_patch, 3) uint8}.

    For HR-only sources ({'hr', 'name'}; an 'lr' field, if any, is ignored), e.g. clean images
    that are degraded on device. Otherwise as `paired_loader`.
    """
    return _loader(source, batch_size=batch_size, hr_patch=hr_patch, scale=1, seed=seed,
                   augment=augment, paired=False, shard_index=shard_index,
                   shard_count=shard_count, num_epochs=num_epochs, worker_count=worker_count,
                   read_options=read_options)


def iterator_state(iterator: grain.DataLoaderIterator) -> str:
    """JSON string with the position of a loader iterator (store it with the checkpoint)."""
    state = iterator.get_state()
    return state.decode() if isinstance(state, bytes) else state


def restore_iterator(loader: grain.DataLoader,
                     state: str | bytes | None) -> grain.DataLoaderIterator:
    """A new iterator over `loader` positioned at `state` (from `iterator_state`).

    `state=None` gives a fresh iterator. The loader must be built with the same source length,
    seed, sharding, num_epochs and worker_count as when the state was saved (grain checks this
    and raises ValueError otherwise).
    """
    iterator = iter(loader)
    if state is not None:
        iterator.set_state(state.encode() if isinstance(state, str) else state)
    return iterator


class Batches:
    """Batches of a loader with a JSON-able position: what the run harness checkpoints.

    `get_state()` -> {'iterator': JSON str}; `set_state(that)` continues with exactly the
    batches that would have followed."""

    def __init__(self, loader: grain.DataLoader):
        self.loader = loader
        self.iterator = iter(loader)

    def __iter__(self) -> "Batches":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return next(self.iterator)

    def get_state(self) -> dict[str, str]:
        return {"iterator": iterator_state(self.iterator)}

    def set_state(self, state: dict[str, str]) -> None:
        self.iterator = restore_iterator(self.loader, state["iterator"])


def eval_pairs(source) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """All records of a paired source as full-size (lr, hr, name), in source order (no crop).

    lr: (h, w, 3) uint8, hr: (H, W, 3) uint8, name: str (the record's 'name', else its index).
    """
    pairs = []
    for key in range(len(source)):
        record = source[key]
        name = record.get("name", str(key))
        if isinstance(name, np.ndarray) and name.ndim == 0:
            name = name.item()
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        pairs.append((_image(record, "lr", key), _image(record, "hr", key), str(name)))
    return pairs
