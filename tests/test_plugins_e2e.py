"""plugins/* end to end: the real daemon as a subprocess (tests/conftest.py `daemon`), driven
over stdio JSON-RPC by `sidecar.client.DaemonClient`: install, grant, call, typed errors,
cancellation (-32800), audit, stats, logs, and the example plugins."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from sidecar.client import DaemonClient, RpcError
from tests.support.http_fixture import HttpFixtureServer, Response
from tests.test_plugins import make_plugin

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "plugins"


def _error(daemon: DaemonClient, method: str, params: Any) -> RpcError:
    with pytest.raises(RpcError) as err:
        daemon.request(method, params)
    return err.value


def test_install_grant_call_audit(daemon: DaemonClient, tmp_path: Path, http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("GET", "/hello", Response(200, {"content-type": "text/plain"}, [b"hi from the fixture"]))
    url = http_fixture.url_for("/hello")
    request = json.dumps({"url": url + "?key=s3cret"})
    origin = http_fixture.url
    src = make_plugin(tmp_path / "src", "http", REQUEST=request.replace('"', '\\"'), REQLEN=len(request),
                      extra=f'[permissions]\nhosts = ["{origin}"]')

    info = daemon.request("plugins/install", {"path": str(src)})
    assert info["id"] == "t" and info["securityLevel"] == "sandbox" and info["runtime"] == "wasm"
    assert info["requested"] == {"hosts": [origin]} and info["missing"] == {"hosts": [origin]}
    assert info["granted"] == {}

    # declared, not granted: permission_denied on the wire, nothing reaches the server, audited
    err = _error(daemon, "plugins/call", {"id": "t", "tool": "run", "input": {}})
    assert err.kind == "permission_denied"
    assert err.error["data"]["details"] == {"operation": "http_fetch", "target": url}
    assert http_fixture.requests == []

    info = daemon.request("plugins/grant", {"id": "t", "permissions": {"hosts": [origin]}})
    assert info["missing"] == {} and info["granted"] == {"hosts": [origin]}
    result = daemon.request("plugins/call", {"id": "t", "tool": "run", "input": {}})
    assert result["output"]["status"] == 200 and result["output"]["body"] == "hi from the fixture"
    assert result["fuelUsed"] > 0 and result["durationMs"] > 0
    assert http_fixture.requests[0].path.startswith("/hello")

    rows = daemon.request("plugins/audit", {"id": "t"})["rows"]
    assert [(r["operation"], r["target"], r["allowed"]) for r in rows] == [
        ("http_fetch", url, True), ("grant", f"host:{origin}", True), ("http_fetch", url, False),
        ("install", "1.0.0", True)]
    assert all("s3cret" not in json.dumps(r) for r in rows)
    since = rows[0]["time"]
    assert [r["operation"] for r in daemon.request("plugins/audit", {"since": since})["rows"]] == ["http_fetch"]

    stats = daemon.request("plugins/stats", {"id": "t"})["plugins"]
    assert [(s["id"], s["calls"], s["errors"]) for s in stats] == [("t", 2, 1)]

    # revoke: denied again; uninstall: gone, the audit trail stays
    daemon.request("plugins/revoke", {"id": "t"})
    assert _error(daemon, "plugins/call", {"id": "t", "tool": "run"}).kind == "permission_denied"
    assert daemon.request("plugins/uninstall", {"id": "t"}) == {"id": "t", "uninstalled": True}
    assert daemon.request("plugins/list") == {"plugins": []}
    assert _error(daemon, "plugins/get", {"id": "t"}).kind == "not_found"
    assert daemon.request("plugins/audit", {"id": "t", "limit": 1})["rows"][0]["operation"] == "uninstall"


def test_limits_and_traps_answer_typed_errors_and_the_daemon_keeps_serving(daemon: DaemonClient,
                                                                            tmp_path: Path) -> None:
    for wat, pid, extra in (("loop", "spin", "[limits]\nfuel = 100000"), ("trap", "boom", ""),
                            ("badjson", "garbled", ""), ("echo", "echo", "")):
        daemon.request("plugins/install", {"path": str(make_plugin(tmp_path / "s", wat, plugin_id=pid,
                                                                   extra=extra))})
    err = _error(daemon, "plugins/call", {"id": "spin", "tool": "run"})
    assert (err.code, err.kind) == (-32007, "resource_exhausted")
    assert err.error["data"]["details"] == {"limit": "fuel", "max": 100000, "used": 100000}
    err = _error(daemon, "plugins/call", {"id": "boom", "tool": "run"})
    assert (err.code, err.kind) == (-32006, "plugin_trap") and "unreachable" in err.error["data"]["details"]["trap"]
    err = _error(daemon, "plugins/call", {"id": "garbled", "tool": "run"})
    assert err.kind == "plugin_trap" and err.error["data"]["details"]["reason"] == "invalid_output"
    err = _error(daemon, "plugins/call", {"id": "echo", "tool": "nope"})
    assert err.kind == "not_found"
    assert daemon.request("plugins/call", {"id": "echo", "tool": "run", "input": {"a": [1]}})["output"] == {
        "tool": "run", "input": {"a": [1]}}
    assert daemon.request("system/ping") is not None


def test_cancel_request_stops_a_running_call(daemon: DaemonClient, tmp_path: Path) -> None:
    src = make_plugin(tmp_path / "src", "loop", extra="[limits]\ntimeoutMs = 60000\nfuel = 10000000000")
    daemon.request("plugins/install", {"path": str(src)})
    request_id = daemon.next_id()
    waiter = daemon.expect(request_id)
    daemon.send({"jsonrpc": "2.0", "id": request_id, "method": "plugins/call",
                 "params": {"id": "t", "tool": "run"}})
    time.sleep(0.3)
    # the loop is running in a worker thread: the daemon still answers others meanwhile
    started = time.monotonic()
    assert daemon.request("plugins/get", {"id": "t"}, timeout=2)["id"] == "t"
    assert time.monotonic() - started < 3.0  # blocked, it would wait for the 60 s call
    started = time.monotonic()
    daemon.notify("$/cancelRequest", {"id": request_id})
    answer = daemon.wait(request_id, waiter, timeout=5)
    assert time.monotonic() - started < 3.0  # not stopped, it would run for 60 s
    assert answer["error"]["code"] == -32800
    stats = daemon.request("plugins/stats", {"id": "t"})["plugins"][0]
    assert stats["calls"] == 1 and stats["errors"] == 1
    # the plugin still serves (a call that runs out of fuel quickly, not a hang)
    daemon.request("plugins/install", {"path": str(make_plugin(tmp_path / "src2", "echo", plugin_id="e"))})
    assert daemon.request("plugins/call", {"id": "e", "tool": "run"})["output"] == {"tool": "run", "input": {}}


def test_logs_and_a_persisted_install_survive_a_restart(spawn: Any, tmp_path: Path) -> None:
    daemon = spawn()
    daemon.request("plugins/install", {"path": str(make_plugin(tmp_path / "src", "logging"))})
    assert daemon.request("plugins/call", {"id": "t", "tool": "run"})["output"] == {"n": 1}
    entries = daemon.request("plugins/logs", {"id": "t"})["entries"]
    assert [(e["source"], e["message"]) for e in entries] == [
        ("guest", "hello from the guest"), ("stdout", "to stdout"), ("stderr", "to stderr")]
    daemon.request("plugins/disable", {"id": "t"})
    assert daemon.shutdown() == 0
    again = spawn()
    (info,) = again.request("plugins/list")["plugins"]
    assert info["id"] == "t" and info["enabled"] is False and "loadError" not in info
    assert again.request("plugins/enable", {"id": "t"})["enabled"] is True
    assert again.request("plugins/call", {"id": "t", "tool": "run"})["output"] == {"n": 1}


EXAMPLE_CALLS = [
    ("text-tools", "wordcount", {"text": "one two  three\nfour"}, {"words": 4, "lines": 2, "chars": 19}),
    ("text-tools", "slugify", {"text": "Hello, World! Ça va?"}, {"slug": "hello-world-a-va"}),
    ("json-query", "query", {"data": {"a": [{"b": 1}, {"b": "two"}]}, "path": ".a[].b"}, {"results": [1, "two"]}),
]


@pytest.mark.parametrize("example, tool, arguments, expected", EXAMPLE_CALLS)
def test_example_plugins_over_stdio(daemon: DaemonClient, example: str, tool: str, arguments: dict[str, Any],
                                    expected: Any) -> None:
    daemon.request("plugins/install", {"path": str(EXAMPLES / example)})
    result = daemon.request("plugins/call", {"id": example, "tool": tool, "input": arguments})
    assert result["output"] == expected
