"""Descriptors that tie a method or notification name to its Struct types."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class MethodSpec:
    """A request the daemon answers: `name` takes `params` and returns `result`."""

    name: str
    params: type
    result: Any
    summary: str
    #: notifications this method streams while it runs (names of NotificationSpecs)
    streams: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NotificationSpec:
    """A notification; `direction` is "server" (daemon -> shell) or "client"."""

    name: str
    params: type
    summary: str
    direction: str = "server"
