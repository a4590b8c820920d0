"""The benchmark's client side of a stdio JSON-RPC child: raw fds, msgspec, no threads.

Every server in `stdio_bench.py` is driven by this same code; only the framing
(newline-delimited JSON or LSP `Content-Length:` headers) differs. Reads are blocking
`os.read` calls of up to 1 MiB and writes are blocking `os.write` calls, so the client costs
a few microseconds per message and is not what the bench measures.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

NDJSON = "ndjson"
CONTENT_LENGTH = "content-length"
READ_CHUNK = 1 << 20


class Request(msgspec.Struct, omit_defaults=True):
    jsonrpc: str  # required, so omit_defaults never drops it
    id: int
    method: str
    params: Any = None


class Notification(msgspec.Struct, omit_defaults=True):
    jsonrpc: str
    method: str
    params: Any = None


class Incoming(msgspec.Struct):
    """What the client needs from any message: unknown fields (result, params) are skipped."""

    id: int | str | None = None
    method: str | None = None
    error: Any = None


class ServerError(RuntimeError):
    """A request the bench sent was answered with a JSON-RPC error."""


class Wire:
    """One child process and the two pipes to it."""

    def __init__(self, argv: Sequence[str], framing: str, cwd: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.framing = framing
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            bufsize=0, cwd=cwd, env=env)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.pid = self.proc.pid
        self._wfd = self.proc.stdin.fileno()
        self._rfd = self.proc.stdout.fileno()
        self._buf = bytearray()
        self._encode = msgspec.json.Encoder().encode
        self._decode = msgspec.json.Decoder(Incoming).decode
        self._next_id = 0
        #: notifications seen while waiting for responses
        self.notifications = 0

    # ---- writing ----------------------------------------------------------------

    def next_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def frame(self, payload: bytes) -> bytes:
        if self.framing == NDJSON:
            return payload + b"\n"
        return b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload)

    def request_bytes(self, method: str, params: Any = None) -> tuple[int, bytes]:
        request_id = self.next_id()
        return request_id, self.frame(self._encode(Request("2.0", request_id, method, params)))

    def notification_bytes(self, method: str, params: Any = None) -> bytes:
        return self.frame(self._encode(Notification("2.0", method, params)))

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._wfd, view):]

    # ---- reading ----------------------------------------------------------------

    def read_payloads(self) -> list[bytes]:
        """Block for the next chunk of output; return the complete messages in it."""
        chunk = os.read(self._rfd, READ_CHUNK)
        if not chunk:
            raise EOFError(f"child {self.pid} closed its stdout (exit code {self.proc.poll()})")
        self._buf += chunk
        return list(self._ndjson() if self.framing == NDJSON else self._content_length())

    def _ndjson(self) -> Iterator[bytes]:
        buf = self._buf
        start = 0
        while (end := buf.find(b"\n", start)) >= 0:
            if end > start:
                yield bytes(buf[start:end])
            start = end + 1
        del buf[:start]

    def _content_length(self) -> Iterator[bytes]:
        buf = self._buf
        start = 0
        while (header_end := buf.find(b"\r\n\r\n", start)) >= 0:
            length = -1
            for line in bytes(buf[start:header_end]).split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length < 0:
                raise ValueError("frame without Content-Length")
            body = header_end + 4
            if len(buf) < body + length:
                break
            yield bytes(buf[body:body + length])
            start = body + length
        del buf[:start]

    def decode(self, payload: bytes) -> Incoming:
        return self._decode(payload)

    def responses(self) -> Iterator[Incoming]:
        """Responses in the next chunk (notifications are only counted); raises on errors."""
        for payload in self.read_payloads():
            message = self._decode(payload)
            if message.method is not None:
                self.notifications += 1  # a notification, or a request from the server
                continue
            if message.error is not None:
                raise ServerError(f"request {message.id} failed: {message.error}")
            yield message

    def call(self, method: str, params: Any = None) -> None:
        """One request, waiting for its answer."""
        request_id, data = self.request_bytes(method, params)
        self.write(data)
        self.wait_for(request_id)

    def wait_for(self, request_id: int) -> None:
        while True:
            for message in self.responses():
                if message.id == request_id:
                    return

    # ---- ending -----------------------------------------------------------------

    def close(self, timeout: float = 5.0) -> int | None:
        """Close stdin (every server here exits on EOF), then kill if it lingers."""
        try:
            self.proc.stdin.close()  # type: ignore[union-attr]
        except OSError:
            pass
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            self.proc.stdout.close()  # type: ignore[union-attr]
