"""Logging to stderr and a rotating file in the data directory; never to stdout."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d]: %(message)s"
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
MAX_BYTES = 5 << 20
BACKUP_COUNT = 3


def setup(log_file: Path | None, level: str) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    formatter = logging.Formatter(FORMAT)
    stderr = logging.StreamHandler(sys.__stderr__)
    stderr.setFormatter(formatter)
    root.addHandler(stderr)
    set_level(level)
    if log_file is not None:
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            file = logging.handlers.RotatingFileHandler(log_file, maxBytes=MAX_BYTES, backupCount=BACKUP_COUNT,
                                                        encoding="utf-8")
        except OSError as exc:
            # an unwritable log directory must not keep the daemon from serving; stderr still logs
            logging.getLogger("sidecar").warning("cannot write the log file %s: %s", log_file, exc)
            return
        file.setFormatter(formatter)
        root.addHandler(file)


def set_level(level: str) -> None:
    logging.getLogger().setLevel(LEVELS.get(level, logging.INFO))
