"""The process's stdio, made safe for a protocol.

`claim_stdout` keeps a private duplicate of fd 1 for protocol output and points fd 1 and
`sys.stdout` at stderr, so a `print` in any library or C extension (pyttsx3 prints on every
save) lands in the log stream, never in the protocol stream. Likewise it keeps a private
duplicate of fd 0 and points fd 0 at /dev/null, so a child process that inherits stdin
cannot read (steal) the shell's requests.

`FdReader`/`FdWriter` move bytes with non-blocking fds and `anyio.wait_readable`/
`wait_writable`: no thread hop per line (the MCP SDK's `anyio.wrap_file` caps a child at
about 3k lines/s). Windows has no readiness for pipes, so there one thread reads 64 KiB
chunks.
"""

from __future__ import annotations

import os
import stat
import sys
import threading
from dataclasses import dataclass

import anyio
import anyio.lowlevel

CHUNK = 65536
#: read at most this much input back to back before letting other tasks run
YIELD_EVERY_BYTES = 4 * CHUNK


@dataclass(slots=True)
class ProtocolFds:
    read_fd: int
    write_fd: int


def claim_stdout() -> ProtocolFds:
    """Private, non-inheritable copies of fds 0 and 1 for the protocol; fd 0 becomes
    /dev/null and fd 1 (and `sys.stdout`) stderr, for everything else in the process."""
    sys.stdout.flush()
    read_fd = os.dup(0)  # os.dup makes non-inheritable fds: children never get the protocol pipes
    write_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    return ProtocolFds(read_fd=read_fd, write_fd=write_fd)


def _pollable(fd: int) -> bool:
    """Pipes, sockets and ttys work with readiness; regular files never block anyway."""
    if sys.platform == "win32":
        return False
    mode = os.fstat(fd).st_mode
    return not stat.S_ISREG(mode) and not stat.S_ISBLK(mode)


class _NonBlocking:
    """Sets O_NONBLOCK on a pollable fd and restores the flags on close (a tty is shared)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pollable = _pollable(fd)
        self._was_blocking = False
        if self.pollable:
            self._was_blocking = os.get_blocking(fd)
            os.set_blocking(fd, False)

    def restore(self) -> None:
        if self.pollable and self._was_blocking:
            try:
                os.set_blocking(self.fd, True)
            except OSError:
                pass


class FdReader(_NonBlocking):
    def __init__(self, fd: int) -> None:
        super().__init__(fd)
        self._unyielded = 0  # bytes read since we last let other tasks run

    def _read_now(self) -> bytes | None:
        """What is there now: data; b"" at end of input (a reset socket, as libuv-based shells
        may hand us, counts as the end); None when nothing has arrived yet."""
        try:
            return os.read(self.fd, CHUNK)
        except BlockingIOError:
            return None
        except OSError:
            return b""

    async def read(self) -> bytes:
        """Next chunk of input; b"" at end of file."""
        if not self.pollable:
            await anyio.lowlevel.checkpoint()
            return self._read_now() or b""
        data = self._read_now()
        if data is not None:
            # Input was already waiting, so we have not yielded. A client that writes faster
            # than we read would starve every request task and the writer; yielding on every
            # such read costs a quarter of pipelined throughput, so yield once per budget.
            self._unyielded += len(data)
            if self._unyielded >= YIELD_EVERY_BYTES:
                self._unyielded = 0
                await anyio.lowlevel.checkpoint()
            return data
        self._unyielded = 0
        while True:
            await anyio.wait_readable(self.fd)
            data = self._read_now()
            if data is not None:
                return data


class ThreadReader:
    """One reader thread feeding chunks to the event loop (Windows pipes)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._send, self._receive = anyio.create_memory_object_stream[bytes](16)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        token = anyio.lowlevel.current_token()

        def pump() -> None:
            while True:
                try:
                    chunk = os.read(self.fd, CHUNK)
                except OSError:
                    chunk = b""
                try:
                    anyio.from_thread.run(self._send.send, chunk, token=token)
                except Exception:
                    return
                if not chunk:
                    return

        self._thread = threading.Thread(target=pump, name="sidecar-stdin", daemon=True)
        self._thread.start()

    async def read(self) -> bytes:
        if self._thread is None:
            self.start()
        try:
            return await self._receive.receive()
        except anyio.EndOfStream:
            return b""

    def restore(self) -> None:
        pass


class FdWriter(_NonBlocking):
    """Non-blocking writes with readiness; on Windows, whose pipes have no readiness, blocking
    writes in one worker thread, so a full pipe never stalls the event loop."""

    def __init__(self, fd: int) -> None:
        super().__init__(fd)
        self.threaded = sys.platform == "win32"
        self._thread_limiter = anyio.CapacityLimiter(1)

    def try_write(self, data: bytes) -> int:
        """Write what the pipe takes now, without waiting; the number of bytes written."""
        if self.threaded:
            return 0  # a blocking write could stall the loop: leave it to the writer thread
        try:
            return os.write(self.fd, data)
        except BlockingIOError:
            return 0

    async def write(self, data: bytes) -> None:
        if self.threaded:
            await anyio.to_thread.run_sync(self._write_all, data, limiter=self._thread_limiter)
            return
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                await anyio.wait_writable(self.fd)
                continue
            view = view[n:]

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]


def open_reader(fd: int) -> FdReader | ThreadReader:
    return ThreadReader(fd) if sys.platform == "win32" else FdReader(fd)
