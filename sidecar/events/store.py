"""SQL for the event bus's durable log (table event_log, migration 0004)."""

from __future__ import annotations

from collections.abc import Sequence

import apsw
import msgspec

from sidecar.store.database import Database

#: the largest integer SQLite stores (and binds)
SQLITE_MAX_INT = 2**63 - 1


class LogRow(msgspec.Struct, frozen=True):
    seq: int
    topic: str
    payload: str
    time: str


class EventStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def last_seq_now(self) -> int:
        """At start-up, before serving (blocking)."""
        return int(self.db.run_now(lambda conn: conn.execute("SELECT coalesce(max(seq), 0) FROM event_log")
                                   .fetchone()[0]))

    async def append(self, rows: Sequence[tuple[int, str, str, str]]) -> None:
        await self.db.execute_many("INSERT OR IGNORE INTO event_log (seq, topic, payload, time) VALUES (?, ?, ?, ?)",
                                   rows)

    async def after(self, seq: int, limit: int) -> list[LogRow]:
        # SQLite integers are 64-bit: a cursor past them (a client's 2**64) would not bind;
        # no seq is larger, so the answer is the same
        seq = min(seq, SQLITE_MAX_INT)
        return await self.db.fetch_all("SELECT seq, topic, payload, time FROM event_log WHERE seq > ? "
                                       "ORDER BY seq LIMIT ?", (seq, limit), as_type=LogRow)

    async def prune(self, keep: int, older_than: str) -> int:
        """Drop all but the newest `keep` events, and any before `older_than` (ISO time)."""
        def work(conn: apsw.Connection) -> int:
            before = conn.total_changes()
            conn.execute("DELETE FROM event_log WHERE seq <= (SELECT coalesce(max(seq), 0) FROM event_log) - ?",
                         (keep,))
            conn.execute("DELETE FROM event_log WHERE time < ?", (older_than,))
            return conn.total_changes() - before
        return await self.db.write(work)
