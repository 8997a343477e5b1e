"""Orbax checkpoints for jaxsr: the only module that touches orbax.

A workdir holds `checkpoints/<step>/` with three items:
  state: the train state pytree (params, EMA params, optimizer state, step, rng),
  data:  the input-pipeline iterator state (JSON), so a resumed run sees the same data order,
  meta:  JSON with the step, the evaluation metrics and the config that produced it.
Kept: the latest `keep` steps plus the best one by `best_metric` (higher is better).
Saves are asynchronous; every call that needs the files on disk waits first.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
from typing import Any, Mapping

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocm

CHECKPOINT_DIR = "checkpoints"


class CheckpointError(RuntimeError):
    """A checkpoint could not be read; the message names the path and the fix."""


def _metric_of(best_metric: str):
    def get(metrics: Mapping[str, float]) -> float:
        return float(metrics[best_metric])
    return get


class Checkpointer:
    """Saves and restores train state, iterator state and metadata under `workdir/checkpoints`.

    Args:
      workdir: run directory (created if missing).
      keep: how many of the latest checkpoints to keep.
      best_metric: metric name (in the `metrics` passed to `save`) whose maximum is always kept.
      async_save: save in a background thread (the default); `wait()` blocks until written.
      read_only: open for reading only: nothing is created, cleaned or deleted (predict,
        export and evaluation beside a run that is still training).
    """

    def __init__(self, workdir: str | pathlib.Path, keep: int = 3,
                 best_metric: str | None = "psnr_y", async_save: bool = True,
                 read_only: bool = False):
        self.directory = pathlib.Path(workdir).absolute() / CHECKPOINT_DIR
        self.best_metric = best_metric
        policies: list[Any] = [ocm.LatestN(n=keep)]
        if best_metric:
            policies.append(ocm.BestN(get_metric_fn=_metric_of(best_metric), n=1,
                                      keep_checkpoints_without_metrics=False))
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocm.AnyPreservationPolicy(policies),
            enable_async_checkpointing=async_save and not read_only,
            cleanup_tmp_directories=not read_only,
            create=not read_only,
            read_only=read_only,
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "data", "meta"))

    # ----------------------------------------------------------------------------------- save
    def save(self, step: int, state: Any, data_state: Mapping[str, Any] | None = None,
             metrics: Mapping[str, float] | None = None, config: Any = None,
             force: bool = True) -> bool:
        """Saves `state` (a pytree of arrays) at `step`; returns whether a save started."""
        meta = {"step": int(step), "metrics": _floats(metrics or {}),
                "config": _config_json(config)}
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(dict(data_state or {})),
            meta=ocp.args.JsonSave(meta),
        )
        clean_metrics = _floats(metrics) if metrics and self.best_metric in metrics else None
        return self._manager.save(int(step), args=args, metrics=clean_metrics, force=force)

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self.wait()
        self._manager.close()

    # -------------------------------------------------------------------------------- restore
    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        """The kept step with the highest `best_metric` (None if no step has metrics)."""
        best, best_value = None, None
        for step in self.all_steps():
            value = self.read_meta(step).get("metrics", {}).get(self.best_metric)
            if value is not None and (best_value is None or value > best_value):
                best, best_value = step, value
        return best

    def read_meta(self, step: int) -> dict:
        path = self.directory / str(step) / "meta" / "metadata"
        if not path.exists():  # Orbax's JSON handler file name differs between versions.
            candidates = list((self.directory / str(step) / "meta").glob("*"))
            path = candidates[0] if candidates else path
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise CheckpointError(f"cannot read checkpoint metadata {path}: {e}") from e

    def restore(self, step: int | None, abstract_state: Any) -> tuple[Any, dict, dict]:
        """Restores (state, data_state, meta) at `step` (None = latest) into `abstract_state`'s
        structure, shapes, dtypes and shardings (e.g. from `jax.eval_shape` + shardings)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        try:
            restored = self._restore_into(step, abstract_state)
        except Exception as e:  # orbax raises many types; name the path and the fix.
            legacy = _without_empty_fields(abstract_state)
            if legacy is not None:  # written before those (empty) fields existed
                try:
                    restored = self._restore_into(step, legacy[0])
                    state = abstract_state.replace(**restored.state)
                    return state, dict(restored.data or {}), dict(restored.meta or {})
                except Exception:
                    pass
            converted = self._restore_other_block_layout(step, abstract_state, legacy)
            if converted is not None:
                return converted
            raise CheckpointError(
                f"cannot restore checkpoint {self.directory / str(step)}: {e}\n"
                "The checkpoint may come from a different model/config, or be damaged: use a "
                "new --workdir, or delete that step's folder to fall back to an older one."
                + _BLOCK_LAYOUT_HINT
            ) from e
        return restored.state, dict(restored.data or {}), dict(restored.meta or {})

    def _restore_other_block_layout(self, step: int, abstract_state: Any,
                                    legacy: tuple[dict] | None) -> tuple[Any, dict, dict] | None:
        """A checkpoint written with the other repeated-block layout (unrolled `block_i` before
        EDSR/RCAN/NAFNet scanned their blocks, or the reverse; `jaxsr.models.stacking`):
        restores into that layout, converts to `abstract_state`'s and places the arrays with its
        shardings. None when neither layout (nor the legacy fields-less target) fits."""
        from jaxsr.models import stacking
        targets = [(abstract_state, None)] + ([(legacy[0], abstract_state)] if legacy else [])
        for target, full in targets:
            for to_other, back in ((stacking.unstack_blocks, stacking.stack_blocks),
                                   (stacking.stack_blocks, stacking.unstack_blocks)):
                try:
                    other = to_other(target)
                    if jax.tree.structure(other) == jax.tree.structure(target):
                        continue  # nothing in the target has the other layout
                    restored = self._restore_into(step, other)
                    state = back(restored.state, like=target)
                    state = jax.tree.map(_place_like, state, target)
                except Exception:  # not this layout either
                    continue
                if full is not None:
                    state = full.replace(**state)
                logging.warning(
                    "checkpoint %s holds the %s block layout; converted it to the model's (%s)",
                    self.directory / str(step),
                    "unrolled (block_i)" if to_other is stacking.unstack_blocks else "stacked",
                    "stacked" if to_other is stacking.unstack_blocks else "unrolled")
                return state, dict(restored.data or {}), dict(restored.meta or {})
        return None

    def _restore_into(self, step: int, abstract_state: Any):
        return self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=ocp.args.JsonRestore(),
            meta=ocp.args.JsonRestore(),
        ))

    def restore_raw(self, step: int | None = None) -> tuple[Any, dict]:
        """Restores the state as saved (nested dicts of numpy arrays) without a target, with meta."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
        except Exception as e:
            raise CheckpointError(f"cannot restore checkpoint {self.directory / str(step)}: {e}") from e
        return restored.state, dict(restored.meta or {})


_BLOCK_LAYOUT_HINT = (
    "\nIf the model's repeated blocks changed layout (EDSR/RCAN/NAFNet scan their blocks, "
    "parameters 'blocks' / 'groups' stacked on a leading axis, since scan_blocks=True became "
    "the default; older runs hold 'block_0', 'block_1', ...): restore is converted "
    "automatically when only that differs; to convert parameters yourself use "
    "jaxsr.models.stacking.stack_blocks / unstack_blocks, or build the model unrolled with "
    "--config.model.scan_blocks=False.")


def _place_like(x: Any, target: Any) -> Any:
    """`x` as an array with `target`'s sharding (a ShapeDtypeStruct's or an array's), checked
    against its shape; non-array leaves as they are."""
    if not hasattr(target, "shape"):
        return x
    if tuple(x.shape) != tuple(target.shape):
        raise ValueError(f"shape {tuple(x.shape)} != {tuple(target.shape)}")
    sharding = getattr(target, "sharding", None)
    return jax.device_put(x, sharding) if sharding is not None else jax.numpy.asarray(x)


def _without_empty_fields(state: Any) -> tuple[dict] | None:
    """For a dataclass state whose fields include empty dicts (e.g. a TrainState without
    auxiliary networks or buffers): ({field: value} without those fields,), else None. Such
    fields hold no arrays, so checkpoints written before they existed restore into the rest."""
    if not dataclasses.is_dataclass(state):
        return None
    values = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
    empty = [k for k, v in values.items() if isinstance(v, dict) and not v]
    if not empty:
        return None
    return ({k: v for k, v in values.items() if k not in empty},)


def abstract_like(tree: Any) -> Any:
    """ShapeDtypeStructs (with shardings) describing a concrete pytree, for `restore`."""
    def leaf(x):
        sharding = getattr(x, "sharding", None)
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
    return jax.tree.map(leaf, tree)


def _floats(metrics: Mapping[str, Any] | None) -> dict:
    return {k: float(v) for k, v in (metrics or {}).items()}


def _config_json(config: Any) -> Any:
    if config is None:
        return None
    if hasattr(config, "to_json_best_effort"):
        return json.loads(config.to_json_best_effort())
    return config


def restore_params(workdir: str | pathlib.Path, which: str = "latest",
                   use_ema: bool = True) -> tuple[Any, dict]:
    """Loads model parameters from a run directory for inference, read-only.

    Args:
      workdir: a training run directory (holds `checkpoints/`).
      which: 'latest', 'best' or a step number as a string.
      use_ema: return the EMA parameters when the run kept them.
    Returns:
      (params pytree of numpy arrays, meta dict with 'step', 'metrics', 'config').
    """
    directory = pathlib.Path(workdir).absolute() / CHECKPOINT_DIR
    if not directory.is_dir():
        raise CheckpointError(f"no checkpoints under {directory}; train first "
                              "(python -m jaxsr.main --config=... --workdir=...)")
    for attempt in range(3):
        # Orbax lists committed steps only (a step being written lives in a temporary folder
        # until it is renamed), so this is the newest complete checkpoint even beside a live run.
        ckpt = Checkpointer(workdir, async_save=False, read_only=True)
        step = None
        try:
            step = _pick_step(ckpt, which)
            state, meta = ckpt.restore_raw(step)
            break
        except CheckpointError:
            # A live run's keep-N policy may delete the step between listing and reading it:
            # list again and read the newest then.
            again = Checkpointer(workdir, async_save=False, read_only=True).all_steps()
            if which not in ("latest", "best") or not again or step in again \
                    or attempt == 2:
                raise
            logging.info("checkpoint %s of %s was removed while reading it (the run is still "
                         "training); reading the newest again", step, ckpt.directory)
    ckpt.close()
    params = state.get("ema_params") if use_ema else None
    if params is None or (isinstance(params, dict) and not params):
        params = state["params"]
    return params, meta


def _pick_step(ckpt: Checkpointer, which: str) -> int:
    """The step `which` ('latest', 'best' or a number) names among `ckpt`'s committed steps."""
    steps = ckpt.all_steps()
    if not steps:
        raise CheckpointError(f"no checkpoints under {ckpt.directory}; train first "
                              "(python -m jaxsr.main --config=... --workdir=...)")
    if which == "latest":
        return steps[-1]
    if which == "best":
        step = ckpt.best_step()
        if step is None:
            logging.warning("no checkpoint in %s has metrics; using the latest", ckpt.directory)
            step = steps[-1]
        return step
    step = int(which)
    if step not in steps:
        raise CheckpointError(f"step {step} not in {ckpt.directory} (have {steps})")
    return step
