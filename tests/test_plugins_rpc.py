"""plugins/* over JSON-RPC: the real Session and router in process (tests/harness.py), with
the plugins capability added; cancellation answers -32800; typed errors on the wire; the
example plugins end to end, over RPC and as tools."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import anyio
import pytest

from tests.harness import RpcError, in_process
from tests.support.http_fixture import HttpFixtureServer, Response
from tests.test_plugins import make_plugin

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "plugins"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_install_grant_call_over_rpc(tmp_path: Path) -> None:
    src = make_plugin(tmp_path / "src", "echo", extra='[permissions]\nkvQuotaBytes = 64')
    async with in_process(tmp_path / "data") as daemon:
        info = await daemon.call("plugins/install", {"path": str(src)})
        assert info["id"] == "t" and info["missing"] == {"kvQuotaBytes": 64} and info["granted"] == {}
        info = await daemon.call("plugins/grant", {"id": "t", "permissions": {"kvQuotaBytes": 64}})
        assert info["missing"] == {} and info["granted"] == {"kvQuotaBytes": 64}
        result = await daemon.call("plugins/call", {"id": "t", "tool": "run", "input": {"q": "x"}})
        assert result["output"] == {"tool": "run", "input": {"q": "x"}}
        assert [p["id"] for p in (await daemon.call("plugins/list"))["plugins"]] == ["t"]
        stats = (await daemon.call("plugins/stats", {"id": "t"}))["plugins"][0]
        assert stats["calls"] == 1 and stats["errors"] == 0
        audit = (await daemon.call("plugins/audit", {"id": "t"}))["rows"]
        assert [r["operation"] for r in audit] == ["grant", "install"]
        with pytest.raises(RpcError) as err:
            await daemon.call("plugins/get", {"id": "nope"})
        assert err.value.kind == "not_found"


async def test_typed_errors_on_the_wire(tmp_path: Path) -> None:
    async with in_process(tmp_path / "data") as daemon:
        await daemon.call("plugins/install", {"path": str(make_plugin(tmp_path / "s", "loop", plugin_id="spin",
                                                                       extra="[limits]\nfuel = 100000"))})
        await daemon.call("plugins/install", {"path": str(make_plugin(tmp_path / "s", "trap", plugin_id="boom"))})
        with pytest.raises(RpcError) as err:
            await daemon.call("plugins/call", {"id": "spin", "tool": "run"})
        assert err.value.code == -32007 and err.value.kind == "resource_exhausted"
        assert err.value.error["data"]["details"] == {"limit": "fuel", "max": 100000, "used": 100000}
        with pytest.raises(RpcError) as err:
            await daemon.call("plugins/call", {"id": "boom", "tool": "run"})
        assert err.value.code == -32006 and "unreachable" in err.value.error["data"]["details"]["trap"]


async def test_a_settings_change_over_rpc_caps_the_next_call(tmp_path: Path) -> None:
    """settings/set reaches the cached call plans through the capability's subscription: the
    same plugin's next call runs under the new cap, with no reload."""
    async with in_process(tmp_path / "data") as daemon:
        await daemon.call("plugins/install", {"path": str(make_plugin(tmp_path / "s", "loop", plugin_id="spin",
                                                                       extra="[limits]\nfuel = 3000000"))})
        with pytest.raises(RpcError) as err:
            await daemon.call("plugins/call", {"id": "spin", "tool": "run"})
        assert err.value.error["data"]["details"]["max"] == 3_000_000  # the manifest's own fuel
        await daemon.call("settings/set", {"key": "plugins.maxFuel", "value": 1_000_000})
        with pytest.raises(RpcError) as err:
            await daemon.call("plugins/call", {"id": "spin", "tool": "run"})
        assert err.value.error["data"]["details"] == {"limit": "fuel", "max": 1_000_000, "used": 1_000_000}


