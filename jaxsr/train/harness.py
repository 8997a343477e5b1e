"""The run harness every method trains through: one workdir, one mesh, one writer, named phases.

A method builds its networks, a pure step `(state, batch) -> (state, metrics)` and a batch
iterator, and hands them to the harness, which owns everything around the loop:

    run = Run(config, workdir)                      # workdir, mesh, metrics writer, config.json
    run.describe(Deployable.of(config.model, folder="finetune", use_ema=False, method="drtl"))
    evaluator = Evaluator(model, pairs, scale, config.eval)
    state, last_eval = run.phase("finetune", state=state, step_fn=step, batches=batches,
                                 num_steps=200, evaluate=evaluator.for_loop("finetune/", False))
    run.finish(summary)                             # summary.json, closes the writer

A phase places the state on the mesh, restores the newest checkpoint of its folder (state and,
for an unfinished phase, the data position: exact resume), jits the step once (state donated),
runs `jaxsr.train.loop.run_loop` (logs, evaluation, checkpoints, NaN stop) and closes its
checkpointer. `batches` yields host batches and has `get_state() -> dict` / `set_state(dict)`
(`jaxsr.data.pipeline.Batches`, `jaxsr.methods.drtl.data.JointIterator`).
"""
from __future__ import annotations

import json
import logging
import pathlib
from typing import Any, Callable, Iterator

import jax
import ml_collections

from jaxsr.checkpoint import Checkpointer, abstract_like
from jaxsr.deployable import Deployable
from jaxsr.train import mesh as mesh_lib
from jaxsr.train.loop import LoopConfig, run_loop
from jaxsr.train.steps import compile_step
from jaxsr.train.writer import MetricWriter

NEVER = 10 ** 12  # an `eval_every` for phases without periodic evaluation


class Run:
    """One training run in `workdir` (created): mesh over every device, metrics writer,
    `config.json`. Phases read `config.train.{log_every, checkpoint_every, keep_checkpoints}`."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str | pathlib.Path):
        self.config = config
        self.workdir = pathlib.Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.mesh = mesh_lib.make_mesh()
        self.state_sharding = mesh_lib.replicated(self.mesh)
        self.writer = MetricWriter(self.workdir)
        self.is_main = jax.process_index() == 0
        if self.is_main:
            (self.workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
        logging.info("devices: %d (%s), processes: %d", self.mesh.devices.size,
                     jax.default_backend(), jax.process_count())

    # ------------------------------------------------------------------------------ phases
    def phase(self, name: str, *, state: Any, step_fn: Callable[[Any, Any], tuple[Any, dict]],
              batches: Iterator[Any], num_steps: int, folder: str | None = None,
              batch_sharding: Any = None, evaluate: Callable[[Any], tuple[dict, dict]] | None
              = None, eval_every: int | None = None, best_metric: str | None = None,
              log_prefix: str | None = None, description: str | None = None,
              vector_labels: tuple[str, ...] = ()) -> tuple[Any, dict]:
        """Trains `state` with `step_fn` up to `num_steps`, resuming from `workdir/folder`.

        folder: checkpoint folder under the workdir (default `name`; '' = the workdir itself).
        batch_sharding: one sharding or a dict keyed like the batch (default: axis 0 over
          'data'). evaluate / eval_every: periodic evaluation (and the metric `best_metric` the
          checkpointer keeps the best of). log_prefix: prefix of logged names (default
          f'{name}/'). Returns (final state, last evaluation metrics).
        """
        tc = self.config.train
        folder = name if folder is None else folder
        batch_sharding = batch_sharding or mesh_lib.batch_sharding(self.mesh)
        checkpointer = Checkpointer(self.workdir / folder, keep=tc.keep_checkpoints,
                                    best_metric=best_metric)
        state = jax.device_put(state, self.state_sharding)
        state = self._resume(checkpointer, state, batches, name, num_steps)
        step = compile_step(step_fn, self.mesh, self.state_sharding, batch_sharding)
        loop = LoopConfig(num_steps=num_steps, log_every=tc.log_every,
                          eval_every=eval_every or NEVER, checkpoint_every=tc.checkpoint_every,
                          description=description or name, vector_labels=tuple(vector_labels))
        prefix = f"{name}/" if log_prefix is None else log_prefix
        writer = self.writer.scoped(prefix) if prefix else self.writer
        try:
            state, last_eval = run_loop(
                state=state, train_step=step, batches=batches,
                put_batch=lambda b: mesh_lib.put_batch(b, batch_sharding),
                data_state=batches.get_state, loop=loop, checkpointer=checkpointer,
                writer=writer, evaluate=evaluate, config=self.config)
        finally:
            checkpointer.close()
        return state, last_eval

    @staticmethod
    def _resume(checkpointer: Checkpointer, state: Any, batches: Any, name: str,
                num_steps: int) -> Any:
        """The newest checkpoint's state (bit-exact) and, for an unfinished phase, its data
        position (a finished phase may be reused with other data, e.g. another target)."""
        if checkpointer.latest_step() is None:
            return state
        state, data_state, meta = checkpointer.restore(None, abstract_like(state))
        if data_state and meta["step"] < num_steps:
            batches.set_state(data_state)
        logging.info("%s: resumed from step %d in %s", name, meta["step"],
                     checkpointer.directory)
        return state

    # ------------------------------------------------------------------------- description
    def describe(self, deployable: Deployable) -> None:
        """Writes `deployable.json`: which network predict/export load, and from where."""
        if self.is_main:
            deployable.write(self.workdir)

    def finish(self, summary: dict) -> dict:
        """Writes `summary.json` and closes the writer; returns `summary`."""
        if self.is_main:
            (self.workdir / "summary.json").write_text(json.dumps(summary, indent=2))
        self.writer.close()
        return summary
