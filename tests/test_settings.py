"""Typed settings (issue point 14): get/set/list/reset, validation, persistence, change
notifications, and `log.level` actually changing what is logged; overrides from the
environment and the command line, export/import, list settings, worded key errors, and
name patterns anchored at the true end of the string."""

from __future__ import annotations

import importlib.util
import math
import os
import queue
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import apsw
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import settings as p
from protocol.catalog import NAMESPACES
from sidecar.client import DaemonClient, RpcError
from sidecar.errors import InvalidValue, NotFound
from sidecar.notifier import Notifier
from sidecar.settings.registry import CORE_SETTINGS, VALUE_PATH, SettingDef, SettingsError, env_var
from sidecar.settings.service import SettingsService
from sidecar.settings.store import SettingsStore
from sidecar.store.database import Database

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]

SLOW = "server.slowRequestMs"


def drain(q: queue.Queue[dict[str, Any]]) -> list[dict[str, Any]]:
    items = []
    while not q.empty():
        items.append(q.get_nowait())
    return items


def test_get_set_reset_list(daemon: DaemonClient) -> None:
    level = daemon.request("settings/get", {"key": "log.level"})
    assert level["value"] == level["default"] == "info"
    assert level["isDefault"] is True and level["source"] == "default"
    assert level["envVar"] == "SIDECAR_LOG_LEVEL"
    assert level["type"] == "enum" and level["choices"] == ["debug", "info", "warning", "error"]
    assert "shadowedBy" not in level and "storedValue" not in level

    updated = daemon.request("settings/set", {"key": SLOW, "value": 250})
    assert updated["value"] == 250 and updated["isDefault"] is False and updated["source"] == "stored"
    assert updated["minimum"] == 1 and updated["maximum"] == 3_600_000
    assert daemon.request("settings/get", {"key": SLOW})["value"] == 250

    listed = daemon.request("settings/list")["settings"]
    keys = [s["key"] for s in listed]
    assert keys == sorted(keys) and {d.key for d in CORE_SETTINGS} <= set(keys)
    assert next(s for s in listed if s["key"] == SLOW)["value"] == 250

    reset = daemon.request("settings/reset", {"key": SLOW})
    assert reset["value"] == 1000 and reset["isDefault"] is True and reset["source"] == "default"
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
    for key in ("", "NoDots", "a..b", "x" * 200, "log.level\n", "nope"):
        with pytest.raises(RpcError) as err:
            daemon.request("settings/get", {"key": key})
        assert err.value.code == -32602
        assert err.value.error["data"]["path"] == "$.params.key"
        reason = err.value.error["data"]["reason"]
        assert "\\" not in reason.replace("\\n", "")  # words, not a regular expression
        assert "a dotted name like log.level" in reason or "at most 128 characters" in reason
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


def _logged(data_dir: Path, needle: str, timeout: float = 10.0) -> str:
    """The log once `needle` is in it: a thread writes the file, a little after the fact.
    Records reach the file in order, so what was logged before `needle` is there too."""
    deadline = time.monotonic() + timeout
    while True:
        text = _log_text(data_dir) if (data_dir / "logs" / "sidecar.log").exists() else ""
        if needle in text:
            return text
        if time.monotonic() > deadline:
            raise AssertionError(f"{needle!r} not logged within {timeout} s; the log ends with:\n{text[-2000:]}")
        time.sleep(0.01)


def test_log_level_changes_what_is_logged(daemon: DaemonClient, data_dir: Path) -> None:
    """secrets/set logs one info line per secret: it stops at "error" and comes back at "info"."""
    daemon.request("secrets/set", {"name": "before", "value": "v"})
    _logged(data_dir, "secret before stored")
    daemon.request("settings/set", {"key": "log.level", "value": "error"})
    daemon.request("secrets/set", {"name": "quiet", "value": "v"})
    incident = daemon.call("debug/fail")["error"]["data"]["incidentId"]
    text = _logged(data_dir, f"incident {incident}")  # errors still are
    assert "secret quiet stored" not in text
    daemon.request("settings/set", {"key": "log.level", "value": "info"})
    daemon.request("secrets/set", {"name": "loud", "value": "v"})
    _logged(data_dir, "secret loud stored")


