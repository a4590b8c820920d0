"""settings/*: the RPC edge of SettingsService (decode, call, encode; the service announces
changes itself)."""

from __future__ import annotations

from typing import Any

from protocol import settings as p
from protocol.common import Empty
from sidecar.server.context import RequestContext
from sidecar.server.router import Router
from sidecar.settings.service import SettingsService, SettingView


def _wire(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def setting(view: SettingView) -> p.Setting:
    d = view.definition
    return p.Setting(
        key=view.key, value=_wire(view.value), default=_wire(d.default), type=d.type, description=d.description,
        isDefault=view.is_default, source=view.source, envVar=view.env_var,
        storedValue=_wire(view.stored) if view.shadowed_by else None, shadowedBy=view.shadowed_by,
        choices=list(d.choices) if d.choices else None, minimum=d.minimum, maximum=d.maximum,
        maxItems=d.max_items if d.type == "list" else None,
        maxLength=d.max_length if d.type in ("string", "list") else None,
    )


def register(router: Router, service: SettingsService) -> None:
    # async (not inline) so that each runs in its turn in the "settings" lane
    @router.method(p.GET)
    async def get(ctx: RequestContext, params: p.SettingsGetParams) -> p.Setting:
        return setting(service.view(params.key))

    @router.method(p.SET)
    async def set_(ctx: RequestContext, params: p.SettingsSetParams) -> p.Setting:
        return setting(await service.set(params.key, params.value))

    @router.method(p.RESET)
    async def reset(ctx: RequestContext, params: p.SettingsResetParams) -> p.Setting:
        return setting(await service.reset(params.key))

    @router.method(p.LIST)
    async def list_(ctx: RequestContext, params: Empty) -> p.SettingsListResult:
        return p.SettingsListResult([setting(view) for view in service.views()])

    @router.method(p.EXPORT)
    async def export(ctx: RequestContext, params: Empty) -> p.SettingsExportResult:
        return p.SettingsExportResult(service.export())

    @router.method(p.IMPORT)
    async def import_(ctx: RequestContext, params: p.SettingsImportParams) -> p.SettingsImportResult:
        return p.SettingsImportResult(await service.import_(params.settings, replace=params.replace))
