"""One JSON-RPC session over a pair of byte streams: read, dispatch, answer, wind down.

One dispatch path: a message is decoded once into an envelope whose params stay raw
bytes, looked up once, its params decoded once straight into the method's Struct, and then
run inline, in a worker thread or in its own task (the route says which; see router.py).
Errors are mapped and metrics recorded in one place each (`_finish`).

Concurrency rule (also in the README): requests are read and started in arrival order and
run concurrently, at most `max_concurrency` at a time; the rest wait in arrival order. A
method with a `lane` also waits until every earlier request in the same lane has finished,
so a shell may pipeline `settings/set` then `settings/get` and get what it set; lanes never
wait for each other.

The reader never stops for work: past `max_pending` requests read and not answered, or
`max_queued_bytes` of params waiting for a slot, a request is answered at once with
`resource_exhausted` ("busy"), so `$/cancelRequest`, `exit` and end of input are always
seen. (Only a shell that stops reading our output for long stops our reading, by the
outbox's hard limit: we cannot answer anyone then.)

Cancellation means "not applied": a request whose write has committed answers its result
even if a cancel arrives (sidecar/commit.py).

Message rules, where JSON-RPC 2.0 leaves a choice:
- an id is a string or an integer of any size; a float (even 2.0), boolean, object or array
  id makes the message an invalid request, answered with `id: null`;
- `id: null` is a request (JSON-RPC discourages it, but allows it): it is answered, with
  `id: null`, cannot be cancelled or stream, and runs for at most `null_id_timeout`;
- params must be an object; an array, even `[]`, is -32602 (for a notification, `[]` is
  taken as no params);
- a notification method (`initialized`, `exit`, `$/cancelRequest`) sent with an id is not
  run and answers -32601; a request method sent without an id runs and is not answered,
  unless it is long-running (it streams or may wait long): nobody could cancel it, so it is
  not run (and logged); with `id: null` it answers -32600;
- duplicate ids are each answered; `$/cancelRequest` cancels every request with that id.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import anyio
import anyio.abc
import msgspec

from protocol import PROTOCOL_VERSION, SUPPORTED_PROTOCOL_VERSIONS
from protocol.errors import (
    APPLICATION_CODES,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    ErrorObject,
)
from protocol.jsonrpc import Envelope, ErrorResponse, Notification, RequestId, SuccessResponse
from protocol.lifecycle import InitializeResult, ServerCapabilities, ServerInfo
from sidecar import __version__
from sidecar.commit import RequestGuard, current_guard
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


class ClientReady(Protocol):
    """Told when the client is ready for daemon-originated notifications (the Notifier)."""

    def attach(self, sink: Callable[[str, msgspec.Struct], None]) -> None: ...


@dataclass(slots=True)
class SessionConfig:
    max_message_bytes: int = 64 << 20
    max_concurrency: int = 64
    #: requests read and not answered; past this, requests answer "busy" at once
    max_pending: int = 4096
    #: bytes of params held by requests waiting for a slot or their lane; past this, "busy"
    max_queued_bytes: int = 64 << 20
    outbox_limit_bytes: int = 8 << 20
    #: after stdin closes, how long running requests may finish before they are cancelled
    eof_grace_seconds: float = 0.5
    #: after cancelling at wind-down, how long a request that committed may take to answer
    commit_grace_seconds: float = 1.0
    #: at exit, how long queued answers may take to reach a slow shell
    exit_drain_seconds: float = 5.0
    #: a request sent with `id: null` cannot be cancelled: it runs at most this long
    null_id_timeout_seconds: float = 60.0
    #: a partial Content-Length header with no progress for this long is a framing error
    header_timeout_seconds: float = 2.0


@dataclass(slots=True)
class _Batch:
    responses: list[bytes] = field(default_factory=list)
    waiting: int = 0
    sealed: bool = False


@dataclass(slots=True)
class _Ticket:
    """A place in a lane: wait for `previous`, then set `done`."""

    previous: anyio.Event | None
    done: anyio.Event


_NO_PARAMS = b"{}"


class Session:
    def __init__(self, router: Router, reader: Reader, write: Callable[[bytes], Awaitable[None]],
                 config: SessionConfig, metrics: MetricsSink,
                 try_write: Callable[[bytes], int] | None = None,
                 notifier: ClientReady | None = None) -> None:
        self.router = router
        self.config = config
        self.metrics = metrics
        self.state = "new"  # new -> initialized -> shutdown
        self.client_info: dict[str, Any] | None = None
        self.exit_code = 0
        self._reader = reader
        self._decoder = FrameDecoder(config.max_message_bytes)
        self.outbox = Outbox(write, config.outbox_limit_bytes, try_write,
                             on_broken=lambda: self.stop("stdout closed"))
        self._notifier = notifier
        self._client_ready = False
        self._encode = msgspec.json.Encoder().encode
        self._decode_envelope = msgspec.json.Decoder(_Envelope).decode
        self._decode_batch = msgspec.json.Decoder(list[msgspec.Raw]).decode
        self._decode_any = msgspec.json.Decoder().decode
        self._limiter = anyio.CapacityLimiter(config.max_concurrency)
        self._lane_tails: dict[str, anyio.Event] = {}
        #: every request read and not finished, whatever its id (wind-down cancels them all)
        self._unfinished: set[RequestContext] = set()
        #: the same, by id, for $/cancelRequest
        self._inflight: dict[tuple[bool, RequestId], list[RequestContext]] = {}
        self._drained: anyio.Event | None = None  # set when the last unfinished request ends
        self.running = 0  # started, not finished
        self.pending = 0  # read, not finished (queued + running)
        self.queued_bytes = 0  # params of requests not yet started
        self.refused_busy = 0
        self._requests_tg: anyio.abc.TaskGroup | None = None
        self._read_scope = anyio.CancelScope()
        self.stop_reason: str | None = None
        lifecycle.register(self.router, self)

    def cancel(self, request_id: RequestId) -> None:
        """Cancel every running or queued request with this id (unknown ids: nothing)."""
        for ctx in list(self._inflight.get(_key(request_id), ())):
            ctx.cancel()

    def client_ready(self) -> None:
        """The client said `initialized` (or sent a request after `initialize`): flush the
        daemon's held notifications and send later ones as they come."""
        if not self._client_ready:
            self._client_ready = True
            if self._notifier is not None:
                self._notifier.attach(self.send_notification)

    def offered(self) -> InitializeResult:
        """What `initialize` answers: the methods and notifications this session offers."""
        from protocol.catalog import NOTIFICATIONS

        routes = self.router.routes
        lanes = {n: r.lane for n, r in routes.items() if r.lane is not None}
        return InitializeResult(
            protocolVersion=PROTOCOL_VERSION,
            serverInfo=ServerInfo("sidecar", __version__),
            methods=sorted(n for n, r in routes.items() if not r.is_notification),
            notifications=sorted(n.name for n in NOTIFICATIONS if n.direction == "server" or n.name in routes),
            capabilities=ServerCapabilities(
                framing=self._decoder.framing or "ndjson",
                maxMessageBytes=self.config.max_message_bytes,
                maxConcurrency=self.config.max_concurrency,
                orderedMethods=sorted(lanes),
                lanes=dict(sorted(lanes.items())),
                maxPendingRequests=self.config.max_pending,
                protocolVersions=list(SUPPORTED_PROTOCOL_VERSIONS),
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
                await self._flush_output()
                outer.cancel_scope.cancel()
        finally:
            self._reader.restore()  # a shared tty must not stay non-blocking, even after a crash
        return self.exit_code

    async def _flush_output(self) -> None:
        """Write what is still queued, within `exit_drain_seconds`. A shell reading too
        slowly for that loses the queued notifications (their requests are cancelled
        anyway) but still gets the answers, `shutdown`'s included, and the write in flight
        is always finished: never half a frame. Only a shell that stopped reading for good
        is given up on, after `exit_drain_seconds` more."""
        self.outbox.close()
        with anyio.move_on_after(self.config.exit_drain_seconds):
            await self.outbox.drain()
            return
        dropped = self.outbox.drop_notifications()
        log.info("the shell reads slowly: %d queued notification bytes dropped at exit", dropped)
        with anyio.move_on_after(self.config.exit_drain_seconds):
            await self.outbox.drain()
            return
        log.warning("the shell did not read our last %d bytes; leaving them", self.outbox.pending_bytes)
        self.outbox.abandon()
        await self.outbox.drain()

    async def _read_loop(self) -> None:
        while True:
            chunk = await self._read_or_expire()
            if chunk is None:
                continue
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
            if self.outbox.over_hard_limit:
                await self.outbox.wait_below_limit()
            if self.outbox.broken:
                self.stop_reason = self.stop_reason or "stdout closed"
                return

    async def _read_or_expire(self) -> bytes | None:
        """The next chunk; None when a partial header sat too long (answered as an error)."""
        if not self._decoder.awaiting_header:
            return await self._reader.read()
        with anyio.move_on_after(self.config.header_timeout_seconds):
            return await self._reader.read()
        for item in self._decoder.expire_partial():
            self._frame_error(item)
        return None

    async def _wind_down(self) -> None:
        if self.stop_reason == "stdin closed" and self._unfinished:
            await self._wait_drained(self.config.eof_grace_seconds)
        for ctx in list(self._unfinished):
            ctx.cancel()  # a request whose write committed still answers its result
        if self._unfinished:
            await self._wait_drained(self.config.commit_grace_seconds)
        for ctx in list(self._unfinished):
            ctx.force_cancel()

    async def _wait_drained(self, seconds: float) -> None:
        self._drained = anyio.Event()
        with anyio.move_on_after(seconds):
            await self._drained.wait()

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
        else:
            answer = self._handle_envelope(envelope, len(payload), None)
            if answer is not None:
                self._send(answer)

    def _handle_irregular(self, payload: bytes) -> None:
        """Not a well-formed single request: a batch, an invalid request, or not JSON."""
        try:
            elements = self._decode_batch(payload)
        except (ValueError, RecursionError):
            elements = None
        if elements is not None:
            self._handle_batch(elements)
            return
        try:
            message = self._decode_any(payload)
        except RecursionError:  # msgspec's nesting limit: valid JSON, but no request is this deep
            self._send(self._error_bytes(None, errors.protocol_error(PARSE_ERROR, reason="nested too deeply")))
            return
        except ValueError:  # msgspec.DecodeError (UTF-8 was checked before)
            self._send(self._error_bytes(None, errors.protocol_error(PARSE_ERROR, reason="not valid JSON")))
            return
        self._send(self._invalid_request(message))

    def _handle_batch(self, elements: list[msgspec.Raw]) -> None:
        if not elements:
            self._send(self._error_bytes(None, errors.protocol_error(
                INVALID_REQUEST, "Invalid request: empty batch", reason="a batch must not be empty")))
            return
        batch = _Batch()
        for element in elements:
            if self._read_scope.cancel_called:
                break  # nothing after `exit` runs
            raw = bytes(element)
            try:
                envelope = self._decode_envelope(raw)
            except (ValueError, RecursionError):
                envelope = None
            if envelope is None:
                try:
                    answer: bytes | None = self._invalid_request(self._decode_any(raw))
                except (ValueError, RecursionError):
                    answer = self._error_bytes(None, errors.protocol_error(INVALID_REQUEST, reason="not a request"))
            else:
                answer = self._handle_envelope(envelope, len(raw), batch)
            if answer is not None:
                batch.responses.append(answer)
        batch.sealed = True
        self._flush_batch(batch)

    def _invalid_request(self, message: Any) -> bytes:
        """The answer to JSON that is not a valid request: the path and reason, and its id
        when it has a usable one."""
        try:
            msgspec.convert(message, Envelope)
            reason, path = "not a valid request", "$"  # only numbers out of range get here
        except msgspec.ValidationError as exc:
            error = errors.invalid_params(exc, root="$")
            assert error.data is not None
            reason, path = error.data.reason or "", error.data.path or "$"
        return self._error_bytes(_salvage_id(message), errors.protocol_error(
            INVALID_REQUEST, f"Invalid request: {reason} at {path}", path=path, reason=reason))

    def _handle_envelope(self, envelope: _Envelope, size: int, batch: _Batch | None) -> bytes | None:
        """Answer at once (bytes), or start a task that answers later (None)."""
        is_request = envelope.id is not msgspec.UNSET
        request_id: RequestId | None = envelope.id if is_request else None  # type: ignore[assignment]
        method = envelope.method
        gate = lifecycle.gate(self.state, method)
        if gate is not None:
            return self._error_bytes(request_id, gate) if is_request else None
        if self.state == "initialized" and not self._client_ready:
            self.client_ready()
        route = self.router.routes.get(method)
        if route is None:
            if not is_request:
                return None
            self.metrics.observe("(unknown)", 0.0, "error")
            return self._error_bytes(request_id, errors.protocol_error(
                METHOD_NOT_FOUND, f"Method not found: {method}"[:200], method=method[:200]))
        if is_request and route.is_notification:
            # not run: a client that expects an answer from `exit` or `initialized` has a bug
            # that must show, and running `exit` and then answering would be a lie
            return self._error_bytes(request_id, errors.protocol_error(
                METHOD_NOT_FOUND, f"{method} is a notification: send it without an id",
                method=method, reason="notification sent as a request"))
        params, error = self._decode_params(route, envelope.params)
        if error is None and request_id is None and route.long_running:
            if not is_request:
                log.warning("%s sent as a notification: not run (nobody could cancel it)", method)
                return None
            error = errors.protocol_error(INVALID_REQUEST, f"{method} may run for long: send it with an id",
                                          reason="a long-running method needs an id to be cancellable")
        if error is not None:
            if not is_request:
                return None
            self.metrics.observe(method, 0.0, "error")
            return self._error_bytes(request_id, error)
        ctx = RequestContext(self, request_id, method, is_request=is_request)
        if route.mode == "inline":
            return self._run_inline(ctx, route, params)
        refusal = self._admit(size)
        if refusal is not None:
            self.metrics.observe(method, 0.0, "error")
            return self._error_bytes(request_id, refusal) if is_request else None
        self._start(ctx, route, params, size, batch)
        return None

    def _decode_params(self, route: Route, raw: msgspec.Raw) -> tuple[Any, ErrorObject | None]:
        data = bytes(raw) if len(raw) else _NO_PARAMS
        first = data[:1]
        if first in b" \t\r\n":  # msgspec's Raw keeps no outer whitespace; be safe anyway
            first = data.lstrip()[:1]
        if first == b"[":
            if route.is_notification and data.strip(b" \t\r\n[]") == b"":
                data = _NO_PARAMS  # `exit` with `"params": []` means no params
            else:
                return None, errors.protocol_error(
                    INVALID_PARAMS, "Invalid params: pass params by name, as an object",
                    path="$.params", reason="params must be an object")
        elif first != b"{":
            # JSON-RPC: params, when present, are structured; anything else is no request
            return None, errors.protocol_error(INVALID_REQUEST, "Invalid request: params must be an object "
                                               "at $.params", path="$.params", reason="params must be an object")
        try:
            return route.decode(data), None
        except msgspec.ValidationError as exc:
            return None, errors.invalid_params(exc)
        except (msgspec.DecodeError, RecursionError):
            return None, errors.protocol_error(INVALID_PARAMS, "Invalid params: not valid JSON",
                                               path="$.params", reason="not valid JSON")

    def _admit(self, size: int) -> ErrorObject | None:
        """None, or the "busy" answer when taking this request would pass a bound."""
        limit: int | None = None
        reason = ""
        if self.pending >= self.config.max_pending:
            limit, reason = self.config.max_pending, f"{self.pending} requests are pending"
        elif self.queued_bytes and self.queued_bytes + size > self.config.max_queued_bytes:
            limit, reason = self.config.max_queued_bytes, f"{self.queued_bytes} bytes of queued requests"
        if limit is None:
            return None
        self.refused_busy += 1
        return errors.protocol_error(
            APPLICATION_CODES["resource_exhausted"], f"Busy: {reason}; retry when answers arrive",
            kind="resource_exhausted", limit=limit, reason="busy")

    # ---- running --------------------------------------------------------------

    def _run_inline(self, ctx: RequestContext, route: Route, params: Any) -> bytes | None:
        started = time.perf_counter()
        result: Any = None
        error: ErrorObject | None = None
        try:
            result = route.handler(ctx, params)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a typed error
            error = errors.from_exception(exc, ctx.method)
        return self._finish(ctx, started, result, error)

    def _start(self, ctx: RequestContext, route: Route, params: Any, size: int, batch: _Batch | None) -> None:
        assert self._requests_tg is not None
        ctx.scope = anyio.CancelScope()
        ctx.guard = RequestGuard(ctx.scope.cancel)
        if ctx.request_id is None:
            # nobody can cancel it: bound it instead
            ctx.scope.deadline = anyio.current_time() + self.config.null_id_timeout_seconds
        ticket = None
        lane = route.lane
        if lane is not None:
            ticket = _Ticket(self._lane_tails.get(lane), anyio.Event())
            self._lane_tails[lane] = ticket.done
        self._unfinished.add(ctx)
        if ctx.request_id is not None:
            self._inflight.setdefault(_key(ctx.request_id), []).append(ctx)
        if ctx.is_request and batch is not None:
            batch.waiting += 1
        self.pending += 1
        self.queued_bytes += size
        self._requests_tg.start_soon(self._run, ctx, route, params, size, ticket, lane, batch)

    async def _run(self, ctx: RequestContext, route: Route, params: Any, size: int, ticket: _Ticket | None,
                   lane: str | None, batch: _Batch | None) -> None:
        assert ctx.scope is not None
        current_guard.set(ctx.guard)  # this task's own context: the store reads it
        started = time.perf_counter()
        result: Any = None
        error: ErrorObject | None = None
        queued = True
        try:
            with ctx.scope:
                if ticket is not None and ticket.previous is not None:
                    await ticket.previous.wait()
                async with self._limiter:
                    queued = False
                    self.queued_bytes -= size
                    ctx.started = True
                    self.running += 1
                    try:
                        if route.mode == "async":
                            result = await route.handler(ctx, params)
                        else:
                            result = await anyio.to_thread.run_sync(route.handler, ctx, params)
                    finally:
                        self.running -= 1
        except Exception as exc:  # noqa: BLE001 - every failure becomes a typed error
            error = errors.from_exception(exc, ctx.method)
        finally:
            if queued:
                self.queued_bytes -= size
        del params
        if ctx.scope.cancelled_caught or (ctx.scope.cancel_called and error is None and not ctx.started):
            if ctx.request_id is None and ctx.is_request and not (ctx.guard and ctx.guard.cancel_requested):
                error = errors.protocol_error(APPLICATION_CODES["timeout"], "Timed out: a request sent with "
                                              "id null runs for a bounded time", kind="timeout",
                                              limit=int(self.config.null_id_timeout_seconds))
            else:
                error = errors.cancelled()
        if ctx.request_id is not None:
            contexts = self._inflight.get(_key(ctx.request_id))
            if contexts is not None:
                contexts.remove(ctx)
                if not contexts:
                    del self._inflight[_key(ctx.request_id)]
        answer = self._finish(ctx, started, result, error)
        if answer is not None:
            if batch is not None:
                batch.responses.append(answer)
                batch.waiting -= 1
                self._flush_batch(batch)
            else:
                self._send(answer)
        self.pending -= 1
        self._unfinished.discard(ctx)
        if not self._unfinished and self._drained is not None:
            self._drained.set()
        if ticket is not None:
            if ticket.previous is not None and not ticket.previous.is_set():
                # cancelled while waiting its turn: the next in line must still wait for
                # the one before us, so hand on only once it is done
                with anyio.CancelScope(shield=True):
                    await ticket.previous.wait()
            ticket.done.set()
            if lane is not None and self._lane_tails.get(lane) is ticket.done:
                del self._lane_tails[lane]

    def _finish(self, ctx: RequestContext, started: float, result: Any, error: ErrorObject | None) -> bytes | None:
        """Record the outcome; the answer's bytes when one is owed."""
        outcome = "ok" if error is None else ("cancelled" if error.code == -32800 else "error")
        self.metrics.observe(ctx.method, time.perf_counter() - started, outcome)
        if not ctx.is_request:
            return None
        if error is not None:
            return self._error_bytes(ctx.request_id, error)
        return self._result_bytes(ctx.request_id, result, ctx.method)

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
        elif item.kind == "not_a_header":
            error = errors.protocol_error(
                PARSE_ERROR, "Parse error: expected a Content-Length header (this session uses "
                "Content-Length framing)", reason="not a Content-Length header")
        else:
            error = errors.protocol_error(PARSE_ERROR, "Parse error: bad Content-Length header",
                                          reason="bad Content-Length header")
        self._send(self._error_bytes(None, error))

    def _send(self, payload: bytes) -> None:
        self.outbox.put_nowait(frame(payload, self._decoder.framing))

    async def notify(self, method: str, params: msgspec.Struct) -> None:
        """A streamed notification: waits while the outbox is full (backpressure)."""
        await self.outbox.put(frame(self._encode(Notification(method=method, params=params)), self._decoder.framing),
                              droppable=True)

    def send_notification(self, method: str, params: msgspec.Struct) -> None:
        """A daemon-originated notification (the Notifier's sink): never waits."""
        self.outbox.put_nowait(frame(self._encode(Notification(method=method, params=params)), self._decoder.framing),
                               droppable=True)


class _Envelope(msgspec.Struct):
    """An incoming request or notification, its params left raw: they are decoded once,
    straight into the method's Struct, and a number out of range there cannot cost the
    request its id."""

    jsonrpc: Literal["2.0"]
    method: str
    params: msgspec.Raw = msgspec.Raw()
    id: RequestId | None | msgspec.UnsetType = msgspec.UNSET


def _key(request_id: RequestId) -> tuple[bool, RequestId]:
    return (isinstance(request_id, str), request_id)


def _salvage_id(element: Any) -> RequestId | None:
    """The id of an invalid request, when it has a usable one (JSON-RPC: else null)."""
    if isinstance(element, dict):
        value = element.get("id")
        if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
            return value
    return None
