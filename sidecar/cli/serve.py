"""`sidecar serve`: the daemon on stdio."""

from __future__ import annotations

import argparse

from sidecar.config import DaemonConfig, default_data_dir


def run(args: argparse.Namespace) -> int:
    from sidecar import app

    config = DaemonConfig(
        data_dir=args.data_dir or default_data_dir(),
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
