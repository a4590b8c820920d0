"""Helpers shared by the commands that spawn a daemon."""

from __future__ import annotations

from collections.abc import Sequence


def daemon_args(argv: Sequence[str] | None) -> list[str]:
    """A daemon command line given after the options, less the `--` that may separate it
    (argparse REMAINDER keeps it)."""
    args = list(argv or [])
    return args[1:] if args and args[0] == "--" else args