def test_log_level_debug_adds_per_request_lines(daemon: DaemonClient, data_dir: Path) -> None:
    daemon.request("system/ping")
    daemon.request("settings/set", {"key": SLOW, "value": 999})
    assert "system/ping answered in" not in _logged(data_dir, "setting server.slowRequestMs changed")
    daemon.request("settings/set", {"key": "log.level", "value": "debug"})
    daemon.request("system/ping")
    text = _logged(data_dir, "system/ping answered in")
    assert "DEBUG sidecar.metrics" in text
    assert "setting log.level changed from 'info' to 'debug'" in text
    daemon.request("settings/set", {"key": "log.level", "value": "info"})
    before = _logged(data_dir, "setting log.level changed from 'debug' to 'info'").count("system/ping answered in")
    daemon.request("system/ping")
    daemon.request("settings/set", {"key": SLOW, "value": 998})
    assert _logged(data_dir, "from 999 to 998").count("system/ping answered in") == before


def test_log_level_setting_applies_at_start(spawn: Callable[..., DaemonClient], data_dir: Path) -> None:
    first = spawn()
    first.request("settings/set", {"key": "log.level", "value": "warning"})
    assert first.shutdown() == 0
    assert _log_text(data_dir).count("sidecar serving on stdio") == 1
    assert spawn().shutdown() == 0
    assert _log_text(data_dir).count("sidecar serving on stdio") == 1  # info is off from the start


def test_log_level_option_overrides_the_setting(spawn: Callable[..., DaemonClient], data_dir: Path) -> None:
    client = spawn("--log-level", "info")
    stored = client.request("settings/set", {"key": "log.level", "value": "error"})
    assert stored["value"] == "info" and stored["source"] == "cli"
    assert stored["storedValue"] == "error" and stored["shadowedBy"] == "cli"
    assert drain(client.notifications) == []  # the value in effect did not change
    client.request("secrets/set", {"name": "still-logged", "value": "v"})
    _logged(data_dir, "secret still-logged stored")


def test_slow_request_threshold_setting(daemon: DaemonClient, data_dir: Path) -> None:
    daemon.request("debug/sleep", {"seconds": 0.02})
    assert "slow request: debug/sleep" not in _log_text(data_dir)
    daemon.request("settings/set", {"key": SLOW, "value": 1})
    daemon.request("debug/sleep", {"seconds": 0.02})
    _logged(data_dir, "slow request: debug/sleep")


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
        assert exc.path == VALUE_PATH or re.fullmatch(re.escape(VALUE_PATH) + r"\[\d+\]", exc.path)
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


def test_list_settings_accept_lists_of_strings() -> None:
    paths = SettingDef("agents.paths", "list", (), "", max_items=3, max_length=8)
    assert paths.check(["a", "b"]) == ("a", "b")
    assert paths.check(("a",)) == ("a",)
    assert paths.check([]) == ()
    for bad, reason, path in (("a,b", "list of strings", VALUE_PATH), ([1], "list of strings", VALUE_PATH),
                              (["a", None], "list of strings", VALUE_PATH),
                              (["a"] * 4, "at most 3 items", VALUE_PATH),
                              (["ok", "x" * 9], "longer than 8", VALUE_PATH + "[1]")):
        with pytest.raises(InvalidValue) as caught:
            paths.check(bad)
        assert reason in caught.value.message and caught.value.path == path


@given(json_values)
def test_list_check_accepts_exactly_lists_of_short_strings(value: Any) -> None:
    paths = SettingDef("agents.paths", "list", (), "", max_items=3, max_length=5)
    valid = (isinstance(value, list) and len(value) <= 3
             and all(isinstance(item, str) and len(item) <= 5 for item in value))
    assert _accepts(paths, value) == valid


# ---- the service, in-process ------------------------------------------------------------------

PATHS = SettingDef("agents.paths", "list", (), "Folders with agent files.", max_items=4, max_length=64)
AUTOSAVE = SettingDef("editor.autoSave", "bool", False, "Save on focus loss.")
TEMPERATURE = SettingDef("chat.temperature", "float", 0.7, "Sampling temperature.", minimum=0, maximum=2)
NAME = SettingDef("profile.displayName", "string", "", "Shown in shared templates.", max_length=20)
EXTRA = (PATHS, AUTOSAVE, TEMPERATURE, NAME)


