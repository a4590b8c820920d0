"""scheduler/*: durable jobs that fire a tool call, a workflow or an agent prompt on a cron
schedule, an interval or once, in an IANA time zone; their run history; `scheduler/fired`
and `scheduler/finished` notifications.

A job's runs follow its policies: `misfire` (how late a run may start after the daemon was
asleep or stopped, and whether several missed fire times coalesce into one catch-up run) and
`concurrency` (`skip` a fire time while a run is going, `queue` one pending run, or run in
`parallel` up to `maxParallel`). Instants on the wire are ISO-8601 with an offset.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from protocol.spec import MethodSpec, NotificationSpec

JobId = Annotated[str, Meta(min_length=1, max_length=64)]
Name = Annotated[str, Meta(min_length=1, max_length=200)]
TimeZone = Annotated[str, Meta(min_length=1, max_length=64, description="IANA time zone, like Europe/Berlin")]
Concurrency = Literal["skip", "queue", "parallel"]
#: pending: waiting for a runner; running: leased by a daemon; succeeded / failed: done;
#: skipped: a fire time dropped by the concurrency policy; missed: a fire time outside the
#: grace window; cancelled: stopped (job deleted or paused while queued)
RunStatus = Literal["pending", "running", "succeeded", "failed", "skipped", "missed", "cancelled"]
#: schedule: a fire time on time; catchup: a late run after a sleep or a stop; manual: runNow
Trigger = Literal["schedule", "catchup", "manual"]


class ScheduleSpec(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True):
    """Exactly one of the three."""

    #: 5-field cron (`30 2 * * *`) or an alias (`@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`)
    cron: str | None = None
    #: an interval: `90s`, `15m`, `1h30m`, `2d`, `1w`
    every: str | None = None
    #: one instant, ISO-8601; without an offset it is read in the job's time zone
    at: str | None = None


class ToolTarget(msgspec.Struct, tag="tool", tag_field="type", omit_defaults=True):
    """Call a tool (`<source>__<tool>`) with `input`."""

    name: Annotated[str, Meta(min_length=1, max_length=200)]
    input: dict[str, Any] = {}


class WorkflowTarget(msgspec.Struct, tag="workflow", tag_field="type", omit_defaults=True):
    """Run a workflow with `inputs`."""

    id: Annotated[str, Meta(min_length=1, max_length=200)]
    inputs: dict[str, Any] = {}


class ChatTarget(msgspec.Struct, tag="chat", tag_field="type", omit_defaults=True):
    """Send `prompt` to an agent, optionally on a given provider."""

    agent: Annotated[str, Meta(min_length=1, max_length=200)]
    prompt: Annotated[str, Meta(min_length=1)]
    provider: str | None = None


Target = ToolTarget | WorkflowTarget | ChatTarget


class Misfire(msgspec.Struct, omit_defaults=True):
    #: how late (seconds after its fire time) a run may still start; later fire times are
    #: recorded as `missed`. null (the default): any lateness, so a job missed while the machine
    #: slept or the daemon was stopped gets its (one, coalesced) catch-up run
    graceSeconds: Annotated[int, Meta(ge=0)] | None = None
    #: several fire times missed in the grace window give one catch-up run (false: one each)
    coalesce: bool = True


class JobParams(msgspec.Struct, omit_defaults=True):
    name: Name
    schedule: ScheduleSpec
    target: Target
    timezone: TimeZone = "UTC"
    enabled: bool = True
    misfire: Misfire = msgspec.field(default_factory=Misfire)
    concurrency: Concurrency = "skip"
    #: `parallel`: at most this many runs at once
    maxParallel: Annotated[int, Meta(ge=1, le=64)] = 4
    #: a run still going after this long is cancelled and fails (null: no limit)
    timeoutSeconds: Annotated[int, Meta(ge=1)] | None = None


class Job(msgspec.Struct, omit_defaults=True):
    id: str
    name: str
    schedule: ScheduleSpec
    target: Target
    timezone: str
    enabled: bool
    misfire: Misfire
    concurrency: Concurrency
    maxParallel: int
    createdAt: str
    updatedAt: str
    timeoutSeconds: int | None = None
    #: the next fire time, in the job's time zone; null when none is left (a past `at`) or paused
    nextRunAt: str | None = None


class UpdateParams(msgspec.Struct, omit_defaults=True):
    """Fields left out keep their value. A new schedule or time zone recomputes the next run."""

    id: JobId
    name: Name | UnsetType = UNSET
    schedule: ScheduleSpec | UnsetType = UNSET
    target: Target | UnsetType = UNSET
    timezone: TimeZone | UnsetType = UNSET
    enabled: bool | UnsetType = UNSET
    misfire: Misfire | UnsetType = UNSET
    concurrency: Concurrency | UnsetType = UNSET
    maxParallel: Annotated[int, Meta(ge=1, le=64)] | UnsetType = UNSET
    timeoutSeconds: Annotated[int, Meta(ge=1)] | None | UnsetType = UNSET


class IdParams(msgspec.Struct):
    id: JobId


class ListParams(msgspec.Struct, omit_defaults=True):
    #: only enabled (true) or paused (false) jobs; all when left out
    enabled: bool | None = None


class JobList(msgspec.Struct):
    jobs: list[Job]


class DeleteResult(msgspec.Struct):
    id: str
    deleted: bool


class PreviewParams(msgspec.Struct, omit_defaults=True):
    schedule: ScheduleSpec
    timezone: TimeZone = "UTC"
    count: Annotated[int, Meta(ge=1, le=1000)] = 10
    #: ISO-8601 instant; fire times strictly after it (default: now)
    after: str | None = None


class PreviewResult(msgspec.Struct):
    #: fire times in the schedule's time zone, with their offsets
    times: list[str]


class Run(msgspec.Struct, omit_defaults=True):
    id: str
    jobId: str
    status: RunStatus
    trigger: Trigger
    scheduledAt: str
    attempt: int = 0
    startedAt: str | None = None
    finishedAt: str | None = None
    durationMs: float | None = None
    output: Any = None
    error: str | None = None
    #: how many further fire times this run stands for (coalesced catch-up), or, on a
    #: `missed` row, how many more missed fire times it counts beyond its own
    coalesced: int = 0


class HistoryParams(msgspec.Struct, omit_defaults=True):
    jobId: JobId
    limit: Annotated[int, Meta(ge=1, le=1000)] = 50


class HistoryResult(msgspec.Struct):
    #: newest first
    runs: list[Run]


class FiredEvent(msgspec.Struct, omit_defaults=True):
    jobId: str
    runId: str
    scheduledAt: str
    trigger: Trigger
    attempt: int = 1


class FinishedEvent(msgspec.Struct, omit_defaults=True):
    jobId: str
    runId: str
    status: RunStatus
    scheduledAt: str
    durationMs: float | None = None
    error: str | None = None


FIRED = NotificationSpec("scheduler/fired", FiredEvent, "A job's run started.")
FINISHED = NotificationSpec("scheduler/finished", FinishedEvent, "A job's run ended (succeeded or failed).")

CREATE = MethodSpec("scheduler/jobs/create", JobParams, Job, "Create a job; it fires from its next fire time on.",
                    lane="scheduler")
GET = MethodSpec("scheduler/jobs/get", IdParams, Job, "One job.", lane="scheduler")
LIST = MethodSpec("scheduler/jobs/list", ListParams, JobList, "Jobs, by name.", lane="scheduler")
UPDATE = MethodSpec("scheduler/jobs/update", UpdateParams, Job, "Change a job's fields.", lane="scheduler")
DELETE = MethodSpec("scheduler/jobs/delete", IdParams, DeleteResult,
                    "Delete a job and its history; a run in progress is cancelled.", lane="scheduler")
PAUSE = MethodSpec("scheduler/jobs/pause", IdParams, Job, "Stop firing a job (runs in progress finish).",
                   lane="scheduler")
RESUME = MethodSpec("scheduler/jobs/resume", IdParams, Job,
                    "Fire a paused job again, from its next fire time after now (none missed while paused).",
                    lane="scheduler")
RUN_NOW = MethodSpec("scheduler/jobs/runNow", IdParams, Run,
                     "Queue a run of the job now (it starts when the job's concurrency policy allows).",
                     lane="scheduler")
PREVIEW = MethodSpec("scheduler/jobs/preview", PreviewParams, PreviewResult,
                     "The next fire times of a schedule, to show before saving it.")
HISTORY = MethodSpec("scheduler/history", HistoryParams, HistoryResult,
                     "A job's runs, newest first: status, times, duration, output or error.", lane="scheduler")

METHODS = (CREATE, GET, LIST, UPDATE, DELETE, PAUSE, RESUME, RUN_NOW, PREVIEW, HISTORY)
NOTIFICATIONS = (FIRED, FINISHED)
