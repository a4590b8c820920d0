"""`sidecar call METHOD [JSON]`: spawn the daemon, initialize, call, print, exit."""

from __future__ import annotations

import argparse
import json
import sys

import msgspec

from sidecar.cli.common import daemon_args
from sidecar.client import DaemonClient, RpcError, daemon_argv


def daemon_command(args: argparse.Namespace) -> list[str]:
    """The daemon to spawn: --daemon ARGV..., else this sidecar's serve (with --data-dir)."""
    if argv := daemon_args(args.daemon):
        return argv
    extra = ["--data-dir", str(args.data_dir)] if getattr(args, "data_dir", None) else []
    return daemon_argv(*extra)


def run(args: argparse.Namespace) -> int:
    try:
        params = json.loads(args.params) if args.params else None
    except json.JSONDecodeError as exc:
        print(f"sidecar call: params are not valid JSON: {exc}", file=sys.stderr)
        return 2
    if params is not None and not isinstance(params, dict):
        print("sidecar call: params must be a JSON object", file=sys.stderr)
        return 2

    def show(note: dict) -> None:  # type: ignore[type-arg]
        print(msgspec.json.encode(note).decode(), file=sys.stderr, flush=True)

    argv = daemon_command(args)
    try:
        client = DaemonClient(argv, stderr=None, on_notification=show if args.notifications else None)
    except OSError as exc:  # no such program, not executable, ...
        print(f"sidecar call: cannot start the daemon {argv[0]!r}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        client.initialize("sidecar-call")
        result = client.request(args.method, params, timeout=args.timeout)
    except RpcError as exc:
        print(json.dumps({"error": exc.error}, indent=2, ensure_ascii=False))
        return 1
    except OSError as exc:  # TimeoutError, or ConnectionError/BrokenPipeError: the daemon is gone
        print(f"sidecar call: {exc}", file=sys.stderr)
        return 1
    finally:
        try:
            client.shutdown(timeout=5)
        except Exception:  # noqa: BLE001 - the daemon may be gone already
            client.close()
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0
