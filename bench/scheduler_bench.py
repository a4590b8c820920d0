"""Scheduler with 10,000 jobs on the embedded SQLite database: the time to find the next due
job, firing lateness (a run's start minus its fire time, real clock) p50/p99, and the idle
CPU of a real daemon holding those jobs (no busy polling).

    .venv/bin/python bench/scheduler_bench.py [--jobs 10000] [--fires 200] [--idle-seconds 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from protocol import scheduler as p  # noqa: E402
from sidecar.notifier import Notifier  # noqa: E402
from sidecar.scheduler.service import SchedulerService  # noqa: E402
from sidecar.scheduler.store import SqliteJobStore  # noqa: E402
from sidecar.store.database import Database  # noqa: E402
from sidecar.toolsource import ToolCall, ToolInfo, ToolRegistry, ToolResult  # noqa: E402


class Stamp:
    prefix = "bench"

    def __init__(self) -> None:
        self.lateness_ms: list[float] = []

    async def list_tools(self) -> list[ToolInfo]:
        return [ToolInfo("bench__stamp", "", {"type": "object"})]

    async def call(self, name: str, arguments: dict[str, Any], call: ToolCall) -> ToolResult:
        self.lateness_ms.append((time.time() - call.extra["scheduledAt"]) * 1000)
        return ToolResult(None)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def fill(svc: SchedulerService, jobs: int) -> None:
    crons = ["0 3 * * *", "30 4 * * 1-5", "15 6 1 * *", "0 0 * * 0", "45 23 * * *"]
    for i in range(jobs):
        await svc.create(p.JobParams(name=f"job{i:05d}", schedule=p.ScheduleSpec(cron=crons[i % len(crons)]),
                                     timezone=("Europe/Berlin", "America/New_York", "UTC")[i % 3],
                                     target=p.ToolTarget(name="bench__stamp")))


async def in_process(db_path: Path, jobs: int, fires: int) -> None:
    db = Database(db_path)
    db.open()
    stamp = Stamp()
    tools = ToolRegistry()
    tools.add(stamp)
    svc = SchedulerService(SqliteJobStore(db), Notifier(), tools=tools)
    started = time.perf_counter()
    await fill(svc, jobs - fires)
    print(f"created {jobs - fires} far-off jobs in {time.perf_counter() - started:.1f} s")

    samples = []
    for _ in range(200):
        t0 = time.perf_counter()
        await svc.store.next_wake()
        samples.append((time.perf_counter() - t0) * 1000)
    print(f"next due instant among {jobs - fires} jobs (store.next_wake): p50 {pct(samples, .5):.3f} ms, "
          f"p99 {pct(samples, .99):.3f} ms")
    samples = []
    now = time.time()
    for _ in range(200):
        t0 = time.perf_counter()
        await svc.store.fire_due(now, svc._plan)  # nothing due: the indexed lookup of due jobs
        samples.append((time.perf_counter() - t0) * 1000)
    print(f"due-job lookup (fire_due, none due): p50 {pct(samples, .5):.3f} ms, p99 {pct(samples, .99):.3f} ms")

    async with svc.running():
        base = datetime.now(UTC) + timedelta(seconds=3)
        for i in range(fires):  # one-shot jobs spread over 10 s, among the others
            at = base + timedelta(milliseconds=i * 10_000 / fires)
            await svc.create(p.JobParams(name=f"fire{i}", schedule=p.ScheduleSpec(at=at.isoformat()),
                                         target=p.ToolTarget(name="bench__stamp")))
        with anyio.fail_after(60):
            while len(stamp.lateness_ms) < fires:
                await anyio.sleep(0.1)
        await svc.wait_idle()
    late = stamp.lateness_ms
    print(f"firing lateness over {len(late)} runs among {jobs} jobs: p50 {statistics.median(late):.1f} ms, "
          f"p99 {pct(late, .99):.1f} ms, max {max(late):.1f} ms (target < 50 ms)")
    db.close()


def idle_cpu(data_dir: Path, seconds: float) -> None:
    import psutil

    env = {**os.environ, "SCHEDULER_TEST_LOG": str(data_dir / "work.log"), "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-c", "from tests.test_scheduler_team import serve; serve()", "--data-dir",
            str(data_dir), "--secrets-backend", "file"]
    from sidecar.client import DaemonClient

    client = DaemonClient(argv, env=env, stderr=subprocess.DEVNULL)
    try:
        client.initialize("bench")
        count = len(client.request("scheduler/jobs/list", {})["jobs"])
        proc = psutil.Process(client.proc.pid)
        time.sleep(2)  # start-up settles
        before = proc.cpu_times()
        time.sleep(seconds)
        after = proc.cpu_times()
        used = (after.user - before.user) + (after.system - before.system)
        print(f"daemon idle with {count} jobs: {used * 1000:.0f} ms CPU in {seconds:.0f} s = "
              f"{100 * used / seconds:.3f} % of a core (target < 1 %)")
    finally:
        client.close(timeout=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--fires", type=int, default=200)
    parser.add_argument("--idle-seconds", type=float, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        anyio.run(in_process, data / "sidecar.db", args.jobs, args.fires)
        idle_cpu(data, args.idle_seconds)


if __name__ == "__main__":
    main()
