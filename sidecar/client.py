"""A synchronous client that spawns the daemon and talks JSON-RPC to it over a pipe.

Used by `sidecar call`, `sidecar shell`, `sidecar replay`, the tests and the benchmarks.
A reader thread splits the daemon's stdout into messages (any framing), routes responses to
their callers by id and hands notifications to a queue and an optional callback. When the
daemon's stdout ends, every caller still waiting is woken with a ConnectionError, which
names the daemon's exit code and, when its stderr is piped (`stderr=subprocess.PIPE`), the
last line it wrote there: a daemon that cannot start says why in that line.
"""

from __future__ import annotations

import collections
import errno
import itertools
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import IO, Any

import msgspec

from sidecar.server.framing import FrameError, frame, read_frames

#: put in every waiter when the daemon's stdout ends: no answer can come any more
_END_OF_STREAM: dict[str, Any] = {}
#: stderr lines kept when stderr is piped: enough for the last words of a dying daemon
STDERR_TAIL = 20
#: the prefix of a daemon log line (sidecar/logs.py FORMAT), dropped when relaying its message
_LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ([A-Z]+) \S+ \[\d+\]: ")
#: log levels whose lines say nothing about why a daemon died
_CHATTER = ("DEBUG", "INFO")


def exit_text(code: int) -> str:
    """ "exit code 2", or "killed by SIGKILL" for a process a signal ended (code -9)."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class RpcError(Exception):
    """The daemon answered with an error object."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.error = error
        self.code = error.get("code")
        self.kind = (error.get("data") or {}).get("kind")


def daemon_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "sidecar", "serve", *args]


