"""Method registration: each `MethodSpec` gets a handler, a params decoder and a way to run.

A handler is `handler(ctx, params) -> result`. How it runs is decided here, once:
- `async def`: in its own cancellable task;
- plain `def`: in a worker thread, so a handler that reads files or does CPU work never
  stalls the read loop; `inline=True` runs it in the read loop itself (only for handlers
  that answer in microseconds and touch nothing slow, like `system/ping`, or that must run
  on the event loop's thread, like the lifecycle methods).
Params arrive as raw JSON bytes and are decoded straight into the spec's Struct, once
(a wrong field answers -32602 with its path).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from protocol.spec import MethodSpec, NotificationSpec
from sidecar.server.context import RequestContext

Handler = Callable[[RequestContext, Any], Any]
RunMode = Literal["inline", "thread", "async"]


@dataclass(frozen=True, slots=True)
class Route:
    spec: MethodSpec | NotificationSpec
    handler: Handler
    mode: RunMode
    decode: Callable[[bytes], Any]

    @property
    def is_notification(self) -> bool:
        return isinstance(self.spec, NotificationSpec)

    @property
    def lane(self) -> str | None:
        return self.spec.lane if isinstance(self.spec, MethodSpec) else None

    @property
    def long_running(self) -> bool:
        return isinstance(self.spec, MethodSpec) and self.spec.is_long_running


class Router:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}

    def method(self, spec: MethodSpec, *, inline: bool = False) -> Callable[[Handler], Handler]:
        def add(handler: Handler) -> Handler:
            self._add(spec, handler, inline)
            return handler
        return add

    def notification(self, spec: NotificationSpec) -> Callable[[Handler], Handler]:
        """Client notifications act on the session itself: they always run inline."""
        def add(handler: Handler) -> Handler:
            self._add(spec, handler, True)
            return handler
        return add

    def _add(self, spec: MethodSpec | NotificationSpec, handler: Handler, inline: bool) -> None:
        if spec.name in self.routes:
            raise ValueError(f"{spec.name} registered twice")
        if inspect.iscoroutinefunction(handler):
            if inline:
                raise ValueError(f"{spec.name}: an async handler cannot run inline")
            mode: RunMode = "async"
        else:
            mode = "inline" if inline else "thread"
        if mode == "inline" and isinstance(spec, MethodSpec) and spec.lane is not None:
            raise ValueError(f"{spec.name}: a method in a lane waits its turn, so it cannot run inline")
        self.routes[spec.name] = Route(spec, handler, mode, msgspec.json.Decoder(spec.params).decode)
