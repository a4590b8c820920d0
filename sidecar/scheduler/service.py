"""The scheduler: jobs and their runs, the loop that fires them, and the runner.

The loop (in the capability's lifespan task group) wakes at the next fire time, at the next
lease expiry, when a job changes, or after `scheduler.pollSeconds` (60 at most) whichever
comes first, and on every wake reads the wall clock afresh: a suspend/resume, a daemon that
was not running, or a clock jump all look the same to it — fire times in the past — and the
misfire policy decides (`planning.py`). Durations (timeouts, lease renewal cadence) use the
monotonic clock.

A run is taken with a lease (`owner`, `lease_expires_at`) that the runner renews every third
of its length; a daemon that dies stops renewing, and any daemon's loop puts the run back to
pending once the lease has expired (`JobStore.reap`), to be run again (up to
MAX_ATTEMPTS). Every decision goes through the `JobStore`, so the same code serves one
daemon on SQLite and several daemons sharing PostgreSQL.
"""

from __future__ import annotations

import inspect
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import anyio
import msgspec
from anyio.abc import TaskGroup

from protocol import scheduler as p
from sidecar.capability import service_type_named
from sidecar.errors import InvalidValue, NotFound, PermissionDenied, SidecarError, Unavailable
from sidecar.notifier import Notifier
from sidecar.scheduler import planning, schedules
from sidecar.scheduler.jobstore import DuePlan, JobRow, JobStore, RunRow
from sidecar.toolsource import ToolCall, ToolRegistry

log = logging.getLogger("sidecar.scheduler")

MAX_ATTEMPTS = 3
#: output kept per run (JSON text); longer output is cut and says so
MAX_OUTPUT_CHARS = 64 * 1024
MAX_ERROR_CHARS = 2000
#: while the store cannot be opened, a request tries again at most this often (the loop retries
#: every poll too): a fixed secret or a database back up is seen at once, without hammering it
REOPEN_MIN_SECONDS = 1.0

Clock = Callable[[], datetime]
Sleeper = Callable[[float], Awaitable[None]]
#: platform.find: the service of a type, or None when its capability is not in this build
Finder = Callable[[type], Any]

_encode = msgspec.json.Encoder().encode
_spec_json = msgspec.json.Encoder().encode


