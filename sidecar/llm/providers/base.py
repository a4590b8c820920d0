"""One interface for every LLM provider, and what they share: the request shape, retries before
the first output byte, error classification, a per-provider request rate limit, tool-call
argument assembly and secret redaction.

An `Adapter` (anthropic.py, openai.py, ollama.py, side by side like httpx's transports) knows
one wire format: the URL, headers and JSON body of a chat request, how to turn the streamed
response into normalised `LlmEvent`s, how to read an error body, and how to list models.
`stream_chat` runs a call through an adapter over the shared `httpx.AsyncClient`.

httpx is imported by the adapters' callers only inside functions (the capability's lifespan
makes the client); this module imports it lazily too.
"""

from __future__ import annotations

import email.utils
import logging
import random
import re
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from protocol.llm import (
    ErrorEvent,
    LlmEvent,
    MessageStart,
    StopEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    UsageEvent,
)
from protocol.projects import ContentPart
from sidecar.errors import ProviderError, RateLimited, SidecarError
from sidecar.toolsource import ToolInfo

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("sidecar.llm")

#: statuses worth another try (before any output): rate limit, timeouts, server errors, overload
RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})
#: provider error types (inside a stream or an error body) worth another try
RETRYABLE_TYPES = frozenset({"overloaded_error", "api_error", "rate_limit_error", "server_error",
                             "rate_limit_exceeded", "timeout_error"})
RATE_LIMIT_TYPES = frozenset({"rate_limit_error", "rate_limit_exceeded", "insufficient_quota"})
_json = msgspec.json.Decoder()


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    id: str
    kind: str
    base_url: str
    model: str
    headers: dict[str, str] = field(default_factory=dict)
    max_output_tokens: int = 4096
    context_window: int = 128_000
    requests_per_minute: int = 0


@dataclass(slots=True)
class Message:
    """A turn in the provider-neutral shape (content parts as the projects store keeps them)."""

    role: str  # "user" | "assistant" | "tool"
    parts: list[ContentPart]


@dataclass(slots=True)
class ChatRequest:
    model: str
    messages: list[Message]
    system: str = ""
    tools: list[ToolInfo] = field(default_factory=list)
    max_tokens: int = 4096
    temperature: float | None = None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int = 2
    base_delay: float = 0.5
    max_delay: float = 20.0
    #: a retry-after longer than this is not waited for: the error goes to the caller
    max_wait: float = 30.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        # exponential backoff with jitter: between half and all of base * 2^attempt
        ceiling = min(self.max_delay, self.base_delay * (2 ** attempt))
        return ceiling * (0.5 + random.random() / 2)


