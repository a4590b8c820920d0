"""`sidecar serve`: the daemon on stdio."""

from __future__ import annotations

import argparse
import errno
import os
import sys
import tempfile
from pathlib import Path

from sidecar.config import DaemonConfig, default_data_dir


def prepare_data_dir(path: Path) -> str | None:
    """Make the data directory (owner only) if missing and check a file can be made in it;
    None when usable, else the reason, e.g. "[Errno 2] No such file or directory"."""
    try:
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        # os.access is not the truth (root, ACLs, read-only mounts): make a file and remove it
        fd, probe = tempfile.mkstemp(prefix=".sidecar-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return f"[Errno {exc.errno}] {exc.strerror}" if exc.errno is not None else str(exc)
    return None


def run(args: argparse.Namespace) -> int:
    data_dir = args.data_dir or default_data_dir()
    # before the daemon starts: a directory it cannot use is one line, not two tracebacks
    if (reason := prepare_data_dir(data_dir)) is not None:
        print(f"sidecar: cannot use the data directory {data_dir}: {reason}", file=sys.stderr, flush=True)
        return 2

    from sidecar import app

    config = DaemonConfig(
        data_dir=data_dir,
        parent_pid=args.parent_pid,
        watch_parent=not args.no_parent_watch,
        max_concurrency=max(1, args.max_concurrency),
        max_message_bytes=max(1024, args.max_message_bytes),
        log_level=args.log_level,
        secrets_backend=args.secrets_backend,
        debug_methods=args.debug_methods,
        migrations_dir=args.migrations_dir,
    )
    return app.run(config)
