"""Protocol hardening: the defects a hostile client found, each by its repro (issue 13).

Each test failed on the code before the fix; the comment names the defect.
"""

from __future__ import annotations

import os
import queue
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import psutil
import pytest

from sidecar.client import DaemonClient
from sidecar.server.framing import CONTENT_LENGTH, FrameDecoder, frame
from tests.conftest import serve_argv

TIMEOUT = 30


def req(id_: Any, method: str, params: Any = None) -> bytes:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": id_, "method": method}
    if params is not None:
        message["params"] = params
    return msgspec.json.encode(message) + b"\n"


def note(method: str, params: Any = None) -> bytes:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    return msgspec.json.encode(message) + b"\n"


class Answers:
    """Every response by id (batches flattened), and the notifications, as they arrive."""

    def __init__(self, client: DaemonClient) -> None:
        self.by_id: dict[Any, dict[str, Any]] = {}
        self.arrived: queue.Queue[Any] = queue.Queue()
        self.notifications: list[dict[str, Any]] = []
        client.on_message = self._on_message

    def _on_message(self, payload: bytes) -> None:
        message = msgspec.json.decode(payload)
        for item in message if isinstance(message, list) else [message]:
            if "method" in item:
                self.notifications.append(item)
            else:
                self.by_id[item.get("id")] = item
                self.arrived.put(item.get("id"))

    def wait_for(self, request_id: Any, timeout: float = TIMEOUT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while request_id not in self.by_id:
            try:
                self.arrived.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no answer to {request_id!r}") from None
        return self.by_id[request_id]

    def wait_count(self, n: int, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while len(self.by_id) < n:
            try:
                self.arrived.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"{len(self.by_id)} of {n} answers arrived") from None


# ---- High ---------------------------------------------------------------------------


def test_a_full_queue_answers_busy_and_control_messages_are_still_read(spawn: Callable[..., DaemonClient]) -> None:
    """#1: at 4,096 pending requests the daemon stopped reading stdin; cancel and exit were
    never seen. Now the excess answers resource_exhausted at once and the reader goes on."""
    daemon = spawn()
    answers = Answers(daemon)
    slow = b"".join(req(f"b{i}", "system/stream", {"count": 1, "intervalMs": 3600000}) for i in range(64))
    health = b"".join(req(f"q{i}", "system/health") for i in range(4100))
    daemon.send_bytes(slow + health, raw=True)
    busy = [answers.wait_for(f"q{i}") for i in range(4100 - 68, 4100)]  # the last ones are over the limit
    assert all(a["error"]["data"]["kind"] == "resource_exhausted" for a in busy)
    assert busy[0]["error"]["data"]["limit"] == 4096 and busy[0]["error"]["data"]["reason"] == "busy"
    daemon.send_bytes(note("$/cancelRequest", {"id": "b0"}), raw=True)
    assert answers.wait_for("b0")["error"]["code"] == -32800
    daemon.send_bytes(req("m", "system/metrics"), raw=True)  # inline: answers while the queue is full
    assert answers.wait_for("m")["result"]["busyRefusals"] >= 68
    daemon.send_bytes(note("exit"), raw=True)
    assert daemon.proc.wait(timeout=TIMEOUT) == 1


def test_queued_params_are_bounded_in_bytes(data_dir: Path) -> None:
    """#2: queued requests held their full params without bound (+664 MB after 60 x 10 MB)."""
    env = {**os.environ, "SIDECAR_SERVER_MAX_QUEUED_BYTES": str(4 << 20)}
    with DaemonClient(serve_argv(data_dir), env=env, stderr=subprocess.DEVNULL) as daemon:
        daemon.initialize("pytest")
        answers = Answers(daemon)
        slow = b"".join(req(f"b{i}", "system/stream", {"count": 1, "intervalMs": 3600000}) for i in range(64))
        big = b"".join(req(f"s{i}", "settings/set", {"key": "log.level", "value": "x" * (1 << 20)})
                       for i in range(12))
        daemon.send_bytes(slow + big, raw=True)
        refused = [answers.wait_for(f"s{i}") for i in range(4, 12)]
        assert all(a["error"]["data"]["kind"] == "resource_exhausted" for a in refused)
        assert refused[0]["error"]["data"]["limit"] == 4 << 20
        rss = psutil.Process(daemon.proc.pid).memory_info().rss
        assert rss < 200 << 20


def _setting_stored(data_dir: Path, key: str) -> Any:
    import apsw

    conn = apsw.Connection(str(data_dir / "sidecar.db"), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        rows = conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchall()
    finally:
        conn.close()
    return msgspec.json.decode(rows[0][0]) if rows else None


def test_a_write_answered_cancelled_was_not_applied(data_dir: Path) -> None:
    """#3: with stdout unread, a settings/set cancelled after it committed answered -32800
    yet was stored. Now: committed => it answers its result (and settings/changed goes out)."""
    proc = subprocess.Popen(serve_argv(data_dir), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(req(0, "initialize", {}) + note("initialized")
                         + req("flood", "system/stream", {"count": 200000, "chunkBytes": 1024}))
        proc.stdin.flush()
        time.sleep(0.5)  # stdout unread: the stream fills the pipe and the outbox
        proc.stdin.write(req("set", "settings/set", {"key": "log.level", "value": "warning"}))
        proc.stdin.flush()
        time.sleep(0.5)
        proc.stdin.write(note("$/cancelRequest", {"id": "set"}) + note("$/cancelRequest", {"id": "flood"})
                         + req("down", "shutdown") + note("exit"))
        proc.stdin.flush()
        out = proc.stdout.read()
        assert proc.wait(timeout=TIMEOUT) == 0
    finally:
        proc.kill()
    messages = [msgspec.json.decode(line) for line in out.splitlines()]
    answer = next(m for m in messages if m.get("id") == "set")
    changed = [m for m in messages if m.get("method") == "settings/changed"]
    stored = _setting_stored(data_dir, "log.level")
    if "error" in answer:
        assert answer["error"]["code"] == -32800 and stored != "warning" and not changed
    else:
        assert stored == "warning" and answer["result"]["value"] == "warning" and changed


# ---- Medium -------------------------------------------------------------------------


def test_a_batch_counts_against_the_pending_limit(spawn: Callable[..., DaemonClient]) -> None:
    """#4: one batch of 100,000 started 100,000 tasks (RSS 33 -> 760 MB)."""
    daemon = spawn()
    answers = Answers(daemon)
    batch = msgspec.json.encode([{"jsonrpc": "2.0", "id": i, "method": "settings/get", "params": {"key": "log.level"}}
                                 for i in range(20000)]) + b"\n"
    daemon.send_bytes(batch, raw=True)  # elements are admitted before any of them runs
    answers.wait_count(20000)
    kinds = [answers.by_id[i].get("error", {}).get("data", {}).get("kind") for i in range(20000)]
    assert kinds.count("resource_exhausted") >= 20000 - 4096
    assert psutil.Process(daemon.proc.pid).memory_info().rss < 300 << 20


@pytest.mark.parametrize("value", [b"1e400", b"-1e999", b"1" * 4400])
def test_a_number_out_of_range_is_invalid_params_with_the_id(daemon: DaemonClient, value: bytes) -> None:
    """#5: numbers out of range made a valid request -32700 with id null."""
    answers = Answers(daemon)
    daemon.send_bytes(b'{"jsonrpc":"2.0","id":1,"method":"settings/set","params":{"key":"server.slowRequestMs",'
                      b'"value":' + value + b"}}\n", raw=True)
    answer = answers.wait_for(1)
    assert answer["error"]["code"] == -32602
    assert answer["error"]["data"]["path"] == "$.params.value"


def test_long_running_methods_sent_as_notifications_hold_no_slot(spawn: Callable[..., DaemonClient]) -> None:
    """#6: 64 hour-long streams sent as notifications blocked every slot."""
    daemon = spawn()
    daemon.send_bytes(b"".join(note("system/stream", {"count": 1, "intervalMs": 3600000}) for _ in range(64)),
                      raw=True)
    daemon.send_bytes(b"".join(req(None, "system/stream", {"count": 1, "intervalMs": 3600000})
                               for _ in range(64)), raw=True)
    assert daemon.request("system/health", timeout=10)["activeRequests"] == 0


# ---- Low ----------------------------------------------------------------------------


def test_exit_while_stdout_is_slow_never_cuts_a_frame(data_dir: Path) -> None:
    """#8: exit with a slow reader cut a message in half and lost the shutdown answer."""
    proc = subprocess.Popen(serve_argv(data_dir), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(req(0, "initialize", {}) + req("big", "system/stream", {"count": 2000, "chunkBytes": 65536}))
        proc.stdin.flush()
        out = proc.stdout.readline()
        out += proc.stdout.read(200_000)
        proc.stdin.write(req("down", "shutdown") + note("exit"))
        proc.stdin.flush()
        while True:  # a slow reader: 64 KiB every 50 ms, too slow to drain 8 MB before exit
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            out += chunk
            time.sleep(0.05)
        assert proc.wait(timeout=TIMEOUT) == 0
    finally:
        proc.kill()
    assert out.endswith(b"\n"), "a frame was cut in half"
    decoded = [msgspec.json.decode(line) for line in out.splitlines()]
    assert any(m.get("id") == "down" and m.get("result", "x") is None for m in decoded)


def test_nothing_after_exit_in_a_batch_runs(spawn: Callable[..., DaemonClient], tmp_path: Path) -> None:
    """#10: requests after `exit` in the same batch still ran."""
    import sys

    daemon = spawn()
    marker = tmp_path / "must-not-exist"
    batch = [{"jsonrpc": "2.0", "method": "exit"},
             {"jsonrpc": "2.0", "id": 91, "method": "debug/spawn",
              "params": {"argv": [sys.executable, "-c", f"open({str(marker)!r}, 'w')"]}}]
    daemon.send_bytes(msgspec.json.encode(batch) + b"\n", raw=True)
    assert daemon.proc.wait(timeout=TIMEOUT) == 1
    time.sleep(0.3)
    assert not marker.exists()


def test_a_leading_byte_order_mark_is_skipped(data_dir: Path) -> None:
    """#11: a UTF-8 BOM before the first message broke initialize (-32700, id null)."""
    out = subprocess.run(serve_argv(data_dir), input=b"\xef\xbb\xbf" + req(1, "initialize", {}),
                         capture_output=True, timeout=TIMEOUT).stdout
    assert msgspec.json.decode(out.splitlines()[0])["id"] == 1


def test_exit_with_an_empty_array_of_params_exits(data_dir: Path) -> None:
    """Also: `exit` with `"params": []` was ignored."""
    proc = subprocess.run(serve_argv(data_dir), input=req(1, "initialize", {}) + note("exit", []) + req(2, "system/ping"),
                          capture_output=True, timeout=TIMEOUT)
    assert proc.returncode == 1
    assert [msgspec.json.decode(x)["id"] for x in proc.stdout.splitlines()] == [1]


def test_a_content_length_header_takes_digits_only(data_dir: Path) -> None:
    """Also: `Content-Length: 5_8` was accepted."""
    body = msgspec.json.encode({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}})
    ping = msgspec.json.encode({"jsonrpc": "2.0", "id": 2, "method": "system/ping"})
    stream = frame(body, CONTENT_LENGTH) + b"Content-Length: 4_8\r\n\r\n" + ping + frame(ping, CONTENT_LENGTH)
    out = subprocess.run(serve_argv(data_dir), input=stream, capture_output=True, timeout=TIMEOUT).stdout
    messages = [msgspec.json.decode(m) for m in FrameDecoder(1 << 30).feed(out)]  # type: ignore[arg-type]
    assert messages[1]["error"]["code"] == -32700
    assert messages[-1] == {"jsonrpc": "2.0", "id": 2, "result": {"pong": True}}


def test_a_lone_ndjson_line_in_a_content_length_session_is_answered(data_dir: Path) -> None:
    """Also: an NDJSON line sent to a Content-Length session waited forever."""
    proc = subprocess.Popen(serve_argv(data_dir), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        body = msgspec.json.encode({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}})
        proc.stdin.write(frame(body, CONTENT_LENGTH))
        proc.stdin.write(b'{"jsonrpc":"2.0","id":2,"method":"system/ping"}')  # no header, no newline
        proc.stdin.flush()
        decoder = FrameDecoder(1 << 30)
        got: list[Any] = []
        deadline = time.monotonic() + 10
        while len(got) < 2 and time.monotonic() < deadline:
            got += [msgspec.json.decode(m) for m in decoder.feed(os.read(proc.stdout.fileno(), 65536))]  # type: ignore[arg-type]
        assert got[1]["error"]["code"] == -32700
    finally:
        proc.kill()


def test_memory_settles_after_big_messages(spawn: Callable[..., DaemonClient]) -> None:
    """RSS rose 33 -> 120 MB over fuzzing with 1-10 MB lines and stayed at 91 MB; big
    buffers must be released once the big messages are gone."""
    daemon = spawn()
    pid = daemon.proc.pid
    for i in range(5):
        answer = daemon.call("settings/set", {"key": "log.level", "value": "y" * (10 << 20)}, timeout=TIMEOUT)
        assert answer["error"]["code"] == -32602
    for _ in range(200):
        daemon.request("system/ping")
    time.sleep(0.3)
    rss = psutil.Process(pid).memory_info().rss
    assert rss < 64 << 20, f"RSS {rss >> 20} MB after the big messages were gone"
