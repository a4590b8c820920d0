"""SQL for plugins: installed plugins and grants, kv, config values, audit rows."""

from __future__ import annotations

from collections.abc import Iterable

import apsw
import msgspec

from sidecar.store.database import Database


class PluginRow(msgspec.Struct, frozen=True):
    id: str
    version: str
    enabled: int
    granted: str
    trusted: int
    source_path: str | None
    installed_at: str
    updated_at: str


class AuditRecord(msgspec.Struct, frozen=True):
    plugin: str
    operation: str
    target: str
    allowed: int
    at: str


_COLUMNS = "id, version, enabled, granted, trusted, source_path, installed_at, updated_at"
_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"


class PluginStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # plugins -----------------------------------------------------------------------------

    async def all(self) -> list[PluginRow]:
        return await self.db.fetch_all(f"SELECT {_COLUMNS} FROM plugins ORDER BY id", as_type=PluginRow)

    async def get(self, plugin: str) -> PluginRow | None:
        return await self.db.fetch_one(f"SELECT {_COLUMNS} FROM plugins WHERE id = ?", (plugin,), as_type=PluginRow)

    async def upsert(self, plugin: str, version: str, source_path: str | None) -> None:
        await self.db.execute(
            "INSERT INTO plugins (id, version, source_path) VALUES (?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET version = excluded.version, "
            f"source_path = excluded.source_path, updated_at = {_NOW}",
            (plugin, version, source_path))

    async def set_version(self, plugin: str, version: str) -> None:
        await self.db.execute(f"UPDATE plugins SET version = ?, updated_at = {_NOW} WHERE id = ?", (version, plugin))

    async def set_enabled(self, plugin: str, enabled: bool) -> None:
        await self.db.execute(f"UPDATE plugins SET enabled = ?, updated_at = {_NOW} WHERE id = ?",
                              (int(enabled), plugin))

    async def set_grant(self, plugin: str, granted_json: str, trusted: bool) -> None:
        await self.db.execute(f"UPDATE plugins SET granted = ?, trusted = ?, updated_at = {_NOW} WHERE id = ?",
                              (granted_json, int(trusted), plugin))

    async def delete(self, plugin: str) -> bool:
        return await self.db.execute("DELETE FROM plugins WHERE id = ?", (plugin,)) > 0

    # kv ----------------------------------------------------------------------------------

    async def kv_get(self, plugin: str, key: str) -> bytes | None:
        value = await self.db.fetch_value("SELECT value FROM plugin_kv WHERE plugin = ? AND key = ?", (plugin, key))
        return bytes(value) if value is not None else None

    async def kv_set(self, plugin: str, key: str, value: bytes, quota: int) -> bool:
        """Store unless the plugin's keys and values would then exceed `quota` bytes."""
        def run(conn: apsw.Connection) -> bool:
            (used,) = conn.execute(
                "SELECT coalesce(sum(length(CAST(key AS BLOB)) + length(value)), 0) FROM plugin_kv "
                "WHERE plugin = ? AND key != ?", (plugin, key)).fetchone()
            if used + len(key.encode()) + len(value) > quota:
                return False
            conn.execute("INSERT INTO plugin_kv (plugin, key, value) VALUES (?, ?, ?) "
                         "ON CONFLICT (plugin, key) DO UPDATE SET value = excluded.value", (plugin, key, value))
            return True
        return await self.db.write(run)

    async def kv_delete(self, plugin: str, key: str) -> bool:
        return await self.db.execute("DELETE FROM plugin_kv WHERE plugin = ? AND key = ?", (plugin, key)) > 0

    # config ------------------------------------------------------------------------------

    async def config_get(self, plugin: str, key: str) -> str | None:
        value = await self.db.fetch_value("SELECT value FROM plugin_config WHERE plugin = ? AND key = ?",
                                          (plugin, key))
        return None if value is None else str(value)

    async def config_set(self, plugin: str, values: dict[str, str | None]) -> None:
        def run(conn: apsw.Connection) -> None:
            for key, value in values.items():
                if value is None:
                    conn.execute("DELETE FROM plugin_config WHERE plugin = ? AND key = ?", (plugin, key))
                else:
                    conn.execute("INSERT INTO plugin_config (plugin, key, value) VALUES (?, ?, ?) "
                                 "ON CONFLICT (plugin, key) DO UPDATE SET value = excluded.value",
                                 (plugin, key, value))
        await self.db.write(run)

    # audit -------------------------------------------------------------------------------

    async def audit(self, rows: Iterable[tuple[str, str, str, bool, str]]) -> None:
        """(plugin, operation, target, allowed, at ISO-8601) rows, in one transaction."""
        await self.db.execute_many(
            "INSERT INTO plugin_audit (plugin, operation, target, allowed, at) VALUES (?, ?, ?, ?, ?)",
            [(p, op, target, int(allowed), at) for p, op, target, allowed, at in rows])

    async def audit_rows(self, plugin: str | None, since: str | None, limit: int) -> list[AuditRecord]:
        return await self.db.fetch_all(
            "SELECT plugin, operation, target, allowed, at FROM plugin_audit "
            "WHERE (?1 IS NULL OR plugin = ?1) AND (?2 IS NULL OR at >= ?2) ORDER BY id DESC LIMIT ?3",
            (plugin, since, limit), as_type=AuditRecord)
