"""The rule for cancelled writes: -32800 means nothing was applied.

Each request runs with a `RequestGuard` in a context variable. A cancellation that arrives
while a store write is in flight waits for it: if the write commits, the cancellation is
dropped and the request answers its result (its notifications still go out); if the write
rolls back, the cancellation happens then. A cancellation after a commit is dropped too.
The store calls `writing()` around each transaction; services need do nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar


class RequestGuard:
    __slots__ = ("_cancel", "_writes", "committed", "cancel_requested")

    def __init__(self, cancel: Callable[[], None]) -> None:
        self._cancel = cancel
        self._writes = 0
        #: a write of this request has committed: it can no longer be cancelled
        self.committed = False
        self.cancel_requested = False

    def request_cancel(self) -> bool:
        """Cancel now if nothing is committed or in flight; True if the cancel took effect
        (or will, once an in-flight write rolls back)."""
        if self.committed:
            return False
        self.cancel_requested = True
        if self._writes == 0:
            self._cancel()
        return True

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Around one transaction; the caller shields it from cancellation and calls
        `mark_committed()` once it has committed."""
        self._writes += 1
        try:
            yield
        finally:
            self._writes -= 1
            if self._writes == 0 and self.cancel_requested and not self.committed:
                self._cancel()

    def mark_committed(self) -> None:
        self.committed = True


current_guard: ContextVar[RequestGuard | None] = ContextVar("sidecar_request_guard", default=None)
