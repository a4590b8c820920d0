"""Projects, their files, conversations and messages; full-text search over all three.

Chat (another capability) calls this in-process as replies stream:

    mid = await projects.begin_message(conversation_id, "assistant", model="...")  # status "streaming"
    await projects.update_message(mid, parts_so_far)          # optional checkpoints
    await projects.finish_message(mid, parts, usage, status="complete")  # or "cancelled" / "error"

Each call is one transaction, so a crash leaves the last checkpoint as a whole row; at
start-up `recover()` marks every message still "streaming" as "incomplete".

Messages reach the full-text indexes in batches: a write queues them (in its own
transaction), `run_indexer` indexes the queue a moment later, and a search indexes whatever
is still queued before it looks, so it never misses a finished message. A message is
indexed once it is no longer streaming, so checkpoints never rewrite index rows.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
import secrets
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import apsw
import msgspec

from protocol.projects import ContentPart, TextPart, ToolResultPart, Usage
from sidecar.errors import Conflict, InvalidValue, NotFound, ResourceExhausted, SidecarError, Unavailable
from sidecar.projects import store
from sidecar.projects.store import ConversationRow, FileRow, MessageRow, ProjectRow
from sidecar.store.database import Database

log = logging.getLogger("sidecar.projects")

ROLES = ("system", "user", "assistant", "tool")
#: queued messages indexed per write transaction (a few tens of ms each)
INDEX_BATCH = 2000
#: how long the background indexer lets writes gather before indexing them
INDEX_DELAY_SECONDS = 0.25
FINAL_STATUSES = ("complete", "cancelled", "error")
#: a message write this size or less runs on the loop when the writer is free (`Database.write`'s
#: `small`): its transaction takes ~0.1 ms, less than the hand-off to the writer thread
SMALL_WRITE_CHARS = 64 * 1024
_PARTS = msgspec.json.Decoder(list[ContentPart])
_ENCODE = msgspec.json.Encoder()
_DRIVE = re.compile(r"^[A-Za-z]:")
_LANGUAGES = {
    "py": "python", "js": "javascript", "mjs": "javascript", "ts": "typescript", "tsx": "typescript",
    "jsx": "javascript", "rs": "rust", "go": "go", "java": "java", "kt": "kotlin", "c": "c", "h": "c",
    "cpp": "cpp", "cc": "cpp", "hpp": "cpp", "cs": "csharp", "rb": "ruby", "php": "php", "swift": "swift",
    "sql": "sql", "sh": "shell", "bash": "shell", "html": "html", "css": "css", "scss": "scss", "json": "json",
    "yaml": "yaml", "yml": "yaml", "toml": "toml", "md": "markdown", "txt": "text", "xml": "xml", "vue": "vue",
    "svelte": "svelte",
}


@dataclass(frozen=True, slots=True)
class Limits:
    max_file_bytes: int
    max_project_bytes: int


@dataclass(frozen=True, slots=True)
class ProjectDetail:
    project: ProjectRow
    files: list[FileRow]
    conversations: list[ConversationRow]
    total_bytes: int


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Any]
    next_cursor: str | None


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


def normalise_path(path: str, where: str = "$.params.path") -> str:
    """`a\\b/./c.txt` -> `a/b/c.txt` (NFC); InvalidValue for `..`, absolute paths, NUL and control
    characters, or nothing left."""
    if "\x00" in path:
        raise InvalidValue("a file path cannot contain NUL", where)
    if any(ord(ch) < 0x20 for ch in path):
        raise InvalidValue("a file path cannot contain control characters", where)
    text = unicodedata.normalize("NFC", path).replace("\\", "/")
    if text.startswith("/") or _DRIVE.match(text):
        raise InvalidValue(f"{path!r} is absolute: give a path relative to the project", where)
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidValue(f"{path!r} goes up with '..': give a path inside the project", where)
    if not parts:
        raise InvalidValue(f"{path!r} names no file", where)
    return "/".join(parts)


def parts_text(parts: Sequence[ContentPart]) -> str:
    """The searchable text of a message: its text parts and tool results."""
    out = []
    for part in parts:
        if isinstance(part, TextPart):
            out.append(part.text)
        elif isinstance(part, ToolResultPart) and part.content:
            out.append(part.content)
    return "\n".join(out)


def decode_parts(content: str) -> list[ContentPart]:
    return _PARTS.decode(content)


def _small(content: str, text: str) -> bool:
    return len(content) + len(text) <= SMALL_WRITE_CHARS


def _offset(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        value = int(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode())
    except (ValueError, binascii.Error, UnicodeDecodeError):
        value = -1
    if value < 0:
        raise InvalidValue("cursor is not one this method returned", "$.params.cursor")
    return value


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(str(offset).encode()).decode().rstrip("=")


def _page(rows: list[Any], offset: int, limit: int) -> Page:
    """`rows` was fetched with limit + 1: the extra row says there is a next page."""
    if len(rows) > limit:
        return Page(rows[:limit], _cursor(offset + limit))
    return Page(rows, None)


def _query(query: str) -> tuple[str, str] | None:
    if not query.strip():
        raise InvalidValue("query is empty: give one or more words to search for", "$.params.query")
    return store.fts_match(query)


def split_snippet(snippet: str) -> list[tuple[str, bool]]:
    """A snippet with \\x02 ... \\x03 around matches -> [(text, is_match), ...]."""
    out: list[tuple[str, bool]] = []
    inside = False
    for chunk in re.split("([\x02\x03])", snippet):
        if chunk == store.HIT_START:
            inside = True
        elif chunk == store.HIT_END:
            inside = False
        elif chunk:
            out.append((chunk, inside))
    return out


@dataclass(frozen=True, slots=True)
class OpenedTurn:
    """What `ProjectsService.open_turn` wrote: the conversation and the reply row's id."""
    conversation_id: str
    message_id: str


