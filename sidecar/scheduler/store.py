"""SQL for the scheduler on the embedded SQLite database (the default JobStore).

Every write is one `BEGIN IMMEDIATE` transaction (sidecar/store/database.py): it holds the
database's one write lock from its first statement, so deciding for a due job and claiming
a pending run are serialized even if two processes shared the file.
"""

from __future__ import annotations

from typing import Any

import apsw

from sidecar.scheduler.jobstore import Capacity, JobRow, Planner, RunRow
from sidecar.store.database import Database

_JOB_COLUMNS = "id, name, spec, enabled, next_run_at, anchor, created_at, updated_at"
_RUN_COLUMNS = ("id, job_id, slot, status, trigger, scheduled_at, attempt, coalesced, started_at, finished_at, "
                "duration_ms, output, error, owner, lease_expires_at, created_at")
_INSERT_RUN = (f"INSERT INTO scheduler_runs ({_RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
               "ON CONFLICT (job_id, slot) DO NOTHING")


def _job(row: tuple[Any, ...]) -> JobRow:
    return JobRow(row[0], row[1], row[2], bool(row[3]), row[4], row[5], row[6], row[7])


def _run(row: tuple[Any, ...]) -> RunRow:
    return RunRow(*row)


def _run_values(r: RunRow) -> tuple[Any, ...]:
    return (r.id, r.job_id, r.slot, r.status, r.trigger, r.scheduled_at, r.attempt, r.coalesced, r.started_at,
            r.finished_at, r.duration_ms, r.output, r.error, r.owner, r.lease_expires_at, r.created_at)


def _open_counts(conn: apsw.Connection, job_id: str) -> tuple[int, int]:
    running, pending = conn.execute(
        "SELECT coalesce(sum(status = 'running'), 0), coalesce(sum(status = 'pending'), 0) FROM scheduler_runs "
        "WHERE job_id = ? AND status IN ('pending', 'running')", (job_id,)).fetchone()
    return int(running), int(pending)


