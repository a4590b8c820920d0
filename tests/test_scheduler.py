"""Scheduler: schedules (cron via cronsim, every, at) across DST, checked against cronsim for a
whole year; the service on a real SQLite database with a fixed, steerable clock: misfire
and coalescing after a simulated sleep, restart with due jobs, concurrency policies with a
slow target, lease expiry and takeover, pause/resume, runNow, typed errors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import msgspec
import pytest
from cronsim import CronSim

from protocol import scheduler as p
from sidecar.errors import InvalidValue, NotFound, Unavailable
from sidecar.notifier import Notifier
from sidecar.scheduler import schedules
from sidecar.scheduler.service import SchedulerService
from sidecar.scheduler.store import SqliteJobStore
from sidecar.store.database import Database
from sidecar.toolsource import ToolCall, ToolInfo, ToolRegistry, ToolResult

pytestmark = pytest.mark.anyio

NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- parts the tests steer -------------------------------------------------------------------

class FakeClock:
    """The wall clock the service reads; tests move it (a sleep, a jump)."""

    def __init__(self, start: datetime) -> None:
        self.t = start

    def __call__(self) -> datetime:
        return self.t

    def advance(self, **kwargs: float) -> None:
        self.t += timedelta(**kwargs)


async def quick_sleep(seconds: float) -> None:
    """The loop's sleeper: the fake clock does not move by itself, so nap briefly and look again."""
    await anyio.sleep(min(seconds, 0.005))


class TestTools:
    __test__ = False

    """A built-in tool source: `t__record` answers at once, `t__gate` waits for `release()`,
    `t__fail` returns an error result, `t__raise` raises, `t__sleep` sleeps real seconds."""

    prefix = "t"

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any], ToolCall]] = []
        self.gate = anyio.Event()
        self.started = 0

    def release(self) -> None:
        self.gate.set()

    async def list_tools(self) -> list[ToolInfo]:
        return [ToolInfo(f"t__{n}", n, {"type": "object"}) for n in ("record", "gate", "fail", "raise", "sleep")]

    async def call(self, name: str, arguments: dict[str, Any], call: ToolCall) -> ToolResult:
        self.calls.append((name, arguments, call))
        self.started += 1
        if name == "t__gate":
            await self.gate.wait()
        elif name == "t__sleep":
            await anyio.sleep(arguments.get("seconds", 1))
        elif name == "t__fail":
            return ToolResult({"reason": "bad input"}, is_error=True)
        elif name == "t__raise":
            raise NotFound("the thing is gone")
        return ToolResult({"ok": True, "arguments": arguments})


@pytest.fixture
def db(tmp_path: Path) -> Any:
    database = Database(tmp_path / "sidecar.db")
    database.open()
    yield database
    database.close()


class Harness:
    def __init__(self, db: Database, clock: FakeClock) -> None:
        self.db = db
        self.clock = clock
        self.tools = TestTools()
        registry = ToolRegistry()
        registry.add(self.tools)
        self.notifier = Notifier()
        self.events: list[tuple[str, Any]] = []
        self.notifier.attach(lambda name, event: self.events.append((name, event)))
        self.registry = registry

    def service(self, **kwargs: Any) -> SchedulerService:
        kwargs.setdefault("lease_seconds", 30)
        return SchedulerService(SqliteJobStore(self.db), self.notifier, tools=self.registry, now=self.clock,
                                sleeper=quick_sleep, **kwargs)

    @asynccontextmanager
    async def running(self, **kwargs: Any) -> AsyncIterator[SchedulerService]:
        svc = self.service(**kwargs)
        async with svc.running():
            yield svc


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2025, 6, 2, 8, 0, tzinfo=UTC))


@pytest.fixture
def h(db: Database, clock: FakeClock) -> Harness:
    return Harness(db, clock)


def job(name: str = "j", *, cron: str | None = None, every: str | None = None, at: str | None = None,
        tool: str = "t__record", tz: str = "UTC", **kwargs: Any) -> p.JobParams:
    return p.JobParams(name=name, schedule=p.ScheduleSpec(cron=cron, every=every, at=at),
                       target=p.ToolTarget(name=tool, input={"job": name}), timezone=tz, **kwargs)


