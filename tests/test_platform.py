"""The capability platform: capabilities, lifespans, the notifier, lanes, streams of tagged
unions, worker-thread handlers, typed errors from task groups; in process and over stdio."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
import anyio
import msgspec
import pytest

from protocol.common import Empty
from protocol.spec import MethodSpec, NotificationSpec
from protocol.streaming import StreamEvent
from sidecar.capability import Capability, Platform
from sidecar.errors import Conflict, NotFound
from sidecar.server.context import RequestContext
from sidecar.server.router import Router
from tests.conftest import serve_argv
from tests.harness import RpcError, in_process

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# ---- a capability made for these tests --------------------------------------------


class Text(StreamEvent, tag="text", tag_field="type"):
    text: str


class Usage(StreamEvent, tag="usage", tag_field="type"):
    tokens: int


class Tick(msgspec.Struct):
    n: int


class SleepParams(msgspec.Struct):
    seconds: float = 0.5


DELTA = NotificationSpec("probe/delta", Text | Usage, "A text or usage event.")  # type: ignore[arg-type]
TICK = NotificationSpec("probe/tick", Tick, "A background tick.")
STREAM = MethodSpec("probe/stream", Empty, Empty, "Streams a tagged union.", streams=(DELTA,))
GROUP_FAIL = MethodSpec("probe/groupFail", Empty, Empty, "Raises NotFound inside its own task group.")
TWO_FAIL = MethodSpec("probe/twoFail", Empty, Empty, "Two different errors in one task group.")
BLOCK = MethodSpec("probe/block", SleepParams, Empty, "A plain function that blocks (time.sleep).")
SLOW_LANE = MethodSpec("probe/slowLane", SleepParams, Empty, "Sleeps in lane 'probe'.", lane="probe")
EVENTS: list[str] = []


class ProbeCapability(Capability):
    name = "probe"

    def __init__(self, platform: Platform) -> None:
        super().__init__(platform)
        EVENTS.append("built")

    def register(self, router: Router) -> None:
        @router.method(STREAM)
        async def stream(ctx: RequestContext, params: Empty) -> Empty:
            out = ctx.stream(DELTA)
            await out.send(Text(text="hello"))
            await out.send(Usage(tokens=3))
            return Empty()

        @router.method(GROUP_FAIL)
        async def group_fail(ctx: RequestContext, params: Empty) -> Empty:
            async def child() -> None:
                raise NotFound("no widget named w1", widget="w1")

            async with anyio.create_task_group() as tg:
                tg.start_soon(child)
            return Empty()

        @router.method(TWO_FAIL)
        async def two_fail(ctx: RequestContext, params: Empty) -> Empty:
            async def first() -> None:
                raise Conflict("first")

            async def second() -> None:
                raise NotFound("second")

            async with anyio.create_task_group() as tg:
                tg.start_soon(first)
                tg.start_soon(second)
            return Empty()

        @router.method(BLOCK)
        def block(ctx: RequestContext, params: SleepParams) -> Empty:
            time.sleep(params.seconds)  # a plain function: runs in a worker thread
            return Empty()

        @router.method(SLOW_LANE)
        async def slow_lane(ctx: RequestContext, params: SleepParams) -> Empty:
            await anyio.sleep(params.seconds)
            return Empty()

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        EVENTS.append("started")
        self.platform.notifier.notify(TICK, Tick(0))  # before the client is ready: held
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._tick)
            yield
            tg.cancel_scope.cancel()
        EVENTS.append("stopped")

    async def _tick(self) -> None:
        n = 0
        while True:
            await anyio.sleep(0.05)
            n += 1
            self.platform.notifier.notify(TICK, Tick(n))


async def test_lifespan_runs_around_serving_and_background_notifications_flow(tmp_path: Path) -> None:
    EVENTS.clear()
    async with in_process(tmp_path / "d", extra=(ProbeCapability,)) as daemon:
        assert EVENTS == ["built", "started"]
        await anyio.sleep(0.3)
        ticks = [n["params"]["n"] for n in daemon.notifications if n["method"] == "probe/tick"]
        assert ticks[0] == 0, "the tick sent before the client was ready is held, then sent first"
        assert ticks == sorted(ticks) and len(ticks) >= 3
    assert EVENTS == ["built", "started", "stopped"]


async def test_notifications_are_held_until_the_client_is_ready(tmp_path: Path) -> None:
    async with in_process(tmp_path / "d", extra=(ProbeCapability,), initialize=False) as daemon:
        await anyio.sleep(0.2)
        assert daemon.notifications == []
        await daemon.call("initialize", {})
        assert daemon.notifications == [], "initialize's answer first; notifications after initialized"
        daemon.notify("initialized")
        await daemon.call("system/ping")
        assert [n["params"]["n"] for n in daemon.notifications][:1] == [0]


async def test_a_stream_carries_a_tagged_union(tmp_path: Path) -> None:
    async with in_process(tmp_path / "d", extra=(ProbeCapability,)) as daemon:
        await daemon.call("probe/stream")
        deltas = [n["params"] for n in daemon.notifications if n["method"] == "probe/delta"]
        assert [(d["type"], d["seq"]) for d in deltas] == [("text", 0), ("usage", 1)]
        assert deltas[0]["text"] == "hello" and deltas[1]["tokens"] == 3
        assert all(isinstance(d["requestId"], int) for d in deltas)


async def test_an_error_raised_in_a_handlers_task_group_keeps_its_kind(tmp_path: Path) -> None:
    async with in_process(tmp_path / "d", extra=(ProbeCapability,)) as daemon:
        with pytest.raises(RpcError) as err:
            await daemon.call("probe/groupFail")
        assert err.value.code == -32001 and err.value.kind == "not_found"
        assert err.value.error["data"]["details"] == {"widget": "w1"}
        with pytest.raises(RpcError) as err:
            await daemon.call("probe/twoFail")
        assert err.value.kind in ("conflict", "not_found")  # the first typed one, never -32603
        assert err.value.code != -32603


async def test_a_blocking_plain_handler_does_not_stall_other_requests(tmp_path: Path) -> None:
    async with in_process(tmp_path / "d", extra=(ProbeCapability,)) as daemon:
        async with anyio.create_task_group() as tg:
            tg.start_soon(daemon.call, "probe/block", {"seconds": 1.0})
            await anyio.sleep(0.1)
            began = time.perf_counter()
            await daemon.call("system/ping")
            await daemon.call("system/health")
            assert time.perf_counter() - began < 0.5


async def test_one_lane_never_waits_for_another(tmp_path: Path) -> None:
    async with in_process(tmp_path / "d", extra=(ProbeCapability,)) as daemon:
        async with anyio.create_task_group() as tg:
            tg.start_soon(daemon.call, "probe/slowLane", {"seconds": 1.0})
            await anyio.sleep(0.05)
            began = time.perf_counter()
            await daemon.call("settings/set", {"key": "log.level", "value": "warning"})
            assert (await daemon.call("settings/get", {"key": "log.level"}))["value"] == "warning"
            assert time.perf_counter() - began < 0.5, "the settings lane waited behind the probe lane"


async def test_initialize_lists_lanes(tmp_path: Path) -> None:
    async with in_process(tmp_path / "d", extra=(ProbeCapability,), initialize=False) as daemon:
        caps = (await daemon.call("initialize", {}))["capabilities"]
        assert caps["lanes"]["settings/set"] == "settings"
        assert caps["lanes"]["secrets/set"] == "secrets"
        assert caps["lanes"]["probe/slowLane"] == "probe"
        assert "system/ping" not in caps["lanes"]


def test_a_capability_must_be_listed_after_what_it_requires() -> None:
    platform = Platform.__new__(Platform)
    platform._services = {}
    with pytest.raises(LookupError, match="listed before"):
        platform.require(ProbeCapability)
    platform.provide(EVENTS, as_type=list)
    assert platform.require(list) is EVENTS
    with pytest.raises(ValueError):
        platform.provide([], as_type=list)


def test_a_write_error_on_stdout_other_than_epipe_winds_down_cleanly(tmp_path: Path) -> None:
    """stdout on /dev/full: every write fails with ENOSPC. The daemon must take that as the
    shell having gone and exit promptly, without a traceback (platform defect 3)."""
    requests = b"".join(
        msgspec.json.encode({"jsonrpc": "2.0", "id": i, "method": m, "params": p}) + b"\n"
        for i, (m, p) in enumerate([("initialize", {}), ("system/ping", {}), ("system/health", {})]))
    with open("/dev/full", "wb") as full:
        began = time.monotonic()
        # stdin stays open (a pipe we never close): only the write failure can end the session
        proc = subprocess.Popen(serve_argv(tmp_path / "d"), stdin=subprocess.PIPE, stdout=full,
                                stderr=subprocess.PIPE)
        assert proc.stdin is not None and proc.stderr is not None
        proc.stdin.write(requests)
        proc.stdin.flush()
        try:
            code = proc.wait(timeout=15)
        finally:
            proc.kill()
        stderr = proc.stderr.read().decode()
    assert time.monotonic() - began < 10
    assert "Traceback" not in stderr, stderr
    assert "shell is gone" in stderr
    assert code in (0, 1)


def test_startup_imports_no_heavy_library(tmp_path: Path) -> None:
    """Building every capability must not import the heavy libraries (they load on first use)."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from sidecar.app import build, CAPABILITIES\n"
        "from sidecar.config import DaemonConfig\n"
        "from sidecar.notifier import Notifier\n"
        "from sidecar.store.database import Database\n"
        f"c = DaemonConfig(data_dir=Path({str(tmp_path)!r}), debug_methods=True)\n"
        "db = Database(c.database_path); db.open()\n"
        "build(c, db, Notifier())\n"
        "heavy = {'wasmtime', 'asyncpg', 'aiomysql', 'aioboto3', 'pywhispercpp', 'faster_whisper', 'pyttsx3',"
        " 'jsonschema', 'yaml', 'psutil', 'cryptography', 'keyring', 'dulwich', 'mcp'}\n"
        "print(sorted(heavy & set(sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_debug_methods_are_a_capability_only_with_the_flag(tmp_path: Path) -> None:
    from sidecar.app import CAPABILITIES
    from sidecar.config import DaemonConfig
    from sidecar.debug.capability import DebugCapability

    assert DebugCapability in CAPABILITIES
    assert not DebugCapability.wanted(DaemonConfig(data_dir=tmp_path))
    assert DebugCapability.wanted(DaemonConfig(data_dir=tmp_path, debug_methods=True))


