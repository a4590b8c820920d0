"""Tie the daemon's life to its parent's, and its children's lives to its own.

Desktop shells orphan their sidecars on force-quit. We exit within a second of the parent
dying: on Linux the kernel tells us at once (PR_SET_PDEATHSIG), everywhere a watchdog polls
the parent. On the way out every descendant process (MCP servers, workers) is terminated,
then killed if it lingers.

The kernel sends the parent-death signal when the *thread* that forked us exits, not the
process: a shell that spawns us from a worker thread (a Rust runtime's blocking pool, say)
would kill us when that thread ends. So the signal is SIGUSR2, not SIGTERM, and it only
makes us check whether the parent process is really gone.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable

import anyio
import anyio.abc

log = logging.getLogger("sidecar.lifeline")

PR_SET_PDEATHSIG = 1
#: what the kernel sends us when our parent thread exits (Linux only)
PARENT_DEATH_SIGNAL: int | None = getattr(signal, "SIGUSR2", None) if sys.platform.startswith("linux") else None


def _find_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


# resolved once, here: `child_preexec` runs between fork and exec, where loading a library
# could deadlock on a lock another thread held at the fork
_prctl = _find_prctl()


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask Linux to send us `sig` when the thread that forked us exits."""
    if _prctl is None:
        return False
    return _prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0


_signalled_early = False


def _noted(signum: int, frame: object) -> None:
    """Before the event loop listens: remember the signal for `ParentWatch` to act on."""
    global _signalled_early
    _signalled_early = True


def hold_parent_death_signal() -> None:
    """Make PARENT_DEATH_SIGNAL harmless outside the event loop (its default action kills)."""
    if PARENT_DEATH_SIGNAL is not None:
        signal.signal(PARENT_DEATH_SIGNAL, _noted)


def arm_parent_death_signal() -> bool:
    """Have the kernel tell us (PARENT_DEATH_SIGNAL) when our parent thread exits."""
    if PARENT_DEATH_SIGNAL is None:
        return False
    hold_parent_death_signal()
    return set_parent_death_signal(PARENT_DEATH_SIGNAL)


class ParentWatch:
    """Is the process we serve still there?

    Our real parent, on POSIX: we are re-parented the moment it dies, so `getppid()` says
    it all. Any other process (`--parent-pid`, or Windows): psutil, imported only then
    (it costs start-up time), comparing create times so a reused pid does not fool us.
    """

    def __init__(self, parent_pid: int) -> None:
        self.parent_pid = parent_pid
        self._by_ppid = parent_pid == os.getppid() and os.name == "posix"
        self._created: float | None = None
        if not self._by_ppid:
            self._created = _create_time(parent_pid)

    def alive(self) -> bool:
        if self._by_ppid:
            return os.getppid() == self.parent_pid
        return self._created is not None and _create_time(self.parent_pid) == self._created

    async def watch(self, on_death: Callable[[str], None], interval: float = 0.25, *,
                    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Call `on_death` once the parent is gone: on the kernel's signal, or the next poll.
        Reports started (for `TaskGroup.start`) once it is listening."""
        async with anyio.create_task_group() as tg:
            def gone() -> None:
                on_death(f"parent process {self.parent_pid} exited")
                tg.cancel_scope.cancel()

            if PARENT_DEATH_SIGNAL is not None:
                await tg.start(self._listen, gone)
            tg.start_soon(self._poll, gone, interval)
            task_status.started()

    async def _poll(self, gone: Callable[[], None], interval: float) -> None:
        while self.alive():
            await anyio.sleep(interval)
        gone()

    async def _listen(self, gone: Callable[[], None], *,
                      task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        global _signalled_early
        assert PARENT_DEATH_SIGNAL is not None
        with anyio.open_signal_receiver(PARENT_DEATH_SIGNAL) as received:
            task_status.started()
            if _signalled_early:  # it came while we were starting up
                _signalled_early = False
                self._on_signal(gone)
            async for _ in received:
                self._on_signal(gone)

    def _on_signal(self, gone: Callable[[], None]) -> None:
        if not self.alive():
            gone()
            return
        # the thread that forked us ended; the kernel re-parented us to another thread of
        # the same process, and will signal again when that one ends
        log.info("the thread that started us exited; parent process %d lives on", self.parent_pid)


def _create_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


async def watch_signals(on_signal: Callable[[str], None], *,
                        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    signals = [signal.SIGTERM, signal.SIGINT]
    if hasattr(signal, "SIGHUP"):
        signals.append(signal.SIGHUP)
    with anyio.open_signal_receiver(*signals) as received:
        task_status.started()
        async for signum in received:
            on_signal(f"signal {signal.Signals(signum).name}")


def terminate_descendants(timeout: float = 0.5) -> int:
    """Terminate every descendant, kill those still alive after `timeout`; returns how many."""
    import psutil

    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return 0
    for child in children:
        try:
            child.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(children, timeout=timeout)
    for child in alive:
        try:
            child.kill()
        except psutil.Error:
            pass
    if children:
        log.info("terminated %d child process(es)", len(children))
    return len(children)


def child_preexec() -> None:
    """`preexec_fn` for children we spawn: they die with us even if we are killed -9.

    The kernel kills the child when the *thread* that spawned it exits: spawn from the event
    loop's thread, never from a worker thread (anyio retires idle workers after 10 s).
    """
    set_parent_death_signal(signal.SIGKILL)
