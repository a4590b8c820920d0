"""Lifecycle (issue point 5): initialize, shutdown/exit codes, and the daemon's life tied to
its stdin, its parent and its signals, taking its own children with it.

Process deaths are checked by polling with a generous liveness timeout; how long each took
is printed (run with -s to see it), never asserted.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from protocol import PROTOCOL_VERSION
from protocol.catalog import METHODS, NOTIFICATIONS
from sidecar.client import DaemonClient, RpcError
from tests.conftest import serve_argv

LIVENESS_TIMEOUT = 10.0


def gone_within(pid: int, timeout: float = LIVENESS_TIMEOUT) -> float | None:
    """Seconds until `pid` exited (a zombie counts: it runs no more), or None on timeout."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return time.monotonic() - began
        except psutil.NoSuchProcess:
            return time.monotonic() - began
        time.sleep(0.01)
    return None


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def report(what: str, seconds: float | None) -> None:
    print(f"\n[lifecycle] {what}: {'not gone' if seconds is None else f'{seconds * 1000:.0f} ms'}")


def spawn_sleep(client: DaemonClient, die_with_daemon: bool = False) -> int:
    pid = client.request("debug/spawn", {"argv": ["sleep", "300"], "dieWithDaemon": die_with_daemon})["pid"]
    assert alive(pid)
    return pid


# ---- initialize ---------------------------------------------------------------------


def test_initialize_describes_the_server(spawn: Callable[..., DaemonClient]) -> None:
    client = spawn(initialize=False)
    result = client.request("initialize", {"clientInfo": {"name": "pytest", "version": "1"},
                                           "protocolVersion": PROTOCOL_VERSION, "capabilities": {}})
    assert result["serverInfo"]["name"] == "sidecar"
    assert result["serverInfo"]["version"]
    assert result["protocolVersion"] == PROTOCOL_VERSION
    # with --debug-methods (the fixture's default) every method of the catalog is offered
    assert set(result["methods"]) == {m.name for m in METHODS}
    assert {"debug/fail", "debug/sleep", "debug/print", "debug/spawn"} <= set(result["methods"])
    assert {"settings/changed", "system/streamChunk"} <= set(result["notifications"])
    assert set(result["notifications"]) <= {n.name for n in NOTIFICATIONS}
    assert "system/ping" not in result["notifications"]


def test_debug_methods_only_on_request(data_dir: Path) -> None:
    argv = [a for a in serve_argv(data_dir) if a != "--debug-methods"]
    with DaemonClient(argv) as client:
        result = client.initialize("pytest")
        assert not [m for m in result["methods"] if m.startswith("debug/")]
        assert "system/ping" in result["methods"]
        with pytest.raises(RpcError) as err:
            client.request("debug/sleep", {"seconds": 0})
        assert err.value.code == -32601


def test_requests_before_initialize_get_a_clear_error(spawn: Callable[..., DaemonClient]) -> None:
    client = spawn(initialize=False)
    with pytest.raises(RpcError) as err:
        client.request("system/ping")
    assert err.value.code == -32002
    assert err.value.kind == "not_initialized"
    assert "initialize" in err.value.error["message"]
    client.initialize("pytest")
    assert client.request("system/ping") == {"pong": True}


def test_initialize_twice_is_refused(daemon: DaemonClient) -> None:
    with pytest.raises(RpcError) as err:
        daemon.request("initialize", {})
    assert err.value.code == -32600
    assert daemon.request("system/ping") == {"pong": True}


# ---- shutdown and exit ----------------------------------------------------------------


def test_exit_after_shutdown_is_code_0(daemon: DaemonClient) -> None:
    assert daemon.request("shutdown") is None
    with pytest.raises(RpcError) as err:
        daemon.request("system/ping")
    assert err.value.kind == "shutting_down"
    daemon.notify("exit")
    assert daemon.proc.wait(timeout=LIVENESS_TIMEOUT) == 0
    assert daemon.garbage == []


