"""providers/*, chat/*, usage/*, audit/*, mcp/servers/*: the RPC edge of chat's services."""

from __future__ import annotations

from typing import TYPE_CHECKING

from protocol import llm as p
from protocol.common import Empty
from sidecar.server.context import RequestContext
from sidecar.server.router import Router

if TYPE_CHECKING:
    from sidecar.llm.capability import ChatCapability


def register(router: Router, cap: ChatCapability) -> None:
    providers, chat, usage, mcp = cap.providers, cap.chat, cap.usage, cap.mcp

    @router.method(p.PROVIDERS_CONFIGURE)
    async def configure(ctx: RequestContext, params: p.ProviderConfigureParams) -> p.Provider:
        return await providers.configure(params)

    @router.method(p.PROVIDERS_LIST)
    async def list_(ctx: RequestContext, params: Empty) -> p.ProviderListResult:
        return await providers.list()

    @router.method(p.PROVIDERS_GET)
    async def get(ctx: RequestContext, params: p.ProviderIdParams) -> p.Provider:
        return await providers.get(params.id)

    @router.method(p.PROVIDERS_DELETE)
    async def delete(ctx: RequestContext, params: p.ProviderIdParams) -> p.ProviderDeleteResult:
        await providers.delete(params.id)
        return p.ProviderDeleteResult(params.id)

    @router.method(p.PROVIDERS_TEST)
    async def test(ctx: RequestContext, params: p.ProviderIdParams) -> p.ProviderTestResult:
        return await providers.test(params.id)

    @router.method(p.PROVIDERS_MODELS)
    async def models(ctx: RequestContext, params: p.ProviderIdParams) -> p.ProviderModelsResult:
        return p.ProviderModelsResult(await providers.models(params.id))

    @router.method(p.PROVIDERS_DETECT)
    async def detect(ctx: RequestContext, params: p.ProviderDetectParams) -> p.ProviderDetectResult:
        return await providers.detect(params.baseUrl)

    @router.method(p.PROVIDERS_PULL)
    async def pull(ctx: RequestContext, params: p.ProviderPullParams) -> p.ProviderPullResult:
        return await providers.pull(params.id, params.model, ctx.stream(p.PULL_PROGRESS).send)

    @router.method(p.CHAT_SEND)
    async def send(ctx: RequestContext, params: p.ChatSendParams) -> p.ChatSendResult:
        return await chat.send(params, ctx.stream(p.DELTA).send)

    @router.method(p.USAGE_SUMMARY)
    async def summary(ctx: RequestContext, params: p.UsageSummaryParams) -> p.UsageSummaryResult:
        return await usage.summary(params)

    @router.method(p.AUDIT_LIST)
    async def audit_list(ctx: RequestContext, params: p.AuditListParams) -> p.AuditListResult:
        return await usage.list_audit(params)

    @router.method(p.AUDIT_GET)
    async def audit_get(ctx: RequestContext, params: p.AuditIdParams) -> p.AuditEntry:
        return await usage.get_audit(params.id)

    @router.method(p.MCP_ADD)
    async def mcp_add(ctx: RequestContext, params: p.McpServerAddParams) -> p.McpServer:
        return await mcp.add(params)

    @router.method(p.MCP_LIST)
    async def mcp_list(ctx: RequestContext, params: Empty) -> p.McpServerListResult:
        return p.McpServerListResult(await mcp.list())

    @router.method(p.MCP_REMOVE)
    async def mcp_remove(ctx: RequestContext, params: p.McpServerIdParams) -> p.McpServerRemoveResult:
        await mcp.remove(params.id)
        return p.McpServerRemoveResult(params.id)

    @router.method(p.MCP_TEST)
    async def mcp_test(ctx: RequestContext, params: p.McpServerIdParams) -> p.McpServerTestResult:
        return await mcp.test(params.id)
