"""Plugin tools for the chat tool loop and workflow steps: `plugin__<tool>`.

A tool name is `plugin__<tool>` when exactly one enabled plugin offers `<tool>`; when
several do, each is listed as `plugin__<id>_<tool>` (plugin ids have no `_`, so the split
is unambiguous). `plugin__<id>_<tool>` is accepted for any plugin tool, always.
"""

from __future__ import annotations

from typing import Any

import msgspec

from sidecar.errors import NotFound, SidecarError
from sidecar.plugins.service import PluginService
from sidecar.toolsource import SEPARATOR, ToolCall, ToolInfo, ToolResult

PREFIX = "plugin"


class PluginToolSource:
    prefix = PREFIX

    def __init__(self, service: PluginService) -> None:
        self.service = service

    def _names(self) -> dict[str, tuple[str, str, Any]]:
        tools = self.service.loaded_tools()
        counts: dict[str, int] = {}
        for _, tool in tools:
            counts[tool.name] = counts.get(tool.name, 0) + 1
        names: dict[str, tuple[str, str, Any]] = {}
        for pid, tool in tools:
            short = tool.name if counts[tool.name] == 1 else f"{pid}_{tool.name}"
            names[f"{PREFIX}{SEPARATOR}{short}"] = (pid, tool.name, tool)
        return names

    async def list_tools(self) -> list[ToolInfo]:
        return [ToolInfo(name, tool.description, tool.inputSchema) for name, (_, _, tool) in self._names().items()]

    def resolve(self, name: str) -> tuple[str, str]:
        found = self._names().get(name)
        if found is not None:
            return found[0], found[1]
        _, _, rest = name.partition(SEPARATOR)
        pid, sep, tool = rest.partition("_")
        if sep and any(p == pid and t.name == tool for p, t in self.service.loaded_tools()):
            return pid, tool
        raise NotFound(f"no tool named {name}", tool=name)

    async def call(self, name: str, arguments: dict[str, Any], call: ToolCall) -> ToolResult:
        pid, tool = self.resolve(name)
        try:
            result = await self.service.call(pid, tool, arguments)
        except SidecarError as exc:
            if exc.kind in ("plugin_trap", "resource_exhausted", "invalid_params"):
                # a model can see these and try again differently
                return ToolResult({"error": exc.message, "kind": exc.kind}, is_error=True)
            raise
        output = result.output
        is_error = isinstance(output, dict) and set(output) == {"error"}
        return ToolResult(msgspec.to_builtins(output), is_error=is_error)
