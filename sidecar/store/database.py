"""The embedded SQLite database (apsw): WAL, foreign keys, busy timeout, off the event loop.

All database work but the smallest writes runs in worker threads, so the event loop never
waits on disk. Writes go through one private connection, one at a time (SQLite has one
writer anyway), each in a `BEGIN IMMEDIATE` transaction: the write lock is taken (waiting up
to the busy timeout) before anything is read, so a read-then-write transaction never fails
with SQLITE_BUSY when another process writes the same file. They run on one long-lived
writer thread (`sidecar/handoff.py`; anyio's thread pool on another backend than asyncio).
bench/projects_bench.py, 2-CPU VM, 10,000 message appends: 1.66-2.34 s through anyio's pool,
1.20-1.69 s through the writer thread, while their transactions alone take 0.63-0.85 s; the
rest is the two thread wake-ups any hand-off costs. So a write its caller declares small
(`write(fn, small=True)`: a chat message, a row or two) runs right on the event loop when
the writer is free: 0.78-1.11 s for the 10,000. It neither syncs the disk (WAL with
`synchronous = NORMAL`: a commit only appends to the WAL) nor waits for a lock (busy
timeout 0: if another process holds it, the write goes to the writer thread as any other).
The disk syncs of WAL checkpoints stay off the loop: the writer's WAL hook counts the pages,
and while a checkpoint is due no write runs on the loop, so the next one goes to the writer
thread, which checkpoints after it.

Reads borrow one of at most READ_THREADS pooled connections that are `query_only`, and run
concurrently thanks to WAL. (Not one per thread: anyio retires idle worker threads, and
their connections would pile up.) A read whose caller is cancelled is interrupted
(`sqlite3_interrupt` and a progress handler), so the worker thread and the connection are
free again at once.

Writes follow the commit rule of `sidecar/commit.py`: a request that is already cancelled
does not start one; once started, a write is shielded from cancellation and finishes
(commits or rolls back), and a commit marks the request's guard so that a later cancel is
dropped (-32800 means nothing was applied).

Store modules (`sidecar/<ns>/store.py`) use the helpers: `fetch_all`, `fetch_one`,
`fetch_value`, `execute`, `execute_many`, and `read(fn)`/`write(fn)` for several statements
in one transaction. `bench/db_offload.py` measures what the threads buy over running
queries on the loop.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeAlias, TypeVar, overload

import anyio
import anyio.lowlevel
import apsw
import msgspec

from sidecar.commit import current_guard
from sidecar.handoff import WorkerThreads, running_loop
from sidecar.store import migrations

log = logging.getLogger("sidecar.store")

T = TypeVar("T")

#: query parameters: positional (`?`) or named (`:name`); always bound, never formatted in
Bindings: TypeAlias = Sequence[Any] | Mapping[str, Any]

BUSY_TIMEOUT_MS = 5000
WAL_AUTOCHECKPOINT_PAGES = 4000
READ_THREADS = 4
#: SQLite VM steps between checks of a read's cancelled flag (some 50-100 µs of work; each check
#: takes the GIL, so not much more often than that)
PROGRESS_STEPS = 10_000


def connect(path: Path, *, query_only: bool = False) -> apsw.Connection:
    conn = apsw.Connection(str(path))
    conn.set_busy_timeout(BUSY_TIMEOUT_MS)
    conn.execute("PRAGMA journal_mode = WAL")
    # NORMAL in WAL mode never loses a committed transaction when the process dies,
    # only (at most the last ones) on power loss
    conn.execute("PRAGMA synchronous = NORMAL")
    # the WAL is checkpointed into the database once it holds this many pages; each
    # checkpoint syncs both files, and SQLite's default (1,000) made it a tenth of a small
    # write's cost (bench/projects_bench.py); 4,000 pages is a WAL of at most ~16 MiB.
    # (The Database's writer replaces this with its WAL hook, to checkpoint off the loop.)
    conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
    conn.execute("PRAGMA foreign_keys = ON")
    if query_only:
        conn.execute("PRAGMA query_only = ON")
    return conn


def run_transaction(conn: apsw.Connection, fn: Callable[[apsw.Connection], T]) -> T:
    """`fn(conn)` in one `BEGIN IMMEDIATE` transaction: committed if it returns, rolled back
    if it raises. (apsw's `with conn:` begins deferred: the lock would only be sought at the
    first write, where a stale snapshot fails at once with SQLITE_BUSY, busy timeout or not.)"""
    conn.execute("BEGIN IMMEDIATE")
    return _finish_transaction(conn, fn)


def _finish_transaction(conn: apsw.Connection, fn: Callable[[apsw.Connection], T]) -> T:
    """`fn(conn)` inside the transaction just begun, then COMMIT, or ROLLBACK if it raises."""
    try:
        result = fn(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def _execute(conn: apsw.Connection, sql: str, params: Bindings) -> int:
    """Run one statement to its end; the rows it changed (as `changes()`: not counting
    those changed by triggers, so an FTS index kept by triggers does not inflate it)."""
    before = conn.total_changes()
    conn.execute(sql, params).fetchall()  # to the end: RETURNING rows are dropped
    return conn.changes() if conn.total_changes() != before else 0


def _fetch(cursor: apsw.Cursor, as_type: type[Any] | None, limit: int | None = None) -> list[Any]:
    """The rows of a just-executed cursor (at most `limit`), as tuples or converted to
    `as_type` from {column name: value}."""
    if as_type is None:
        return cursor.fetchall() if limit is None else [row for _, row in zip(range(limit), cursor)]
    try:
        names = [name for name, _ in cursor.get_description()]
    except apsw.ExecutionCompleteError:  # no rows at all
        return []
    rows = cursor if limit is None else (row for _, row in zip(range(limit), cursor))
    dicts = [dict(zip(names, row)) for row in rows]
    if as_type is dict:
        return dicts
    return msgspec.convert(dicts, list[as_type])  # type: ignore[valid-type]


@asynccontextmanager
async def commit_rule() -> AsyncIterator[None]:
    """Around one write transaction, in any store backend: shielded from cancellation, and
    marking the request's guard once the body (which commits) returns. A request cancelled
    already does not enter: the cancellation is raised instead of the write starting.
    Without a guard (background work) it only shields. (`Database.write` spells the same
    steps out rather than entering this, to spare an async generator on every write: keep
    the two alike.)"""
    guard = current_guard.get()
    # The caller may have waited for the writer: a cancel that came while it was being handed
    # the writer is not delivered at that await (its wake-up was already due), so look again
    # here, where nothing is started yet. (No yield to the loop when not cancelled.)
    await anyio.lowlevel.checkpoint_if_cancelled()
    with anyio.CancelScope(shield=True):
        if guard is None:
            yield
            return
        with guard.writing():
            yield
            guard.mark_committed()


class _ReadCall:
    """One read's link between the event loop (which may cancel it) and its worker thread."""

    __slots__ = ("_lock", "conn", "cancelled", "running", "_finished")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.conn: apsw.Connection | None = None
        self.cancelled = False
        self.running = False
        self._finished: tuple[anyio.Event, anyio.lowlevel.EventLoopToken] | None = None

    # in the worker thread

    def start(self, conn: apsw.Connection) -> bool:
        """False if the caller is gone already: then the read must not run."""
        with self._lock:
            if self.cancelled:
                return False
            self.conn = conn
            self.running = True
            return True

    def finish(self) -> None:
        with self._lock:
            self.conn = None
            self.running = False
            finished, self._finished = self._finished, None
        if finished is not None:  # the cancelled caller waits for us to let go
            event, token = finished
            anyio.from_thread.run_sync(event.set, token=token)

    def is_cancelled(self) -> bool:  # the progress handler
        return self.cancelled

    # on the event loop

    async def cancel(self) -> None:
        """Interrupt the read and wait, shielded, until its thread has let go of the connection."""
        event = anyio.Event()
        with self._lock:
            # the flag catches what interrupt() cannot: a statement not started yet
            # (interrupting an idle connection is a no-op), via the progress handler
            self.cancelled = True
            if not self.running:  # not started (it never will now) or done
                return
            assert self.conn is not None
            self.conn.interrupt()
            self._finished = (event, anyio.lowlevel.current_token())
        with anyio.CancelScope(shield=True):
            await event.wait()


