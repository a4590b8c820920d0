"""Plugins: the wasmtime sandbox (fuel, deadline, memory, cancellation), ABI v1, manifest and
permissions, host functions, WASI preopens, audit, hot reload, tools. Service level, on a
real database, with the WAT modules in tests/plugins_wat/ and a real HTTP server."""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from protocol.plugins import ConfigKey, PathPermission, Permissions
from sidecar.errors import InvalidValue, NotFound, PermissionDenied, PluginTrap, ResourceExhausted
from sidecar.notifier import Notifier
from sidecar.plugins.service import DEFAULTS, PluginService
from sidecar.plugins.store import PluginStore
from sidecar.plugins.toolsource import PluginToolSource
from sidecar.store import migrations
from sidecar.store.database import Database
from sidecar.toolsource import ToolCall, ToolRegistry
from tests.support.http_fixture import HttpFixtureServer, Response

pytestmark = pytest.mark.anyio

WAT_DIR = Path(__file__).parent / "plugins_wat"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def wat_source(name: str, **subs: Any) -> str:
    text = (WAT_DIR / f"{name}.wat").read_text()
    text = text.replace("(;prelude;)", (WAT_DIR / "prelude.wat").read_text())
    for key, value in subs.items():
        text = text.replace("{{%s}}" % key, str(value))
    assert "{{" not in text, "a placeholder was left unfilled"
    return text


def make_plugin(root: Path, wat: str, *, plugin_id: str = "t", version: str = "1.0.0",
                tools: tuple[str, ...] = ("run",), extra: str = "", schema: str = "{ type = \"object\" }",
                **subs: Any) -> Path:
    folder = root / f"{plugin_id}-src"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "main.wat").write_text(wat_source(wat, **subs))
    tool_tables = "".join(f'\n[[tools]]\nname = "{t}"\ndescription = "{t} tool"\ninputSchema = {schema}\n'
                          for t in tools)
    (folder / "plugin.toml").write_text(
        f'id = "{plugin_id}"\nname = "Test {plugin_id}"\nversion = "{version}"\nabi = 1\nentry = "main.wat"\n'
        f'{extra}\n{tool_tables}')
    return folder


@pytest.fixture
def migrations_dir() -> Path:
    return migrations.default_migrations_dir()


class Env:
    def __init__(self, tmp_path: Path, migrations_dir: Path) -> None:
        self.tmp = tmp_path
        self.settings: dict[str, Any] = dict(DEFAULTS, **{"plugins.watchIntervalMs": 0})
        self.db = Database(tmp_path / "sidecar.db", migrations_dir)
        self.notifier = Notifier()
        self.events: list[tuple[str, Any]] = []
        self.notifier.attach(lambda name, event: self.events.append((name, event)))
        self.secrets: dict[str, str] = {}
        self.service: PluginService

    async def reveal(self, name: str) -> str:
        if name not in self.secrets:
            raise NotFound(name)
        return self.secrets[name]

    @asynccontextmanager
    async def run(self) -> AsyncIterator[PluginService]:
        self.db.open()
        self.service = PluginService(PluginStore(self.db), self.tmp / "data", self.settings.__getitem__,
                                     self.notifier, self.reveal)
        try:
            async with self.service.running():
                yield self.service
        finally:
            self.db.close()

    def plugin(self, wat: str, **kw: Any) -> str:
        return str(make_plugin(self.tmp / "src", wat, **kw))


@pytest.fixture
def env(tmp_path: Path, migrations_dir: Path) -> Env:
    return Env(tmp_path, migrations_dir)


# ---- ABI, limits, traps --------------------------------------------------------------------


async def test_echo_round_trip_reports_fuel_memory_and_stats(env: Env) -> None:
    async with env.run() as svc:
        info = await svc.install(env.plugin("echo"))
        assert info.id == "t" and info.securityLevel == "sandbox" and info.enabled
        result = await svc.call("t", "run", {"text": "héllo", "n": [1, 2]})
        assert result.output == {"tool": "run", "input": {"text": "héllo", "n": [1, 2]}}
        assert result.fuelUsed > 0 and result.memoryBytes == 65536
        (stats,) = svc.get_stats("t")
        assert stats.calls == 1 and stats.errors == 0 and stats.fuelUsed == result.fuelUsed
        assert stats.peakMemoryBytes == 65536 and stats.p50Ms > 0


