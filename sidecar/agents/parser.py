"""One agent file: YAML front matter (parsed by PyYAML's safe loader) and a Markdown body.

The layout is the one Claude Code subagents use:

    ---
    name: code-reviewer
    description: Reviews a diff ...
    tools: Read, Grep          # a list, or names separated by commas
    ---
    You are a senior code reviewer ...

`name` falls back to the file's stem; `description` is required; the known optional keys
are checked for their type; every other key is kept as written (`extra`).
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_FILE_BYTES = 256 * 1024

_LIST_KEYS = ("capabilities", "tools", "tags")
_TEXT_KEYS = ("category", "model", "version", "author")
_KNOWN = frozenset(("name", "description", *_LIST_KEYS, *_TEXT_KEYS))
_NAME = re.compile(r"^[^\s/\\][^/\\\x00-\x1f]{0,199}$")


@dataclass(frozen=True, slots=True)
class AgentDef:
    name: str
    description: str
    prompt: str
    path: str
    source: str  # "user" | "bundled"
    category: str = "general"
    capabilities: tuple[str, ...] = ()
    tools: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    model: str | None = None
    version: str | None = None
    author: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class AgentFileError(Exception):
    """The file cannot be an agent; `line` is 1-based where known."""

    def __init__(self, reason: str, line: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line


def _yaml_load(text: str) -> Any:
    import yaml  # lazily: the daemon starts without it

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader, the C one when built


def split_front_matter(text: str) -> tuple[str, str, int]:
    """(front matter, body, line of the body's first line); AgentFileError without front matter."""
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].rstrip("\r\n").rstrip() != "---":
        raise AgentFileError("no front matter: the file must start with a line '---'", 1)
    for i in range(1, len(lines)):
        if lines[i].rstrip("\r\n").rstrip() in ("---", "..."):
            return "".join(lines[1:i]), "".join(lines[i + 1:]), i + 2
    raise AgentFileError("the front matter is not closed by a line '---'", 1)


def parse_text(text: str, path: str, source: str, stem: str) -> AgentDef:
    front, body, _ = split_front_matter(text)
    try:
        meta = _yaml_load(front)
    except Exception as exc:  # noqa: BLE001 - any YAML error is a problem of this file
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 2 if mark is not None else None  # +1: 1-based, +1: the opening '---'
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise AgentFileError(f"invalid YAML in the front matter: {problem}", line) from None
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise AgentFileError("the front matter is not a mapping of keys to values", 2)
    name = meta.get("name", stem)
    if not isinstance(name, str) or not name.strip():
        raise AgentFileError("name must be a non-empty string", _key_line(front, "name"))
    name = name.strip()
    if _NAME.match(name) is None:
        raise AgentFileError("name must be at most 200 characters without slashes or control characters",
                             _key_line(front, "name"))
    description = meta.get("description")
    if description is None:
        raise AgentFileError("description is missing", 2)
    if not isinstance(description, str) or not description.strip():
        raise AgentFileError("description must be a non-empty string", _key_line(front, "description"))
    values: dict[str, Any] = {}
    for key in _LIST_KEYS:
        raw = meta.get(key)
        if raw is None:
            continue
        if isinstance(raw, str):  # Claude Code writes `tools: Read, Grep`
            raw = [part.strip() for part in raw.split(",")]
        if not isinstance(raw, list) or not all(isinstance(v, (str, int, float)) and not isinstance(v, bool)
                                                for v in raw):
            raise AgentFileError(f"{key} must be a list of strings", _key_line(front, key))
        values[key] = tuple(str(v).strip() for v in raw if str(v).strip())
    for key in _TEXT_KEYS:
        raw = meta.get(key)
        if raw is None:
            continue
        if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
            raise AgentFileError(f"{key} must be a string", _key_line(front, key))
        values[key] = str(raw).strip()
    extra = {str(k): _plain(v) for k, v in meta.items() if k not in _KNOWN}
    category = values.pop("category", "") or "general"
    return AgentDef(name=name, description=" ".join(description.split()), prompt=body.strip("\n"),
                    path=path, source=source, category=category.lower(), extra=extra, **values)


def parse_file(path: Path, source: str) -> AgentDef:
    """Read and parse one file; AgentFileError for anything that makes it unusable."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise AgentFileError(f"the file is {size} bytes, over the limit of {MAX_FILE_BYTES} (256 KiB)")
        data = path.read_bytes()
    except OSError as exc:
        raise AgentFileError(f"cannot read the file: {exc.strerror or type(exc).__name__}") from None
    if len(data) > MAX_FILE_BYTES:
        raise AgentFileError(f"the file is {len(data)} bytes, over the limit of {MAX_FILE_BYTES} (256 KiB)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise AgentFileError(f"not UTF-8 text (byte {exc.start})", line) from None
    return parse_text(text, str(path), source, path.stem)


def _key_line(front: str, key: str) -> int | None:
    """The file line where `key:` is written in the front matter, for problem reports."""
    pattern = re.compile(rf"^{re.escape(key)}\s*:", re.MULTILINE)
    match = pattern.search(front)
    return front.count("\n", 0, match.start()) + 2 if match else None


def _plain(value: Any) -> Any:
    """A YAML value as JSON can carry it (dates as ISO text, sets as lists)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
