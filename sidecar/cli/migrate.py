"""`sidecar migrate [--status]`: apply pending migrations, or report them."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from sidecar.config import DaemonConfig, default_data_dir

if TYPE_CHECKING:
    from sidecar.store.database import Database


def run(args: argparse.Namespace) -> int:
    import apsw

    from sidecar.store.database import Database
    from sidecar.store.migrations import MigrationError

    db = Database(DaemonConfig(data_dir=args.data_dir or default_data_dir()).database_path)
    try:
        if args.status:
            _print_status(db)
        else:
            applied = db.open()
            print(f"applied {len(applied)} migration(s)" + "".join(f"\n  {m.path.name}" for m in applied))
        return 0
    except (MigrationError, OSError) as exc:  # OSError: e.g. the data dir cannot be made
        print(f"sidecar migrate: {exc}", file=sys.stderr)
        return 1
    except apsw.Error as exc:  # e.g. the file is not a database; apsw's message names no file
        print(f"sidecar migrate: {db.path}: {exc}", file=sys.stderr)
        return 1
    finally:
        db.close()


def _print_status(db: Database) -> None:
    import apsw

    from sidecar.store import migrations

    known = migrations.discover(db.migrations_dir)
    if db.path.exists():  # read-only: asking for the status must not create or change it
        conn = apsw.Connection(str(db.path), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            state = migrations.status(conn, known)
        finally:
            conn.close()
    else:
        state = migrations.MigrationStatus(0, known[-1].version if known else 0, known)
    print(f"database: {db.path}" + ("" if db.path.exists() else " (not created yet)"))
    print(f"schema version: {state.current} (latest {state.latest})")
    if state.pending:
        print("pending:")
        for m in state.pending:
            print(f"  {m.path.name}")
    else:
        print("pending: none")
