"""SQL for voice conversations, their turns, and custom intent patterns (schema: 0007)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from sidecar.store.database import Database

NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
_JSON = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class ConversationRow:
    id: str
    language: str
    agent: str | None
    chat_conversation_id: str | None
    pending: str | None  # JSON
    status: str
    created_at: str
    updated_at: str
    turn_count: int


@dataclass(frozen=True, slots=True)
class TurnRow:
    position: int
    role: str
    text: str
    language: str
    intent: str | None
    slots: str  # JSON
    audio_path: str | None
    created_at: str


@dataclass(frozen=True, slots=True)
class PatternRow:
    id: str
    intent: str
    language: str
    template: str
    slots: str  # JSON
    created_at: str
    updated_at: str


_C = ("c.id, c.language, c.agent, c.chat_conversation_id, c.pending, c.status, c.created_at, c.updated_at, "
      "(SELECT count(*) FROM voice_turns t WHERE t.conversation_id = c.id)")
_T = "position, role, text, language, intent, slots, audio_path, created_at"
_P = "id, intent, language, template, slots, created_at, updated_at"


class VoiceStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ---- conversations ---------------------------------------------------------------------------------

    async def create_conversation(self, conv_id: str, language: str, agent: str | None) -> ConversationRow:
        def run(conn: Any) -> ConversationRow:
            conn.execute("INSERT INTO voice_conversations (id, language, agent) VALUES (?, ?, ?)",
                         (conv_id, language, agent))
            return self._conversation(conn, conv_id)  # type: ignore[return-value]
        return await self.db.write(run)

    async def get_conversation(self, conv_id: str) -> ConversationRow | None:
        return await self.db.read(lambda conn: self._conversation(conn, conv_id))

    @staticmethod
    def _conversation(conn: Any, conv_id: str) -> ConversationRow | None:
        row = conn.execute(f"SELECT {_C} FROM voice_conversations c WHERE c.id = ?", (conv_id,)).fetchone()
        return ConversationRow(*row) if row else None

    async def list_conversations(self, status: str | None, limit: int, offset: int) -> list[ConversationRow]:
        def run(conn: Any) -> list[ConversationRow]:
            rows = conn.execute(
                f"SELECT {_C} FROM voice_conversations c WHERE (?1 IS NULL OR c.status = ?1) "
                "ORDER BY c.updated_at DESC, c.pk DESC LIMIT ?2 OFFSET ?3", (status, limit, offset)).fetchall()
            return [ConversationRow(*r) for r in rows]
        return await self.db.read(run)

    async def update_state(self, conv_id: str, *, language: str | None = None, pending: Any = ...,
                           agent: str | None = None, chat_conversation_id: str | None = None,
                           status: str | None = None) -> None:
        """Change what is given (`pending=None` clears it; leave it out to keep it)."""
        pending_json = None if pending is ... or pending is None else _JSON.encode(pending).decode()

        def run(conn: Any) -> None:
            conn.execute(
                "UPDATE voice_conversations SET language = coalesce(?2, language), agent = coalesce(?3, agent), "
                "chat_conversation_id = coalesce(?4, chat_conversation_id), status = coalesce(?5, status), "
                f"pending = CASE WHEN ?6 THEN ?7 ELSE pending END, updated_at = {NOW} WHERE id = ?1",
                (conv_id, language, agent, chat_conversation_id, status, pending is not ..., pending_json))
        await self.db.write(run)

    async def add_turns(self, conv_id: str, turns: list[dict[str, Any]]) -> None:
        """Append turns (role, text, language, intent, slots, audio_path) in order."""
        def run(conn: Any) -> None:
            (pos,) = conn.execute("SELECT coalesce(max(position), -1) FROM voice_turns WHERE conversation_id = ?",
                                  (conv_id,)).fetchone()
            for t in turns:
                pos += 1
                conn.execute(
                    "INSERT INTO voice_turns (conversation_id, position, role, text, language, intent, slots, "
                    "audio_path) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (conv_id, pos, t["role"], t["text"], t.get("language", "en"), t.get("intent"),
                     _JSON.encode(t.get("slots") or {}).decode(), t.get("audio_path")))
            conn.execute(f"UPDATE voice_conversations SET updated_at = {NOW} WHERE id = ?", (conv_id,))
        await self.db.write(run)

    async def turns(self, conv_id: str, limit: int = 1000) -> list[TurnRow]:
        return await self.db.read(lambda conn: [TurnRow(*r) for r in conn.execute(
            f"SELECT {_T} FROM voice_turns WHERE conversation_id = ? ORDER BY position LIMIT ?", (conv_id, limit))])

    # ---- patterns ---------------------------------------------------------------------------------------

    async def create_pattern(self, pid: str, intent: str, language: str, template: str, slots: dict[str, Any]) -> PatternRow:
        def run(conn: Any) -> PatternRow:
            conn.execute("INSERT INTO voice_patterns (id, intent, language, template, slots) VALUES (?, ?, ?, ?, ?)",
                         (pid, intent, language, template, _JSON.encode(slots).decode()))
            return self._pattern(conn, pid)  # type: ignore[return-value]
        return await self.db.write(run)

    async def update_pattern(self, pid: str, intent: str | None, language: str | None, template: str | None,
                             slots: dict[str, Any] | None) -> PatternRow | None:
        def run(conn: Any) -> PatternRow | None:
            conn.execute(
                "UPDATE voice_patterns SET intent = coalesce(?2, intent), language = coalesce(?3, language), "
                f"template = coalesce(?4, template), slots = coalesce(?5, slots), updated_at = {NOW} WHERE id = ?1",
                (pid, intent, language, template, None if slots is None else _JSON.encode(slots).decode()))
            return self._pattern(conn, pid)
        return await self.db.write(run)

    async def delete_pattern(self, pid: str) -> bool:
        def run(conn: Any) -> bool:
            conn.execute("DELETE FROM voice_patterns WHERE id = ?", (pid,))
            return conn.changes() > 0
        return await self.db.write(run)

    async def get_pattern(self, pid: str) -> PatternRow | None:
        return await self.db.read(lambda conn: self._pattern(conn, pid))

    async def patterns(self) -> list[PatternRow]:
        return await self.db.read(lambda conn: [PatternRow(*r) for r in conn.execute(
            f"SELECT {_P} FROM voice_patterns ORDER BY pk")])

    @staticmethod
    def _pattern(conn: Any, pid: str) -> PatternRow | None:
        row = conn.execute(f"SELECT {_P} FROM voice_patterns WHERE id = ?", (pid,)).fetchone()
        return PatternRow(*row) if row else None
