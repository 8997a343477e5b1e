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

    def write_scalars(self, step: int, scalars: Mapping[str, float], prefix: str = "") -> None:
        if not self.enabled:
            return
        values = {f"{prefix}{k}": _to_float(v) for k, v in scalars.items()}
        record = {"step": int(step), "time": round(time.time(), 3), **values}
        self._jsonl.write(json.dumps(record, allow_nan=True) + "\n")
        for name, value in values.items():
            if math.isfinite(value):
                self._tb.add_scalar(name, value, int(step))

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