def test_exit_without_shutdown_is_code_1(daemon: DaemonClient) -> None:
    daemon.notify("exit")
    assert daemon.proc.wait(timeout=LIVENESS_TIMEOUT) == 1


def test_exit_before_initialize_is_code_1(spawn: Callable[..., DaemonClient]) -> None:
    client = spawn(initialize=False)
    client.notify("exit")
    assert client.proc.wait(timeout=LIVENESS_TIMEOUT) == 1


def test_stdin_close_exits_with_code_0(daemon: DaemonClient) -> None:
    assert daemon.request("system/ping") == {"pong": True}
    began = time.monotonic()
    assert daemon.proc.stdin is not None
    daemon.proc.stdin.close()
    assert daemon.proc.wait(timeout=LIVENESS_TIMEOUT) == 0
    report("stdin closed -> exit", time.monotonic() - began)


def test_stdin_close_lets_a_short_request_answer(daemon: DaemonClient) -> None:
    """A request already read when stdin closes still gets its answer (a grace period)."""
    waiter = daemon.expect(99)
    daemon.send({"jsonrpc": "2.0", "id": 99, "method": "debug/sleep", "params": {"seconds": 0.05}})
    assert daemon.proc.stdin is not None
    daemon.proc.stdin.close()
    assert "result" in daemon.wait(99, waiter, timeout=LIVENESS_TIMEOUT)
    assert daemon.proc.wait(timeout=LIVENESS_TIMEOUT) == 0


def test_sigterm_exits_cleanly(daemon: DaemonClient, data_dir: Path) -> None:
    child = spawn_sleep(daemon)
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(timeout=LIVENESS_TIMEOUT) == 0
    assert gone_within(child) is not None
    log = (data_dir / "logs" / "sidecar.log").read_text()
    assert "signal SIGTERM" in log
    assert "exiting with code 0" in log


# ---- parent death ---------------------------------------------------------------------

# An intermediate parent, as a desktop shell would be: it spawns the daemon, says its pid, and
# waits to be killed. The daemon's stdin and stdout are pipes the *test* holds open, so the
# daemon cannot notice its parent's death through a closed stdin: only the lifeline counts.
_PARENT = textwrap.dedent("""
    import os, subprocess, sys, time
    argv = sys.argv[3:]
    stdin_fd, stdout_fd = int(sys.argv[1]), int(sys.argv[2])
    child = subprocess.Popen(argv, stdin=stdin_fd, stdout=stdout_fd, stderr=subprocess.DEVNULL,
                             pass_fds=(stdin_fd, stdout_fd))
    os.close(stdin_fd)
    os.close(stdout_fd)
    print(child.pid, flush=True)
    time.sleep(300)
""")


class _Pipes:
    def __init__(self) -> None:
        self.in_r, self.in_w = os.pipe()
        self.out_r, self.out_w = os.pipe()

    def read_until(self, needle: bytes) -> bytes:
        seen = b""
        deadline = time.monotonic() + LIVENESS_TIMEOUT
        while needle not in seen:
            ready, _, _ = select.select([self.out_r], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"no {needle!r} from the daemon within {LIVENESS_TIMEOUT} s"
            chunk = os.read(self.out_r, 65536)
            assert chunk, "daemon closed stdout before answering"
            seen += chunk
        return seen

    def handshake(self) -> None:
        """initialize the daemon over the pipes and read its answer."""
        os.write(self.in_w, b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}\n')
        os.write(self.in_w, b'{"jsonrpc":"2.0","method":"initialized"}\n')
        self.ping(2)

    def ping(self, request_id: int) -> None:
        os.write(self.in_w, b'{"jsonrpc":"2.0","id":%d,"method":"system/ping"}\n' % request_id)
        self.read_until(b'"id":%d,"result":{"pong":true}' % request_id)

    def close_child_ends(self) -> None:
        os.close(self.in_r)
        os.close(self.out_w)

    def close(self) -> None:
        for fd in (self.in_w, self.out_r):
            try:
                os.close(fd)
            except OSError:
                pass


def _start_via_parent(data_dir: Path, pipes: _Pipes, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, str(pipes.in_r), str(pipes.out_w),
                               *serve_argv(data_dir, *extra)],
                              stdout=subprocess.PIPE, pass_fds=(pipes.in_r, pipes.out_w))
    pipes.close_child_ends()
    assert parent.stdout is not None
    daemon_pid = int(parent.stdout.readline())
    return parent, daemon_pid