class ProjectsService:
    def __init__(self, db: Database, limits: Callable[[], Limits] | None = None) -> None:
        self.db = db
        self._limits = limits or (lambda: Limits(10 * 1024 * 1024, 100 * 1024 * 1024))
        self._queued: anyio.Event | None = None  # set by message writes while run_indexer runs

    # ---- start-up ----------------------------------------------------------------------------

    async def recover(self) -> int:
        """Mark messages left "streaming" by a daemon that died mid-reply as "incomplete"."""
        count = await self.db.write(store.mark_streaming_incomplete)
        if count:
            log.warning("%d message(s) were cut off mid-stream; marked incomplete", count)
        return count

    # ---- the message index -------------------------------------------------------------------

    async def index_pending(self) -> int:
        """Index every queued message that is no longer streaming, INDEX_BATCH per transaction;
        returns how many."""
        total = 0
        while True:
            done = await self.db.write(lambda c: store.index_unindexed(c, INDEX_BATCH))
            total += done
            if done < INDEX_BATCH:
                return total

    async def run_indexer(self) -> None:
        """Index queued messages a moment after they are written, until cancelled."""
        while True:
            self._queued = anyio.Event()
            try:
                await self.index_pending()
            except Exception:  # noqa: BLE001 - a search indexes what is left; keep going
                log.exception("messages could not be indexed")
            await self._queued.wait()
            await anyio.sleep(INDEX_DELAY_SECONDS)

    def _wrote_messages(self) -> None:
        if self._queued is not None:
            self._queued.set()

    # ---- projects ----------------------------------------------------------------------------

    async def create_project(self, name: str, description: str = "", project_type: str = "general",
                             active_agents: Sequence[str] = ()) -> ProjectRow:
        _check_name(name)
        agents = _ENCODE.encode(list(active_agents)).decode()
        return await self.db.write(lambda c: store.insert_project(c, new_id("p"), name.strip(), description,
                                                                  project_type, agents))

    async def get_project(self, project_id: str) -> ProjectDetail:
        def run(conn: apsw.Connection) -> ProjectDetail:
            project = self._project(conn, project_id)
            files = store.list_files(conn, project_id)
            conversations = store.list_conversations(conn, project_id, False, 0, -1)
            return ProjectDetail(project, files, conversations, sum(f.size for f in files))
        return await self.db.read(run)

    async def list_projects(self, cursor: str | None = None, limit: int = 50) -> Page:
        offset = _offset(cursor)
        rows = await self.db.read(lambda c: store.list_projects(c, offset, limit + 1))
        return _page(rows, offset, limit)

    async def update_project(self, project_id: str, name: str | None = None, description: str | None = None,
                             project_type: str | None = None, active_agents: Sequence[str] | None = None) -> ProjectRow:
        fields: dict[str, str] = {}
        if name is not None:
            _check_name(name)
            fields["name"] = name.strip()
        if description is not None:
            fields["description"] = description
        if project_type is not None:
            fields["project_type"] = project_type
        if active_agents is not None:
            fields["active_agents"] = _ENCODE.encode(list(active_agents)).decode()

        def run(conn: apsw.Connection) -> ProjectRow:
            if not store.update_project(conn, project_id, fields):
                raise _no_project(project_id)
            return self._project(conn, project_id)
        return await self.db.write(run)

    async def delete_project(self, project_id: str) -> None:
        """The project, its conversations, their messages and its files, in one transaction
        (foreign keys cascade)."""
        def run(conn: apsw.Connection) -> None:
            if not store.delete_project(conn, project_id):
                raise _no_project(project_id)
        await self.db.write(run)

    async def search_projects(self, query: str, cursor: str | None = None, limit: int = 20) -> Page:
        match = _query(query)
        offset = _offset(cursor)
        if match is None:
            return Page([], None)
        rows = await self.db.read(lambda c: store.search_projects(c, match[0], match[1], offset, limit + 1))
        return _page(rows, offset, limit)

    async def fork_project(self, project_id: str, name: str | None = None,
                           include_conversations: bool = False) -> ProjectDetail:
        def run(conn: apsw.Connection) -> str:
            source = self._project(conn, project_id)
            copy = store.insert_project(conn, new_id("p"), (name or f"{source.name} (fork)").strip(),
                                        source.description, source.project_type, source.active_agents,
                                        forked_from=source.id)
            store.copy_files(conn, source.id, copy.id)
            if include_conversations:
                store.copy_conversations(conn, source.id, copy.id)
            return copy.id
        if name is not None:
            _check_name(name)
        copy_id = await self.db.write(run)
        if include_conversations:
            self._wrote_messages()
        return await self.get_project(copy_id)

    async def save_project(self, project_id: str, files: Sequence[tuple[str, str | None, str | None]]) -> tuple[list[FileRow], list[str]]:
        """Replace the project's files with `files` ((path, text, base64) each) in one
        transaction; returns (the files now, the paths removed)."""
        limits = self._limits()
        prepared = {}
        total = 0
        for i, (path, text, b64) in enumerate(files):
            item = _prepare_file(path, text, b64, limits, f"$.params.files[{i}]")
            if item[0] in prepared:
                raise InvalidValue(f"{item[0]} is given twice", f"$.params.files[{i}].path")
            prepared[item[0]] = item
            total += item[3]
        if total > limits.max_project_bytes:
            raise ResourceExhausted(f"the files come to {total} bytes, over the project limit of "
                                    f"{limits.max_project_bytes} bytes (projects.maxProjectBytes)",
                                    limit=limits.max_project_bytes, size=total)

        def run(conn: apsw.Connection) -> tuple[list[FileRow], list[str]]:
            self._project(conn, project_id)
            existing = {f.path: f for f in store.list_files(conn, project_id)}
            removed = sorted(set(existing) - set(prepared))
            for path in removed:
                store.delete_file(conn, project_id, path)
            for path, text, data, size, digest, language in prepared.values():
                old = existing.get(path)
                if old is None or old.sha256 != digest or old.is_text != (text is not None):
                    store.put_file(conn, project_id, path, text, data, size, digest, language)
            store.touch_project(conn, project_id)
            return store.list_files(conn, project_id), removed
        return await self.db.write(run)

    # ---- files -------------------------------------------------------------------------------

    async def put_file(self, project_id: str, path: str, text: str | None = None, b64: str | None = None) -> FileRow:
        limits = self._limits()
        path, text, data, size, digest, language = _prepare_file(path, text, b64, limits, "$.params")

        def run(conn: apsw.Connection) -> FileRow:
            self._project(conn, project_id)
            others = store.project_bytes(conn, project_id, except_path=path)
            if others + size > limits.max_project_bytes:
                raise ResourceExhausted(
                    f"the project would hold {others + size} bytes, over its limit of {limits.max_project_bytes} "
                    "bytes (projects.maxProjectBytes)", limit=limits.max_project_bytes, size=others + size)
            row = store.put_file(conn, project_id, path, text, data, size, digest, language)
            store.touch_project(conn, project_id)
            return row
        return await self.db.write(run)

    async def get_file(self, project_id: str, path: str) -> tuple[FileRow, str | None, bytes | None]:
        path = normalise_path(path)

        def run(conn: apsw.Connection) -> tuple[FileRow, str | None, bytes | None]:
            found = store.get_file_content(conn, project_id, path)
            if found is None:
                self._project(conn, project_id)
                raise NotFound(f"project {project_id} has no file {path}", projectId=project_id, path=path)
            return found
        return await self.db.read(run)

    async def list_files(self, project_id: str, prefix: str = "", cursor: str | None = None,
                         limit: int = 200) -> Page:
        after = _decode_text_cursor(cursor) if cursor else ""

        def run(conn: apsw.Connection) -> list[FileRow]:
            self._project(conn, project_id)
            return store.list_files(conn, project_id, prefix, after, limit + 1)
        rows = await self.db.read(run)
        if len(rows) > limit:
            return Page(rows[:limit], _encode_text_cursor(rows[limit - 1].path))
        return Page(rows, None)

    async def delete_file(self, project_id: str, path: str) -> None:
        path = normalise_path(path)

        def run(conn: apsw.Connection) -> None:
            self._project(conn, project_id)
            if not store.delete_file(conn, project_id, path):
                raise NotFound(f"project {project_id} has no file {path}", projectId=project_id, path=path)
            store.touch_project(conn, project_id)
        await self.db.write(run)

    async def search_files(self, query: str, project_id: str | None = None, cursor: str | None = None,
                           limit: int = 20) -> Page:
        match = _query(query)
        offset = _offset(cursor)
        if match is None:
            return Page([], None)
        rows = await self.db.read(lambda c: store.search_files(c, match[0], match[1], project_id, offset, limit + 1))
        return _page(rows, offset, limit)

    # ---- conversations -----------------------------------------------------------------------

    async def create_conversation(self, project_id: str | None = None, agent: str = "",
                                  title: str = "") -> ConversationRow:
        def run(conn: apsw.Connection) -> ConversationRow:
            if project_id is not None:
                self._project(conn, project_id)
            return store.insert_conversation(conn, new_id("c"), project_id, agent, title)
        return await self.db.write(run)

    async def get_conversation(self, conversation_id: str, after_position: int = -1,
                               limit: int = 1000) -> tuple[ConversationRow, list[MessageRow], bool]:
        def run(conn: apsw.Connection) -> tuple[ConversationRow, list[MessageRow], bool]:
            conversation = self._conversation(conn, conversation_id)
            messages = store.list_messages(conn, conversation_id, after_position, limit + 1)
            return conversation, messages[:limit], len(messages) > limit
        return await self.db.read(run)

    async def list_conversations(self, project_id: str | None = None, unassigned: bool = False,
                                 cursor: str | None = None, limit: int = 50) -> Page:
        offset = _offset(cursor)

        def run(conn: apsw.Connection) -> list[ConversationRow]:
            if project_id is not None:
                self._project(conn, project_id)
            return store.list_conversations(conn, project_id, unassigned, offset, limit + 1)
        return _page(await self.db.read(run), offset, limit)

    async def rename_conversation(self, conversation_id: str, title: str) -> ConversationRow:
        def run(conn: apsw.Connection) -> ConversationRow:
            if not store.rename_conversation(conn, conversation_id, title):
                raise _no_conversation(conversation_id)
            return self._conversation(conn, conversation_id)
        return await self.db.write(run)

    async def delete_conversation(self, conversation_id: str) -> None:
        def run(conn: apsw.Connection) -> None:
            if not store.delete_conversation(conn, conversation_id):
                raise _no_conversation(conversation_id)
        await self.db.write(run)

    async def search_messages(self, query: str, project_id: str | None = None, cursor: str | None = None,
                              limit: int = 20) -> Page:
        match = _query(query)
        offset = _offset(cursor)
        if match is None:
            return Page([], None)

        def run(conn: apsw.Connection) -> list[tuple] | None:
            if store.has_unindexed(conn):
                return None  # index them first: a search must see every finished message
            return store.search_messages(conn, match[0], match[1], project_id, offset, limit + 1)
        rows = await self.db.read(run)
        if rows is None:
            await self.index_pending()
            rows = await self.db.read(lambda c: store.search_messages(c, match[0], match[1], project_id, offset,
                                                                      limit + 1))
        return _page(rows, offset, limit)

    # ---- messages (chat writes these as a reply streams) ---------------------------------------

    async def append_message(self, conversation_id: str, role: str, parts: Sequence[ContentPart],
                             model: str = "", usage: Usage | None = None) -> MessageRow:
        """A whole message at the end of the conversation, status "complete"."""
        return await self._insert(conversation_id, role, parts, model, usage, "complete")

    async def append_messages(self, conversation_id: str,
                              messages: Sequence[tuple[str, Sequence[ContentPart]]]) -> int:
        """Many whole messages ((role, parts) each) at the end of the conversation, in one
        transaction (imports, forks of a transcript); returns how many."""
        rows = []
        for i, (role, parts) in enumerate(messages):
            if role not in ROLES:
                raise InvalidValue(f"role must be one of {', '.join(ROLES)}", f"$.params.messages[{i}].role")
            rows.append((role, _ENCODE.encode(list(parts)).decode(), parts_text(parts)))

        def run(conn: apsw.Connection) -> int:
            for role, content, text in rows:
                if store.insert_message(conn, new_id("m"), conversation_id, role, content, text, "", 0, 0,
                                        "complete") is None:
                    raise _no_conversation(conversation_id)
            return len(rows)
        count = await self.db.write(run)
        self._wrote_messages()
        return count

    async def open_turn(self, *, conversation_id: str | None, project_id: str | None, agent: str, title: str,
                        message: str, model: str) -> OpenedTurn:
        """A chat turn's opening rows in ONE transaction: a new conversation (when
        `conversation_id` is None, in `project_id`), the user's message, and the "streaming"
        reply row the answer goes into. One transaction, not three: a failure leaves nothing
        behind, and chat writes it while its first provider request goes out, where each
        write's thread hop counts (~0.4 ms off the first token, bench/chat_bench.py). A typed
        error names what failed (not_found, conflict, unavailable); nothing is written then.
        The user's message reaches the search index with the reply's `finish_message`."""
        parts = [TextPart(message)]
        content, text = _ENCODE.encode(parts).decode(), parts_text(parts)
        reply_id = new_id("m")

        def run(conn: apsw.Connection) -> OpenedTurn:
            cid = conversation_id
            if cid is None:
                if project_id is not None and store.get_project(conn, project_id) is None:
                    raise NotFound(f"no project {project_id}", id=project_id, projectId=project_id)
                cid = store.insert_conversation(conn, new_id("c"), project_id, agent, title).id
            if store.insert_message(conn, new_id("m"), cid, "user", content, text, "", 0, 0, "complete") is None:
                raise NotFound(f"no conversation {cid}", id=cid, conversationId=cid)
            store.insert_message(conn, reply_id, cid, "assistant", "[]", "", model, 0, 0, "streaming")
            return OpenedTurn(cid, reply_id)

        try:
            return await self.db.write(run, small=_small(content, text))
        except SidecarError:
            raise
        except apsw.ConstraintError as exc:
            log.warning("the chat turn's rows broke a constraint: %s", exc)
            raise Conflict("the conversation could not be stored: the database refused the turn's rows "
                           "(a constraint failed)", conversationId=conversation_id) from exc
        except Exception as exc:  # noqa: BLE001 - the store closed, the disk full...: typed, and logged
            log.warning("the chat turn's rows could not be written", exc_info=True)
            raise Unavailable(f"the conversation could not be stored ({type(exc).__name__}); nothing was kept",
                              conversationId=conversation_id) from exc

    async def begin_message(self, conversation_id: str, role: str = "assistant", model: str = "") -> str:
        """A new message with no content yet, status "streaming"; returns its id."""
        return (await self._insert(conversation_id, role, (), model, None, "streaming")).id

    async def update_message(self, message_id: str, parts: Sequence[ContentPart], usage: Usage | None = None) -> None:
        """Checkpoint a streaming message's content so far (one transaction: whole or nothing)."""
        await self._update(message_id, parts, usage, "streaming", None)

    async def finish_message(self, message_id: str, parts: Sequence[ContentPart], usage: Usage | None = None,
                             status: str = "complete", error: str | None = None) -> MessageRow:
        if status not in FINAL_STATUSES:
            raise InvalidValue(f"status must be one of {', '.join(FINAL_STATUSES)}", "$.params.status")
        row = await self._update(message_id, parts, usage, status, error)
        assert row is not None
        return row

    async def _insert(self, conversation_id: str, role: str, parts: Sequence[ContentPart], model: str,
                      usage: Usage | None, status: str) -> MessageRow:
        if role not in ROLES:
            raise InvalidValue(f"role must be one of {', '.join(ROLES)}", "$.params.role")
        content = _ENCODE.encode(list(parts)).decode()
        text = parts_text(parts)
        usage = usage or Usage()

        def run(conn: apsw.Connection) -> MessageRow:
            row = store.insert_message(conn, new_id("m"), conversation_id, role, content, text, model,
                                       usage.inputTokens, usage.outputTokens, status)
            if row is None:
                raise _no_conversation(conversation_id)
            return row
        row = await self.db.write(run, small=_small(content, text))
        if status != "streaming":
            self._wrote_messages()
        return row

    async def _update(self, message_id: str, parts: Sequence[ContentPart], usage: Usage | None, status: str,
                      error: str | None) -> MessageRow | None:
        """Rewrite a streaming message; once it is finished, returns the row as written (read
        back in the same transaction: a separate read would be a second trip to a thread)."""
        content = _ENCODE.encode(list(parts)).decode()
        text = parts_text(parts)
        finished = status != "streaming"

        def run(conn: apsw.Connection) -> MessageRow | None:
            if store.update_message(conn, message_id, content, text, usage.inputTokens if usage else None,
                                    usage.outputTokens if usage else None, status, error, only_streaming=True):
                return store.get_message(conn, message_id) if finished else None
            if store.get_message(conn, message_id) is None:
                raise NotFound(f"no message {message_id}", id=message_id)
            raise InvalidValue(f"message {message_id} is no longer streaming", "$.params.id")
        row = await self.db.write(run, small=_small(content, text))
        if finished:  # indexable now
            self._wrote_messages()
        return row

    # ---- helpers -----------------------------------------------------------------------------

    @staticmethod
    def _project(conn: apsw.Connection, project_id: str) -> ProjectRow:
        row = store.get_project(conn, project_id)
        if row is None:
            raise _no_project(project_id)
        return row

    @staticmethod
    def _conversation(conn: apsw.Connection, conversation_id: str) -> ConversationRow:
        row = store.get_conversation(conn, conversation_id)
        if row is None:
            raise _no_conversation(conversation_id)
        return row


