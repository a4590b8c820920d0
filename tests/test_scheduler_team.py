"""Scheduler team mode on the local PostgreSQL (127.0.0.1:5432, user postgres, database
`test`; a fresh schema per test, dropped after): the PgJobStore under the same service, and
two or three real daemon processes sharing jobs — N due runs run to completion exactly N
times in total, also when one daemon is killed with -9 in the middle of runs.

The daemons are `sidecar serve` with one extra capability (`serve()` below): a tool source
`team__work` that sleeps and appends `start`/`done` lines to a file, so the test sees what
each process did."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from protocol import scheduler as p
from sidecar.capability import Capability, Platform
from sidecar.client import DaemonClient
from sidecar.errors import Unavailable
from sidecar.notifier import Notifier
from sidecar.scheduler.pg_store import PgJobStore
from sidecar.scheduler.service import SchedulerService
from sidecar.toolsource import ToolCall, ToolInfo, ToolResult

REPO = Path(__file__).resolve().parents[1]
PG = "postgresql://postgres@127.0.0.1:5432/test"


# --- the daemon side: a tool source, and `serve()` run as the subprocess ------------------------

class WorkTools:
    """`team__work {seconds}`: appends `start <slot> <pid>`, sleeps, appends `done <slot> <pid>`."""

    prefix = "team"

    def __init__(self, log_path: str) -> None:
        self.log_path = log_path

    async def list_tools(self) -> list[ToolInfo]:
        return [ToolInfo("team__work", "sleep and log", {"type": "object"})]

    def _mark(self, word: str, call: ToolCall) -> None:
        line = f"{word} {call.caller}@{call.extra['scheduledAt']:.3f} {os.getpid()}\n"
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())  # one O_APPEND write: lines of several processes never interleave
        finally:
            os.close(fd)

    async def call(self, name: str, arguments: dict[str, Any], call: ToolCall) -> ToolResult:
        self._mark("start", call)
        await anyio.sleep(float(arguments.get("seconds", 0)))
        self._mark("done", call)
        return ToolResult({"pid": os.getpid()})


class WorkToolsCapability(Capability):
    name = "team-test-tools"

    def __init__(self, platform: Platform) -> None:
        super().__init__(platform)
        platform.tools.add(WorkTools(os.environ["SCHEDULER_TEST_LOG"]))


def serve() -> None:
    """`python -c 'from tests.test_scheduler_team import serve; serve()' --data-dir D`: the real
    daemon, with the scheduler (if the build does not list it yet) and WorkTools."""
    import functools

    from sidecar import app
    from sidecar.cli.main import main
    from sidecar.scheduler.capability import SchedulerCapability

    extra: tuple[type[Capability], ...] = (WorkToolsCapability,)
    if SchedulerCapability not in app.CAPABILITIES:
        extra = (SchedulerCapability, *extra)
    app.build = functools.partial(app.build, capabilities=app.CAPABILITIES + extra)  # type: ignore[assignment]
    sys.exit(main(["serve", *sys.argv[1:]]))


# --- fixtures --------------------------------------------------------------------------------

def _pg_available() -> bool:
    import socket
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=1).close()
        return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _pg_available() and not os.environ.get("CI"),
                                reason="no PostgreSQL on 127.0.0.1:5432")


def _psql(sql: str) -> str:
    return subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-tAc", sql],
                          check=True, capture_output=True, text=True).stdout


@pytest.fixture
def pg_url() -> Iterator[str]:
    schema = f"sched_{uuid.uuid4().hex[:12]}"
    _psql(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG}?search_path={schema}"
    finally:
        _psql(f"DROP SCHEMA {schema} CASCADE")


def _schema(url: str) -> str:
    return url.rsplit("=", 1)[1]


# --- in-process: two services on one PostgreSQL ----------------------------------------------

@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    def __init__(self) -> None:
        self.t = datetime(2025, 6, 2, 8, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.t


class CountingTools:
    prefix = "c"

    def __init__(self) -> None:
        self.calls: Counter[tuple[str, float]] = Counter()

    async def list_tools(self) -> list[ToolInfo]:
        return [ToolInfo("c__count", "", {"type": "object"})]

    async def call(self, name: str, arguments: dict[str, Any], call: ToolCall) -> ToolResult:
        self.calls[call.caller, call.extra["scheduledAt"]] += 1
        await anyio.sleep(0.01)
        return ToolResult(None)


async def _quick(seconds: float) -> None:
    await anyio.sleep(min(seconds, 0.01))


@pytest.mark.anyio
async def test_two_services_share_jobs_exactly_once(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from sidecar.toolsource import ToolRegistry

    clock = Clock()
    tools = CountingTools()
    registry = ToolRegistry()
    registry.add(tools)
    a = SchedulerService(PgJobStore(pg_url), Notifier(), tools=registry, now=clock, sleeper=_quick, owner="a")
    b = SchedulerService(PgJobStore(pg_url), Notifier(), tools=registry, now=clock, sleeper=_quick, owner="b")
    # Which loop claims first is up to timing: on a loaded machine one of them can claim every
    # run of every step. So in one step each service declines to claim (as a daemon at capacity
    # would), which makes both take part whatever the timing; the other steps contend freely.
    declining: set[str] = set()
    for service in (a, b):
        def gated(service: SchedulerService = service, claim: Any = service.store.claim) -> Any:
            async def claim_unless_declining(*args: Any, **kwargs: Any) -> Any:
                return [] if service.owner in declining else await claim(*args, **kwargs)
            return claim_unless_declining
        monkeypatch.setattr(service.store, "claim", gated())
    async with a.running(), b.running():
        jobs = [await a.create(p.JobParams(name=f"j{i}", schedule=p.ScheduleSpec(every="20s"),
                                           target=p.ToolTarget(name="c__count"))) for i in range(10)]
        assert len(await b.list()) == 10
        for step in range(6):  # 2 minutes, in steps shorter than a lease (30 s) that the loops of both see
            declining.clear()
            declining.update({1: {"a"}, 2: {"b"}}.get(step, set()))
            fired_before = (a.fired, b.fired)
            clock.t += timedelta(seconds=20)
            with anyio.fail_after(10):
                # every run of this step started, and finished (else the next is rightly skipped)
                while sum(tools.calls.values()) < 10 * (step + 1) or a._active or b._active:
                    await anyio.sleep(0.01)
            if step == 1:
                assert (a.fired, b.fired) == (fired_before[0], fired_before[1] + 10)
            if step == 2:
                assert (a.fired, b.fired) == (fired_before[0] + 10, fired_before[1])
        await a.wait_idle()
        await b.wait_idle()
        await anyio.sleep(0.2)
        assert sum(tools.calls.values()) == 60 and set(tools.calls.values()) == {1}
        assert a.fired >= 10 and b.fired >= 10 and a.fired + b.fired == 60
        for j in jobs:
            assert [r.status for r in await b.history(j.id, 100)] == ["succeeded"] * 6


@pytest.mark.anyio
async def test_migrations_are_idempotent_and_unreachable_database_is_unavailable(pg_url: str) -> None:
    store = PgJobStore(pg_url)
    await store.open()
    try:
        assert await store.migrate() == []
    finally:
        await store.close()
    assert _psql(f"SELECT count(*) FROM {_schema(pg_url)}.scheduler_schema_migrations").strip() == "1"
    svc = SchedulerService(PgJobStore("postgresql://postgres@127.0.0.1:1/test"), Notifier(), sleeper=_quick,
                           poll_seconds=0.05)
    async with svc.running():
        with pytest.raises(Unavailable):
            await svc.list()


# --- real daemons ----------------------------------------------------------------------------

def _spawn(tmp: Path, url: str, index: int, log_path: Path) -> DaemonClient:
    data = tmp / f"d{index}"
    data.mkdir()
    env = {**os.environ, "SIDECAR_TEAM_DATABASE_URL": url, "SIDECAR_SCHEDULER_POLL_SECONDS": "0.2",
           "SIDECAR_SCHEDULER_LEASE_SECONDS": "2", "SCHEDULER_TEST_LOG": str(log_path),
           "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-c", "from tests.test_scheduler_team import serve; serve()", "--data-dir", str(data),
            "--secrets-backend", "file"]
    client = DaemonClient(argv, env=env, stderr=subprocess.PIPE)
    client.initialize("team-test")
    return client


def _lines(log_path: Path) -> list[tuple[str, str, int]]:
    if not log_path.exists():
        return []
    return [(w, slot, int(pid)) for w, slot, pid in (line.split() for line in log_path.read_text().splitlines())]


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _run_team(tmp_path: Path, url: str, daemons: int, n: int, *, kill: bool) -> None:
    log_path = tmp_path / "work.log"
    clients = [_spawn(tmp_path, url, i, log_path) for i in range(daemons)]
    try:
        at = (datetime.now(UTC) + timedelta(seconds=3)).isoformat()
        for i in range(n):
            clients[i % daemons].request("scheduler/jobs/create", {
                "name": f"job{i}", "schedule": {"at": at}, "concurrency": "parallel",
                "target": {"type": "tool", "name": "team__work", "input": {"seconds": 1.5 if kill else 0.2}}})
        victim = None
        if kill:
            # kill -9 a daemon while it has runs started and not done
            def busy() -> bool:
                started = Counter(pid for w, _, pid in _lines(log_path) if w == "start")
                return bool(started)
            _wait(busy, 30, "a run to start")
            started = Counter(pid for w, _, pid in _lines(log_path) if w == "start")
            victim = next(c for c in clients if c.proc.pid == started.most_common(1)[0][0])
            os.kill(victim.proc.pid, signal.SIGKILL)
            victim.proc.wait(5)
        _wait(lambda: len({slot for w, slot, _ in _lines(log_path) if w == "done"}) >= n, 60, f"{n} runs done")
        time.sleep(1.0)  # anything extra would show up now
        lines = _lines(log_path)
        done = Counter(slot for w, slot, _ in lines if w == "done")
        assert len(done) == n and set(done.values()) == {1}, done
        schema = _schema(url)
        rows = _psql(f"SELECT status, count(*) FROM {schema}.scheduler_runs GROUP BY status").split()
        assert rows == [f"succeeded|{n}"]
        if kill:
            assert victim is not None
            lost = {slot for w, slot, pid in lines if w == "start" and pid == victim.proc.pid}
            assert lost, "the killed daemon had runs in progress"
            assert all(pid != victim.proc.pid for w, slot, pid in lines if w == "done")
            attempts = _psql(f"SELECT count(*) FROM {schema}.scheduler_runs WHERE attempt = 2").strip()
            assert int(attempts) >= len(lost)  # runs it had claimed but not started count too
        survivors = {pid for w, _, pid in lines if w == "done"}
        assert len(survivors) >= 1
    finally:
        for client in clients:
            if client.proc.poll() is None:
                client.close(timeout=5)


@pytest.mark.slow
@pytest.mark.parametrize("daemons", [2, 3])
def test_daemons_fire_n_runs_exactly_n_times(tmp_path: Path, pg_url: str, daemons: int) -> None:
    _run_team(tmp_path, pg_url, daemons, 24, kill=False)


@pytest.mark.slow
@pytest.mark.parametrize("daemons", [2, 3])
def test_kill_9_mid_run_loses_nothing_and_doubles_nothing(tmp_path: Path, pg_url: str, daemons: int) -> None:
    _run_team(tmp_path, pg_url, daemons, 24, kill=True)


@pytest.mark.anyio
async def test_a_team_write_cancelled_in_flight_commits_and_answers_a_cancelled_one_writes_nothing(
        pg_url: str) -> None:
    """The commit rule holds on PostgreSQL too: a cancel that lands while a job's INSERT is on
    the wire is dropped once it commits; one that lands before it stops it."""
    from sidecar.commit import RequestGuard, current_guard
    from sidecar.scheduler.jobstore import JobRow

    store = PgJobStore(pg_url)
    await store.open()
    try:
        await store.migrate()

        async def insert_with_cancel(job_id: str, cancel_first: bool) -> tuple[bool, bool]:
            with anyio.CancelScope() as scope:
                guard = RequestGuard(scope.cancel)
                token = current_guard.set(guard)
                try:
                    async with anyio.create_task_group() as tg:
                        if cancel_first:
                            guard.request_cancel()
                        else:
                            tg.start_soon(_cancel_soon, guard)  # lands while the INSERT is in flight
                        await store.insert_job(JobRow(job_id, job_id, "{}", False, None, 0.0, 0.0, 0.0))
                finally:
                    current_guard.reset(token)
            return scope.cancelled_caught, await store.get_job(job_id) is not None

        async def _cancel_soon(guard: RequestGuard) -> None:
            await anyio.lowlevel.checkpoint()  # the insert has been sent and awaits the server
            assert guard.request_cancel() is True  # noted, deferred until the write ends

        assert await insert_with_cancel("in-flight", cancel_first=False) == (False, True)
        assert await insert_with_cancel("before", cancel_first=True) == (True, False)
    finally:
        await store.close()
