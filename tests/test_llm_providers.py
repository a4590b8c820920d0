"""Provider adapters over real HTTP: recorded wire streams replayed byte for byte by the fixture
server on 127.0.0.1, read by the real httpx client and our SSE/NDJSON parsers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.llm import MessageStart, StopEvent, TextDelta, ToolCallDelta, ToolCallEnd, ToolCallStart, UsageEvent
from protocol.projects import TextPart, ToolCallPart, ToolResultPart
from sidecar.llm.providers import adapter_for
from sidecar.llm.providers.base import (
    INVALID_ARGUMENTS,
    CallFailed,
    CallStats,
    ChatRequest,
    Message,
    ProviderConfig,
    RetryPolicy,
    TokenBucket,
    parse_arguments,
    parse_retry_after,
    redact,
    stream_chat,
)
from sidecar.llm.sse import SSEParser
from tests.support.http_fixture import Chunk, HttpFixtureServer, Response, ndjson_lines

FIXTURES = Path(__file__).parent / "fixtures" / "llm"
PATHS = {"anthropic": "/v1/messages", "openai": "/v1/chat/completions", "ollama": "/api/chat"}
CONTENT_TYPES = {"anthropic": "text/event-stream", "openai": "text/event-stream", "ollama": "application/x-ndjson"}
FAST = RetryPolicy(max_retries=2, base_delay=0.01, max_delay=0.05, max_wait=5)


# ---- SSE parser -----------------------------------------------------------------------------------

def test_sse_multiline_data_comments_names_ids_and_retry() -> None:
    p = SSEParser()
    events = p.feed(": a comment\nevent: greet\nid: 7\nretry: 1500\ndata: line one\ndata:line two\ndata\n\n")
    assert len(events) == 1
    e = events[0]
    assert (e.event, e.data, e.id, e.retry) == ("greet", "line one\nline two\n", "7", 1500)
    # default name, the id persists, no data -> nothing dispatched
    assert p.feed("event: empty\n\ndata: x\n\n")[0] == type(e)("message", "x", "7", None)


def test_sse_crlf_and_cr_line_endings_even_split_across_chunks() -> None:
    p = SSEParser()
    assert p.feed("data: a\r") == []
    assert [e.data for e in p.feed("\n\r\n")] == ["a"]  # CRLF split between chunks, then a blank CRLF line
    assert [e.data for e in p.feed("data: b\r\rdata: c\r\n\r\n")] == ["b", "c"]


def test_sse_utf8_split_inside_a_character_and_incomplete_event_dropped() -> None:
    p = SSEParser()
    raw = "data: 한국어\n\n".encode()
    events = [e for i in range(len(raw)) for e in p.feed_bytes(raw[i:i + 1])]
    assert [e.data for e in events] == ["한국어"]
    assert p.feed("data: never finished\n") == [] and p.close() == []


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=60), st.booleans())
def test_sse_any_chunking_gives_the_same_events(cuts: list[int], crlf: bool) -> None:
    raw = (FIXTURES / "anthropic_tool.sse").read_bytes()
    if crlf:
        raw = raw.replace(b"\n", b"\r\n")
    whole = SSEParser().feed_bytes(raw)
    p = SSEParser()
    got = []
    pos = 0
    for cut in cuts * (len(raw) // max(1, sum(cuts)) + 1):
        got += p.feed_bytes(raw[pos:pos + cut])
        pos += cut
        if pos >= len(raw):
            break
    assert got == whole and len(whole) == 12


def test_arguments_retry_after_and_redaction() -> None:
    assert parse_arguments("") == {} and parse_arguments('{"a": 1}') == {"a": 1}
    assert parse_arguments("[1]") == {INVALID_ARGUMENTS: "[1]"} and INVALID_ARGUMENTS in parse_arguments("{bad")
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({}) is None
    assert 55 < parse_retry_after({"retry-after": _http_date(60)}) <= 60  # type: ignore[operator]
    assert "sk-live-abcdef123" not in redact("Incorrect API key provided: sk-live-abcdef123.", ("sk-live-abcdef123",))
    assert "sk-abc***xyz9" not in redact("Incorrect API key provided: sk-abc***xyz9")


def _http_date(seconds_ahead: float) -> str:
    import email.utils
    return email.utils.formatdate(time.time() + seconds_ahead, usegmt=True)


# ---- adapters over HTTP ------------------------------------------------------------------------------

def config(kind: str, server: HttpFixtureServer, **kw: Any) -> ProviderConfig:
    base = server.url + ("/v1" if kind == "openai" else "")
    return ProviderConfig(id=f"test-{kind}", kind=kind, base_url=base, model=kw.pop("model", "m"), **kw)


def request(**kw: Any) -> ChatRequest:
    return ChatRequest(model=kw.pop("model", "m"), messages=[Message("user", [TextPart("Hi")])], **kw)


def recorded(kind: str, name: str, chunk_size: int | None = None, **kw: Any) -> Response:
    return Response.from_file(FIXTURES / name, chunk_size=chunk_size, headers={"content-type": CONTENT_TYPES[kind]},
                              **kw)


def collect(kind: str, server: HttpFixtureServer, req: ChatRequest | None = None, *, key: str | None = "sk-test-key",
            policy: RetryPolicy = FAST, stats: CallStats | None = None, **cfg: Any) -> list[Any]:
    async def main() -> list[Any]:
        async with httpx.AsyncClient(timeout=httpx.Timeout(5.0)) as client:
            return [e async for e in stream_chat(client, adapter_for(kind), config(kind, server, **cfg), key,
                                                 req or request(), policy, stats=stats)]
    return anyio.run(main)


def text_of(events: list[Any]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


@pytest.mark.parametrize("kind,name,text,usage", [
    ("anthropic", "anthropic_text.sse", "Hello!", (25, 15)),
    ("openai", "openai_text.sse", "Hello there", (9, 2)),
    ("ollama", "ollama_text.ndjson", "The sky is blue.", (26, 282)),
])
@pytest.mark.parametrize("chunk_size", [None, 7])
def test_text_stream_normalised(http_fixture: HttpFixtureServer, kind: str, name: str, text: str,
                                usage: tuple[int, int], chunk_size: int | None) -> None:
    http_fixture.route("POST", PATHS[kind], recorded(kind, name, chunk_size))
    events = collect(kind, http_fixture)
    assert isinstance(events[0], MessageStart) and events[0].model
    assert text_of(events) == text
    assert [(e.inputTokens, e.outputTokens) for e in events if isinstance(e, UsageEvent)] == [usage]
    assert isinstance(events[-1], StopEvent) and events[-1].reason == "end_turn"
    sent = http_fixture.requests[0]
    body = sent.json()
    assert body["model"] == "m" and body["stream"] is True
    if kind == "anthropic":
        assert sent.header("x-api-key") == "sk-test-key" and sent.header("anthropic-version") == "2023-06-01"
        assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    elif kind == "openai":
        assert sent.header("authorization") == "Bearer sk-test-key"
        assert body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("kind,name", [("anthropic", "anthropic_tool.sse"), ("openai", "openai_tool.sse"),
                                       ("ollama", "ollama_tool.ndjson")])
def test_tool_call_arguments_assembled_from_fragments(http_fixture: HttpFixtureServer, kind: str, name: str) -> None:
    http_fixture.route("POST", PATHS[kind], recorded(kind, name, chunk_size=5))
    events = collect(kind, http_fixture)
    start = [e for e in events if isinstance(e, ToolCallStart)]
    ends = [e for e in events if isinstance(e, ToolCallEnd)]
    assert [s.name for s in start] == ["builtin__current_time"]
    assert [(e.name, e.arguments) for e in ends] == [("builtin__current_time", {"timezone": "UTC"})]
    assert ends[0].id == start[0].id and ends[0].id
    fragments = "".join(e.argumentsDelta for e in events if isinstance(e, ToolCallDelta))
    assert fragments.replace(" ", "") == '{"timezone":"UTC"}'
    assert isinstance(events[-1], StopEvent) and events[-1].reason == "tool_use"


def test_history_with_tool_round_in_each_wire_format(http_fixture: HttpFixtureServer) -> None:
    from sidecar.toolsource import ToolInfo
    req = ChatRequest(model="m", system="Be brief.", messages=[
        Message("user", [TextPart("time?")]),
        Message("assistant", [TextPart("Checking."), ToolCallPart("c1", "builtin__current_time", {"timezone": "UTC"})]),
        Message("tool", [ToolResultPart("c1", "no such zone", isError=True)]),
    ], tools=[ToolInfo("builtin__current_time", "Now", {"type": "object"})], temperature=0.2)
    for kind, name in (("anthropic", "anthropic_text.sse"), ("openai", "openai_text.sse"),
                       ("ollama", "ollama_text.ndjson")):
        http_fixture.route("POST", PATHS[kind], recorded(kind, name))
        collect(kind, http_fixture, req)
    a, o, l = (r.json() for r in http_fixture.requests)
    assert a["system"] == "Be brief." and a["tools"][0]["input_schema"] == {"type": "object"}
    assert a["messages"][1]["content"][1] == {"type": "tool_use", "id": "c1", "name": "builtin__current_time",
                                              "input": {"timezone": "UTC"}}
    assert a["messages"][2] == {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1",
                                                             "content": "no such zone", "is_error": True}]}
    assert o["messages"][0] == {"role": "system", "content": "Be brief."}
    assert o["messages"][2]["tool_calls"][0]["function"] == {"name": "builtin__current_time",
                                                             "arguments": '{"timezone": "UTC"}'}
    assert o["messages"][3] == {"role": "tool", "tool_call_id": "c1", "content": "Error: no such zone"}
    assert o["tools"][0]["function"]["parameters"] == {"type": "object"} and o["temperature"] == 0.2
    assert l["messages"][2]["tool_calls"][0]["function"]["arguments"] == {"timezone": "UTC"}
    assert l["messages"][3]["tool_name"] == "builtin__current_time" and l["options"]["temperature"] == 0.2


def test_429_with_retry_after_is_retried_then_streams(http_fixture: HttpFixtureServer) -> None:
    error = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    http_fixture.route("POST", "/v1/messages", Response.json(error, 429, headers={"retry-after": "0.3"}),
                       recorded("anthropic", "anthropic_text.sse"))
    stats = CallStats()
    started = time.monotonic()
    events = collect("anthropic", http_fixture, stats=stats)
    assert text_of(events) == "Hello!" and stats.attempts == 2 and stats.retry_waits == [0.3]
    assert time.monotonic() - started >= 0.3


def test_529_and_503_retried_with_backoff_retry_after_ms_honoured(http_fixture: HttpFixtureServer) -> None:
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    http_fixture.route("POST", "/v1/messages", Response.json(overloaded, 529),
                       Response.json(overloaded, 503, headers={"retry-after-ms": "120"}),
                       recorded("anthropic", "anthropic_text.sse"))
    stats = CallStats()
    assert text_of(collect("anthropic", http_fixture, stats=stats)) == "Hello!"
    assert stats.attempts == 3 and stats.retry_waits[1] == 0.12 and 0.005 <= stats.retry_waits[0] <= 0.01


def test_retries_exhausted_answer_rate_limited_with_details(http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("POST", "/v1/chat/completions",
                       Response.json({"error": {"message": "Rate limit reached", "type": "requests"}}, 429,
                                     headers={"retry-after": "0"}))
    with pytest.raises(CallFailed) as info:
        collect("openai", http_fixture)
    failed = info.value
    assert failed.kind == "rate_limited" and failed.status == 429 and failed.retry_after == 0.0
    assert http_fixture.calls("POST", "/v1/chat/completions") == 3
    err = failed.to_error("test-openai")
    assert err.kind == "rate_limited" and err.details == {"provider": "test-openai", "status": 429,
                                                          "type": "requests", "retryAfter": 0.0}


def test_long_retry_after_is_not_waited_for(http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("POST", "/v1/messages", Response.json({}, 429, headers={"retry-after": "3600"}))
    with pytest.raises(CallFailed) as info:
        collect("anthropic", http_fixture)
    assert info.value.retry_after == 3600 and http_fixture.calls("POST", "/v1/messages") == 1


def test_mid_stream_overloaded_error_after_output_is_not_retried(http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("POST", "/v1/messages", recorded("anthropic", "anthropic_overloaded.sse"),
                       recorded("anthropic", "anthropic_text.sse"))
    seen: list[Any] = []

    async def main() -> None:
        async with httpx.AsyncClient() as client:
            async for e in stream_chat(client, adapter_for("anthropic"), config("anthropic", http_fixture), "k",
                                       request(), FAST):
                seen.append(e)

    with pytest.raises(CallFailed) as info:
        anyio.run(main)
    assert text_of(seen) == "Partial"
    assert info.value.kind == "provider_error" and info.value.error_type == "overloaded_error"
    assert info.value.status == 200 and http_fixture.calls("POST", "/v1/messages") == 1


def test_error_event_before_any_output_is_retried(http_fixture: HttpFixtureServer) -> None:
    early = Response.sse([("error", {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})])
    http_fixture.route("POST", "/v1/messages", early, recorded("anthropic", "anthropic_text.sse"))
    assert text_of(collect("anthropic", http_fixture)) == "Hello!"


def test_auth_failure_never_shows_the_key(http_fixture: HttpFixtureServer) -> None:
    key = "sk-proj-SECRETSECRET1234"
    http_fixture.route("POST", "/v1/chat/completions", Response.json(
        {"error": {"message": f"Incorrect API key provided: {key}.", "type": "invalid_request_error",
                   "code": "invalid_api_key"}}, 401))
    with pytest.raises(CallFailed) as info:
        collect("openai", http_fixture, key=key)
    assert info.value.failure == "auth" and key not in info.value.message and "SECRET" not in str(info.value)
    assert http_fixture.calls("POST", "/v1/chat/completions") == 1


def test_malformed_frame_is_a_provider_error(http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("POST", "/v1/chat/completions", Response(
        200, {"content-type": "text/event-stream"},
        [b'data: {"id":"x","model":"m","choices":[{"index":0,"delta":{"content":"ok"}}]}\n\n',
         b"data: {not json\n\n"], chunked=True))
    with pytest.raises(CallFailed) as info:
        collect("openai", http_fixture)
    assert info.value.failure == "malformed"


def test_connection_cut_mid_body(http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("POST", "/api/chat", Response(200, {"content-type": "application/x-ndjson"},
                                                     (FIXTURES / "ollama_text.ndjson").read_bytes().splitlines(True),
                                                     chunked=True, cut_after=2))
    with pytest.raises(CallFailed) as info:
        collect("ollama", http_fixture)
    assert info.value.failure == "unreachable" and "mid-answer" in info.value.message
    assert http_fixture.calls("POST", "/api/chat") == 1  # output had started: no retry


def test_connection_refused_is_unreachable_after_retries() -> None:
    server = HttpFixtureServer()
    server.stop()  # the port is closed now
    with pytest.raises(CallFailed) as info:
        collect("ollama", server)
    assert info.value.failure == "unreachable"


def test_cancel_closes_the_http_stream_at_once(http_fixture: HttpFixtureServer) -> None:
    endless = Response(200, {"content-type": "application/x-ndjson"},
                       ndjson_lines([{"model": "m", "message": {"content": "tick "}, "done": False}] * 3),
                       chunked=True, stall=True)
    http_fixture.route("POST", "/api/chat", endless)
    texts: list[str] = []

    async def main() -> float:
        async with httpx.AsyncClient() as client:
            with anyio.move_on_after(10) as scope:
                async for e in stream_chat(client, adapter_for("ollama"), config("ollama", http_fixture), None,
                                           request(), FAST):
                    if isinstance(e, TextDelta):
                        texts.append(e.text)
                        if len(texts) == 3:
                            scope.cancel()
            assert scope.cancelled_caught
            return time.monotonic()

    cancelled_at = anyio.run(main)
    req = http_fixture.requests[0]
    assert req.wait_disconnected(5), "the server never saw the client go"
    assert req.disconnected_at is not None and req.disconnected_at - cancelled_at < 1.0
    assert texts == ["tick "] * 3


def test_slow_stream_chunks_arrive_as_sent(http_fixture: HttpFixtureServer) -> None:
    lines = ndjson_lines([{"model": "m", "message": {"content": str(i)}, "done": False} for i in range(3)])
    lines.append(Chunk(b'{"model":"m","message":{"content":""},"done":true,"done_reason":"stop"}\n', 0.2))
    http_fixture.route("POST", "/api/chat", Response(200, {"content-type": "application/x-ndjson"}, lines,
                                                     chunked=True))
    assert text_of(collect("ollama", http_fixture)) == "012"


def test_token_bucket_spaces_requests() -> None:
    async def main() -> float:
        bucket = TokenBucket(120)  # 2 a second, bursts of 120
        bucket._tokens = 1
        t = time.monotonic()
        await bucket.acquire()
        await bucket.acquire()
        return time.monotonic() - t
    assert 0.4 <= anyio.run(main) < 1.0


@pytest.mark.parametrize("kind,name", [("anthropic", "anthropic_text.sse"), ("openai", "openai_text.sse"),
                                       ("ollama", "ollama_text.ndjson")])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_the_next_call_reuses_the_connection(http_fixture: HttpFixtureServer, kind: str, name: str,
                                             chunked: bool) -> None:
    """A call ends by reading its body to the end (after the model's stop), so httpx keeps the
    connection: a body closed unread closes it, and every call would pay a new TCP (and, with a
    real provider, TLS) handshake before its first token."""
    http_fixture.route("POST", PATHS[kind], recorded(kind, name, chunk_size=64, chunked=chunked))

    async def main() -> None:
        async with httpx.AsyncClient(timeout=httpx.Timeout(5.0)) as client:
            for _ in range(3):
                events = [e async for e in stream_chat(client, adapter_for(kind), config(kind, http_fixture), "k",
                                                       request(), FAST)]
                assert isinstance(events[-1], StopEvent)
    anyio.run(main)
    assert len(http_fixture.requests) == 3 and http_fixture.connections_accepted == 1


def test_a_body_that_stalls_after_the_stop_does_not_hold_the_call(http_fixture: HttpFixtureServer) -> None:
    """Reading on after the stop is bounded: a server that never ends the body after it is left
    (the call completes, the connection is closed)."""
    body = (FIXTURES / "anthropic_text.sse").read_bytes()
    http_fixture.route("POST", "/v1/messages", Response(200, {"content-type": "text/event-stream"}, [body],
                                                        chunked=True, stall=True))

    async def main() -> list[Any]:
        with anyio.fail_after(20):  # a hang guard, not a measure
            async with httpx.AsyncClient(timeout=httpx.Timeout(60.0)) as client:
                return [e async for e in stream_chat(client, adapter_for("anthropic"),
                                                     config("anthropic", http_fixture), "k", request(), FAST)]
    events = anyio.run(main)
    assert text_of(events) == "Hello!" and isinstance(events[-1], StopEvent)
    assert http_fixture.requests[0].wait_disconnected(5)
