"""system/*: the RPC edge of SystemService and Metrics."""

from __future__ import annotations

from protocol import system as p
from sidecar import logs
from protocol.common import Empty
from sidecar.server.context import RequestContext
from sidecar.server.router import Router
from sidecar.system.metrics import Metrics
from sidecar.system.service import SystemService, run_stream

_INF_WIRE = 1e308  # JSON has no infinity


def register(router: Router, service: SystemService, metrics: Metrics) -> None:
    @router.method(p.PING, inline=True)
    def ping(ctx: RequestContext, params: Empty) -> p.PingResult:
        return p.PingResult()

    @router.method(p.HEALTH)
    async def health(ctx: RequestContext, params: Empty) -> p.HealthResult:
        db = await service.db_health()
        session = ctx.session
        # this health request is running too; the caller asks about the others
        return p.HealthResult(
            status="ok" if db.ok else "degraded", uptimeSeconds=service.uptime(),
            activeRequests=max(0, session.running - 1), queuedRequests=max(0, session.pending - session.running),
            db=db,
        )

    @router.method(p.METRICS, inline=True)
    def metrics_(ctx: RequestContext, params: p.MetricsParams) -> p.MetricsResult:
        requests, errors = metrics.totals()
        methods = []
        for name, s in sorted(metrics.methods.items()):
            buckets = [p.LatencyBucket(min(bound, _INF_WIRE), n) for bound, n in s.cumulative()]
            methods.append(p.MethodMetrics(
                method=name, count=s.count, errors=s.errors, cancelled=s.cancelled,
                latencySumMs=s.sum_ms, p50Ms=min(s.quantile(0.5), _INF_WIRE),
                p99Ms=min(s.quantile(0.99), _INF_WIRE), buckets=buckets))
        return p.MetricsResult(
            uptimeSeconds=service.uptime(), requests=requests, errors=errors, methods=methods,
            prometheus=metrics.prometheus() if params.prometheus else None,
            logRecordsDropped=logs.dropped(), busyRefusals=ctx.session.refused_busy)

    @router.method(p.INFO)
    def info(ctx: RequestContext, params: Empty) -> p.InfoResult:
        return service.info()

    @router.method(p.STREAM)
    async def stream(ctx: RequestContext, params: p.StreamParams) -> p.StreamResult:
        return await run_stream(params, ctx.stream(p.STREAM_CHUNK).send)

    @router.method(p.DESCRIBE)
    def describe_(ctx: RequestContext, params: p.DescribeParams) -> p.DescribeResult:
        from protocol.describe import UnknownMethod, describe
        from sidecar.errors import NotFound

        try:
            return describe(params.method)
        except UnknownMethod as exc:
            raise NotFound(str(exc), method=exc.name, suggestions=exc.suggestions) from None
