"""secrets/*: the RPC edge of SecretService. Values go in; only names come out."""

from __future__ import annotations

from protocol import secrets as p
from protocol.common import Empty
from sidecar.secrets.service import SecretInfo, SecretService
from sidecar.server.context import RequestContext
from sidecar.server.router import Router


def _meta(info: SecretInfo) -> p.SecretMeta:
    return p.SecretMeta(info.name, info.created_at, info.updated_at)


def register(router: Router, service: SecretService) -> None:
    @router.method(p.SET)
    async def set_(ctx: RequestContext, params: p.SecretSetParams) -> p.SecretMeta:
        return _meta(await service.set(params.name, params.value))

    @router.method(p.DELETE)
    async def delete(ctx: RequestContext, params: p.SecretNameParams) -> p.SecretDeleteResult:
        await service.delete(params.name)
        return p.SecretDeleteResult(params.name, True)

    @router.method(p.LIST)
    async def list_(ctx: RequestContext, params: Empty) -> p.SecretListResult:
        return p.SecretListResult([_meta(i) for i in await service.list()], await service.key_backend())
