"""The HTTP fixture server, driven by httpx (sync and async) over real sockets on 127.0.0.1."""

from __future__ import annotations

import json
import time
from pathlib import Path

import anyio
import httpx
import pytest

from tests.support.http_fixture import (
    Chunk,
    HttpFixtureServer,
    Response,
    ndjson_lines,
    rechunk,
    sse_events,
)


def test_json_route_and_the_request_is_recorded(http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("POST", "/v1/echo", Response.json({"ok": True}, status=201))
    with httpx.Client() as client:
        reply = client.post(http_fixture.url_for("/v1/echo?stream=1"), json={"model": "m"},
                            headers={"x-api-key": "k-123"})
    assert reply.status_code == 201 and reply.json() == {"ok": True}
    [request] = http_fixture.requests
    assert (request.method, request.path, request.query) == ("POST", "/v1/echo", "stream=1")
    assert request.header("X-API-Key") == "k-123"
    assert request.json() == {"model": "m"}
    assert request.completed and not request.client_disconnected


def test_unknown_route_answers_404(http_fixture: HttpFixtureServer) -> None:
    reply = httpx.get(http_fixture.url_for("/nowhere"))
    assert reply.status_code == 404 and b"no route for GET /nowhere" in reply.content


def test_chunk_boundaries_reach_the_client(http_fixture: HttpFixtureServer) -> None:
    # small delays keep the client's reads from coalescing two writes
    pieces = [b"alpha ", b"beta ", b"gamma"]
    http_fixture.route("GET", "/cl", Response(200, {}, [Chunk(p, 0.1) for p in pieces]))
    http_fixture.route("GET", "/chunked", Response(200, {}, [Chunk(p, 0.1) for p in pieces], chunked=True))
    with httpx.Client() as client:
        for path, framing in (("/cl", ("content-length", "16")), ("/chunked", ("transfer-encoding", "chunked"))):
            with client.stream("GET", http_fixture.url_for(path)) as reply:
                assert reply.headers[framing[0]] == framing[1]
                received = list(reply.iter_raw())
            assert received == pieces, path


def test_request_body_sent_chunked_is_decoded(http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("PUT", "/upload", Response(204))

    def body() -> object:
        yield b"part one, "
        yield b"part two"

    with httpx.Client() as client:
        reply = client.put(http_fixture.url_for("/upload"), content=body())
    assert reply.status_code == 204
    assert http_fixture.requests[0].header("transfer-encoding") == "chunked"
    assert http_fixture.requests[0].body == b"part one, part two"


def test_delays_before_the_status_line_and_between_chunks(http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("GET", "/slow", Response(200, {}, [b"a", Chunk(b"b", 0.3)], delay_before=0.3))
    with httpx.Client() as client:
        began = time.monotonic()
        with client.stream("GET", http_fixture.url_for("/slow")) as reply:
            headers_at = time.monotonic() - began
            body = reply.read()
        total = time.monotonic() - began
    assert body == b"ab"
    assert headers_at >= 0.28 and total >= 0.58


def test_a_read_timeout_on_delayed_headers(http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("GET", "/late", Response(200, {}, [b"x"], delay_before=2.0))
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(http_fixture.url_for("/late"), timeout=httpx.Timeout(5.0, read=0.2))
    request = http_fixture.wait_for_requests(1)[0]
    assert request.wait_disconnected(5)  # the server noticed the client gave up during the delay


@pytest.mark.parametrize("chunked", [False, True])
def test_cut_mid_body_fails_the_client(http_fixture: HttpFixtureServer, chunked: bool) -> None:
    http_fixture.route("GET", "/cut", Response(200, {}, [b"first ", b"second ", b"third"], chunked=chunked, cut_after=1))
    received = []
    with httpx.Client() as client, client.stream("GET", http_fixture.url_for("/cut")) as reply:
        with pytest.raises(httpx.RemoteProtocolError):
            for piece in reply.iter_raw():
                received.append(piece)
    assert b"".join(received) == b"first "
    assert http_fixture.requests[0].cut and not http_fixture.requests[0].completed


def test_reset_mid_body_is_a_read_error(http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("GET", "/rst", Response(200, {}, [Chunk(b"x" * 10, 0.05), b"never"], chunked=True,
                                               cut_after=1, reset=True))
    with httpx.Client() as client, client.stream("GET", http_fixture.url_for("/rst")) as reply:
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            reply.read()


def test_disconnect_is_detected_after_the_client_closes_a_stalled_stream(http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("POST", "/stream", Response.sse([("ping", {}), ("delta", {"text": "hi"})], stall=True))
    with httpx.Client() as client, client.stream("POST", http_fixture.url_for("/stream"), json={}) as reply:
        lines = reply.iter_lines()
        assert next(lines) == "event: ping"
        request = http_fixture.wait_for_requests(1)[0]
        time.sleep(0.2)
        assert not request.wait_done(0.05)  # still stalled, the client still there
    closed_at = time.monotonic()  # the stream's context closed the connection
    assert request.wait_disconnected(5)
    assert request.client_disconnected and not request.completed
    assert request.disconnected_at is not None and request.disconnected_at - closed_at < 1.0
    assert request.chunks_sent == 2


def test_async_client_cancel_closes_the_stream(http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("GET", "/forever", Response(200, {"content-type": "application/x-ndjson"},
                                                   ndjson_lines([{"n": 1}]), chunked=True, stall=True))
    seen: list[object] = []

    async def main() -> None:
        async with httpx.AsyncClient() as client:
            with anyio.move_on_after(0.5) as scope:
                async with client.stream("GET", http_fixture.url_for("/forever")) as reply:
                    async for line in reply.aiter_lines():
                        seen.append(json.loads(line))
            assert scope.cancelled_caught

    anyio.run(main)
    assert seen == [{"n": 1}]
    assert http_fixture.requests[0].wait_disconnected(5)


def test_async_client_reads_sse_split_anywhere(http_fixture: HttpFixtureServer) -> None:
    events = [("message_start", {"id": "m1"}), ("content_block_delta", {"text": "héllo"}), ("message_stop", {})]
    http_fixture.route("POST", "/sse", Response(200, {"content-type": "text/event-stream"},
                                                rechunk(sse_events(events, crlf=True, comments=True), 3),
                                                chunked=True))

    async def main() -> str:
        async with httpx.AsyncClient() as client:
            reply = await client.post(http_fixture.url_for("/sse"), json={})
            return reply.text

    text = anyio.run(main)
    assert text.count(": keep-alive\r\n\r\n") == 3
    assert 'event: content_block_delta\r\ndata: {"text":"h\\u00e9llo"}\r\n\r\n' in text
    assert http_fixture.requests[0].wait_done() and http_fixture.requests[0].completed
    assert http_fixture.requests[0].chunks_sent == -(-len(text.encode()) // 3)


def test_sse_events_shapes() -> None:
    chunks = sse_events([("a", {"x": 1}), ("b", "line1\nline2", "7"), "[DONE]"])
    assert [c.data for c in chunks] == [
        b'event: a\ndata: {"x":1}\n\n',
        b"event: b\nid: 7\ndata: line1\ndata: line2\n\n",
        b"data: [DONE]\n\n",
    ]
    assert [c.data for c in ndjson_lines([{"a": 1}, [2]])] == [b'{"a":1}\n', b"[2]\n"]


def test_response_queue_429_then_200(http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("POST", "/v1/messages",
                       Response(429, {"retry-after": "1"}, [b'{"error":"rate_limited"}']),
                       Response.json({"ok": 1}),
                       Response.json({"ok": 2}))
    with httpx.Client() as client:
        statuses = []
        for _ in range(4):
            reply = client.post(http_fixture.url_for("/v1/messages"), json={})
            statuses.append((reply.status_code, reply.headers.get("retry-after"), reply.content))
    assert statuses == [(429, "1", b'{"error":"rate_limited"}'), (200, None, b'{"ok": 1}'),
                        (200, None, b'{"ok": 2}'), (200, None, b'{"ok": 2}')]  # the last repeats
    assert http_fixture.calls("POST", "/v1/messages") == 4
    assert http_fixture.connections_accepted == 1  # keep-alive: one connection served them all


def test_from_file_replays_recorded_bytes_verbatim(http_fixture: HttpFixtureServer, tmp_path: Path) -> None:
    body = b"5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n"
    recording = tmp_path / "reply.http"
    recording.write_bytes(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
                          b"X-Recorded: yes\r\n\r\n" + body)
    plain = tmp_path / "body.ndjson"
    plain.write_bytes(b'{"a":1}\n{"b":2}\n')
    http_fixture.route("GET", "/recorded", Response.from_file(recording, chunk_size=4))
    http_fixture.route("GET", "/plain", Response.from_file(plain, headers={"content-type": "application/x-ndjson"}))
    with httpx.Client() as client:
        reply = client.get(http_fixture.url_for("/recorded"))
        assert reply.text == "hello, world" and reply.headers["x-recorded"] == "yes"
        assert http_fixture.requests[0].wait_done() and http_fixture.requests[0].completed
        assert http_fixture.requests[0].chunks_sent == -(-len(body) // 4)
        reply = client.get(http_fixture.url_for("/plain"))
        assert [json.loads(line) for line in reply.text.splitlines()] == [{"a": 1}, {"b": 2}]
        assert reply.headers["content-length"] == "16"


def test_stop_ends_stalled_responses(tmp_path: Path) -> None:
    server = HttpFixtureServer().start()
    server.route("GET", "/stall", Response(200, {}, [b"x"], chunked=True, stall=True))
    with httpx.Client() as client, client.stream("GET", server.url_for("/stall")) as reply:
        began = time.monotonic()
        server.stop()
        with pytest.raises(httpx.RemoteProtocolError):
            reply.read()
    assert time.monotonic() - began < 3
    assert not server.requests[0].client_disconnected  # the server ended it, not the client
