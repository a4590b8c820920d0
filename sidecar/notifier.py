"""Daemon-originated notifications that no request asked for (`settings/changed`,
`scheduler/fired`, `plugins/reloaded`).

Services get a `Notifier` at construction and call `notify(spec, event)`; they know nothing
of sessions or JSON-RPC. Until a session is attached and its client has said it is ready
(`initialized`, or any request after `initialize`), notifications are held, up to
`HOLD_LIMIT`, oldest dropped first (and counted), then flushed in order.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

import msgspec

from protocol.spec import NotificationSpec

log = logging.getLogger("sidecar.notifier")

HOLD_LIMIT = 1000

Sink = Callable[[str, msgspec.Struct], None]


class Notifier:
    def __init__(self) -> None:
        self._sink: Sink | None = None
        self._held: deque[tuple[str, msgspec.Struct]] = deque()
        self.dropped = 0

    def notify(self, spec: NotificationSpec, event: msgspec.Struct) -> None:
        """Send `event` as a `spec` notification now, or once the client is ready. Never
        blocks: the session's outbox bounds what a slow shell can hold up."""
        if not isinstance(event, spec.params):
            raise TypeError(f"{spec.name} takes {spec.params.__name__}, not {type(event).__name__}")
        if self._sink is not None:
            self._sink(spec.name, event)
            return
        if len(self._held) >= HOLD_LIMIT:
            self._held.popleft()
            self.dropped += 1
        self._held.append((spec.name, event))

    def attach(self, sink: Sink) -> None:
        """The client is ready: flush what was held, then send straight through."""
        held, self._held = self._held, deque()
        if self.dropped:
            log.warning("%d notification(s) dropped while the client was not ready", self.dropped)
        for name, event in held:
            sink(name, event)
        self._sink = sink

    def detach(self) -> None:
        self._sink = None
