"""Errors on the wire: every JSON-RPC error class, its code, its `data.kind`, and that the
daemon keeps serving after each.

Decisions pinned here:
- ids are integers (any size) or strings; a float id (even 2.0), a boolean, an object or an
  array is an invalid request answered with `id: null` (JSON-RPC: ids SHOULD NOT contain
  fractional parts, and echoing a float back cannot be matched reliably by every client).
- `id: null` is a request (discouraged by JSON-RPC, but valid) and is answered with `id: null`.
- params must be an object: an array, even an empty one, is -32602.
- a notification method (`initialized`, `exit`, `$/cancelRequest`) sent with an id is not run
  and answers -32601 naming the method.
"""

from __future__ import annotations

import queue
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from sidecar.client import DaemonClient
from tests.conftest import serve_argv

TIMEOUT = 30


@pytest.fixture(scope="module")
def shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("errors")


@pytest.fixture(scope="module")
def shared(shared_dir: Path) -> Iterator[DaemonClient]:
    """One daemon for the whole module: every error here must leave it serving anyway."""
    with DaemonClient(serve_argv(shared_dir)) as client:
        client.initialize("pytest-errors")
        yield client


@pytest.fixture
def daemon(shared: DaemonClient) -> Iterator[DaemonClient]:
    """The shared daemon (this overrides conftest's fresh one); each test must consume every
    message it causes, and leave the daemon alive and stdout clean."""
    yield shared
    shared.on_message = None
    assert shared.proc.poll() is None, "the daemon died"
    assert shared.unrouted.empty(), shared.unrouted.get_nowait()
    assert shared.garbage == []
    while not shared.notifications.empty():
        shared.notifications.get_nowait()


def unrouted(client: DaemonClient) -> Any:
    """The next message that had no waiting caller (id-less errors, batches)."""
    try:
        return client.unrouted.get(timeout=TIMEOUT)
    except queue.Empty:
        raise AssertionError("no message arrived") from None


def assert_alive(client: DaemonClient) -> None:
    assert client.request("system/ping") == {"pong": True}


def parse_error_for(daemon: DaemonClient, payload: bytes) -> dict[str, Any]:
    """Send `payload`, check it was answered -32700 with a null id; the error's data."""
    daemon.send_bytes(payload)
    message = unrouted(daemon)
    assert message["id"] is None
    assert message["error"]["code"] == -32700
    return message["error"]["data"]


def test_parse_error_and_the_daemon_keeps_reading(daemon: DaemonClient) -> None:
    for junk in (b'{"jsonrpc":"2.0","id":1,', b"\xff\xfe not json", b"nul\x00l", b"}"):
        assert parse_error_for(daemon, junk)["kind"] == "parse_error"
        assert_alive(daemon)
    assert daemon.garbage == []


