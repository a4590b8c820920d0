"""A synchronous client that spawns the daemon and talks JSON-RPC to it over a pipe.

Used by `sidecar call`, `sidecar shell`, `sidecar replay`, the tests and the benchmarks.
A reader thread splits the daemon's stdout into messages (any framing), routes responses to
their callers by id and hands notifications to a queue and an optional callback.
"""

from __future__ import annotations

import itertools
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import IO, Any

import msgspec

from sidecar.server.framing import CONTENT_LENGTH, FrameError, frame, read_frames


class RpcError(Exception):
    """The daemon answered with an error object."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.error = error
        self.code = error.get("code")
        self.kind = (error.get("data") or {}).get("kind")


def daemon_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "sidecar", "serve", *args]


class DaemonClient:
    def __init__(self, argv: Sequence[str] | None = None, *, env: dict[str, str] | None = None,
                 stderr: IO[bytes] | int | None = subprocess.DEVNULL, framing: str = "ndjson",
                 on_notification: Callable[[dict[str, Any]], None] | None = None,
                 on_message: Callable[[bytes], None] | None = None, new_session: bool = False) -> None:
        self.argv = list(argv or daemon_argv())
        self.framing = framing
        # new_session: out of the terminal's process group, so Ctrl-C at an interactive
        # client (sidecar shell) reaches only the client, not the daemon
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=stderr, env=env, start_new_session=new_session)
        self.notifications: queue.Queue[dict[str, Any]] = queue.Queue()
        #: every message that arrived without a waiting caller (batches, id-less errors, ...)
        self.unrouted: queue.Queue[Any] = queue.Queue()
        self.on_notification = on_notification
        self.on_message = on_message
        self.garbage: list[bytes] = []  # anything on stdout that was not a JSON-RPC message
        self._ids = itertools.count(1)
        self._waiting: dict[Any, queue.Queue[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name="sidecar-client-reader", daemon=True)
        self._reader.start()

    # ---- sending --------------------------------------------------------------

    def send_bytes(self, payload: bytes, *, raw: bool = False) -> None:
        """Send one message payload (framed for the session), or raw bytes as they are."""
        assert self.proc.stdin is not None
        data = payload if raw else frame(payload, CONTENT_LENGTH if self.framing == CONTENT_LENGTH else None)
        with self._write_lock:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()

    def send(self, message: Any) -> None:
        self.send_bytes(msgspec.json.encode(message))

    def notify(self, method: str, params: Any = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)

    def call(self, method: str, params: Any = None, *, timeout: float = 30.0, id: Any = None) -> dict[str, Any]:
        """Send a request and return the whole response object."""
        request_id = next(self._ids) if id is None else id
        waiter = self.expect(request_id)
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)
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
            self._waiting[_key(request_id)] = waiter
        return waiter

    def wait(self, request_id: Any, waiter: queue.Queue[dict[str, Any]], timeout: float = 30.0) -> dict[str, Any]:
        try:
            return waiter.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no response to request {request_id!r} within {timeout} s") from None
        finally:
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

    # ---- reading --------------------------------------------------------------

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for item in read_frames(self.proc.stdout.fileno()):
            if isinstance(item, FrameError):
                self.garbage.append(repr(item).encode())
            else:
                self._route(item)
        self.unrouted.put(None)  # end of stream marker
        self.notifications.put({"method": "$/eof"})

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
