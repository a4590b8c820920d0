"""scheduler/*: the RPC edge of SchedulerService."""

from __future__ import annotations

from protocol import scheduler as p
from sidecar.scheduler.service import SchedulerService
from sidecar.server.context import RequestContext
from sidecar.server.router import Router


def register(router: Router, service: SchedulerService) -> None:
    @router.method(p.CREATE)
    async def create(ctx: RequestContext, params: p.JobParams) -> p.Job:
        return await service.create(params)

    @router.method(p.GET)
    async def get(ctx: RequestContext, params: p.IdParams) -> p.Job:
        return await service.get(params.id)

    @router.method(p.LIST)
    async def list_(ctx: RequestContext, params: p.ListParams) -> p.JobList:
        return p.JobList(await service.list(params.enabled))

    @router.method(p.UPDATE)
    async def update(ctx: RequestContext, params: p.UpdateParams) -> p.Job:
        return await service.update(params)

    @router.method(p.DELETE)
    async def delete(ctx: RequestContext, params: p.IdParams) -> p.DeleteResult:
        return p.DeleteResult(params.id, await service.delete(params.id))

    @router.method(p.PAUSE)
    async def pause(ctx: RequestContext, params: p.IdParams) -> p.Job:
        return await service.set_enabled(params.id, False)

    @router.method(p.RESUME)
    async def resume(ctx: RequestContext, params: p.IdParams) -> p.Job:
        return await service.set_enabled(params.id, True)

    @router.method(p.RUN_NOW)
    async def run_now(ctx: RequestContext, params: p.IdParams) -> p.Run:
        return await service.run_now(params.id)

    @router.method(p.PREVIEW)
    def preview(ctx: RequestContext, params: p.PreviewParams) -> p.PreviewResult:
        return p.PreviewResult(service.preview(params))

    @router.method(p.HISTORY)
    async def history(ctx: RequestContext, params: p.HistoryParams) -> p.HistoryResult:
        return p.HistoryResult(await service.history(params.jobId, params.limit))
