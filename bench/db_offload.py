"""Why the store runs SQLite on worker threads: event-loop lag with and without offloading.

    python bench/db_offload.py            # full counts (~20 s)
    python bench/db_offload.py --quick    # tiny counts (a smoke run)

The daemon answers every request from one event loop; while a query runs *on* the loop,
no other request is read or answered. This script measures, in one run, a 1 ms ticker
task's lag (how late its `sleep(0.001)` wakes: the delay any request would see) and the
throughput of three ways to run the same database work:

  inline  on the event loop, yielding between operations (the best case for inline)
  store   `sidecar.store.database.Database.write/read`: writes on the store's one writer
          thread (one writer connection, behind a limiter of 1, BEGIN IMMEDIATE, shielded,
          under the commit rule), reads on worker threads via `anyio.to_thread.run_sync`
          with a pool of query_only reader connections, each read interruptible by its
          caller's cancellation (what sidecar does)
  fresh   `anyio.to_thread.run_sync` opening a new connection for every call

over three workloads: small write transactions (one INSERT each), point reads, and full
table scans (a slow query, as a search or report would be). Several tasks issue the work
concurrently, as requests in flight would.

Columns: ops/s is the workload's throughput; loop lag is how late the ticker woke (p50,
p99, max over the run), and ticks/s how often it ran at all (an idle loop manages about
1000/s less its own lag; a starved loop far fewer).

The SQL below lives here, not in a store module, because it is the benchmark's own
workload on its own table (`bench/db_migrations/`, applied by sidecar's migration runner).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.lowlevel
import apsw

import tables
from sidecar.store.database import Database, connect, run_transaction

BENCH = Path(__file__).resolve().parent
TICK_S = 0.001
IDLE_S = 0.5
VALUE = "v" * 100
Op = Callable[[apsw.Connection, int], object]


@dataclass(frozen=True)
class Counts:
    writes: int
    reads: int
    scans: int
    prefill: int  # rows in the table before the runs (what a scan walks)
    tasks: int  # concurrent tasks issuing the operations


FULL = Counts(writes=3000, reads=3000, scans=30, prefill=100_000, tasks=4)
QUICK = Counts(writes=150, reads=150, scans=3, prefill=5_000, tasks=4)


# ---- the workload ------------------------------------------------------------------


def write_one(conn: apsw.Connection, i: int) -> object:
    return conn.execute("INSERT INTO item (v) VALUES (?)", (f"{VALUE}{i}",))


def read_one(conn: apsw.Connection, i: int) -> object:
    return conn.execute("SELECT v FROM item WHERE k = ?", (i + 1,)).fetchone()


def scan(conn: apsw.Connection, i: int) -> object:
    return conn.execute("SELECT count(*), sum(length(v)) FROM item WHERE v LIKE ?", (f"%{i}x%",)).fetchone()


def prefill(conn: apsw.Connection, rows: int) -> None:
    conn.executemany("INSERT INTO item (v) VALUES (?)", ((f"{VALUE}{i}",) for i in range(rows)))


# ---- the three ways to run it -------------------------------------------------------


class Mode:
    name = ""

    async def write(self, op: Op, i: int) -> None: ...
    async def read(self, op: Op, i: int) -> None: ...


class Inline(Mode):
    """The query runs on the event loop; a checkpoint after each lets other tasks run."""

    name = "inline"

    def __init__(self, db: Database) -> None:
        self.writer = connect(db.path)  # its own: the store's writer connection is private
        self.reader = connect(db.path, query_only=True)

    async def write(self, op: Op, i: int) -> None:
        run_transaction(self.writer, lambda conn: op(conn, i))
        await anyio.lowlevel.checkpoint()

    async def read(self, op: Op, i: int) -> None:
        op(self.reader, i)
        await anyio.lowlevel.checkpoint()


class Store(Mode):
    """What sidecar does: `Database.write` / `Database.read`."""

    name = "store"

    def __init__(self, db: Database) -> None:
        self.db = db

    async def write(self, op: Op, i: int) -> None:
        await self.db.write(lambda conn: op(conn, i))

    async def read(self, op: Op, i: int) -> None:
        await self.db.read(lambda conn: op(conn, i))


class Fresh(Mode):
    """A worker thread and a new connection (WAL/pragmas set up again) per call."""

    name = "fresh"

    def __init__(self, db: Database) -> None:
        self.path = db.path
        self.write_limiter = anyio.CapacityLimiter(1)  # the same one-writer rule as the store

    def _run(self, op: Op, i: int, transaction: bool) -> None:
        conn = connect(self.path)
        try:
            if transaction:
                run_transaction(conn, lambda c: op(c, i))
            else:
                op(conn, i)
        finally:
            conn.close()

    async def write(self, op: Op, i: int) -> None:
        await anyio.to_thread.run_sync(self._run, op, i, True, limiter=self.write_limiter)

    async def read(self, op: Op, i: int) -> None:
        await anyio.to_thread.run_sync(self._run, op, i, False)


# ---- measuring --------------------------------------------------------------------


@dataclass
class Row:
    workload: str
    mode: str
    ops: int
    seconds: float
    lags_ms: list[float]

    @property
    def rate(self) -> float:
        return self.ops / self.seconds

    def lag(self, q: float) -> float:
        ordered = sorted(self.lags_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else 0.0


async def ticker(lags: list[float]) -> None:
    """Sleep 1 ms at a time; record how late each wake-up is."""
    clock = time.perf_counter
    while True:
        began = clock()
        await anyio.sleep(TICK_S)
        lags.append(max(0.0, (clock() - began - TICK_S) * 1000))


async def measure(workload: str, mode: Mode, run: Callable[[Op, int], Awaitable[None]], op: Op,
                  ops: int, tasks: int) -> Row:
    lags: list[float] = []

    async def worker(first: int) -> None:
        for i in range(first, ops, tasks):
            await run(op, i)

    async with anyio.create_task_group() as outer:
        outer.start_soon(ticker, lags)
        await anyio.sleep(0.01)  # let the ticker start its rhythm
        lags.clear()
        began = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for first in range(tasks):
                tg.start_soon(worker, first)
        seconds = time.perf_counter() - began
        outer.cancel_scope.cancel()
    return Row(workload, mode.name, ops, seconds, lags)


async def idle_baseline(seconds: float) -> list[float]:
    """The ticker on an idle loop: the timer's own jitter, the floor for every figure."""
    lags: list[float] = []
    with anyio.move_on_after(seconds):
        await ticker(lags)
    return lags


