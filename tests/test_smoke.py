"""The daemon starts, initializes, answers, and exits cleanly."""

from sidecar.client import DaemonClient


def test_ping_and_clean_exit(daemon: DaemonClient) -> None:
    assert daemon.request("system/ping") == {"pong": True}
    assert daemon.shutdown() == 0
    assert daemon.garbage == []
