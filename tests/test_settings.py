"""Typed settings (issue point 14): get/set/list/reset, validation, persistence, change
notifications, and `log.level` actually changing what is logged."""

from __future__ import annotations

import math
import queue
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apsw
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.client import DaemonClient, RpcError
from sidecar.errors import InvalidValue
from sidecar.settings.registry import CORE_SETTINGS, VALUE_PATH, SettingDef

SLOW = "server.slowRequestMs"


def drain(q: queue.Queue[dict[str, Any]]) -> list[dict[str, Any]]:
    items = []
    while not q.empty():
        items.append(q.get_nowait())
    return items


def test_get_set_reset_list(daemon: DaemonClient) -> None:
    level = daemon.request("settings/get", {"key": "log.level"})
    assert level["value"] == level["default"] == "info"
    assert level["isDefault"] is True
    assert level["type"] == "enum" and level["choices"] == ["debug", "info", "warning", "error"]

    updated = daemon.request("settings/set", {"key": SLOW, "value": 250})
    assert updated["value"] == 250 and updated["isDefault"] is False
    assert updated["minimum"] == 1 and updated["maximum"] == 3_600_000
    assert daemon.request("settings/get", {"key": SLOW})["value"] == 250

    listed = daemon.request("settings/list")["settings"]
    assert [s["key"] for s in listed] == sorted(d.key for d in CORE_SETTINGS)
    assert next(s for s in listed if s["key"] == SLOW)["value"] == 250

    reset = daemon.request("settings/reset", {"key": SLOW})
    assert reset["value"] == 1000 and reset["isDefault"] is True
    assert daemon.request("settings/get", {"key": SLOW})["isDefault"] is True


def test_pipelined_set_then_get_sees_the_write(daemon: DaemonClient) -> None:
    """settings/* are ordered: a get sent right after a set (without waiting) sees it."""
    waiters = {i: daemon.expect(i) for i in range(100, 120)}
    for i in range(100, 120, 2):
        daemon.send({"jsonrpc": "2.0", "id": i, "method": "settings/set", "params": {"key": SLOW, "value": i}})
        daemon.send({"jsonrpc": "2.0", "id": i + 1, "method": "settings/get", "params": {"key": SLOW}})
    for i in range(100, 120, 2):
        assert daemon.wait(i + 1, waiters[i + 1])["result"]["value"] == i


@pytest.mark.parametrize(("key", "value", "reason"), [
    (SLOW, "fast", "takes a number"),
    (SLOW, True, "takes a number"),
    (SLOW, 1.5, "whole number"),
    (SLOW, 0, "at least 1"),
    (SLOW, 3_600_001, "at most 3600000"),
    (SLOW, None, "takes a number"),
    (SLOW, [1], "takes a number"),
    ("log.level", "verbose", "must be one of debug, info, warning, error"),
    ("log.level", 3, "takes a string"),
])
def test_invalid_values_answer_invalid_params(daemon: DaemonClient, key: str, value: Any, reason: str) -> None:
    with pytest.raises(RpcError) as err:
        daemon.request("settings/set", {"key": key, "value": value})
    assert err.value.code == -32602
    assert err.value.error["data"]["kind"] == "invalid_params"
    assert err.value.error["data"]["path"] == "$.params.value"
    assert reason in err.value.error["data"]["reason"]
    # nothing changed
    assert daemon.request("settings/get", {"key": key})["isDefault"] is True


def test_unknown_and_malformed_keys(daemon: DaemonClient) -> None:
    for method, params in (("settings/get", {"key": "no.such"}),
                           ("settings/set", {"key": "no.such", "value": 1}),
                           ("settings/reset", {"key": "no.such"})):
        with pytest.raises(RpcError) as err:
            daemon.request(method, params)
        assert err.value.code == -32001 and err.value.kind == "not_found"
    for key in ("", "NoDots", "a..b", "x" * 200):
        with pytest.raises(RpcError) as err:
            daemon.request("settings/get", {"key": key})
        assert err.value.code == -32602
        assert err.value.error["data"]["path"] == "$.params.key"
    with pytest.raises(RpcError) as err:
        daemon.request("settings/set", {"key": SLOW})
    assert err.value.code == -32602 and err.value.error["data"]["path"] == "$.params.value"


