"""`sidecar` command line: serve (default), call, shell, describe, doctor, record, replay, migrate.

Argument definitions live here; each command's work lives in its own module, imported only
when that command runs, so `sidecar serve` starts without loading the others.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from sidecar import __version__
from sidecar.cli.common import LOG_LEVELS

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
    serve.add_argument("--no-parent-watch", action="store_true",
                       help="keep running if the parent dies (default: exit within a second of it)")
    serve.add_argument("--max-concurrency", type=int, default=64, help="requests running at once (default 64)")
    serve.add_argument("--max-message-bytes", type=int, default=64 << 20,
                       help="largest accepted message (default 64 MiB)")
    serve.add_argument("--log-level", choices=LOG_LEVELS, default=None,
                       help="overrides the log.level setting (default: the setting, info unless changed)")
    serve.add_argument("--secrets-backend", choices=("auto", "keyring", "file"), default="auto",
                       help="where the secrets key lives (default: keyring if usable, else a 0600 file)")
    serve.add_argument("--debug-methods", action="store_true", help="offer debug/* (tests only; default off)")
    serve.add_argument("--migrations-dir", type=Path, default=None, help=argparse.SUPPRESS)

    call = sub.add_parser("call", help="spawn the daemon, call one method, print the result",
                          description="Spawn a fresh daemon (its own process: system/metrics there shows only "
                                      "this call), initialize, call METHOD, print the result as JSON, shut "
                                      "it down. Exit 0, 1 on an error answer, 2 on bad arguments, 130 on "
                                      "Ctrl-C (which cancels the request).")
    call.add_argument("method", help="method name, e.g. system/ping (`sidecar describe` lists them)")
    call.add_argument("params", nargs="?", default=None,
                      help="params as a JSON object or array (default: none), e.g. '{\"count\": 3}'")
    call.add_argument("--daemon", nargs=argparse.REMAINDER, default=None,
                      help="daemon command line (default: this sidecar's serve); must come last")
    call.add_argument("--timeout", type=float, default=60.0,
                      help="seconds to wait for the answer (default 60; Ctrl-C cancels sooner)")
    call.add_argument("--notifications", action="store_true",
                      help="print notifications to stderr as they arrive (default: not shown)")
    call.add_argument("--log-level", choices=LOG_LEVELS, default=None,
                      help="show the daemon's log from this level up on stderr (default: warning)")
    call.add_argument("-v", "--verbose", action="count", default=0,
                      help="show more of the daemon's log: -v info, -vv debug")
    _daemon_options(call)

    shell = sub.add_parser("shell", help="interactive session with a spawned daemon")
    _daemon_options(shell)
    shell.add_argument("--timeout", type=float, default=600.0,
                       help="seconds to wait for an answer (default 600; Ctrl-C cancels the request sooner)")
    shell.add_argument("--daemon", nargs=argparse.REMAINDER, default=None,
                       help="daemon command line (default: this sidecar's serve); must come last")

    describe = sub.add_parser("describe", help="a method's params and result, with types, defaults and "
                                               "descriptions (no daemon needed)")
    describe.add_argument("method", nargs="?", default=None,
                          help="method name, e.g. system/stream (default: list every method)")
    describe.add_argument("--json", action="store_true",
                          help="print the system/describe result as JSON (default: text)")

    doctor = sub.add_parser("doctor", help="check the installation, data directory, database and optional "
                                           "parts; say how to fix what is wrong")
    _daemon_options(doctor)
    doctor.add_argument("--json", action="store_true", help="print the checks as JSON (default: text)")

    record = sub.add_parser("record", help="pass a session through to a daemon and write it as a transcript")
    record.add_argument("--out", type=Path, required=True,
                        help="transcript file (JSON Lines); its directory must exist")
    record.add_argument("--description", default="",
                        help="what the session shows, in the transcript header (default: empty)")
    record.add_argument("daemon", nargs=argparse.REMAINDER,
                        help="-- then the daemon command (default: this sidecar's serve)")

    replay = sub.add_parser("replay", help="replay a transcript against a fresh daemon and report differences")
    replay.add_argument("file", type=Path, help="transcript file (JSON Lines), e.g. tests/transcripts/ping.jsonl")
    replay.add_argument("--timeout", type=float, default=10.0,
                        help="seconds to wait for each expected message (default 10)")
    replay.add_argument("--verbose", action="store_true", help="show the daemon's log on stderr (default: hidden)")
    replay.add_argument("--daemon", nargs=argparse.REMAINDER, default=None,
                        help="daemon command line (default: the one in the transcript); must come last")

    migrate = sub.add_parser("migrate", help="apply pending database migrations, or show their status")
    _daemon_options(migrate)
    migrate.add_argument("--status", action="store_true",
                         help="only show the schema version and pending migrations (default: apply them)")
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
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:  # Ctrl-C where a command does not handle it: no traceback
        return 130
