"""Process plugins (`runtime = "process"`): line-delimited JSON-RPC children with rlimits, a
wall-clock timeout, a scrubbed environment, the data dir as working directory, psutil
stats, and an explicit trusted grant. Service level on a real database with real children,
and the Python and Node examples end to end over JSON-RPC in a daemon subprocess."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import anyio
import pytest

from protocol.plugins import Permissions
from sidecar.client import DaemonClient, RpcError
from sidecar.errors import PermissionDenied, PluginTrap, ResourceExhausted
from tests.test_plugins import Env, env, migrations_dir  # noqa: F401 - fixtures

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "plugins"
PROBE = Path(__file__).parent / "plugins_process" / "probe.py"
TOOLS = ("env", "sleep", "crash", "hog")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def probe_plugin(root: Path, *, timeout_ms: int = 5000, memory: int = 256 << 20, extra: str = "") -> str:
    folder = root / "probe-src"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROBE, folder / "probe.py")
    tools = "".join(f'\n[[tools]]\nname = "{t}"\n' for t in TOOLS)
    (folder / "plugin.toml").write_text(
        'id = "probe"\nname = "Probe"\nversion = "1.0.0"\nruntime = "process"\ncommand = ["python3", "probe.py"]\n'
        f'[limits]\ntimeoutMs = {timeout_ms}\nmemoryBytes = {memory}\n{extra}\n{tools}')
    return str(folder)


async def test_a_process_plugin_needs_a_trusted_grant(env: Env) -> None:
    async with env.run() as svc:
        info = await svc.install(probe_plugin(env.tmp))
        assert info.runtime == "process" and info.securityLevel == "trusted"
        with pytest.raises(PermissionDenied, match="trusted"):
            await svc.call("probe", "env", {})
        assert svc._processes.get("probe") is None
        await svc.grant("probe", Permissions(), trusted=True)
        result = await svc.call("probe", "env", {})
        assert result.output["cwd"] == str(svc.root / "data" / "probe")
        rows = [(r.operation, r.target.split(" ")[0], r.allowed) for r in await svc.audit("probe", None, 10)]
        assert rows[:4] == [("run_process", "pid", True), ("grant", "trusted", True),
                            ("run_process", "env", False), ("install", "1.0.0", True)]
        # a revoke ends the child and needs a new grant
        pid = result.output["pid"]
        await svc.revoke("probe")
        assert not _alive(pid)
        with pytest.raises(PermissionDenied):
            await svc.call("probe", "env", {})


async def test_limits_environment_and_working_directory(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDECAR_TEST_SECRET", "hunter2")
    monkeypatch.setenv("PROBE_VISIBLE", "yes")
    async with env.run() as svc:
        await svc.install(probe_plugin(env.tmp, memory=200 << 20,
                                       extra='[permissions]\nenv = ["PROBE_VISIBLE", "HOSTNAME_X"]'))
        await svc.grant("probe", Permissions(env=["PROBE_VISIBLE"]), trusted=True)
        out = (await svc.call("probe", "env", {})).output
        assert out["as"] == 200 << 20 and out["cpu"] == 300 and out["nofile"] == 256
        assert "SIDECAR_TEST_SECRET" not in out["env"] and "PROBE_VISIBLE" in out["env"]
        assert {"SIDECAR_PLUGIN_ID", "SIDECAR_PLUGIN_DATA", "PATH"} <= set(out["env"])
        # the address-space limit holds: a 1 GiB allocation fails inside the child
        with pytest.raises(PluginTrap, match="MemoryError") as err:
            await svc.call("probe", "hog", {"bytes": 1 << 30})
        assert err.value.details is not None and err.value.details["reason"] == "process_error"
        # psutil stats of the running child
        (stats,) = svc.get_stats("probe")
        assert stats.calls == 2 and stats.errors == 1
        assert stats.rssBytes is not None and stats.rssBytes > 1 << 20 and stats.cpuSeconds is not None


async def test_timeout_kills_the_child_and_the_next_call_starts_a_new_one(env: Env) -> None:
    async with env.run() as svc:
        await svc.install(probe_plugin(env.tmp, timeout_ms=500))
        await svc.grant("probe", Permissions(), trusted=True)
        pid = (await svc.call("probe", "env", {})).output["pid"]
        started = time.monotonic()
        with pytest.raises(ResourceExhausted) as err:
            await svc.call("probe", "sleep", {"seconds": 30})
        assert err.value.details == {"limit": "timeoutMs", "max": 500, "used": 500}
        assert time.monotonic() - started < 4
        assert not _alive(pid)
        assert (await svc.call("probe", "env", {})).output["pid"] != pid


async def test_cancel_sends_cancel_request_and_a_crash_is_a_typed_error(env: Env) -> None:
    async with env.run() as svc:
        await svc.install(probe_plugin(env.tmp))
        await svc.grant("probe", Permissions(), trusted=True)
        await svc.call("probe", "env", {})
        with anyio.move_on_after(0.5) as scope:
            await svc.call("probe", "sleep", {"seconds": 1})
        assert scope.cancelled_caught
        with anyio.fail_after(5):
            while not any(e.message.startswith("cancelled ") for e in svc.get_logs("probe", 10)):
                await anyio.sleep(0.05)
        with pytest.raises(PluginTrap) as err:
            await svc.call("probe", "crash", {})
        assert err.value.details is not None and err.value.details["reason"] == "process_exited"
        # (the status itself is whatever asyncio's child watcher saw: 3, or 255 when another reaper won)
        assert "exit status" in err.value.message and "about to crash" in err.value.message
        assert "cwd" in (await svc.call("probe", "env", {})).output


async def test_uninstall_and_the_service_stopping_end_the_child(env: Env) -> None:
    async with env.run() as svc:
        await svc.install(probe_plugin(env.tmp))
        await svc.grant("probe", Permissions(), trusted=True)
        pid = (await svc.call("probe", "env", {})).output["pid"]
        await svc.uninstall("probe")
        assert not _alive(pid)
        await svc.install(probe_plugin(env.tmp))
        await svc.grant("probe", Permissions(), trusted=True)
        pid = (await svc.call("probe", "env", {})).output["pid"]
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie not yet reaped counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("example, tool, arguments, expected", [
    ("py-stats", "describe", {"numbers": [1, 2, 3, 4]}, {"count": 4, "min": 1, "max": 4, "mean": 2.5,
                                                        "median": 2.5, "stdev": 1.2909944487358056}),
    ("py-stats", "histogram", {"numbers": [1, 2, 2, 9], "bins": 2}, {"low": 1, "width": 4.0, "counts": [3, 1]}),
    ("node-dates", "diff", {"from": "2024-01-01T00:00:00Z", "to": "2024-01-03T12:00:00Z"},
     {"days": 2.5, "hours": 60}),
    # Intl's wording varies with Node's ICU data ("Wednesday, 6 March 2024 at 08:30" in Node 20): the
    # parts that must be there are checked
    ("node-dates", "format", {"iso": "2024-03-05T23:30:00Z", "locale": "en-GB", "timeZone": "Asia/Tokyo"},
     ["Wednesday", "6 March 2024", "08:30"]),
])
def test_process_examples_over_stdio(daemon: DaemonClient, example: str, tool: str, arguments: dict,
                                     expected: dict | list[str]) -> None:
    if example == "node-dates" and shutil.which("node") is None:
        pytest.skip("node is not installed")
    daemon.request("plugins/install", {"path": str(EXAMPLES / example)})
    with pytest.raises(RpcError) as err:
        daemon.request("plugins/call", {"id": example, "tool": tool, "input": arguments})
    assert err.value.kind == "permission_denied"
    info = daemon.request("plugins/grant", {"id": example, "permissions": {}, "trusted": True})
    assert info["securityLevel"] == "trusted"
    result = daemon.request("plugins/call", {"id": example, "tool": tool, "input": arguments}, timeout=30)
    if isinstance(expected, list):
        assert all(part in result["output"]["formatted"] for part in expected), result["output"]
    else:
        assert result["output"] == expected
    stats = daemon.request("plugins/stats", {"id": example})["plugins"][0]
    assert stats["rssBytes"] > 0 and stats["cpuSeconds"] >= 0