def test_values_persist_across_a_restart(spawn: Callable[..., DaemonClient]) -> None:
    first = spawn()
    first.request("settings/set", {"key": SLOW, "value": 4321})
    first.request("settings/set", {"key": "log.level", "value": "warning"})
    assert first.shutdown() == 0
    second = spawn()
    assert second.request("settings/get", {"key": SLOW})["value"] == 4321
    assert second.request("settings/get", {"key": "log.level"})["value"] == "warning"
    second.request("settings/reset", {"key": SLOW})
    assert second.shutdown() == 0
    third = spawn()
    assert third.request("settings/get", {"key": SLOW})["isDefault"] is True


def test_an_invalid_stored_value_falls_back_to_the_default(spawn: Callable[..., DaemonClient],
                                                           data_dir: Path) -> None:
    assert spawn().shutdown() == 0  # creates the database
    conn = apsw.Connection(str(data_dir / "sidecar.db"))
    conn.execute("INSERT INTO settings (key, value) VALUES (?, ?), (?, ?), (?, ?)",
                 (SLOW, '"not a number"', "log.level", '{"damaged json', "future.capability", "42"))
    conn.close()
    client = spawn()
    assert client.request("settings/get", {"key": SLOW})["value"] == 1000
    assert client.request("settings/get", {"key": "log.level"})["value"] == "info"
    assert "future.capability" not in {s["key"] for s in client.request("settings/list")["settings"]}


def test_changed_notification(daemon: DaemonClient) -> None:
    daemon.request("settings/set", {"key": SLOW, "value": 77})
    # the notification is queued before the response, so it has arrived by now
    assert drain(daemon.notifications) == [{"jsonrpc": "2.0", "method": "settings/changed",
                                            "params": {"key": SLOW, "value": 77, "previous": 1000}}]
    daemon.request("settings/set", {"key": SLOW, "value": 77})
    daemon.request("settings/set", {"key": SLOW, "value": 77.0})  # the same whole number
    assert drain(daemon.notifications) == []
    daemon.request("settings/reset", {"key": SLOW})
    assert [n["params"] for n in drain(daemon.notifications)] == [{"key": SLOW, "value": 1000, "previous": 77}]
    daemon.request("settings/reset", {"key": SLOW})
    assert drain(daemon.notifications) == []


def test_a_value_equal_to_the_default_is_stored_but_not_announced(daemon: DaemonClient) -> None:
    result = daemon.request("settings/set", {"key": "log.level", "value": "info"})
    assert result["isDefault"] is False  # explicitly set: survives a change of default
    assert drain(daemon.notifications) == []


def _log_text(data_dir: Path) -> str:
    return (data_dir / "logs" / "sidecar.log").read_text()


def test_log_level_changes_what_is_logged(daemon: DaemonClient, data_dir: Path) -> None:
    """secrets/set logs one info line per secret: it stops at "error" and comes back at "info"."""
    daemon.request("secrets/set", {"name": "before", "value": "v"})
    assert "secret before stored" in _log_text(data_dir)
    daemon.request("settings/set", {"key": "log.level", "value": "error"})
    daemon.request("secrets/set", {"name": "quiet", "value": "v"})
    incident = daemon.call("debug/fail")["error"]["data"]["incidentId"]
    text = _log_text(data_dir)
    assert "secret quiet stored" not in text
    assert f"incident {incident}" in text  # errors still are
    daemon.request("settings/set", {"key": "log.level", "value": "info"})
    daemon.request("secrets/set", {"name": "loud", "value": "v"})
    assert "secret loud stored" in _log_text(data_dir)


