"""One JSON-RPC session over a pair of byte streams: read, dispatch, answer, wind down.

Concurrency rule (also in the README): requests are read and started in arrival order and
run concurrently, at most `max_concurrency` at a time; the rest wait in arrival order. A
route registered `ordered=True` (writes, and reads of the same state) also waits until every
earlier ordered request has finished, so a shell may pipeline `settings/set` then
`settings/get` and get what it set. Unordered requests never wait for ordered ones. Plain
(non-async) unordered handlers run inline in the read loop and so answer at once.

Message rules, where JSON-RPC 2.0 leaves a choice:
- an id is a string or an integer of any size; a float (even 2.0), boolean, object or array
  id makes the message an invalid request, answered with `id: null`;
- `id: null` is a request (JSON-RPC discourages it, but allows it): it is answered, with
  `id: null`, and cannot be cancelled or stream;
- params must be an object; an array, even `[]`, is -32602;
- a notification method (`initialized`, `exit`, `$/cancelRequest`) sent with an id is not
  run and answers -32601; a request method sent without an id runs and is not answered;
- duplicate ids are each answered; `$/cancelRequest` cancels every request with that id.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
import msgspec

from protocol import PROTOCOL_VERSION
from protocol.errors import (
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    ErrorObject,
)
from protocol.jsonrpc import Envelope, ErrorResponse, Notification, RequestId, SuccessResponse
from protocol.lifecycle import InitializeResult, ServerCapabilities, ServerInfo
from sidecar import __version__
from sidecar.server import errors, lifecycle
from sidecar.server.context import RequestContext
from sidecar.server.framing import FrameDecoder, FrameError, frame
from sidecar.server.outbox import Outbox
from sidecar.server.router import Route, Router

log = logging.getLogger("sidecar.server")



class Reader(Protocol):
    async def read(self) -> bytes: ...
    def restore(self) -> None: ...


class MetricsSink(Protocol):
    def observe(self, method: str, seconds: float, outcome: str) -> None: ...


@dataclass(slots=True)
class SessionConfig:
    max_message_bytes: int = 64 << 20
    max_concurrency: int = 64
    #: requests read but not finished; past this the read loop pauses (backpressure)
    max_pending: int = 4096
    outbox_limit_bytes: int = 8 << 20
    #: after stdin closes, how long running requests may finish before they are cancelled
    eof_grace_seconds: float = 0.5


@dataclass(slots=True)
class _Batch:
    responses: list[bytes] = field(default_factory=list)
    waiting: int = 0
    sealed: bool = False


@dataclass(slots=True)
class _Ticket:
    """A place in the ordered lane: wait for `previous`, then set `done`."""

    previous: anyio.Event | None
    done: anyio.Event


class Session:
    def __init__(self, router: Router, reader: Reader, write: Callable[[bytes], Awaitable[None]],
                 config: SessionConfig, metrics: MetricsSink,
                 try_write: Callable[[bytes], int] | None = None) -> None:
        self.router = router
        self.config = config
        self.metrics = metrics
        self.state = "new"  # new -> initialized -> shutdown
        self.client_info: dict[str, Any] | None = None
        self.exit_code = 0
        self._reader = reader
        self._decoder = FrameDecoder(config.max_message_bytes)
        self.outbox = Outbox(write, config.outbox_limit_bytes, try_write)
        self._encode = msgspec.json.Encoder().encode
        self._decode_envelope = msgspec.json.Decoder(Envelope).decode
        self._decode_any = msgspec.json.Decoder().decode
        self._limiter = anyio.CapacityLimiter(config.max_concurrency)
        self._ordered_tail: anyio.Event | None = None
        #: every request read and not finished, whatever its id (wind-down cancels them all)
        self._unfinished: set[RequestContext] = set()
        #: the same, by id, for $/cancelRequest
        self._inflight: dict[tuple[bool, RequestId], list[RequestContext]] = {}
        self._drained: anyio.Event | None = None  # set when the last unfinished request ends
        self.running = 0  # started, not finished
        self.pending = 0  # read, not finished (queued + running)
        self._below_pending = anyio.Event()
        self._requests_tg: anyio.abc.TaskGroup | None = None
        self._read_scope = anyio.CancelScope()
        self.stop_reason: str | None = None
        lifecycle.register(self.router, self)

    def cancel(self, request_id: RequestId) -> None:
        """Cancel every running or queued request with this id (unknown ids: nothing)."""
        _cancel_all(self._inflight.get(_key(request_id), ()))

    def offered(self) -> InitializeResult:
        """What `initialize` answers: the methods and notifications this session offers."""
        from protocol.catalog import NOTIFICATIONS

        routes = self.router.routes
        return InitializeResult(
            protocolVersion=PROTOCOL_VERSION,
            serverInfo=ServerInfo("sidecar", __version__),
            methods=sorted(n for n, r in routes.items() if not r.is_notification),
            notifications=sorted(n.name for n in NOTIFICATIONS if n.direction == "server" or n.name in routes),
            capabilities=ServerCapabilities(
                framing=self._decoder.framing or "ndjson",
                maxMessageBytes=self.config.max_message_bytes,
                maxConcurrency=self.config.max_concurrency,
                orderedMethods=sorted(n for n, r in routes.items() if r.ordered),
            ),
        )

    # ---- the loop -------------------------------------------------------------

    def stop(self, reason: str) -> None:
        """Stop reading; running requests are cancelled, queued answers are flushed."""
        if self.stop_reason is None:
            self.stop_reason = reason
            log.info("stopping: %s", reason)
        self._read_scope.cancel()

    async def serve(self) -> int:
        try:
            async with anyio.create_task_group() as outer:
                outer.start_soon(self.outbox.run)
                async with anyio.create_task_group() as requests:
                    self._requests_tg = requests
                    with self._read_scope:
                        await self._read_loop()
                    await self._wind_down()
                self.outbox.close()
                with anyio.move_on_after(1.0):
                    await self.outbox.drain()
                outer.cancel_scope.cancel()
        finally:
            self._reader.restore()  # a shared tty must not stay non-blocking, even after a crash
        return self.exit_code

    async def _read_loop(self) -> None:
        while True:
            chunk = await self._reader.read()
            if not chunk:
                self.stop_reason = self.stop_reason or "stdin closed"
                log.info("stdin closed")
                return
            for item in self._decoder.feed(chunk):
                if self._read_scope.cancel_called:
                    return  # `exit` (or a signal) came: what followed it in the chunk must not run
                if isinstance(item, FrameError):
                    self._frame_error(item)
                else:
                    self.handle_payload(item)
            if self.pending >= self.config.max_pending:
                self._below_pending = anyio.Event()
                await self._below_pending.wait()
            if self.outbox.over_hard_limit:
                await self.outbox.wait_below_limit()
            if self.outbox.broken:
                self.stop_reason = "stdout closed"
                return

    async def _wind_down(self) -> None:
        if self.stop_reason == "stdin closed" and self._unfinished:
            self._drained = anyio.Event()
            with anyio.move_on_after(self.config.eof_grace_seconds):
                await self._drained.wait()
        _cancel_all(list(self._unfinished))

    # ---- one message ----------------------------------------------------------

    def handle_payload(self, payload: bytes) -> None:
        if not payload.isascii():
            # msgspec raises UnicodeDecodeError (not DecodeError) for bad UTF-8 in a string, and
            # skips unknown keys without checking it at all: a request whose "id" key is mangled
            # would pass as a notification. JSON text must be UTF-8 throughout.
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError:
                self._send(self._error_bytes(None, errors.protocol_error(PARSE_ERROR, reason="not valid UTF-8")))
                return
        try:
            envelope = self._decode_envelope(payload)
        except (ValueError, RecursionError):  # msgspec's errors are ValueErrors; see below
            envelope = None
        if envelope is None:  # handled outside the except: errors logged later would chain to it
            self._handle_irregular(payload)
            return
        answer = self._handle_envelope(envelope, None)
        if answer is not None:
            self._send(answer)

    def _handle_irregular(self, payload: bytes) -> None:
        try:
            message = self._decode_any(payload)
        except ValueError:  # msgspec.DecodeError (UTF-8 was checked before)
            self._send(self._error_bytes(None, errors.protocol_error(PARSE_ERROR, reason="not valid JSON")))
            return
        except RecursionError:  # msgspec's nesting limit: valid JSON, but no request is this deep
            self._send(self._error_bytes(None, errors.protocol_error(PARSE_ERROR, reason="nested too deeply")))
            return
        if isinstance(message, list):
            if not message:
                self._send(self._error_bytes(None, errors.protocol_error(
                    INVALID_REQUEST, "Invalid request: empty batch", reason="a batch must not be empty")))
                return
            batch = _Batch()
            for element in message:
                answer = self._handle_element(element, batch)
                if answer is not None:
                    batch.responses.append(answer)
            batch.sealed = True
            self._flush_batch(batch)
            return
        answer = self._handle_element(message, None)
        if answer is not None:
            self._send(answer)

    def _handle_element(self, element: Any, batch: _Batch | None) -> bytes | None:
        try:
            envelope = msgspec.convert(element, Envelope)
        except msgspec.ValidationError as exc:
            error = errors.invalid_params(exc, root="$")
            reason = error.data.reason if error.data else None
            return self._error_bytes(_salvage_id(element), errors.protocol_error(
                INVALID_REQUEST, f"Invalid request: {reason} at {error.data.path if error.data else '$'}",
                path=error.data.path if error.data else "$", reason=reason))
        return self._handle_envelope(envelope, batch)

    def _handle_envelope(self, envelope: Envelope, batch: _Batch | None) -> bytes | None:
        """Answer at once (bytes), or start a task that answers later (None)."""
        is_request = envelope.id is not msgspec.UNSET
        request_id: RequestId | None = envelope.id if is_request else None  # type: ignore[assignment]
        method = envelope.method
        gate = lifecycle.gate(self.state, method)
        if gate is not None:
            return self._error_bytes(request_id, gate) if is_request else None
        route = self.router.routes.get(method)
        if is_request and route is not None and route.is_notification:
            # not run: a client that expects an answer from `exit` or `initialized` has a bug
            # that must show, and running `exit` and then answering would be a lie
            return self._error_bytes(request_id, errors.protocol_error(
                METHOD_NOT_FOUND, f"{method} is a notification: send it without an id",
                method=method, reason="notification sent as a request"))
        ctx = RequestContext(self, request_id, method, is_request=is_request)
        started = time.perf_counter()
        result, error = self.router.dispatch(ctx, envelope)
        metric_name = method if route is not None else "(unknown)"
        if ctx.deferred is not None and route is not None:
            self._start(ctx, route, batch)
            return None
        self.metrics.observe(metric_name, time.perf_counter() - started, "ok" if error is None else "error")
        if not is_request:
            return None
        if error is not None:
            return self._error_bytes(request_id, error)
        return self._result_bytes(request_id, result, method)

    # ---- requests that run in their own task ------------------------------------

    def _start(self, ctx: RequestContext, route: Route, batch: _Batch | None) -> None:
        assert self._requests_tg is not None
        ctx.scope = anyio.CancelScope()
        ticket = None
        if route.ordered:
            ticket = _Ticket(self._ordered_tail, anyio.Event())
            self._ordered_tail = ticket.done
        self._unfinished.add(ctx)
        if ctx.request_id is not None:
            self._inflight.setdefault(_key(ctx.request_id), []).append(ctx)
        if ctx.is_request and batch is not None:
            batch.waiting += 1
        self.pending += 1
        self._requests_tg.start_soon(self._run, ctx, ticket, batch)

    async def _run(self, ctx: RequestContext, ticket: _Ticket | None, batch: _Batch | None) -> None:
        assert ctx.scope is not None and ctx.deferred is not None
        started = time.perf_counter()
        result: Any = None
        error: ErrorObject | None = None
        try:
            with ctx.scope:
                if ticket is not None and ticket.previous is not None:
                    await ticket.previous.wait()
                async with self._limiter:
                    ctx.started = True
                    self.running += 1
                    try:
                        result = await ctx.deferred()
                    finally:
                        self.running -= 1
        except Exception as exc:  # noqa: BLE001 - every failure becomes a typed error
            error = errors.from_exception(exc, ctx.method)
        if ctx.scope.cancelled_caught or (ctx.scope.cancel_called and error is None and not ctx.started):
            error = errors.cancelled()
        outcome = "ok" if error is None else ("cancelled" if error.code == -32800 else "error")
        self.metrics.observe(ctx.method, time.perf_counter() - started, outcome)
        if ctx.request_id is not None:
            contexts = self._inflight.get(_key(ctx.request_id))
            if contexts is not None:
                contexts.remove(ctx)
                if not contexts:
                    del self._inflight[_key(ctx.request_id)]
        if ctx.is_request:
            answer = (self._error_bytes(ctx.request_id, error) if error is not None
                      else self._result_bytes(ctx.request_id, result, ctx.method))
            if batch is not None:
                batch.responses.append(answer)
                batch.waiting -= 1
                self._flush_batch(batch)
            else:
                self._send(answer)
        self.pending -= 1
        self._unfinished.discard(ctx)
        if self.pending < self.config.max_pending:
            self._below_pending.set()
        if not self._unfinished and self._drained is not None:
            self._drained.set()
        if ticket is not None:
            if ticket.previous is not None and not ticket.previous.is_set():
                # cancelled while waiting its turn: the next in line must still wait for
                # the one before us, so hand on only once it is done
                with anyio.CancelScope(shield=True):
                    await ticket.previous.wait()
            ticket.done.set()

    # ---- output ---------------------------------------------------------------

    def _flush_batch(self, batch: _Batch) -> None:
        if batch.sealed and batch.waiting == 0 and batch.responses:
            self._send(b"[" + b",".join(batch.responses) + b"]")
            batch.responses = []

    def _result_bytes(self, request_id: RequestId | None, result: Any, method: str) -> bytes:
        try:
            return self._encode(SuccessResponse(id=request_id, result=result))
        except Exception as exc:  # noqa: BLE001 - a handler returned something JSON cannot hold
            return self._error_bytes(request_id, errors.from_exception(exc, method))

    def _error_bytes(self, request_id: RequestId | None, error: ErrorObject) -> bytes:
        try:
            return self._encode(ErrorResponse(id=request_id, error=error))
        except Exception as exc:  # noqa: BLE001 - e.g. a service put something odd in details
            return self._encode(ErrorResponse(id=request_id, error=errors.from_exception(exc, "(error encoding)")))

    def _frame_error(self, item: FrameError) -> None:
        if item.kind == "oversized":
            error = errors.protocol_error(
                INVALID_REQUEST, "Message too large", kind="resource_exhausted",
                limit=self.config.max_message_bytes, size=item.size)
        else:
            error = errors.protocol_error(PARSE_ERROR, "Parse error: bad Content-Length header",
                                          reason="bad Content-Length header")
        self._send(self._error_bytes(None, error))

    def _send(self, payload: bytes) -> None:
        self.outbox.put_nowait(frame(payload, self._decoder.framing))

    async def notify(self, method: str, params: msgspec.Struct) -> None:
        await self.outbox.put(frame(self._encode(Notification(method=method, params=params)), self._decoder.framing))



def _cancel_all(contexts: Iterable[RequestContext]) -> None:
    for ctx in contexts:
        if ctx.scope is not None:
            ctx.scope.cancel()


def _key(request_id: RequestId) -> tuple[bool, RequestId]:
    return (isinstance(request_id, str), request_id)


def _salvage_id(element: Any) -> RequestId | None:
    """The id of an invalid request, when it has a usable one (JSON-RPC: else null)."""
    if isinstance(element, dict):
        value = element.get("id")
        if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
            return value
    return None
