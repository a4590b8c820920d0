"""The one interface the scheduler service uses to keep jobs and runs, and its row types.

Two implementations side by side: `SqliteJobStore` (sidecar/scheduler/store.py, the embedded
default) and `PgJobStore` (sidecar/scheduler/pg_store.py, team mode: several daemons share
one PostgreSQL database). Both keep instants as UTC epoch seconds, the job's definition as
JSON, and one run row per (job, slot) — `slot` is the fire time for scheduled runs, so a fire
time can never be run twice, whichever daemon computes it.

The decisions (which fire times are due, missed, coalesced, skipped) are pure functions in
`planning.py`; a store calls them inside its transaction while it holds the job, so both
stores decide the same way and no two daemons decide for the same job at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

#: statuses of a run that holds or waits for a runner
OPEN_STATUSES = ("pending", "running")


@dataclass(slots=True)
class JobRow:
    id: str
    name: str
    spec: str  # JSON of protocol.scheduler.JobParams (schedule, timezone, target, policies)
    enabled: bool
    next_run_at: float | None
    anchor: float
    created_at: float
    updated_at: float


@dataclass(slots=True)
class RunRow:
    id: str
    job_id: str
    slot: str
    status: str
    trigger: str
    scheduled_at: float
    attempt: int = 0
    coalesced: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    duration_ms: float | None = None
    output: str | None = None  # JSON
    error: str | None = None
    owner: str | None = None
    lease_expires_at: float | None = None
    created_at: float = 0.0


@dataclass(slots=True)
class DuePlan:
    """What to do with one due job: its runs to record, and its next fire time."""

    runs: list[RunRow]
    next_run_at: float | None


#: (job, running runs, pending runs, now) -> plan; called with the job held by the store
Planner = Callable[[JobRow, int, int, float], DuePlan]
#: (job, running runs) -> how many more may start now
Capacity = Callable[[JobRow, int], int]


class JobStore(Protocol):
    """Jobs and runs. Every method is safe with several daemons on one database."""

    #: a human word for logs and `system/info`: "sqlite" or "postgresql"
    kind: str

    async def open(self) -> None:
        """Connect and migrate (PostgreSQL); nothing for SQLite, migrated with the database."""

    async def close(self) -> None: ...

    # jobs

    async def insert_job(self, job: JobRow) -> None: ...

    async def get_job(self, job_id: str) -> JobRow | None: ...

    async def list_jobs(self, enabled: bool | None = None) -> list[JobRow]: ...

    async def update_job(self, job: JobRow) -> bool:
        """Write name, spec, enabled, next_run_at, anchor, updated_at; False if it is gone."""

    async def delete_job(self, job_id: str) -> bool:
        """Delete a job and its runs; False if there was none."""

    async def cancel_open_runs(self, job_id: str, now: float, reason: str) -> list[RunRow]:
        """Mark a job's pending runs cancelled; the rows changed."""

    # the loop

    async def next_wake(self) -> float | None:
        """The earliest instant at which the loop has work: an enabled job's next fire time, a
        running run's lease expiry, or now-ish if a run is pending."""

    async def fire_due(self, now: float, plan: Planner, limit: int = 100) -> list[RunRow]:
        """For each enabled job due at `now` (at most `limit`), held so that no other daemon
        decides for it at the same time: call `plan`, insert its runs (a (job, slot) that
        exists already is left alone), set the job's next fire time. The runs inserted."""

    async def add_run(self, run: RunRow) -> RunRow:
        """A manual run (runNow)."""

    async def claim(self, now: float, owner: str, lease_until: float, capacity: Capacity,
                    limit: int = 100) -> list[tuple[RunRow, JobRow]]:
        """Pending runs, oldest first, as many per job as `capacity` allows, taken by `owner`
        (status running, attempt + 1, lease until `lease_until`), each by exactly one daemon."""

    async def renew(self, run_ids: list[str], owner: str, lease_until: float) -> set[str]:
        """Extend the leases `owner` still holds; the ids it still holds."""

    async def finish(self, run_id: str, owner: str, status: str, now: float, duration_ms: float,
                     output: str | None, error: str | None) -> bool:
        """Record a run's end if `owner` still holds its lease; False if it lost it."""

    async def release(self, run_ids: list[str], owner: str) -> None:
        """Give leases back (shutdown): the runs are pending again, for any daemon."""

    async def reap(self, now: float, max_attempts: int) -> list[RunRow]:
        """Runs whose lease expired (their daemon died or hung): pending again while attempts
        remain, failed after that. The rows changed."""

    # reading

    async def history(self, job_id: str, limit: int) -> list[RunRow]:
        """A job's runs, newest scheduled first."""

    async def get_run(self, run_id: str) -> RunRow | None: ...
