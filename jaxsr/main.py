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
    from jaxsr import compile_cache
    compile_cache.enable()   # reruns and resumes load compiled programs from disk
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
    from jaxsr.config_util import check_values
    try:
        check_values(config)
        check_workdir(workdir)
        train_and_evaluate = methods.get(config.method)
        train_and_evaluate(config, workdir)
    except Exception as e:  # user errors: one message, no traceback (unless --verbose)
        message = user_error_message(e, workdir)
        if message is None:
            raise
        from jaxsr.logs import user_error
        user_error(e if message == str(e) else _Reworded(message, e))


class _Reworded(Exception):
    """A user error with a message written here (the original is its cause, for --verbose)."""

    def __init__(self, message: str, cause: BaseException):
        super().__init__(message)
        self.__cause__ = cause
        self.__traceback__ = cause.__traceback__


_DISK_ERRNOS = {"ENOSPC": "the disk is full", "EDQUOT": "the disk quota is exceeded",
                "EROFS": "the file system is read-only", "EACCES": "permission denied",
                "EPERM": "permission denied", "ENOTDIR": "a part of the path is a file",
                "EEXIST": "a file is in the way"}


def user_error_message(error: BaseException, workdir: str) -> str | None:
    """The one-line message for a user error (bad data, config values, paths, a full disk), or
    None for anything else (a bug: the traceback is shown). Looks through wrapped causes."""
    import errno
    from jaxsr.checkpoint import CheckpointError
    from jaxsr.config_util import ConfigError
    from jaxsr.data.sources import DataError
    from jaxsr.imageio import ImageReadError, PairMismatchError
    from jaxsr.train.loop import NonFiniteLossError
    seen, e = set(), error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (ConfigError, DataError, ImageReadError, PairMismatchError,
                          CheckpointError, NonFiniteLossError)):
            return str(e)
        if isinstance(e, OSError) and e.errno is not None:
            name = errno.errorcode.get(e.errno, "")
            if name in _DISK_ERRNOS:
                where = e.filename or workdir
                return (f"cannot write '{where}': {_DISK_ERRNOS[name]} ({e.strerror}). Fix: "
                        "free space / fix permissions, or pass another --workdir (a resumed "
                        "run continues from its last checkpoint)")
        e = e.__cause__ or e.__context__
    return None


def check_workdir(workdir: str) -> None:
    """Creates the workdir and checks that a file can be written in it, before any work."""
    import tempfile
    path = pathlib.Path(workdir).expanduser()
    if path.exists() and not path.is_dir():
        from jaxsr.config_util import ConfigError
        raise ConfigError(f"--workdir '{path}' is an existing file; pass a folder")
    path.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(dir=path, prefix=".jaxsr-write-test.")
    os.close(fd)
    os.unlink(probe)


def join_config_arg(argv: list[str]) -> list[str]:
    """`--config FILE` (a space instead of '=') -> `--config=FILE`, so both spellings get the
    same checks."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] == "--config" and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            out.append("--config=" + argv[i + 1])
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


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
        from jaxsr.logs import user_error
        user_error(e)


def run() -> None:
    from jaxsr.logs import use_verbose_flag
    sys.argv = join_config_arg(use_verbose_flag(sys.argv))
    flags.mark_flags_as_required(["config"])
    check_overrides(sys.argv[1:])
    from jaxsr.logs import quiet_library_logs
    quiet_library_logs()
    app.run(main)


if __name__ == "__main__":
    run()
