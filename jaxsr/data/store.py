"""Decode-once image store: every record of a source as uint8 in memory-mapped files on disk.

Decoding a 2K PNG pair costs ~50-80 ms, so a loader that decodes per crop yields a few dozen
crops per second. `disk_store(source)` decodes every record once into a folder

    <store dir>/<key>/index.json   {'count', 'fields': {field: {'file', 'nbytes'}},
                                    'offsets': {field: [...]}, 'shapes': {field: [[h, w, c], ...]},
                                    'scalars': {field: [...]}, 'identity', 'fingerprint'}
    <store dir>/<key>/<field>.u8   every record's `field` array, flat, one after the other

and returns a `DiskStore`: random access (`len`, `store[i]` -> the same record dict as the
source, arrays being read-only zero-copy views of the memory map, so a crop is a slice and
touches only the pages it reads), picklable by path (grain worker processes re-open the map and
share the operating system's page cache: no copy of the pixels per worker).

The key is a hash of the source's `fingerprint()` (folder sources: file paths, sizes and
modification times), so a second run reuses the store and a changed folder gets a new one.
The store dir is `directory`, else `$JAXSR_STORE_DIR`, else `~/.cache/jaxsr/stores`; stores
are caches: delete them freely.

Writes are atomic: a store is written into a uniquely named temporary folder beside its final
place and renamed into place once complete (`index.json` last, files fsynced), so an
interrupted build never leaves a folder that looks complete. Several writers (JAX processes of
one run, two runs on the same data) may build the same store at once: each writes its own
temporary folder; whoever renames second finds the store there and uses it.
"""
from __future__ import annotations

import collections
import hashlib
import json
import logging
import mmap
import os
import pathlib
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator

import numpy as np

from jaxsr.data.sources import DataError, identity_name

__all__ = ["DiskStore", "disk_store", "store_root", "source_fingerprint", "STORE_ENV"]

STORE_ENV = "JAXSR_STORE_DIR"
FORMAT_VERSION = 1
_INDEX = "index.json"
_TMP_PREFIX = ".tmp-"
_STALE_TMP_S = 24 * 3600  # temporary folders older than this are left-overs of killed builds


def store_root(directory: str | os.PathLike | None = None) -> pathlib.Path:
    """Folder holding the stores: `directory`, else $JAXSR_STORE_DIR, else ~/.cache/jaxsr/stores."""
    chosen = directory or os.environ.get(STORE_ENV) or "~/.cache/jaxsr/stores"
    return pathlib.Path(chosen).expanduser()


def source_fingerprint(source: Any) -> str | None:
    """`source.fingerprint()` (a str that changes when the records change), or None when the
    source cannot say (then it cannot be stored: its records might change unseen)."""
    fingerprint = getattr(source, "fingerprint", None)
    if not callable(fingerprint):
        return None
    value = fingerprint()
    return None if value is None else str(value)


