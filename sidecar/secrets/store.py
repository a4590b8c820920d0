"""SQL for the `secrets` table. It only ever sees ciphertext."""

from __future__ import annotations

import msgspec

from sidecar.store.database import Database


class SecretRow(msgspec.Struct, frozen=True):
    name: str
    nonce: bytes
    ciphertext: bytes
    key_id: str
    created_at: str
    updated_at: str


_COLUMNS = "name, nonce, ciphertext, key_id, created_at, updated_at"
_SELECT = f"SELECT {_COLUMNS} FROM secrets"


class SecretsStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def put(self, name: str, nonce: bytes, ciphertext: bytes, key_id: str) -> SecretRow:
        (row,) = await self.db.execute_returning(
            "INSERT INTO secrets (name, nonce, ciphertext, key_id) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET nonce = excluded.nonce, "
            "ciphertext = excluded.ciphertext, key_id = excluded.key_id, "
            f"updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') RETURNING {_COLUMNS}",
            (name, nonce, ciphertext, key_id), as_type=SecretRow)
        return row

    async def get(self, name: str) -> SecretRow | None:
        return await self.db.fetch_one(f"{_SELECT} WHERE name = ?", (name,), as_type=SecretRow)

    async def delete(self, name: str) -> bool:
        return await self.db.execute("DELETE FROM secrets WHERE name = ?", (name,)) > 0

    async def list(self) -> list[SecretRow]:
        return await self.db.fetch_all(f"{_SELECT} ORDER BY name", as_type=SecretRow)
