"""Numbered migrations, tracked by `PRAGMA user_version`.

Files are `migrations/NNNN_<capability>_<what>.sql` (SQL, the usual case) or `.py` for data
migrations SQL cannot do: a module defining `def migrate(conn: apsw.Connection) -> None`,
which runs inside the migration's transaction (it must not commit, roll back or open
transactions of its own; savepoints are fine) and sees foreign keys off, as SQL files do.
Both kinds share one numbering sequence, 0001, 0002, ... without gaps.

Each migration runs in one transaction. Before any migration the database is copied with
SQLite's online backup API; if a migration fails the copy is restored, so a failed upgrade
leaves the database exactly as it was. Processes that start together on one data directory
take turns (each step holds the write lock and re-checks the version).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import apsw

log = logging.getLogger("sidecar.store")

_NAME = re.compile(r"^(\d{4})_(([a-z][a-z0-9]*)_[a-z0-9_]*[a-z0-9])\.(sql|py)$")
NAME_FORM = "NNNN_<capability>_<what>.sql or .py (lower case, digits and _)"
KEEP_BACKUPS = 5


class MigrationError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str  # "<capability>_<what>"
    path: Path

    @property
    def capability(self) -> str:
        return self.name.split("_", 1)[0]

    @property
    def kind(self) -> str:
        """"sql" or "py"."""
        return self.path.suffix[1:]


@dataclass(frozen=True, slots=True)
class MigrationStatus:
    current: int
    latest: int
    pending: list[Migration]


def default_migrations_dir() -> Path:
    """Installed wheels carry them as package data; a source checkout has them at the top."""
    packaged = Path(__file__).resolve().parent.parent / "_migrations"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "migrations"


def discover(directory: Path) -> list[Migration]:
    found: list[Migration] = []
    paths = [*directory.glob("*.sql"), *directory.glob("*.py")]
    for path in sorted(paths, key=lambda p: p.name):
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(f"migration file name not of the form {NAME_FORM}: {path.name}")
        found.append(Migration(int(match[1]), match[2], path))
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise MigrationError(f"migrations must be numbered 0001, 0002, ... without gaps; "
                                 f"found {migration.path.name} where {expected:04d} was expected")
    return found


def user_version(conn: apsw.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchall()[0][0])


def status(conn: apsw.Connection, migrations: list[Migration]) -> MigrationStatus:
    current = user_version(conn)
    latest = migrations[-1].version if migrations else 0
    if current > latest:
        raise MigrationError(f"database schema version {current} is newer than this sidecar "
                             f"knows ({latest}); upgrade sidecar")
    return MigrationStatus(current, latest, [m for m in migrations if m.version > current])


def backup(conn: apsw.Connection, backup_dir: Path, version: int) -> Path:
    backup_dir.mkdir(parents=True, exist_ok=True)
    target = backup_dir / f"sidecar-v{version:04d}-{time.strftime('%Y%m%dT%H%M%S')}-{time.time_ns() % 10**9:09d}.db"
    dest = apsw.Connection(str(target))
    try:
        with dest.backup("main", conn, "main") as copy:
            copy.step(-1)
    finally:
        dest.close()
    for old in sorted(backup_dir.glob("sidecar-v*.db"))[:-KEEP_BACKUPS]:
        old.unlink(missing_ok=True)
    return target


def restore(conn: apsw.Connection, source: Path | None) -> None:
    """Copy `source` over the database; None restores an empty database (a fresh install)."""
    src = (apsw.Connection(str(source), flags=apsw.SQLITE_OPEN_READONLY) if source is not None
           else apsw.Connection(":memory:"))
    try:
        with conn.backup("main", src, "main") as copy:
            copy.step(-1)
    finally:
        src.close()


def is_empty(conn: apsw.Connection) -> bool:
    return user_version(conn) == 0 and not conn.execute("SELECT 1 FROM sqlite_schema LIMIT 1").fetchall()


def apply(conn: apsw.Connection, migrations: list[Migration], backup_dir: Path) -> list[Migration]:
    """Apply pending migrations; on failure restore the backup and raise MigrationError."""
    state = status(conn, migrations)
    if not state.pending:
        return []
    # read (and load) every file first: a broken one must fail before anything changes
    scripts = [(migration, _load(migration)) for migration in state.pending]
    # a fresh database needs no backup file: "as it was" is empty
    saved = None if is_empty(conn) else backup(conn, backup_dir, state.current)
    applied: list[Migration] = []
    # off while migrating, as SQLite's docs prescribe for schema changes: the usual table
    # rebuild (create new, copy, drop old, rename) would otherwise cascade-delete child rows.
    # Integrity is checked before each commit instead. (Cannot change inside a transaction.)
    conn.execute("PRAGMA foreign_keys = OFF")
    try:
        for migration, step in scripts:
            try:
                _apply_one(conn, migration, step)
            except Exception as exc:  # noqa: BLE001 - SQL errors, a Python step's own, FK breaks
                # this migration rolled back with its transaction; earlier ones of this run
                # committed, so the whole run is undone from the copy taken before it
                restore(conn, saved)
                log.error("migration %s failed; database restored to version %d%s", migration.path.name,
                          state.current, f" from {saved}" if saved else "")
                raise MigrationError(f"migration {migration.path.name} failed: {exc}") from exc
            applied.append(migration)
            log.info("applied migration %s", migration.path.name)
    finally:
        conn.execute("PRAGMA foreign_keys = ON")
    return applied


class _ForeignKeyViolation(Exception):
    pass


Step = Callable[[apsw.Connection], None]


def _load(migration: Migration) -> str | Step:
    """A SQL file's text, or a Python file's `migrate` function."""
    try:
        source = migration.path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MigrationError(f"cannot read a migration: {exc}") from exc
    if migration.kind == "sql":
        return source
    # executed as a module of its own, not imported: nothing lands in sys.modules
    namespace: dict[str, object] = {"__name__": f"sidecar_migration_{migration.version:04d}",
                                    "__file__": str(migration.path)}
    try:
        exec(compile(source, str(migration.path), "exec"), namespace)  # noqa: S102 - our own file
    except Exception as exc:  # noqa: BLE001 - a syntax or import error in the step
        raise MigrationError(f"cannot load migration {migration.path.name}: {exc!r}") from exc
    migrate = namespace.get("migrate")
    if not callable(migrate):
        raise MigrationError(f"migration {migration.path.name} defines no migrate(conn) function")
    return migrate  # type: ignore[return-value]


def _run_step(conn: apsw.Connection, migration: Migration, step: str | Step) -> None:
    if isinstance(step, str):
        conn.execute(step)
        return
    step(conn)
    if not conn.in_transaction:
        raise MigrationError(f"migration {migration.path.name} ended the transaction it runs in")


def _apply_one(conn: apsw.Connection, migration: Migration, step: str | Step) -> None:
    # IMMEDIATE takes the write lock before we look: another process starting on the same
    # data dir waits here, then sees the version it reached and skips that step
    conn.execute("BEGIN IMMEDIATE")
    try:
        if user_version(conn) >= migration.version:
            conn.execute("COMMIT")
            return
        _run_step(conn, migration, step)
        broken = conn.execute("PRAGMA foreign_key_check").fetchall()
        if broken:
            table, rowid, parent, _ = broken[0]
            raise _ForeignKeyViolation(f"{len(broken)} row(s) break a foreign key, e.g. {table} rowid "
                                       f"{rowid} -> {parent}")
        conn.execute(f"PRAGMA user_version = {migration.version:d}")  # an int, not input
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
