"""Helpers shared by the commands that spawn a daemon."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Sequence
from typing import IO, Any

#: a daemon log line (sidecar/logs.py FORMAT): "2026-01-02 03:04:05,678 LEVEL name [pid]: ..."
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")
LOG_LEVELS = ("debug", "info", "warning", "error")


def daemon_args(argv: Sequence[str] | None) -> list[str]:
    """A daemon command line given after the options, less the `--` that may separate it
    (argparse REMAINDER keeps it)."""
    args = list(argv or [])
    return args[1:] if args and args[0] == "--" else args


class ParamsError(ValueError):
    """Params text the CLI cannot send: the message is shown as it is."""


def parse_params(text: str | None) -> Any:
    """Params for a request, from the command line or a shell line: None when empty, else a
    JSON object or array, sent as it is (the daemon checks it against the method and answers
    -32602 with the path of what is wrong). A scalar is refused here: JSON-RPC params are
    structured, so no daemon could accept one."""
    if text is None or not text.strip():
        return None
    try:
        params = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParamsError(f"params are not valid JSON: {exc}") from None
    if not isinstance(params, (dict, list)):
        raise ParamsError("params must be a JSON object or array")
    return params


class LogFilter:
    """Relays a daemon's stderr lines at or above a level; a line that is not a log record
    (a traceback's continuation, a stray print) goes with the record before it. Lines before
    the first record are not relayed: a daemon that cannot start says why in its last line,
    which the client puts in the error it raises (DaemonClient.last_words)."""

    def __init__(self, level: str, out: IO[str] | None = None) -> None:
        self.level = logging.getLevelName(level.upper())
        self.out = out
        self._showing = False

    def __call__(self, line: str) -> None:
        if match := _LOG_LINE.match(line):
            self._showing = logging.getLevelName(match[1]) >= self.level
        if self._showing:
            out = self.out or sys.stderr
            out.write(line + "\n")
            out.flush()
