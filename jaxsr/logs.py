"""Log set-up for the command lines and scripts: jaxsr's INFO lines, libraries' warnings only."""
from __future__ import annotations

import logging as std_logging
import os
import sys
import traceback
from typing import NoReturn

from absl import logging


class _QuietLibraries(std_logging.Filter):
    """Drops INFO chatter of orbax/grain/tfds (their warnings and errors still show)."""
    NOISY = ("orbax", "grain", "tensorflow_datasets", "etils")

    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or not any(
            f"/{n}/" in record.pathname for n in self.NOISY)


def quiet_library_logs() -> None:
    """INFO logs from jaxsr only; libraries keep their warnings and errors."""
    logging.set_verbosity(logging.INFO)
    logging.get_absl_handler().addFilter(_QuietLibraries())


def use_verbose_flag(argv: list[str]) -> list[str]:
    """Removes `--verbose` from `argv` (the command lines' switch to show tracebacks of user
    errors) and sets JAXSR_VERBOSE=1 for it; returns the rest."""
    if "--verbose" in argv:
        os.environ["JAXSR_VERBOSE"] = "1"
    return [a for a in argv if a != "--verbose"]


def verbose() -> bool:
    """True when JAXSR_VERBOSE is set (to anything but '' or '0') or `--verbose` was passed."""
    return os.environ.get("JAXSR_VERBOSE", "") not in ("", "0")


def user_error(error: BaseException | str, code: int = 1) -> NoReturn:
    """Exits with `code` after printing `error: <message>` as one block on stderr: no
    traceback for user errors (bad data, config values, paths, a full disk) unless verbose."""
    if verbose() and isinstance(error, BaseException):
        traceback.print_exception(type(error), error, error.__traceback__)
    text = str(error).strip() or type(error).__name__
    sys.stderr.write(f"error: {text}\n")
    if not verbose():
        sys.stderr.write("(pass --verbose or set JAXSR_VERBOSE=1 to see the traceback)\n")
    sys.stderr.flush()
    raise SystemExit(code)