class Recorder:
    """A notifier sink: what the client would receive, as JSON-like data."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    def __call__(self, name: str, event: msgspec.Struct) -> None:
        self.sent.append((name, msgspec.to_builtins(event)))

    def take(self) -> list[tuple[str, Any]]:
        sent, self.sent = self.sent, []
        return sent


def in_loop(data_dir: Path, body: Callable[[Database], Awaitable[T]]) -> T:
    async def main() -> T:
        db = Database(data_dir / "sidecar.db")
        db.open()
        try:
            return await body(db)
        finally:
            db.close()
    return anyio.run(main)


def make(db: Database, *, environ: dict[str, str] | None = None, cli: dict[str, Any] | None = None,
         definitions: tuple[SettingDef, ...] = CORE_SETTINGS + EXTRA) -> tuple[SettingsService, Recorder]:
    recorder = Recorder()
    notifier = Notifier()
    notifier.attach(recorder)
    service = SettingsService(SettingsStore(db), notifier, overrides_cli=cli, environ=environ or {})
    service.register(definitions)
    service.load()
    return service, recorder


@pytest.mark.parametrize(("key", "variable"), [
    ("log.level", "SIDECAR_LOG_LEVEL"),
    ("server.slowRequestMs", "SIDECAR_SERVER_SLOW_REQUEST_MS"),
    ("agents.paths", "SIDECAR_AGENTS_PATHS"),
    ("net.http2ProxyURL", "SIDECAR_NET_HTTP2_PROXY_URL"),
])
def test_environment_variable_names(key: str, variable: str) -> None:
    assert env_var(key) == variable


@pytest.mark.parametrize(("stored", "env", "cli", "value", "source"), [
    (None, None, None, 1000, "default"),
    (250, None, None, 250, "stored"),
    (None, "300", None, 300, "env"),
    (250, "300", None, 300, "env"),
    (None, None, 400, 400, "cli"),
    (250, "300", 400, 400, "cli"),
    (250, None, "500", 500, "cli"),  # a flag's text is parsed as an environment value is
])
def test_precedence_cli_env_stored_default(tmp_path: Path, stored: int | None, env: str | None,
                                           cli: Any, value: int, source: str) -> None:
    async def body(db: Database) -> None:
        if stored is not None:
            first, _ = make(db)
            await first.set(SLOW, stored)
        service, recorder = make(db, environ={"SIDECAR_SERVER_SLOW_REQUEST_MS": env} if env else {},
                                 cli={SLOW: cli} if cli is not None else None)
        view = service.view(SLOW)
        assert (view.value, view.source, service.value(SLOW)) == (value, source, value)
        assert view.is_default == (source == "default")
        assert view.stored == stored
        assert view.shadowed_by == (source if stored is not None and source in ("env", "cli") else None)
        assert recorder.take() == []
    in_loop(tmp_path, body)


def test_set_under_an_override_stores_but_does_not_take_effect(tmp_path: Path) -> None:
    async def body(db: Database) -> None:
        service, recorder = make(db, environ={"SIDECAR_LOG_LEVEL": "debug"})
        seen: list[tuple[str, Any, Any]] = []
        service.subscribe(lambda *change: seen.append(change))
        view = await service.set("log.level", "error")
        assert (view.value, view.source, view.stored, view.shadowed_by) == ("debug", "env", "error", "env")
        assert recorder.take() == [] and seen == []  # the value in effect did not change
        view = await service.reset("log.level")
        assert (view.value, view.source, view.stored, view.shadowed_by) == ("debug", "env", None, None)
        await service.set("log.level", "error")
        # without the variable, the stored value is in effect
        later, _ = make(db)
        assert (later.value("log.level"), later.source("log.level")) == ("error", "stored")
    in_loop(tmp_path, body)


@pytest.mark.parametrize(("variable", "text", "value"), [
    ("SIDECAR_EDITOR_AUTO_SAVE", "true", True), ("SIDECAR_EDITOR_AUTO_SAVE", "YES", True),
    ("SIDECAR_EDITOR_AUTO_SAVE", "1", True), ("SIDECAR_EDITOR_AUTO_SAVE", "no", False),
    ("SIDECAR_EDITOR_AUTO_SAVE", " False ", False), ("SIDECAR_EDITOR_AUTO_SAVE", "0", False),
    ("SIDECAR_CHAT_TEMPERATURE", "1.25", 1.25), ("SIDECAR_CHAT_TEMPERATURE", "2", 2.0),
    ("SIDECAR_SERVER_SLOW_REQUEST_MS", " 42 ", 42),
    ("SIDECAR_LOG_LEVEL", "warning", "warning"),
    ("SIDECAR_PROFILE_DISPLAY_NAME", " Ada, L. ", " Ada, L. "),
    ("SIDECAR_AGENTS_PATHS", "/a, /b ,,/c", ("/a", "/b", "/c")),
    ("SIDECAR_AGENTS_PATHS", '["/x,y", " z "]', ("/x,y", " z ")),
    ("SIDECAR_AGENTS_PATHS", "", ()),
])
def test_environment_values_are_parsed_per_type(tmp_path: Path, variable: str, text: str, value: Any) -> None:
    async def body(db: Database) -> None:
        service, _ = make(db, environ={variable: text})
        key = next(k for k in service.definitions if env_var(k) == variable)
        assert service.value(key) == value and type(service.value(key)) is type(value)
        assert service.source(key) == "env"
    in_loop(tmp_path, body)


@pytest.mark.parametrize(("variable", "text", "expected"), [
    ("SIDECAR_EDITOR_AUTO_SAVE", "maybe", "true or false"),
    ("SIDECAR_SERVER_SLOW_REQUEST_MS", "fast", "a whole number from 1 to 3600000"),
    ("SIDECAR_SERVER_SLOW_REQUEST_MS", "0", "must be at least 1"),
    ("SIDECAR_SERVER_SLOW_REQUEST_MS", "1.5", "a whole number"),
    ("SIDECAR_CHAT_TEMPERATURE", "nan", "finite"),
    ("SIDECAR_LOG_LEVEL", "loud", "one of debug, info, warning, error"),
    ("SIDECAR_PROFILE_DISPLAY_NAME", "x" * 21, "at most 20 characters"),
    ("SIDECAR_AGENTS_PATHS", "a,b,c,d,e", "at most 4 items"),
    ("SIDECAR_AGENTS_PATHS", "[1, 2]", "list of strings"),
    ("SIDECAR_AGENTS_PATHS", "[unclosed", "JSON array of strings or comma-separated"),
])
def test_a_bad_environment_value_stops_start_up_naming_it(tmp_path: Path, variable: str, text: str,
                                                          expected: str) -> None:
    async def body(db: Database) -> None:
        with pytest.raises(SettingsError) as caught:
            make(db, environ={variable: text, "SIDECAR_LOG_LEVEL_X": "ignored: no such setting"})
        message = str(caught.value)
        assert variable in message and expected in message
        assert repr(text[:60]).rstrip("'") in message  # the value, shown (cut short when long)
        assert "\n" not in message  # one line
    in_loop(tmp_path, body)


def test_command_line_overrides_are_checked(tmp_path: Path) -> None:
    async def body(db: Database) -> None:
        service, _ = make(db, cli={"log.level": None, SLOW: 7})  # None: the flag was not given
        assert service.source("log.level") == "default" and service.view(SLOW).source == "cli"
        with pytest.raises(SettingsError, match="log.level.*'loud'|'loud'.*log.level"):
            make(db, cli={"log.level": "loud"})
        with pytest.raises(SettingsError, match="no.such: no such setting"):
            make(db, cli={"no.such": 1})
        with pytest.raises(SettingsError, match="at most 3600000"):
            make(db, cli={SLOW: 10**9})
    in_loop(tmp_path, body)


def test_register_refuses_duplicates_collisions_and_bad_definitions(tmp_path: Path) -> None:
    async def body(db: Database) -> None:
        service = SettingsService(SettingsStore(db), Notifier(), environ={})
        service.register(CORE_SETTINGS)
        service.register(())  # a capability without settings
        with pytest.raises(SettingsError, match="log.level is registered twice"):
            service.register((SettingDef("log.level", "string", "", ""),))
        with pytest.raises(SettingsError, match="twice"):
            service.register((AUTOSAVE, AUTOSAVE))
        with pytest.raises(SettingsError, match="SIDECAR_A_B_C"):
            service.register((SettingDef("a.bC", "bool", False, ""), SettingDef("a.b.c", "bool", False, "")))
        with pytest.raises(SettingsError, match="not a setting key"):
            service.register((SettingDef("Bad", "bool", False, ""),))
        with pytest.raises(SettingsError, match="default"):
            service.register((SettingDef("x.y", "int", 0, "", minimum=1),))
        with pytest.raises(SettingsError, match="unknown type"):
            service.register((SettingDef("x.y", "dict", {}, ""),))
        assert set(service.definitions) == {"log.level", SLOW}  # a refused batch adds nothing
        service.register(EXTRA)
        service.load()
        assert service.value("agents.paths") == ()
        with pytest.raises(SettingsError, match="before load"):
            service.register((SettingDef("late.setting", "bool", False, ""),))
    in_loop(tmp_path, body)


def test_changes_are_announced_by_the_service(tmp_path: Path) -> None:
    async def body(db: Database) -> None:
        service, recorder = make(db)
        seen: list[tuple[str, Any, Any]] = []
        service.subscribe(lambda *change: seen.append(change))
        await service.set(SLOW, 77)
        assert recorder.take() == [("settings/changed", {"key": SLOW, "value": 77, "previous": 1000})]
        await service.set(SLOW, 77.0)  # the same whole number
        await service.set("log.level", "info")  # stored, but the value in effect is the same
        assert recorder.take() == []
        await service.set("agents.paths", ["/a"])
        assert recorder.take() == [("settings/changed", {"key": "agents.paths", "value": ["/a"], "previous": []})]
        await service.reset(SLOW)
        await service.reset(SLOW)
        assert recorder.take() == [("settings/changed", {"key": SLOW, "value": 1000, "previous": 77})]
        assert seen == [(SLOW, 77, 1000), ("agents.paths", ("/a",), ()), (SLOW, 1000, 77)]
    in_loop(tmp_path, body)


def test_a_failing_listener_does_not_stop_the_announcement(tmp_path: Path) -> None:
    async def body(db: Database) -> None:
        service, recorder = make(db)

        def broken(key: str, value: Any, previous: Any) -> None:
            raise RuntimeError("listener bug")
        seen: list[str] = []
        service.subscribe(broken)
        service.subscribe(lambda key, *_: seen.append(key))
        view = await service.set(SLOW, 5)
        assert view.value == 5 and seen == [SLOW] and len(recorder.take()) == 1
    in_loop(tmp_path, body)


def test_key_errors_are_worded_and_suggest_close_matches(tmp_path: Path) -> None:
    async def body(db: Database) -> None:
        service, _ = make(db)
        for key in ("nope", "Log.level", "log..level", "log.level\n", "log.level.", "log.lev-el", ""):
            with pytest.raises(InvalidValue) as caught:
                service.view(key)
            assert caught.value.path == "$.params.key"
            assert caught.value.message.endswith(
                "is not a setting key: a setting key is a dotted name like log.level: two or more parts, "
                "each starting with a lower-case letter, letters and digits only")
            assert repr(key) in caught.value.message
        with pytest.raises(InvalidValue, match="at most 128 characters"):
            service.view("a." + "b" * 200)
        with pytest.raises(NotFound) as missing:
            await service.set("log.levle", "info")
        assert missing.value.message == "no setting named log.levle; did you mean log.level?"
        assert missing.value.details == {"key": "log.levle", "closeMatches": ["log.level"]}
        with pytest.raises(NotFound) as missing:
            await service.reset("quite.unrelated")
        assert missing.value.message == "no setting named quite.unrelated"
        assert missing.value.details == {"key": "quite.unrelated", "closeMatches": []}
    in_loop(tmp_path, body)


def test_export_import_round_trip(tmp_path: Path) -> None:
    async def body(db: Database) -> dict[str, Any]:
        source, _ = make(db)
        await source.set(SLOW, 250)
        await source.set("agents.paths", ["/home/me/agents", "/opt/agents"])
        await source.set("editor.autoSave", True)
        exported = source.export()
        assert exported == {SLOW: 250, "agents.paths": ["/home/me/agents", "/opt/agents"], "editor.autoSave": True}
        assert msgspec.json.decode(msgspec.json.encode(p.SettingsExportResult(exported))) == {"settings": exported}
        return exported

    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    exported = in_loop(tmp_path / "one", body)

    async def into_fresh(db: Database) -> None:
        target, recorder = make(db)
        await target.set("chat.temperature", 1.5)  # not in the export: kept without replace
        recorder.take()
        assert await target.import_(exported) == sorted(exported)
        assert sorted(recorder.take(), key=str) == sorted([
            ("settings/changed", {"key": SLOW, "value": 250, "previous": 1000}),
            ("settings/changed", {"key": "agents.paths", "value": ["/home/me/agents", "/opt/agents"], "previous": []}),
            ("settings/changed", {"key": "editor.autoSave", "value": True, "previous": False}),
        ], key=str)
        assert target.export() == {**exported, "chat.temperature": 1.5}
        assert await target.import_(exported) == []  # nothing new
        assert recorder.take() == []
        reopened, _ = make(db)  # stored, not just cached
        assert reopened.export() == {**exported, "chat.temperature": 1.5}
        # replace: what is not imported is reset
        assert await target.import_({SLOW: 250}, replace=True) == ["agents.paths", "chat.temperature",
                                                                   "editor.autoSave"]
        assert target.export() == {SLOW: 250}
        assert make(db)[0].export() == {SLOW: 250}
        assert await target.import_({}, replace=True) == [SLOW]
        assert target.export() == {} and target.is_default(SLOW)
    in_loop(tmp_path / "two", into_fresh)


def test_import_is_all_or_nothing(tmp_path: Path) -> None:
    async def body(db: Database) -> None:
        service, recorder = make(db)
        await service.set(SLOW, 5)
        recorder.take()
        with pytest.raises(InvalidValue) as caught:
            await service.import_({"log.level": "debug", SLOW: 0, "no.such": 1, "log.levl": "x",
                                   "Bad Key": True, "agents.paths": ["ok", 3]})
        error = caught.value
        assert error.path == f"$.params.settings.{SLOW}"  # the first in the order given
        assert [e["path"] for e in error.details["errors"]] == [
            f"$.params.settings.{SLOW}", "$.params.settings.no.such", "$.params.settings.log.levl",
            '$.params.settings["Bad Key"]', "$.params.settings.agents.paths"]
        assert "nothing imported, 5 errors" in error.message
        assert "no setting named no.such (at $.params.settings.no.such)" in error.message
        assert "did you mean log.level?" in error.message
        assert "must be at least 1" in error.message
        # nothing changed: not the valid log.level either, neither cached nor stored
        assert service.value("log.level") == "info" and service.value(SLOW) == 5
        assert make(db)[0].export() == {SLOW: 5}
        assert recorder.take() == []
        with pytest.raises(InvalidValue) as caught:
            await service.import_({"agents.paths": ["x" * 65]})
        assert caught.value.path == "$.params.settings.agents.paths[0]"
        assert caught.value.message == "nothing imported: item 0 of agents.paths is longer than 64 characters"
    in_loop(tmp_path, body)


def test_import_under_an_override_stores_without_announcing(tmp_path: Path) -> None:
    async def body(db: Database) -> None:
        service, recorder = make(db, environ={"SIDECAR_SERVER_SLOW_REQUEST_MS": "9"})
        assert await service.import_({SLOW: 10, "log.level": "error"}) == ["log.level", SLOW]
        assert recorder.take() == [("settings/changed", {"key": "log.level", "value": "error", "previous": "info"})]
        assert service.value(SLOW) == 9 and service.export() == {"log.level": "error", SLOW: 10}
    in_loop(tmp_path, body)


def test_the_setting_struct_shows_source_and_shadowing(tmp_path: Path) -> None:
    from sidecar.settings.handlers import setting

    async def body(db: Database) -> None:
        service, _ = make(db, environ={"SIDECAR_AGENTS_PATHS": "/env"})
        await service.set("agents.paths", ["/stored"])
        wire = msgspec.json.decode(msgspec.json.encode(setting(service.view("agents.paths"))))
        assert wire == {"key": "agents.paths", "value": ["/env"], "default": [], "type": "list",
                        "description": "Folders with agent files.", "isDefault": False, "source": "env",
                        "envVar": "SIDECAR_AGENTS_PATHS", "storedValue": ["/stored"], "shadowedBy": "env",
                        "maxItems": 4, "maxLength": 64}
        plain = msgspec.json.decode(msgspec.json.encode(setting(service.view(SLOW))))
        assert plain["source"] == "default" and "shadowedBy" not in plain and "storedValue" not in plain
    in_loop(tmp_path, body)


# ---- name patterns: anchored at the true end -------------------------------------------------

def _patterns(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "pattern" and isinstance(v, str)] + \
            [x for k, v in node.items() if not (k == "pattern" and isinstance(v, str)) for x in _patterns(v)]
    if isinstance(node, list):
        return [x for item in node for x in _patterns(item)]
    return []


def _protocol_patterns() -> list[str]:
    found: list[str] = []
    for module in NAMESPACES.values():
        types = [t for m in module.METHODS for t in (m.params, m.result) if t is not None]
        types += [n.params for n in module.NOTIFICATIONS]
        found += _patterns(msgspec.json.schema_components(types)[1])
    return found


def test_every_protocol_pattern_ends_at_the_true_end() -> None:
    """Python's `$` also matches before a trailing newline: `api.key\\n` would pass."""
    patterns = _protocol_patterns()
    assert patterns, "the secrets name and the settings key carry patterns"
    for pattern in patterns:
        assert pattern.endswith(r"\Z"), f"anchor {pattern!r} with \\Z, not $"
        assert "$" not in pattern


