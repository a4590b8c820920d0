"""SQL for the `settings` table: values stored as JSON text, keyed by setting key."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import apsw
import msgspec

from sidecar.store.database import Database

log = logging.getLogger("sidecar.settings")

_UPSERT = ("INSERT INTO settings (key, value) VALUES (?, ?) "
           "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
           "updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')")


def _encode(value: Any) -> str:
    return msgspec.json.encode(value).decode()


class SettingsStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def load_all_now(self) -> dict[str, Any]:
        """Read every stored value (at start-up, before the event loop serves anyone)."""
        def run(conn: apsw.Connection) -> list[tuple[str, str]]:
            return conn.execute("SELECT key, value FROM settings").fetchall()

        values: dict[str, Any] = {}
        for key, value in self.db.run_now(run):
            try:
                values[key] = msgspec.json.decode(value)
            except msgspec.DecodeError:  # a damaged row must not stop start-up
                log.warning("stored value of %s is not valid JSON; using the default", key)
        return values

    async def put(self, key: str, value: Any) -> None:
        await self.db.execute(_UPSERT, (key, _encode(value)))

    async def put_many(self, values: dict[str, Any], deleted: Iterable[str] = ()) -> None:
        """Store `values` and remove `deleted`, all in one transaction."""
        puts = [(key, _encode(value)) for key, value in values.items()]
        gone = [(key,) for key in deleted]

        def run(conn: apsw.Connection) -> None:
            conn.executemany(_UPSERT, puts)
            conn.executemany("DELETE FROM settings WHERE key = ?", gone)
        await self.db.write(run)

    async def delete(self, key: str) -> None:
        await self.db.execute("DELETE FROM settings WHERE key = ?", (key,))
