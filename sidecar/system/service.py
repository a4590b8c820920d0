"""Health, process and version facts about the running daemon."""

from __future__ import annotations

import datetime as dt
import hashlib
import platform
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import apsw
import msgspec

from protocol import PROTOCOL_VERSION
from protocol import system as p
from sidecar import __version__
from sidecar.store import migrations
from sidecar.store.database import Database


@dataclass(frozen=True, slots=True)
class Paths:
    data_dir: Path
    database: Path
    log_file: Path


class SystemService:
    def __init__(self, db: Database, paths: Paths) -> None:
        self.db = db
        self.paths = paths
        self.started_at = dt.datetime.now(dt.timezone.utc)
        self._started = time.monotonic()
        # CPU use is reported since the previous system/info (or since start)
        self._cpu_mark = (self._started, time.process_time())

    def uptime(self) -> float:
        return time.monotonic() - self._started

    async def db_health(self) -> p.DbHealth:
        began = time.perf_counter()
        try:
            version = await self.db.read(migrations.user_version)
        except apsw.Error as exc:
            return p.DbHealth(False, -1, (time.perf_counter() - began) * 1000, type(exc).__name__)
        return p.DbHealth(True, version, (time.perf_counter() - began) * 1000)

    def _cpu_percent(self) -> float:
        now, cpu = time.monotonic(), time.process_time()
        then, cpu_then = self._cpu_mark
        self._cpu_mark = (now, cpu)
        return 100.0 * (cpu - cpu_then) / (now - then) if now > then else 0.0

    def info(self) -> p.InfoResult:
        import psutil  # on first use: it costs start-up time that initialize need not pay

        proc = psutil.Process()
        with proc.oneshot():
            cpu = proc.cpu_times()
            process = p.ProcessInfo(
                pid=proc.pid, parentPid=proc.ppid(), rssBytes=proc.memory_info().rss,
                cpuPercent=self._cpu_percent(), cpuUserSeconds=cpu.user, cpuSystemSeconds=cpu.system,
                threads=proc.num_threads(),
            )
        versions = p.Versions(
            sidecar=__version__, protocol=PROTOCOL_VERSION, python=platform.python_version(),
            sqlite=apsw.sqlite_lib_version(), apsw=apsw.apsw_version(), msgspec=msgspec.__version__,
            anyio=_version("anyio"), platform=f"{sys.platform}-{platform.machine()}",
        )
        return p.InfoResult(
            versions=versions, dataDir=str(self.paths.data_dir), databasePath=str(self.paths.database),
            logPath=str(self.paths.log_file), startedAt=self.started_at.isoformat().replace("+00:00", "Z"),
            uptimeSeconds=self.uptime(), process=process,
        )


def stream_chunks(count: int, size: int) -> Iterator[str]:
    """Deterministic test chunks: chunk i repeats "i." to `size` characters."""
    for i in range(count):
        unit = f"{i:x}."
        yield (unit * (size // len(unit) + 1))[:size]


async def run_stream(params: p.StreamParams,
                     send: Callable[[p.StreamChunk], Awaitable[None]]) -> p.StreamResult:
    digest = hashlib.sha256()
    total = 0
    for chunk in stream_chunks(params.count, params.chunkBytes):
        if params.intervalMs:
            await anyio.sleep(params.intervalMs / 1000)
        encoded = chunk.encode()
        digest.update(encoded)
        total += len(encoded)
        await send(p.StreamChunk(data=chunk))
    return p.StreamResult(params.count, total, digest.hexdigest())


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"