async def test_infinite_loop_is_stopped_by_fuel_and_others_keep_running(env: Env) -> None:
    async with env.run() as svc:
        await svc.install(env.plugin("loop", plugin_id="spin", extra="[limits]\nfuel = 5000000"))
        await svc.install(env.plugin("echo", plugin_id="echo"))
        with pytest.raises(ResourceExhausted) as err:
            await svc.call("spin", "run", {})
        assert err.value.details == {"limit": "fuel", "max": 5_000_000, "used": 5_000_000}
        assert (await svc.call("echo", "run", {"a": 1})).output["input"] == {"a": 1}
        (stats,) = svc.get_stats("spin")
        assert stats.calls == 1 and stats.errors == 1


async def test_a_loop_is_stopped_by_the_deadline(env: Env) -> None:
    env.settings["plugins.maxFuel"] = 10**15
    async with env.run() as svc:
        await svc.install(env.plugin("loop", extra="[limits]\nfuel = 1000000000000000\ntimeoutMs = 300"))
        started = time.monotonic()
        with pytest.raises(ResourceExhausted) as err:
            await svc.call("t", "run", {})
        elapsed = time.monotonic() - started
        assert err.value.details is not None
        assert err.value.details["limit"] == "timeoutMs" and err.value.details["max"] == 300
        assert 300 <= err.value.details["used"] < 2000
        assert 0.3 <= elapsed < 2.0


async def test_memory_growth_past_the_cap_is_refused(env: Env) -> None:
    async with env.run() as svc:
        await svc.install(env.plugin("grow", tools=("report", "abort"), extra="[limits]\nmemoryBytes = 1048576"))
        # memory.grow answers -1: the store limit refused the 4 MiB growth
        assert (await svc.call("t", "report", {})).output == {"n": -1}
        # a guest that aborts when refused answers resource_exhausted naming the limit
        with pytest.raises(ResourceExhausted) as err:
            await svc.call("t", "abort", {})
        assert err.value.details == {"limit": "memoryBytes", "max": 1048576, "used": 1048576}
        # within the cap the same growth succeeds (old size in pages: 1)
    env.settings["plugins.defaultMemoryBytes"] = 16 << 20
    async with env.run() as svc:
        await svc.install(env.plugin("grow", plugin_id="big", tools=("report",)))
        result = await svc.call("big", "report", {})
        assert result.output == {"n": 1} and result.memoryBytes == 65 * 65536


async def test_minimum_memory_over_the_cap_is_refused_at_install(env: Env) -> None:
    env.settings["plugins.maxMemoryBytes"] = 16 << 20
    async with env.run() as svc:
        with pytest.raises(ResourceExhausted) as err:
            await svc.install(env.plugin("minmem"))
        assert err.value.details == {"limit": "memoryBytes", "max": 16 << 20, "used": 32 << 20}
        assert svc.list() == []


async def test_a_trap_mid_call_answers_plugin_trap_with_its_message(env: Env) -> None:
    async with env.run() as svc:
        await svc.install(env.plugin("trap"))
        with pytest.raises(PluginTrap) as err:
            await svc.call("t", "run", {})
        assert "unreachable" in err.value.message
        assert err.value.details is not None and "unreachable" in err.value.details["trap"]


async def test_malformed_json_output_is_a_typed_error(env: Env) -> None:
    async with env.run() as svc:
        await svc.install(env.plugin("badjson"))
        with pytest.raises(PluginTrap) as err:
            await svc.call("t", "run", {})
        assert err.value.details is not None and err.value.details["reason"] == "invalid_output"
        assert err.value.details["start"] == "{not json"


