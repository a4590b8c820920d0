"""chat: LLM providers (Anthropic, OpenAI-compatible, Ollama) over one shared httpx client,
chat turns with tools, usage and audit, MCP servers and built-in tools as tool sources.

The lifespan owns the `httpx.AsyncClient` (imported and made there, not at start-up import
time) and a task group for the MCP servers. Agents and projects are looked up when used
(`platform.find`), so chat works, without an agent or persistence, in a build without them.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio

from sidecar.capability import Capability, Platform
from sidecar.errors import Unavailable
from sidecar.http import SharedHttp
from sidecar.llm import handlers
from sidecar.llm.builtin import BuiltinTools
from sidecar.llm.chat import ChatService
from sidecar.llm.mcp import McpManager
from sidecar.llm.service import ProvidersService, UsageService
from sidecar.llm.store import LlmStore
from sidecar.server.router import Router
from sidecar.settings.registry import SettingDef

if TYPE_CHECKING:
    import httpx

    from sidecar.agents.service import AgentsService
    from sidecar.projects.service import ProjectsService
    from sidecar.secrets.service import SecretService

log = logging.getLogger("sidecar.llm")


def _find(platform: Platform, module: str, name: str) -> Any:
    """A service of another capability if this build has it (its module may not exist yet)."""
    import importlib

    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None
    return platform.find(cls)


class ChatCapability(Capability):
    name = "chat"
    settings = (
        SettingDef("llm.defaultProvider", "string", "", "The provider chat/send uses when none is given.",
                   max_length=64),
        SettingDef("llm.connectTimeoutSeconds", "float", 10.0, "Seconds to connect to a provider.",
                   minimum=0.1, maximum=600),
        SettingDef("llm.readTimeoutSeconds", "float", 300.0,
                   "Seconds a provider may stay silent mid-answer before the call fails.", minimum=1, maximum=3600),
        SettingDef("llm.maxRetries", "int", 2, "Retries of a provider call that failed before any output.",
                   minimum=0, maximum=10),
        SettingDef("llm.retryBaseMs", "int", 500, "First retry delay (doubled each retry, with jitter).",
                   minimum=1, maximum=60_000),
        SettingDef("llm.retryMaxMs", "int", 20_000, "Longest backoff delay between retries.",
                   minimum=1, maximum=600_000),
        SettingDef("llm.retryMaxWaitSeconds", "float", 60.0,
                   "A provider's retry-after longer than this is not waited for: the error is answered.",
                   minimum=0, maximum=3600),
        SettingDef("llm.maxToolRounds", "int", 8, "Tool rounds one chat/send may run.", minimum=0, maximum=100),
        SettingDef("llm.toolTimeoutSeconds", "float", 120.0, "Seconds one tool call may take.",
                   minimum=0.1, maximum=3600),
        SettingDef("llm.contextReserveTokens", "int", 1024,
                   "Tokens kept free besides the answer when fitting history into the context window.",
                   minimum=0, maximum=1_000_000),
        SettingDef("llm.checkpointMs", "int", 1000,
                   "How often a streaming reply is saved (0: only when it ends).", minimum=0, maximum=600_000),
        SettingDef("llm.audit.enabled", "bool", True, "Keep prompts, responses and tool calls of provider calls."),
        SettingDef("llm.audit.retentionDays", "int", 30, "Days audit entries are kept (0: forever).",
                   minimum=0, maximum=36_500),
        SettingDef("llm.prices", "list", (),
                   "Prices per million tokens as model=input/output (claude-sonnet-4-5=3/15); a model id "
                   "starting with a listed one takes its price.", max_items=500, max_length=200),
    )

    def __init__(self, platform: Platform) -> None:
        super().__init__(platform)
        # made on first use, not at start-up (httpx and its SSL context cost ~65 ms)
        self._http = SharedHttp(timeout=None)
        self._serving = False
        self.store = LlmStore(platform.db)

        def secrets() -> SecretService | None:
            return _find(platform, "sidecar.secrets.service", "SecretService")

        def agents() -> AgentsService | None:
            return _find(platform, "sidecar.agents.service", "AgentsService")

        def projects() -> ProjectsService | None:
            return _find(platform, "sidecar.projects.service", "ProjectsService")

        self.providers = ProvidersService(self.store, platform.settings, secrets, self.client)
        self.usage = UsageService(self.store, platform.settings)
        self.chat = ChatService(self.providers, self.usage, platform.settings, platform.tools, agents, projects)
        self.mcp = McpManager(self.store, platform.tools)
        self.builtin = BuiltinTools(projects)
        platform.tools.add(self.builtin)
        platform.provide(self.chat)
        platform.provide(self.providers)
        platform.settings.subscribe(self._setting_changed)

    async def client(self) -> httpx.AsyncClient:
        if not self._serving:
            raise Unavailable("providers can be called only while the daemon serves")
        first = not self._http.started
        client = await self._http.client()
        if first:
            client.timeout = self._timeout()
        return client

    def _timeout(self) -> httpx.Timeout:
        import httpx

        value = self.platform.settings.value
        return httpx.Timeout(connect=value("llm.connectTimeoutSeconds"), read=value("llm.readTimeoutSeconds"),
                             write=30.0, pool=30.0)

    def _setting_changed(self, key: str, value: Any, previous: Any) -> None:
        client = self._http.current
        if key in ("llm.connectTimeoutSeconds", "llm.readTimeoutSeconds") and client is not None:
            client.timeout = self._timeout()

    def register(self, router: Router) -> None:
        handlers.register(router, self)

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        self._serving = True
        try:
            async with anyio.create_task_group() as tg:
                await self.mcp.start(tg)
                try:
                    yield
                finally:
                    self.mcp.stop_all()
                    tg.cancel_scope.cancel()
        finally:
            self._serving = False
            await self._http.aclose()