class DiskStore:
    """Random access to a complete store folder (see the module doc); `store[i]` -> record dict
    with (H, W, 3) uint8 read-only views for the image fields and the source's other fields."""

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)
        index_file = self.path / _INDEX
        try:
            index = json.loads(index_file.read_text())
        except (OSError, ValueError) as err:
            raise DataError(f"decoded-image store '{self.path}' is missing or damaged ({err}); "
                            f"delete the folder to have it rebuilt") from err
        if index.get("version") != FORMAT_VERSION:
            raise DataError(f"decoded-image store '{self.path}' has format version "
                            f"{index.get('version')}, expected {FORMAT_VERSION}; delete it")
        for field, meta in index["fields"].items():
            size = (self.path / meta["file"]).stat().st_size if (
                self.path / meta["file"]).exists() else -1
            if size != meta["nbytes"]:
                raise DataError(f"decoded-image store '{self.path}': '{meta['file']}' has {size} "
                                f"bytes, the index says {meta['nbytes']}; delete the folder to "
                                "have it rebuilt")
        self._index = index
        self._count = int(index["count"])
        self._offsets = {f: [int(o) for o in v] for f, v in index["offsets"].items()}
        self._shapes = {f: [tuple(s) for s in v] for f, v in index["shapes"].items()}
        self._sizes = {f: [int(np.prod(s)) for s in v] for f, v in self._shapes.items()}
        self._scalars = index["scalars"]
        self.identity_name: str = index["identity"]
        self.fingerprint_value: str = index["fingerprint"]
        self._maps: dict[str, np.ndarray] | None = None  # opened on first access

    # ------------------------------------------------------------------ random access
    def _arrays(self) -> dict[str, np.ndarray]:
        if self._maps is None:
            maps = {}
            for field, meta in self._index["fields"].items():
                if meta["nbytes"] == 0:
                    maps[field] = np.zeros(0, np.uint8)
                    continue
                with open(self.path / meta["file"], "rb") as f:
                    maps[field] = np.frombuffer(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ),
                                                np.uint8)
            self._maps = maps
        return self._maps

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, i: int) -> dict[str, Any]:
        j = int(i) + self._count if int(i) < 0 else int(i)
        if not 0 <= j < self._count:
            raise IndexError(f"index {i} out of range for {self._count} records in '{self.path}'")
        record: dict[str, Any] = {}
        for field, flat in self._arrays().items():
            start = self._offsets[field][j]
            record[field] = flat[start:start + self._sizes[field][j]].reshape(
                self._shapes[field][j])
        for field, values in self._scalars.items():
            record[field] = values[j]
        return record

    def fingerprint(self) -> str:
        return self.fingerprint_value

    @property
    def nbytes(self) -> int:
        """Bytes of pixels held (all fields)."""
        return sum(int(m["nbytes"]) for m in self._index["fields"].values())

    # ------------------------------------------------------------------ pickling by path
    def __getstate__(self) -> dict[str, str]:
        return {"path": str(self.path)}

    def __setstate__(self, state: dict[str, str]) -> None:
        self.__init__(state["path"])

    def __repr__(self) -> str:
        return f"DiskStore('{self.path}', records={self._count}, of={self.identity_name})"


def _store_key(fingerprint: str, identity: str) -> str:
    blob = json.dumps([FORMAT_VERSION, identity, fingerprint])
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def disk_store(source: Any, directory: str | os.PathLike | None = None, *,
               threads: int | None = None, progress: bool = True) -> DiskStore:
    """The store of `source` under `store_root(directory)`, decoded now if not there yet.

    Args:
      source: random access source with `fingerprint()` (folder sources, `Subset`s of them);
        records are dicts of uint8 arrays and str / int / float / bool fields.
      threads: decoding threads (default min(8, CPUs); PIL decodes without the GIL).
      progress: tqdm bar while decoding.

    Raises:
      TypeError: the source has no fingerprint (nothing tells when its records change).
      DataError: a record cannot be decoded (naming its file) or has unsupported fields.
    """
    fingerprint = source_fingerprint(source)
    if fingerprint is None:
        raise TypeError(f"{type(source).__name__} has no fingerprint(): a decoded store cannot "
                        "know when its records change; give the source a fingerprint() method "
                        "(see jaxsr.data.sources.files_fingerprint) or keep it in memory")
    identity = identity_name(source)
    root = store_root(directory)
    final = root / _store_key(fingerprint, identity)
    if (final / _INDEX).exists():
        try:
            return DiskStore(final)
        except DataError as err:  # damaged (not by this module: builds are atomic): rebuild
            logging.warning("%s; rebuilding it", err)
            _remove_aside(final)
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(root)
    tmp = root / f"{_TMP_PREFIX}{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        started = time.perf_counter()
        _write(source, tmp, fingerprint, identity, threads, progress)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / _INDEX).exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another writer finished first: theirs
        else:
            logging.info("decoded %d records of %s into '%s' in %.1f s", len(source), identity,
                         final, time.perf_counter() - started)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return DiskStore(final)


