"""DaemonClient when the daemon goes away: waiters wake at once instead of timing out."""

from __future__ import annotations

import queue
import subprocess
import sys

import pytest

from sidecar.client import DaemonClient

#: generous: a liveness bound for a loaded 2-core machine, not a performance claim
TIMEOUT = 20.0


def fake_daemon(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_daemon_dying_mid_request_wakes_the_caller() -> None:
    # reads the request, then exits without answering
    client = DaemonClient(fake_daemon("import sys; sys.stdin.readline(); sys.exit(5)"))
    try:
        with pytest.raises(ConnectionError, match="exit code 5"):
            client.call("system/ping", timeout=TIMEOUT)
    finally:
        client.close()


def test_expecting_after_the_end_of_stream_fails_at_once() -> None:
    client = DaemonClient(fake_daemon("import sys; sys.stdin.readline(); sys.exit(0)"))
    try:
        waiter = client.expect(1)  # registered, then the request never gets an answer
        client.send({"jsonrpc": "2.0", "id": 1, "method": "system/ping"})
        with pytest.raises(ConnectionError):
            client.wait(1, waiter, TIMEOUT)
        late = client.expect(2)  # after the end: there is nothing left to wait for
        with pytest.raises(ConnectionError):
            client.wait(2, late, TIMEOUT)
    finally:
        client.close()


def test_a_failed_send_leaves_no_waiter_behind() -> None:
    client = DaemonClient(fake_daemon("pass"))
    try:
        client.proc.wait(timeout=TIMEOUT)  # its stdin is closed now: the write breaks the pipe
        with pytest.raises(ConnectionError):
            client.call("system/ping", timeout=TIMEOUT)
        assert client._waiting == {}
    finally:
        client.close()


def test_a_daemon_that_exits_at_start_fails_promptly() -> None:
    client = DaemonClient(fake_daemon("import sys; sys.exit(3)"))
    try:
        with pytest.raises(ConnectionError, match="exit code 3"):
            client.initialize()
    finally:
        client.close()


def test_a_daemon_that_dies_says_why_in_the_error() -> None:
    """With stderr piped, the error names the exit code and the daemon's last stderr line."""
    code = "import sys; print('starting', file=sys.stderr); print('cannot use /x: no such', file=sys.stderr); sys.exit(2)"
    client = DaemonClient(fake_daemon(code), stderr=subprocess.PIPE)
    try:
        with pytest.raises(ConnectionError, match=r"\(exit code 2\): cannot use /x: no such$"):
            client.initialize()
        assert list(client.stderr_tail) == ["starting", "cannot use /x: no such"]
    finally:
        client.close()


def test_the_log_prefix_is_dropped_from_the_last_words() -> None:
    line = "2026-01-02 03:04:05,678 ERROR sidecar [123]: cannot start: the database is locked"
    client = DaemonClient(fake_daemon(f"import sys; print({line!r}, file=sys.stderr); sys.exit(2)"),
                          stderr=subprocess.PIPE)
    try:
        with pytest.raises(ConnectionError, match=r"\(exit code 2\): cannot start: the database is locked$"):
            client.initialize()
    finally:
        client.close()


def test_stderr_lines_reach_the_callback_and_on_exit_gets_the_code() -> None:
    lines: list[str] = []
    codes: queue.Queue[int] = queue.Queue()
    client = DaemonClient(fake_daemon("import sys; print('a', file=sys.stderr); print('b', file=sys.stderr); "
                                      "sys.stdin.readline(); sys.exit(4)"),
                          stderr=subprocess.PIPE, on_stderr=lines.append, on_exit=codes.put)
    try:
        client.send({"jsonrpc": "2.0", "method": "exit"})
        assert codes.get(timeout=TIMEOUT) == 4
        assert lines == ["a", "b"]  # all read before on_exit is called
    finally:
        client.close()


def test_without_a_pipe_the_error_still_names_the_exit_code() -> None:
    client = DaemonClient(fake_daemon("import sys; print('hidden', file=sys.stderr); sys.exit(3)"))
    try:
        with pytest.raises(ConnectionError, match=r"\(exit code 3\)$"):
            client.initialize()
    finally:
        client.close()


def test_info_lines_are_not_last_words_and_a_signal_is_named() -> None:
    info = "2026-01-02 03:04:05,678 INFO sidecar.server [123]: initialized by me"
    client = DaemonClient(fake_daemon(f"import os, signal, sys; print('real reason', file=sys.stderr); "
                                      f"print({info!r}, file=sys.stderr, flush=True); "
                                      f"os.kill(os.getpid(), signal.SIGKILL)"), stderr=subprocess.PIPE)
    try:
        with pytest.raises(ConnectionError, match=r"\(killed by SIGKILL\): real reason$"):
            client.initialize()
    finally:
        client.close()
