"""The daemon under test as a stream of arrivals, and how messages are paired.

A reader thread splits the daemon's stdout into messages with the daemon's own
`read_frames` and queues them, so writing to its stdin never waits on reading its stdout.
"""

from __future__ import annotations

import queue
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import IO, Any

import msgspec

from sidecar.server.framing import FrameError, read_frames
from sidecar.transcripts.matching import short

NOT_JSON = object()


@dataclass
class Arrival:
    """One message from the daemon's stdout."""

    payload: bytes
    value: Any  # the decoded JSON, or NOT_JSON
    #: the last transcript line sent before it was taken in (for the report)
    after_lineno: int | None = None

    @property
    def key(self) -> tuple[Any, ...]:
        return message_key(self.value) if self.value is not NOT_JSON else ("raw",)

    def show(self) -> str:
        return short(self.value, 300) if self.value is not NOT_JSON else repr(self.payload[:300])


def message_key(value: Any) -> tuple[Any, ...]:
    """What pairs an arriving message with an expected one."""
    if isinstance(value, list):
        ids = sorted(repr(_id_key(e.get("id"))) for e in value if isinstance(e, dict) and e.get("id") is not None)
        return ("batch", tuple(ids))
    if isinstance(value, dict):
        if "id" in value and ("result" in value or "error" in value):
            return ("response", _id_key(value["id"]))
        if "method" in value:
            return ("request", _id_key(value["id"])) if "id" in value else ("notification", value["method"])
    return ("other",)


def _id_key(request_id: Any) -> Any:
    """Hashable, and 1 and "1" stay apart (an id that is no valid id still gets a key)."""
    if request_id is None:
        return None
    if isinstance(request_id, (int, str)) and not isinstance(request_id, bool):
        return (type(request_id).__name__, request_id)
    return ("json", msgspec.json.encode(request_id).decode())


class DaemonPipe:
    """The daemon under test: bytes in, decoded messages out through a queue."""

    def __init__(self, argv: list[str], stderr: IO[bytes] | int | None, env: dict[str, str] | None) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, env=env)
        self.arrivals: queue.Queue[Arrival | None] = queue.Queue()
        self.eof = False
        self._reader = threading.Thread(target=self._read, name="transcript-reader", daemon=True)
        self._reader.start()

    def send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        try:
            if self.proc.stdin is not None and not self.proc.stdin.closed:
                self.proc.stdin.close()
        except OSError:
            pass  # it is gone already

    def next(self, deadline: float) -> Arrival | None:
        """The next message, or None at end of stream or deadline."""
        if self.eof:
            return None
        try:
            item = self.arrivals.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return None
        if item is None:
            self.eof = True
        return item

    def finish(self, timeout: float) -> int | None:
        """Close stdin, wait for the exit; kill it if it lingers."""
        self.close_stdin()
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for item in read_frames(self.proc.stdout.fileno()):
            if isinstance(item, FrameError):
                self.arrivals.put(Arrival(repr(item).encode(), NOT_JSON))
                continue
            try:
                value = msgspec.json.decode(item)
            except msgspec.DecodeError:
                value = NOT_JSON
            self.arrivals.put(Arrival(item, value))
        self.arrivals.put(None)
