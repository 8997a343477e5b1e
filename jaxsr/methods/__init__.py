"""Method registry: `config.method` names a module whose `train_and_evaluate(config, workdir)`
runs it (through `jaxsr.train.harness.Run`) and whose `deployable(config)` names the network it
deploys (`jaxsr.deployable.Deployable`). A new method is a new module here plus a config file."""
from __future__ import annotations

import difflib
import importlib
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from jaxsr.deployable import Deployable

METHODS = {
    "supervised": "jaxsr.methods.supervised",
    "drtl": "jaxsr.methods.drtl.train",
    "crl": "jaxsr.methods.crl.train",
    "pcl": "jaxsr.methods.pcl.train",
    "irconstyle": "jaxsr.methods.irconstyle.train",
}


def _module(name: str):
    if name not in METHODS:
        close = difflib.get_close_matches(name, list(METHODS), n=2)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"config.method={name!r} is unknown.{hint} Known: {', '.join(METHODS)}")
    return importlib.import_module(METHODS[name])


def get(name: str) -> Callable:
    """The `train_and_evaluate(config, workdir)` function of method `name`."""
    return _module(name).train_and_evaluate


def deployable(config) -> "Deployable":
    """The network a run of `config` deploys (for runs made before deployable.json existed)."""
    return _module(config.get("method", "supervised")).deployable(config)
