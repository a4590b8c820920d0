"""Logging to stderr and a rotating file in the data directory; never to stdout."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d]: %(message)s"
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def setup(log_file: Path | None, level: str) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    formatter = logging.Formatter(FORMAT)
    stderr = logging.StreamHandler(sys.__stderr__)
    stderr.setFormatter(formatter)
    root.addHandler(stderr)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file = logging.handlers.RotatingFileHandler(log_file, maxBytes=5 << 20, backupCount=3, encoding="utf-8")
        file.setFormatter(formatter)
        root.addHandler(file)
    set_level(level)


def set_level(level: str) -> None:
    logging.getLogger().setLevel(LEVELS.get(level, logging.INFO))
