"""The rule for every write method: a request answered -32800 applied nothing; a request
whose write committed answers its result, even when a cancel arrived (hardening #3).

Hypothesis chooses when the cancel arrives (how many event-loop turns after the request),
so it lands before, during and after the store write.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.spec import MethodSpec
from sidecar.capability import Capability
from sidecar.server.context import RequestContext
from sidecar.server.router import Router
from tests.harness import InProcessDaemon, in_process


class CountParams(msgspec.Struct):
    n: int


class CountResult(msgspec.Struct):
    n: int


#: a write that awaits after committing, as services that publish or notify asynchronously
#: do: the guard must keep a cancel that arrives after the commit from answering -32800
PROBE_WRITE = MethodSpec("probe/write", CountParams, CountResult, "Store n, then await more work.", lane="probe")


class ProbeWrites(Capability):
    name = "probe"

    def register(self, router: Router) -> None:
        db = self.platform.db

        @router.method(PROBE_WRITE)
        async def write(ctx: RequestContext, params: CountParams) -> CountResult:
            await db.write(lambda conn: conn.execute(
                "INSERT INTO settings (key, value) VALUES ('probe.n', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (str(params.n),)))
            for _ in range(5):
                await anyio.sleep(0)  # after the commit: a cancel arriving now must not take effect
            return CountResult(params.n)


async def _stored_setting(daemon: InProcessDaemon, key: str) -> Any:
    rows = await daemon.platform.db.read(
        lambda conn: conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchall())
    return msgspec.json.decode(rows[0][0]) if rows else None


async def _secret_names(daemon: InProcessDaemon) -> set[str]:
    rows = await daemon.platform.db.read(lambda conn: conn.execute("SELECT name FROM secrets").fetchall())
    return {r[0] for r in rows}


async def _cancelled_midway(daemon: InProcessDaemon, method: str, params: Any, turns: int) -> dict[str, Any]:
    """Send the request, let the event loop turn `turns` times, cancel it, return its answer."""
    out: dict[str, Any] = {}

    async def send() -> None:
        out["answer"] = await daemon.request(method, params)

    async with anyio.create_task_group() as tg:
        tg.start_soon(send)
        await anyio.lowlevel.checkpoint()  # `send` has written the request
        request_id = daemon._next_id
        for _ in range(turns):
            await anyio.sleep(0) if turns % 3 else await anyio.sleep(0.0005)
        daemon.notify("$/cancelRequest", {"id": request_id})
    return out["answer"]


Write = Callable[[InProcessDaemon, int], Awaitable[bool]]  # True: it was answered cancelled


async def _settings_set(daemon: InProcessDaemon, turns: int) -> bool:
    before = await _stored_setting(daemon, "log.level")
    target = "error" if before == "warning" else "warning"
    changed_before = sum(n["method"] == "settings/changed" for n in daemon.notifications)
    answer = await _cancelled_midway(daemon, "settings/set", {"key": "log.level", "value": target}, turns)
    after = await _stored_setting(daemon, "log.level")
    changed = sum(n["method"] == "settings/changed" for n in daemon.notifications) - changed_before
    if "error" in answer:
        assert answer["error"]["code"] == -32800
        assert after == before and changed == 0, "answered cancelled, yet applied"
    else:
        assert answer["result"]["value"] == target and after == target and changed == 1
    return "error" in answer


async def _settings_reset(daemon: InProcessDaemon, turns: int) -> bool:
    await daemon.call("settings/set", {"key": "server.slowRequestMs", "value": 77})
    answer = await _cancelled_midway(daemon, "settings/reset", {"key": "server.slowRequestMs"}, turns)
    after = await _stored_setting(daemon, "server.slowRequestMs")
    if "error" in answer:
        assert answer["error"]["code"] == -32800 and after == 77
    else:
        assert after is None
    return "error" in answer


async def _settings_import(daemon: InProcessDaemon, turns: int) -> bool:
    value = 1000 + turns
    answer = await _cancelled_midway(daemon, "settings/import", {"settings": {"server.slowRequestMs": value}}, turns)
    after = await _stored_setting(daemon, "server.slowRequestMs")
    if "error" in answer:
        assert answer["error"]["code"] == -32800 and after != value
    else:
        assert after == value
    return "error" in answer


async def _secrets_set(daemon: InProcessDaemon, turns: int) -> bool:
    name = f"k{turns}.t{len(await _secret_names(daemon))}"
    answer = await _cancelled_midway(daemon, "secrets/set", {"name": name, "value": "v"}, turns)
    present = name in await _secret_names(daemon)
    if "error" in answer:
        assert answer["error"]["code"] == -32800 and not present
    else:
        assert present
    return "error" in answer


async def _secrets_delete(daemon: InProcessDaemon, turns: int) -> bool:
    name = f"d{turns}"
    await daemon.call("secrets/set", {"name": name, "value": "v"})
    answer = await _cancelled_midway(daemon, "secrets/delete", {"name": name}, turns)
    present = name in await _secret_names(daemon)
    if "error" in answer:
        assert answer["error"]["code"] == -32800 and present
    else:
        assert not present
    return "error" in answer


async def _probe_write(daemon: InProcessDaemon, turns: int) -> bool:
    before = await _stored_setting(daemon, "probe.n")
    target = (before or 0) + 1
    answer = await _cancelled_midway(daemon, "probe/write", {"n": target}, turns)
    after = await _stored_setting(daemon, "probe.n")
    if "error" in answer:
        assert answer["error"]["code"] == -32800 and after == before, "answered cancelled, yet applied"
    else:
        assert after == target and answer["result"]["n"] == target
    return "error" in answer


WRITES: dict[str, Write] = {
    "probe/write": _probe_write,
    "settings/set": _settings_set,
    "settings/reset": _settings_reset,
    "settings/import": _settings_import,
    "secrets/set": _secrets_set,
    "secrets/delete": _secrets_delete,
}


@pytest.mark.parametrize("method", sorted(WRITES))
def test_answered_cancelled_means_not_applied(method: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    data_dir: Path = tmp_path_factory.mktemp("cancel") / "data"
    outcomes: list[bool] = []

    @settings(max_examples=25, deadline=None, database=None)
    @given(turns=st.integers(min_value=0, max_value=40))
    def check(turns: int) -> None:
        async def trial() -> None:
            async with in_process(data_dir, extra=(ProbeWrites,)) as daemon:
                outcomes.append(await WRITES[method](daemon, turns))
        anyio.run(trial)

    check()
    # the cancel must have landed both before the write (cancelled) and after it (applied)
    assert True in outcomes and False in outcomes, outcomes


def test_every_write_method_is_covered() -> None:
    """A new write method in a lane that this test does not know must be added above."""
    from protocol.catalog import METHODS

    writes = {m.name for m in METHODS if m.lane in ("settings", "secrets")
              and not m.name.endswith(("/get", "/list", "/export"))}
    assert writes == set(WRITES) - {"probe/write"}
