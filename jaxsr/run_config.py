"""Configs and models of finished runs, for inference and export.

- `load_config_file('configs/supervised.py:tiny')`: the ConfigDict a config file makes (what
  `--config=` gives `jaxsr.main`), for notebooks and scripts.
- `config_from_dict(d)`: rebuilds a locked ConfigDict from the JSON a checkpoint stores
  (`meta['config']`) or a run's `config.json` (JSON lists become tuples again).
- `load_run(workdir, checkpoint)`: (model, params, config, meta) of a trained run's deployed
  network (`deployable.json`, see `jaxsr.deployable`).
- `make_forward(model)`: the pure inference function `(params, x) -> y` clipped to [0, 1].
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxsr import deployable
from jaxsr.checkpoint import CheckpointError, restore_params
from jaxsr.models.stacking import params_for
from jaxsr.deployable import Deployable
from jaxsr.config_util import load_config_file  # noqa: F401  (re-exported for notebooks)
from jaxsr.model_factory import build_model


def _tuples(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def config_from_dict(config: dict) -> ml_collections.ConfigDict:
    """A locked ConfigDict from a JSON-decoded config (nested dicts; lists become tuples)."""
    if not isinstance(config, dict):
        raise TypeError(f"expected a config dict (JSON object), got {type(config).__name__}")
    cfg = ml_collections.ConfigDict(_tuples(config))
    cfg.lock()
    return cfg


def read_run_config(workdir: str | pathlib.Path, meta: dict | None = None
                    ) -> ml_collections.ConfigDict:
    """The config of a run: the one saved with the checkpoint (`meta['config']`), else the run's
    `config.json`."""
    config = (meta or {}).get("config")
    if not config:
        path = pathlib.Path(workdir) / "config.json"
        if not path.is_file():
            raise CheckpointError(
                f"the checkpoint in {workdir} stores no config and {path} is missing; the run "
                "cannot be rebuilt. Copy the config.json of the run that made it into the workdir")
        try:
            config = json.loads(path.read_text())
        except ValueError as e:
            raise CheckpointError(f"{path} is not valid JSON ({e}); restore it from the run") from e
    cfg = config_from_dict(config)
    if "model" not in cfg or "name" not in cfg.model or "scale" not in cfg.model:
        raise CheckpointError(f"the config of {workdir} has no model.name / model.scale; it was "
                              "not written by jaxsr.main")
    return cfg


@dataclasses.dataclass
class Run:
    """A restored run: `model.apply({'params': params}, x)` is its network."""
    model: nn.Module
    params: Any
    config: ml_collections.ConfigDict
    meta: dict  # 'step', 'metrics', 'config' of the checkpoint
    workdir: pathlib.Path
    checkpoint_dir: pathlib.Path  # workdir, or the phase folder holding checkpoints/
    deployed: Deployable | None = None  # what deployable.json (or the run's method) says

    @property
    def scale(self) -> int:
        return int(self.config.model.scale)

    @property
    def step(self) -> int:
        return int(self.meta.get("step", -1))


def load_run(workdir: str | pathlib.Path, checkpoint: str = "latest",
             use_ema: bool | None = None) -> Run:
    """Restores the deployed network of a trained run for inference (read-only: nothing in the
    workdir is created or changed, so it is safe beside a run that is still training).

    Args:
      workdir: the run directory given to `jaxsr.main --workdir`.
      checkpoint: 'latest', 'best' (highest `train.best_metric`) or a step number.
      use_ema: use the EMA parameters; None = as the run's evaluation did.
    """
    workdir = pathlib.Path(workdir).expanduser()
    if not workdir.is_dir():
        raise CheckpointError(f"workdir '{workdir}' does not exist; pass the --workdir of a "
                              "training run (python -m jaxsr.main --config=... --workdir=DIR)")
    checkpoint = str(checkpoint)
    if checkpoint not in ("latest", "best") and not checkpoint.isdigit():
        raise ValueError(f"checkpoint={checkpoint!r}: use 'latest', 'best' or a step number")
    deployed = deployed_network(workdir)
    ckpt_dir = workdir / deployed.folder
    params, meta = restore_params(ckpt_dir, checkpoint,
                                  use_ema=deployed.use_ema if use_ema is None else use_ema)
    config = read_run_config(workdir, meta)
    model = build_model(config_from_dict(deployed.model))
    # Runs from before EDSR/RCAN/NAFNet scanned their blocks hold `block_i` entries.
    params = params_for(model, params)
    return Run(model=model, params=params, config=config, meta=meta, workdir=workdir,
               checkpoint_dir=ckpt_dir, deployed=deployed)


def deployed_network(workdir: pathlib.Path) -> Deployable:
    """The run's `deployable.json`; for runs made before it existed, what the run's method says
    its config deploys."""
    try:
        found = deployable.read(workdir)
    except deployable.DeployableError as e:
        raise CheckpointError(str(e)) from e
    if found is not None:
        return found
    from jaxsr import methods
    if not (workdir / "config.json").is_file() and not (workdir / "checkpoints").is_dir():
        raise CheckpointError(f"no checkpoints under {workdir / 'checkpoints'} and no "
                              f"{deployable.FILE}; train first (python -m jaxsr.main "
                              "--config=... --workdir=...)")
    config = read_run_config(workdir, _newest_meta(workdir))
    try:
        return methods.deployable(config)
    except ValueError as e:  # an unknown method name
        raise CheckpointError(f"{workdir}/config.json: {e}") from e


def _newest_meta(workdir: pathlib.Path) -> dict | None:
    """The metadata of the newest checkpoint directly under `workdir/checkpoints`, if any."""
    from jaxsr.checkpoint import Checkpointer
    if (workdir / "config.json").is_file() or not (workdir / "checkpoints").is_dir():
        return None
    ckpt = Checkpointer(workdir, async_save=False, read_only=True)
    step = ckpt.latest_step()
    return None if step is None else ckpt.read_meta(step)


def make_forward(model: nn.Module) -> Callable[[Any, jax.Array], jax.Array]:
    """(params, x (B, h, w, 3) float32 in [0, 1]) -> (B, h*s, w*s, 3) float32 clipped to
    [0, 1]; pure (not jitted)."""
    def forward(params: Any, x: jax.Array) -> jax.Array:
        return jnp.clip(model.apply({"params": params}, x).astype(jnp.float32), 0.0, 1.0)
    return forward
