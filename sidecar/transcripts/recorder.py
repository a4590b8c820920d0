"""Recording: sit between a client and the daemon, pass every byte through, write it down.

Two threads pump the two directions with plain blocking reads and writes, so a large
message in one direction can never wait on the other (the pipes drain independently). Each
pump splits its stream into messages with the daemon's own FrameDecoder and appends them
to the transcript *before* forwarding the bytes, so a reply is never written down ahead of
the message that caused it. Secret values (`secrets/set` params.value) are redacted in the
transcript only; the daemon gets them as sent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import IO, Any

import msgspec

from sidecar.server.framing import FrameDecoder, FrameError, frame
from sidecar.transcripts.format import FORMAT_VERSION, Header, Line, TranscriptWriter, raw_line
from sidecar.transcripts.pipe import message_key
from sidecar.transcripts.volatile import default_matchers

#: options that only make sense for the recorded run; replay gives its own
_RUN_SPECIFIC = {"--data-dir": 1, "--parent-pid": 1}
#: a secret value as written down; replay still works, since values are never returned
REDACTED = "<redacted>"


def serve_args(argv: Sequence[str]) -> list[str]:
    """The arguments after `serve` in a daemon command line, less the run-specific ones."""
    argv = list(argv)
    rest = argv[argv.index("serve") + 1:] if "serve" in argv else []
    out: list[str] = []
    skip = 0
    for arg in rest:
        if skip:
            skip -= 1
            continue
        name = arg.split("=", 1)[0]
        if name in _RUN_SPECIFIC:
            skip = 0 if "=" in arg else _RUN_SPECIFIC[name]
            continue
        out.append(arg)
    return out


def client_line(payload: bytes, framing: str | None) -> Line:
    """A client message as a transcript line: JSON when replaying the decoded value sends an
    equivalent message, else the bytes as they were (a parse error stays a parse error).
    Secret values are redacted."""
    try:
        value = msgspec.json.decode(payload)
    except (msgspec.DecodeError, RecursionError):
        return raw_line("client", frame(payload, framing))
    redacted = redact_secrets(value)
    if redacted is not value:
        # never kept raw, even with duplicate keys: the bytes would hold the secret
        return Line(dir="client", msg=redacted)
    try:
        json.loads(payload, object_pairs_hook=_no_duplicate_keys)
    except (ValueError, RecursionError):
        return raw_line("client", frame(payload, framing))
    return Line(dir="client", msg=value)


def redact_secrets(value: Any) -> Any:
    """`value` with params.value of each secrets/set request (alone or in a batch) replaced by
    REDACTED: a copy if anything was replaced, else `value` itself."""
    if isinstance(value, list):
        items = [redact_secrets(item) for item in value]
        return items if any(new is not old for new, old in zip(items, value)) else value
    if (isinstance(value, dict) and value.get("method") == "secrets/set"
            and isinstance(value.get("params"), dict) and "value" in value["params"]):
        return {**value, "params": {**value["params"], "value": REDACTED}}
    return value


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate keys: decoding would lose one")  # recorded raw instead
    return dict(pairs)


class Recorder:
    def __init__(self, argv: Sequence[str], transcript: IO[str], *, description: str = "",
                 in_fd: int = 0, out_fd: int = 1, exit_grace: float = 10.0) -> None:
        self.argv = list(argv)
        self.writer = TranscriptWriter(transcript, Header(FORMAT_VERSION, serve_args(argv), description))
        self.in_fd = in_fd
        self.out_fd = out_fd
        self.exit_grace = exit_grace
        #: request id -> method, so a response's default matchers know what it answers
        self._methods: dict[Any, str] = {}
        self._done = threading.Event()
        self._client_closed = threading.Event()
        self.proc: subprocess.Popen[bytes] | None = None

    def run(self) -> int:
        """Pass the session through until either side closes; the daemon's exit code."""
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        client = threading.Thread(target=self._pump_client, name="record-client", daemon=True)
        server = threading.Thread(target=self._pump_server, name="record-server", daemon=True)
        client.start()
        server.start()
        self._done.wait()
        if self._client_closed.is_set():
            server.join(self.exit_grace)  # stdin closed: the daemon has this long to finish
        if server.is_alive():
            self.proc.terminate()
            server.join(5.0)
            if server.is_alive():
                self.proc.kill()
        try:
            code = self.proc.wait(timeout=self.exit_grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        server.join(1.0)
        self.writer.write(Line(dir="server", exitCode=code))
        self.writer.finish()
        return code

    # ---- client -> daemon -------------------------------------------------------------

    def _pump_client(self) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        decoder = FrameDecoder(1 << 62)
        daemon_in = self.proc.stdin.fileno()
        try:
            while chunk := _read(self.in_fd):
                for item in decoder.feed(chunk):
                    if decoder.framing is not None:
                        self.writer.set_framing(decoder.framing)
                    _guarded(self._client_message, item, decoder.framing)
                if not _write_all(daemon_in, chunk):
                    return  # the daemon is gone; the server pump sees its end
            self.writer.write(Line(dir="client", close=True))
        finally:
            self.proc.stdin.close()
            self._client_closed.set()
            self._done.set()

    def _client_message(self, item: bytes | FrameError, framing: str | None) -> None:
        if isinstance(item, FrameError):
            print(f"sidecar record: client sent a {item.kind} frame; it is not in the transcript", file=sys.stderr)
            return
        line = client_line(item, framing)
        if line.has_msg:
            for message in line.msg if isinstance(line.msg, list) else [line.msg]:
                if isinstance(message, dict) and isinstance(message.get("method"), str) and "id" in message:
                    self._methods[message_key({"id": message["id"], "result": None})] = message["method"]
        self.writer.write(line)

    # ---- daemon -> client -------------------------------------------------------------

    def _pump_server(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        decoder = FrameDecoder(1 << 62)
        daemon_out = self.proc.stdout.fileno()
        forwarding = True
        try:
            while chunk := _read(daemon_out):
                for item in decoder.feed(chunk):
                    _guarded(self._server_message, item)
                if forwarding and not _write_all(self.out_fd, chunk):
                    # the client stopped reading: end the session, but keep draining so
                    # the daemon is never stuck on a full pipe while it winds down
                    forwarding = False
                    if self.proc.stdin is not None:
                        try:
                            self.proc.stdin.close()
                        except OSError:
                            pass
        finally:
            self._done.set()

    def _server_message(self, item: bytes | FrameError) -> None:
        if isinstance(item, FrameError):
            self.writer.write(raw_line("server", repr(item).encode()))
            return
        try:
            value = msgspec.json.decode(item)
        except msgspec.DecodeError:
            self.writer.write(raw_line("server", item))
            return
        method = self._methods.pop(message_key(value), None) if isinstance(value, dict) else None
        self.writer.write(Line(dir="server", msg=value, match=default_matchers(value, method)))


def _guarded(record: Callable[..., None], *args: Any) -> None:
    """Writing the transcript must never break the session it records."""
    try:
        record(*args)
    except Exception as exc:  # noqa: BLE001 - report it and keep passing bytes through
        print(f"sidecar record: could not record a message: {exc!r}", file=sys.stderr)


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:
        return b""


def _write_all(fd: int, data: bytes) -> bool:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError:
        return False
    return True
