"""A Server-Sent Events parser, incremental, as the WHATWG HTML standard defines the format.

Feed it text as it arrives (any chunking, even a CRLF split across two chunks); it returns the
events each chunk completes. Lines end at CRLF, LF or CR; a blank line dispatches the event;
`:` starts a comment; `data:` lines accumulate joined by "\\n"; one space after the colon is
dropped; an event without data is not dispatched; `event:` names it (default "message"); `id:`
sets the last event id (not when it contains NUL); `retry:` takes digits only.

(httpx-sse does the same over httpx; this one is ours so that the parser can be fed bytes from
any source, measured on its own, and tested line by line.)
"""

from __future__ import annotations

import codecs
from collections.abc import AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SSEvent:
    event: str
    data: str
    id: str
    retry: int | None = None


class SSEParser:
    __slots__ = ("_buffer", "_data", "_event", "_last_id", "_retry", "_pending_cr", "_decoder")

    def __init__(self) -> None:
        self._buffer = ""
        self._data: list[str] = []
        self._event = ""
        self._last_id = ""
        self._retry: int | None = None
        self._pending_cr = False  # the previous chunk ended in CR: a LF starting this one belongs to it
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed_bytes(self, chunk: bytes) -> list[SSEvent]:
        return self.feed(self._decoder.decode(chunk))

    def feed(self, text: str) -> list[SSEvent]:
        if self._pending_cr and text.startswith("\n"):
            text = text[1:]
        self._pending_cr = False
        if not text:
            return []
        buffer = self._buffer + text
        events: list[SSEvent] = []
        start = 0
        n = len(buffer)
        while True:
            # the nearest line end: \r, \n or \r\n
            lf = buffer.find("\n", start)
            cr = buffer.find("\r", start, lf if lf >= 0 else n)
            if cr >= 0:
                end, nxt = cr, cr + 1
                if nxt < n and buffer[nxt] == "\n":
                    nxt += 1
                elif nxt == n:
                    self._pending_cr = True  # a LF may follow in the next chunk
            elif lf >= 0:
                end, nxt = lf, lf + 1
            else:
                break
            event = self._line(buffer[start:end])
            if event is not None:
                events.append(event)
            start = nxt
        self._buffer = buffer[start:]
        return events

    def close(self) -> list[SSEvent]:
        """End of stream: per the standard an incomplete event (no blank line yet) is dropped."""
        self._buffer = ""
        self._data = []
        self._event = ""
        return []

    def _line(self, line: str) -> SSEvent | None:
        if not line:
            return self._dispatch()
        if line[0] == ":":
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._last_id = value
        elif name == "retry":
            if value.isascii() and value.isdigit():
                self._retry = int(value)
        return None

    def _dispatch(self) -> SSEvent | None:
        data, event, retry = self._data, self._event, self._retry
        self._data = []
        self._event = ""
        self._retry = None
        if not data:
            return None
        return SSEvent(event or "message", "\n".join(data), self._last_id, retry)


async def aiter_sse(chunks: AsyncIterator[bytes]) -> AsyncIterator[SSEvent]:
    parser = SSEParser()
    async for chunk in chunks:
        for event in parser.feed_bytes(chunk):
            yield event
    parser.close()


async def aiter_ndjson_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Lines of a newline-delimited stream (Ollama), blank lines skipped; a last line without
    its newline is still given."""
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        if b"\n" not in chunk:
            continue
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.strip():
                yield line
    if buffer.strip():
        yield buffer
