"""Tools that agents (the chat tool loop) and workflows can call, from any capability.

A `ToolSource` (plugins, MCP servers, integrations, built-ins) lists its tools with a JSON
Schema for their input and calls them. Tool names are namespaced by source:
`<prefix>__<tool>` (`plugin__wordcount`, `github__search`). The `ToolRegistry` gathers the
sources the capabilities register and routes a call to the right one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from sidecar.errors import NotFound

SEPARATOR = "__"


@dataclass(frozen=True, slots=True)
class ToolInfo:
    name: str  # full name, prefix included
    description: str
    input_schema: dict[str, Any]


@dataclass(slots=True)
class ToolResult:
    """What a tool returned: JSON-able `content`; `is_error` when the tool failed in a way
    the caller (a model) should see and may recover from."""

    content: Any
    is_error: bool = False


@dataclass(frozen=True, slots=True)
class ToolCall:
    """Who is calling: lets a source audit and scope the call. Cancellation is the caller's
    cancel scope: a source must let it through (no shielding around long waits)."""

    caller: str = "user"  # "user" | "agent:<name>" | "workflow:<id>" | "scheduler:<job>"
    extra: dict[str, Any] = field(default_factory=dict)


class ToolSource(Protocol):
    #: the namespace of this source's tools (`plugin`, `mcp_<server>`, `builtin`)
    prefix: str

    async def list_tools(self) -> list[ToolInfo]: ...

    async def call(self, name: str, arguments: dict[str, Any], call: ToolCall) -> ToolResult:
        """`name` is the full name. Raise a SidecarError for failures the user must see."""
        ...


class ToolRegistry:
    def __init__(self) -> None:
        self._sources: dict[str, ToolSource] = {}

    def add(self, source: ToolSource) -> None:
        if source.prefix in self._sources:
            raise ValueError(f"tool source {source.prefix} registered twice")
        self._sources[source.prefix] = source

    def remove(self, prefix: str) -> None:
        self._sources.pop(prefix, None)

    async def list_tools(self) -> list[ToolInfo]:
        tools: list[ToolInfo] = []
        for source in list(self._sources.values()):
            tools.extend(await source.list_tools())
        return tools

    def source_for(self, name: str) -> ToolSource:
        prefix, sep, _ = name.partition(SEPARATOR)
        source = self._sources.get(prefix) if sep else None
        if source is None:
            raise NotFound(f"no tool named {name}", tool=name)
        return source

    async def call(self, name: str, arguments: dict[str, Any], call: ToolCall | None = None) -> ToolResult:
        return await self.source_for(name).call(name, arguments, call or ToolCall())
