"""The transcript file: JSON Lines, a header then one line per message or stream event.

    {"transcript": 1, "args": ["--debug-methods"], "description": "..."}
    {"dir": "client", "msg": {"jsonrpc": "2.0", "id": 1, "method": "system/ping"}}
    {"dir": "server", "msg": {"jsonrpc": "2.0", "id": 1, "result": {"pong": true}}}
    {"dir": "server", "msg": {...}, "match": {"$.result.uptimeSeconds": "number"}, "optional": true}
    {"dir": "client", "raw": "garbage\\n"}
    {"dir": "client", "close": true}
    {"dir": "server", "exitCode": 0}

The full description is in tests/transcripts/README.md.
"""

from __future__ import annotations

import base64
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from sidecar.transcripts.matching import compile_matchers

FORMAT_VERSION = 1


class TranscriptError(ValueError):
    """The file is not a valid transcript; the message names the line."""


class Header(msgspec.Struct, omit_defaults=True):
    #: format version
    transcript: int
    #: daemon arguments after `serve` the session needs (a fresh --data-dir is added on replay)
    args: list[str] = []
    description: str = ""
    #: how client messages are framed on replay: what the recorded client used
    framing: Literal["ndjson", "content-length"] = "ndjson"


class Line(msgspec.Struct, omit_defaults=True):
    """One event. Exactly one of msg / raw / rawBase64 / close / exitCode is set."""

    dir: Literal["client", "server"]
    #: a JSON-RPC message (or any JSON value: a bad request is still JSON)
    msg: Any | UnsetType = UNSET
    #: bytes that are not JSON: from the client exactly as sent, framing included; from
    #: the server the message payload, framing removed
    raw: str | UnsetType = UNSET
    #: the same for bytes that are not UTF-8
    rawBase64: str | UnsetType = UNSET
    #: client: stdin was closed here
    close: bool = False
    #: server: the daemon exited with this code
    exitCode: int | None = None
    #: JSON path (wildcards allowed) -> matcher, for values that differ from run to run
    match: dict[str, str] = {}
    #: server: the message may be missing on replay
    optional: bool = False

    def raw_bytes(self) -> bytes | None:
        if self.raw is not UNSET:
            return self.raw.encode()
        if self.rawBase64 is not UNSET:
            return base64.b64decode(self.rawBase64)
        return None

    @property
    def has_msg(self) -> bool:
        return self.msg is not UNSET

    @property
    def is_message(self) -> bool:
        """A message or raw bytes (not a close or exit event)."""
        return self.msg is not UNSET or self.raw is not UNSET or self.rawBase64 is not UNSET


def raw_line(direction: Literal["client", "server"], data: bytes, **extra: Any) -> Line:
    try:
        return Line(dir=direction, raw=data.decode(), **extra)
    except UnicodeDecodeError:
        return Line(dir=direction, rawBase64=base64.b64encode(data).decode(), **extra)


@dataclass
class Transcript:
    header: Header
    lines: list[Line] = field(default_factory=list)
    #: 1-based line numbers in the file, parallel to `lines` (the header is line 1)
    linenos: list[int] = field(default_factory=list)
    source: str = "<transcript>"

    def dumps(self) -> str:
        out = [msgspec.json.encode(self.header).decode()]
        out += [msgspec.json.encode(line).decode() for line in self.lines]
        return "\n".join(out) + "\n"


_decode_header = msgspec.json.Decoder(Header).decode
_decode_line = msgspec.json.Decoder(Line).decode


def loads(text: str, source: str = "<transcript>") -> Transcript:
    header: Header | None = None
    transcript = Transcript(Header(FORMAT_VERSION), source=source)
    for lineno, text_line in enumerate(_lines(text), 1):
        if not text_line.strip():
            continue
        try:
            if header is None:
                header = _decode_header(text_line)
                if header.transcript != FORMAT_VERSION:
                    raise TranscriptError(f"{source}:{lineno}: format version {header.transcript} "
                                          f"is not supported (this sidecar reads {FORMAT_VERSION})")
                transcript.header = header
                continue
            line = _decode_line(text_line)
        except msgspec.DecodeError as exc:
            what = "header" if header is None else "line"
            raise TranscriptError(f"{source}:{lineno}: not a transcript {what}: {exc}") from None
        _check(line, f"{source}:{lineno}")
        transcript.lines.append(line)
        transcript.linenos.append(lineno)
    if header is None:
        raise TranscriptError(f"{source}: empty transcript (no header line)")
    return transcript


def _lines(text: str) -> list[str]:
    """The file's lines. Not str.splitlines(): that also breaks at U+2028, U+2029, U+0085 and
    more, which msgspec writes unescaped inside JSON strings."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start another
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def load(path: Path | str) -> Transcript:
    path = Path(path)
    return loads(path.read_text(encoding="utf-8"), str(path))


def _check(line: Line, where: str) -> None:
    kinds = [line.msg is not UNSET, line.raw is not UNSET, line.rawBase64 is not UNSET,
             line.close, line.exitCode is not None]
    if sum(kinds) != 1:
        raise TranscriptError(f"{where}: a line needs exactly one of msg, raw, rawBase64, close, exitCode")
    if line.close and line.dir != "client":
        raise TranscriptError(f"{where}: close is a client event")
    if line.exitCode is not None and line.dir != "server":
        raise TranscriptError(f"{where}: exitCode is a server event")
    if line.optional and line.dir != "server":
        raise TranscriptError(f"{where}: only server lines can be optional")
    if line.match:
        try:
            compile_matchers(line.match)
        except ValueError as exc:
            raise TranscriptError(f"{where}: {exc}") from None


class TranscriptWriter:
    """Appends lines as they happen, from several threads; each line is flushed at once so a
    session that is killed still leaves a readable transcript."""

    def __init__(self, stream: IO[str], header: Header) -> None:
        self._stream = stream
        self._header = header
        self._header_written = False
        self._finished = False
        self._lock = threading.Lock()

    def set_framing(self, framing: str) -> None:
        with self._lock:
            if not self._header_written:
                self._header.framing = framing

    def write(self, line: Line) -> None:
        with self._lock:
            if self._finished:
                return  # after the daemon's exit line nothing belongs to the session
            self._write_header()
            self._stream.write(msgspec.json.encode(line).decode() + "\n")
            self._stream.flush()

    def finish(self) -> None:
        with self._lock:
            self._finished = True
            self._write_header()
            self._stream.flush()

    def _write_header(self) -> None:
        # written with the first line, so it carries the framing the client turned out to use
        if not self._header_written:
            self._stream.write(msgspec.json.encode(self._header).decode() + "\n")
            self._header_written = True
