"""`sidecar record --out FILE -- [daemon command]`: a transparent proxy that writes a transcript.

A shell spawns this in place of the daemon. Every byte passes through unchanged; stdout
carries the daemon's output and nothing else, so our own fd 1 is pointed at stderr first.
A daemon that cannot be started or a transcript that cannot be written is one line on
stderr and exit 2, with no transcript left behind and no directory made.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import IO

from sidecar.cli.common import daemon_args
from sidecar.client import daemon_argv


def run(args: argparse.Namespace) -> int:
    from sidecar.transcripts import Recorder

    argv = daemon_args(args.daemon) or daemon_argv()
    if shutil.which(argv[0]) is None:  # checked before the transcript is opened (and truncated)
        return _fail(f"cannot start the daemon {argv[0]!r}: no such program, or not executable")
    try:
        transcript = _open_private(args.out)
    except OSError as exc:
        return _fail(f"cannot write the transcript {str(args.out)!r}: {_reason(exc)}")
    # keep the protocol stream on a private duplicate, so no print (ours or a library's)
    # can reach the client
    out_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    recorder: Recorder | None = None
    try:
        with transcript:
            recorder = Recorder(argv, transcript, description=args.description, out_fd=out_fd)
            return recorder.run()
    except OSError as exc:
        if recorder is not None and recorder.proc is not None:
            raise  # the session ran: a real fault, with its traceback
        _remove(args.out)  # the daemon never ran: a header-only transcript is worth nothing
        if recorder is None:  # the header could not be written
            return _fail(f"cannot write the transcript {str(args.out)!r}: {_reason(exc)}")
        return _fail(f"cannot start the daemon {argv[0]!r}: {_reason(exc)}")
    finally:
        os.close(out_fd)


def _fail(message: str) -> int:
    print(f"sidecar record: {message}", file=sys.stderr)
    return 2


def _reason(exc: OSError) -> str:
    return f"[Errno {exc.errno}] {exc.strerror}" if exc.errno is not None else str(exc)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


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