async def bench(counts: Counts, directory: Path) -> tuple[list[float], list[Row]]:
    db = Database(directory / "bench.db", BENCH / "db_migrations")
    db.open()
    try:
        db.run_now(lambda conn: prefill(conn, counts.prefill))
        modes: list[Mode] = [Inline(db), Store(db), Fresh(db)]
        baseline = await idle_baseline(IDLE_S)
        rows = []
        for workload, op, ops, kind in (("write (1 INSERT/txn)", write_one, counts.writes, "write"),
                                        ("point read", read_one, counts.reads, "read"),
                                        ("table scan", scan, counts.scans, "read")):
            for mode in modes:
                run = mode.write if kind == "write" else mode.read
                rows.append(await measure(workload, mode, run, op, ops, counts.tasks))
        return baseline, rows
    finally:
        db.close()


def render(baseline: list[float], rows: list[Row]) -> str:
    header = ["workload", "mode", "ops", "ops/s", "loop lag p50 (ms)", "p99 (ms)", "max (ms)", "ticks/s"]
    base = sorted(baseline)
    lines = [["(idle loop)", "-", "-", "-", tables.number(statistics.median(base), 3),
              tables.number(base[min(len(base) - 1, int(len(base) * 0.99))], 3),
              tables.number(max(base), 3), tables.number(len(base) / IDLE_S)]]
    for r in rows:
        lines.append([r.workload, r.mode, str(r.ops), tables.number(r.rate), tables.number(r.lag(0.5), 3),
                      tables.number(r.lag(0.99), 3), tables.number(max(r.lags_ms, default=0.0), 3),
                      tables.number(len(r.lags_ms) / r.seconds)])
    return tables.render(header, lines, right_from=2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny counts (a smoke run)")
    args = parser.parse_args(argv)
    counts = QUICK if args.quick else FULL
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    print(f"db offload bench: apsw {apsw.apswversion()}, SQLite {apsw.sqlite_lib_version()}, "
          f"{os.cpu_count()} cpus, load average {load[0]:.2f} at start; {counts.prefill} rows prefilled, "
          f"{counts.tasks} tasks issuing work, ticker every {TICK_S * 1000:.0f} ms", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-db-") as tmp:
        baseline, rows = anyio.run(bench, counts, Path(tmp))
    print()
    print(render(baseline, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
