"""`sidecar migrate [--status]`: apply pending migrations, or report them."""

from __future__ import annotations

import argparse

from sidecar.config import default_data_dir


def run(args: argparse.Namespace) -> int:
    from sidecar.store.database import Database
    from sidecar.store.migrations import MigrationError

    data_dir = args.data_dir or default_data_dir()
    db = Database(data_dir / "sidecar.db")
    try:
        if args.status:
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
            return 0
        applied = db.open()
        print(f"applied {len(applied)} migration(s)" + "".join(f"\n  {m.path.name}" for m in applied))
        return 0
    except MigrationError as exc:
        print(f"sidecar migrate: {exc}")
        return 1
    finally:
        db.close()
