"""plugins/*: the RPC edge of PluginService."""

from __future__ import annotations

from protocol import plugins as p
from protocol.common import Empty
from sidecar.plugins.service import PluginService
from sidecar.server.context import RequestContext
from sidecar.server.router import Router


def register(router: Router, service: PluginService) -> None:
    @router.method(p.LIST)
    async def list_(ctx: RequestContext, params: Empty) -> p.PluginList:
        return p.PluginList(service.list())

    @router.method(p.GET)
    async def get(ctx: RequestContext, params: p.IdParams) -> p.PluginInfo:
        return service.info(params.id)

    @router.method(p.INSTALL)
    async def install(ctx: RequestContext, params: p.InstallParams) -> p.PluginInfo:
        return await service.install(params.path)

    @router.method(p.UNINSTALL)
    async def uninstall(ctx: RequestContext, params: p.IdParams) -> p.UninstallResult:
        return p.UninstallResult(params.id, await service.uninstall(params.id))

    @router.method(p.ENABLE)
    async def enable(ctx: RequestContext, params: p.IdParams) -> p.PluginInfo:
        return await service.set_enabled(params.id, True)

    @router.method(p.DISABLE)
    async def disable(ctx: RequestContext, params: p.IdParams) -> p.PluginInfo:
        return await service.set_enabled(params.id, False)

    @router.method(p.GRANT)
    async def grant(ctx: RequestContext, params: p.GrantParams) -> p.PluginInfo:
        return await service.grant(params.id, params.permissions, params.trusted)

    @router.method(p.REVOKE)
    async def revoke(ctx: RequestContext, params: p.IdParams) -> p.PluginInfo:
        return await service.revoke(params.id)

    @router.method(p.CALL)
    async def call(ctx: RequestContext, params: p.CallParams) -> p.CallResult:
        return await service.call(params.id, params.tool, params.input)

    @router.method(p.LOGS)
    async def logs(ctx: RequestContext, params: p.LogsParams) -> p.LogsResult:
        return p.LogsResult(params.id, service.get_logs(params.id, params.limit))

    @router.method(p.STATS)
    async def stats(ctx: RequestContext, params: p.StatsParams) -> p.StatsResult:
        return p.StatsResult(service.get_stats(params.id))

    @router.method(p.AUDIT)
    async def audit(ctx: RequestContext, params: p.AuditParams) -> p.AuditResult:
        return p.AuditResult(await service.audit(params.id, params.since, params.limit))

    @router.method(p.RELOAD)
    async def reload(ctx: RequestContext, params: p.ReloadParams) -> p.ReloadResult:
        return p.ReloadResult(await service.reload(params.id))

    @router.method(p.CONFIGURE)
    async def configure(ctx: RequestContext, params: p.ConfigureParams) -> p.PluginInfo:
        await service.configure(params.id, params.values)
        return service.info(params.id)
