"""plugins/* over JSON-RPC: the real Session and router in process (tests/harness.py), with
the plugins capability added; cancellation answers -32800; typed errors on the wire; the
example plugins end to end, over RPC and as tools."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import anyio
import pytest

from sidecar import app
from sidecar.plugins.capability import PluginsCapability
from sidecar.store import migrations
from tests.harness import RpcError, in_process
from tests.test_plugins import make_plugin

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "plugins"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def contiguous_migrations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Until migration 0002 lands, number ours contiguously (a no-op once it has)."""
    dst = tmp_path / "migrations"
    dst.mkdir()
    for number, path in enumerate(sorted(migrations.default_migrations_dir().glob("*.sql")), start=1):
        shutil.copy(path, dst / f"{number:04d}_{path.name.split('_', 1)[1]}")
    monkeypatch.setattr(migrations, "default_migrations_dir", lambda: dst)


def _extra() -> tuple[type, ...]:
    return () if PluginsCapability in app.CAPABILITIES else (PluginsCapability,)


async def test_install_grant_call_over_rpc(tmp_path: Path) -> None:
    src = make_plugin(tmp_path / "src", "echo", extra='[permissions]\nkvQuotaBytes = 64')
    async with in_process(tmp_path / "data", extra=_extra()) as daemon:
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
    async with in_process(tmp_path / "data", extra=_extra()) as daemon:
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


async def test_cancel_request_stops_a_running_call_with_32800(tmp_path: Path) -> None:
    src = make_plugin(tmp_path / "src", "loop", extra="[limits]\ntimeoutMs = 60000\nfuel = 10000000000")
    async with in_process(tmp_path / "data", extra=_extra()) as daemon:
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
        assert time.monotonic() - started < 1.0
        answer = daemon._answers.pop(request_id)
        assert answer["error"]["code"] == -32800
        # the daemon and the plugin keep serving
        assert (await daemon.call("plugins/stats", {"id": "t"}))["plugins"][0]["calls"] == 1


@pytest.mark.parametrize("example, tool, arguments, expected", [
    ("text-tools", "wordcount", {"text": "one two  three\nfour"}, {"words": 4, "lines": 2, "chars": 19}),
    ("text-tools", "slugify", {"text": "Hello, World! Ça va?"}, {"slug": "hello-world-a-va"}),
    ("text-tools", "case", {"text": "make me loud", "to": "upper"}, {"text": "MAKE ME LOUD"}),
])
async def test_example_plugins_end_to_end(tmp_path: Path, example: str, tool: str, arguments: dict,
                                          expected: dict) -> None:
    folder = EXAMPLES / example
    if not (folder / "plugin.toml").exists():
        pytest.skip(f"example {example} not built")
    async with in_process(tmp_path / "data", extra=_extra()) as daemon:
        await daemon.call("plugins/install", {"path": str(folder)})
        result = await daemon.call("plugins/call", {"id": example, "tool": tool, "input": arguments})
        assert result["output"] == expected
        # and as a chat tool
        tools = await daemon.platform.tools.list_tools()
        assert f"plugin__{tool}" in [t.name for t in tools]
        called = await daemon.platform.tools.call(f"plugin__{tool}", arguments)
        assert called.content == expected and not called.is_error
