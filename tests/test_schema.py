"""The committed protocol/schema matches the Structs, and the daemon's answers match it."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from typing import Any

import jsonschema
import pytest

from protocol.catalog import METHODS, NOTIFICATIONS
from sidecar.client import DaemonClient
from tests.conftest import REPO

_spec = importlib.util.spec_from_file_location("gen_schema", REPO / "tools" / "gen_schema.py")
assert _spec and _spec.loader
gen_schema = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen_schema)


def test_committed_schema_is_generated_from_the_structs() -> None:
    report = gen_schema.differences()
    assert report == [], "run: python tools/gen_schema.py\n" + "\n".join(report[:50])


def test_check_mode_fails_when_the_schema_is_stale(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gen_schema, "SCHEMA_DIR", tmp_path)
    assert gen_schema.differences()  # nothing written there yet: every file differs
    for path, text in gen_schema.generate().items():
        path.write_text(text)
    assert gen_schema.differences() == []
    (tmp_path / "openrpc.json").write_text("{}\n")
    assert any("openrpc.json" in line for line in gen_schema.differences())


def test_openrpc_lists_every_method_and_notification() -> None:
    document = json.loads((REPO / "protocol" / "schema" / "openrpc.json").read_text())
    assert [m["name"] for m in document["methods"]] == [m.name for m in METHODS]
    assert [n["name"] for n in document["x-notifications"]] == [n.name for n in NOTIFICATIONS]


def test_check_command_exits_zero_on_a_clean_tree() -> None:
    done = subprocess.run([sys.executable, str(REPO / "tools" / "gen_schema.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# A few calls whose answers are validated against the published result schemas.
CALLS: list[tuple[str, dict[str, Any] | None]] = [
    ("system/ping", None),
    ("system/health", None),
    ("system/metrics", {"prometheus": True}),
    ("system/info", None),
    ("system/stream", {"count": 2}),
    ("settings/list", None),
    ("settings/get", {"key": "log.level"}),
    ("settings/set", {"key": "server.slowRequestMs", "value": 250}),
    ("secrets/set", {"name": "demo", "value": "hunter2"}),
    ("secrets/list", None),
    ("secrets/delete", {"name": "demo"}),
]


def test_answers_match_the_published_schemas(daemon: DaemonClient) -> None:
    document = json.loads((REPO / "protocol" / "schema" / "openrpc.json").read_text())
    results = {m["name"]: m["result"]["schema"] for m in document["methods"]}
    notifications = {n["name"]: n["params"] for n in document["x-notifications"]}
    components = document["components"]
    for method, params in CALLS:
        result = daemon.request(method, params)
        jsonschema.validate(result, {**results[method], "components": components})
    error = daemon.call("settings/get", {"key": "no.such"})
    jsonschema.validate(error, {"$ref": "#/components/schemas/ErrorResponse", "components": components})
    streamed = []
    while not daemon.notifications.empty():
        streamed.append(daemon.notifications.get_nowait())
    assert streamed, "system/stream sent no notifications"
    for note in streamed:
        jsonschema.validate(note["params"], {**notifications[note["method"]], "components": components})