def request_message(request_id: Any, method: str, params: Any = None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return message


class DaemonClient:
    def __init__(self, argv: Sequence[str] | None = None, *, env: dict[str, str] | None = None,
                 stderr: IO[bytes] | int | None = subprocess.DEVNULL, framing: str = "ndjson",
                 on_notification: Callable[[dict[str, Any]], None] | None = None,
                 on_message: Callable[[bytes], None] | None = None, new_session: bool = False,
                 on_stderr: Callable[[str], None] | None = None,
                 on_exit: Callable[[int], None] | None = None) -> None:
        """`stderr=subprocess.PIPE` keeps the daemon's last stderr lines (`stderr_tail`) for the
        error raised when it dies, and hands each line to `on_stderr` (from a thread) if given.
        `on_exit(code)` is called from the reader thread once the daemon has closed its output
        and exited."""
        self.argv = list(argv or daemon_argv())
        self.framing = framing
        # new_session: out of the terminal's process group, so Ctrl-C at an interactive
        # client (sidecar shell, sidecar call) reaches only the client, not the daemon
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=stderr, env=env, start_new_session=new_session)
        self.on_stderr = on_stderr
        self.on_exit = on_exit
        #: the daemon's last stderr lines (only when stderr is piped)
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
        self._stderr_reader: threading.Thread | None = None
        if self.proc.stderr is not None:
            self._stderr_reader = threading.Thread(target=self._read_stderr, name="sidecar-client-stderr",
                                                   daemon=True)
            self._stderr_reader.start()
        self.notifications: queue.Queue[dict[str, Any]] = queue.Queue()
        #: every message that arrived without a waiting caller (batches, id-less errors, ...)
        self.unrouted: queue.Queue[Any] = queue.Queue()
        self.on_notification = on_notification
        self.on_message = on_message
        self.garbage: list[bytes] = []  # anything on stdout that was not a JSON-RPC message
        self._ids = itertools.count(1)
        self._waiting: dict[Any, queue.Queue[dict[str, Any]]] = {}
        self._ended = False  # the daemon's stdout is closed (guarded by _lock)
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name="sidecar-client-reader", daemon=True)
        self._reader.start()

    # ---- sending --------------------------------------------------------------

    def send_bytes(self, payload: bytes, *, raw: bool = False) -> None:
        """Send one message payload (framed for the session), or raw bytes as they are."""
        assert self.proc.stdin is not None
        data = payload if raw else frame(payload, self.framing)
        with self._write_lock:
            try:
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
            except BrokenPipeError:
                # the bare "[Errno 32] Broken pipe" says nothing about the daemon
                raise BrokenPipeError(errno.EPIPE, f"the daemon is not reading its input{self._exit_note()}") from None

    def send(self, message: Any) -> None:
        self.send_bytes(msgspec.json.encode(message))

    def notify(self, method: str, params: Any = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)

    def next_id(self) -> int:
        """A request id this client has not used (for callers that send and wait themselves)."""
        return next(self._ids)

    def call(self, method: str, params: Any = None, *, timeout: float = 30.0, id: Any = None) -> dict[str, Any]:
        """Send a request and return the whole response object."""
        request_id = next(self._ids) if id is None else id
        waiter = self.expect(request_id)
        try:
            self.send(request_message(request_id, method, params))
        except BaseException:
            self.forget(request_id)  # no answer will come for it
            raise
        return self.wait(request_id, waiter, timeout)

    def request(self, method: str, params: Any = None, *, timeout: float = 30.0) -> Any:
        """Send a request; its result, or RpcError."""
        response = self.call(method, params, timeout=timeout)
        if "error" in response:
            raise RpcError(response["error"])
        return response.get("result")

    def expect(self, request_id: Any) -> queue.Queue[dict[str, Any]]:
        """Register interest in a response before sending the request (for pipelining)."""
        waiter: queue.Queue[dict[str, Any]] = queue.Queue()
        with self._lock:
            if self._ended:
                waiter.put(_END_OF_STREAM)  # the reader has already woken everyone it will
            self._waiting[_key(request_id)] = waiter
        return waiter

    def wait(self, request_id: Any, waiter: queue.Queue[dict[str, Any]], timeout: float = 30.0) -> dict[str, Any]:
        """The response for `request_id`; the waiter is forgotten afterwards, whatever happens."""
        try:
            return self.receive(request_id, waiter, timeout)
        finally:
            self.forget(request_id)

    def receive(self, request_id: Any, waiter: queue.Queue[dict[str, Any]], timeout: float = 30.0) -> dict[str, Any]:
        """Like wait, but the waiter stays registered: for a caller that may be interrupted
        (Ctrl-C) and go on waiting for the same answer."""
        try:
            response = waiter.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no response to request {request_id!r} within {timeout} s") from None
        if response is _END_OF_STREAM:
            waiter.put(response)  # a second receive must not hang either
            raise ConnectionError(f"the daemon closed its output before answering request {request_id!r}"
                                  f"{self._exit_note()}")
        return response

    def forget(self, request_id: Any) -> None:
        """Stop routing responses for `request_id` to its waiter (a late one goes to `unrouted`)."""
        with self._lock:
            self._waiting.pop(_key(request_id), None)

    def initialize(self, name: str = "sidecar-client", version: str = "0") -> dict[str, Any]:
        result = self.request("initialize", {"clientInfo": {"name": name, "version": version},
                                             "protocolVersion": "2026-11-01", "capabilities": {}})
        self.notify("initialized")
        return result

    # ---- closing --------------------------------------------------------------

    def close(self, timeout: float = 5.0) -> int:
        """Close stdin and wait for the daemon to exit; kill it if it does not."""
        try:
            if self.proc.stdin and not self.proc.stdin.closed:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def shutdown(self, timeout: float = 5.0) -> int:
        self.request("shutdown", timeout=timeout)
        self.notify("exit")
        return self.close(timeout)

    def __enter__(self) -> DaemonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def last_words(self) -> str:
        """The daemon's last stderr line that may say why it stopped (not empty, not an info
        or debug log record), without the log prefix; "" if none was kept. Once the daemon
        has exited, waits a moment for its stderr to be read to the end."""
        if self._stderr_reader is not None and self.proc.poll() is not None:
            self._stderr_reader.join(timeout=1.0)
        for line in reversed(self.stderr_tail):
            line = line.strip()
            match = _LOG_PREFIX.match(line)
            if line and not (match and match[1] in _CHATTER):
                return line[match.end():] if match else line
        return ""

    def _exit_note(self) -> str:
        """The suffix " (exit code N)" if the daemon has exited, else ""; it gets a moment, as
        its pipes close just before it is gone. With stderr piped, its last line follows."""
        try:
            code = self.proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            return ""
        words = self.last_words()
        return f" ({exit_text(code)})" + (f": {words}" if words else "")

    # ---- reading --------------------------------------------------------------

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for item in read_frames(self.proc.stdout.fileno()):
            if isinstance(item, FrameError):
                self.garbage.append(repr(item).encode())
            else:
                self._route(item)
        with self._lock:
            self._ended = True
            for waiter in self._waiting.values():
                waiter.put(_END_OF_STREAM)
        self.unrouted.put(None)  # end of stream marker
        self.notifications.put({"method": "$/eof"})
        if self.on_exit is not None:
            code = self.proc.wait()
            if self._stderr_reader is not None:
                self._stderr_reader.join(timeout=1.0)
            self.on_exit(code)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self.stderr_tail.append(line)
            if self.on_stderr is not None:
                try:
                    self.on_stderr(line)
                except Exception:  # noqa: BLE001 - relaying must never stop the draining
                    pass

    def _route(self, payload: bytes) -> None:
        if self.on_message is not None:
            self.on_message(payload)
        try:
            message = msgspec.json.decode(payload)
        except msgspec.DecodeError:
            self.garbage.append(payload)
            return
        if isinstance(message, dict) and "method" in message and "id" not in message:
            if self.on_notification is not None:
                self.on_notification(message)
            self.notifications.put(message)
            return
        if isinstance(message, dict) and "id" in message and ("result" in message or "error" in message):
            with self._lock:
                waiter = self._waiting.get(_key(message["id"]))
            if waiter is not None:
                waiter.put(message)
                return
        if not (isinstance(message, list) or (isinstance(message, dict) and message.get("jsonrpc") == "2.0")):
            self.garbage.append(payload)
            return
        self.unrouted.put(message)


def _key(request_id: Any) -> tuple[bool, Any]:
    return (isinstance(request_id, str), request_id)
