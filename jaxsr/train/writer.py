"""Run logging: metrics to a JSON-lines file and TensorBoard event files, images to PNG.

Only process 0 writes. `workdir/metrics.jsonl` gets one JSON object per `write_scalars` call
({"step": s, "time": t, name: value, ...}); `workdir/tb/` holds TensorBoard event files
(tensorboardX, no TensorFlow needed); `write_images` saves PNGs under `workdir/images/`.
"""
from __future__ import annotations

import json
import math
import pathlib
import time
from typing import Mapping

import jax
import numpy as np

from jaxsr.pixels import to_uint8


class MetricWriter:
    """Writes scalars (JSONL + TensorBoard) and images (PNG + TensorBoard) for one run."""

    def __init__(self, workdir: str | pathlib.Path, enabled: bool | None = None):
        self.workdir = pathlib.Path(workdir)
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self._tb = None
        if self.enabled:
            self.workdir.mkdir(parents=True, exist_ok=True)
            from tensorboardX import SummaryWriter  # Imported lazily: it pulls in protobuf.
            self._tb = SummaryWriter(str(self.workdir / "tb"))
            self._jsonl = open(self.workdir / "metrics.jsonl", "a", buffering=1)
        # (step, names) of records an earlier session of this run wrote: writing one again
        # (a resumed run re-evaluating its baseline at step 0) replaces it, so each is kept once.
        self._earlier = self._index() if self.enabled else set()

    def _records(self) -> list[tuple[str, tuple | None]]:
        """(line, (step, names) or None for a torn line) for each line of metrics.jsonl."""
        out, path = [], self.workdir / "metrics.jsonl"
        if not path.is_file():  # e.g. a device or pipe the user pointed it at
            return out
        for line in path.read_text().splitlines(keepends=True):
            try:
                record = json.loads(line)
                out.append((line, (int(record["step"]), tuple(sorted(
                    k for k in record if k not in ("step", "time"))))))
            except (ValueError, KeyError, TypeError):
                out.append((line, None))
        return out

    def _index(self) -> set:
        return {key for _, key in self._records() if key is not None}

    def _rewrite(self, drop) -> int:
        """Rewrites metrics.jsonl without the lines whose (step, names) key `drop(key)` is true
        (and a torn last line a kill left); returns how many records were dropped."""
        path = self.workdir / "metrics.jsonl"
        if not path.is_file():
            return 0
        self._jsonl.close()
        kept, dropped = [], 0
        for line, key in self._records():
            if key is None and not line.endswith("\n"):
                continue  # a torn last line
            if key is not None and drop(key):
                dropped += 1
            else:
                kept.append(line if line.endswith("\n") else line + "\n")
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(kept))
        tmp.replace(path)
        self._jsonl = open(path, "a", buffering=1)
        self._earlier = self._index()
        return dropped

    def write_scalars(self, step: int, scalars: Mapping[str, float], prefix: str = "") -> None:
        if not self.enabled:
            return
        values = {f"{prefix}{k}": _to_float(v) for k, v in scalars.items()}
        key = (int(step), tuple(sorted(values)))
        if key in self._earlier:
            self._rewrite(lambda k: k == key)
        record = {"step": int(step), "time": round(time.time(), 3), **values}
        self._jsonl.write(json.dumps(record, allow_nan=True) + "\n")
        for name, value in values.items():
            if math.isfinite(value):
                self._tb.add_scalar(name, value, int(step))

    def rewind(self, step: int, prefix: str = "") -> int:
        """Drops the metrics.jsonl records after `step` whose names all start with `prefix` (a
        resumed phase logs those steps again, so each step appears once); returns how many.
        TensorBoard needs nothing: it discards a tag's events past a step that is logged again
        (out-of-order steps, `purge_orphaned_data`)."""
        if not self.enabled:
            return 0
        return self._rewrite(lambda key: key[0] > step and all(
            name.startswith(prefix) for name in key[1]))

    def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> list[pathlib.Path]:
        """Saves each (H, W, 3) image (uint8 or float in [0, 1]) as images/<name>_<step>.png."""
        if not self.enabled:
            return []
        from jaxsr.imageio import write_image
        paths = []
        for name, img in images.items():
            img = to_uint8(img)
            path = self.workdir / "images" / f"{name}_{int(step):07d}.png"
            write_image(path, img)
            self._tb.add_image(name, img, int(step), dataformats="HWC")
            paths.append(path)
        return paths

    def write_text(self, step: int, name: str, text: str) -> None:
        if self.enabled:
            self._tb.add_text(name, text, int(step))

    def scoped(self, prefix: str) -> "ScopedWriter":
        """A view that prefixes every scalar and image name with `prefix` (e.g. 'finetune/')."""
        return ScopedWriter(self, prefix)

    def flush(self) -> None:
        if self.enabled:
            self._tb.flush()
            self._jsonl.flush()

    def close(self) -> None:
        if self.enabled:
            self._tb.close()
            self._jsonl.close()
            self.enabled = False


class ScopedWriter:
    """Writes through a MetricWriter with a name prefix (one run, several phases)."""

    def __init__(self, parent: MetricWriter, prefix: str):
        self.parent, self.prefix = parent, prefix

    def write_scalars(self, step: int, scalars: Mapping[str, float], prefix: str = "") -> None:
        self.parent.write_scalars(step, scalars, prefix=self.prefix + prefix)

    def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> list[pathlib.Path]:
        return self.parent.write_images(step, images)

    def rewind(self, step: int) -> int:
        return self.parent.rewind(step, prefix=self.prefix)

    def flush(self) -> None:
        self.parent.flush()


def comparison_grid(columns: list[np.ndarray], pad: int = 4) -> np.ndarray:
    """Lays out same-height (H, W, 3) images side by side with a white gap; LR inputs smaller
    than the others are nearest-upsampled to the common height first. Returns uint8."""
    height = max(c.shape[0] for c in columns)
    tiles = []
    for col in columns:
        col = to_uint8(col)
        factor = height // col.shape[0]
        if factor > 1:
            col = np.repeat(np.repeat(col, factor, axis=0), factor, axis=1)
        if col.shape[0] != height:  # Non-integer ratio: pad at the bottom.
            col = np.pad(col, ((0, height - col.shape[0]), (0, 0), (0, 0)), constant_values=255)
        tiles.append(col)
        tiles.append(np.full((height, pad, 3), 255, np.uint8))
    return np.concatenate(tiles[:-1], axis=1)


def _to_float(v) -> float:
    return float(np.asarray(v))
