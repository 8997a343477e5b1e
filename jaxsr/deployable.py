"""What a run deploys: `deployable.json` in the workdir names the network and where it is kept.

Every method writes it through the harness (`jaxsr.train.harness.Run.describe`) before its first
step, so predict, export and evaluate find the deployed network of any run, finished or not,
without knowing the method's folder layout:

    {"format": "jaxsr-deployable", "version": 1, "method": "drtl",
     "model": {"name": "edsr", "scale": 1, "dtype": "float32", "global_residual": true,
               "kwargs": {"num_blocks": 4, "features": 32}},
     "folder": "finetune", "use_ema": false, "training_data": "jaxsr sample 'city100_nikon'"}

`model` is a `config.model` block (what `jaxsr.model_factory.build_model` takes); the parameters
are `state.params` (or `state.ema_params` when `use_ema`) of the checkpoints under
`<workdir>/<folder>/checkpoints/` (`folder` '' = the workdir itself).
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any

FILE = "deployable.json"
FORMAT = "jaxsr-deployable"
VERSION = 1


class DeployableError(ValueError):
    """deployable.json is missing or damaged; the message names the file and the fix."""


@dataclasses.dataclass(frozen=True)
class Deployable:
    """The deployed network of a run (see the module doc)."""
    model: dict
    folder: str = ""
    use_ema: bool = False
    method: str = ""
    training_data: str = ""  # the folder (or shipped sample) it learned from, for artifacts

    @classmethod
    def of(cls, model_cfg: Any, folder: str = "", use_ema: bool = False, method: str = "",
           training_data: str = "") -> "Deployable":
        """From a `config.model` ConfigDict (or dict)."""
        if hasattr(model_cfg, "to_json_best_effort"):
            model = json.loads(model_cfg.to_json_best_effort())
        else:
            model = json.loads(json.dumps(dict(model_cfg)))
        return cls(model=model, folder=str(folder), use_ema=bool(use_ema), method=str(method),
                   training_data=str(training_data))

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "version": VERSION, **dataclasses.asdict(self)},
                          indent=2)

    def write(self, workdir: str | os.PathLike) -> pathlib.Path:
        """Writes `workdir/deployable.json` atomically (a reader never sees half a file)."""
        path = pathlib.Path(workdir) / FILE
        tmp = path.with_name(f".{FILE}.tmp")
        tmp.write_text(self.to_json())
        os.replace(tmp, path)
        return path


def describe_data(folder: str, sample: str) -> str:
    """'folder' when set, else "jaxsr sample '<name>'" (a shipped sample)."""
    return str(folder) if folder else f"jaxsr sample '{sample}'"


def read(workdir: str | os.PathLike) -> Deployable | None:
    """The run's Deployable, or None for a run that has no deployable.json (made before it
    existed)."""
    path = pathlib.Path(workdir) / FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise ValueError(f"format is {data.get('format')!r}, not {FORMAT!r}")
        if int(data.get("version", 0)) > VERSION:
            raise ValueError(f"version {data.get('version')} is newer than this jaxsr reads "
                             f"({VERSION}); upgrade jaxsr")
        model = data["model"]
        if not isinstance(model, dict) or "name" not in model or "scale" not in model:
            raise ValueError("'model' needs at least 'name' and 'scale'")
        return Deployable(model=model, folder=str(data.get("folder", "")),
                          use_ema=bool(data.get("use_ema", False)),
                          method=str(data.get("method", "")),
                          training_data=str(data.get("training_data", "")))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DeployableError(
            f"{path} cannot be read ({e}). Delete it: jaxsr then derives the deployed network "
            "from the run's config.json") from e