def _remove_aside(folder: pathlib.Path) -> None:
    aside = folder.with_name(f"{_TMP_PREFIX}bad-{folder.name}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(folder, aside)
    except FileNotFoundError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def _remove_stale_tmp(root: pathlib.Path) -> None:
    """Removes temporary folders left by builds killed more than a day ago."""
    now = time.time()
    for entry in root.glob(f"{_TMP_PREFIX}*"):
        try:
            if now - entry.stat().st_mtime > _STALE_TMP_S:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            pass


def _ordered_map(fn: Callable[[int], Any], n: int, threads: int) -> Iterator[Any]:
    """fn(0), ..., fn(n-1) in order, computed by `threads` threads at most 2*threads ahead."""
    if threads <= 1:
        for i in range(n):
            yield fn(i)
        return
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="jaxsr-store")
    try:
        pending: collections.deque = collections.deque()
        submitted = 0
        while submitted < min(n, 2 * threads):
            pending.append(pool.submit(fn, submitted))
            submitted += 1
        while pending:
            result = pending.popleft().result()
            if submitted < n:
                pending.append(pool.submit(fn, submitted))
                submitted += 1
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _scalar(value: Any, field: str, where: str) -> Any:
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    raise DataError(f"{where}: field {field!r} is a {type(value).__name__}; the decoded store "
                    "holds uint8 arrays and str / int / float / bool fields only (use "
                    "config.data.store='memory' or 'none' for this source)")


def _write(source: Any, tmp: pathlib.Path, fingerprint: str, identity: str,
           threads: int | None, progress: bool) -> None:
    from tqdm import tqdm

    n = len(source)
    threads = threads or min(8, os.cpu_count() or 1)

    def read(i: int) -> dict[str, Any]:
        try:
            return source[i]
        except Exception as err:
            # Folder sources name the file (ImageReadError); say which record and store too.
            raise DataError(f"cannot decode record {i} of {identity} into the decoded-image "
                            f"store: {err}") from err

    files: dict[str, Any] = {}
    offsets: dict[str, list[int]] = {}
    shapes: dict[str, list[list[int]]] = {}
    scalars: dict[str, list[Any]] = {}
    fields: tuple[str, ...] | None = None
    bar = tqdm(total=n, desc=f"decoding {n} records into {tmp.parent}", unit="img",
               dynamic_ncols=True, disable=not progress)
    try:
        for i, record in enumerate(_ordered_map(read, n, threads)):
            where = f"record {i} ({record.get('name', '?')!r}) of {identity}"
            if fields is None:
                fields = tuple(sorted(record))
            elif tuple(sorted(record)) != fields:
                raise DataError(f"{where} has fields {sorted(record)}, record 0 has "
                                f"{list(fields)}; every record needs the same fields")
            for field in fields:
                value = record[field]
                if isinstance(value, np.ndarray) and value.ndim > 0:
                    if value.dtype != np.uint8:
                        raise DataError(f"{where}: field {field!r} is {value.dtype}; the "
                                        "decoded store holds uint8 arrays only")
                    if field in scalars:
                        raise DataError(f"{where}: field {field!r} is an array here but not "
                                        "in record 0")
                    if field not in files:
                        if i:
                            raise DataError(f"{where}: field {field!r} is an array here but "
                                            "not in record 0")
                        name = field if field.isidentifier() else f"field{len(files)}"
                        files[field] = open(tmp / f"{name}.u8", "wb")
                        offsets[field], shapes[field] = [], []
                    f = files[field]
                    offsets[field].append(f.tell())
                    shapes[field].append(list(value.shape))
                    f.write(memoryview(np.ascontiguousarray(value)).cast("B"))
                else:
                    if field in files:
                        raise DataError(f"{where}: field {field!r} is not an array here but "
                                        "is in record 0")
                    scalars.setdefault(field, []).append(_scalar(value, field, where))
            bar.update(1)
        nbytes = {}
        for field, f in files.items():
            f.flush()
            os.fsync(f.fileno())
            nbytes[field] = f.tell()
    finally:
        bar.close()
        for f in files.values():
            f.close()
    index = {"version": FORMAT_VERSION, "count": n, "identity": identity,
             "fingerprint": fingerprint,
             "fields": {k: {"file": pathlib.Path(f.name).name, "nbytes": nbytes[k]}
                        for k, f in files.items()},
             "offsets": offsets, "shapes": shapes, "scalars": scalars}
    with open(tmp / _INDEX, "w") as f:
        json.dump(index, f, separators=(",", ":"))
        f.flush()
        os.fsync(f.fileno())
