"""What a handler gets besides its params: who asked, and a way to stream back."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

from protocol.jsonrpc import RequestId
from protocol.spec import NotificationSpec
from protocol.streaming import StreamEvent
from sidecar.commit import RequestGuard

if TYPE_CHECKING:
    from sidecar.server.session import Session


#: a streaming handler yields to the event loop at least this often, even when the outgoing
#: queue has room: without it a producer that never waits would starve the read loop, and a
#: `$/cancelRequest` for it would be read only after it finished
CHECKPOINT_EVERY = 64


class Stream:
    """Streamed notifications of one kind, tied to one request.

    `send(event)` takes a Struct subclassing `StreamEvent` (a tagged union's variants are
    fine); the stream fills in `requestId` and a `seq` counting from 0. It waits while the
    outgoing queue is full, so a fast producer cannot outrun a slow shell's memory.
    """

    __slots__ = ("_ctx", "_spec")

    def __init__(self, ctx: RequestContext, spec: NotificationSpec) -> None:
        self._ctx = ctx
        self._spec = spec

    async def send(self, event: StreamEvent) -> None:
        ctx = self._ctx
        if ctx.request_id is None:
            # a notification (or an `id: null` request) has nobody to stream to; still yield,
            # or a producer with nothing else to await would hold the event loop
            await anyio.lowlevel.checkpoint()
            return
        seq = ctx.next_seq()
        event.requestId = ctx.request_id
        event.seq = seq
        await ctx.session.notify(self._spec.name, event)
        if seq % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1:
            await anyio.lowlevel.checkpoint()


class RequestContext:
    __slots__ = ("session", "request_id", "is_request", "method", "scope", "guard", "started", "_seq",
                 "__weakref__")

    def __init__(self, session: Session, request_id: RequestId | None, method: str, *,
                 is_request: bool = True) -> None:
        self.session = session
        #: None for a notification, and for a request sent with `id: null`
        self.request_id = request_id
        #: a response is owed (JSON-RPC allows `id: null`, so request_id alone cannot say)
        self.is_request = is_request
        self.method = method
        self.scope: anyio.CancelScope | None = None
        #: decides whether a cancellation may still take effect (sidecar/commit.py)
        self.guard: RequestGuard | None = None
        self.started = False
        self._seq = 0

    def next_seq(self) -> int:
        seq = self._seq
        self._seq += 1
        return seq

    def stream(self, spec: NotificationSpec) -> Stream:
        return Stream(self, spec)

    def cancel(self) -> None:
        """Cancel unless a write of this request has committed (then it answers its result)."""
        if self.guard is not None:
            self.guard.request_cancel()
        elif self.scope is not None:
            self.scope.cancel()

    def force_cancel(self) -> None:
        """Wind-down: cancel whatever it is doing."""
        if self.scope is not None:
            self.scope.cancel()
