"""`sidecar replay FILE`: run a transcript against a fresh daemon; exit 1 on any difference."""

from __future__ import annotations

import argparse
import subprocess
import sys

from sidecar.cli.common import daemon_args


def run(args: argparse.Namespace) -> int:
    from sidecar.transcripts import TranscriptError, replay

    try:
        report = replay(args.file, daemon=daemon_args(args.daemon) or None, timeout=args.timeout,
                        stderr=None if args.verbose else subprocess.DEVNULL)
    except (TranscriptError, OSError) as exc:
        print(f"sidecar replay: {exc}", file=sys.stderr)
        return 2
    print(report.render())
    return 0 if report.ok else 1
