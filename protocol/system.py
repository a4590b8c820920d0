"""system/*: liveness, health, metrics, process info, and a streaming probe."""

from __future__ import annotations

from typing import Annotated, Any

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
    prometheus: Annotated[bool, Meta(description="Also return the Prometheus text exposition form.")] = False


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
    #: log records dropped per destination because it could not keep up (stderr unread, ...)
    logRecordsDropped: dict[str, int] = {}
    #: requests answered resource_exhausted ("busy") because a bound was reached
    busyRefusals: int = 0


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

    count: Annotated[int, Meta(ge=0, le=10_000_000, description="How many chunks to send.")] = 10
    chunkBytes: Annotated[int, Meta(ge=0, le=1_048_576, description=(
        "Size of each chunk's data (ASCII: characters = bytes)."))] = 16
    intervalMs: Annotated[float, Meta(ge=0, le=3_600_000, description=(
        "Milliseconds to wait before each chunk: a slow request to test "
        "cancellation with, e.g. {\"count\": 100, \"intervalMs\": 1000}."))] = 0.0


class StreamChunk(StreamEvent):
    data: str


class StreamResult(msgspec.Struct):
    count: int
    bytes: int
    #: sha256 of the concatenated chunk data: lets a client check it saw every chunk
    sha256: str


STREAM_CHUNK = NotificationSpec("system/streamChunk", StreamChunk, "One chunk of system/stream.")

PING = MethodSpec("system/ping", Empty, PingResult, "Liveness: answers at once.")
HEALTH = MethodSpec("system/health", Empty, HealthResult,
                    "Database reachable, uptime, active and queued requests.")
METRICS = MethodSpec("system/metrics", MetricsParams, MetricsResult,
                     "Request and error counts and latency histograms per method.")
INFO = MethodSpec("system/info", Empty, InfoResult, "Versions, paths, process RSS and CPU.")
STREAM = MethodSpec("system/stream", StreamParams, StreamResult,
                    "Stream test chunks, then answer with their count and digest: exercises "
                    "a shell's streaming and cancellation plumbing.",
                    streams=(STREAM_CHUNK,))

METHODS = (PING, HEALTH, METRICS, INFO, STREAM)
NOTIFICATIONS = (STREAM_CHUNK,)


# ---- system/describe: what a method takes and answers, from these Structs -----------------

class DescribeParams(msgspec.Struct):
    method: Annotated[str, Meta(description="The method to describe, e.g. system/stream.")]


class FieldInfo(msgspec.Struct, omit_defaults=True):
    """One field of a params, result or notification object."""

    name: str
    type: Annotated[str, Meta(description=(
        'JSON type with bounds, e.g. "integer 0..100", "string | null", "array of Foo"; '
        "a capitalised name is an object type listed in `types`."))]
    required: bool
    default: Annotated[Any | msgspec.UnsetType, Meta(description=(
        "The value used when the field is left out; absent when there is none."))] = msgspec.UNSET
    description: str | None = None


class TypeInfo(msgspec.Struct, omit_defaults=True):
    """An object type a field refers to by name."""

    name: str
    fields: list[FieldInfo]
    description: str | None = None


class StreamInfo(msgspec.Struct, omit_defaults=True):
    """A notification the method sends while it runs."""

    name: str
    summary: str
    fields: list[FieldInfo]


class DescribeResult(msgspec.Struct, omit_defaults=True):
    name: str
    summary: str
    params: Annotated[list[FieldInfo], Meta(description="Fields of the params object (by name).")]
    resultType: Annotated[str, Meta(description=(
        'The result\'s type: an object type\'s name (its fields in `result`), or e.g. "null".'))]
    result: Annotated[list[FieldInfo], Meta(description="Fields of the result object; empty if it is not one.")]
    streams: list[StreamInfo] = []
    types: Annotated[list[TypeInfo], Meta(description=(
        "Object types that params, result or streams refer to by name, with their fields."))] = []
    lane: Annotated[str | None, Meta(description=(
        "Its ordering lane (README, \"Ordering\"); absent when it needs no order."))] = None
    longRunning: Annotated[bool, Meta(description="May run for long: send it with an id, so it can be cancelled.")] \
        = False


DESCRIBE = MethodSpec("system/describe", DescribeParams, DescribeResult,
                      "A method's params and result: fields, types, defaults and descriptions "
                      "(the same as protocol/schema/openrpc.json).")

METHODS = (*METHODS, DESCRIBE)
