"""Tie the daemon's life to its parent's, and its children's lives to its own.

Desktop shells orphan their sidecars on force-quit. We exit within a second of the parent
dying: on Linux the kernel tells us at once (PR_SET_PDEATHSIG), everywhere a watchdog polls
the parent. On the way out every descendant process (MCP servers, workers) is terminated,
then killed if it lingers.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable

import anyio
import psutil

log = logging.getLogger("sidecar.lifeline")

PR_SET_PDEATHSIG = 1


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask Linux to send us `sig` when the thread that forked us exits."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


class ParentWatch:
    """Is the process we serve still there? Survives pid reuse by checking create time."""

    def __init__(self, parent_pid: int) -> None:
        self.parent_pid = parent_pid
        self._is_real_parent = parent_pid == os.getppid()
        try:
            self._created = psutil.Process(parent_pid).create_time()
        except psutil.Error:
            self._created = None

    def alive(self) -> bool:
        if self._is_real_parent and os.getppid() != self.parent_pid:
            return False  # re-parented: our parent is gone
        if self._created is None:
            return False
        try:
            return psutil.Process(self.parent_pid).create_time() == self._created
        except psutil.Error:
            return False

    async def watch(self, on_death: Callable[[str], None], interval: float = 0.25) -> None:
        while True:
            if not self.alive():
                on_death(f"parent process {self.parent_pid} exited")
                return
            await anyio.sleep(interval)


async def watch_signals(on_signal: Callable[[str], None]) -> None:
    signals = [signal.SIGTERM, signal.SIGINT]
    if hasattr(signal, "SIGHUP"):
        signals.append(signal.SIGHUP)
    with anyio.open_signal_receiver(*signals) as received:
        async for signum in received:
            on_signal(f"signal {signal.Signals(signum).name}")


def terminate_descendants(timeout: float = 0.5) -> int:
    """Terminate every descendant, kill those still alive after `timeout`; returns how many."""
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
    """`preexec_fn` for children we spawn: they die with us even if we are killed -9."""
    set_parent_death_signal(signal.SIGKILL)
