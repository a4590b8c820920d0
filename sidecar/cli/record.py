"""`sidecar record --out FILE -- [daemon command]`: a transparent proxy that writes a transcript.

A shell spawns this in place of the daemon. Every byte passes through unchanged; stdout
carries the daemon's output and nothing else, so our own fd 1 is pointed at stderr first.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import IO

from sidecar.cli.common import daemon_args
from sidecar.client import daemon_argv


def run(args: argparse.Namespace) -> int:
    from sidecar.transcripts import Recorder

    argv = daemon_args(args.daemon) or daemon_argv()
    # keep the protocol stream on a private duplicate, so no print (ours or a library's)
    # can reach the client
    out_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _open_private(args.out) as transcript:
            return Recorder(argv, transcript, description=args.description, out_fd=out_fd).run()
    finally:
        os.close(out_fd)


def _open_private(path: Path) -> IO[str]:
    """The transcript, for its owner only: secret values are redacted, but a session still
    shows names, settings and paths that are nobody else's business."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if hasattr(os, "fchmod"):  # not on Windows, where the mode means little anyway
            os.fchmod(fd, 0o600)  # O_CREAT's mode applies to a new file only
        return os.fdopen(fd, "w", encoding="utf-8")
    except BaseException:
        os.close(fd)
        raise