async def until(predicate: Callable[[], Any], timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not await _value(predicate()):
            await anyio.sleep(0.005)


async def _value(v: Any) -> Any:
    return await v if hasattr(v, "__await__") else v


async def settle(svc: SchedulerService) -> None:
    """One pass of the loop done, and the runs it started finished."""
    await svc.tick()
    await svc.wait_idle()


async def statuses(svc: SchedulerService, job_id: str) -> list[tuple[str, str]]:
    return [(r.status, r.trigger) for r in reversed(await svc.history(job_id, 1000))]


# --- schedules: DST, a year against cronsim, every, at ---------------------------------------

def preview(tz: str, after: str, count: int = 3, **schedule: str) -> list[str]:
    svc = SchedulerService(None, Notifier())  # type: ignore[arg-type]
    return svc.preview(p.PreviewParams(schedule=p.ScheduleSpec(**schedule), timezone=tz, count=count, after=after))


def test_spring_forward_fires_once_at_the_next_valid_time() -> None:
    # 2025-03-09 in New York: 02:00 -> 03:00; 2025-03-30 in Berlin: 02:00 -> 03:00
    assert preview("America/New_York", "2025-03-08T12:00:00", cron="30 2 * * *") == [
        "2025-03-09T03:00:00-04:00", "2025-03-10T02:30:00-04:00", "2025-03-11T02:30:00-04:00"]
    assert preview("Europe/Berlin", "2025-03-29T12:00:00", cron="30 2 * * *") == [
        "2025-03-30T03:00:00+02:00", "2025-03-31T02:30:00+02:00", "2025-04-01T02:30:00+02:00"]


def test_fall_back_fires_once() -> None:
    # 2025-11-02 in New York: 01:00-02:00 happens twice; 2025-10-26 in Berlin: 02:00-03:00 twice
    assert preview("America/New_York", "2025-11-01T12:00:00", cron="30 1 * * *") == [
        "2025-11-02T01:30:00-04:00", "2025-11-03T01:30:00-05:00", "2025-11-04T01:30:00-05:00"]
    assert preview("Europe/Berlin", "2025-10-25T12:00:00", cron="30 2 * * *") == [
        "2025-10-26T02:30:00+02:00", "2025-10-27T02:30:00+01:00", "2025-10-28T02:30:00+01:00"]
    # an every-30-minutes job keeps every real half hour through the repeated hour
    assert preview("America/New_York", "2025-11-02T00:50:00-04:00", count=5, cron="*/30 * * * *") == [
        "2025-11-02T01:00:00-04:00", "2025-11-02T01:30:00-04:00", "2025-11-02T01:00:00-05:00",
        "2025-11-02T01:30:00-05:00", "2025-11-02T02:00:00-05:00"]


@pytest.mark.parametrize("tz", ["America/New_York", "Europe/Berlin", "UTC", "Australia/Lord_Howe"])
@pytest.mark.parametrize("expr", ["30 2 * * *", "30 1 * * *", "0 * * * *", "*/20 * * * *", "0 9 * * 1-5",
                                  "15 3 1 * *", "@daily", "0 0 L * *"])
def test_a_year_of_fire_times_matches_cronsim(tz: str, expr: str) -> None:
    """Fire times as the loop computes them (each from the one before, as instants) are
    cronsim's own sequence, for a whole year."""
    zone = ZoneInfo(tz)
    start = datetime(2025, 1, 1, tzinfo=zone)
    end = datetime(2026, 1, 1, tzinfo=zone).timestamp()
    expected = []
    for value in CronSim(schedules.normalize_cron(expr), start):
        if value.timestamp() >= end:
            break
        expected.append(value.timestamp())
    schedule = schedules.build(tz, cron=expr)
    got: list[float] = []
    t: datetime | None = start.astimezone(UTC)
    while True:
        t = schedule.next_after(t)  # type: ignore[arg-type]
        assert t is not None
        if t.timestamp() >= end:
            break
        got.append(t.timestamp())
        t = t.astimezone(UTC)
    assert got == expected
    assert len(got) >= 12


def test_every_and_at() -> None:
    assert preview("UTC", "2025-06-02T08:00:00Z", count=3, every="1h30m") == [
        "2025-06-02T09:30:00Z", "2025-06-02T11:00:00Z", "2025-06-02T12:30:00Z"]
    # an interval is absolute time: across the spring-forward night it stays 60 real minutes
    assert preview("America/New_York", "2025-03-09T01:30:00", count=2, every="60m") == [
        "2025-03-09T03:30:00-04:00", "2025-03-09T04:30:00-04:00"]
    assert preview("Europe/Berlin", "2025-06-01T00:00:00Z", count=5, at="2025-07-01T09:00:00") == [
        "2025-07-01T09:00:00+02:00"]
    assert preview("UTC", "2025-08-01T00:00:00Z", at="2025-07-01T09:00:00Z") == []


@pytest.mark.parametrize(("schedule", "path"), [
    ({"cron": "61 * * * *"}, "$.params.schedule.cron"),
    ({"cron": "* * *"}, "$.params.schedule.cron"),
    ({"cron": "@sometimes"}, "$.params.schedule.cron"),
    ({"cron": "0 0 30 2 *"}, "$.params.schedule.cron"),
    ({"every": "15x"}, "$.params.schedule.every"),
    ({"every": "0m"}, "$.params.schedule.every"),
    ({"at": "tomorrow"}, "$.params.schedule.at"),
    ({}, "$.params.schedule"),
    ({"cron": "@hourly", "every": "1h"}, "$.params.schedule"),
])
def test_invalid_schedules_name_the_field(schedule: dict[str, str], path: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        preview("UTC", "2025-01-01T00:00:00Z", **schedule)
    assert caught.value.path == path


@pytest.mark.parametrize("tz", ["Mars/Olympus", "", "../etc/passwd", "EST5EDT/x"])
def test_invalid_time_zone_names_the_field(tz: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        preview(tz, "2025-01-01T00:00:00Z", cron="@hourly")
    assert caught.value.path == "$.params.timezone"


# --- the service with a fixed clock ----------------------------------------------------------

async def test_dst_days_fire_once_with_a_fixed_clock(db: Database) -> None:
    """The loop walks through the spring-forward and fall-back nights in New York and Berlin,
    10 minutes at a time: each daily job fires exactly once per day, at the right instant."""
    clock = FakeClock(datetime(2025, 3, 8, 12, 0, tzinfo=NY))
    h = Harness(db, clock)
    async with h.running() as svc:
        spring_ny = await svc.create(job("ny-0230", cron="30 2 * * *", tz="America/New_York"))
        fall_ny = await svc.create(job("ny-0130", cron="30 1 * * *", tz="America/New_York"))
        berlin = await svc.create(job("de-0230", cron="30 2 * * *", tz="Europe/Berlin"))
        for day_start in (datetime(2025, 3, 8, 12, tzinfo=NY), datetime(2025, 3, 29, 12, tzinfo=BERLIN),
                          datetime(2025, 10, 25, 12, tzinfo=BERLIN), datetime(2025, 11, 1, 12, tzinfo=NY)):
            # paused while the clock jumps to the eve of the next DST change: no catch-up in between
            for j in (spring_ny, fall_ny, berlin):
                await svc.set_enabled(j.id, False)
            clock.t = day_start
            for j in (spring_ny, fall_ny, berlin):
                await svc.set_enabled(j.id, True)
            for _ in range(48 * 6):
                clock.advance(minutes=10)
                await settle(svc)

        def fired(j: p.Job) -> list[str]:
            return [schedules.iso(schedules.from_epoch(c[2].extra["scheduledAt"]).astimezone(ZoneInfo(j.timezone)))
                    for c in h.tools.calls if c[1]["job"] == j.name]
        assert fired(spring_ny) == ["2025-03-09T03:00:00-04:00", "2025-03-10T02:30:00-04:00",
                                    "2025-03-30T02:30:00-04:00", "2025-03-31T02:30:00-04:00",
                                    "2025-10-26T02:30:00-04:00", "2025-10-27T02:30:00-04:00",
                                    "2025-11-02T02:30:00-05:00", "2025-11-03T02:30:00-05:00"]
        assert fired(fall_ny)[-2:] == ["2025-11-02T01:30:00-04:00", "2025-11-03T01:30:00-05:00"]
        assert fired(berlin)[2:4] == ["2025-03-30T03:00:00+02:00", "2025-03-31T02:30:00+02:00"]
        assert fired(berlin)[4:6] == ["2025-10-26T02:30:00+02:00", "2025-10-27T02:30:00+01:00"]
        assert all(s == ("succeeded", "schedule") for s in await statuses(svc, fall_ny.id))


async def test_clock_jump_coalesces_into_one_catchup_run(h: Harness) -> None:
    async with h.running() as svc:
        j = await svc.create(job(every="10m"))
        h.clock.advance(hours=5, seconds=1)  # asleep: 30 fire times went by
        await until(lambda: svc.fired == 1)
        await svc.wait_idle()
        runs = await svc.history(j.id, 100)
        assert [(r.status, r.trigger, r.coalesced) for r in runs] == [("succeeded", "catchup", 29)]
        assert runs[0].scheduledAt == "2025-06-02T13:00:00Z"
        got = await svc.get(j.id)
        assert got.nextRunAt == "2025-06-02T13:10:00Z"


async def test_grace_window_records_missed_runs(h: Harness) -> None:
    async with h.running() as svc:
        j = await svc.create(job(every="10m", misfire=p.Misfire(graceSeconds=900)))
        h.clock.advance(hours=1, seconds=1)  # fire times at +10..+60 min; +50 and +60 are within 15 min
        await until(lambda: svc.fired == 1)
        await svc.wait_idle()
        runs = list(reversed(await svc.history(j.id, 100)))
        assert [(r.status, r.scheduledAt[11:16], r.coalesced) for r in runs] == [
            ("missed", "08:10", 0), ("missed", "08:20", 0), ("missed", "08:30", 0), ("missed", "08:40", 0),
            ("succeeded", "09:00", 1)]


async def test_no_coalescing_runs_each_timely_fire_time(h: Harness) -> None:
    async with h.running() as svc:
        j = await svc.create(job(every="10m", misfire=p.Misfire(graceSeconds=None, coalesce=False),
                                 concurrency="parallel", maxParallel=8))
        h.clock.advance(minutes=30, seconds=1)
        await until(lambda: svc.fired == 3)
        await svc.wait_idle()
        assert await statuses(svc, j.id) == [("succeeded", "catchup")] * 2 + [("succeeded", "schedule")]


async def test_restart_with_due_jobs(h: Harness) -> None:
    async with h.running() as svc:
        j = await svc.create(job(cron="@hourly"))
    assert h.tools.calls == []
    h.clock.advance(hours=3, minutes=2)  # the daemon was not running for three fire times
    async with h.running() as svc:
        await until(lambda: svc.fired == 1)
        await svc.wait_idle()
        runs = await svc.history(j.id, 10)
        assert [(r.status, r.trigger, r.coalesced, r.scheduledAt) for r in runs] == [
            ("succeeded", "catchup", 2, "2025-06-02T11:00:00Z")]
        assert (await svc.get(j.id)).nextRunAt == "2025-06-02T12:00:00Z"


async def test_skip_if_running_with_a_slow_target(h: Harness) -> None:
    async with h.running() as svc:
        j = await svc.create(job(every="1m", tool="t__gate"))
        h.clock.advance(minutes=1)
        await until(lambda: h.tools.started == 1)
        for _ in range(3):
            h.clock.advance(minutes=1)
            await svc.tick()
        assert await statuses(svc, j.id) == [("running", "schedule")] + [("skipped", "schedule")] * 3
        h.tools.release()
        await svc.wait_idle()
        assert await statuses(svc, j.id) == [("succeeded", "schedule")] + [("skipped", "schedule")] * 3
        assert h.tools.started == 1


async def test_queue_keeps_one_pending_run(h: Harness) -> None:
    async with h.running() as svc:
        j = await svc.create(job(every="1m", tool="t__gate", concurrency="queue"))
        h.clock.advance(minutes=1)
        await until(lambda: h.tools.started == 1)
        for _ in range(3):
            h.clock.advance(minutes=1)
            await svc.tick()
        assert await statuses(svc, j.id) == [("running", "schedule"), ("pending", "schedule"),
                                             ("skipped", "schedule"), ("skipped", "schedule")]
        h.tools.release()
        await until(lambda: h.tools.started == 2)
        await svc.wait_idle()
        assert [s for s, _ in await statuses(svc, j.id)] == ["succeeded", "succeeded", "skipped", "skipped"]


async def test_parallel_is_bounded(h: Harness) -> None:
    async with h.running() as svc:
        j = await svc.create(job(every="1m", tool="t__gate", concurrency="parallel", maxParallel=2))
        for _ in range(3):
            h.clock.advance(minutes=1)
            await svc.tick()
        await until(lambda: h.tools.started == 2)
        assert [s for s, _ in await statuses(svc, j.id)] == ["running", "running", "skipped"]
        h.tools.release()
        await svc.wait_idle()
        assert [s for s, _ in await statuses(svc, j.id)] == ["succeeded", "succeeded", "skipped"]


async def test_expired_lease_is_taken_over(h: Harness) -> None:
    """A daemon took a run and died (no renewals): once its lease expires, this one runs it."""
    store = SqliteJobStore(h.db)
    idle = h.service()  # no loop: nothing claims the run but the dead daemon
    j = await idle.create(job(cron="@yearly"))
    run = await idle.run_now(j.id)
    await store.claim(h.clock().timestamp(), "dead-host:1", h.clock().timestamp() + 30, lambda job, n: 1)
    async with h.running(lease_seconds=30) as svc:
        await settle(svc)
        assert [(r.status, r.attempt) for r in await svc.history(j.id, 5)] == [("running", 1)]
        assert h.tools.calls == []
        h.clock.advance(seconds=31)
        await until(lambda: svc.fired == 1)
        await svc.wait_idle()
        (done,) = await svc.history(j.id, 5)
        assert (done.id, done.status, done.attempt, done.trigger) == (run.id, "succeeded", 2, "manual")


async def test_lease_attempts_run_out(h: Harness) -> None:
    store = SqliteJobStore(h.db)
    idle = h.service()
    j = await idle.create(job(cron="@yearly"))
    await idle.run_now(j.id)
    for _ in range(3):
        now = h.clock().timestamp()
        assert len(await store.claim(now, "dead", now + 1, lambda job, n: 1)) == 1
        h.clock.advance(seconds=2)
        await store.reap(h.clock().timestamp(), 3)
    (run,) = await store.history(j.id, 5)
    assert (run.status, run.attempt) == ("failed", 3)
    assert "lease expired" in (run.error or "")


async def test_pause_and_resume_skip_what_was_missed(h: Harness) -> None:
    async with h.running() as svc:
        j = await svc.create(job(cron="*/10 * * * *"))
        paused = await svc.set_enabled(j.id, False)
        assert paused.enabled is False and paused.nextRunAt is None
        h.clock.advance(hours=1)
        await settle(svc)
        assert h.tools.calls == []
        resumed = await svc.set_enabled(j.id, True)
        assert resumed.nextRunAt == "2025-06-02T09:10:00Z"
        await settle(svc)
        assert h.tools.calls == []
        h.clock.advance(minutes=10)
        await until(lambda: svc.fired == 1)
        assert [j.id for j in await svc.list(enabled=True)] == [j.id]


async def test_run_now_notifies_fired_and_finished(h: Harness) -> None:
    async with h.running() as svc:
        j = await svc.create(job(cron="@yearly"))
        run = await svc.run_now(j.id)
        assert run.status == "pending" and run.trigger == "manual"
        await until(lambda: svc.fired == 1)
        await svc.wait_idle()
        (done,) = await svc.history(j.id, 5)
        assert done.status == "succeeded" and done.output == {"ok": True, "arguments": {"job": "j"}}
        assert done.durationMs is not None and done.startedAt is not None
        names = [(name, e.runId, getattr(e, "status", None)) for name, e in h.events]
        assert names == [("scheduler/fired", run.id, None), ("scheduler/finished", run.id, "succeeded")]
        assert h.tools.calls[0][2].caller == f"scheduler:{j.id}"


@pytest.mark.parametrize(("tool", "error"), [("t__fail", '{"reason":"bad input"}'), ("t__raise", "the thing is gone"),
                                             ("nope__x", "no tool named nope__x")])
async def test_failing_targets(h: Harness, tool: str, error: str) -> None:
    async with h.running() as svc:
        j = await svc.create(job(cron="@yearly", tool=tool))
        await svc.run_now(j.id)
        await until(lambda: svc.fired == 1)
        await svc.wait_idle()
        (run,) = await svc.history(j.id, 5)
        assert (run.status, run.error) == ("failed", error)
        assert h.events[-1][1].status == "failed"


async def test_timeout(h: Harness) -> None:
    async with h.running() as svc:
        j = await svc.create(job(cron="@yearly", tool="t__gate", timeoutSeconds=1))
        await svc.run_now(j.id)
        await until(lambda: svc.fired == 1)
        await svc.wait_idle()
        (run,) = await svc.history(j.id, 5)
        assert (run.status, run.error) == ("failed", "timed out after 1 s")


async def test_one_shot_at(h: Harness) -> None:
    async with h.running() as svc:
        with pytest.raises(InvalidValue) as caught:
            await svc.create(job(at="2025-06-02T09:30:00", tz="Europe/Berlin"))  # 07:30Z: the past
        assert caught.value.path == "$.params.schedule.at"
        j = await svc.create(job(at="2025-06-02T10:30:00", tz="Europe/Berlin"))
        assert j.nextRunAt == "2025-06-02T10:30:00+02:00"
        h.clock.advance(minutes=29)
        await settle(svc)
        assert h.tools.calls == []
        h.clock.advance(minutes=1)
        await until(lambda: svc.fired == 1)
        h.clock.advance(days=2)
        await settle(svc)
        assert svc.fired == 1
        assert (await svc.get(j.id)).nextRunAt is None


async def test_update_delete_and_errors(h: Harness) -> None:
    async with h.running() as svc:
        j = await svc.create(job(cron="@daily", tool="t__gate"))
        assert j.nextRunAt == "2025-06-03T00:00:00Z"
        j2 = await svc.update(p.UpdateParams(id=j.id, schedule=p.ScheduleSpec(cron="30 9 * * *"),
                                             timezone="Europe/Berlin", name="renamed"))
        assert (j2.name, j2.nextRunAt, j2.timezone) == ("renamed", "2025-06-03T09:30:00+02:00", "Europe/Berlin")
        with pytest.raises(InvalidValue) as caught:
            await svc.update(p.UpdateParams(id=j.id, timezone="Nowhere/Land"))
        assert caught.value.path == "$.params.timezone"
        await svc.run_now(j.id)
        await until(lambda: h.tools.started == 1)
        assert await svc.delete(j.id) is True
        await svc.wait_idle()
        assert await svc.delete(j.id) is False
        for call in (svc.get(j.id), svc.history(j.id, 5), svc.run_now(j.id)):
            with pytest.raises(NotFound):
                await call
        with pytest.raises(Unavailable) as unavailable:
            await svc.create(p.JobParams(name="wf", schedule=p.ScheduleSpec(cron="@daily"),
                                         target=p.WorkflowTarget(id="w1")))
        assert unavailable.value.kind == "unavailable"
        with pytest.raises(Unavailable):
            await svc.create(p.JobParams(name="c", schedule=p.ScheduleSpec(cron="@daily"),
                                         target=p.ChatTarget(agent="a", prompt="hi")))
        assert await svc.list() == []


async def test_job_wire_round_trip(h: Harness) -> None:
    raw = {"name": "n", "schedule": {"cron": "@hourly"}, "timezone": "Europe/Berlin",
           "target": {"type": "tool", "name": "t__record", "input": {"a": 1}}, "concurrency": "queue"}
    params = msgspec.json.decode(msgspec.json.encode(raw), type=p.JobParams)
    async with h.running() as svc:
        created = msgspec.to_builtins(await svc.create(params))
    assert created["target"] == raw["target"] and created["schedule"] == {"cron": "@hourly"}
    assert created["misfire"] == {}  # defaults: any lateness, coalesced
    assert created["nextRunAt"] == "2025-06-02T11:00:00+02:00"


# --- over JSON-RPC, in process ---------------------------------------------------------------

async def test_methods_over_rpc(tmp_path: Path) -> None:
    from sidecar.app import CAPABILITIES
    from sidecar.capability import Capability, Platform
    from sidecar.scheduler.capability import SchedulerCapability
    from tests.harness import RpcError, in_process

    class ToolsCapability(Capability):
        name = "scheduler-test-tools"

        def __init__(self, platform: Platform) -> None:
            super().__init__(platform)
            platform.tools.add(TestTools())

    extra: tuple[type[Capability], ...] = (ToolsCapability,)
    if SchedulerCapability not in CAPABILITIES:
        extra = (SchedulerCapability, *extra)
    async with in_process(tmp_path / "data", extra=extra) as daemon:
        job_ = await daemon.call("scheduler/jobs/create", {
            "name": "nightly", "schedule": {"cron": "30 2 * * *"}, "timezone": "America/New_York",
            "target": {"type": "tool", "name": "t__record", "input": {"x": 1}}})
        assert job_["enabled"] is True and job_["nextRunAt"].endswith(("-04:00", "-05:00"))
        assert (await daemon.call("scheduler/jobs/get", {"id": job_["id"]}))["name"] == "nightly"
        assert [j["id"] for j in (await daemon.call("scheduler/jobs/list", {}))["jobs"]] == [job_["id"]]
        run = await daemon.call("scheduler/jobs/runNow", {"id": job_["id"]})
        with anyio.fail_after(5):
            while not any(n["method"] == "scheduler/finished" for n in daemon.notifications):
                await anyio.sleep(0.01)
        (finished,) = [n["params"] for n in daemon.notifications if n["method"] == "scheduler/finished"]
        assert finished["runId"] == run["id"] and finished["status"] == "succeeded"
        assert [n["params"]["runId"] for n in daemon.notifications if n["method"] == "scheduler/fired"] == [run["id"]]
        history = await daemon.call("scheduler/history", {"jobId": job_["id"], "limit": 5})
        assert history["runs"][0]["output"] == {"ok": True, "arguments": {"x": 1}}
        assert (await daemon.call("scheduler/jobs/pause", {"id": job_["id"]}))["enabled"] is False
        assert (await daemon.call("scheduler/jobs/resume", {"id": job_["id"]}))["enabled"] is True
        updated = await daemon.call("scheduler/jobs/update", {"id": job_["id"], "concurrency": "queue"})
        assert updated["concurrency"] == "queue"
        times = await daemon.call("scheduler/jobs/preview", {"schedule": {"cron": "30 1 * * *"},
                                                              "timezone": "America/New_York", "count": 2,
                                                              "after": "2025-11-01T12:00:00-04:00"})
        assert times == {"times": ["2025-11-02T01:30:00-04:00", "2025-11-03T01:30:00-05:00"]}
        for params, path in (({"schedule": {"cron": "99 * * * *"}}, "$.params.schedule.cron"),
                             ({"schedule": {"cron": "@daily"}, "timezone": "Moon/Base"}, "$.params.timezone")):
            with pytest.raises(RpcError) as caught:
                await daemon.call("scheduler/jobs/preview", params)
            assert caught.value.code == -32602 and caught.value.error["data"]["path"] == path
        from sidecar.workflows.service import WorkflowService
        if daemon.platform.find(WorkflowService) is None:  # not in this build: refused as unavailable
            with pytest.raises(RpcError) as caught:
                await daemon.call("scheduler/jobs/create", {"name": "w", "schedule": {"cron": "@daily"},
                                                            "target": {"type": "workflow", "id": "wf"}})
            assert caught.value.kind == "unavailable"
        with pytest.raises(RpcError) as caught:
            await daemon.call("scheduler/jobs/get", {"id": "nope"})
        assert caught.value.kind == "not_found"
        assert await daemon.call("scheduler/jobs/delete", {"id": job_["id"]}) == {"id": job_["id"], "deleted": True}


# --- the real daemon -------------------------------------------------------------------------

def test_jobs_survive_a_daemon_restart(spawn: Callable[..., Any]) -> None:
    from sidecar.app import CAPABILITIES
    from sidecar.scheduler.capability import SchedulerCapability
    if SchedulerCapability not in CAPABILITIES:
        pytest.skip("the scheduler is not wired into sidecar/app.py yet")
    first = spawn()
    made = first.request("scheduler/jobs/create", {"name": "weekly", "schedule": {"cron": "@weekly"},
                                                    "timezone": "Europe/Berlin",
                                                    "target": {"type": "tool", "name": "plugin__x"}})
    first.close(timeout=5)
    second = spawn()
    (job_,) = second.request("scheduler/jobs/list", {})["jobs"]
    assert (job_["id"], job_["name"], job_["nextRunAt"]) == (made["id"], "weekly", made["nextRunAt"])
    assert second.request("scheduler/history", {"jobId": made["id"]}) == {"runs": []}


def test_fire_times_end_at_year_9999() -> None:
    # found by tests/test_params_fuzz.py: these answered -32603 (datetime's OverflowError)
    assert preview("UTC", "9999-12-31T23:59:59Z", cron="59 23 31 12 *") == []
    assert preview("Asia/Seoul", "9999-12-31T14:30:00Z", cron="@hourly") == []  # 23:30 there
    assert preview("UTC", "9999-12-01T00:00:00Z", every="366d") == []
    assert preview("UTC", "9999-12-31T23:00:00Z", count=5, every="20m") == [
        "9999-12-31T23:20:00Z", "9999-12-31T23:40:00Z"]
    # a one-shot time that the job's zone cannot show (past 9999-12-31 there) is given in UTC
    assert preview("Pacific/Kiritimati", "2025-01-01T00:00:00Z", at="9999-12-31T23:59:59Z") == [
        "9999-12-31T23:59:59Z"]
