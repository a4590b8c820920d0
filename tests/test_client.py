"""DaemonClient when the daemon goes away: waiters wake at once instead of timing out."""

from __future__ import annotations

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
