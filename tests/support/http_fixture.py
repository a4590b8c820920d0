"""A real HTTP/1.1 server on 127.0.0.1 that replays scripted byte streams, for tests.

LLM providers (SSE, NDJSON), plugin `http_fetch`, workflow `http` steps and integrations are
tested against it instead of a mock transport: the client under test opens a real socket,
parses real framing, and sees real chunk boundaries, delays, cut connections and stalls.

    def test_x(http_fixture: HttpFixtureServer) -> None:
        http_fixture.route("POST", "/v1/messages",
                           Response(429, headers={"retry-after": "0"}),
                           Response(200, {"content-type": "text/event-stream"},
                                    sse_events([("message_start", {...}), ...]), chunked=True))
        ... call http_fixture.url + "/v1/messages" ...
        assert http_fixture.requests[1].json()["model"] == ...

Each route holds a queue of responses: the first request gets the first one, and the last one
answers every request after that. Every request is recorded (`server.requests`) with what
happened to its response: completed, or the client disconnected first, and when.

One thread accepts, one thread serves each connection (keep-alive supported); waits watch
the socket, so a client that goes away is noticed even while the response stalls.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import struct
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "Chunk",
    "HttpFixtureServer",
    "RecordedRequest",
    "Response",
    "http_fixture",
    "ndjson_lines",
    "rechunk",
    "sse_events",
]

REASONS = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 401: "Unauthorized",
           403: "Forbidden", 404: "Not Found", 408: "Request Timeout", 409: "Conflict",
           429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
           503: "Service Unavailable", 529: "Overloaded"}
MAX_HEAD = 64 * 1024


@dataclass(frozen=True, slots=True)
class Chunk:
    """Body bytes sent in one write, after waiting `delay` seconds."""

    data: bytes
    delay: float = 0.0


ChunkLike = bytes | str | Chunk


@dataclass(slots=True)
class Response:
    """One scripted response.

    - `body`: chunks (bytes, str or `Chunk` with a delay), each sent in its own write (with
      TCP_NODELAY, so the client sees the boundaries as long as it keeps up).
    - `chunked`: `Transfer-Encoding: chunked`, one HTTP chunk per body chunk; otherwise a
      `Content-Length` of the whole body (unless `headers` set one, or `raw`).
    - `delay_before`: seconds before the status line. `chunk_delay`: before every chunk.
    - `cut_after`: close the connection after sending that many body chunks (0: right after
      the headers); `reset=True` makes it an RST instead of a FIN.
    - `stall`: after the chunks, send nothing more and keep the connection open until the
      client disconnects (or the server stops).
    - `raw`: headers and chunks are sent exactly as given (no framing or length added); the
      connection closes after the body unless the headers frame it.
    """

    status: int = 200
    headers: Mapping[str, str] | Sequence[tuple[str, str]] = ()
    body: Sequence[ChunkLike] | bytes | str = ()
    chunked: bool = False
    delay_before: float = 0.0
    chunk_delay: float = 0.0
    cut_after: int | None = None
    reset: bool = False
    stall: bool = False
    raw: bool = False
    reason: str | None = None

    @classmethod
    def json(cls, value: Any, status: int = 200, **kwargs: Any) -> Response:
        headers = {"content-type": "application/json", **dict(kwargs.pop("headers", {}))}
        return cls(status, headers, [json.dumps(value).encode()], **kwargs)

    @classmethod
    def sse(cls, events: Sequence[Any], status: int = 200, *, crlf: bool = False, **kwargs: Any) -> Response:
        """A `text/event-stream` response, chunked, one event per chunk (see `sse_events`)."""
        headers = {"content-type": "text/event-stream", "cache-control": "no-cache", **dict(kwargs.pop("headers", {}))}
        kwargs.setdefault("chunked", True)
        return cls(status, headers, sse_events(events, crlf=crlf), **kwargs)

    @classmethod
    def from_file(cls, path: str | Path, *, chunk_size: int | None = None, chunk_delay: float = 0.0,
                  status: int = 200, headers: Mapping[str, str] | Sequence[tuple[str, str]] = (),
                  **kwargs: Any) -> Response:
        """Replay a recorded response. A file that starts with `HTTP/` is a raw recording: its
        status line and headers are parsed, and the bytes after the blank line are sent
        verbatim (already chunk-framed if the recording was). Any other file is a body, sent
        with `status` and `headers`. `chunk_size` splits the bytes into writes of that size."""
        data = Path(path).read_bytes()
        if data.startswith(b"HTTP/"):
            head, sep, body = data.partition(b"\r\n\r\n")
            if not sep:
                head, sep, body = data.partition(b"\n\n")
            lines = head.decode("latin-1").splitlines()
            parts = lines[0].split(" ", 2)
            status = int(parts[1])
            reason = parts[2] if len(parts) > 2 else ""
            recorded = [tuple(s.strip() for s in line.split(":", 1)) for line in lines[1:] if ":" in line]
            chunks = _split(body, chunk_size)
            return cls(status, recorded, chunks, raw=True, reason=reason,  # type: ignore[arg-type]
                       chunk_delay=chunk_delay, **kwargs)
        return cls(status, headers, _split(data, chunk_size), chunk_delay=chunk_delay, **kwargs)

    def header_list(self) -> list[tuple[str, str]]:
        items = self.headers.items() if isinstance(self.headers, Mapping) else self.headers
        return [(str(k), str(v)) for k, v in items]

    def chunks(self) -> list[Chunk]:
        body = self.body
        if isinstance(body, (bytes, str)):
            body = [body] if body else []
        out = []
        for item in body:
            if isinstance(item, Chunk):
                out.append(item)
            else:
                out.append(Chunk(item.encode() if isinstance(item, str) else bytes(item)))
        return out


def _split(data: bytes, size: int | None) -> list[bytes]:
    if not data:
        return []
    if size is None:
        return [data]
    return [data[i:i + size] for i in range(0, len(data), size)]


def rechunk(chunks: Iterable[ChunkLike], size: int, delay: float = 0.0) -> list[Chunk]:
    """The same bytes cut into writes of `size` bytes (boundaries mid-line, mid-UTF-8...)."""
    data = b"".join(c.data if isinstance(c, Chunk) else (c.encode() if isinstance(c, str) else c) for c in chunks)
    return [Chunk(piece, delay) for piece in _split(data, size)]


def sse_events(events: Iterable[Any], *, crlf: bool = False, comments: bool = False,
               delay: float = 0.0) -> list[Chunk]:
    """Server-sent events, one chunk each. An event is `(name, data)`, `(name, data, id)`,
    or a bare `data`; name None (or "") leaves out the `event:` line. `data` that is not a str
    is JSON-encoded; a str is sent as it is, one `data:` line per line (so "[DONE]" works).
    `crlf` ends lines with CRLF; `comments` adds a `: keep-alive` comment chunk before each
    event (what proxies and some providers send; clients must ignore them)."""
    eol = "\r\n" if crlf else "\n"
    chunks: list[Chunk] = []
    for event in events:
        if isinstance(event, tuple):
            name, data, *rest = event
            event_id = rest[0] if rest else None
        else:
            name, data, event_id = None, event, None
        text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
        lines = []
        if comments:
            chunks.append(Chunk(f": keep-alive{eol}{eol}".encode(), delay))
        if name:
            lines.append(f"event: {name}")
        if event_id is not None:
            lines.append(f"id: {event_id}")
        lines.extend(f"data: {line}" for line in text.split("\n"))
        chunks.append(Chunk((eol.join(lines) + eol + eol).encode(), delay))
    return chunks


def ndjson_lines(objects: Iterable[Any], *, delay: float = 0.0) -> list[Chunk]:
    """One JSON object per line, one chunk per line (Ollama's streaming shape)."""
    return [Chunk(json.dumps(obj, separators=(",", ":")).encode() + b"\n", delay) for obj in objects]


@dataclass(slots=True)
class RecordedRequest:
    """One request as the server received it, and what became of its response."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    received_at: float  # time.monotonic()
    #: the response was sent completely (the connection may close afterwards as scripted)
    completed: bool = False
    #: the client closed the connection before the response was completely sent
    client_disconnected: bool = False
    disconnected_at: float | None = None
    chunks_sent: int = 0
    #: the server cut the connection mid-body, as scripted (`cut_after`)
    cut: bool = False
    _done: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> str:
        return self.target.split("?", 1)[1] if "?" in self.target else ""

    def header(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return default

    def json(self) -> Any:
        return json.loads(self.body)

    def wait_done(self, timeout: float = 10.0) -> bool:
        """Wait until the response was completed or the client went away."""
        return self._done.wait(timeout)

    def wait_disconnected(self, timeout: float = 10.0) -> bool:
        """True once the client has disconnected before the response was complete."""
        self._done.wait(timeout)
        return self.client_disconnected


class _Disconnected(Exception):
    """The client closed the connection."""


class _Stopping(Exception):
    """The server is stopping."""


class _Route:
    def __init__(self, responses: list[Response]) -> None:
        self.responses = responses
        self.calls = 0

    def next(self) -> Response:
        index = min(self.calls, len(self.responses) - 1)
        self.calls += 1
        return self.responses[index]


class HttpFixtureServer:
    """Serves scripted responses on 127.0.0.1 at an ephemeral port until `stop()`."""

    def __init__(self) -> None:
        self._routes: dict[tuple[str, str], _Route] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._requests: list[RecordedRequest] = []
        self._request_arrived = threading.Condition(self._lock)
        self._connections: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections_accepted = 0

    # ---- scripting ---------------------------------------------------------

    def route(self, method: str, path: str, *responses: Response) -> None:
        """Answer `method path` (path without the query) with these responses in turn; the last
        one repeats. Routing the same method and path again replaces its queue."""
        if not responses:
            raise ValueError("a route needs at least one response")
        with self._lock:
            self._routes[(method.upper(), path)] = _Route(list(responses))

    def calls(self, method: str, path: str) -> int:
        with self._lock:
            route = self._routes.get((method.upper(), path))
            return route.calls if route else 0

    def url_for(self, path: str) -> str:
        return self.url + path

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def wait_for_requests(self, n: int, timeout: float = 10.0) -> list[RecordedRequest]:
        """The first `n` requests, once they have arrived (TimeoutError otherwise)."""
        deadline = time.monotonic() + timeout
        with self._request_arrived:
            while len(self._requests) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self._requests)} of {n} requests arrived within {timeout} s")
                self._request_arrived.wait(left)
            return self._requests[:n]

    # ---- running -----------------------------------------------------------

    def start(self) -> HttpFixtureServer:
        thread = threading.Thread(target=self._accept_loop, name=f"http-fixture-{self.port}", daemon=True)
        self._threads.append(thread)
        thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> HttpFixtureServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                readable, _, _ = select.select([self._listener], [], [], 0.1)
                if not readable:
                    continue
                conn, _ = self._listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._connections.add(conn)
                self.connections_accepted += 1
            thread = threading.Thread(target=self._serve_connection, args=(conn,), daemon=True,
                                      name=f"http-fixture-{self.port}-conn")
            self._threads.append(thread)
            thread.start()

    def _serve_connection(self, conn: socket.socket) -> None:
        buffer = bytearray()
        try:
            while not self._stopping.is_set():
                request = self._read_request(conn, buffer)
                if request is None:
                    return
                keep_alive = self._respond(conn, request)
                if not keep_alive:
                    return
        except (_Disconnected, _Stopping, OSError):
            return
        finally:
            with self._lock:
                self._connections.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()

    # ---- requests ----------------------------------------------------------

    def _recv_into(self, conn: socket.socket, buffer: bytearray) -> bool:
        """Read more; False at the client's EOF or when the server stops."""
        while not self._stopping.is_set():
            readable, _, _ = select.select([conn], [], [], 0.1)
            if readable:
                data = conn.recv(65536)
                if not data:
                    return False
                buffer += data
                return True
        return False

    def _read_request(self, conn: socket.socket, buffer: bytearray) -> RecordedRequest | None:
        while b"\r\n\r\n" not in buffer:
            if len(buffer) > MAX_HEAD or not self._recv_into(conn, buffer):
                return None
        head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
        buffer[:] = rest
        lines = head.decode("latin-1").split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
        headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:] if line)]
        names = {k.lower(): v for k, v in headers}
        if names.get("transfer-encoding", "").lower() == "chunked":
            body = self._read_chunked(conn, buffer)
        else:
            length = int(names.get("content-length", "0"))
            while len(buffer) < length:
                if not self._recv_into(conn, buffer):
                    raise _Disconnected
            body = bytes(buffer[:length])
            del buffer[:length]
        request = RecordedRequest(method.upper(), target, headers, body, time.monotonic())
        with self._request_arrived:
            self._requests.append(request)
            self._request_arrived.notify_all()
        return request

    def _read_chunked(self, conn: socket.socket, buffer: bytearray) -> bytes:
        body = bytearray()
        while True:
            while b"\r\n" not in buffer:
                if not self._recv_into(conn, buffer):
                    raise _Disconnected
            size_line, _, rest = bytes(buffer).partition(b"\r\n")
            buffer[:] = rest
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                while not (buffer.startswith(b"\r\n") or b"\r\n\r\n" in buffer):  # trailers
                    if not self._recv_into(conn, buffer):
                        raise _Disconnected
                end = 2 if buffer.startswith(b"\r\n") else buffer.index(b"\r\n\r\n") + 4
                del buffer[:end]
                return bytes(body)
            while len(buffer) < size + 2:
                if not self._recv_into(conn, buffer):
                    raise _Disconnected
            body += buffer[:size]
            del buffer[:size + 2]

    # ---- responses ---------------------------------------------------------

    def _respond(self, conn: socket.socket, request: RecordedRequest) -> bool:
        """Send the scripted response; whether the connection may serve another request."""
        with self._lock:
            route = self._routes.get((request.method, request.path))
            response = route.next() if route else Response(
                404, {"content-type": "text/plain"}, [f"no route for {request.method} {request.path}\n".encode()])
        try:
            return self._send(conn, request, response)
        except (_Disconnected, OSError):
            if not request.completed and not self._stopping.is_set():
                request.client_disconnected = True
                request.disconnected_at = time.monotonic()
            raise
        finally:
            request._done.set()

    def _send(self, conn: socket.socket, request: RecordedRequest, response: Response) -> bool:
        chunks = response.chunks()
        headers = response.header_list()
        names = {k.lower(): v.lower() for k, v in headers}
        if not response.raw:
            if response.chunked:
                headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
                if "transfer-encoding" not in names:
                    headers.append(("Transfer-Encoding", "chunked"))
            elif "content-length" not in names:
                headers.append(("Content-Length", str(sum(len(c.data) for c in chunks))))
        framed = not response.raw or "content-length" in names or names.get("transfer-encoding") == "chunked"
        keep_alive = (framed and names.get("connection") != "close"
                      and request.header("connection", "").lower() != "close"  # type: ignore[union-attr]
                      and response.cut_after is None and not response.stall)
        self._wait(conn, response.delay_before)
        reason = response.reason if response.reason is not None else REASONS.get(response.status, "Status")
        head = f"HTTP/1.1 {response.status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
        conn.sendall(head.encode("latin-1"))
        for index, chunk in enumerate(chunks):
            if response.cut_after is not None and index >= response.cut_after:
                break
            self._wait(conn, response.chunk_delay + chunk.delay)
            data = chunk.data
            if response.chunked and not response.raw:
                if not data:
                    continue  # an empty HTTP chunk would end the body
                data = f"{len(data):x}\r\n".encode() + data + b"\r\n"
            conn.sendall(data)
            request.chunks_sent += 1
        if response.cut_after is not None:
            request.cut = True
            self._cut(conn, response.reset)
            return False
        if response.stall:
            self._wait(conn, None)
            return False
        if response.chunked and not response.raw:
            conn.sendall(b"0\r\n\r\n")
        request.completed = True
        return keep_alive

    def _wait(self, conn: socket.socket, seconds: float | None) -> None:
        """Sleep `seconds` (None: until the client goes), raising _Disconnected the moment the
        client closes the connection (or the server stops)."""
        if seconds is not None and seconds <= 0:
            return
        deadline = None if seconds is None else time.monotonic() + seconds
        watching = True  # stop watching the socket once it has unread data (a pipelined request)
        while True:
            if self._stopping.is_set():
                raise _Stopping
            left = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
            if left <= 0:
                return
            if not watching:
                self._stopping.wait(left)
                continue
            readable, _, _ = select.select([conn], [], [], left)
            if readable:
                try:
                    peeked = conn.recv(1, socket.MSG_PEEK)
                except OSError:
                    peeked = b""
                if not peeked:
                    raise _Stopping if self._stopping.is_set() else _Disconnected
                watching = False

    @staticmethod
    def _cut(conn: socket.socket, reset: bool) -> None:
        if reset:
            # SO_LINGER 0: close() sends RST, the client's read fails (ECONNRESET)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_WR)
        conn.close()


@pytest.fixture
def http_fixture() -> Iterator[HttpFixtureServer]:
    """A started HttpFixtureServer on 127.0.0.1; stopped (connections closed) at teardown."""
    server = HttpFixtureServer().start()
    try:
        yield server
    finally:
        server.stop()
