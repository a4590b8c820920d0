"""Requests run concurrently, `--max-concurrency` bounds them, and the ordered lane keeps a
shell's pipelined writes and reads of shared state in the order it sent them.

Claims are about the order responses arrive in, never about durations.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from sidecar.client import DaemonClient

TIMEOUT = 30
KEY = "server.slowRequestMs"


class Arrivals:
    """Ids of responses in the order they arrive (batches flattened)."""

    def __init__(self, client: DaemonClient) -> None:
        self.ids: queue.Queue[Any] = queue.Queue()
        self.responses: dict[Any, dict[str, Any]] = {}
        client.on_message = self._on_message

    def _on_message(self, payload: bytes) -> None:
        message = msgspec.json.decode(payload)
        for item in message if isinstance(message, list) else [message]:
            if "id" in item:
                self.responses[item["id"]] = item
                self.ids.put(item["id"])

    def take(self, n: int) -> list[Any]:
        try:
            return [self.ids.get(timeout=TIMEOUT) for _ in range(n)]
        except queue.Empty:
            raise AssertionError("not every response arrived") from None


def request(id_: Any, method: str, params: Any = None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": id_, "method": method}
    if params is not None:
        message["params"] = params
    return message


def pipeline(client: DaemonClient, *messages: dict[str, Any]) -> None:
    """Send all messages in one write, so the daemon reads them together."""
    client.send_bytes(b"".join(msgspec.json.encode(m) + b"\n" for m in messages), raw=True)


def test_requests_run_concurrently(daemon: DaemonClient) -> None:
    arrivals = Arrivals(daemon)
    pipeline(daemon, request("long", "debug/sleep", {"seconds": 0.5}),
             request("short", "debug/sleep", {"seconds": 0}))
    assert arrivals.take(2) == ["short", "long"]


def test_inline_requests_are_not_held_behind_running_ones(daemon: DaemonClient) -> None:
    arrivals = Arrivals(daemon)
    pipeline(daemon, *(request(f"sleep{i}", "debug/sleep", {"seconds": 0.5}) for i in range(5)),
             request("ping", "system/ping"))
    assert arrivals.take(6)[0] == "ping"


@pytest.mark.parametrize("limit", [1, 2])
def test_max_concurrency_bounds_running_requests(spawn: Callable[..., DaemonClient], limit: int) -> None:
    client = spawn("--max-concurrency", str(limit))
    arrivals = Arrivals(client)
    longs = [request(f"long{i}", "debug/sleep", {"seconds": 0.3}) for i in range(limit)]
    pipeline(client, *longs, request("short", "debug/sleep", {"seconds": 0}))
    order = arrivals.take(limit + 1)
    assert order[-1] == "short"  # it had to wait for a free slot


def test_queued_requests_start_in_arrival_order(spawn: Callable[..., DaemonClient]) -> None:
    client = spawn("--max-concurrency", "1")
    arrivals = Arrivals(client)
    ids = [f"r{i}" for i in range(8)]
    pipeline(client, *(request(i, "debug/sleep", {"seconds": 0.01 * (8 - n)}) for n, i in enumerate(ids)))
    assert arrivals.take(8) == ids


def test_initialize_reports_the_limit_and_the_ordered_methods(spawn: Callable[..., DaemonClient]) -> None:
    client = spawn("--max-concurrency", "3", initialize=False)
    capabilities = client.initialize()["capabilities"]
    assert capabilities["maxConcurrency"] == 3
    assert {"settings/get", "settings/set"} <= set(capabilities["orderedMethods"])
    assert "system/ping" not in capabilities["orderedMethods"]


def test_pipelined_set_then_get_sees_the_new_value(daemon: DaemonClient) -> None:
    arrivals = Arrivals(daemon)
    pipeline(daemon, request("set", "settings/set", {"key": KEY, "value": 4321}),
             request("get", "settings/get", {"key": KEY}))
    assert arrivals.take(2) == ["set", "get"]
    assert arrivals.responses["get"]["result"]["value"] == 4321


def test_many_pipelined_sets_end_with_the_last_value(daemon: DaemonClient) -> None:
    arrivals = Arrivals(daemon)
    values = list(range(2, 102))
    pipeline(daemon, *(request(f"set{v}", "settings/set", {"key": KEY, "value": v}) for v in values),
             request("get", "settings/get", {"key": KEY}))
    assert arrivals.take(len(values) + 1) == [f"set{v}" for v in values] + ["get"]
    assert arrivals.responses["get"]["result"]["value"] == values[-1]
    # each write saw the one before it: the change notifications form one chain
    changes = []
    while len(changes) < len(values):
        note = daemon.notifications.get(timeout=TIMEOUT)
        if note["method"] == "settings/changed":
            changes.append(note["params"])
    assert [(c["previous"], c["value"]) for c in changes] == list(zip([1000, *values], values))
    assert daemon.request("settings/get", {"key": KEY})["value"] == values[-1]


def test_ordered_and_unordered_interleave(daemon: DaemonClient) -> None:
    """Unordered requests never wait for the ordered lane; the lane itself stays in order."""
    arrivals = Arrivals(daemon)
    pipeline(daemon,
             request("slow", "debug/sleep", {"seconds": 0.3}),
             request("set", "settings/set", {"key": KEY, "value": 77}),
             request("ping", "system/ping"),
             request("get", "settings/get", {"key": KEY}))
    order = arrivals.take(4)
    assert order.index("set") < order.index("get")
    assert order[-1] == "slow"
    assert arrivals.responses["get"]["result"]["value"] == 77


def test_many_in_flight_are_all_answered(daemon: DaemonClient) -> None:
    arrivals = Arrivals(daemon)
    n = 2000
    pipeline(daemon, *(request(i, "system/ping" if i % 2 else "debug/sleep", None if i % 2 else {"seconds": 0})
                       for i in range(n)))
    assert sorted(arrivals.take(n)) == list(range(n))
    assert arrivals.ids.empty()