async def test_cancelling_a_running_call_stops_the_guest(env: Env) -> None:
    env.settings["plugins.maxFuel"] = 10**15
    async with env.run() as svc:
        await svc.install(env.plugin("loop", extra="[limits]\nfuel = 1000000000000000\ntimeoutMs = 60000"))
        started = time.monotonic()
        with anyio.move_on_after(0.3) as scope:
            await svc.call("t", "run", {})
        elapsed = time.monotonic() - started
        assert scope.cancelled_caught
        assert elapsed < 5, "the guest was not stopped by the cancellation"
        (stats,) = svc.get_stats("t")
        assert stats.calls == 1 and stats.errors == 1
        assert svc._active == 0


async def test_fresh_instance_per_call_and_persistent_on_request(env: Env) -> None:
    async with env.run() as svc:
        await svc.install(env.plugin("counter", plugin_id="fresh"))
        await svc.install(env.plugin("counter", plugin_id="kept", extra='instance = "persistent"'))
        assert [(await svc.call("fresh", "run", {})).output["n"] for _ in range(3)] == [1, 1, 1]
        assert [(await svc.call("kept", "run", {})).output["n"] for _ in range(3)] == [1, 2, 3]


async def test_pooled_slots_start_zeroed_and_running_out_of_them_is_resource_exhausted(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    from sidecar.plugins import runtime

    monkeypatch.setattr(runtime, "POOL_SLOTS", 2)
    async with env.run() as svc:
        assert svc.engine().pooling
        await svc.install(env.plugin("memcounter", plugin_id="fresh"))
        # memory written by one instance is never seen by the next one in the same slot
        assert [(await svc.call("fresh", "run", {})).output["n"] for _ in range(3)] == [1, 1, 1]
        for pid in ("kept-a", "kept-b"):
            await svc.install(env.plugin("memcounter", plugin_id=pid, extra='instance = "persistent"'))
            assert (await svc.call(pid, "run", {})).output == {"n": 1}
        # both slots are held by the persistent instances now
        with pytest.raises(ResourceExhausted) as err:
            await svc.call("fresh", "run", {})
        assert err.value.details is not None and err.value.details["limit"] == "instances"
        assert (await svc.call("kept-a", "run", {})).output == {"n": 2}


async def test_compiled_modules_are_cached_on_disk(env: Env) -> None:
    async with env.run() as svc:
        await svc.install(env.plugin("echo"))
        assert list((svc.root / ".cache").glob("*.cwasm"))
        assert svc.engine().cache_hits == 0
    # a new daemon loads the installed plugin from the cache, without compiling
    async with env.run() as svc:
        assert svc.engine().cache_hits == 1
        assert (await svc.call("t", "run", {})).output == {"tool": "run", "input": {}}


# ---- manifest -----------------------------------------------------------------------------


async def test_wrong_sha256_is_refused(env: Env) -> None:
    async with env.run() as svc:
        with pytest.raises(InvalidValue) as err:
            await svc.install(env.plugin("echo", extra=f'sha256 = "{"0" * 64}"'))
        assert err.value.details is not None and err.value.details["expected"] == "0" * 64
        assert "sha256" in err.value.message
        src = env.plugin("echo", plugin_id="good")
        import hashlib

        digest = hashlib.sha256((Path(src) / "main.wat").read_bytes()).hexdigest()
        toml = Path(src) / "plugin.toml"
        toml.write_text(toml.read_text().replace('entry = "main.wat"', f'entry = "main.wat"\nsha256 = "{digest}"'))
        assert (await svc.install(src)).sha256 == digest


async def test_unsupported_abi_and_bad_manifests_are_refused_clearly(env: Env) -> None:
    async with env.run() as svc:
        src = Path(env.plugin("echo"))
        toml = src / "plugin.toml"
        toml.write_text(toml.read_text().replace("abi = 1", "abi = 2"))
        with pytest.raises(InvalidValue, match="abi 2 is not supported"):
            await svc.install(str(src))
        toml.write_text(toml.read_text().replace("abi = 2", "abi = 1").replace('version = "1.0.0"', 'version = "1"'))
        with pytest.raises(InvalidValue, match="not semver"):
            await svc.install(str(src))
        with pytest.raises(InvalidValue, match="not a folder"):
            await svc.install(str(src / "nope"))


async def test_input_is_validated_against_the_tool_schema(env: Env) -> None:
    schema = '{ type = "object", properties = { text = { type = "string" } }, required = ["text"] }'
    async with env.run() as svc:
        await svc.install(env.plugin("echo", schema=schema))
        with pytest.raises(InvalidValue) as err:
            await svc.call("t", "run", {"text": 3})
        assert err.value.path == "$.params.input.text"
        with pytest.raises(InvalidValue, match="required"):
            await svc.call("t", "run", {})
        with pytest.raises(NotFound):
            await svc.call("t", "nosuch", {"text": "x"})
        assert (await svc.call("t", "run", {"text": "ok"})).output["input"] == {"text": "ok"}


async def test_disabled_plugins_refuse_calls(env: Env) -> None:
    async with env.run() as svc:
        await svc.install(env.plugin("echo"))
        assert not (await svc.set_enabled("t", False)).enabled
        with pytest.raises(Exception, match="disabled"):
            await svc.call("t", "run", {})
        await svc.set_enabled("t", True)
        assert (await svc.call("t", "run", {})).output["tool"] == "run"


# ---- permissions, host functions, audit -----------------------------------------------------


async def test_ungranted_http_fetch_is_denied_and_audited(env: Env, http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("GET", "/hello", Response(200, {"content-type": "text/plain"}, [b"hi there"]))
    url = http_fixture.url_for("/hello")
    request = json.dumps({"url": url + "?token=s3cret"})
    origin = http_fixture.url
    async with env.run() as svc:
        await svc.install(env.plugin("http", REQUEST=request.replace('"', '\\"'), REQLEN=len(request),
                                     extra=f'[permissions]\nhosts = ["{origin}"]'))
        info = svc.info("t")
        assert info.requested.hosts == [origin] and info.missing.hosts == [origin]
        with pytest.raises(PermissionDenied) as err:
            await svc.call("t", "run", {})
        assert err.value.details == {"operation": "http_fetch", "target": url}
        assert http_fixture.requests == []
        rows = await svc.audit("t", None, 10)
        assert [(r.operation, r.target, r.allowed) for r in rows[:1]] == [("http_fetch", url, False)]
        assert all("s3cret" not in r.target for r in rows)

        # granted: it reaches the local server
        info = await svc.grant("t", Permissions(hosts=[origin]))
        assert info.missing.hosts == [] and info.granted.hosts == [origin]
        result = await svc.call("t", "run", {})
        assert result.output["status"] == 200 and result.output["body"] == "hi there"
        assert http_fixture.requests[0].path.startswith("/hello")
        rows = await svc.audit("t", None, 1)
        assert (rows[0].operation, rows[0].target, rows[0].allowed) == ("http_fetch", url, True)

        # revoked: denied again
        await svc.revoke("t")
        with pytest.raises(PermissionDenied):
            await svc.call("t", "run", {})


async def test_a_redirect_out_of_the_granted_hosts_is_denied(env: Env, http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("GET", "/go", Response(302, {"location": "http://localhost:9/elsewhere"}, [b""]))
    request = json.dumps({"url": http_fixture.url_for("/go")})
    async with env.run() as svc:
        await svc.install(env.plugin("http", REQUEST=request.replace('"', '\\"'), REQLEN=len(request),
                                     extra=f'[permissions]\nhosts = ["{http_fixture.url}"]'))
        await svc.grant("t", Permissions(hosts=[http_fixture.url]))
        with pytest.raises(PermissionDenied, match="redirect"):
            await svc.call("t", "run", {})
        rows = await svc.audit("t", None, 2)
        assert [(r.target, r.allowed) for r in rows] == [
            ("http://localhost:9/elsewhere", False), (http_fixture.url_for("/go"), True)]


async def test_kv_needs_a_grant_and_keeps_to_its_quota(env: Env) -> None:
    async with env.run() as svc:
        await svc.install(env.plugin("kv", extra="[permissions]\nkvQuotaBytes = 100"))
        with pytest.raises(PermissionDenied, match="key-value"):
            await svc.call("t", "run", {})
        await svc.grant("t", Permissions(kvQuotaBytes=100))
        result = await svc.call("t", "run", {"v": "small"})
        assert result.output == {"tool": "run", "input": {"v": "small"}}
        assert await svc.store.kv_get("t", "greeting") == b'{"tool":"run","input":{"v":"small"}}'
        # over the quota: kv_set answers -2 and the old value stays
        assert (await svc.call("t", "run", {"v": "x" * 200})).output == {"n": -2}
        assert await svc.store.kv_get("t", "greeting") == b'{"tool":"run","input":{"v":"small"}}'
        ops = [(r.operation, r.allowed) for r in await svc.audit("t", None, 10)]
        # newest first: refused over quota; stored and read back; refused without a grant
        assert ops == [("kv_set", False), ("kv_get", True), ("kv_set", True), ("grant", True), ("kv_set", False),
                       ("install", True)]


async def test_log_stdout_and_stderr_reach_the_plugin_log(env: Env) -> None:
    async with env.run() as svc:
        await svc.install(env.plugin("logging"))
        assert (await svc.call("t", "run", {})).output == {"n": 1}
        entries = [(e.source, e.level, e.message) for e in svc.get_logs("t", 10)]
        assert entries == [("guest", "info", "hello from the guest"), ("stdout", "info", "to stdout"),
                           ("stderr", "warning", "to stderr")]


FD_READ, FD_WRITE = 1 << 1, 1 << 6
O_CREAT = 1


async def _probe(svc: PluginService, env: Env, plugin_id: str, path: str, *, fd: int, oflags: int = 0,
                 rights: int = FD_READ, read: int = 0, grant: Permissions | None = None,
                 declared: str = "") -> int:
    await svc.install(env.plugin("fs_probe", plugin_id=plugin_id, PATH=path, PATHLEN=len(path.encode()), FD=fd,
                                 OFLAGS=oflags, RIGHTS=rights, READ=read, extra=declared))
    if grant is not None:
        await svc.grant(plugin_id, grant)
    return int((await svc.call(plugin_id, "run", {})).output["n"])


async def test_wasi_paths_stay_inside_their_preopens(env: Env, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "notes.txt").write_text("hello notes")
    os.symlink("/etc/passwd", shared / "passwd-link")
    os.symlink("..", shared / "up")
    declared = f'[permissions]\npaths = [{{ path = "{shared}", access = "ro" }}]'
    grant = Permissions(paths=[PathPermission(str(shared), "ro")])
    async with env.run() as svc:
        # positive controls: the granted dir (fd 4) is readable, the data dir (fd 3) writable
        assert await _probe(svc, env, "read-ok", "notes.txt", fd=4, read=1, grant=grant, declared=declared) == 11
        assert await _probe(svc, env, "write-data", "new.txt", fd=3, oflags=O_CREAT, rights=FD_WRITE, read=2) == 0
        assert (svc.root / "data" / "write-data" / "new.txt").read_bytes() == b"new."  # the path's first 4 bytes
        # escapes and writes to a read-only preopen are denied
        for pid, path, fd in (("abs", "/etc/passwd", 3), ("abs-ro", "/etc/passwd", 4), ("dotdot", "../../../etc/passwd", 3),
                              ("dotdot-installed", "../installed/t/plugin.toml", 3),
                              ("link-out", "passwd-link", 4), ("link-up", "up/sidecar.db", 4)):
            errno = await _probe(svc, env, pid, path, fd=fd, read=1, grant=grant, declared=declared)
            assert errno not in (0, 11) and errno > 0, (pid, errno)
        errno = await _probe(svc, env, "write-ro", "evil.txt", fd=4, oflags=O_CREAT, rights=FD_WRITE, read=2,
                             grant=grant, declared=declared)
        assert errno != 0 and not (shared / "evil.txt").exists()
        # declared but not granted: not preopened at all (fd 4 is no directory)
        assert await _probe(svc, env, "ungranted", "notes.txt", fd=4, read=1, declared=declared) != 0


async def test_config_values_and_secrets(env: Env) -> None:
    wat = "kv"  # any module: config is checked through the service's bridge below
    async with env.run() as svc:
        await svc.install(env.plugin(wat, extra='[permissions]\nconfig = [{ key = "region" }, '
                                                '{ key = "apiKey", secret = true }]'))
        info = svc.info("t")
        assert info.missing.config == [ConfigKey("region"), ConfigKey("apiKey", secret=True)]
        await svc.grant("t", Permissions(config=[ConfigKey("region")]))
        assert svc.info("t").missing.config == [ConfigKey("apiKey", secret=True)]


# ---- reload, tools -------------------------------------------------------------------------


async def test_hot_reload_of_a_broken_version_keeps_the_old_one(env: Env) -> None:
    env.settings["plugins.watchIntervalMs"] = 50
    async with env.run() as svc:
        src = Path(env.plugin("counter"))
        await svc.install(str(src))
        assert (await svc.call("t", "run", {})).output == {"n": 1}
        (src / "main.wat").write_text("(module (func $broken")
        with anyio.fail_after(5):
            while not env.events:
                await anyio.sleep(0.02)
        name, event = env.events[0]
        assert name == "plugins/reloaded" and not event.ok and "WAT" in event.error
        assert (await svc.call("t", "run", {})).output == {"n": 1}
        assert svc.info("t").loadError is not None and svc.info("t").version == "1.0.0"
        # a fixed version with a new number replaces it
        make_plugin(env.tmp / "src", "echo", version="1.1.0")
        with anyio.fail_after(5):
            while len(env.events) < 2:
                await anyio.sleep(0.02)
        assert env.events[1][1].ok and env.events[1][1].version == "1.1.0"
        assert (await svc.call("t", "run", {})).output == {"tool": "run", "input": {}}
        assert svc.info("t").loadError is None


async def test_an_update_asking_for_more_shows_the_difference(env: Env) -> None:
    async with env.run() as svc:
        src = Path(env.plugin("echo", extra='[permissions]\nhosts = ["http://127.0.0.1:1"]'))
        await svc.install(str(src))
        await svc.grant("t", Permissions(hosts=["http://127.0.0.1:1"]))
        assert mf_empty(svc.info("t").missing)
        make_plugin(env.tmp / "src", "echo", version="2.0.0",
                    extra='[permissions]\nhosts = ["http://127.0.0.1:1", "https://api.example.com"]')
        (outcome,) = await svc.reload("t")
        assert outcome.ok and outcome.version == "2.0.0"
        info = svc.info("t")
        assert info.missing.hosts == ["https://api.example.com"] and info.granted.hosts == ["http://127.0.0.1:1"]


def mf_empty(p: Permissions) -> bool:
    from sidecar.plugins.manifest import is_empty

    return is_empty(p)


async def test_plugin_tools_are_a_tool_source(env: Env) -> None:
    async with env.run() as svc:
        registry = ToolRegistry()
        registry.add(PluginToolSource(svc))
        await svc.install(env.plugin("echo", plugin_id="a", tools=("run", "shout")))
        await svc.install(env.plugin("trap", plugin_id="b", tools=("run",)))
        names = sorted(t.name for t in await registry.list_tools())
        assert names == ["plugin__a_run", "plugin__b_run", "plugin__shout"]
        result = await registry.call("plugin__shout", {"x": 1}, ToolCall(caller="agent:test"))
        assert result.content == {"tool": "shout", "input": {"x": 1}} and not result.is_error
        trapped = await registry.call("plugin__b_run", {})
        assert trapped.is_error and trapped.content["kind"] == "plugin_trap"
        with pytest.raises(NotFound):
            await registry.call("plugin__nothing", {})


async def test_uninstall_removes_code_data_and_rows(env: Env) -> None:
    async with env.run() as svc:
        await svc.install(env.plugin("echo"))
        assert (svc.root / "installed" / "t").is_dir()
        assert await svc.uninstall("t")
        assert not (svc.root / "installed" / "t").exists() and not (svc.root / "data" / "t").exists()
        with pytest.raises(NotFound):
            svc.info("t")
        assert [r.operation for r in await svc.audit("t", None, 10)][:2] == ["uninstall", "install"]