def test_log_level_debug_adds_per_request_lines(daemon: DaemonClient, data_dir: Path) -> None:
    daemon.request("system/ping")
    assert "system/ping answered in" not in _log_text(data_dir)
    daemon.request("settings/set", {"key": "log.level", "value": "debug"})
    daemon.request("system/ping")
    assert "DEBUG sidecar.metrics" in _log_text(data_dir)
    assert "system/ping answered in" in _log_text(data_dir)
    assert "setting log.level changed from 'info' to 'debug'" in _log_text(data_dir)
    daemon.request("settings/set", {"key": "log.level", "value": "info"})
    before = _log_text(data_dir).count("system/ping answered in")
    daemon.request("system/ping")
    assert _log_text(data_dir).count("system/ping answered in") == before


def test_log_level_setting_applies_at_start(spawn: Callable[..., DaemonClient], data_dir: Path) -> None:
    first = spawn()
    first.request("settings/set", {"key": "log.level", "value": "warning"})
    assert first.shutdown() == 0
    assert _log_text(data_dir).count("sidecar serving on stdio") == 1
    assert spawn().shutdown() == 0
    assert _log_text(data_dir).count("sidecar serving on stdio") == 1  # info is off from the start


def test_log_level_option_overrides_the_setting(spawn: Callable[..., DaemonClient], data_dir: Path) -> None:
    client = spawn("--log-level", "info")
    client.request("settings/set", {"key": "log.level", "value": "error"})
    client.request("secrets/set", {"name": "still-logged", "value": "v"})
    assert "secret still-logged stored" in _log_text(data_dir)


def test_slow_request_threshold_setting(daemon: DaemonClient, data_dir: Path) -> None:
    daemon.request("debug/sleep", {"seconds": 0.02})
    assert "slow request: debug/sleep" not in _log_text(data_dir)
    daemon.request("settings/set", {"key": SLOW, "value": 1})
    daemon.request("debug/sleep", {"seconds": 0.02})
    assert "slow request: debug/sleep" in _log_text(data_dir)


# ---- SettingDef.check, property-based ------------------------------------------------------

INT = SettingDef("t.int", "int", 5, "", minimum=1, maximum=100)
FLOAT = SettingDef("t.float", "float", 0.5, "", minimum=0, maximum=1)
ENUM = SettingDef("t.enum", "enum", "a", "", choices=("a", "b"))
BOOL = SettingDef("t.bool", "bool", False, "")
STRING = SettingDef("t.string", "string", "", "", max_length=10)


def _accepts(definition: SettingDef, value: Any) -> bool:
    try:
        definition.check(value)
    except InvalidValue as exc:
        assert exc.path == VALUE_PATH
        return False
    return True


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=5,
)


@given(json_values)
def test_check_accepts_exactly_the_valid_values(value: Any) -> None:
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    assert _accepts(INT, value) == (is_number and math.isfinite(value) and float(value).is_integer()
                                    and 1 <= value <= 100)
    assert _accepts(FLOAT, value) == (is_number and math.isfinite(value) and 0 <= value <= 1)
    assert _accepts(ENUM, value) == (value in ("a", "b") and isinstance(value, str))
    assert _accepts(BOOL, value) == isinstance(value, bool)
    assert _accepts(STRING, value) == (isinstance(value, str) and len(value) <= 10)


@given(st.integers(1, 100) | st.integers(1, 100).map(float))
def test_check_normalises_whole_numbers(value: float) -> None:
    checked = INT.check(value)
    assert type(checked) is int and checked == value
    assert type(FLOAT.check(value / 100)) is float


def test_core_defaults_pass_their_own_check() -> None:
    for definition in CORE_SETTINGS:
        assert definition.check(definition.default) == definition.default


def test_a_huge_integer_for_a_float_setting_is_invalid_params_not_a_crash() -> None:
    with pytest.raises(InvalidValue) as caught:
        FLOAT.check(10**400)  # float() of it overflows
    assert caught.value.path == VALUE_PATH
