"""stdout purity at the file-descriptor level (issue point 4), and where logs go.

`debug/print` writes with Python's print and with os.write(1, ...), as C code would. Neither
may reach the protocol stream; both must show up on stderr. Log records go to stderr and to
the rotating file `<data dir>/logs/sidecar.log`.
"""

from __future__ import annotations

import logging
import logging.handlers
import secrets
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar import logs
from sidecar.client import DaemonClient
from tests.conftest import serve_argv


class _Capture:
    """Every payload the client decoded from stdout, to search for text that must not be there."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []

    def __call__(self, payload: bytes) -> None:
        self.payloads.append(payload)

    def contains(self, needle: bytes) -> bool:
        return any(needle in p for p in self.payloads)


def test_print_and_fd1_writes_go_to_stderr(spawn: Callable[..., DaemonClient], tmp_path: Path) -> None:
    marker = f"stray-{secrets.token_hex(8)}"
    capture = _Capture()
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("wb") as stderr:
        client = spawn(stderr=stderr, on_message=capture)
        assert client.request("debug/print", {"text": marker}) == {}
        # the stream is intact: the next request is answered
        assert client.request("system/ping") == {"pong": True}
        assert client.shutdown() == 0
    assert client.garbage == []
    assert client.unrouted.get_nowait() is None  # only the end-of-stream marker: nothing stray
    assert not capture.contains(marker.encode())
    # once from print(), once from os.write(1, ...)
    assert stderr_path.read_text().count(marker) == 2


def test_json_looking_prints_cannot_forge_responses(spawn: Callable[..., DaemonClient]) -> None:
    """A library printing something that looks like a response must not answer our request."""
    client = spawn()
    forged = '{"jsonrpc":"2.0","id":3,"result":"forged"}'
    waiter = client.expect(3)
    assert client.request("debug/print", {"text": forged}, timeout=10) == {}
    client.send({"jsonrpc": "2.0", "id": 3, "method": "system/ping"})
    assert client.wait(3, waiter) == {"jsonrpc": "2.0", "id": 3, "result": {"pong": True}}
    assert client.garbage == []


@pytest.fixture
def purity_daemon(spawn: Callable[..., DaemonClient]) -> DaemonClient:
    """One daemon for all of a hypothesis test's examples."""
    return spawn()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(min_size=0, max_size=200))
def test_any_printed_text_stays_off_the_stream(text: str, purity_daemon: DaemonClient) -> None:
    assert purity_daemon.request("debug/print", {"text": text}) == {}
    assert purity_daemon.request("system/ping") == {"pong": True}
    assert purity_daemon.garbage == []
    assert purity_daemon.unrouted.empty()


def test_logs_go_to_stderr_and_the_log_file(spawn: Callable[..., DaemonClient], data_dir: Path,
                                            tmp_path: Path) -> None:
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("wb") as stderr:
        client = spawn(stderr=stderr)
        incident = client.call("debug/fail")["error"]["data"]["incidentId"]
        assert client.shutdown() == 0
    log_file = data_dir / "logs" / "sidecar.log"
    for text in (stderr_path.read_text(), log_file.read_text()):
        assert "sidecar serving on stdio" in text
        assert f"incident {incident}" in text
        assert "Traceback" in text and "this text must stay in the log" in text
    assert client.garbage == []


def test_start_up_failure_keeps_stdout_clean(data_dir: Path) -> None:
    """Start-up failures are logged to stderr, and stdout stays empty."""
    (data_dir / "sidecar.db").write_bytes(b"this is not an SQLite database" * 100)
    proc = subprocess.run(serve_argv(data_dir), input=b"", capture_output=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stdout == b""
    assert b"cannot start: cannot open the database" in proc.stderr
    assert b"Traceback" not in proc.stderr


def test_logging_never_writes_to_stdout(tmp_path: Path) -> None:
    """Rotation itself is tested in tests/test_logging.py; here: no log path leads to fd 1."""
    log_file = tmp_path / "logs" / "sidecar.log"
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        logs.setup(log_file, "info", stderr_fd=None)
        for i in range(50):
            logging.getLogger("sidecar.test").info("line %d", i)
        logs.shutdown()
        assert "line 49" in log_file.read_text()
        assert not [h for h in root.handlers if getattr(h, "stream", None) is not None
                    and getattr(h.stream, "name", "") == "<stdout>"]
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])


def test_child_processes_cannot_read_the_protocol_stream(daemon: DaemonClient, tmp_path: Path) -> None:
    """fd 0 of the daemon is /dev/null: a child that inherits stdin and reads it gets EOF
    at once, and the shell's next requests still reach the daemon."""
    import sys
    import time

    out = tmp_path / "child-read.bin"
    # read first, create the file after: the file exists only once the read has returned
    script = f"import os; data = os.read(0, 4096); open({str(out)!r}, 'wb').write(data)"
    daemon.request("debug/spawn", {"argv": [sys.executable, "-c", script]})
    for _ in range(200):  # the child writes the file once its read returns
        if out.exists():
            break
        time.sleep(0.05)
    for n in range(20):
        assert daemon.request("system/ping") == {"pong": True}, n
    assert out.exists(), "the child never returned from reading stdin"
    assert out.read_bytes() == b""
