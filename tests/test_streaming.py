"""The streaming helper: notifications tied to their request, then the complete result; and
the outgoing queue's backpressure when the shell stops reading."""

from __future__ import annotations

import hashlib
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import psutil
import pytest

from sidecar.client import DaemonClient
from sidecar.system.service import stream_chunks
from tests.conftest import serve_argv

TIMEOUT = 60


def expected(count: int, size: int) -> dict[str, Any]:
    digest = hashlib.sha256()
    total = 0
    for chunk in stream_chunks(count, size):
        digest.update(chunk.encode())
        total += len(chunk.encode())
    return {"count": count, "bytes": total, "sha256": digest.hexdigest()}


def stream_notes(client: DaemonClient, request_id: Any) -> list[dict[str, Any]]:
    out = []
    while not client.notifications.empty():
        note = client.notifications.get_nowait()
        if note["method"] == "system/streamChunk" and note["params"]["requestId"] == request_id:
            out.append(note["params"])
    return out


@pytest.mark.parametrize("request_id", [1, "stream-α", 10**20])
def test_chunks_carry_request_id_and_consecutive_seq(daemon: DaemonClient, request_id: Any) -> None:
    response = daemon.call("system/stream", {"count": 50, "chunkBytes": 40}, id=request_id)
    result = response["result"]
    notes = stream_notes(daemon, request_id)
    assert [n["seq"] for n in notes] == list(range(50))
    assert all(n["requestId"] == request_id for n in notes)
    data = "".join(n["data"] for n in notes).encode()
    assert result == {"count": len(notes), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert result == expected(50, 40)


def test_empty_stream_sends_nothing_and_answers(daemon: DaemonClient) -> None:
    assert daemon.request("system/stream", {"count": 0}) == expected(0, 16)
    assert stream_notes(daemon, 1) == []


def test_concurrent_streams_keep_their_own_sequences(daemon: DaemonClient) -> None:
    waiters = {rid: daemon.expect(rid) for rid in ("a", "b", "c")}
    for rid in waiters:
        daemon.send({"jsonrpc": "2.0", "id": rid, "method": "system/stream",
                     "params": {"count": 300, "chunkBytes": 8, "intervalMs": 0}})
    results = {rid: daemon.wait(rid, w, TIMEOUT)["result"] for rid, w in waiters.items()}
    notes: list[dict[str, Any]] = []
    while not daemon.notifications.empty():
        notes.append(daemon.notifications.get_nowait()["params"])
    for rid in waiters:
        mine = [n for n in notes if n["requestId"] == rid]
        assert [n["seq"] for n in mine] == list(range(300))
        assert results[rid] == expected(300, 8)


def test_a_client_that_ignores_notifications_gets_the_full_result(daemon: DaemonClient) -> None:
    """The result alone is complete: a shell that drops every notification loses nothing."""
    daemon.on_message = None
    result = daemon.request("system/stream", {"count": 2000, "chunkBytes": 100}, timeout=TIMEOUT)
    assert result == expected(2000, 100)


def test_a_stream_in_a_batch_streams_then_answers_in_the_batch(daemon: DaemonClient) -> None:
    daemon.send([{"jsonrpc": "2.0", "id": "s", "method": "system/stream", "params": {"count": 3}},
                 {"jsonrpc": "2.0", "id": "p", "method": "system/ping"}])
    batch = daemon.unrouted.get(timeout=TIMEOUT)
    by_id = {r["id"]: r for r in batch}
    assert by_id["s"]["result"] == expected(3, 16)
    assert [n["seq"] for n in stream_notes(daemon, "s")] == [0, 1, 2]


def test_a_stream_sent_as_a_notification_streams_nothing(daemon: DaemonClient) -> None:
    daemon.notify("system/stream", {"count": 5})
    assert daemon.request("system/stream", {"count": 1}) == expected(1, 16)
    assert [n["method"] for n in _all(daemon)] == ["system/streamChunk"]  # only the request's


def _all(client: DaemonClient) -> list[dict[str, Any]]:
    out = []
    while not client.notifications.empty():
        out.append(client.notifications.get_nowait())
    return out


# ---- backpressure ---------------------------------------------------------------


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.02):
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return


def test_a_shell_that_stops_reading_does_not_grow_the_daemon(data_dir: Path) -> None:
    """200k chunks of 1 KiB (about 240 MB on the wire) while the shell reads nothing for a
    while: the daemon's memory must stay near its outgoing-queue limit, then it completes."""
    count, size = 200_000, 1024
    proc = subprocess.Popen(serve_argv(data_dir), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(b'{"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}\n')
        proc.stdin.flush()
        assert b'"id":0' in proc.stdout.readline()
        baseline = psutil.Process(proc.pid).memory_info().rss
        sampler = RssSampler(proc.pid)
        sampler.start()
        proc.stdin.write(msgspec.json.encode({"jsonrpc": "2.0", "id": "big", "method": "system/stream",
                                              "params": {"count": count, "chunkBytes": size}}) + b"\n")
        proc.stdin.flush()
        time.sleep(3)  # not reading: the pipe fills, then the daemon's queue, then it must wait
        stalled_peak = sampler.peak

        digest = hashlib.sha256()
        seq = 0
        final = None
        for line in proc.stdout:
            message = msgspec.json.decode(line)
            if "method" in message:
                assert message["params"]["seq"] == seq
                digest.update(message["params"]["data"].encode())
                seq += 1
            else:
                final = message
                break
        sampler.stop.set()
        sampler.join()
        assert final is not None and final["id"] == "big"
        assert final["result"]["count"] == count == seq
        assert final["result"]["sha256"] == digest.hexdigest()
        growth = max(sampler.peak, stalled_peak) - baseline
        assert growth < 100 << 20, f"RSS grew by {growth / 2**20:.0f} MiB"
    finally:
        proc.stdin.close()
        proc.wait(timeout=TIMEOUT)


def test_exit_flushes_every_queued_message_whole(data_dir: Path) -> None:
    """Output still queued when `exit` arrives is written out completely before the daemon
    ends, including the large write already in progress (not cut off mid-message)."""
    # writes are coalesced up to 1 MiB, so the last one holds the tail of the stream and the
    # two answers: far more than a pipe buffer, it is still in progress when the queue empties
    count, size = 18, 300_000
    proc = subprocess.Popen(serve_argv(data_dir), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    assert proc.stdin is not None and proc.stdout is not None

    def send(*messages: dict[str, Any]) -> None:
        assert proc.stdin is not None
        proc.stdin.write(b"".join(msgspec.json.encode(m) + b"\n" for m in messages))
        proc.stdin.flush()

    try:
        send({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {}},
             {"jsonrpc": "2.0", "id": "big", "method": "system/stream", "params": {"count": count, "chunkBytes": size}})
        out = proc.stdout.readline()  # the initialize answer
        out += proc.stdout.read(1000)  # the stream has begun: megabytes are queued behind this
        send({"jsonrpc": "2.0", "id": "down", "method": "shutdown"}, {"jsonrpc": "2.0", "method": "exit"})
        time.sleep(0.3)  # not reading: the daemon reads `exit` with most of its output unwritten
        out += proc.stdout.read()
        assert proc.wait(timeout=TIMEOUT) == 0
    finally:
        proc.kill()
    assert out.endswith(b"\n")
    decoded = [msgspec.json.decode(line) for line in out.splitlines()]
    ids = [m["id"] for m in decoded if "id" in m]
    assert ids == [0, "big", "down"]
    chunks = [m["params"]["seq"] for m in decoded if m.get("method") == "system/streamChunk"]
    assert chunks == list(range(count))
