"""`sidecar record --out FILE -- [daemon command]`: a transparent proxy that writes a transcript.

A shell spawns this in place of the daemon. Every byte passes through unchanged; stdout
carries the daemon's output and nothing else, so our own fd 1 is pointed at stderr first.
"""

from __future__ import annotations

import argparse
import os
import sys

from sidecar.client import daemon_argv


def run(args: argparse.Namespace) -> int:
    from sidecar.transcripts import Recorder

    argv = list(args.daemon or [])
    if argv and argv[0] == "--":
        argv = argv[1:]
    argv = argv or daemon_argv()
    # keep the protocol stream on a private duplicate, so no print (ours or a library's)
    # can reach the client
    out_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(args.out, "w", encoding="utf-8") as transcript:
            return Recorder(argv, transcript, description=args.description, out_fd=out_fd).run()
    finally:
        os.close(out_fd)
