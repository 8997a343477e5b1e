"""The training loop every method shares: steps, logging, evaluation, checkpoints, NaN stop.

A method supplies a jitted `train_step(state, batch) -> (state, metrics)`, an iterator of host
batches with a saveable state, and an `evaluate(state) -> (metrics, images)` callback. The loop
keeps the device busy: metrics stay on device until a log step, the next 2 batches are read and
put on the mesh by a background thread while the device steps (`jaxsr.train.prefetch`), and
nothing else syncs with the host in between. A checkpoint holds the data position right after
the last batch trained on (not after the prefetched ones), so a resumed run continues exactly.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, Iterator

import jax
import numpy as np
from tqdm import tqdm

from jaxsr.checkpoint import Checkpointer
from jaxsr.train.prefetch import Prefetcher
from jaxsr.train.writer import MetricWriter


class NonFiniteLossError(RuntimeError):
    """Training produced NaN/Inf losses or gradients; the run stopped at its last good state."""


@dataclasses.dataclass
class LoopConfig:
    num_steps: int
    log_every: int = 50
    eval_every: int = 500
    checkpoint_every: int = 500
    description: str = "train"
    # Names for the entries of vector metrics (e.g. per-task losses): `task_loss/<label>`.
    vector_labels: tuple[str, ...] = ()

    def __post_init__(self):
        from jaxsr.config_util import ConfigError
        for name in ("num_steps", "log_every", "eval_every", "checkpoint_every"):
            value = getattr(self, name)
            if int(value) < 1:
                raise ConfigError(
                    f"{self.description}: {name}={value!r} must be at least 1 (set it in the "
                    f"config, e.g. --config.train.{name}=<a positive number>)")


def run_loop(*, state: Any, train_step: Callable[[Any, Any], tuple[Any, dict]],
             batches: Iterator[Any], put_batch: Callable[[Any], Any],
             data_state: Callable[[], dict], loop: LoopConfig, checkpointer: Checkpointer,
             writer: MetricWriter, evaluate: Callable[[Any], tuple[dict, dict]] | None = None,
             config: Any = None) -> tuple[Any, dict]:
    """Runs `train_step` from `state.step` to `loop.num_steps`; returns (state, last eval metrics).

    Raises NonFiniteLossError (after saving nothing further) if any step's loss was not finite;
    the checkpoints written before that step are kept untouched.
    """
    start = int(jax.device_get(state.step))
    if start > 0 and hasattr(writer, "rewind"):
        writer.rewind(start)  # a resumed run logs steps after `start` again: keep each once
    last_eval: dict = {}
    pending: list[dict] = []
    t_last, steps_since = time.perf_counter(), 0
    progress = tqdm(total=loop.num_steps, initial=start, desc=loop.description, unit="step",
                    dynamic_ncols=True, disable=jax.process_index() != 0)
    # Batches placed 2 ahead by a thread; each with the data position right after it.
    feed = Prefetcher(batches, put_batch, data_state, count=loop.num_steps - start)
    try:
        for step in range(start + 1, loop.num_steps + 1):
            batch, position = next(feed)  # placed on the devices, position after it
            state, metrics = train_step(state, batch)
            pending.append(metrics)
            steps_since += 1
            is_last = step == loop.num_steps
            if step % loop.log_every == 0 or is_last:
                _check_finite(state, step, checkpointer)
                scalars = _average(jax.device_get(pending), loop.vector_labels)
                elapsed = time.perf_counter() - t_last
                scalars["steps_per_sec"] = steps_since / max(elapsed, 1e-9)
                writer.write_scalars(step, scalars, prefix="train/")
                progress.set_postfix({k: f"{v:.4g}" for k, v in scalars.items()
                                      if k in ("loss", "steps_per_sec")})
                pending, t_last, steps_since = [], time.perf_counter(), 0
            if evaluate is not None and (step % loop.eval_every == 0 or is_last):
                last_eval, images = evaluate(state)
                writer.write_scalars(step, last_eval, prefix="eval/")
                writer.write_images(step, images)
                logging.info("step %d eval: %s", step,
                             ", ".join(f"{k}={v:.4f}" for k, v in last_eval.items()))
            if step % loop.checkpoint_every == 0 or is_last:
                _check_finite(state, step, checkpointer)
                checkpointer.save(step, state, position, last_eval, config)
            progress.update(1)
    finally:
        feed.close()
    progress.close()
    checkpointer.wait()
    writer.flush()
    return state, last_eval


def _average(metrics: list[dict], labels: tuple[str, ...]) -> dict[str, float]:
    """Mean over steps; a vector metric becomes one scalar per entry, named by `labels`."""
    out = {}
    for name in metrics[0]:
        mean = np.mean(np.stack([np.asarray(m[name]) for m in metrics]), axis=0)
        if mean.ndim == 0:
            out[name] = float(mean)
        else:
            for i, v in enumerate(mean.reshape(-1)):
                out[f"{name}/{labels[i] if i < len(labels) else i}"] = float(v)
    return out


def _check_finite(state: Any, step: int, checkpointer: Checkpointer) -> None:
    bad = int(jax.device_get(state.nonfinite))
    if bad:
        checkpointer.wait()
        last = checkpointer.latest_step()
        kept = f"the last good checkpoint is step {last} in {checkpointer.directory}" if last else \
            "no checkpoint had been written yet"
        raise NonFiniteLossError(
            f"{bad} step(s) up to step {step} had a NaN/Inf loss or gradient; training stopped "
            f"({kept}). Fix: lower config.optim.lr, set config.optim.grad_clip (e.g. 1.0), or "
            "check the data for corrupt images.")