def _no_project(project_id: str) -> NotFound:
    return NotFound(f"no project {project_id}", id=project_id)


def _no_conversation(conversation_id: str) -> NotFound:
    return NotFound(f"no conversation {conversation_id}", id=conversation_id)


def _check_name(name: str) -> None:
    if not name.strip():
        raise InvalidValue("name is empty", "$.params.name")


def _prepare_file(path: str, text: str | None, b64: str | None, limits: Limits,
                  where: str) -> tuple[str, str | None, bytes | None, int, str, str]:
    """(path, text, data, size, sha256, language), checked against the per-file limit."""
    path = normalise_path(path, f"{where}.path")
    if (text is None) == (b64 is None):
        raise InvalidValue("give the content as exactly one of text or base64", f"{where}.text")
    if text is not None:
        try:
            raw = text.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidValue("text holds a lone surrogate: send such content as base64", f"{where}.text") from None
        data = None
        if "\x00" in text:  # stored as given, but not indexable text
            data, text = raw, None
    else:
        try:
            raw = base64.b64decode(b64 or "", validate=True)
        except (binascii.Error, ValueError):
            raise InvalidValue("base64 is not valid base64", f"{where}.base64") from None
        data = raw
    if len(raw) > limits.max_file_bytes:
        raise ResourceExhausted(f"{path} is {len(raw)} bytes, over the per-file limit of {limits.max_file_bytes} "
                                "bytes (projects.maxFileBytes)", limit=limits.max_file_bytes, size=len(raw))
    ext = path.rsplit(".", 1)[-1].lower() if "." in path.rsplit("/", 1)[-1] else ""
    return path, text, data, len(raw), hashlib.sha256(raw).hexdigest(), _LANGUAGES.get(ext, "")


def _encode_text_cursor(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


def _decode_text_cursor(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidValue("cursor is not one this method returned", "$.params.cursor") from None
