"""system/*: liveness, health, metrics, process info, and a streaming probe."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from protocol.common import Empty
from protocol.spec import MethodSpec, NotificationSpec
from protocol.streaming import StreamEvent


class PingResult(msgspec.Struct):
    pong: bool = True


class DbHealth(msgspec.Struct):
    ok: bool
    schemaVersion: int
    latencyMs: float
    error: str | None = None


class HealthResult(msgspec.Struct):
    status: str  # "ok" | "degraded"
    uptimeSeconds: float
    activeRequests: int
    queuedRequests: int
    db: DbHealth


class MetricsParams(msgspec.Struct):
    #: also return the Prometheus text exposition form
    prometheus: bool = False


class LatencyBucket(msgspec.Struct):
    le: float  # upper bound in milliseconds; the last bucket is +Inf (sent as 1e308)
    count: int  # cumulative, as Prometheus


class MethodMetrics(msgspec.Struct):
    method: str
    count: int
    errors: int
    cancelled: int
    latencySumMs: float
    p50Ms: float
    p99Ms: float
    buckets: list[LatencyBucket]


class MetricsResult(msgspec.Struct, omit_defaults=True):
    uptimeSeconds: float
    requests: int
    errors: int
    methods: list[MethodMetrics]
    prometheus: str | None = None


class Versions(msgspec.Struct):
    sidecar: str
    protocol: str
    python: str
    sqlite: str
    apsw: str
    msgspec: str
    anyio: str
    platform: str


class ProcessInfo(msgspec.Struct):
    pid: int
    parentPid: int
    rssBytes: int
    cpuPercent: float
    cpuUserSeconds: float
    cpuSystemSeconds: float
    threads: int


class InfoResult(msgspec.Struct):
    versions: Versions
    dataDir: str
    databasePath: str
    logPath: str
    startedAt: str
    uptimeSeconds: float
    process: ProcessInfo


class StreamParams(msgspec.Struct):
    """Emit `count` chunks of `chunkBytes` each, `intervalMs` apart, then answer."""

    count: Annotated[int, Meta(ge=0, le=10_000_000)] = 10
    chunkBytes: Annotated[int, Meta(ge=0, le=1_048_576)] = 16
    intervalMs: Annotated[float, Meta(ge=0, le=3_600_000)] = 0.0


class StreamChunk(StreamEvent):
    data: str


class StreamResult(msgspec.Struct):
    count: int
    bytes: int
    #: sha256 of the concatenated chunk data: lets a client check it saw every chunk
    sha256: str


PING = MethodSpec("system/ping", Empty, PingResult, "Liveness: answers at once.")
HEALTH = MethodSpec("system/health", Empty, HealthResult,
                    "Database reachable, uptime, active and queued requests.")
METRICS = MethodSpec("system/metrics", MetricsParams, MetricsResult,
                     "Request and error counts and latency histograms per method.")
INFO = MethodSpec("system/info", Empty, InfoResult, "Versions, paths, process RSS and CPU.")
STREAM = MethodSpec("system/stream", StreamParams, StreamResult,
                    "Stream test chunks, then answer with their count and digest: exercises "
                    "a shell's streaming and cancellation plumbing.",
                    streams=("system/streamChunk",))

STREAM_CHUNK = NotificationSpec("system/streamChunk", StreamChunk, "One chunk of system/stream.")

METHODS = (PING, HEALTH, METRICS, INFO, STREAM)
NOTIFICATIONS = (STREAM_CHUNK,)