def _utcnow() -> datetime:
    return datetime.now(UTC)


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class SchedulerService:
    def __init__(self, store: JobStore, notifier: Notifier, *, tools: ToolRegistry | None = None,
                 find: Finder | None = None, now: Clock = _utcnow, sleeper: Sleeper = anyio.sleep,
                 poll_seconds: float = 60.0, lease_seconds: float = 30.0, owner: str | None = None) -> None:
        self.store = store
        self.notifier = notifier
        self.tools = tools or ToolRegistry()
        self._find = find or (lambda service_type: None)
        self.now = now
        self._sleep = sleeper
        self.poll_seconds = min(max(poll_seconds, 0.01), 60.0)
        self.lease_seconds = max(lease_seconds, 0.5)
        self.owner = owner or default_owner()
        self._wake = anyio.Event()
        self._tg: TaskGroup | None = None
        #: run id -> (job id, cancel scope) of the runs this daemon executes
        self._active: dict[str, tuple[str, anyio.CancelScope]] = {}
        self._idle = anyio.Event()
        self._idle.set()
        self.fired = 0
        #: why the store could not be opened (team database unreachable, its password refused),
        #: typed as the store raised it; None when it is open
        self._store_problem: SidecarError | None = None
        self._open_lock = anyio.Lock()
        self._last_open_attempt = float("-inf")  # monotonic

    # ---- jobs ------------------------------------------------------------------------------

    def _ts(self) -> float:
        return self.now().timestamp()

    async def _ready(self) -> None:
        """Raise why the store is not open, with the kind and details the store gave
        (permission_denied for a refused password, unavailable for a database down), after one
        more try if the last one was a while ago."""
        if self._store_problem is None:
            return
        # not behind an attempt already under way (a host that does not answer takes the
        # connect timeout): answer what is known now
        if not self._open_lock.locked() and time.monotonic() - self._last_open_attempt >= REOPEN_MIN_SECONDS:
            await self._open_store()
        problem = self._store_problem
        if problem is not None:
            raise type(problem)(f"the scheduler's job store is unavailable: {problem.message}",
                                **(problem.details or {}))

    async def _open_store(self) -> bool:
        """Open the store (again); True when it is open. One attempt at a time."""
        async with self._open_lock:
            if self._store_problem is None and self._last_open_attempt > float("-inf"):
                return True  # opened by a concurrent attempt
            self._last_open_attempt = time.monotonic()
            try:
                await self.store.open()
            except Exception as exc:  # noqa: BLE001 - team database down or refusing: answer typed, retry
                problem = _problem(exc)
                if self._store_problem is None or problem.message != self._store_problem.message:
                    log.error("the scheduler's job store is unavailable (%s); retrying", problem.message)
                self._store_problem = problem
                return False
            if self._store_problem is not None:
                log.info("the scheduler's job store (%s) is available again", self.store.kind)
            self._store_problem = None
            self.wake()
            return True

    async def create(self, params: p.JobParams) -> p.Job:
        await self._ready()
        now = self._ts()
        schedule = schedules.build(params.timezone, cron=params.schedule.cron, every=params.schedule.every,
                                   at=params.schedule.at, anchor=schedules.from_epoch(now))
        await self._check_target(params.target, "$.params.target")
        first = schedule.next_after(schedules.from_epoch(now))
        if first is None:
            raise InvalidValue(f"{params.schedule.at} is in the past: a one-shot job needs a time to come",
                               "$.params.schedule.at")
        job = JobRow(id=uuid.uuid4().hex[:16], name=params.name, spec=_spec_json(params).decode(),
                     enabled=params.enabled, next_run_at=first.timestamp(), anchor=now, created_at=now,
                     updated_at=now)
        await self.store.insert_job(job)
        log.info("job %s (%s) created, next run %s", job.id, job.name, schedules.iso(first))
        self.wake()
        return self.job_struct(job)

    async def _job(self, job_id: str) -> JobRow:
        await self._ready()
        job = await self.store.get_job(job_id)
        if job is None:
            raise NotFound(f"no job {job_id}", id=job_id)
        return job

    async def get(self, job_id: str) -> p.Job:
        return self.job_struct(await self._job(job_id))

    async def list(self, enabled: bool | None = None) -> list[p.Job]:
        await self._ready()
        return [self.job_struct(job) for job in await self.store.list_jobs(enabled)]

    async def update(self, params: p.UpdateParams) -> p.Job:
        job = await self._job(params.id)
        spec = planning.spec_of(job.spec)
        changes = {f: getattr(params, f) for f in params.__struct_fields__
                   if f != "id" and getattr(params, f) is not msgspec.UNSET}
        enabled = changes.pop("enabled", job.enabled)
        new_spec = msgspec.structs.replace(spec, **changes) if changes else spec
        now = self._ts()
        timing_changed = "schedule" in changes or "timezone" in changes
        if timing_changed:
            schedule = schedules.build(new_spec.timezone, cron=new_spec.schedule.cron, every=new_spec.schedule.every,
                                       at=new_spec.schedule.at, anchor=schedules.from_epoch(now))
            job.anchor = now
            nxt = schedule.next_after(schedules.from_epoch(now))
            if nxt is None:
                raise InvalidValue(f"{new_spec.schedule.at} is in the past: a one-shot job needs a time to come",
                                   "$.params.schedule.at")
            job.next_run_at = nxt.timestamp()
        if "target" in changes:
            await self._check_target(new_spec.target, "$.params.target")
        if enabled and not job.enabled and not timing_changed:  # resumed: from now on, none missed
            job.next_run_at = planning.next_fire(job, now)
        job.name = new_spec.name
        job.spec = _spec_json(new_spec).decode()
        job.enabled = enabled
        job.updated_at = now
        if not await self.store.update_job(job):
            raise NotFound(f"no job {params.id}", id=params.id)
        self.wake()
        return self.job_struct(job)

    async def set_enabled(self, job_id: str, enabled: bool) -> p.Job:
        return await self.update(p.UpdateParams(id=job_id, enabled=enabled))

    async def delete(self, job_id: str) -> bool:
        await self._ready()
        for run_id, (owner_job, scope) in list(self._active.items()):
            if owner_job == job_id:
                scope.cancel()
        deleted = await self.store.delete_job(job_id)
        if deleted:
            log.info("job %s deleted", job_id)
        return deleted

    async def run_now(self, job_id: str) -> p.Run:
        job = await self._job(job_id)
        now = self._ts()
        run = planning.new_run(job.id, "pending", "manual", now, now, run_slot=f"manual:{uuid.uuid4().hex}")
        await self.store.add_run(run)
        self.wake()
        return self.run_struct(run)

    async def history(self, job_id: str, limit: int) -> list[p.Run]:
        await self._job(job_id)
        return [self.run_struct(r) for r in await self.store.history(job_id, limit)]

    def preview(self, params: p.PreviewParams) -> list[str]:
        schedule = schedules.build(params.timezone, cron=params.schedule.cron, every=params.schedule.every,
                                   at=params.schedule.at)
        after = (schedules.parse_instant(params.after, schedule.tz, "$.params.after") if params.after is not None
                 else self.now())
        if schedule.every_seconds is not None:  # an interval counts from when the job is made: say, `after`
            schedule = schedules.Schedule(schedule.timezone, every_seconds=schedule.every_seconds, anchor=after)
        times: list[str] = []
        for value in schedule.iter_after(after):
            times.append(schedules.iso(value))
            if len(times) >= params.count:
                break
        return times

    async def _check_target(self, target: p.Target, path: str) -> None:
        """A workflow or chat target must be runnable in this build and name what exists now
        (a workflow, an agent, a provider); a later deletion fails the runs, not the job."""
        if isinstance(target, p.WorkflowTarget):
            workflows = self._workflows()
            if workflows is None:
                raise Unavailable("workflows are not available in this build of the daemon", path=path)
            try:
                await workflows.get(target.id)
            except NotFound:
                raise NotFound(f"no workflow {target.id}", id=target.id, path=f"{path}.id") from None
        elif isinstance(target, p.ChatTarget):
            if self._chat() is None:
                raise Unavailable("chat (agents and models) is not available in this build of the daemon", path=path)
            agents = self._service("sidecar.agents.service", "AgentsService")
            if agents is not None:
                try:
                    agents.get(target.agent)
                except NotFound:
                    raise NotFound(f"no agent named {target.agent!r}", name=target.agent,
                                   path=f"{path}.agent") from None
            providers = self._service("sidecar.llm.service", "ProvidersService")
            if providers is not None and target.provider is not None:
                try:
                    await providers.get(target.provider)
                except NotFound:
                    raise NotFound(f"no provider {target.provider}", id=target.provider,
                                   path=f"{path}.provider") from None

    # ---- wire shapes ---------------------------------------------------------------------------

    def job_struct(self, job: JobRow) -> p.Job:
        spec = planning.spec_of(job.spec)
        tz = schedules.zone(spec.timezone)
        nxt = (schedules.iso(schedules.from_epoch(job.next_run_at).astimezone(tz))
               if job.enabled and job.next_run_at is not None else None)
        return p.Job(id=job.id, name=job.name, schedule=spec.schedule, target=spec.target, timezone=spec.timezone,
                     enabled=job.enabled, misfire=spec.misfire, concurrency=spec.concurrency,
                     maxParallel=spec.maxParallel, createdAt=schedules.iso(schedules.from_epoch(job.created_at)),
                     updatedAt=schedules.iso(schedules.from_epoch(job.updated_at)),
                     timeoutSeconds=spec.timeoutSeconds, nextRunAt=nxt)

    @staticmethod
    def run_struct(run: RunRow) -> p.Run:
        def at(value: float | None) -> str | None:
            return schedules.iso(schedules.from_epoch(value)) if value is not None else None
        return p.Run(id=run.id, jobId=run.job_id, status=run.status, trigger=run.trigger,  # type: ignore[arg-type]
                     scheduledAt=schedules.iso(schedules.from_epoch(run.scheduled_at)), attempt=run.attempt,
                     startedAt=at(run.started_at), finishedAt=at(run.finished_at), durationMs=run.duration_ms,
                     output=msgspec.json.decode(run.output) if run.output is not None else None, error=run.error,
                     coalesced=run.coalesced)

    # ---- the loop ----------------------------------------------------------------------------

    def wake(self) -> None:
        """Make the loop look again now (a job changed, a run finished)."""
        self._wake.set()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Open the store, run the loop and the lease renewer; on exit, stop the runs of this
        daemon and give their leases back so that another daemon (or the next start) runs them."""
        self._store_problem, self._last_open_attempt = None, float("-inf")
        await self._open_store()  # failing, the loop retries and requests answer why
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._loop)
                tg.start_soon(self._renew_leases)
                try:
                    yield
                finally:
                    tg.cancel_scope.cancel()
        finally:
            self._tg = None
            await self.store.close()

    async def _loop(self) -> None:
        while self._store_problem is not None:
            await self._sleep(self.poll_seconds)
            if self._store_problem is not None:  # a request may have opened it meanwhile
                await self._open_store()
        while True:
            self._wake = anyio.Event()
            try:
                await self.tick()
                wake_at = await self.store.next_wake()
            except Exception:  # noqa: BLE001 - a database hiccup (team mode: the network) must not end the loop
                log.exception("scheduler tick failed; retrying in %.0f s", self.poll_seconds)
                wake_at = None
            now = self._ts()
            delay = self.poll_seconds if wake_at is None else min(max(wake_at - now, 0.0), self.poll_seconds)
            await self._nap(delay)

    async def _nap(self, delay: float) -> None:
        if self._wake.is_set():
            return
        async with anyio.create_task_group() as tg:
            async def sleep() -> None:
                await self._sleep(delay)
                tg.cancel_scope.cancel()

            async def woken() -> None:
                await self._wake.wait()
                tg.cancel_scope.cancel()
            tg.start_soon(sleep)
            tg.start_soon(woken)

    async def tick(self) -> list[RunRow]:
        """One pass: expired leases back to pending, due jobs planned, pending runs started.
        The runs this daemon started."""
        # our own leases first: after a suspend or a clock jump they look expired, and they are not
        await self._renew_now()
        now = self._ts()
        reaped = await self.store.reap(now, MAX_ATTEMPTS)
        for run in reaped:
            log.warning("run %s of job %s lost its lease (its daemon stopped): %s", run.id, run.job_id,
                        "queued again" if run.status == "pending" else "failed")
            if run.status == "failed":
                self._announce_finished(run)
        inserted = await self.store.fire_due(now, self._plan)
        for run in inserted:
            if run.status == "missed":
                log.info("job %s missed its run of %s (outside the grace window)", run.job_id,
                         schedules.iso(schedules.from_epoch(run.scheduled_at)))
        return await self._start_pending()

    def _plan(self, job: JobRow, running: int, pending: int, now: float) -> DuePlan:
        try:
            return planning.plan_due(job, running, pending, now)
        except Exception:  # noqa: BLE001 - one broken job must not stop the others
            log.exception("job %s cannot be planned; it will not fire again until it is updated", job.id)
            return DuePlan(runs=[], next_run_at=None)

    async def _start_pending(self) -> list[RunRow]:
        if self._tg is None:
            return []
        now = self._ts()
        claimed = await self.store.claim(now, self.owner, now + self.lease_seconds, planning.capacity)
        for run, job in claimed:
            scope = anyio.CancelScope()
            self._active[run.id] = (job.id, scope)
            self._idle = anyio.Event() if self._idle.is_set() else self._idle
            self._tg.start_soon(self._execute, run, job, scope)
        return [run for run, _ in claimed]

    async def wait_idle(self) -> None:
        """Until no run of this daemon is going (tests, benchmarks)."""
        while self._active:
            await self._idle.wait()

    async def _renew_leases(self) -> None:
        while True:
            await anyio.sleep(self.lease_seconds / 3)
            try:
                await self._renew_now()
            except Exception:  # noqa: BLE001
                log.exception("renewing leases failed")

    async def _renew_now(self) -> None:
        """Extend the leases of this daemon's runs from the wall clock now; stop those it lost."""
        if not self._active:
            return
        ids = list(self._active)
        held = await self.store.renew(ids, self.owner, self._ts() + self.lease_seconds)
        for run_id in ids:
            if run_id not in held and run_id in self._active:
                log.warning("run %s lost its lease; stopping it here", run_id)
                self._active[run_id][1].cancel()

    # ---- the runner ------------------------------------------------------------------------

    async def _execute(self, run: RunRow, job: JobRow, scope: anyio.CancelScope) -> None:
        spec = planning.spec_of(job.spec)
        scheduled = schedules.iso(schedules.from_epoch(run.scheduled_at))
        self.fired += 1
        self.notifier.notify(p.FIRED, p.FiredEvent(jobId=job.id, runId=run.id, scheduledAt=scheduled,
                                                   trigger=run.trigger, attempt=run.attempt))  # type: ignore[arg-type]
        await self._publish("scheduler.fired", {"jobId": job.id, "runId": run.id, "scheduledAt": scheduled})
        started = time.monotonic()
        status, output, error = "failed", None, None
        finished = False
        try:
            with scope:
                timeout = spec.timeoutSeconds
                with anyio.fail_after(timeout) if timeout is not None else anyio.CancelScope():
                    status, output, error = await self._call_target(spec.target, job, run)
                finished = True
        except TimeoutError:
            status, error, finished = "failed", f"timed out after {spec.timeoutSeconds} s", True
        except SidecarError as exc:
            status, error, finished = "failed", exc.message, True
        except anyio.get_cancelled_exc_class():
            # the daemon is stopping: give the lease back, the run goes on elsewhere or later
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await self.store.release([run.id], self.owner)
            self._forget(run.id)
            raise
        except Exception as exc:  # noqa: BLE001 - a target's failure is the run's, not the daemon's
            log.exception("run %s of job %s failed", run.id, job.id)
            status, error, finished = "failed", f"internal error ({type(exc).__name__})", True
        try:
            if not finished:  # cancelled by us: lease lost or job deleted; the store has moved on
                return
            duration_ms = (time.monotonic() - started) * 1000
            kept = await self.store.finish(run.id, self.owner, status, self._ts(), duration_ms,
                                           _output_json(output), error[:MAX_ERROR_CHARS] if error else None)
            if not kept:
                log.warning("run %s of job %s ended after losing its lease; its result is dropped", run.id, job.id)
                return
            run.status, run.duration_ms, run.error = status, duration_ms, error
            self._announce_finished(run)
            await self._publish("scheduler.finished", {"jobId": job.id, "runId": run.id, "status": status})
        finally:
            self._forget(run.id)
            self.wake()  # a queued run of the job may start now

    def _forget(self, run_id: str) -> None:
        self._active.pop(run_id, None)
        if not self._active:
            self._idle.set()

    def _announce_finished(self, run: RunRow) -> None:
        self.notifier.notify(p.FINISHED, p.FinishedEvent(
            jobId=run.job_id, runId=run.id, status=run.status,  # type: ignore[arg-type]
            scheduledAt=schedules.iso(schedules.from_epoch(run.scheduled_at)), durationMs=run.duration_ms,
            error=run.error))

    async def _call_target(self, target: p.Target, job: JobRow, run: RunRow) -> tuple[str, Any, str | None]:
        """(status, output, error) of one run of the target."""
        call = ToolCall(caller=f"scheduler:{job.id}", extra={"runId": run.id, "scheduledAt": run.scheduled_at})
        if isinstance(target, p.ToolTarget):
            result = await self.tools.call(target.name, dict(target.input), call)
            if result.is_error:
                return "failed", result.content, _short(result.content)
            return "succeeded", result.content, None
        if isinstance(target, p.WorkflowTarget):
            service = self._workflows()
            if service is None:
                raise Unavailable("workflows are not available in this build of the daemon")
            return "succeeded", await _maybe_await(service.run(target.id, dict(target.inputs))), None
        service = self._chat()
        if service is None:
            raise Unavailable("chat (agents and models) is not available in this build of the daemon")
        from protocol.llm import ChatSendParams  # the chat capability is in this build: its types are too

        async def ignore(event: Any) -> None:  # nobody streams a scheduled chat; the result has it all
            pass
        result = await service.send(ChatSendParams(message=target.prompt, agent=target.agent,
                                                   provider=target.provider), ignore)
        return "succeeded", result, None

    # ---- other capabilities, found when they are in the build ------------------------------------

    def _service(self, module: str, name: str) -> Any:
        service_type = service_type_named(module, name)
        return None if service_type is None else self._find(service_type)

    def _workflows(self) -> Any:
        return self._service("sidecar.workflows.service", "WorkflowService")

    def _chat(self) -> Any:
        return self._service("sidecar.llm.chat", "ChatService")

    async def _publish(self, topic: str, payload: dict[str, Any]) -> None:
        bus = self._service("sidecar.events.service", "EventBus")
        if bus is None:
            return
        try:
            await _maybe_await(bus.publish(topic, payload))
        except Exception:  # noqa: BLE001 - an event bus problem never fails a run
            log.exception("publishing %s failed", topic)


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _problem(exc: BaseException) -> SidecarError:
    """What a request answers while the store is not open: the store's own error when it is of
    a kind that says so, else `unavailable` with its message (a library's exception: its type
    only, as its text may quote a URL)."""
    if isinstance(exc, (Unavailable, PermissionDenied)):
        return exc
    if isinstance(exc, SidecarError):
        return Unavailable(exc.message, **(exc.details or {}))
    return Unavailable(type(exc).__name__)


def _short(content: Any) -> str:
    text = content if isinstance(content, str) else _encode(content).decode(errors="replace")
    return text[:MAX_ERROR_CHARS]


def _output_json(output: Any) -> str | None:
    if output is None:
        return None
    try:
        text = _encode(output).decode()
    except (TypeError, msgspec.EncodeError):
        text = _encode(repr(output)).decode()
    if len(text) > MAX_OUTPUT_CHARS:
        text = _encode({"truncated": True, "head": text[:MAX_OUTPUT_CHARS]}).decode()
    return text