@pytest.mark.parametrize("bad", [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80abc"])
@pytest.mark.parametrize("where", ["id", "method", "params", "key", "id-key", "unknown-key"])
def test_invalid_utf8_inside_a_string_is_a_parse_error(daemon: DaemonClient, bad: bytes, where: str) -> None:
    """msgspec raises UnicodeDecodeError (not DecodeError) for these."""
    payload = {
        "id": b'{"jsonrpc":"2.0","id":"' + bad + b'","method":"system/ping"}',
        "method": b'{"jsonrpc":"2.0","id":1,"method":"system/' + bad + b'"}',
        "params": b'{"jsonrpc":"2.0","id":1,"method":"debug/print","params":{"text":"' + bad + b'"}}',
        "key": b'[{"jsonrpc":"2.0","id":1,"method":"system/ping","' + bad + b'":1}]',
        # a mangled "id" key must not turn the request into a notification (exit would run)
        "id-key": b'{"jsonrpc":"2.0","method":"exit","' + bad + b'id":1}',
        "unknown-key": b'{"jsonrpc":"2.0","method":"exit","x' + bad + b'":1}',
    }[where]
    assert parse_error_for(daemon, payload)["reason"] == "not valid UTF-8"
    assert_alive(daemon)


@pytest.mark.parametrize("depth", [5_000, 100_000])
def test_deeply_nested_json_is_a_parse_error_not_a_crash(daemon: DaemonClient, depth: int) -> None:
    """msgspec raises RecursionError (not DecodeError) past its nesting limit."""
    nested = b"[" * depth + b"]" * depth
    for payload in (nested, b'{"jsonrpc":"2.0","id":1,"method":"system/ping","params":{"a":' + nested + b"}}"):
        assert parse_error_for(daemon, payload)["reason"] == "nested too deeply"
        assert_alive(daemon)


@pytest.mark.parametrize(("message", "path"), [
    ({"jsonrpc": "1.0", "id": 7, "method": "system/ping"}, "$.jsonrpc"),
    ({"id": 7, "method": "system/ping"}, "$.jsonrpc"),  # missing
    ({"jsonrpc": "2.0", "id": 7, "method": 5}, "$.method"),
    ({"jsonrpc": "2.0", "id": 7}, "$.method"),  # missing
    ({"jsonrpc": "2.0", "id": 7, "method": "system/ping", "params": "x"}, "$.params"),
])
def test_invalid_request_keeps_a_usable_id(daemon: DaemonClient, message: dict[str, Any], path: str) -> None:
    waiter = daemon.expect(7)
    daemon.send(message)
    response = daemon.wait(7, waiter, TIMEOUT)
    assert response["error"]["code"] == -32600
    assert response["error"]["data"]["kind"] == "invalid_request"
    assert response["error"]["data"]["path"] == path
    assert_alive(daemon)


@pytest.mark.parametrize("bad_id", [{"a": 1}, [1], 1.5, 2.0, True, 1e300])
def test_ids_of_the_wrong_type_are_invalid_requests_answered_with_null(daemon: DaemonClient, bad_id: Any) -> None:
    daemon.send({"jsonrpc": "2.0", "id": bad_id, "method": "system/ping"})
    message = unrouted(daemon)
    assert message["id"] is None
    assert message["error"]["code"] == -32600
    assert message["error"]["data"]["path"] == "$.id"
    assert_alive(daemon)


@pytest.mark.parametrize("method", ["system/ping", "debug/sleep"])
def test_null_id_is_a_request_and_is_answered(daemon: DaemonClient, method: str) -> None:
    params = {"seconds": 0} if method == "debug/sleep" else None
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": None, "method": method}
    if params is not None:
        message["params"] = params
    daemon.send(message)
    response = unrouted(daemon)
    assert response["id"] is None and "result" in response


@pytest.mark.parametrize("big_id", [10**30, -(10**30), 2**64, "x" * 10_000, "", "ünï©ødé\u2028"])
def test_unusual_ids_are_echoed_exactly(daemon: DaemonClient, big_id: Any) -> None:
    assert daemon.call("system/ping", id=big_id, timeout=TIMEOUT) == {
        "jsonrpc": "2.0", "id": big_id, "result": {"pong": True}}


def test_method_not_found_names_the_method(daemon: DaemonClient) -> None:
    response = daemon.call("nope/nothing", {"a": 1})
    assert response["error"]["code"] == -32601
    assert response["error"]["data"] == {"kind": "method_not_found", "method": "nope/nothing"}


@pytest.mark.parametrize("method", ["initialized", "exit", "$/cancelRequest"])
def test_a_notification_sent_as_a_request_is_not_run(daemon: DaemonClient, method: str) -> None:
    response = daemon.call(method, {"id": 1} if method == "$/cancelRequest" else None)
    assert response["error"]["code"] == -32601
    assert response["error"]["data"]["method"] == method
    assert_alive(daemon)  # in particular, `exit` did not stop the daemon


@pytest.mark.parametrize(("method", "params", "path"), [
    ("debug/spawn", {"argv": ["true", 1]}, "$.params.argv[1]"),
    ("debug/sleep", {"seconds": "soon"}, "$.params.seconds"),
    ("debug/sleep", {"seconds": -1}, "$.params.seconds"),
    ("debug/sleep", {}, "$.params.seconds"),  # missing
    ("system/stream", {"count": 1.5}, "$.params.count"),
    ("settings/set", {"key": "server.slowRequestMs", "value": "fast"}, "$.params.value"),
])
def test_invalid_params_name_the_field_path(daemon: DaemonClient, method: str, params: Any, path: str) -> None:
    response = daemon.call(method, params)
    error = response["error"]
    assert error["code"] == -32602
    assert error["data"]["kind"] == "invalid_params"
    assert error["data"]["path"] == path
    assert path in error["message"]


@pytest.mark.parametrize("params", [[], [1], ["a", "b"]])
def test_params_as_an_array_are_invalid_params(daemon: DaemonClient, params: list[Any]) -> None:
    response = daemon.call("system/ping", params)
    assert response["error"]["code"] == -32602
    assert response["error"]["data"]["path"] == "$.params"


@pytest.mark.parametrize("method", ["debug/fail", "debug/failAsync"])
def test_internal_error_is_opaque_on_the_wire_and_detailed_in_the_log(
        daemon: DaemonClient, shared_dir: Path, method: str) -> None:
    """Inline (plain) handlers and async handlers in their own task fail the same way."""
    wire: list[bytes] = []
    daemon.on_message = wire.append
    response = daemon.call(method)
    error = response["error"]
    assert error["code"] == -32603
    incident = error["data"]["incidentId"]
    assert error["data"]["kind"] == "internal"
    assert re.fullmatch(r"[0-9a-f]{8,}", incident)
    assert incident in error["message"]
    assert b"this text must stay in the log" not in b"".join(wire)
    assert b"RuntimeError" not in b"".join(wire) and b"Traceback" not in b"".join(wire)
    assert_alive(daemon)  # the daemon keeps serving
    again = daemon.call(method)["error"]["data"]["incidentId"]
    assert again != incident
    needle = f"RuntimeError: {method} was called; this text must stay in the log"
    deadline = time.monotonic() + 10  # a thread writes the file, a moment after the fact
    while True:
        log = (shared_dir / "logs" / "sidecar.log").read_text()
        if incident in log and needle in log[log.index(incident):]:
            break
        assert time.monotonic() < deadline, "the incident's traceback never reached the log file"
        time.sleep(0.01)
    at = log.index(incident)
    assert needle in log[at:at + 4000]


def test_application_error_has_its_code_and_kind(daemon: DaemonClient) -> None:
    response = daemon.call("settings/get", {"key": "no.suchSetting"})
    error = response["error"]
    assert error["code"] == -32001
    assert error["data"]["kind"] == "not_found"
    assert -32099 <= error["code"] <= -32000


def test_requests_before_initialize_are_refused(spawn: Callable[..., DaemonClient]) -> None:
    client = spawn(initialize=False)
    response = client.call("system/ping")
    assert response["error"]["code"] == -32002
    assert response["error"]["data"]["kind"] == "not_initialized"
    client.send([{"jsonrpc": "2.0", "id": "b1", "method": "system/ping"},
                 {"jsonrpc": "2.0", "id": "b2", "method": "debug/sleep", "params": {"seconds": 0}}])
    batch = unrouted(client)
    assert sorted(r["id"] for r in batch) == ["b1", "b2"]
    assert all(r["error"]["data"]["kind"] == "not_initialized" for r in batch)
    client.notify("system/ping")  # a notification before initialize: ignored, no answer
    client.initialize()
    assert_alive(client)
    assert client.unrouted.empty()


def test_second_initialize_is_an_error(daemon: DaemonClient) -> None:
    response = daemon.call("initialize", {"clientInfo": {"name": "again"}})
    assert response["error"]["code"] == -32600
    assert_alive(daemon)


def test_after_shutdown_requests_are_refused_and_exit_is_clean(spawn: Callable[..., DaemonClient]) -> None:
    daemon = spawn()
    assert daemon.request("shutdown") is None
    for method in ("system/ping", "debug/sleep", "initialize", "shutdown"):
        response = daemon.call(method, {"seconds": 0} if method == "debug/sleep" else None)
        assert response["error"]["data"]["kind"] == "shutting_down", method
    daemon.notify("exit")
    assert daemon.proc.wait(timeout=TIMEOUT) == 0
    assert daemon.garbage == []


def test_every_error_response_is_well_formed(daemon: DaemonClient) -> None:
    """The shapes shells rely on: jsonrpc, id, and error {code:int, message:str, data.kind}."""
    wire: list[bytes] = []
    daemon.on_message = wire.append
    daemon.send_bytes(b"{")
    unrouted(daemon)
    daemon.call("nope")
    daemon.call("debug/sleep", {"seconds": "x"})
    daemon.call("debug/fail")
    daemon.call("settings/get", {"key": "a.b"})
    for raw in wire:
        message = msgspec.json.decode(raw)
        assert set(message) == {"jsonrpc", "id", "error"}
        assert message["jsonrpc"] == "2.0"
        assert isinstance(message["error"]["code"], int)
        assert isinstance(message["error"]["message"], str) and message["error"]["message"]
        assert isinstance(message["error"]["data"]["kind"], str)
    assert len(wire) == 5


@pytest.mark.parametrize(("argv", "code", "kind"), [
    (["/nonexistent/sidecar-test-program"], -32001, "not_found"),
    (["/etc/passwd"], -32602, "invalid_params"),  # not executable
    (["/"], -32602, "invalid_params"),  # a folder
    (["x" * 5000], -32602, "invalid_params"),  # a name too long
    (["true", "a\x00b"], -32602, "invalid_params"),  # NUL in an argument
])
def test_debug_spawn_of_what_cannot_run_is_a_typed_error(daemon: DaemonClient, argv: list[str], code: int,
                                                         kind: str) -> None:
    # found by tests/test_params_fuzz.py: these answered -32603 (internal)
    error = daemon.call("debug/spawn", {"argv": argv})["error"]
    assert (error["code"], error["data"]["kind"]) == (code, kind), error
    assert daemon.request("system/ping") == {"pong": True}
