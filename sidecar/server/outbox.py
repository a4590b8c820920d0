"""The bounded queue between everything that answers and the one task that writes stdout.

Streaming producers `await put()` and wait while the queue holds more than `limit_bytes`, so
a shell that reads slowly slows the producers instead of growing memory. Responses from the
read loop use `put_nowait()` and never wait there: a read loop stuck behind a full pipe
could deadlock a client that is itself blocked writing to us. Responses are bounded by the
requests read; `over_hard_limit` tells the read loop to stop reading until the backlog
drains, so even a client that never reads cannot grow us without bound.

Any write error (EPIPE, EIO, ENOSPC...) means the shell is gone: the outbox marks itself
broken, drops what it holds and calls `on_broken`, and the session winds down.

At exit, queued notifications are dropped (their requests are being cancelled) and the
responses still queued are written; a write that has begun is always finished, so the
shell never sees half a frame.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable

import anyio

log = logging.getLogger("sidecar.server")

WRITE_BATCH_BYTES = 1 << 20


class Outbox:
    def __init__(self, write: Callable[[bytes], Awaitable[None]], limit_bytes: int = 8 << 20,
                 try_write: Callable[[bytes], int] | None = None,
                 on_broken: Callable[[], None] | None = None) -> None:
        self._write = write
        #: a non-blocking write returning the bytes taken: when nothing is queued or being
        #: written, a message goes straight to the pipe, saving a task switch per answer
        self._try_write = try_write
        self._on_broken = on_broken
        self._writing = False
        self.limit_bytes = limit_bytes
        self.hard_limit_bytes = limit_bytes * 4
        #: (frame, droppable): notifications may be dropped at exit, responses and the rest
        #: of a frame already partly written may not
        self._items: deque[tuple[bytes, bool]] = deque()
        self.pending_bytes = 0
        self._has_items = anyio.Event()
        self._has_space = anyio.Event()
        self._closed = False
        self._finished = anyio.Event()  # `run` has returned
        self.broken = False  # the reader went away, or writing failed
        self._write_scope: anyio.CancelScope | None = None
        self._abandoned = False
        self._in_flight = 0  # bytes taken off the queue and being written

    def put_nowait(self, data: bytes, *, droppable: bool = False) -> None:
        if self.broken:
            return
        if self._try_write is not None and not self._items and not self._writing:
            try:
                written = self._try_write(data)
            except OSError as exc:
                self._mark_broken(exc)
                return
            if written == len(data):
                return
            if written:
                data = data[written:]  # the pipe is full: the writer task sends the rest
                droppable = False  # never leave half a frame
        self._items.append((data, droppable))
        self.pending_bytes += len(data)
        self._has_items.set()

    async def put(self, data: bytes, *, droppable: bool = False) -> None:
        await self.wait_below_limit()
        self.put_nowait(data, droppable=droppable)

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
            if self._abandoned:
                return
            if not self._items:
                if self._closed:
                    return
                self._has_items = anyio.Event()
                await self._has_items.wait()
                continue
            first, _ = self._items.popleft()
            batch = [first]
            size = len(first)
            while self._items and size < WRITE_BATCH_BYTES:
                item, _ = self._items.popleft()
                batch.append(item)
                size += len(item)
            self._writing = True
            self._in_flight = size
            try:
                # once begun, a write completes even if the writer is cancelled: a partial
                # frame would corrupt the shell's stream (the session bounds how long it waits)
                with anyio.CancelScope(shield=True) as self._write_scope:
                    await self._write(b"".join(batch) if len(batch) > 1 else batch[0])
                if self._write_scope.cancelled_caught:
                    return  # abandoned: the shell stopped reading for good

            except OSError as exc:
                self._mark_broken(exc)
                return
            finally:
                self._writing = False
                self._write_scope = None
            self.pending_bytes -= size
            self._in_flight = 0
            if self.pending_bytes < self.limit_bytes:
                self._has_space.set()

    def _mark_broken(self, exc: OSError) -> None:
        if not self.broken:
            log.info("stdout failed (%s): the shell is gone", exc.strerror or type(exc).__name__)
        self.broken = True
        self._items.clear()
        self.pending_bytes = 0
        self._has_space.set()
        self._has_items.set()
        if self._on_broken is not None:
            self._on_broken()

    def close(self) -> None:
        """No more messages; `run` returns once the queue is drained."""
        self._closed = True
        self._has_items.set()

    def drop_notifications(self) -> int:
        """Forget queued notifications not yet begun (answers stay); the bytes dropped."""
        before = self.pending_bytes
        kept = deque(item for item in self._items if not item[1])
        self.pending_bytes = sum(len(data) for data, _ in kept) + self._in_flight
        self._items = kept
        if self.pending_bytes < self.limit_bytes:
            self._has_space.set()
        return before - self.pending_bytes

    def abandon(self) -> None:
        """Give up, even on a write in flight (only when the shell has stopped reading for
        longer than any exit may wait)."""
        self._abandoned = True
        self._has_items.set()
        if self._write_scope is not None:
            self._write_scope.cancel()

    async def drain(self) -> None:
        """After `close`: wait until `run` has written everything."""
        await self._finished.wait()
