"""Message framing on a byte stream: newline-delimited JSON or LSP `Content-Length:` headers.

The framing is detected from the first non-blank bytes of the session and replies use the
same one. Oversized messages are reported and skipped so the stream resynchronises.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

NDJSON = "ndjson"
CONTENT_LENGTH = "content-length"

_HEADER_PREFIX = b"content-length:"
_WHITESPACE = b" \t\r\n"
_BOM = b"\xef\xbb\xbf"
#: what a header line may start with (a token); anything else in header position is junk
_TOKEN_START = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")


@dataclass(frozen=True, slots=True)
class FrameError:
    """Something in the stream that is not a message: answered with an error, then skipped."""

    kind: str  # "oversized" | "bad_header" | "not_a_header"
    size: int = 0


class FrameDecoder:
    """Feed bytes in, get complete message payloads (bytes) or FrameErrors out."""

    def __init__(self, max_message_bytes: int) -> None:
        self.max_message_bytes = max_message_bytes
        self.framing: str | None = None
        self._buf = bytearray()
        self._discarding = False  # ndjson: skipping the rest of an oversized line
        self._scanned = 0  # ndjson: bytes of the buffer already known to hold no newline
        self._skip = 0  # content-length: body bytes of an oversized message still to skip
        self._started = False  # a leading UTF-8 byte-order mark has been looked for

    @property
    def awaiting_header(self) -> bool:
        """Content-Length framing with part of a header buffered: if no more bytes come,
        the session answers a framing error (`expire_partial`) rather than wait forever."""
        return self.framing == CONTENT_LENGTH and not self._skip and bool(self._buf.strip(_WHITESPACE)) \
            and self._buf.find(b"\r\n\r\n") < 0

    def expire_partial(self) -> Iterator[FrameError]:
        """Drop a partial header that sat too long (e.g. an NDJSON line sent to a
        Content-Length session, with no newline after it)."""
        if self.awaiting_header:
            self._buf.clear()
            yield FrameError("not_a_header")

    def feed(self, data: bytes) -> Iterator[bytes | FrameError]:
        if not self._started:
            self._buf += data
            if len(self._buf) < len(_BOM) and _BOM.startswith(bytes(self._buf)):
                return  # could still be a byte-order mark: wait
            self._started = True
            if self._buf.startswith(_BOM):
                del self._buf[:len(_BOM)]  # some Windows tools write one; JSON forbids it
        else:
            self._buf += data
        if self.framing is None and not self._detect():
            return
        if self.framing == NDJSON:
            yield from self._ndjson()
        else:
            yield from self._content_length()

    def _detect(self) -> bool:
        start = 0
        while start < len(self._buf) and self._buf[start] in _WHITESPACE:
            start += 1
        head = bytes(self._buf[start:start + len(_HEADER_PREFIX)]).lower()
        if not head:
            return False
        if _HEADER_PREFIX.startswith(head) and len(head) < len(_HEADER_PREFIX):
            if len(self._buf) - start < len(_HEADER_PREFIX):
                return False  # could still become a header: wait for more bytes
        self.framing = CONTENT_LENGTH if head == _HEADER_PREFIX else NDJSON
        return True

    def _ndjson(self) -> Iterator[bytes | FrameError]:
        buf = self._buf
        pos = 0
        while True:
            # a big line arrives in many reads: search only the new bytes, not all again
            end = buf.find(b"\n", max(pos, self._scanned))
            if end < 0:
                break
            if self._discarding:
                self._discarding = False
            else:
                line = bytes(buf[pos:end]).strip()
                if len(line) > self.max_message_bytes:
                    yield FrameError("oversized", len(line))
                elif line:
                    yield line
            pos = end + 1
        del buf[:pos]
        if not buf and pos >= 1 << 20:
            self._buf = buf = bytearray()  # let the big one's memory go, not just its bytes
        self._scanned = len(buf)
        # A partial line already over the limit is reported now and skipped to its end, so
        # memory stays bounded. Like a whole line, it is measured without leading whitespace,
        # and with one byte of slack for the "\r" of a CRLF not yet followed by its "\n".
        if len(buf) > self.max_message_bytes + 1:
            if not self._discarding:
                del buf[:len(buf) - len(buf.lstrip(_WHITESPACE))]
                self._scanned = len(buf)
                if len(buf) <= self.max_message_bytes + 1:
                    return
                yield FrameError("oversized", len(buf))
            self._discarding = True
            buf.clear()
            self._scanned = 0

    def _content_length(self) -> Iterator[bytes | FrameError]:
        buf = self._buf
        while True:
            if self._skip:
                n = min(self._skip, len(buf))
                del buf[:n]
                self._skip -= n
                if self._skip:
                    return
            while buf[:1] in (b"\r", b"\n", b" ", b"\t"):
                del buf[:1]
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                newline = buf.find(b"\n")
                if buf and buf[0] not in _TOKEN_START and newline >= 0:
                    # a whole line that cannot start a header (an NDJSON message, say)
                    yield FrameError("not_a_header")
                    self._resync(newline + 1)
                    continue
                if len(buf) > 8192:  # no header is this long: junk, resynchronise
                    yield FrameError("bad_header")
                    self._resync(1)
                    continue
                return
            length = self._parse_length(bytes(buf[:end]))
            if length is None:
                yield FrameError("bad_header")
                self._resync(end + 4)
                continue
            body_start = end + 4
            if length > self.max_message_bytes:
                yield FrameError("oversized", length)
                del buf[:body_start]
                self._skip = length
                continue
            if len(buf) - body_start < length:
                return
            payload = bytes(buf[body_start:body_start + length])
            del buf[:body_start + length]
            yield payload

    def _resync(self, junk_end: int) -> None:
        """Drop a bad header: up to the next `Content-Length:` (which may sit inside the bad
        block, after a junk line), else everything known to be junk (`buf[:junk_end]`)."""
        idx = bytes(self._buf).lower().find(_HEADER_PREFIX, 1)
        if idx < 0:
            keep = len(_HEADER_PREFIX) - 1  # the next header may be split across reads
            del self._buf[:max(junk_end, len(self._buf) - keep)]
        else:
            del self._buf[:idx]

    @staticmethod
    def _parse_length(header: bytes) -> int | None:
        length = None
        for line in header.split(b"\r\n"):
            name, sep, value = line.partition(b":")
            if not sep:
                return None
            if name.strip().lower() == b"content-length":
                value = value.strip()
                if not value.isdigit() or len(value) > 18:  # int() would take "5_8", "+5", " 5"
                    return None
                length = int(value)
        return length if length is not None and length >= 0 else None


def frame(payload: bytes, framing: str | None) -> bytes:
    """Wrap one encoded message for the wire in the session's framing."""
    if framing == CONTENT_LENGTH:
        return b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload)
    return payload + b"\n"


def read_frames(fd: int, max_message_bytes: int = 1 << 31) -> Iterator[bytes | FrameError]:
    """Blocking: every frame read from `fd` until end of file (clients' reader threads)."""
    decoder = FrameDecoder(max_message_bytes)
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            return
        if not chunk:
            return
        yield from decoder.feed(chunk)
