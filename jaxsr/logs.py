"""Log set-up for the command lines and scripts: jaxsr's INFO lines, libraries' warnings only."""
from __future__ import annotations

import logging as std_logging

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
