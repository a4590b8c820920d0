"""SQL for the `secrets` table. It only ever sees ciphertext."""

from __future__ import annotations

from dataclasses import dataclass

import apsw

from sidecar.store.database import Database


@dataclass(frozen=True, slots=True)
class SecretRow:
    name: str
    nonce: bytes
    ciphertext: bytes
    key_id: str
    created_at: str
    updated_at: str


_COLUMNS = "name, nonce, ciphertext, key_id, created_at, updated_at"


class SecretsStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def put(self, name: str, nonce: bytes, ciphertext: bytes, key_id: str) -> SecretRow:
        def run(conn: apsw.Connection) -> SecretRow:
            conn.execute(
                "INSERT INTO secrets (name, nonce, ciphertext, key_id) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET nonce = excluded.nonce, "
                "ciphertext = excluded.ciphertext, key_id = excluded.key_id, "
                "updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
                (name, nonce, ciphertext, key_id),
            )
            row = conn.execute(f"SELECT {_COLUMNS} FROM secrets WHERE name = ?", (name,)).fetchone()
            return SecretRow(*row)
        return await self.db.write(run)

    async def get(self, name: str) -> SecretRow | None:
        def run(conn: apsw.Connection) -> SecretRow | None:
            row = conn.execute(f"SELECT {_COLUMNS} FROM secrets WHERE name = ?", (name,)).fetchone()
            return SecretRow(*row) if row else None
        return await self.db.read(run)

    async def delete(self, name: str) -> bool:
        def run(conn: apsw.Connection) -> bool:
            conn.execute("DELETE FROM secrets WHERE name = ?", (name,))
            return conn.changes() > 0
        return await self.db.write(run)

    async def list(self) -> list[SecretRow]:
        def run(conn: apsw.Connection) -> list[SecretRow]:
            return [SecretRow(*row) for row in conn.execute(f"SELECT {_COLUMNS} FROM secrets ORDER BY name")]
        return await self.db.read(run)
