"""SQL for workflows: saved documents, runs, step runs and the runs' event logs.

The engine journals runs through `Journal` (group commit) with the statements named here
(`INSERT_RUN`, `UPSERT_STEP`, `INSERT_EVENT`, `FINISH_RUN`); everything else is a method.
"""

from __future__ import annotations

import apsw
import msgspec

from sidecar.store.database import Database

#: the largest integer SQLite stores (and binds)
SQLITE_MAX_INT = 2**63 - 1
_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"

INSERT_RUN = ("INSERT INTO workflow_runs (id, workflow_id, document, inputs, status, parent_run_id, created_at, "
              "started_at) VALUES (?, ?, ?, ?, 'running', ?, ?, ?)")
REOPEN_RUN = "UPDATE workflow_runs SET status = 'running', error = NULL, outputs = NULL, finished_at = NULL WHERE id = ?"
UPSERT_STEP = (
    "INSERT INTO step_runs (run_id, step_id, status, attempts, output, error, started_at, finished_at, "
    "duration_ms, idempotency_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (run_id, step_id) DO UPDATE SET status = excluded.status, attempts = excluded.attempts, "
    "output = excluded.output, error = excluded.error, started_at = excluded.started_at, "
    "finished_at = excluded.finished_at, duration_ms = excluded.duration_ms")
INSERT_EVENT = "INSERT INTO run_events (run_id, seq, type, step_id, payload, time) VALUES (?, ?, ?, ?, ?, ?)"
FINISH_RUN = "UPDATE workflow_runs SET status = ?, outputs = ?, error = ?, finished_at = ? WHERE id = ?"
RESET_STEPS = ("UPDATE step_runs SET status = 'pending', error = NULL, finished_at = NULL "
               "WHERE run_id = ? AND status NOT IN ('succeeded', 'recovered')")


class WorkflowRow(msgspec.Struct, frozen=True):
    id: str
    name: str
    document: str
    version: int
    created_at: str
    updated_at: str


class RunRow(msgspec.Struct, frozen=True):
    id: str
    workflow_id: str
    document: str
    inputs: str
    status: str
    outputs: str | None
    error: str | None
    parent_run_id: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None


class StepRow(msgspec.Struct, frozen=True):
    step_id: str
    status: str
    attempts: int
    output: str | None
    error: str | None
    started_at: str | None
    finished_at: str | None
    duration_ms: float | None
    idempotency_key: str


class EventRow(msgspec.Struct, frozen=True):
    seq: int
    type: str
    step_id: str | None
    payload: str
    time: str


_WF = "id, name, document, version, created_at, updated_at"
_RUN = ("id, workflow_id, document, inputs, status, outputs, error, parent_run_id, created_at, started_at, "
        "finished_at")
_STEP = "step_id, status, attempts, output, error, started_at, finished_at, duration_ms, idempotency_key"


class WorkflowStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # documents

    async def insert(self, wf_id: str, name: str, document: str) -> WorkflowRow | None:
        """None when the id is taken."""
        rows = await self.db.execute_returning(
            f"INSERT INTO workflows (id, name, document) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING RETURNING {_WF}",
            (wf_id, name, document), as_type=WorkflowRow)
        return rows[0] if rows else None

    async def get(self, wf_id: str) -> WorkflowRow | None:
        return await self.db.fetch_one(f"SELECT {_WF} FROM workflows WHERE id = ?", (wf_id,), as_type=WorkflowRow)

    async def all(self) -> list[WorkflowRow]:
        return await self.db.fetch_all(f"SELECT {_WF} FROM workflows ORDER BY id", as_type=WorkflowRow)

    async def replace(self, wf_id: str, name: str, document: str) -> WorkflowRow | None:
        rows = await self.db.execute_returning(
            f"UPDATE workflows SET name = ?, document = ?, version = version + 1, updated_at = {_NOW} "
            f"WHERE id = ? RETURNING {_WF}", (name, document, wf_id), as_type=WorkflowRow)
        return rows[0] if rows else None

    async def delete(self, wf_id: str) -> bool:
        return await self.db.execute("DELETE FROM workflows WHERE id = ?", (wf_id,)) > 0

    # runs

    async def run(self, run_id: str) -> RunRow | None:
        return await self.db.fetch_one(f"SELECT {_RUN} FROM workflow_runs WHERE id = ?", (run_id,), as_type=RunRow)

    async def runs(self, workflow_id: str | None, status: str | None, limit: int) -> list[RunRow]:
        return await self.db.fetch_all(
            f"SELECT {_RUN} FROM workflow_runs WHERE (:wf IS NULL OR workflow_id = :wf) "
            "AND (:st IS NULL OR status = :st) ORDER BY created_at DESC, id LIMIT :limit",
            {"wf": workflow_id, "st": status, "limit": limit}, as_type=RunRow)

    async def running(self) -> list[RunRow]:
        return await self.db.fetch_all(f"SELECT {_RUN} FROM workflow_runs WHERE status = 'running' "
                                       "ORDER BY created_at", as_type=RunRow)

    async def steps(self, run_id: str) -> list[StepRow]:
        return await self.db.fetch_all(f"SELECT {_STEP} FROM step_runs WHERE run_id = ?", (run_id,), as_type=StepRow)

    async def events(self, run_id: str, after: int, limit: int) -> list[EventRow]:
        # a client's cursor may be any JSON integer; SQLite binds 64-bit ones, and no seq lies
        # outside them, so clamping answers the same
        after = max(-SQLITE_MAX_INT, min(after, SQLITE_MAX_INT))
        return await self.db.fetch_all(
            "SELECT seq, type, step_id, payload, time FROM run_events WHERE run_id = ? AND seq > ? "
            "ORDER BY seq LIMIT ?", (run_id, after, limit), as_type=EventRow)

    async def last_seq(self, run_id: str) -> int:
        return int(await self.db.fetch_value("SELECT coalesce(max(seq), 0) FROM run_events WHERE run_id = ?",
                                             (run_id,), 0))

    async def reopen(self, run_id: str) -> None:
        """A failed or cancelled run made ready to go again: its run row running, every step
        that did not succeed back to pending (attempts kept)."""
        def work(conn: apsw.Connection) -> None:
            conn.execute(REOPEN_RUN, (run_id,))
            conn.execute(RESET_STEPS, (run_id,))
        await self.db.write(work)

