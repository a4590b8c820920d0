"""Dispatch and JSON-RPC 2.0 batches: one response per request element, in one message."""

from __future__ import annotations

import queue
from typing import Any

import msgspec

from sidecar.client import DaemonClient

TIMEOUT = 30


def req(id_: Any, method: str, params: Any = None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": id_, "method": method}
    if params is not None:
        message["params"] = params
    return message


def note(method: str, params: Any = None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    return message


class Wire:
    """Every response (or batch of responses) the daemon writes, in order, one per message."""

    def __init__(self, client: DaemonClient) -> None:
        self.payloads: queue.Queue[bytes] = queue.Queue()
        client.on_message = self._on_message

    def _on_message(self, payload: bytes) -> None:
        message = msgspec.json.decode(payload)
        if not (isinstance(message, dict) and "method" in message):  # not a notification
            self.payloads.put(payload)

    def next(self) -> Any:
        try:
            return msgspec.json.decode(self.payloads.get(timeout=TIMEOUT))
        except queue.Empty:
            raise AssertionError("nothing arrived") from None

    def drain(self) -> list[Any]:
        out = []
        while not self.payloads.empty():
            out.append(msgspec.json.decode(self.payloads.get_nowait()))
        return out


def test_a_plain_request_is_answered_with_its_id(daemon: DaemonClient) -> None:
    assert daemon.call("system/ping", id="abc") == {"jsonrpc": "2.0", "id": "abc", "result": {"pong": True}}
    assert daemon.call("system/ping", id=0) == {"jsonrpc": "2.0", "id": 0, "result": {"pong": True}}


def test_batch_of_requests_gets_one_response_each_in_one_array(daemon: DaemonClient) -> None:
    wire = Wire(daemon)
    daemon.send([req(1, "system/ping"), req("two", "system/ping"), req(3, "debug/sleep", {"seconds": 0})])
    batch = wire.next()
    assert isinstance(batch, list)
    assert sorted(map(str, (r["id"] for r in batch))) == ["1", "3", "two"]
    assert all(r["jsonrpc"] == "2.0" and "result" in r for r in batch)


def test_notifications_in_a_batch_get_no_response(daemon: DaemonClient) -> None:
    wire = Wire(daemon)
    daemon.send([note("system/ping"), req(1, "system/ping"), note("debug/sleep", {"seconds": 0}),
                 note("no/such"), req(2, "debug/sleep", {"seconds": 0})])
    batch = wire.next()
    assert sorted(r["id"] for r in batch) == [1, 2]


def test_all_notification_batch_gets_nothing(daemon: DaemonClient) -> None:
    wire = Wire(daemon)
    daemon.send([note("system/ping"), note("debug/sleep", {"seconds": 0.05}), note("nope"),
                 note("initialized")])
    # a later request is answered, and it is the only thing that arrives
    daemon.send(req(9, "debug/sleep", {"seconds": 0.2}))
    assert wire.next()["id"] == 9
    daemon.send(req(10, "system/ping"))
    assert wire.next()["id"] == 10
    assert wire.drain() == []


def test_empty_batch_is_one_invalid_request(daemon: DaemonClient) -> None:
    wire = Wire(daemon)
    daemon.send_bytes(b"[]")
    message = wire.next()
    assert isinstance(message, dict)
    assert message["id"] is None
    assert message["error"]["code"] == -32600
    daemon.send(req(1, "system/ping"))
    assert wire.next()["id"] == 1


def test_batch_of_invalid_elements_answers_each(daemon: DaemonClient) -> None:
    wire = Wire(daemon)
    daemon.send_bytes(b"[1, 2, 3]")
    batch = wire.next()
    assert isinstance(batch, list) and len(batch) == 3
    assert all(r["id"] is None and r["error"]["code"] == -32600 for r in batch)


def test_mixed_batch_answers_every_element_in_one_array(daemon: DaemonClient) -> None:
    wire = Wire(daemon)
    daemon.send([
        req("good", "system/ping"),
        1,
        {"foo": 1},
        req("unknown", "no/such/method"),
        req("params", "debug/sleep", {"seconds": "long"}),
        req("async", "debug/sleep", {"seconds": 0.05}),
        note("system/ping"),
        req("fail", "debug/fail"),
        req("settings", "settings/get", {"key": "server.slowRequestMs"}),
        req("stream", "system/stream", {"count": 2}),
    ])
    batch = wire.next()
    assert isinstance(batch, list)
    by_id: dict[Any, list[dict[str, Any]]] = {}
    for response in batch:
        by_id.setdefault(response["id"], []).append(response)
    assert len(batch) == 9
    assert by_id["good"][0]["result"] == {"pong": True}
    assert [r["error"]["code"] for r in by_id[None]] == [-32600, -32600]
    assert by_id["unknown"][0]["error"]["code"] == -32601
    assert by_id["params"][0]["error"]["data"]["path"] == "$.params.seconds"
    assert "slept" in by_id["async"][0]["result"]
    assert by_id["fail"][0]["error"]["code"] == -32603
    assert by_id["settings"][0]["result"]["value"] == 1000
    assert by_id["stream"][0]["result"]["count"] == 2
    assert all(len(v) == 1 for k, v in by_id.items() if k is not None)
    # the stream's notifications came before the batch answer, and nothing else follows
    chunks = [n for n in _notifications(daemon) if n["method"] == "system/streamChunk"]
    assert [c["params"]["seq"] for c in chunks] == [0, 1]
    assert all(c["params"]["requestId"] == "stream" for c in chunks)
    assert wire.drain() == []  # nothing more on the wire


def test_duplicate_ids_in_a_batch_are_each_answered(daemon: DaemonClient) -> None:
    wire = Wire(daemon)
    daemon.send([req(5, "system/ping"), req(5, "debug/sleep", {"seconds": 0}), req(5, "nope")])
    batch = wire.next()
    assert [r["id"] for r in batch] == [5, 5, 5]
    assert sum("error" in r for r in batch) == 1


def test_batches_and_single_messages_interleave(daemon: DaemonClient) -> None:
    wire = Wire(daemon)
    daemon.send([req("slow", "debug/sleep", {"seconds": 0.3}), req("quick", "system/ping")])
    daemon.send(req("single", "system/ping"))
    first = wire.next()
    assert first["id"] == "single"  # not held back behind the batch's slow element
    batch = wire.next()
    assert sorted(r["id"] for r in batch) == ["quick", "slow"]


def test_request_method_sent_as_notification_runs_without_answer(daemon: DaemonClient) -> None:
    wire = Wire(daemon)
    daemon.notify("settings/set", {"key": "server.slowRequestMs", "value": 1234})
    assert daemon.request("settings/get", {"key": "server.slowRequestMs"})["value"] == 1234
    messages = wire.drain()
    assert len(messages) == 1 and messages[0]["result"]["value"] == 1234  # the get's answer only


def _notifications(client: DaemonClient) -> list[dict[str, Any]]:
    out = []
    while not client.notifications.empty():
        out.append(client.notifications.get_nowait())
    return out


def test_a_null_id_request_in_a_batch_is_answered_in_the_batch(daemon: DaemonClient) -> None:
    wire = Wire(daemon)
    daemon.send([req(None, "system/health"), req(1, "system/ping"), req(None, "system/ping")])
    batch = wire.next()
    assert isinstance(batch, list) and len(batch) == 3
    assert sorted(str(r["id"]) for r in batch) == ["1", "None", "None"]
    assert all("result" in r for r in batch)


def test_a_long_running_method_needs_an_id(daemon: DaemonClient) -> None:
    """Nobody can cancel a request without an id: a long-running one is refused (hardening #6)."""
    wire = Wire(daemon)
    daemon.send(req(None, "system/stream", {"count": 1, "intervalMs": 3600000}))
    answer = wire.next()
    assert answer["id"] is None and answer["error"]["code"] == -32600
    assert "id" in answer["error"]["message"]
    # as a notification it is not run at all: 64 of them hold no slot
    for _ in range(64):
        daemon.send({"jsonrpc": "2.0", "method": "system/stream", "params": {"count": 1, "intervalMs": 3600000}})
    daemon.send(req(2, "system/health"))
    health = wire.next()
    assert health["id"] == 2 and health["result"]["activeRequests"] == 0
