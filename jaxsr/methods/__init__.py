"""Method registry: `config.method` names a module whose `train_and_evaluate(config, workdir)`
runs it. A new method is a new module here (or a package) plus a config file."""
from __future__ import annotations

import difflib
import importlib
from typing import Callable

METHODS = {
    "supervised": "jaxsr.train.supervised",
    "drtl": "jaxsr.methods.drtl.train",
}


def get(name: str) -> Callable:
    """The `train_and_evaluate(config, workdir)` function of method `name`."""
    if name not in METHODS:
        close = difflib.get_close_matches(name, list(METHODS), n=2)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"config.method={name!r} is unknown.{hint} Known: {', '.join(METHODS)}")
    return importlib.import_module(METHODS[name]).train_and_evaluate