class _WalLength:
    """The writer connection's WAL hook: the WAL's length in pages after each commit. (Not a
    method of the Database: the connection would then hold the Database, a cycle that would
    keep it from being collected, and its writer thread from stopping, when not closed.)"""

    __slots__ = ("pages",)

    def __init__(self) -> None:
        self.pages = 0

    def __call__(self, _conn: apsw.Connection, _name: str, pages: int) -> int:
        self.pages = pages
        return apsw.SQLITE_OK


def _writer_thread() -> WorkerThreads:
    """The thread that runs the write transactions, one at a time in the order handed in
    (`Database.write` hands in one at a time, in arrival order, behind its limiter). It holds
    no reference to the Database, only to the jobs in flight, so a Database collected without
    being closed stops it (a finalizer)."""
    return WorkerThreads("sidecar-db-writer", 1, closed_message="database is not open")


class Database:
    def __init__(self, path: Path, migrations_dir: Path | None = None) -> None:
        self.path = path
        self.migrations_dir = migrations_dir or migrations.default_migrations_dir()
        self._writer: apsw.Connection | None = None
        self._writer_lock = threading.Lock()  # run_now, inline and worker-thread writes never overlap
        self._wal = _WalLength()  # the writer's WAL hook keeps it
        self._writer_thread = _writer_thread()
        self._writer_thread_finalizer = weakref.finalize(self, self._writer_thread.stop)
        self._readers: list[apsw.Connection] = []  # every reader connection made
        self._idle_readers: list[apsw.Connection] = []  # those not lent out right now
        #: lent out when close() ran: closed by the thread that gives it back (apsw refuses to
        #: close a connection another thread is using: ThreadingViolationError)
        self._retired_readers: set[apsw.Connection] = set()
        self._readers_lock = threading.Lock()
        self._write_limiter = anyio.CapacityLimiter(1)  # waiting for it is still cancellable
        self._write_thread_limiter = anyio.CapacityLimiter(1)  # the thread of the write holding it
        self._read_limiter = anyio.CapacityLimiter(READ_THREADS)  # held until the thread let go
        self._read_thread_limiter = anyio.CapacityLimiter(READ_THREADS)  # not anyio's shared default

    @property
    def backup_dir(self) -> Path:
        return self.path.parent / "backups"

    def open(self) -> list[migrations.Migration]:
        """Open (creating if needed) and migrate; returns the migrations applied."""
        # the data dir holds the database, the log and possibly the secrets key: owner only
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._writer = connect(self.path)
        if self._writer_thread.closed:  # opened again after close()
            self._writer_thread_finalizer.detach()
            self._writer_thread = _writer_thread()
            self._writer_thread_finalizer = weakref.finalize(self, self._writer_thread.stop)
        applied = migrations.apply(self._writer, migrations.discover(self.migrations_dir), self.backup_dir)
        # from here on the writer checkpoints itself, off the loop (`_transaction`); a WAL hook
        # replaces SQLite's automatic checkpoint, which would run in whichever thread commits
        self._wal.pages = 0
        self._writer.set_wal_hook(self._wal)
        return applied

    @property
    def _checkpoint_due(self) -> bool:
        """The WAL has grown past the auto-checkpoint size (as the writer's WAL hook saw it)."""
        return self._wal.pages >= WAL_AUTOCHECKPOINT_PAGES

    def _checkpoint_if_due(self, conn: apsw.Connection) -> None:
        """What SQLite's automatic checkpoint did after a commit, here where we choose: on the
        writer thread (or in run_now), never on the loop. PASSIVE, as SQLite's: it copies what
        no reader still needs and never waits; a WAL still long is tried again next time."""
        if self._checkpoint_due:
            conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)
            self._wal.pages = 0  # the next commit's hook says how long it really is

    def migration_status(self) -> migrations.MigrationStatus:
        known = migrations.discover(self.migrations_dir)
        with self._writer_lock:
            return migrations.status(self._conn(), known)

    def _conn(self) -> apsw.Connection:
        if self._writer is None:
            raise RuntimeError("database is not open")
        return self._writer

    # ---- start-up, before the loop serves anyone ------------------------------------

    def run_now(self, fn: Callable[[apsw.Connection], T]) -> T:
        """Run `fn(conn)` in one write transaction right here, blocking the caller.

        Only for start-up code that runs before requests are served (loading settings,
        preparing a capability's tables) and for tools and benchmarks; everything else uses
        the async methods, which keep the event loop free."""
        return self._transaction(fn)

    # ---- reads ---------------------------------------------------------------------------

    def _borrow_reader(self) -> apsw.Connection:
        with self._readers_lock:
            if self._idle_readers:
                return self._idle_readers.pop()
        self._conn()  # not open (or closed): fail rather than create the file afresh
        conn = connect(self.path, query_only=True)  # outside the lock: opening touches the disk
        with self._readers_lock:
            self._readers.append(conn)
        return conn

    def _return_reader(self, conn: apsw.Connection) -> None:
        with self._readers_lock:
            retired = conn in self._retired_readers
            if retired:
                self._retired_readers.discard(conn)
            else:
                self._idle_readers.append(conn)
        if retired:
            conn.close()

    def reader_count(self) -> int:
        with self._readers_lock:
            return len(self._readers)

    async def read(self, fn: Callable[[apsw.Connection], T]) -> T:
        """Run `fn(conn)` on a `query_only` reader connection in a worker thread.

        If the caller is cancelled meanwhile, the query is interrupted, and the caller sees
        its cancellation (not an error) as soon as the thread has let go of the connection."""
        call = _ReadCall()

        def run() -> T:
            conn = self._borrow_reader()
            try:
                if not call.start(conn):
                    raise apsw.InterruptError("cancelled before it started")  # nobody awaits this
                conn.set_progress_handler(call.is_cancelled, PROGRESS_STEPS)
                try:
                    return fn(conn)
                finally:
                    conn.set_progress_handler(None)
                    if conn.in_transaction:  # an interrupted fn may have left one open
                        conn.execute("ROLLBACK")
            finally:
                self._return_reader(conn)
                call.finish()

        # Held until the thread has let go of its connection (below, on cancellation too):
        # this bounds concurrent reads, so the pool never exceeds READ_THREADS. The thread
        # itself is abandoned on cancellation (so that we hear of it at once, and can
        # interrupt the query) but not forgotten: we wait for it to finish.
        async with self._read_limiter:
            try:
                return await anyio.to_thread.run_sync(run, abandon_on_cancel=True,
                                                      limiter=self._read_thread_limiter)
            except anyio.get_cancelled_exc_class():
                await call.cancel()
                raise

    @overload
    async def fetch_all(self, sql: str, params: Bindings = (), *, as_type: None = None) -> list[tuple[Any, ...]]: ...
    @overload
    async def fetch_all(self, sql: str, params: Bindings = (), *, as_type: type[T]) -> list[T]: ...

    async def fetch_all(self, sql: str, params: Bindings = (), *, as_type: type[Any] | None = None) -> list[Any]:
        """Every row, as tuples, or converted to `as_type` (a msgspec Struct, dataclass or
        `dict`) from {column name: value}."""
        return await self.read(lambda conn: _fetch(conn.execute(sql, params), as_type))

    @overload
    async def fetch_one(self, sql: str, params: Bindings = (), *, as_type: None = None) -> tuple[Any, ...] | None: ...
    @overload
    async def fetch_one(self, sql: str, params: Bindings = (), *, as_type: type[T]) -> T | None: ...

    async def fetch_one(self, sql: str, params: Bindings = (), *, as_type: type[Any] | None = None) -> Any:
        """The first row (tuple, or `as_type` as in `fetch_all`), or None."""
        def run(conn: apsw.Connection) -> Any:
            cursor = conn.execute(sql, params)
            try:
                rows = _fetch(cursor, as_type, limit=1)
            finally:
                cursor.close(force=True)  # let go of the rest now, not when collected
            return rows[0] if rows else None
        return await self.read(run)

    async def fetch_value(self, sql: str, params: Bindings = (), default: Any = None) -> Any:
        """The first column of the first row, or `default` when there is no row."""
        row = await self.fetch_one(sql, params)
        return default if row is None else row[0]

    # ---- writes --------------------------------------------------------------------------

    async def write(self, fn: Callable[[apsw.Connection], T], *, small: bool = False) -> T:
        """Run `fn(conn)` in one `BEGIN IMMEDIATE` transaction on the writer connection, on
        the writer thread, under the commit rule (`commit_rule()`, `sidecar/commit.py`).
        `small`: the caller vouches that `fn` is a few statements on a few rows (well under a
        millisecond): then it runs right here on the loop when the writer is free (see the
        module's docstring), else on the writer thread as any other.

        A caller already cancelled does not start it. Once started, it is shielded from
        cancellation: it commits if `fn` returns and rolls back if `fn` raises, before the
        caller goes on. A commit marks the request's guard (`current_guard`), after which
        the request can no longer be cancelled. Writes run one at a time, in the order they
        were called. (`fn` runs in a copy of the caller's context but not in an anyio worker
        thread: to call back into the event loop, give `anyio.from_thread` a `token=`.)"""
        # A request cancelled already must not start a write. (No yield to the loop when the
        # writer is free: each costs a loop iteration, a good part of a small write's time.)
        await anyio.lowlevel.checkpoint_if_cancelled()
        try:
            self._write_limiter.acquire_nowait()  # never ahead of a queued write: release hands over
        except anyio.WouldBlock:
            await self._write_limiter.acquire()  # queued behind another write: still cancellable
            handed_over = True
        else:
            handed_over = False
        try:
            # `commit_rule()` written out: the same steps without an async generator (~7 µs a write)
            if handed_over:
                # a cancel that came while we were being handed the writer is not delivered at
                # that await (its wake-up was already due): look again, nothing is started yet
                await anyio.lowlevel.checkpoint_if_cancelled()
            guard = current_guard.get()
            with anyio.CancelScope(shield=True):
                if guard is None:
                    return await self._run_write(fn, small)
                with guard.writing():
                    result = await self._run_write(fn, small)
                    guard.mark_committed()
                    return result
        finally:
            self._write_limiter.release()

    def _transaction(self, fn: Callable[[apsw.Connection], T]) -> T:
        with self._writer_lock:
            conn = self._conn()
            result = run_transaction(conn, fn)
            self._checkpoint_if_due(conn)
            return result

    def _try_inline(self, fn: Callable[[apsw.Connection], T]) -> tuple[bool, T | None]:
        """`fn` in one transaction right here, if that needs no waiting: (True, its result);
        (False, None) when the writer is busy, a checkpoint is due or another process holds
        SQLite's write lock (nothing was run then)."""
        if self._checkpoint_due or not self._writer_lock.acquire(blocking=False):
            return False, None
        try:
            conn = self._conn()
            conn.set_busy_timeout(0)
            try:
                conn.execute("BEGIN IMMEDIATE")
            except apsw.BusyError:
                return False, None
            finally:
                conn.set_busy_timeout(BUSY_TIMEOUT_MS)
            return True, _finish_transaction(conn, fn)
        finally:
            self._writer_lock.release()

    async def _run_write(self, fn: Callable[[apsw.Connection], T], small: bool = False) -> T:
        """`fn` in one transaction, inline if `small` and nothing to wait for, else on the
        writer thread; the caller shields this await (the thread finishes the transaction
        whatever happens to the caller)."""
        if small:
            ran, result = self._try_inline(fn)
            if ran:
                return result  # type: ignore[return-value]
        loop = running_loop()
        if loop is None:  # another anyio backend (trio): its own thread pool
            return await anyio.to_thread.run_sync(self._transaction, fn, abandon_on_cancel=False,
                                                  limiter=self._write_thread_limiter)
        return await self._writer_thread.run(lambda: self._transaction(fn), loop)

    async def execute(self, sql: str, params: Bindings = ()) -> int:
        """One statement in its own write transaction; returns the number of rows it changed."""
        return await self.write(lambda conn: _execute(conn, sql, params))

    @overload
    async def execute_returning(self, sql: str, params: Bindings = (), *,
                                as_type: None = None) -> list[tuple[Any, ...]]: ...
    @overload
    async def execute_returning(self, sql: str, params: Bindings = (), *, as_type: type[T]) -> list[T]: ...

    async def execute_returning(self, sql: str, params: Bindings = (), *,
                                as_type: type[Any] | None = None) -> list[Any]:
        """One statement with a RETURNING clause in its own write transaction; the rows it
        returned (tuples, or `as_type` as in `fetch_all`)."""
        return await self.write(lambda conn: _fetch(conn.execute(sql, params), as_type))

    async def execute_many(self, sql: str, rows: Iterable[Bindings]) -> int:
        """One statement for each row of bindings, all in one write transaction; returns the
        number of rows changed in all."""
        return await self.write(lambda conn: sum(_execute(conn, sql, params) for params in rows))

    def close(self) -> None:
        self._writer_thread.close()  # after the write in flight, if any; later writes fail
        with self._readers_lock:
            for conn in self._idle_readers:
                conn.close()
            self._retired_readers.update(set(self._readers) - set(self._idle_readers))
            self._readers.clear()
            self._idle_readers.clear()
        with self._writer_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