def test_the_key_pattern_and_the_worded_check_agree() -> None:
    from sidecar.settings.registry import key_problem

    for key in ("log.level", "a.b", "server.slowRequestMs", "a1.b2.c3", "log.level\n", "nope", "a..b",
                "A.b", "a.B", "a.b_c", "é.b", "a.b ", ""):
        assert (re.search(p.KEY_PATTERN, key) is not None) == (key_problem(key) is None), key


def test_the_generated_schema_says_dollar_for_ecma_tools() -> None:
    spec = importlib.util.spec_from_file_location("gen_schema_for_settings", REPO / "tools" / "gen_schema.py")
    assert spec is not None and spec.loader is not None
    gen_schema = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen_schema)
    assert gen_schema._ecma_patterns({"pattern": r"^a\Z", "x": [{"pattern": r"^b\\Z"}]}) == \
        {"pattern": "^a$", "x": [{"pattern": r"^b\\Z"}]}  # an escaped backslash then Z stays
    generated = gen_schema.generate()
    for path, text in generated.items():
        patterns = _patterns(msgspec.json.decode(text))
        assert all(not pattern.endswith(r"\Z") for pattern in patterns), path.name
    settings_patterns = _patterns(msgspec.json.decode(generated[gen_schema.SCHEMA_DIR / "settings.schema.json"]))
    assert settings_patterns and all(pattern == p.KEY_PATTERN[:-2] + "$" for pattern in settings_patterns)


