"""The embedded SQLite database (apsw): WAL, foreign keys, busy timeout, off the event loop.

All database work runs in worker threads so the event loop never waits on disk. Writes go
through one connection, one at a time (SQLite has one writer anyway); reads borrow one of
at most READ_THREADS pooled connections and run concurrently thanks to WAL. (Not one per
thread: anyio retires idle worker threads, and their connections would pile up.)
`bench/db_offload.py` measures what this buys over running queries on the loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import anyio
import apsw

from sidecar.store import migrations

log = logging.getLogger("sidecar.store")

T = TypeVar("T")

BUSY_TIMEOUT_MS = 5000
READ_THREADS = 4


def connect(path: Path) -> apsw.Connection:
    conn = apsw.Connection(str(path))
    conn.set_busy_timeout(BUSY_TIMEOUT_MS)
    conn.execute("PRAGMA journal_mode = WAL")
    # NORMAL in WAL mode never loses a committed transaction when the process dies,
    # only (at most the last ones) on power loss
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


class Database:
    def __init__(self, path: Path, migrations_dir: Path | None = None) -> None:
        self.path = path
        self.migrations_dir = migrations_dir or migrations.default_migrations_dir()
        self._writer: apsw.Connection | None = None
        self._readers: list[apsw.Connection] = []  # every reader connection made
        self._idle_readers: list[apsw.Connection] = []  # those not lent out right now
        self._readers_lock = threading.Lock()
        self._write_limiter = anyio.CapacityLimiter(1)
        self._read_limiter = anyio.CapacityLimiter(READ_THREADS)

    @property
    def backup_dir(self) -> Path:
        return self.path.parent / "backups"

    def open(self) -> list[migrations.Migration]:
        """Open (creating if needed) and migrate; returns the migrations applied."""
        # the data dir holds the database, the log and possibly the secrets key: owner only
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._writer = connect(self.path)
        return migrations.apply(self._writer, migrations.discover(self.migrations_dir), self.backup_dir)

    def migration_status(self) -> migrations.MigrationStatus:
        return migrations.status(self.writer, migrations.discover(self.migrations_dir))

    @property
    def writer(self) -> apsw.Connection:
        if self._writer is None:
            raise RuntimeError("database is not open")
        return self._writer

    def _borrow_reader(self) -> apsw.Connection:
        with self._readers_lock:
            if self._idle_readers:
                return self._idle_readers.pop()
        conn = connect(self.path)  # outside the lock: opening touches the disk
        with self._readers_lock:
            self._readers.append(conn)
        return conn

    def _return_reader(self, conn: apsw.Connection) -> None:
        with self._readers_lock:
            self._idle_readers.append(conn)

    def reader_count(self) -> int:
        with self._readers_lock:
            return len(self._readers)

    async def read(self, fn: Callable[[apsw.Connection], T]) -> T:
        """Run `fn(conn)` on a reader connection in a worker thread."""
        def run() -> T:
            # the limiter bounds concurrent reads, so the pool never exceeds READ_THREADS
            conn = self._borrow_reader()
            try:
                return fn(conn)
            finally:
                self._return_reader(conn)
        return await anyio.to_thread.run_sync(run, limiter=self._read_limiter)

    async def write(self, fn: Callable[[apsw.Connection], T]) -> T:
        """Run `fn(conn)` in one transaction on the writer connection, in a worker thread.

        Not abandoned on cancellation: a write that started finishes (or rolls back)
        before the request answers, so nothing is half-done.
        """
        def run() -> T:
            with self.writer:
                return fn(self.writer)
        return await anyio.to_thread.run_sync(run, limiter=self._write_limiter)

    def close(self) -> None:
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
            self._idle_readers.clear()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
