"""Wind-down edge cases: requests without a usable id, a reset socket, what follows `exit`."""

from __future__ import annotations

import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from sidecar.client import DaemonClient
from tests.conftest import serve_argv

LIVENESS = 15.0  # generous: these check that the daemon exits at all, not how fast


@pytest.mark.parametrize("form", ["notification", "null id"])
def test_requests_without_a_usable_id_are_cancelled_when_stdin_closes(
        spawn: Callable[..., DaemonClient], form: str) -> None:
    daemon = spawn()
    message = {"jsonrpc": "2.0", "method": "debug/sleep", "params": {"seconds": 60}}
    if form == "null id":
        message["id"] = None
    daemon.send(message)
    assert daemon.request("system/health")["activeRequests"] == 1  # the sleep is running
    daemon.proc.stdin.close()  # type: ignore[union-attr]
    assert daemon.proc.wait(timeout=LIVENESS) == 0


def test_a_null_id_stream_is_refused_at_once(spawn: Callable[..., DaemonClient]) -> None:
    """A streaming method sent with `id: null` could never be cancelled: it is refused
    (hardening #6), and the daemon stays responsive and exits on end of input."""
    daemon = spawn()
    answered: list[object] = []
    daemon.on_message = lambda payload: answered.append(msgspec.json.decode(payload))
    daemon.send({"jsonrpc": "2.0", "id": None, "method": "system/stream", "params": {"count": 10_000_000}})
    assert daemon.request("system/ping") == {"pong": True}
    refusals = [m for m in answered if isinstance(m, dict) and m.get("id") is None and "error" in m]
    assert refusals and refusals[0]["error"]["code"] == -32600
    daemon.proc.stdin.close()  # type: ignore[union-attr]
    assert daemon.proc.wait(timeout=LIVENESS) == 0


def test_nothing_after_exit_in_the_same_read_runs(spawn: Callable[..., DaemonClient], tmp_path: Path) -> None:
    daemon = spawn()
    marker = tmp_path / "must-not-exist"
    lines = [
        {"jsonrpc": "2.0", "method": "exit"},
        {"jsonrpc": "2.0", "id": 90, "method": "system/ping"},
        {"jsonrpc": "2.0", "id": 91, "method": "debug/spawn",
         "params": {"argv": [sys.executable, "-c", f"open({str(marker)!r}, 'w')"]}},
    ]
    daemon.send_bytes(b"".join(msgspec.json.encode(m) + b"\n" for m in lines), raw=True)  # one write
    assert daemon.proc.wait(timeout=LIVENESS) == 1  # exit without shutdown
    assert daemon.unrouted.get(timeout=LIVENESS) is None  # stdout closed with no answer at all
    assert not marker.exists()


def test_a_reset_socket_is_the_end_of_input_not_a_crash(data_dir: Path) -> None:
    """libuv-based shells (Node, Electron) give a child socketpairs for stdio. A shell that
    goes away with our answer unread resets the socket: that is end of input."""
    ours, theirs = socket.socketpair()
    log = data_dir / "stderr.txt"
    with log.open("wb") as stderr:
        proc = subprocess.Popen(serve_argv(data_dir), stdin=theirs.fileno(), stdout=theirs.fileno(),
                                stderr=stderr)
    theirs.close()
    ours.sendall(b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}\n')
    assert b'"id":1' in ours.recv(65536)
    ours.sendall(b'{"jsonrpc":"2.0","id":2,"method":"system/ping"}\n')
    assert select.select([ours], [], [], LIVENESS)[0]  # the answer is waiting in our buffer...
    ours.close()  # ...and stays unread: the daemon's next read gets ECONNRESET, not end of file
    assert proc.wait(timeout=LIVENESS) == 0
    text = log.read_text()
    assert "Traceback" not in text, text