class SqliteJobStore:
    kind = "sqlite"

    def __init__(self, db: Database) -> None:
        self.db = db

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    # jobs ----------------------------------------------------------------------------------

    async def insert_job(self, job: JobRow) -> None:
        await self.db.execute(f"INSERT INTO scheduler_jobs ({_JOB_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                              (job.id, job.name, job.spec, int(job.enabled), job.next_run_at, job.anchor,
                               job.created_at, job.updated_at))

    async def get_job(self, job_id: str) -> JobRow | None:
        row = await self.db.fetch_one(f"SELECT {_JOB_COLUMNS} FROM scheduler_jobs WHERE id = ?", (job_id,))
        return _job(row) if row is not None else None

    async def list_jobs(self, enabled: bool | None = None) -> list[JobRow]:
        if enabled is None:
            rows = await self.db.fetch_all(f"SELECT {_JOB_COLUMNS} FROM scheduler_jobs ORDER BY name, id")
        else:
            rows = await self.db.fetch_all(
                f"SELECT {_JOB_COLUMNS} FROM scheduler_jobs WHERE enabled = ? ORDER BY name, id", (int(enabled),))
        return [_job(r) for r in rows]

    async def update_job(self, job: JobRow) -> bool:
        return await self.db.execute(
            "UPDATE scheduler_jobs SET name = ?, spec = ?, enabled = ?, next_run_at = ?, anchor = ?, updated_at = ? "
            "WHERE id = ?",
            (job.name, job.spec, int(job.enabled), job.next_run_at, job.anchor, job.updated_at, job.id)) > 0

    async def delete_job(self, job_id: str) -> bool:
        return await self.db.execute("DELETE FROM scheduler_jobs WHERE id = ?", (job_id,)) > 0

    async def cancel_open_runs(self, job_id: str, now: float, reason: str) -> list[RunRow]:
        rows = await self.db.execute_returning(
            "UPDATE scheduler_runs SET status = 'cancelled', finished_at = ?, error = ? "
            f"WHERE job_id = ? AND status = 'pending' RETURNING {_RUN_COLUMNS}", (now, reason, job_id))
        return [_run(r) for r in rows]

    # the loop ------------------------------------------------------------------------------

    async def next_wake(self) -> float | None:
        def run(conn: apsw.Connection) -> float | None:
            (due,) = conn.execute("SELECT min(next_run_at) FROM scheduler_jobs "
                                  "WHERE enabled = 1 AND next_run_at IS NOT NULL").fetchone()
            (lease,) = conn.execute("SELECT min(lease_expires_at) FROM scheduler_runs "
                                    "WHERE status = 'running'").fetchone()
            (pending,) = conn.execute("SELECT min(created_at) FROM scheduler_runs WHERE status = 'pending'").fetchone()
            values = [v for v in (due, lease, pending) if v is not None]
            return min(values) if values else None
        return await self.db.read(run)

    async def fire_due(self, now: float, plan: Planner, limit: int = 100) -> list[RunRow]:
        def run(conn: apsw.Connection) -> list[RunRow]:
            jobs = [_job(r) for r in conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM scheduler_jobs WHERE enabled = 1 AND next_run_at IS NOT NULL "
                "AND next_run_at <= ? ORDER BY next_run_at LIMIT ?", (now, limit))]
            inserted: list[RunRow] = []
            for job in jobs:
                running, pending = _open_counts(conn, job.id)
                decided = plan(job, running, pending, now)
                for r in decided.runs:
                    conn.execute(_INSERT_RUN, _run_values(r))
                    if conn.changes():
                        inserted.append(r)
                conn.execute("UPDATE scheduler_jobs SET next_run_at = ? WHERE id = ?", (decided.next_run_at, job.id))
            return inserted
        return await self.db.write(run)

    async def add_run(self, run: RunRow) -> RunRow:
        await self.db.execute(_INSERT_RUN, _run_values(run))
        return run

    async def claim(self, now: float, owner: str, lease_until: float, capacity: Capacity,
                    limit: int = 100) -> list[tuple[RunRow, JobRow]]:
        def run(conn: apsw.Connection) -> list[tuple[RunRow, JobRow]]:
            job_ids = [r[0] for r in conn.execute(
                "SELECT job_id FROM scheduler_runs WHERE status = 'pending' GROUP BY job_id "
                "ORDER BY min(scheduled_at) LIMIT ?", (limit,))]
            claimed: list[tuple[RunRow, JobRow]] = []
            for job_id in job_ids:
                row = conn.execute(f"SELECT {_JOB_COLUMNS} FROM scheduler_jobs WHERE id = ?", (job_id,)).fetchone()
                if row is None:
                    continue
                job = _job(row)
                running, _ = _open_counts(conn, job_id)
                room = capacity(job, running)
                if room <= 0:
                    continue
                runs = [_run(r) for r in conn.execute(
                    "UPDATE scheduler_runs SET status = 'running', owner = ?, lease_expires_at = ?, "
                    "attempt = attempt + 1, started_at = ? WHERE id IN (SELECT id FROM scheduler_runs "
                    "WHERE job_id = ? AND status = 'pending' ORDER BY scheduled_at, created_at LIMIT ?) "
                    f"RETURNING {_RUN_COLUMNS}", (owner, lease_until, now, job_id, room))]
                claimed.extend((r, job) for r in runs)
            return claimed
        return await self.db.write(run)

    async def renew(self, run_ids: list[str], owner: str, lease_until: float) -> set[str]:
        if not run_ids:
            return set()

        def run(conn: apsw.Connection) -> set[str]:
            held: set[str] = set()
            for run_id in run_ids:
                for (rid,) in conn.execute(
                        "UPDATE scheduler_runs SET lease_expires_at = ? WHERE id = ? AND owner = ? "
                        "AND status = 'running' RETURNING id", (lease_until, run_id, owner)):
                    held.add(rid)
            return held
        return await self.db.write(run)

    async def finish(self, run_id: str, owner: str, status: str, now: float, duration_ms: float,
                     output: str | None, error: str | None) -> bool:
        return await self.db.execute(
            "UPDATE scheduler_runs SET status = ?, finished_at = ?, duration_ms = ?, output = ?, error = ?, "
            "lease_expires_at = NULL WHERE id = ? AND owner = ? AND status = 'running'",
            (status, now, duration_ms, output, error, run_id, owner)) > 0

    async def release(self, run_ids: list[str], owner: str) -> None:
        await self.db.execute_many(
            "UPDATE scheduler_runs SET status = 'pending', owner = NULL, lease_expires_at = NULL, "
            "attempt = max(attempt - 1, 0) WHERE id = ? AND owner = ? AND status = 'running'",
            [(run_id, owner) for run_id in run_ids])

    async def reap(self, now: float, max_attempts: int) -> list[RunRow]:
        rows = await self.db.execute_returning(
            "UPDATE scheduler_runs SET owner = NULL, lease_expires_at = NULL, "
            "status = CASE WHEN attempt < ? THEN 'pending' ELSE 'failed' END, "
            "finished_at = CASE WHEN attempt < ? THEN NULL ELSE ? END, "
            "error = 'the daemon running it stopped (its lease expired)' "
            f"WHERE status = 'running' AND lease_expires_at < ? RETURNING {_RUN_COLUMNS}",
            (max_attempts, max_attempts, now, now))
        return [_run(r) for r in rows]

    # reading -------------------------------------------------------------------------------

    async def history(self, job_id: str, limit: int) -> list[RunRow]:
        rows = await self.db.fetch_all(
            f"SELECT {_RUN_COLUMNS} FROM scheduler_runs WHERE job_id = ? "
            "ORDER BY scheduled_at DESC, created_at DESC LIMIT ?", (job_id, limit))
        return [_run(r) for r in rows]

    async def get_run(self, run_id: str) -> RunRow | None:
        row = await self.db.fetch_one(f"SELECT {_RUN_COLUMNS} FROM scheduler_runs WHERE id = ?", (run_id,))
        return _run(row) if row is not None else None
