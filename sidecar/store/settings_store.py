"""SQL for the `settings` table: values stored as JSON text, keyed by setting key."""

from __future__ import annotations

from typing import Any

import apsw
import msgspec

from sidecar.store.database import Database


class SettingsStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def load_all_now(self) -> dict[str, Any]:
        """Read every stored value (at start-up, before the event loop serves anyone)."""
        rows = self.db.writer.execute("SELECT key, value FROM settings").fetchall()
        return {key: msgspec.json.decode(value) for key, value in rows}

    async def put(self, key: str, value: Any) -> None:
        encoded = msgspec.json.encode(value).decode()

        def run(conn: apsw.Connection) -> None:
            conn.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
                "updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
                (key, encoded),
            )
        await self.db.write(run)

    async def delete(self, key: str) -> None:
        await self.db.write(lambda conn: conn.execute("DELETE FROM settings WHERE key = ?", (key,)))
