"""The bounded queue between everything that answers and the one task that writes stdout.

Streaming producers `await put()` and wait while the queue holds more than `limit_bytes`, so
a shell that reads slowly slows the producers instead of growing memory. Responses from the
read loop use `put_nowait()` and never wait there: a read loop stuck behind a full pipe
could deadlock a client that is itself blocked writing to us. Responses are bounded by the
requests read; `over_hard_limit` tells the read loop to stop reading until the backlog
drains, so even a client that never reads cannot grow us without bound.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable

import anyio

WRITE_BATCH_BYTES = 1 << 20


class Outbox:
    def __init__(self, write: Callable[[bytes], Awaitable[None]], limit_bytes: int = 8 << 20,
                 try_write: Callable[[bytes], int] | None = None) -> None:
        self._write = write
        #: a non-blocking write returning the bytes taken: when nothing is queued or being
        #: written, a message goes straight to the pipe, saving a task switch per answer
        self._try_write = try_write
        self._writing = False
        self.limit_bytes = limit_bytes
        self.hard_limit_bytes = limit_bytes * 4
        self._items: deque[bytes] = deque()
        self.pending_bytes = 0
        self._has_items = anyio.Event()
        self._has_space = anyio.Event()
        self._closed = False
        self._finished = anyio.Event()  # `run` has returned: everything queued was written
        self.broken = False  # the reader went away (EPIPE)

    def put_nowait(self, data: bytes) -> None:
        if self.broken:
            return
        if self._try_write is not None and not self._items and not self._writing:
            try:
                written = self._try_write(data)
            except (BrokenPipeError, ConnectionResetError):
                self._mark_broken()
                return
            if written == len(data):
                return
            data = data[written:]  # the pipe is full: the writer task sends the rest
        self._items.append(data)
        self.pending_bytes += len(data)
        self._has_items.set()

    async def put(self, data: bytes) -> None:
        await self.wait_below_limit()
        self.put_nowait(data)

    @property
    def over_hard_limit(self) -> bool:
        return self.pending_bytes >= self.hard_limit_bytes

    async def wait_below_limit(self) -> None:
        while self.pending_bytes >= self.limit_bytes and not self.broken:
            if self._has_space.is_set():
                self._has_space = anyio.Event()
            await self._has_space.wait()

    async def run(self) -> None:
        """Write queued messages until closed and drained; coalesces into large writes."""
        try:
            await self._run()
        finally:
            self._finished.set()

    async def _run(self) -> None:
        while True:
            if not self._items:
                if self._closed:
                    return
                self._has_items = anyio.Event()
                await self._has_items.wait()
                continue
            batch = [self._items.popleft()]
            size = len(batch[0])
            while self._items and size < WRITE_BATCH_BYTES:
                item = self._items.popleft()
                batch.append(item)
                size += len(item)
            self._writing = True
            try:
                await self._write(b"".join(batch) if len(batch) > 1 else batch[0])
            except (BrokenPipeError, ConnectionResetError):
                self._mark_broken()
                return
            finally:
                self._writing = False
            self.pending_bytes -= size
            if self.pending_bytes < self.limit_bytes:
                self._has_space.set()

    def _mark_broken(self) -> None:
        self.broken = True
        self._items.clear()
        self.pending_bytes = 0
        self._has_space.set()

    def close(self) -> None:
        """No more messages; `run` returns once the queue is drained."""
        self._closed = True
        self._has_items.set()

    async def drain(self) -> None:
        """After `close`: wait until `run` has written everything, including a batch it has
        already taken off the queue (cancelling it then would cut a message in half)."""
        await self._finished.wait()