def _spawn_over_pipes(pipes: _Pipes, argv: list[str], die_with_daemon: bool = False) -> int:
    message = {"jsonrpc": "2.0", "id": 3, "method": "debug/spawn",
               "params": {"argv": argv, "dieWithDaemon": die_with_daemon}}
    os.write(pipes.in_w, json.dumps(message, separators=(",", ":")).encode() + b"\n")
    seen = pipes.read_until(b'"id":3')
    line = next(x for x in seen.splitlines() if b'"id":3' in x)
    return int(json.loads(line)["result"]["pid"])


def test_parent_death_takes_the_daemon_and_its_children(data_dir: Path) -> None:
    pipes = _Pipes()
    parent, daemon_pid = _start_via_parent(data_dir, pipes)
    child = None
    try:
        pipes.handshake()
        child = _spawn_over_pipes(pipes, ["sleep", "300"])
        assert alive(daemon_pid) and alive(child)
        parent.kill()
        parent.wait()
        took = gone_within(daemon_pid)
        report("parent SIGKILLed -> daemon gone (PR_SET_PDEATHSIG)", took)
        assert took is not None, "the daemon outlived its parent"
        assert gone_within(child) is not None, "the daemon's child outlived it"
        assert f"parent process {parent.pid} exited" in (data_dir / "logs" / "sidecar.log").read_text()
    finally:
        kill_quietly(daemon_pid)
        if child is not None:
            kill_quietly(child)
        parent.kill()
        parent.wait()
        pipes.close()


def test_parent_pid_watchdog(spawn: Callable[..., DaemonClient], data_dir: Path) -> None:
    """--parent-pid names a process that is not our parent: only the watchdog can notice."""
    watched = subprocess.Popen(["sleep", "300"])
    try:
        client = spawn("--parent-pid", str(watched.pid))
        child = spawn_sleep(client)
        assert client.request("system/ping") == {"pong": True}
        watched.kill()
        watched.wait()
        began = time.monotonic()
        code = client.proc.wait(timeout=LIVENESS_TIMEOUT)
        report("--parent-pid process killed -> daemon gone (watchdog)", time.monotonic() - began)
        assert code == 0
        assert gone_within(child) is not None
        assert f"parent process {watched.pid} exited" in (data_dir / "logs" / "sidecar.log").read_text()
    finally:
        watched.kill()
        watched.wait()


def test_no_parent_watch_keeps_serving(spawn: Callable[..., DaemonClient]) -> None:
    watched = subprocess.Popen(["sleep", "300"])
    try:
        client = spawn("--parent-pid", str(watched.pid), "--no-parent-watch")
        watched.kill()
        watched.wait()
        time.sleep(1.0)  # several watchdog periods; it must not react
        assert client.request("system/ping") == {"pong": True}
        assert client.proc.poll() is None
    finally:
        watched.kill()
        watched.wait()


def test_parent_pid_already_dead_exits_at_once(spawn: Callable[..., DaemonClient]) -> None:
    watched = subprocess.Popen(["true"])
    watched.wait()
    client = spawn("--parent-pid", str(watched.pid), initialize=False)
    assert client.proc.wait(timeout=LIVENESS_TIMEOUT) == 0


# ---- children -------------------------------------------------------------------------


def test_children_are_terminated_on_exit(daemon: DaemonClient) -> None:
    child = spawn_sleep(daemon)
    assert daemon.shutdown() == 0
    assert gone_within(child) is not None