class CallFailed(Exception):
    """A provider call failed; `failure` says how, in one word, for providers/test:
    auth, not_found, unreachable, tls, timeout, rate_limited, provider_error, malformed,
    bad_request."""

    def __init__(self, message: str, *, failure: str, status: int | None = None, error_type: str | None = None,
                 retry_after: float | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.failure = failure
        self.status = status
        self.error_type = error_type
        self.retry_after = retry_after
        self.retryable = retryable

    @property
    def kind(self) -> str:
        return "rate_limited" if self.failure == "rate_limited" else "provider_error"

    def to_error(self, provider: str) -> SidecarError:
        details = {"provider": provider, "status": self.status, "type": self.error_type or self.failure,
                   "retryAfter": self.retry_after}
        cls = RateLimited if self.kind == "rate_limited" else ProviderError
        return cls(self.message, **details)

    def to_event(self) -> ErrorEvent:
        return ErrorEvent(kind=self.kind, message=self.message, errorType=self.error_type or self.failure,
                          status=self.status, retryAfter=self.retry_after)


_KEYLIKE = re.compile(r"\b(sk|pk|rk|key|ak)-[A-Za-z0-9_\-*.]{6,}")


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """`text` without any of `secrets` and without anything that looks like an API key (OpenAI
    echoes part of a wrong key in its 401 message)."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    return _KEYLIKE.sub("[redacted]", text)


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from `retry-after-ms` (Anthropic, OpenAI) or `retry-after` (seconds or
    an HTTP date)."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def classify_status(status: int, error_type: str | None, message: str, retry_after: float | None) -> CallFailed:
    text = message or f"HTTP {status}"
    if status == 429 or (error_type in RATE_LIMIT_TYPES):
        return CallFailed(f"rate limited by the provider: {text}", failure="rate_limited", status=status,
                          error_type=error_type or "rate_limit_error", retry_after=retry_after, retryable=True)
    if status in (401, 403):
        return CallFailed(f"the provider refused the credentials (HTTP {status}): {text}", failure="auth",
                          status=status, error_type=error_type)
    if status == 404:
        return CallFailed(f"not found at the provider (HTTP 404): {text}", failure="not_found", status=status,
                          error_type=error_type)
    retryable = status in RETRYABLE_STATUS or (error_type in RETRYABLE_TYPES)
    failure = "provider_error" if status >= 500 or retryable else "bad_request"
    return CallFailed(f"provider error (HTTP {status}): {text}", failure=failure, status=status,
                      error_type=error_type or ("overloaded_error" if status == 529 else None),
                      retry_after=retry_after, retryable=retryable)


def classify_transport(exc: Exception) -> CallFailed:
    import httpx

    text = type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        phase = "connecting" if isinstance(exc, httpx.ConnectTimeout) else "waiting for the provider"
        return CallFailed(f"timed out {phase}", failure="timeout", retryable=True, error_type=text)
    if isinstance(exc, httpx.ConnectError):
        cause = str(exc)
        if "SSL" in cause or "CERTIFICATE" in cause.upper() or "TLS" in cause:
            return CallFailed("TLS handshake with the provider failed (certificate or protocol)", failure="tls",
                              error_type=text)
        return CallFailed("cannot reach the provider (connection refused or no route)", failure="unreachable",
                          retryable=True, error_type=text)
    return CallFailed("the connection to the provider broke", failure="unreachable", retryable=True,
                      error_type=text)


class ToolCalls:
    """Tool calls assembled from streamed fragments: start, argument deltas, end (parsed once)."""

    __slots__ = ("_calls",)

    def __init__(self) -> None:
        self._calls: dict[int, tuple[str, str, list[str]]] = {}

    def __contains__(self, index: int) -> bool:
        return index in self._calls

    def open_indexes(self) -> list[int]:
        return sorted(self._calls)

    def start(self, index: int, call_id: str, name: str) -> ToolCallStart:
        self._calls[index] = (call_id, name, [])
        return ToolCallStart(index=index, id=call_id, name=name)

    def delta(self, index: int, fragment: str) -> ToolCallDelta:
        self._calls[index][2].append(fragment)
        return ToolCallDelta(index=index, argumentsDelta=fragment)

    def end(self, index: int) -> ToolCallEnd:
        call_id, name, fragments = self._calls.pop(index)
        return ToolCallEnd(index=index, id=call_id, name=name, arguments=parse_arguments("".join(fragments)))


INVALID_ARGUMENTS = "__invalid_json__"


def parse_arguments(text: str) -> dict[str, Any]:
    """Arguments as the model wrote them: "" is {}; JSON that is not an object or not JSON at all
    comes back as {INVALID_ARGUMENTS: text}, which the tool loop answers as a tool error."""
    if not text.strip():
        return {}
    try:
        value = _json.decode(text)
    except msgspec.DecodeError:
        return {INVALID_ARGUMENTS: text}
    return value if isinstance(value, dict) else {INVALID_ARGUMENTS: text}


def stop_reason(raw: str | None, had_tool_calls: bool = False) -> str:
    mapping = {"end_turn": "end_turn", "stop": "end_turn", "tool_use": "tool_use", "tool_calls": "tool_use",
               "function_call": "tool_use", "max_tokens": "max_tokens", "length": "max_tokens",
               "stop_sequence": "stop_sequence", "content_filter": "other", "refusal": "other",
               "pause_turn": "other"}
    if had_tool_calls and raw in (None, "stop", "end_turn"):
        return "tool_use"
    return mapping.get(raw or "end_turn", "other")


class Adapter(ABC):
    kind: str
    default_base_url: str

    @abstractmethod
    def chat_url(self, config: ProviderConfig) -> str: ...

    @abstractmethod
    def auth_headers(self, api_key: str | None) -> dict[str, str]: ...

    @abstractmethod
    def chat_body(self, request: ChatRequest) -> dict[str, Any]: ...

    @abstractmethod
    def events(self, response: httpx.Response) -> AsyncIterator[LlmEvent]:
        """The normalised events of a 2xx streamed response, ending with UsageEvent and StopEvent
        (or an ErrorEvent the provider sent). Raises CallFailed(malformed) on a frame it cannot read."""

    @abstractmethod
    def models_url(self, config: ProviderConfig) -> str: ...

    @abstractmethod
    def parse_models(self, data: Any) -> list[str]: ...

    def parse_error(self, body: bytes) -> tuple[str | None, str]:
        """(provider error type, message) from an error response body."""
        try:
            data = _json.decode(body)
        except msgspec.DecodeError:
            return None, body[:300].decode("utf-8", "replace").strip()
        if isinstance(data, dict):
            err = data.get("error", data)
            if isinstance(err, dict):
                return (err.get("type") or err.get("code") or None), str(err.get("message", ""))[:1000]
            if isinstance(err, str):
                return None, err[:1000]
        return None, str(data)[:300]

    def headers(self, config: ProviderConfig, api_key: str | None) -> dict[str, str]:
        return {"content-type": "application/json", "accept": "application/json, text/event-stream",
                **config.headers, **self.auth_headers(api_key)}


#: after a stream's stop, how long the rest of the body (the chunked terminator) is waited for
DRAIN_SECONDS = 0.25


async def drain(chunks: AsyncIterator[Any]) -> None:
    """Read what is left of a response body after the model's stop, so that httpx hands the
    keep-alive connection back to the pool: a body closed unread closes its connection, and
    the next call pays a new TCP (and TLS) handshake before its first token. Bounded, and
    quiet: the answer is complete whatever happens to the rest."""
    import httpx

    with anyio.move_on_after(DRAIN_SECONDS):
        try:
            async for _ in chunks:
                pass
        except (httpx.TransportError, httpx.StreamError):
            pass


def malformed(what: str) -> CallFailed:
    return CallFailed(f"the provider sent a malformed stream ({what})", failure="malformed",
                      error_type="malformed_stream")


def decode_json(data: str | bytes, what: str) -> Any:
    try:
        return _json.decode(data)
    except msgspec.DecodeError:
        raise malformed(f"{what} is not JSON") from None


class TokenBucket:
    """At most `per_minute` requests a minute, in bursts of up to that many; 0: no limit."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._tokens = float(per_minute)
        self._stamp = time.monotonic()
        self._lock = anyio.Lock()

    async def acquire(self) -> float:
        """Wait for a token (cancellable); the seconds waited."""
        if self.per_minute <= 0:
            return 0.0
        waited = 0.0
        async with self._lock:
            while True:
                now = time.monotonic()
                self._tokens = min(self.per_minute, self._tokens + (now - self._stamp) * self.per_minute / 60)
                self._stamp = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return waited
                need = (1 - self._tokens) * 60 / self.per_minute
                waited += need
                await anyio.sleep(need)


@dataclass(slots=True)
class CallStats:
    """What one `stream_chat` call did, filled in as it runs (for usage, audit and the result)."""

    attempts: int = 0
    status: int | None = None
    first_output_at: float | None = None
    model: str = ""
    retry_waits: list[float] = field(default_factory=list)


_OUTPUT = (TextDelta, ToolCallStart, StopEvent)


async def stream_chat(client: httpx.AsyncClient, adapter: Adapter, config: ProviderConfig, api_key: str | None,
                      request: ChatRequest, policy: RetryPolicy, limiter: TokenBucket | None = None,
                      stats: CallStats | None = None, sent: Callable[[], object] | None = None
                      ) -> AsyncIterator[LlmEvent]:
    """The events of one chat call. Retries (backoff with jitter, or the provider's retry-after)
    only while nothing of the model's output has been yielded: events before the first output
    (message start, usage) are held back until then. Raises CallFailed; cancellation closes the
    HTTP stream at once (the response's `async with` closes the connection).

    `sent()` is called once, when the first attempt's request is on the wire (httpcore's `trace`
    extension: the body was written) or has to wait for the network anyway (a new connection
    being opened, the rate limit), or when that attempt ended without getting there: work that
    should not compete with sending the request waits for it, and not longer."""
    import httpx

    stats = stats if stats is not None else CallStats()
    extensions = None
    if sent is not None:
        async def trace(name: str, info: dict[str, Any]) -> None:
            if sent is not None and (name.endswith(".send_request_body.complete")
                                     or name == "connection.connect_tcp.started"):
                sent()
        extensions = {"trace": trace}
    url = adapter.chat_url(config)
    headers = adapter.headers(config, api_key)
    body = msgspec.json.encode(adapter.chat_body(request))
    secrets = (api_key,) if api_key else ()
    attempt = 0
    while True:
        if limiter is not None:
            if sent is not None:  # the bucket may hold the request for a while
                sent()
            await limiter.acquire()
        stats.attempts += 1
        held: list[LlmEvent] = []
        output = False
        try:
            async with client.stream("POST", url, content=body, headers=headers, extensions=extensions) as response:
                stats.status = response.status_code
                if response.status_code >= 400:
                    raw = await response.aread()
                    error_type, message = adapter.parse_error(raw)
                    raise classify_status(response.status_code, error_type, redact(message, secrets),
                                          parse_retry_after(response.headers))
                stopped = False
                async with aclosing(adapter.events(response)) as events:
                    async for event in events:
                        if type(event) is ErrorEvent:
                            raise in_stream_error(event, response.status_code, secrets)
                        if output:
                            if type(event) is StopEvent:
                                stopped = True
                            yield event
                        elif isinstance(event, _OUTPUT):
                            output = True
                            stats.first_output_at = time.perf_counter()
                            stopped = type(event) is StopEvent
                            for early in held:
                                if type(early) is MessageStart:
                                    stats.model = early.model
                                yield early
                            held.clear()
                            yield event
                        else:
                            held.append(event)
                if not stopped:
                    raise CallFailed("the provider's stream ended before the answer was complete",
                                     failure="provider_error", error_type="incomplete_stream",
                                     status=response.status_code, retryable=True)
            return
        except CallFailed as exc:
            failed = exc
        except (httpx.TransportError, httpx.StreamError) as exc:  # connect, read, cut mid-body
            failed = classify_transport(exc)
            if output:
                failed.message = "the connection to the provider broke mid-answer"
        finally:
            if sent is not None:
                sent()
                sent = None
        if output or not failed.retryable or attempt >= policy.max_retries:
            raise failed
        wait = policy.delay(attempt, failed.retry_after)
        if wait > policy.max_wait:
            raise failed
        attempt += 1
        stats.retry_waits.append(wait)
        log.info("provider %s: %s; retry %d in %.2f s", config.id, failed.failure, attempt, wait)
        await anyio.sleep(wait)


def in_stream_error(event: ErrorEvent, status: int, secrets: tuple[str, ...]) -> CallFailed:
    """An error the provider sent inside a 2xx stream (Anthropic `overloaded_error`)."""
    error_type = event.errorType
    message = redact(event.message, secrets)
    if error_type in RATE_LIMIT_TYPES:
        return CallFailed(f"rate limited by the provider: {message}", failure="rate_limited", status=status,
                          error_type=error_type, retryable=True)
    return CallFailed(f"the provider reported an error mid-stream ({error_type or 'error'}): {message}",
                      failure="provider_error", status=status, error_type=error_type,
                      retryable=error_type in RETRYABLE_TYPES)


async def list_models(client: httpx.AsyncClient, adapter: Adapter, config: ProviderConfig,
                      api_key: str | None) -> list[str]:
    import httpx

    headers = adapter.headers(config, api_key)
    headers.pop("content-type", None)
    try:
        response = await client.get(adapter.models_url(config), headers=headers)
    except (httpx.TransportError, httpx.StreamError) as exc:
        raise classify_transport(exc) from None
    if response.status_code >= 400:
        error_type, message = adapter.parse_error(response.content)
        raise classify_status(response.status_code, error_type, redact(message, (api_key or "",)),
                              parse_retry_after(response.headers))
    return adapter.parse_models(decode_json(response.content, "the model list"))
