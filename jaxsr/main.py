"""Command line: `python -m jaxsr.main --config=configs/<method>.py[:variant] [--workdir=DIR]
[--config.a.b=value ...]`.

The config's `method` field picks the trainer (see `jaxsr.methods`). Without --workdir the run
goes to runs/<config>[-<variant>]; running the same command again resumes from its checkpoints.
"""
from __future__ import annotations

import os
import pathlib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file, optionally with ':variant' (e.g. configs/drtl.py:tiny).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default runs/<config>-<variant>).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator", None, "host:port of process 0 for multi-process runs (jax.distributed); "
    "on TPU pods and SLURM/GPU clusters leave unset and pass --distributed.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (0-based).")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "Call jax.distributed.initialize() with auto-detection.")


def default_workdir(config_arg: str) -> str:
    """runs/<file stem>[-<variant with commas as dashes>]."""
    path, _, variant = config_arg.partition(":")
    name = pathlib.Path(path).stem
    if variant:
        name += "-" + variant.replace(",", "-").replace("=", "")
    return os.path.join("runs", name)


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    import jax
    if _COORDINATOR.value or _DISTRIBUTED.value:
        # CPU processes need gloo for cross-process collectives (no effect on GPU/TPU).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                                   num_processes=_NUM_PROCESSES.value,
                                   process_id=_PROCESS_ID.value)
    config = _CONFIG.value
    workdir = _WORKDIR.value or default_workdir(_config_arg())
    logging.info("config %s -> workdir %s", _config_arg(), workdir)
    from jaxsr import methods
    train_and_evaluate = methods.get(config.method)
    train_and_evaluate(config, workdir)


def _config_arg() -> str:
    for arg in sys.argv[1:]:
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return flags.FLAGS["config"].serialize().split("=", 1)[-1]


def check_overrides(argv: list[str]) -> None:
    """Exits with a clear message if the config file is missing, its variant is unknown, or a
    `--config.a.b=v` override names no key (ml_collections would print a traceback instead)."""
    config_arg = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    keys = [a[len("--config."):].split("=", 1)[0] for a in argv if a.startswith("--config.")]
    if not config_arg:
        return
    from jaxsr.config_util import ConfigError, check_key, load_config_file
    path, _, variant = config_arg.partition(":")
    try:
        config = load_config_file(path, variant)
        for key in keys:
            check_key(config, key)
    except ConfigError as e:
        sys.exit(f"error: {e}")


def run() -> None:
    flags.mark_flags_as_required(["config"])
    check_overrides(sys.argv[1:])
    from jaxsr.logs import quiet_library_logs
    quiet_library_logs()
    app.run(main)


if __name__ == "__main__":
    run()
