"""The built-in tool source (`builtin__*`): the time, a project file, a conversation search —
enough for the tool loop to be useful before plugins and integrations bring their own."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sidecar.errors import NotFound, SidecarError
from sidecar.toolsource import ToolCall, ToolInfo, ToolResult

if TYPE_CHECKING:
    from sidecar.projects.service import ProjectsService

PREFIX = "builtin"
FILE_MAX_CHARS = 100_000

TOOLS = (
    ToolInfo("builtin__current_time", "The current date and time, in UTC or an IANA time zone.",
             {"type": "object", "properties": {"timezone": {
                 "type": "string", "description": "An IANA time zone such as Europe/Paris; default UTC."}}}),
    ToolInfo("builtin__project_file_read", "Read a text file of the current project.",
             {"type": "object", "properties": {
                 "path": {"type": "string", "description": "The file's path in the project, like src/main.py."},
                 "projectId": {"type": "string", "description": "Another project's id (default: the current one)."}},
              "required": ["path"]}),
    ToolInfo("builtin__conversation_search", "Search past conversations' messages by words.",
             {"type": "object", "properties": {
                 "query": {"type": "string"},
                 "limit": {"type": "integer", "minimum": 1, "maximum": 20}},
              "required": ["query"]}),
)


class BuiltinTools:
    prefix = PREFIX

    def __init__(self, projects: Callable[[], ProjectsService | None]) -> None:
        self._projects = projects

    async def list_tools(self) -> list[ToolInfo]:
        if self._projects() is None:
            return [TOOLS[0]]
        return list(TOOLS)

    async def call(self, name: str, arguments: dict[str, Any], call: ToolCall) -> ToolResult:
        if name == "builtin__current_time":
            return current_time(arguments.get("timezone"))
        projects = self._projects()
        if projects is None or name not in {t.name for t in TOOLS}:
            raise NotFound(f"no tool named {name}", tool=name)
        try:
            if name == "builtin__project_file_read":
                project_id = arguments.get("projectId") or call.extra.get("projectId")
                if not project_id:
                    return ToolResult("no project: this conversation is not in a project", is_error=True)
                path = arguments.get("path")
                if not isinstance(path, str) or not path:
                    return ToolResult("path is required", is_error=True)
                _row, text, data = await projects.get_file(str(project_id), path)
                if text is None:
                    return ToolResult(f"{path} is a binary file ({len(data or b'')} bytes)", is_error=True)
                if len(text) > FILE_MAX_CHARS:
                    return ToolResult(text[:FILE_MAX_CHARS] + f"\n[... cut at {FILE_MAX_CHARS} characters]")
                return ToolResult(text)
            query = arguments.get("query")
            if not isinstance(query, str) or not query.strip():
                return ToolResult("query is required", is_error=True)
            limit = arguments.get("limit", 5)
            limit = max(1, min(20, limit if isinstance(limit, int) else 5))
            page = await projects.search_messages(query, None, None, limit)
            hits = [{"conversationId": row[1], "title": row[2], "role": row[5], "at": row[6], "snippet": _snippet(row[7])}
                    for row in page.items]
            return ToolResult(hits)
        except SidecarError as exc:
            return ToolResult(exc.message, is_error=True)


def current_time(timezone: Any) -> ToolResult:
    zone: datetime.tzinfo = datetime.timezone.utc
    if timezone and timezone != "UTC":
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            zone = ZoneInfo(str(timezone))
        except (ZoneInfoNotFoundError, ValueError):
            return ToolResult(f"unknown time zone {timezone!r}", is_error=True)
    now = datetime.datetime.now(zone)
    return ToolResult({"iso": now.isoformat(timespec="seconds"), "timezone": str(timezone or "UTC"),
                       "weekday": now.strftime("%A"), "unix": int(now.timestamp())})


def _snippet(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:  # highlight parts
        return "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in value)
    except TypeError:
        return str(value)