async def test_cancel_request_stops_a_running_call_with_32800(tmp_path: Path) -> None:
    src = make_plugin(tmp_path / "src", "loop", extra="[limits]\ntimeoutMs = 60000\nfuel = 10000000000")
    async with in_process(tmp_path / "data") as daemon:
        await daemon.call("plugins/install", {"path": str(src)})
        daemon._next_id += 1
        request_id = daemon._next_id
        daemon._arrived[request_id] = arrived = anyio.Event()
        daemon.send({"jsonrpc": "2.0", "id": request_id, "method": "plugins/call",
                     "params": {"id": "t", "tool": "run"}})
        await anyio.sleep(0.3)
        started = time.monotonic()
        daemon.notify("$/cancelRequest", {"id": request_id})
        with anyio.fail_after(5):
            await arrived.wait()
        assert time.monotonic() - started < 3.0  # not stopped, it would run for 60 s
        answer = daemon._answers.pop(request_id)
        assert answer["error"]["code"] == -32800
        # the daemon and the plugin keep serving
        assert (await daemon.call("plugins/stats", {"id": "t"}))["plugins"][0]["calls"] == 1


@pytest.mark.parametrize("example, tool, arguments, expected", [
    ("text-tools", "wordcount", {"text": "one two  three\nfour"}, {"words": 4, "lines": 2, "chars": 19}),
    ("text-tools", "slugify", {"text": "Hello, World! Ça va?"}, {"slug": "hello-world-a-va"}),
    ("text-tools", "case", {"text": "make me loud", "to": "upper"}, {"text": "MAKE ME LOUD"}),
    ("json-query", "query", {"data": {"items": [{"name": "a", "n": 1}, {"name": "b"}]}, "path": ".items[].name"},
     {"results": ["a", "b"]}),
    ("json-query", "query", {"data": {"rows": [[1, 2], [3, 4]], "k v": {"x": True}}, "path": '.rows[-1][0]'},
     {"results": [3]}),
    ("json-query", "query", {"data": {"k v": {"x": None}, "o": {"p": 1, "q": "é"}}, "path": '.["k v"].x'},
     {"results": [None]}),
    ("json-query", "query", {"data": {"o": {"p": 1.5, "q": "é"}}, "path": ".o[]"}, {"results": [1.5, "é"]}),
    ("json-query", "query", {"data": [1, 2], "path": "."}, {"results": [[1, 2]]}),
    ("json-query", "query", {"data": [1], "path": ".a"}, {"error": "cannot index an array with \"a\""}),
    ("json-query", "query", {"data": {}, "path": "a["}, {"error": "a path starts with . or ["}),
])
async def test_example_plugins_end_to_end(tmp_path: Path, example: str, tool: str, arguments: dict,
                                          expected: dict) -> None:
    folder = EXAMPLES / example
    async with in_process(tmp_path / "data") as daemon:
        await daemon.call("plugins/install", {"path": str(folder)})
        result = await daemon.call("plugins/call", {"id": example, "tool": tool, "input": arguments})
        assert result["output"] == expected
        # and as a chat tool
        tools = await daemon.platform.tools.list_tools()
        assert f"plugin__{tool}" in [t.name for t in tools]
        called = await daemon.platform.tools.call(f"plugin__{tool}", arguments)
        assert called.content == expected
        # an output that is only {"error": ...} is a tool error to a model
        assert called.is_error == (set(expected) == {"error"})


