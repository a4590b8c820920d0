"""`$/cancelRequest`: running and queued requests answer -32800; queued ones never start.

Timeouts here are liveness bounds, not measurements: a cancelled `debug/sleep 30` must be
answered long before its 30 s are up.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from typing import Any

from sidecar.client import DaemonClient

TIMEOUT = 15  # well under the 30 s sleeps, so a cancel that does not work fails the test


def cancel(client: DaemonClient, request_id: Any) -> None:
    client.notify("$/cancelRequest", {"id": request_id})


def send(client: DaemonClient, request_id: Any, method: str, params: Any = None, *,
         waiter: queue.Queue[dict[str, Any]] | None = None) -> queue.Queue[dict[str, Any]]:
    """Pipeline a request; returns the queue its response(s) will arrive on (pass the
    waiter back in to send another request with the same id)."""
    waiter = waiter or client.expect(request_id)
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    client.send(message)
    return waiter


def response(waiter: queue.Queue[dict[str, Any]]) -> dict[str, Any]:
    try:
        return waiter.get(timeout=TIMEOUT)
    except queue.Empty:
        raise AssertionError("no response") from None


def chunks_for(client: DaemonClient, request_id: Any) -> list[dict[str, Any]]:
    out = []
    while not client.notifications.empty():
        message = client.notifications.get_nowait()
        if message.get("method") == "system/streamChunk" and message["params"]["requestId"] == request_id:
            out.append(message["params"])
    return out


def assert_cancelled(message: dict[str, Any]) -> None:
    assert message["error"]["code"] == -32800, message
    assert message["error"]["data"]["kind"] == "cancelled"


def test_cancel_a_running_request(daemon: DaemonClient) -> None:
    waiter = send(daemon, "long", "debug/sleep", {"seconds": 30})
    assert daemon.request("system/health")["activeRequests"] == 1  # it is running
    cancel(daemon, "long")
    assert_cancelled(response(waiter))
    assert daemon.request("system/health")["activeRequests"] == 0
    metrics = daemon.request("system/metrics")
    sleep = next(m for m in metrics["methods"] if m["method"] == "debug/sleep")
    assert sleep["cancelled"] == 1


def test_cancel_by_integer_id_does_not_hit_the_string_id(daemon: DaemonClient) -> None:
    as_int = send(daemon, 7, "debug/sleep", {"seconds": 30})
    as_str = send(daemon, "7", "debug/sleep", {"seconds": 0.2})
    cancel(daemon, 7)
    assert_cancelled(response(as_int))
    assert "result" in response(as_str)


def test_cancel_stops_a_stream(daemon: DaemonClient) -> None:
    count = 100_000
    waiter = send(daemon, "s", "system/stream", {"count": count, "intervalMs": 5})
    first = daemon.notifications.get(timeout=TIMEOUT)
    assert first["params"]["requestId"] == "s"
    cancel(daemon, "s")
    assert_cancelled(response(waiter))
    seen = 1 + len(chunks_for(daemon, "s"))
    assert seen < count
    # nothing more for it once it has answered
    assert daemon.request("system/ping") == {"pong": True}
    assert chunks_for(daemon, "s") == []


def test_cancel_reaches_a_stream_that_never_waits(spawn: Callable[..., DaemonClient]) -> None:
    """A stream with no interval and a reader that keeps up never finds the outgoing queue
    full; it must still let the read loop run, or the cancel is read only once it is done.
    The whole stream fits in the outgoing queue, so nothing else would ever make it yield."""
    count = 70_000  # about 7 MB: under the 8 MiB outgoing queue limit
    client: DaemonClient

    def on_notification(message: dict[str, Any]) -> None:
        if message["params"]["seq"] == 0:
            cancel(client, "fast")  # from the reader thread: as soon as the first chunk arrives

    client = spawn(on_notification=on_notification)
    waiter = send(client, "fast", "system/stream", {"count": count, "chunkBytes": 0})
    assert_cancelled(response(waiter))
    assert 0 < len(chunks_for(client, "fast")) < count


def test_cancelling_an_unknown_or_finished_id_is_harmless(daemon: DaemonClient) -> None:
    done = daemon.call("system/ping", id="done")
    assert done["result"] == {"pong": True}
    for target in ("done", "never-sent", 123456, 10**30):
        cancel(daemon, target)
    daemon.notify("$/cancelRequest", {"id": {"not": "an id"}})  # bad params: a notification, no answer
    daemon.notify("$/cancelRequest", {})
    daemon.notify("$/cancelRequest")
    assert daemon.request("system/ping") == {"pong": True}
    assert daemon.unrouted.empty()
    assert daemon.garbage == []


def test_cancel_before_initialize_is_ignored(spawn: Callable[..., DaemonClient]) -> None:
    client = spawn(initialize=False)
    cancel(client, 1)
    client.initialize()
    assert client.request("system/ping") == {"pong": True}
    assert client.unrouted.empty()


def test_a_request_cancelled_while_queued_never_starts(spawn: Callable[..., DaemonClient]) -> None:
    client = spawn("--max-concurrency", "1")
    blocker = send(client, "blocker", "debug/sleep", {"seconds": 30})
    queued = send(client, "queued", "system/stream", {"count": 5})
    assert client.request("system/ping") == {"pong": True}  # both were read (ping runs inline)
    cancel(client, "queued")
    assert_cancelled(response(queued))
    cancel(client, "blocker")
    assert_cancelled(response(blocker))
    assert client.request("system/ping") == {"pong": True}
    # had it started, it would have streamed at least its first chunk before answering
    assert chunks_for(client, "queued") == []
    after = client.request("system/health")
    assert (after["activeRequests"], after["queuedRequests"]) == (0, 0)


def test_an_ordered_request_cancelled_while_waiting_keeps_the_lane(spawn: Callable[..., DaemonClient]) -> None:
    """Cancelling a request in the ordered lane must not let the one behind it jump ahead."""
    client = spawn("--max-concurrency", "1")
    blocker = send(client, "blocker", "debug/sleep", {"seconds": 30})
    first = send(client, "set1", "settings/set", {"key": "server.slowRequestMs", "value": 11})
    second = send(client, "set2", "settings/set", {"key": "server.slowRequestMs", "value": 22})
    cancel(client, "set1")
    assert_cancelled(response(first))
    cancel(client, "blocker")
    assert_cancelled(response(blocker))
    assert response(second)["result"]["value"] == 22
    assert client.request("settings/get", {"key": "server.slowRequestMs"})["value"] == 22


def test_duplicate_ids_are_each_answered_and_cancel_reaches_both(daemon: DaemonClient) -> None:
    waiter = send(daemon, "dup", "debug/sleep", {"seconds": 0})
    send(daemon, "dup", "debug/sleep", {"seconds": 0}, waiter=waiter)
    answers = [response(waiter), response(waiter)]
    assert all(a["id"] == "dup" and "result" in a for a in answers)

    waiter = send(daemon, "twice", "debug/sleep", {"seconds": 30})
    send(daemon, "twice", "debug/sleep", {"seconds": 30}, waiter=waiter)
    cancel(daemon, "twice")
    assert_cancelled(response(waiter))
    assert_cancelled(response(waiter))


def test_closing_stdin_cancels_what_is_still_running(spawn: Callable[..., DaemonClient]) -> None:
    client = spawn()
    waiter = send(client, "long", "debug/sleep", {"seconds": 30})
    assert client.request("system/health")["activeRequests"] == 1
    assert client.proc.stdin is not None
    client.proc.stdin.close()
    assert_cancelled(response(waiter))  # answered, not dropped, as the daemon winds down
    assert client.proc.wait(timeout=TIMEOUT) is not None
