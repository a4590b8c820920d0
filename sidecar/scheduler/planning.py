"""Pure decisions of the scheduler: which fire times of a due job run, which were missed, which
coalesce, which the concurrency policy skips; how many runs of a job may start now.

No I/O and no clock of their own: the stores call them inside their transactions, with `now`
read from the wall clock on every wake (so a suspend/resume or a clock jump is seen at once).
"""

from __future__ import annotations

import uuid
from functools import lru_cache

import msgspec

from protocol.scheduler import JobParams
from sidecar.scheduler import schedules
from sidecar.scheduler.jobstore import DuePlan, JobRow, RunRow

#: fire times looked at per due job and wake; beyond, the rest are counted on the last missed row
MAX_SCAN = 10_000
#: `missed` rows written per due job and wake; the last one counts the rest in `coalesced`
MAX_MISSED_ROWS = 100
#: a run that starts this late (seconds after its fire time) is a catch-up run
CATCHUP_AFTER = 60.0

_decode_spec = msgspec.json.Decoder(JobParams).decode


@lru_cache(maxsize=4096)
def spec_of(spec_json: str) -> JobParams:
    return _decode_spec(spec_json)


def schedule_of(spec: JobParams, anchor: float) -> schedules.Schedule:
    s = spec.schedule
    return schedules.build(spec.timezone, cron=s.cron, every=s.every, at=s.at, anchor=schedules.from_epoch(anchor))


@lru_cache(maxsize=4096)
def _schedule_cached(spec_json: str, anchor: float) -> schedules.Schedule:
    return schedule_of(spec_of(spec_json), anchor)


def next_fire(job: JobRow, after: float) -> float | None:
    """The job's first fire time strictly after `after` (epoch seconds)."""
    value = _schedule_cached(job.spec, job.anchor).next_after(schedules.from_epoch(after))
    return value.timestamp() if value is not None else None


def slot(scheduled_at: float) -> str:
    """The key of a fire time: milliseconds are plenty, and the text is stable across stores."""
    return f"{scheduled_at:.3f}"


def new_run(job_id: str, status: str, trigger: str, scheduled_at: float, now: float, *,
            coalesced: int = 0, run_slot: str | None = None) -> RunRow:
    return RunRow(id=uuid.uuid4().hex, job_id=job_id, slot=run_slot or slot(scheduled_at), status=status,
                  trigger=trigger, scheduled_at=scheduled_at, coalesced=coalesced, created_at=now,
                  finished_at=now if status in ("skipped", "missed") else None)


def plan_due(job: JobRow, running: int, pending: int, now: float) -> DuePlan:
    """The fire times of `job` from its `next_run_at` up to `now`.

    - Fire times later than the grace window allows are recorded as `missed`.
    - Those within it run: one catch-up run for all of them when the job coalesces (the run
      is for the newest fire time and counts the others), else one run each.
    - Each run to be is then `pending`, or `skipped` when the concurrency policy says so
      (skip: a run is going or waiting; queue: one is waiting already; parallel: the bound
      is reached)."""
    spec = spec_of(job.spec)
    times: list[float] = []
    t = job.next_run_at
    while t is not None and t <= now and len(times) < MAX_SCAN:
        times.append(t)
        t = next_fire(job, t)
    overflow = 0
    if t is not None and t <= now:  # more than MAX_SCAN behind: count them roughly, jump ahead
        following = next_fire(job, now)
        overflow = 1  # at least this one; exact counts of a very long sleep are not worth a scan
        t = following
    grace = spec.misfire.graceSeconds
    late = [x for x in times if grace is not None and now - x > grace]
    timely = [x for x in times if not (grace is not None and now - x > grace)]
    runs: list[RunRow] = []
    shown_late = late[:MAX_MISSED_ROWS]
    for i, x in enumerate(shown_late):
        extra = (len(late) - len(shown_late) + overflow) if i == len(shown_late) - 1 else 0
        runs.append(new_run(job.id, "missed", "schedule", x, now, coalesced=extra))
    if timely:
        groups = [(timely[-1], len(timely) - 1)] if spec.misfire.coalesce else [(x, 0) for x in timely]
        for x, folded in groups:
            trigger = "catchup" if folded or now - x > CATCHUP_AFTER else "schedule"
            status = "pending" if _may_queue(spec, running, pending) else "skipped"
            if status == "pending":
                pending += 1
            runs.append(new_run(job.id, status, trigger, x, now, coalesced=folded))
    return DuePlan(runs=runs, next_run_at=t)


def _may_queue(spec: JobParams, running: int, pending: int) -> bool:
    if spec.concurrency == "skip":
        return running == 0 and pending == 0
    if spec.concurrency == "queue":
        return pending == 0
    return running + pending < spec.maxParallel


def capacity(job: JobRow, running: int) -> int:
    """How many more of the job's runs may start now."""
    spec = spec_of(job.spec)
    bound = spec.maxParallel if spec.concurrency == "parallel" else 1
    return max(0, bound - running)
