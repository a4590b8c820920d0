"""Default matchers: which fields of a recorded server message differ from run to run.

The recorder adds these so a freshly recorded session replays as it is. Most are chosen by
the field's name (and the kind of value it holds), a few by the method that was answered.
Values that are determined by the script (counts of requests sent, stream digests, setting
values) stay exact: they are what a transcript is for.
"""

from __future__ import annotations

import re
from typing import Any

from sidecar.transcripts.matching import WILDCARD, Step, generalize, is_path, is_timestamp, parse_path

_DURATION_SUFFIXES = ("Ms", "Seconds", "Secs", "Sec")
_DURATION_PREFIXES = ("uptime", "latency", "duration", "elapsed")
_PATH_SUFFIXES = ("Path", "Dir", "Directory", "File")
_ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")

#: by method answered: paths in its result whose value depends on timing or on this build
_BY_METHOD: dict[str, dict[str, str]] = {
    "initialize": {
        # new methods appear as capabilities are added; the recorded ones must still be there
        "$.result.methods": "superset",
        "$.result.notifications": "superset",
        "$.result.capabilities.orderedMethods": "superset",
        "$.result.capabilities.lanes": "superset",
        "$.result.capabilities.protocolVersions": "superset",
        "$.result.serverInfo.version": "string",
    },
    # capabilities add settings of their own: the recorded ones must still be there, as they were
    "settings/list": {"$.result.settings": "superset"},
    "system/metrics": {
        # counters of a live process: they count this session but also depend on timing
        # (which histogram bucket a latency fell in) and on what the daemon counts
        "$.result.requests": "int",
        "$.result.errors": "int",
        "$.result.methods[*].count": "int",
        "$.result.methods[*].errors": "int",
        "$.result.methods[*].cancelled": "int",
        "$.result.methods[*].buckets[*].count": "int",
        "$.result.prometheus": "string",
    },
    "system/health": {
        "$.result.status": "string",
        "$.result.activeRequests": "int",
        "$.result.queuedRequests": "int",
        "$.result.db.schemaVersion": "int",
    },
}


def field_matcher(name: str, value: Any) -> str | None:
    """The matcher for a member called `name` holding `value`, if it is a volatile one."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(value, str) and (name.endswith("At") or name in ("timestamp", "time")) and is_timestamp(value):
        return "timestamp"
    if isinstance(value, str) and _ISO_DATETIME.match(value) and is_timestamp(value):
        return "timestamp"
    if number and (name.endswith(_DURATION_SUFFIXES) or name.startswith(_DURATION_PREFIXES)
                   or name in ("slept", "elapsed")):
        return "number"
    if name == "pid" or name.endswith("Pid"):
        return "int" if number else None
    lowered = name.lower()
    if number and ("rss" in lowered or "memory" in lowered):
        return "int"
    if number and lowered.startswith("cpu"):
        return "number"
    if number and name == "threads":
        return "int"
    if isinstance(value, str) and (name.endswith(_PATH_SUFFIXES) or name == "cwd") and is_path(value):
        return "path"
    if name == "incidentId" and isinstance(value, str):
        return "string"
    if name == "schemaVersion" and number:
        return "int"
    return None


def default_matchers(message: Any, method: str | None = None) -> dict[str, str]:
    """Matchers for the volatile fields of one server message.

    `method` is the method this message answers, when it is a response the recorder could
    pair with its request."""
    found: dict[str, str] = {}
    _walk(message, [], found)
    for path, spec in _BY_METHOD.get(method or "", {}).items():
        if _exists(message, path):
            found.setdefault(path, spec)
    _incident_in_text(message, found)
    return found


def _walk(value: Any, steps: list[Step], found: dict[str, str]) -> None:
    if isinstance(value, dict):
        for key, child in value.items():
            steps.append(key)
            spec = field_matcher(key, child) if isinstance(key, str) else None
            if key == "versions" and isinstance(child, dict):
                # library versions change with every upgrade; the protocol's does not
                for name, version in child.items():
                    if name != "protocol" and isinstance(version, str):
                        found.setdefault(generalize([*steps, name]), "string")
            elif spec is not None:
                found.setdefault(generalize(steps), spec)
            else:
                _walk(child, steps, found)
            steps.pop()
    elif isinstance(value, list):
        for i, child in enumerate(value):
            steps.append(i)
            _walk(child, steps, found)
            steps.pop()


def _exists(message: Any, path: str) -> bool:
    nodes = [message]
    for step in parse_path(path):
        nxt = []
        for node in nodes:
            if step is WILDCARD:
                nxt += list(node.values()) if isinstance(node, dict) else node if isinstance(node, list) else []
            elif isinstance(node, dict) and step in node:
                nxt.append(node[step])
            elif isinstance(node, list) and isinstance(step, int) and step < len(node):
                nxt.append(node[step])
        nodes = nxt
    return bool(nodes)


def _incident_in_text(message: Any, found: dict[str, str], prefix: str = "$") -> None:
    """An error message that quotes the incident id: match it with the id left open."""
    if isinstance(message, list) and prefix == "$":
        for element in message:  # a batch: its elements arrive in any order
            _incident_in_text(element, found, "$[*]")
        return
    if not isinstance(message, dict) or not isinstance(message.get("error"), dict):
        return
    error = message["error"]
    data = error.get("data")
    incident = data.get("incidentId") if isinstance(data, dict) else None
    text = error.get("message")
    if isinstance(incident, str) and incident and isinstance(text, str) and incident in text:
        pattern = "[A-Za-z0-9_-]+".join(_escape(part) for part in text.split(incident))
        found.setdefault(f"{prefix}.error.message", f"regex:^{pattern}$")


def _escape(text: str) -> str:
    """re.escape, but leaving spaces alone so the pattern stays readable in the file."""
    return re.sub(r"([.^$*+?{}\[\]\\|()])", r"\\\1", text)