def test_children_are_terminated_on_stdin_close(daemon: DaemonClient) -> None:
    children = [spawn_sleep(daemon) for _ in range(3)]
    assert daemon.close() == 0
    for child in children:
        assert gone_within(child) is not None


def test_children_die_with_a_daemon_killed_9(daemon: DaemonClient) -> None:
    """dieWithDaemon: the kernel (PR_SET_PDEATHSIG) kills the child even though the daemon
    gets no chance to clean up."""
    child = spawn_sleep(daemon, die_with_daemon=True)
    try:
        daemon.proc.kill()
        daemon.proc.wait()
        took = gone_within(child)
        report("daemon kill -9 -> dieWithDaemon child gone", took)
        assert took is not None
    finally:
        kill_quietly(child)


def test_grandchildren_are_terminated_too(daemon: DaemonClient) -> None:
    """An MCP server started through a shell script: the script's own children go as well."""
    shell = daemon.request("debug/spawn", {"argv": ["sh", "-c", "sleep 300 & sleep 300 & wait"]})["pid"]
    grandchildren: list[psutil.Process] = []
    began = time.monotonic()
    while len(grandchildren) < 2 and time.monotonic() - began < LIVENESS_TIMEOUT:
        grandchildren = psutil.Process(shell).children()
        time.sleep(0.01)
    assert len(grandchildren) == 2
    try:
        assert daemon.shutdown() == 0
        for pid in (shell, *(g.pid for g in grandchildren)):
            assert gone_within(pid) is not None
    finally:
        for g in grandchildren:
            kill_quietly(g.pid)


# Shells often spawn from a worker thread (a Rust async runtime's blocking pool, a Node worker)
# that exits long before the shell does. Linux fires PR_SET_PDEATHSIG when the *thread* that
# forked us exits: the daemon must not take that for its parent's death.
_THREAD_PARENT = textwrap.dedent("""
    import os, subprocess, sys, threading, time
    argv = sys.argv[3:]
    stdin_fd, stdout_fd = int(sys.argv[1]), int(sys.argv[2])
    def spawn():
        child = subprocess.Popen(argv, stdin=stdin_fd, stdout=stdout_fd, stderr=subprocess.DEVNULL,
                                 pass_fds=(stdin_fd, stdout_fd))
        os.close(stdin_fd)
        os.close(stdout_fd)
        print(child.pid, flush=True)
        sys.stdin.readline()  # the test says when this thread may end
    worker = threading.Thread(target=spawn)
    worker.start()
    worker.join()
    print("thread exited", flush=True)
    time.sleep(300)  # the process lives on
""")


def test_a_parent_thread_exiting_is_not_a_parent_death(data_dir: Path) -> None:
    pipes = _Pipes()
    parent = subprocess.Popen([sys.executable, "-c", _THREAD_PARENT, str(pipes.in_r), str(pipes.out_w),
                               *serve_argv(data_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              pass_fds=(pipes.in_r, pipes.out_w))
    pipes.close_child_ends()
    assert parent.stdout is not None and parent.stdin is not None
    daemon_pid = int(parent.stdout.readline())
    try:
        pipes.handshake()  # the daemon is up and has armed its lifeline
        parent.stdin.write(b"go\n")
        parent.stdin.flush()
        assert parent.stdout.readline() == b"thread exited\n"
        pipes.ping(10)  # still serving
        time.sleep(0.5)  # two watchdog periods: it must not react either
        pipes.ping(11)
        assert alive(daemon_pid)
        parent.kill()
        parent.wait()
        took = gone_within(daemon_pid)
        report("parent (spawned from a thread) SIGKILLed -> daemon gone", took)
        assert took is not None
        log = (data_dir / "logs" / "sidecar.log").read_text()
        assert "the thread that started us exited" in log
        assert f"parent process {parent.pid} exited" in log
    finally:
        kill_quietly(daemon_pid)
        parent.kill()
        parent.wait()
        pipes.close()