async def test_the_shared_http_client_is_made_on_first_use_and_closed(tmp_path: Path, http_fixture: Any) -> None:
    from tests.support.http_fixture import Response

    http_fixture.route("GET", "/hello", Response.json({"hi": 1}))
    async with in_process(tmp_path / "d") as daemon:
        shared = daemon.platform.http
        assert not shared.started
        client = await shared.client()
        assert await shared.client() is client
        reply = await client.get(f"{http_fixture.url}/hello")
        assert reply.json() == {"hi": 1}
    assert client.is_closed


@pytest.mark.parametrize(("asked", "outcome"), [
    (None, "ours"), ("2026-11-01", "ours"),
    ("2099-01-01", "ours"),  # newer: answered with ours; the client decides whether it can speak it
    ("2020-01-01", "refused"),  # older than the oldest this daemon speaks
    ("v2", "refused"), ("2026-1-1", "refused"), ("", "refused"),
])
async def test_protocol_version_negotiation(tmp_path: Path, asked: str | None, outcome: str) -> None:
    async with in_process(tmp_path / "d", initialize=False) as daemon:
        params = {} if asked is None else {"protocolVersion": asked}
        response = await daemon.request("initialize", params)
        if outcome == "ours":
            assert response["result"]["protocolVersion"] == "2026-11-01"
            assert response["result"]["capabilities"]["protocolVersions"] == ["2026-11-01"]
        else:
            error = response["error"]
            assert error["code"] == -32602 and error["data"]["path"] == "$.params.protocolVersion"
            assert "2026-11-01" in error["message"]
            # refused means not initialized: the client may try again
            assert (await daemon.request("initialize", {}))["result"]["protocolVersion"] == "2026-11-01"
