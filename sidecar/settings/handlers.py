"""settings/*: the RPC edge of SettingsService."""

from __future__ import annotations

from protocol import settings as p
from protocol.common import Empty
from sidecar.server.context import RequestContext
from sidecar.server.router import Router
from sidecar.settings.service import SettingsService


def _view(service: SettingsService, key: str) -> p.Setting:
    d = service.definition(key)
    return p.Setting(
        key=key, value=service.value(key), default=d.default, type=d.type, description=d.description,
        isDefault=service.is_default(key), choices=list(d.choices) if d.choices else None,
        minimum=d.minimum, maximum=d.maximum,
    )


async def _announced(ctx: RequestContext, service: SettingsService, key: str, previous: object) -> p.Setting:
    """The setting as it is now, after telling the shell if it changed."""
    view = _view(service, key)
    if view.value != previous:
        await ctx.broadcast(p.CHANGED, p.SettingChanged(key, view.value, previous))
    return view


def register(router: Router, service: SettingsService) -> None:
    @router.method(p.GET, ordered=True)
    async def get(ctx: RequestContext, params: p.SettingsGetParams) -> p.Setting:
        return _view(service, params.key)

    @router.method(p.SET, ordered=True)
    async def set_(ctx: RequestContext, params: p.SettingsSetParams) -> p.Setting:
        return await _announced(ctx, service, params.key, await service.set(params.key, params.value))

    @router.method(p.RESET, ordered=True)
    async def reset(ctx: RequestContext, params: p.SettingsResetParams) -> p.Setting:
        return await _announced(ctx, service, params.key, await service.reset(params.key))

    @router.method(p.LIST, ordered=True)
    async def list_(ctx: RequestContext, params: Empty) -> p.SettingsListResult:
        return p.SettingsListResult([_view(service, key) for key in sorted(service.definitions)])
