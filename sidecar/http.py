"""The daemon's one shared `httpx.AsyncClient`, made on first use.

httpx costs ~25 ms to import and a client ~40 ms to make (it loads the CA bundle into an SSL
context): paid by the first request that needs HTTP, never by start-up. Capabilities (chat's
providers, workflow `http` steps) ask for the client with `await platform.http.client()`;
the composition root closes it after every capability's lifespan has ended.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    import httpx


class SharedHttp:
    def __init__(self, **client_options: Any) -> None:
        self._options = client_options
        self._client: httpx.AsyncClient | None = None
        self._lock: anyio.Lock | None = None
        self._closed = False

    async def client(self) -> httpx.AsyncClient:
        if self._client is not None:
            return self._client
        if self._closed:
            raise RuntimeError("the daemon is shutting down")
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            if self._client is None:
                self._client = await anyio.to_thread.run_sync(self._make)
        return self._client

    def _make(self) -> httpx.AsyncClient:
        import httpx

        options = {"follow_redirects": False,
                   "limits": httpx.Limits(max_connections=64, max_keepalive_connections=16),
                   **self._options}
        return httpx.AsyncClient(**options)

    @property
    def started(self) -> bool:
        return self._client is not None

    @property
    def current(self) -> httpx.AsyncClient | None:
        """The client if one was made, without making one."""
        return self._client

    async def aclose(self) -> None:
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            with anyio.CancelScope(shield=True):
                await client.aclose()
