"""`sidecar call METHOD [JSON]`: spawn the daemon, initialize, call, print, exit.

The daemon's log is relayed to stderr from `--log-level` up (warnings and errors unless
asked: `-v` adds info, `-vv` debug). Ctrl-C while waiting cancels the request with
`$/cancelRequest`, shuts the daemon down and exits 130 without a traceback.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

import msgspec

from sidecar.cli.common import LogFilter, ParamsError, daemon_args, parse_params
from sidecar.client import DaemonClient, RpcError, daemon_argv, request_message

#: seconds to wait for a cancelled request's answer after Ctrl-C
CANCEL_WAIT = 5.0
#: exit code after Ctrl-C, as shells report a SIGINT death
INTERRUPTED = 130


def daemon_command(args: argparse.Namespace, *extra: str) -> list[str]:
    """The daemon to spawn: --daemon ARGV..., else this sidecar's serve (with --data-dir and
    `extra`)."""
    if argv := daemon_args(args.daemon):
        return argv
    data_dir = ["--data-dir", str(args.data_dir)] if getattr(args, "data_dir", None) else []
    return daemon_argv(*data_dir, *extra)


def log_level(args: argparse.Namespace) -> str:
    """--log-level, else warning; each -v one step more verbose."""
    if args.log_level:
        return str(args.log_level)
    return ("warning", "info", "debug")[min(args.verbose, 2)]


def run(args: argparse.Namespace) -> int:
    try:
        params = parse_params(args.params)
    except ParamsError as exc:
        print(f"sidecar call: {exc}", file=sys.stderr)
        return 2

    def show(note: dict[str, Any]) -> None:
        print(msgspec.json.encode(note).decode(), file=sys.stderr, flush=True)

    level = log_level(args)
    # the daemon logs from info up by default: it only needs telling for debug
    argv = daemon_command(args, *(["--log-level", "debug"] if level == "debug" else []))
    try:
        # a session of its own: Ctrl-C reaches this process, which cancels the request and
        # shuts the daemon down in order
        client = DaemonClient(argv, stderr=subprocess.PIPE, on_stderr=LogFilter(level),
                              on_notification=show if args.notifications else None, new_session=True)
    except OSError as exc:  # no such program, not executable, ...
        print(f"sidecar call: cannot start the daemon {argv[0]!r}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        return _call(client, args.method, params, args.timeout)
    except KeyboardInterrupt:  # while starting, or a second Ctrl-C while cancelling
        client.close(timeout=2)
        return INTERRUPTED


def _call(client: DaemonClient, method: str, params: Any, timeout: float) -> int:
    try:
        client.initialize("sidecar-call")
    except (RpcError, OSError) as exc:  # OSError: it exited, timed out, or stopped reading
        print(f"sidecar call: the daemon did not initialize: {exc}", file=sys.stderr)
        client.close(timeout=2)
        return 1
    request_id = client.next_id()
    waiter = client.expect(request_id)
    try:
        client.send(request_message(request_id, method, params))
        try:
            response = client.receive(request_id, waiter, timeout)
        except KeyboardInterrupt:
            client.notify("$/cancelRequest", {"id": request_id})
            try:
                client.receive(request_id, waiter, CANCEL_WAIT)  # -32800, or a result already on its way
            except OSError:
                pass
            _finish(client)
            return INTERRUPTED
    except OSError as exc:  # TimeoutError, or ConnectionError/BrokenPipeError: the daemon is gone
        print(f"sidecar call: {exc}", file=sys.stderr)
        _finish(client)
        return 1
    finally:
        client.forget(request_id)
    _finish(client)
    if "error" in response:
        print(json.dumps({"error": response["error"]}, indent=2, ensure_ascii=False))
        return 1
    print(json.dumps(response.get("result"), indent=2, ensure_ascii=False))
    return 0


def _finish(client: DaemonClient) -> None:
    try:
        client.shutdown(timeout=5)
    except Exception:  # noqa: BLE001 - the daemon may be gone already
        client.close(timeout=2)
