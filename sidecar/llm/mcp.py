"""MCP servers as tool sources: each configured server is a `ToolSource` with its id as prefix
(`<id>__<tool>`), run over stdio with the official `mcp` SDK's `ClientSession`.

The process is started with the platform's child-process helper (`sidecar.children`: dies with
the daemon, stderr drained, always reaped), and its pipes are bridged to the SDK's in-memory
streams here (the SDK's own `stdio_client` would spawn it with `anyio.open_process`, outside
the helper). A server starts on first use, in the capability's task group, and stays up; one
that dies is marked failed and started again on the next use. `mcp` is imported lazily.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from protocol import llm as p
from sidecar import children
from sidecar.errors import InvalidValue, NotFound, Unavailable
from sidecar.llm.store import LlmStore, McpServerRow
from sidecar.toolsource import SEPARATOR, ToolCall, ToolInfo, ToolRegistry, ToolResult

if TYPE_CHECKING:
    from mcp import ClientSession

log = logging.getLogger("sidecar.llm.mcp")

START_TIMEOUT = 20.0
RESULT_MAX_CHARS = 100_000


@asynccontextmanager
async def open_session(row: McpServerRow) -> AsyncIterator[tuple[ClientSession, Any, Any]]:
    """(session, initialize result, list_tools result) of a freshly started server."""
    import mcp_types
    from mcp import ClientSession
    from mcp.shared.message import SessionMessage

    argv = [row.command, *json.loads(row.args)]
    env = json.loads(row.env)
    in_send, in_receive = anyio.create_memory_object_stream[Any](16)
    out_send, out_receive = anyio.create_memory_object_stream[Any](16)
    async with children.open(argv, env=env or None, cwd=row.cwd, name=f"mcp:{row.id}") as child:

        async def pump_in() -> None:  # server stdout -> session
            async with in_send:
                async for line in child.lines():
                    try:
                        message = mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False)
                    except Exception as exc:  # noqa: BLE001 - the SDK takes parse failures as items
                        await in_send.send(exc)
                        continue
                    await in_send.send(SessionMessage(message))
            log.info("MCP server %s closed its output", row.id)

        async def pump_out() -> None:  # session -> server stdin
            async with out_receive:
                async for item in out_receive:
                    data = item.message.model_dump_json(by_alias=True, exclude_unset=True)
                    await child.send_line(data.encode())

        async with anyio.create_task_group() as tg:
            tg.start_soon(pump_in)
            tg.start_soon(pump_out)
            async with ClientSession(in_receive, out_send) as session:
                with anyio.fail_after(START_TIMEOUT):
                    init = await session.initialize()
                    tools = await session.list_tools()
                yield session, init, tools
            tg.cancel_scope.cancel()


class McpServerSource:
    """One server's tools. `call` raises Unavailable when the server cannot be reached (the chat
    loop feeds that back to the model as a tool error)."""

    def __init__(self, row: McpServerRow, manager: McpManager) -> None:
        self.row = row
        self.prefix = row.id
        self.manager = manager
        self.state = "stopped"
        self.error: str | None = None
        self.session: ClientSession | None = None
        self.tools: list[ToolInfo] = []
        self._ready: anyio.Event | None = None
        self._stop = anyio.Event()
        self._lock = anyio.Lock()

    async def _ensure(self) -> ClientSession:
        async with self._lock:
            if self.session is None:
                ready = self._ready = anyio.Event()
                self._stop = anyio.Event()
                self.manager.spawn(self)
                with anyio.fail_after(START_TIMEOUT + 5):
                    await ready.wait()
            if self.session is None:
                raise Unavailable(f"MCP server {self.row.id} is not running: {self.error or 'it stopped'}",
                                  server=self.row.id)
            return self.session

    async def run(self) -> None:
        """The server's life, in the manager's task group."""
        try:
            async with open_session(self.row) as (session, _init, listed):
                self.tools = [ToolInfo(f"{self.prefix}{SEPARATOR}{t.name}", t.description or "",
                                       dict(t.input_schema or {"type": "object"})) for t in listed.tools]
                self.session = session
                self.state, self.error = "running", None
                if self._ready is not None:
                    self._ready.set()
                await self._stop.wait()
        except Exception as exc:  # noqa: BLE001 - a failing server must not take the daemon down
            self.state, self.error = "failed", _describe(exc)
            log.warning("MCP server %s failed: %s", self.row.id, self.error)
        finally:
            self.session = None
            if self.state == "running":
                self.state = "stopped"
            if self._ready is not None:
                self._ready.set()

    def stop(self) -> None:
        self._stop.set()

    async def list_tools(self) -> list[ToolInfo]:
        if not self.row.enabled:
            return []
        try:
            await self._ensure()
        except (Unavailable, TimeoutError) as exc:
            log.warning("MCP server %s: no tools (%s)", self.row.id, exc)
            return []
        return list(self.tools)

    async def call(self, name: str, arguments: dict[str, Any], call: ToolCall) -> ToolResult:
        session = await self._ensure()
        tool = name[len(self.prefix) + len(SEPARATOR):]
        try:
            result = await session.call_tool(tool, arguments)
        except Exception as exc:  # noqa: BLE001 - e.g. the server died mid-call (connection closed)
            self.stop()
            raise Unavailable(f"MCP server {self.row.id} failed during {tool}: {_describe(exc)}",
                              server=self.row.id) from None
        texts = []
        for item in getattr(result, "content", None) or ():
            text = getattr(item, "text", None)
            texts.append(text if text is not None else item.model_dump_json(exclude_none=True))
        content: Any = "\n".join(texts)
        structured = getattr(result, "structured_content", None)
        if not content and structured is not None:
            content = structured
        if isinstance(content, str) and len(content) > RESULT_MAX_CHARS:
            content = content[:RESULT_MAX_CHARS]
        return ToolResult(content, is_error=bool(getattr(result, "is_error", False)))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return _describe(exc.exceptions[0])
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


class McpManager:
    def __init__(self, store: LlmStore, registry: ToolRegistry) -> None:
        self.store = store
        self.registry = registry
        self.sources: dict[str, McpServerSource] = {}
        self._tg: anyio.abc.TaskGroup | None = None

    def spawn(self, source: McpServerSource) -> None:
        if self._tg is None:
            raise Unavailable("MCP servers run only while the daemon serves")
        self._tg.start_soon(source.run, name=f"mcp server {source.row.id}")

    async def start(self, tg: anyio.abc.TaskGroup) -> None:
        """In the capability's lifespan: register every configured server (started on first use)."""
        self._tg = tg
        for row in await self.store.list_servers():
            self._add_source(row)

    def stop_all(self) -> None:
        for source in self.sources.values():
            source.stop()
        self._tg = None

    def _add_source(self, row: McpServerRow) -> None:
        old = self.sources.pop(row.id, None)
        if old is not None:
            old.stop()
            self.registry.remove(row.id)
        source = McpServerSource(row, self)
        self.sources[row.id] = source
        try:
            self.registry.add(source)
        except ValueError:
            del self.sources[row.id]
            raise InvalidValue(f"the tool prefix {row.id!r} is taken by another tool source", "$.params.id") from None

    async def add(self, params: p.McpServerAddParams) -> p.McpServer:
        if params.id in self.registry._sources and params.id not in self.sources:
            raise InvalidValue(f"the tool prefix {params.id!r} is taken by another tool source", "$.params.id")
        row = await self.store.put_server({"id": params.id, "command": params.command, "args": json.dumps(params.args),
                                           "env": json.dumps(params.env), "cwd": params.cwd,
                                           "enabled": int(params.enabled)})
        self._add_source(row)
        return self._wire(row)

    async def list(self) -> list[p.McpServer]:
        return [self._wire(row) for row in await self.store.list_servers()]

    async def remove(self, server_id: str) -> None:
        if not await self.store.delete_server(server_id):
            raise NotFound(f"no MCP server {server_id!r}", id=server_id)
        source = self.sources.pop(server_id, None)
        if source is not None:
            source.stop()
            self.registry.remove(server_id)

    async def test(self, server_id: str) -> p.McpServerTestResult:
        row = await self.store.get_server(server_id)
        if row is None:
            raise NotFound(f"no MCP server {server_id!r}", id=server_id)
        started = time.perf_counter()
        try:
            async with open_session(row) as (_session, init, listed):
                ms = round((time.perf_counter() - started) * 1000, 3)
                info = getattr(init, "server_info", None)
                return p.McpServerTestResult(ok=True, latencyMs=ms, serverName=getattr(info, "name", None),
                                             tools=[p.McpToolInfo(f"{row.id}{SEPARATOR}{t.name}", t.description or "")
                                                    for t in listed.tools])
        except Exception as exc:  # noqa: BLE001 - the answer says what went wrong
            return p.McpServerTestResult(ok=False, latencyMs=round((time.perf_counter() - started) * 1000, 3),
                                         message=_describe(exc))

    def _wire(self, row: McpServerRow) -> p.McpServer:
        source = self.sources.get(row.id)
        return p.McpServer(id=row.id, command=row.command, args=json.loads(row.args), enabled=bool(row.enabled),
                           createdAt=row.created_at, envNames=sorted(json.loads(row.env)), cwd=row.cwd,
                           state=source.state if source else "stopped", error=source.error if source else None)

