"""An in-process daemon for fast handler tests: the real Session, router and capabilities
over memory streams, no subprocess.

    async with in_process(tmp_path) as daemon:
        assert await daemon.call("system/ping") == {"pong": True}

Subprocess tests (tests/conftest.py) stay for what needs a real process: the lifecycle,
signals, stdio purity, crash safety.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import msgspec

from sidecar.app import CAPABILITIES, build, running
from sidecar.capability import Capability
from sidecar.config import DaemonConfig
from sidecar.notifier import Notifier
from sidecar.server.session import Session, SessionConfig
from sidecar.store.database import Database
from sidecar.system.metrics import Metrics


class RpcError(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("message"))
        self.error = error
        self.code: int = error["code"]
        self.kind: str | None = (error.get("data") or {}).get("kind")


class _MemoryReader:
    def __init__(self) -> None:
        self.send, self._receive = anyio.create_memory_object_stream[bytes](math.inf)

    async def read(self) -> bytes:
        try:
            return await self._receive.receive()
        except anyio.EndOfStream:
            return b""

    def restore(self) -> None:
        pass


class InProcessDaemon:
    def __init__(self, session: Session, reader: _MemoryReader, platform: Any) -> None:
        self.session = session
        self.platform = platform
        self._reader = reader
        self._next_id = 0
        self._answers: dict[Any, Any] = {}
        self._arrived: dict[Any, anyio.Event] = {}
        self.notifications: list[dict[str, Any]] = []
        self._decode = msgspec.json.Decoder().decode

    async def write(self, data: bytes) -> None:
        for line in data.splitlines():
            message = self._decode(line)
            for item in message if isinstance(message, list) else [message]:
                if "method" in item:
                    self.notifications.append(item)
                    continue
                self._answers[item.get("id")] = item
                event = self._arrived.get(item.get("id"))
                if event is not None:
                    event.set()

    def send_raw(self, data: bytes) -> None:
        self._reader.send.send_nowait(data)

    def send(self, message: Any) -> None:
        self.send_raw(msgspec.json.encode(message) + b"\n")

    async def request(self, method: str, params: Any = None, *, timeout: float = 10.0) -> dict[str, Any]:
        """The whole response object."""
        self._next_id += 1
        request_id = self._next_id
        self._arrived[request_id] = event = anyio.Event()
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)
        with anyio.fail_after(timeout):
            await event.wait()
        del self._arrived[request_id]
        return self._answers.pop(request_id)  # type: ignore[no-any-return]

    async def call(self, method: str, params: Any = None, *, timeout: float = 10.0) -> Any:
        """The result; RpcError for an error answer."""
        response = await self.request(method, params, timeout=timeout)
        if "error" in response:
            raise RpcError(response["error"])
        return response["result"]

    def notify(self, method: str, params: Any = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)


@asynccontextmanager
async def in_process(data_dir: Path, *, debug_methods: bool = True, initialize: bool = True,
                     session_config: SessionConfig | None = None,
                     extra: tuple[type[Capability], ...] = ()) -> AsyncIterator[InProcessDaemon]:
    """A daemon on `data_dir`, served by a task of the caller's event loop."""
    config = DaemonConfig(data_dir=data_dir, watch_parent=False, secrets_backend="file",
                          debug_methods=debug_methods)
    data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(config.database_path, config.migrations_dir)
    db.open()
    try:
        notifier = Notifier()
        platform, capabilities, router = build(config, db, notifier, CAPABILITIES + extra)
        reader = _MemoryReader()
        holder: list[InProcessDaemon] = []

        async def write(data: bytes) -> None:
            await holder[0].write(data)

        session = Session(router, reader, write, session_config or SessionConfig(), platform.require(Metrics),
                          notifier=notifier)
        daemon = InProcessDaemon(session, reader, platform)
        holder.append(daemon)
        async with running(platform, capabilities):
            async with anyio.create_task_group() as tg:
                tg.start_soon(session.serve)
                if initialize:
                    await daemon.call("initialize", {"clientInfo": {"name": "harness"}})
                    daemon.notify("initialized")
                try:
                    yield daemon
                finally:
                    reader.send.close()  # end of input: the session winds down
    finally:
        db.close()
