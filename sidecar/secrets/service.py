"""Secrets encrypted at rest with AES-256-GCM; the value is bound to its name.

Other capabilities call `reveal(name)` to use a secret (an API key, a password); nothing
over RPC ever returns a value, and no log line or error message contains one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import anyio

from sidecar.errors import NotFound, Unavailable
from sidecar.secrets.keys import KeyProvider, KeyUnavailable, key_id
from sidecar.secrets.store import SecretRow, SecretsStore

log = logging.getLogger("sidecar.secrets")

NONCE_BYTES = 12


@dataclass(frozen=True, slots=True)
class SecretInfo:
    name: str
    created_at: str
    updated_at: str


class SecretService:
    def __init__(self, store: SecretsStore, choose_provider: Callable[[], KeyProvider]) -> None:
        self.store = store
        self._choose_provider = choose_provider
        self._provider: KeyProvider | None = None
        self._aead = None
        self._key_id = ""
        self._lock = anyio.Lock()

    async def key_backend(self) -> str:
        """Where the key lives ("keyring" or "file")."""
        async with self._lock:
            return (await self._provider_now()).name

    async def _provider_now(self) -> KeyProvider:
        """Chosen on first use, in a worker thread: probing the OS keyring imports `keyring`
        (slow) and may talk to a keyring daemon over D-Bus. Call with the lock held."""
        if self._provider is None:
            self._provider = await anyio.to_thread.run_sync(self._choose_provider)
        return self._provider

    async def _cipher(self):  # type: ignore[no-untyped-def]
        """The AES-GCM cipher, made on first use (keyring and cryptography load lazily)."""
        async with self._lock:
            if self._aead is None:
                provider = await self._provider_now()
                try:
                    self._aead, self._key_id = await anyio.to_thread.run_sync(_make_cipher, provider)
                except KeyUnavailable as exc:
                    raise Unavailable(f"the secrets key is unavailable: {exc}") from None
            return self._aead

    async def set(self, name: str, value: str) -> SecretInfo:
        aead = await self._cipher()
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = aead.encrypt(nonce, value.encode("utf-8"), name.encode("utf-8"))
        row = await self.store.put(name, nonce, ciphertext, self._key_id)
        log.info("secret %s stored", name)
        return _info(row)

    async def reveal(self, name: str) -> str:
        row = await self.store.get(name)
        if row is None:
            raise NotFound(f"no secret named {name}", name=name)
        aead = await self._cipher()
        if row.key_id != self._key_id:
            raise Unavailable(f"secret {name} was encrypted with another key", name=name)
        from cryptography.exceptions import InvalidTag

        try:
            return aead.decrypt(row.nonce, row.ciphertext, name.encode("utf-8")).decode("utf-8")
        except InvalidTag:
            raise Unavailable(f"secret {name} failed its integrity check", name=name) from None

    async def delete(self, name: str) -> None:
        if not await self.store.delete(name):
            raise NotFound(f"no secret named {name}", name=name)
        log.info("secret %s deleted", name)

    async def list(self) -> list[SecretInfo]:
        return [_info(row) for row in await self.store.list()]


def _make_cipher(provider: KeyProvider):  # type: ignore[no-untyped-def]
    """Load the key and build the cipher (in a worker thread: importing cryptography is slow)."""
    key = provider.load_or_create()
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(key), key_id(key)


def _info(row: SecretRow) -> SecretInfo:
    return SecretInfo(row.name, row.created_at, row.updated_at)