def test_newline_suffixed_keys_are_refused_by_the_protocol_and_the_service(tmp_path: Path) -> None:
    async def body(db: Database) -> None:
        service, _ = make(db)
        with pytest.raises(InvalidValue):
            await service.set("log.level\n", "debug")
        with pytest.raises(InvalidValue):
            await service.import_({"log.level\n": "debug"})
        assert service.export() == {}
    in_loop(tmp_path, body)


# ---- over RPC: overrides, export/import (need the settings capability wired) --------------------

def _env(**variables: str) -> dict[str, str]:
    """This environment without any SIDECAR_* setting variable of the developer's, plus these."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_") or k == "SIDECAR_DATA_DIR"}
    return {**base, **variables}


def test_environment_override_over_rpc(spawn: Callable[..., DaemonClient]) -> None:
    client = spawn(env=_env(SIDECAR_SERVER_SLOW_REQUEST_MS="250"))
    got = client.request("settings/get", {"key": SLOW})
    assert (got["value"], got["source"], got["isDefault"]) == (250, "env", False)
    stored = client.request("settings/set", {"key": SLOW, "value": 900})
    assert (stored["value"], stored["source"], stored["storedValue"], stored["shadowedBy"]) == (250, "env", 900, "env")
    assert drain(client.notifications) == []
    listed = {s["key"]: s for s in client.request("settings/list")["settings"]}
    assert listed[SLOW]["source"] == "env" and listed["log.level"]["source"] == "default"
    assert client.request("settings/export") == {"settings": {SLOW: 900}}
    assert client.shutdown() == 0
    plain = spawn(env=_env())
    assert plain.request("settings/get", {"key": SLOW})["source"] == "stored"
    assert plain.request("settings/get", {"key": SLOW})["value"] == 900


def test_a_bad_environment_value_is_a_start_up_error(spawn: Callable[..., DaemonClient], tmp_path: Path) -> None:
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("wb") as stderr:
        client = spawn(initialize=False, stderr=stderr, env=_env(SIDECAR_SERVER_SLOW_REQUEST_MS="fast"))
        assert client.proc.wait(timeout=20) == 2
    text = stderr_path.read_text()
    assert "SIDECAR_SERVER_SLOW_REQUEST_MS='fast'" in text and "a whole number" in text
    assert "Traceback" not in text


def test_export_import_over_rpc(daemon: DaemonClient) -> None:
    assert daemon.request("settings/export") == {"settings": {}}
    assert daemon.request("settings/import", {"settings": {SLOW: 42, "log.level": "warning"}}) == \
        {"changed": ["log.level", SLOW]}
    assert sorted(n["params"]["key"] for n in drain(daemon.notifications)) == ["log.level", SLOW]
    assert daemon.request("settings/export") == {"settings": {"log.level": "warning", SLOW: 42}}
    with pytest.raises(RpcError) as err:
        daemon.request("settings/import", {"settings": {SLOW: 7, "no.such": 1}})
    assert err.value.code == -32602 and err.value.error["data"]["path"] == "$.params.settings.no.such"
    assert "nothing imported" in err.value.error["message"]
    assert daemon.request("settings/get", {"key": SLOW})["value"] == 42  # all or nothing
    assert daemon.request("settings/import", {"settings": {}, "replace": True}) == {"changed": ["log.level", SLOW]}
    assert daemon.request("settings/export") == {"settings": {}}


def test_close_matches_over_rpc(daemon: DaemonClient) -> None:
    with pytest.raises(RpcError) as err:
        daemon.request("settings/get", {"key": "log.levle"})
    assert err.value.kind == "not_found"
    assert err.value.error["message"] == "no setting named log.levle; did you mean log.level?"
    assert err.value.error["data"]["details"]["closeMatches"] == ["log.level"]


@pytest.mark.parametrize("url", [
    "postgresql://team:hunter2-secret@db.example:5432/jobs",
    "postgresql://db.example/jobs?user=team&password=hunter2-secret",
    "mysql://team:hunter2-secret@db.example/x?passfile=/home/hunter2-secret",
])
def test_passwords_in_urls_never_reach_logs_or_messages(tmp_path: Path, url: str,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """Environment overrides and changes are logged with their values; a password inside a URL
    value is shown as *** there and in a start-up error."""
    endpoint = SettingDef("team.endpoint", "string", "", "A URL.")
    limited = SettingDef("team.short", "string", "", "At most 5 characters.", max_length=5)

    async def body(db: Database) -> None:
        with caplog.at_level("INFO", logger="sidecar"):
            service, _ = make(db, environ={"SIDECAR_TEAM_ENDPOINT": url}, definitions=CORE_SETTINGS + (endpoint,))
            assert service.value("team.endpoint") == url  # the value itself is kept as given
            await service.set("team.endpoint", url + "#2")
            with pytest.raises(SettingsError) as caught:
                make(db, environ={"SIDECAR_TEAM_SHORT": url}, definitions=CORE_SETTINGS + (limited,))
        logged = "\n".join(record.getMessage() for record in caplog.records)
        assert "team.endpoint" in logged and "***" in logged
        assert "hunter2" not in logged and "hunter2" not in str(caught.value)
        assert "db.example" in logged  # the rest of the URL still shown
    in_loop(tmp_path, body)
