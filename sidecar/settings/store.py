"""SQL for the `settings` table: values stored as JSON text, keyed by setting key."""

from __future__ import annotations

import logging
from typing import Any

import apsw
import msgspec

from sidecar.store.database import Database

log = logging.getLogger("sidecar.settings")


class SettingsStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def load_all_now(self) -> dict[str, Any]:
        """Read every stored value (at start-up, before the event loop serves anyone)."""
        values: dict[str, Any] = {}
        for key, value in self.db.writer.execute("SELECT key, value FROM settings").fetchall():
            try:
                values[key] = msgspec.json.decode(value)
            except msgspec.DecodeError:  # a damaged row must not stop start-up
                log.warning("stored value of %s is not valid JSON; using the default", key)
        return values

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
