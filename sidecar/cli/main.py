"""`sidecar` command line: serve (default), call, shell, record, replay, migrate.

Argument definitions live here; each command's work lives in its own module, imported only
when that command runs, so `sidecar serve` starts without loading the others.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from sidecar import __version__

#: options of the top-level parser itself: everything else before a command is serve's
_TOP_LEVEL_OPTIONS = ("-h", "--help", "--version")


def _daemon_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="where the database, logs and key file live "
                             "(default: $SIDECAR_DATA_DIR, else the platform's user data dir)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sidecar", description="JSON-RPC 2.0 daemon for desktop shells, "
                                     "editors and terminals.")
    parser.add_argument("--version", action="version", version=f"sidecar {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="serve JSON-RPC on stdin/stdout (the default)")
    _daemon_options(serve)
    serve.add_argument("--parent-pid", type=int, default=None,
                       help="exit when this process exits (default: the real parent)")
    serve.add_argument("--no-parent-watch", action="store_true", help="keep running if the parent dies")
    serve.add_argument("--max-concurrency", type=int, default=64, help="requests running at once (default 64)")
    serve.add_argument("--max-message-bytes", type=int, default=64 << 20,
                       help="largest accepted message (default 64 MiB)")
    serve.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default=None,
                       help="overrides the log.level setting")
    serve.add_argument("--secrets-backend", choices=("auto", "keyring", "file"), default="auto",
                       help="where the secrets key lives (default: keyring if usable, else a 0600 file)")
    serve.add_argument("--debug-methods", action="store_true", help="offer debug/* (tests only)")
    serve.add_argument("--migrations-dir", type=Path, default=None, help=argparse.SUPPRESS)

    call = sub.add_parser("call", help="spawn the daemon, call one method, print the result")
    call.add_argument("method")
    call.add_argument("params", nargs="?", default=None, help="params as a JSON object")
    call.add_argument("--daemon", nargs=argparse.REMAINDER, default=None,
                      help="daemon command line (default: this sidecar's serve); must come last")
    call.add_argument("--timeout", type=float, default=60.0)
    call.add_argument("--notifications", action="store_true", help="print notifications to stderr")
    _daemon_options(call)

    shell = sub.add_parser("shell", help="interactive session with a spawned daemon")
    _daemon_options(shell)
    shell.add_argument("--timeout", type=float, default=600.0,
                       help="seconds to wait for an answer (Ctrl-C cancels the request sooner)")
    shell.add_argument("--daemon", nargs=argparse.REMAINDER, default=None,
                       help="daemon command line (default: this sidecar's serve); must come last")

    record = sub.add_parser("record", help="pass a session through to a daemon and write it as a transcript")
    record.add_argument("--out", type=Path, required=True, help="transcript file (JSON Lines)")
    record.add_argument("--description", default="", help="what the session shows (in the transcript header)")
    record.add_argument("daemon", nargs=argparse.REMAINDER,
                        help="-- then the daemon command (default: this sidecar's serve)")

    replay = sub.add_parser("replay", help="replay a transcript against a fresh daemon and report differences")
    replay.add_argument("file", type=Path)
    replay.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each expected message")
    replay.add_argument("--verbose", action="store_true", help="show the daemon's log (stderr)")
    replay.add_argument("--daemon", nargs=argparse.REMAINDER, default=None,
                        help="daemon command line (default: the one in the transcript); must come last")

    migrate = sub.add_parser("migrate", help="apply pending database migrations, or show their status")
    _daemon_options(migrate)
    migrate.add_argument("--status", action="store_true", help="show the schema version and pending migrations")
    return parser


def with_default_command(argv: list[str]) -> list[str]:
    """`serve` put in front when no command is named: argparse would take a serve option
    there for a command and refuse it ("invalid choice")."""
    if not argv or (argv[0].startswith("-") and argv[0] not in _TOP_LEVEL_OPTIONS):
        return ["serve", *argv]
    return argv


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(with_default_command(list(sys.argv[1:] if argv is None else argv)))
    module = importlib.import_module(f"sidecar.cli.{args.command}")
    return int(module.run(args) or 0)