async def test_fetch_cache_example_uses_kv_and_http_under_permissions(tmp_path: Path,
                                                                     http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("GET", "/data", Response(200, {"content-type": "application/json"}, [b'{"v":1}']))
    url = http_fixture.url_for("/data")
    async with in_process(tmp_path / "data") as daemon:
        info = await daemon.call("plugins/install", {"path": str(EXAMPLES / "fetch-cache")})
        assert info["missing"] == {"hosts": ["http://127.0.0.1:*"], "kvQuotaBytes": 1048576}
        # nothing granted: the first permissioned operation (the cache lookup) is denied
        with pytest.raises(RpcError) as err:
            await daemon.call("plugins/call", {"id": "fetch-cache", "tool": "fetch", "input": {"url": url}})
        assert err.value.kind == "permission_denied"
        # kv only: the fetch itself is denied and nothing reaches the server
        await daemon.call("plugins/grant", {"id": "fetch-cache", "permissions": {"kvQuotaBytes": 4096}})
        with pytest.raises(RpcError) as err:
            await daemon.call("plugins/call", {"id": "fetch-cache", "tool": "fetch", "input": {"url": url}})
        assert err.value.kind == "permission_denied" and err.value.error["data"]["details"]["operation"] == "http_fetch"
        assert http_fixture.requests == []
        await daemon.call("plugins/grant", {"id": "fetch-cache", "permissions": {
            "kvQuotaBytes": 4096, "hosts": ["http://127.0.0.1:*"]}})
        first = (await daemon.call("plugins/call", {"id": "fetch-cache", "tool": "fetch", "input": {"url": url}}))
        assert first["output"]["cached"] is False and first["output"]["stored"] is True
        assert first["output"]["response"]["status"] == 200 and first["output"]["response"]["body"] == '{"v":1}'
        second = await daemon.call("plugins/call", {"id": "fetch-cache", "tool": "fetch", "input": {"url": url}})
        assert second["output"]["cached"] is True and second["output"]["response"]["body"] == '{"v":1}'
        assert len(http_fixture.requests) == 1
        forgot = await daemon.call("plugins/call", {"id": "fetch-cache", "tool": "forget", "input": {"url": url}})
        assert forgot["output"] == {"forgotten": True}
        logs = [e["message"] for e in (await daemon.call("plugins/logs", {"id": "fetch-cache"}))["entries"]]
        assert logs == [f"fetched and cached: {url}", f"cache hit: {url}"]
        ops = [(r["operation"], r["allowed"]) for r in
               (await daemon.call("plugins/audit", {"id": "fetch-cache", "limit": 5}))["rows"]]
        assert ops == [("kv_delete", True), ("kv_get", True), ("kv_set", True), ("http_fetch", True),
                       ("kv_get", True)]


# ---- found by tests/test_params_fuzz.py: plugins/install {"path": "/"} copied the whole
# filesystem into the data folder (and every later install waited behind it) -------------------

async def test_install_of_a_folder_without_a_manifest_copies_nothing(tmp_path: Path) -> None:
    async with in_process(tmp_path / "data") as daemon:
        with pytest.raises(RpcError) as err:  # before the fix: no answer, the disk filling up
            await daemon.call("plugins/install", {"path": "/"})
        assert err.value.kind == "invalid_params" and "no plugin.toml in /" in err.value.error["message"]
    staging = tmp_path / "data" / "plugins" / ".staging"
    assert not staging.exists() or not any(staging.iterdir())


async def test_install_refuses_a_folder_too_big_to_be_a_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sidecar.plugins import service

    monkeypatch.setattr(service, "MAX_SOURCE_ENTRIES", 50)
    source = tmp_path / "big"
    shutil.copytree(EXAMPLES / "text-tools", source)
    for i in range(60):
        (source / f"f{i}.txt").write_text("x")
    async with in_process(tmp_path / "data") as daemon:
        with pytest.raises(RpcError) as err:
            await daemon.call("plugins/install", {"path": str(source)})
        assert err.value.kind == "resource_exhausted"
        assert err.value.error["data"]["details"]["limit"] == 50


async def test_install_refuses_a_plugin_folder_linking_a_device(tmp_path: Path) -> None:
    source = tmp_path / "device"
    shutil.copytree(EXAMPLES / "text-tools", source)
    (source / "zeros").symlink_to("/dev/zero")  # the copy follows links: it would never end
    async with in_process(tmp_path / "data") as daemon:
        with pytest.raises(RpcError) as err:
            await daemon.call("plugins/install", {"path": str(source)})
        assert err.value.kind == "invalid_params" and "not a regular file" in err.value.error["message"]
