"""Descriptors that tie a method or notification name to its Struct types."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class NotificationSpec:
    """A notification; `direction` is "server" (daemon -> shell) or "client"."""

    name: str
    params: type
    summary: str
    direction: str = "server"


@dataclass(frozen=True, slots=True)
class MethodSpec:
    """A request the daemon answers: `name` takes `params` and returns `result`."""

    name: str
    params: type
    result: Any
    summary: str
    #: notifications this method streams while it runs
    streams: tuple[NotificationSpec, ...] = ()
    #: requests in the same lane start only after every earlier one in it has finished, so a
    #: pipelined write-then-read sees the write (README, "Ordering"); None: no order needed
    lane: str | None = None
    #: may run for long (streams, waits on the network or a model): refused when sent
    #: without an id, since nobody could cancel it
    long_running: bool = False

    @property
    def is_long_running(self) -> bool:
        return self.long_running or bool(self.streams)
