"""SQL for projects, project files, conversations and messages, and the full-text queries.

Functions take an open connection and run inside whatever transaction the caller holds
(`Database.write` wraps each call from the service in one). Rows come back as plain
dataclasses; the service turns them into wire Structs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import apsw

NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
HIT_START, HIT_END = "\x02", "\x03"


@dataclass(frozen=True, slots=True)
class ProjectRow:
    id: str
    name: str
    description: str
    project_type: str
    active_agents: str  # JSON
    forked_from: str | None
    created_at: str
    updated_at: str


@dataclass(frozen=True, slots=True)
class FileRow:
    project_id: str
    path: str
    size: int
    sha256: str
    is_text: bool
    language: str
    updated_at: str


@dataclass(frozen=True, slots=True)
class ConversationRow:
    id: str
    project_id: str | None
    agent: str
    title: str
    created_at: str
    updated_at: str
    message_count: int


@dataclass(frozen=True, slots=True)
class MessageRow:
    id: str
    conversation_id: str
    position: int
    role: str
    content: str  # JSON
    model: str
    input_tokens: int
    output_tokens: int
    status: str
    error: str | None
    created_at: str
    updated_at: str


_P = "id, name, description, project_type, active_agents, forked_from, created_at, updated_at"
_F = "project_id, path, size, sha256, text IS NOT NULL, language, updated_at"
_C = ("c.id, c.project_id, c.agent, c.title, c.created_at, c.updated_at, "
      "(SELECT count(*) FROM messages m WHERE m.conversation_id = c.id)")
_M = ("id, conversation_id, position, role, content, model, input_tokens, output_tokens, status, error, "
      "created_at, updated_at")


def _file(row: tuple) -> FileRow:
    return FileRow(row[0], row[1], row[2], row[3], bool(row[4]), row[5], row[6])


# ---- projects ------------------------------------------------------------------------------------

def insert_project(conn: apsw.Connection, id_: str, name: str, description: str, project_type: str,
                   active_agents: str, forked_from: str | None = None) -> ProjectRow:
    conn.execute("INSERT INTO projects (id, name, description, project_type, active_agents, forked_from) "
                 "VALUES (?, ?, ?, ?, ?, ?)", (id_, name, description, project_type, active_agents, forked_from))
    row = get_project(conn, id_)
    assert row is not None
    return row


def get_project(conn: apsw.Connection, id_: str) -> ProjectRow | None:
    row = conn.execute(f"SELECT {_P} FROM projects WHERE id = ?", (id_,)).fetchone()
    return ProjectRow(*row) if row else None


def list_projects(conn: apsw.Connection, offset: int, limit: int) -> list[ProjectRow]:
    return [ProjectRow(*r) for r in conn.execute(
        f"SELECT {_P} FROM projects ORDER BY updated_at DESC, pk DESC LIMIT ? OFFSET ?", (limit, offset))]


def update_project(conn: apsw.Connection, id_: str, fields: dict[str, str]) -> bool:
    """`fields`: column -> value, columns from a fixed set (the service's)."""
    allowed = {"name", "description", "project_type", "active_agents"}
    assert set(fields) <= allowed
    sets = "".join(f"{column} = ?, " for column in fields)
    conn.execute(f"UPDATE projects SET {sets}updated_at = {NOW} WHERE id = ?", (*fields.values(), id_))
    return conn.changes() > 0


def touch_project(conn: apsw.Connection, id_: str) -> None:
    conn.execute(f"UPDATE projects SET updated_at = {NOW} WHERE id = ?", (id_,))


def delete_project(conn: apsw.Connection, id_: str) -> bool:
    conn.execute("DELETE FROM projects WHERE id = ?", (id_,))
    return conn.changes() > 0


# ---- files ---------------------------------------------------------------------------------------

def project_bytes(conn: apsw.Connection, project_id: str, except_path: str | None = None) -> int:
    return conn.execute("SELECT coalesce(sum(size), 0) FROM project_files WHERE project_id = ? AND path IS NOT ?",
                        (project_id, except_path)).fetchone()[0]


def put_file(conn: apsw.Connection, project_id: str, path: str, text: str | None, data: bytes | None,
             size: int, sha256: str, language: str) -> FileRow:
    conn.execute(
        "INSERT INTO project_files (project_id, path, text, data, size, sha256, language) VALUES (?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (project_id, path) DO UPDATE SET text = excluded.text, data = excluded.data, "
        f"size = excluded.size, sha256 = excluded.sha256, language = excluded.language, updated_at = {NOW}",
        (project_id, path, text, data, size, sha256, language))
    row = get_file_meta(conn, project_id, path)
    assert row is not None
    return row


def get_file_meta(conn: apsw.Connection, project_id: str, path: str) -> FileRow | None:
    row = conn.execute(f"SELECT {_F} FROM project_files WHERE project_id = ? AND path = ?",
                       (project_id, path)).fetchone()
    return _file(row) if row else None


def get_file_content(conn: apsw.Connection, project_id: str, path: str) -> tuple[FileRow, str | None, bytes | None] | None:
    row = conn.execute(f"SELECT {_F}, text, data FROM project_files WHERE project_id = ? AND path = ?",
                       (project_id, path)).fetchone()
    return (_file(row[:7]), row[7], row[8]) if row else None


def list_files(conn: apsw.Connection, project_id: str, prefix: str = "", after: str = "",
               limit: int = -1) -> list[FileRow]:
    # a prefix range instead of LIKE: no wildcard characters to escape, and it uses the index
    return [_file(r) for r in conn.execute(
        f"SELECT {_F} FROM project_files WHERE project_id = ? AND path >= ? AND path < ? AND path > ? "
        "ORDER BY path LIMIT ?", (project_id, prefix, prefix + "\U0010ffff", after, limit))]


def delete_file(conn: apsw.Connection, project_id: str, path: str) -> bool:
    conn.execute("DELETE FROM project_files WHERE project_id = ? AND path = ?", (project_id, path))
    return conn.changes() > 0


def copy_files(conn: apsw.Connection, source: str, target: str) -> None:
    conn.execute("INSERT INTO project_files (project_id, path, text, data, size, sha256, language) "
                 "SELECT ?, path, text, data, size, sha256, language FROM project_files WHERE project_id = ?",
                 (target, source))


# ---- conversations and messages ----------------------------------------------------------------

def insert_conversation(conn: apsw.Connection, id_: str, project_id: str | None, agent: str,
                        title: str) -> ConversationRow:
    conn.execute("INSERT INTO conversations (id, project_id, agent, title) VALUES (?, ?, ?, ?)",
                 (id_, project_id, agent, title))
    row = get_conversation(conn, id_)
    assert row is not None
    return row


def get_conversation(conn: apsw.Connection, id_: str) -> ConversationRow | None:
    row = conn.execute(f"SELECT {_C} FROM conversations c WHERE c.id = ?", (id_,)).fetchone()
    return ConversationRow(*row) if row else None


def list_conversations(conn: apsw.Connection, project_id: str | None, unassigned: bool, offset: int,
                       limit: int) -> list[ConversationRow]:
    if unassigned:
        where, args = "WHERE c.project_id IS NULL", ()
    elif project_id is not None:
        where, args = "WHERE c.project_id = ?", (project_id,)
    else:
        where, args = "", ()
    return [ConversationRow(*r) for r in conn.execute(
        f"SELECT {_C} FROM conversations c {where} ORDER BY c.updated_at DESC, c.pk DESC LIMIT ? OFFSET ?",
        (*args, limit, offset))]


def rename_conversation(conn: apsw.Connection, id_: str, title: str) -> bool:
    conn.execute(f"UPDATE conversations SET title = ?, updated_at = {NOW} WHERE id = ?", (title, id_))
    return conn.changes() > 0


def delete_conversation(conn: apsw.Connection, id_: str) -> bool:
    conn.execute("DELETE FROM conversations WHERE id = ?", (id_,))
    return conn.changes() > 0


def copy_conversations(conn: apsw.Connection, source: str, target: str) -> None:
    """Copy every conversation of project `source`, with its messages, into project `target`
    (new ids made as `new_id` makes them: a prefix and 20 hex digits)."""
    rows = conn.execute("SELECT id, agent, title, created_at FROM conversations WHERE project_id = ? ORDER BY pk",
                        (source,)).fetchall()
    for old_id, agent, title, created_at in rows:
        cid = conn.execute("SELECT 'c_' || lower(hex(randomblob(10)))").fetchone()[0]
        conn.execute("INSERT INTO conversations (id, project_id, agent, title, created_at) VALUES (?, ?, ?, ?, ?)",
                     (cid, target, agent, title, created_at))
        conn.execute(
            "INSERT INTO messages (id, conversation_id, position, role, content, text, model, input_tokens, "
            "output_tokens, status, error, created_at, updated_at) "
            "SELECT 'm_' || lower(hex(randomblob(10))), ?, position, role, content, text, model, input_tokens, "
            "output_tokens, status, error, created_at, updated_at FROM messages WHERE conversation_id = ? "
            "ORDER BY position", (cid, old_id))


def insert_message(conn: apsw.Connection, id_: str, conversation_id: str, role: str, content: str, text: str,
                   model: str, input_tokens: int, output_tokens: int, status: str) -> MessageRow | None:
    """The message at the end of the conversation; None (nothing written) if there is no such
    conversation. Three plain statements, the row built here: the next position and the time;
    touching the conversation, which tells whether it exists; the insert. (Cheaper than one
    INSERT ... SELECT ... RETURNING every column, by a third of an append's SQL.)"""
    position, now = conn.execute(
        "SELECT coalesce((SELECT position + 1 FROM messages WHERE conversation_id = ? ORDER BY position DESC "
        f"LIMIT 1), 0), {NOW}", (conversation_id,)).fetchone()
    conn.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (now, conversation_id))
    if conn.changes() == 0:
        return None
    conn.execute(
        "INSERT INTO messages (id, conversation_id, position, role, content, text, model, input_tokens, "
        "output_tokens, status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (id_, conversation_id, position, role, content, text, model, input_tokens, output_tokens, status, now, now))
    return MessageRow(id_, conversation_id, position, role, content, model, input_tokens, output_tokens, status,
                      None, now, now)


def get_message(conn: apsw.Connection, id_: str) -> MessageRow | None:
    row = conn.execute(f"SELECT {_M} FROM messages WHERE id = ?", (id_,)).fetchone()
    return MessageRow(*row) if row else None


def update_message(conn: apsw.Connection, id_: str, content: str, text: str, input_tokens: int | None,
                   output_tokens: int | None, status: str, error: str | None, only_streaming: bool) -> bool:
    conn.execute(
        "UPDATE messages SET content = ?, text = ?, input_tokens = coalesce(?, input_tokens), "
        f"output_tokens = coalesce(?, output_tokens), status = ?, error = ?, updated_at = {NOW} "
        "WHERE id = ?" + (" AND status = 'streaming'" if only_streaming else ""),
        (content, text, input_tokens, output_tokens, status, error, id_))
    return conn.changes() > 0


def list_messages(conn: apsw.Connection, conversation_id: str, after_position: int, limit: int) -> list[MessageRow]:
    return [MessageRow(*r) for r in conn.execute(
        f"SELECT {_M} FROM messages WHERE conversation_id = ? AND position > ? ORDER BY position LIMIT ?",
        (conversation_id, after_position, limit))]


def mark_streaming_incomplete(conn: apsw.Connection) -> int:
    conn.execute(f"UPDATE messages SET status = 'incomplete', updated_at = {NOW} WHERE status = 'streaming'")
    return conn.changes()


# ---- the message index queue (see migrations/0002_projects_core.sql) -----------------------------

# CROSS JOIN keeps the queue as the outer loop (each message looked up by pk); the planner
# would otherwise scan every message
_QUEUED = ("FROM messages_unindexed q CROSS JOIN messages m ON m.pk = q.pk "
           "WHERE q.pk <= ? AND m.status <> 'streaming'")


def has_unindexed(conn: apsw.Connection) -> bool:
    """Whether a finished message waits to be indexed (a search must index it first)."""
    return bool(conn.execute(
        "SELECT EXISTS (SELECT 1 FROM messages_unindexed q CROSS JOIN messages m ON m.pk = q.pk "
        "WHERE m.status <> 'streaming')").fetchone()[0])


def index_unindexed(conn: apsw.Connection, batch: int) -> int:
    """Move up to `batch` queued messages that are no longer streaming into both indexes
    (the trigram one only for non-ASCII text); returns how many."""
    hi = conn.execute(
        "SELECT max(pk) FROM (SELECT q.pk FROM messages_unindexed q CROSS JOIN messages m ON m.pk = q.pk "
        "WHERE m.status <> 'streaming' ORDER BY q.pk LIMIT ?)", (batch,)).fetchone()[0]
    if hi is None:
        return 0
    conn.execute(f"INSERT INTO messages_fts (rowid, text) SELECT m.pk, m.text {_QUEUED}", (hi,))
    conn.execute(f"INSERT INTO messages_tri (rowid, text) SELECT m.pk, m.text {_QUEUED} "
                 "AND length(m.text) <> length(CAST(m.text AS BLOB))", (hi,))
    conn.execute("DELETE FROM messages_unindexed WHERE pk <= ? "
                 "AND pk NOT IN (SELECT pk FROM messages WHERE status = 'streaming')", (hi,))
    return conn.changes()


# ---- full-text search ----------------------------------------------------------------------------

_WORDISH = re.compile(r"\w", re.UNICODE)
#: control characters separate terms: FTS5 reads its query as a C string, so a NUL inside a
#: quoted term would cut it short ("unterminated string")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _non_latin(term: str) -> bool:
    return any(ord(ch) > 0x24F and ch.isalnum() for ch in term)


def fts_match(query: str) -> tuple[str, str] | None:
    """(index kind, FTS5 MATCH expression) for a user's query, every term quoted so `"`, `*`,
    `-`, `NEAR`, `OR`, parentheses... are plain text; None when no term has a letter or digit.

    When a term has a non-Latin letter (Korean, Japanese, Cyrillic...: past U+024F) and every
    term is 3+ characters long (the trigram index cannot match shorter ones), the trigram
    index, where a quoted term matches any substring (`베이스` in `데이터베이스를`). (It holds only
    non-ASCII messages: a non-Latin term cannot occur in any other.) Otherwise the word index
    (unicode61, diacritics removed: `cafe` and `café` find each other) with each term as a
    prefix (`migrat` finds `migration`, `회의` finds `회의를`). Terms are ANDed."""
    terms = [t for t in _CONTROL.sub(" ", query).split() if _WORDISH.search(t)]
    if not terms:
        return None
    quoted = ['"' + t.replace('"', '""') + '"' for t in terms]
    if all(len(t) >= 3 for t in terms) and any(_non_latin(t) for t in terms):
        return "tri", " ".join(quoted)
    return "fts", " ".join(q + "*" for q in quoted)


def _snippet(kind: str, table: str, column: int) -> str:
    tokens = 24 if kind == "fts" else 40
    return f"snippet({table}_{kind}, {column}, char(2), char(3), '…', {tokens})"


def search_projects(conn: apsw.Connection, kind: str, match: str, offset: int, limit: int) -> list[tuple[ProjectRow, str]]:
    table = f"projects_{kind}"
    rows = conn.execute(
        f"SELECT {', '.join('p.' + c.strip() for c in _P.split(','))}, {_snippet(kind, 'projects', -1)} "
        f"FROM {table} JOIN projects p ON p.pk = {table}.rowid WHERE {table} MATCH ? "
        f"ORDER BY {table}.rank LIMIT ? OFFSET ?", (match, limit, offset))
    return [(ProjectRow(*r[:8]), r[8]) for r in rows]


def search_files(conn: apsw.Connection, kind: str, match: str, project_id: str | None, offset: int,
                 limit: int) -> list[tuple[FileRow, str]]:
    table = f"files_{kind}"
    where = "AND f.project_id = ?" if project_id is not None else ""
    args = (match, project_id) if project_id is not None else (match,)
    rows = conn.execute(
        f"SELECT {', '.join('f.' + c.strip() for c in _F.split(','))}, {_snippet(kind, 'files', -1)} "
        f"FROM {table} JOIN project_files f ON f.pk = {table}.rowid WHERE {table} MATCH ? {where} "
        f"ORDER BY {table}.rank LIMIT ? OFFSET ?", (*args, limit, offset))
    return [(_file(r[:7]), r[7]) for r in rows]


#: An unscoped message search ranks (bm25) at most this many candidates: all its matches when
#: there are no more, else the newest this many. Ranking costs ~0.5 µs per matching message (FTS5
#: computes bm25 for every match before it sorts, LIMIT or not), so a broad query over 100,000
#: messages (7,000-22,000 matches) spent most of its 10 ms there (with 2,000: ~5 ms, of which ~3 ms
#: finding the matches twice, for the bound and for the ranking). bm25's statistics (IDF, average
#: length) stay those of the whole index, so scores are the same as unbounded; only which messages
#: compete changes, and only for a query matching more than this many: the best among the newest
#: matches, which for a chat history is what one looks for. A search within a project stays exact.
RANK_CANDIDATES = 2000


def search_messages(conn: apsw.Connection, kind: str, match: str, project_id: str | None, offset: int,
                    limit: int, candidates: int | None = None) -> list[tuple]:
    """(message id, conversation id, title, project id, position, role, created_at, snippet),
    best first; the snippet is made only for the rows returned. `candidates`: RANK_CANDIDATES
    unless given."""
    table = f"messages_{kind}"
    if project_id is not None:
        where, args = "AND c.project_id = :project", {"project": project_id}
    else:
        # the newest `candidates` matches: FTS5 walks a match in rowid order cheaply, and takes
        # the rowid bound as a constraint of its own scan (no row outside it is ranked)
        where = (f"AND {table}.rowid >= coalesce((SELECT rowid FROM {table} WHERE {table} MATCH :match "
                 "ORDER BY rowid DESC LIMIT 1 OFFSET :skip), 0)")
        args = {"skip": (RANK_CANDIDATES if candidates is None else candidates) - 1}
    return conn.execute(
        f"SELECT m.id, m.conversation_id, c.title, c.project_id, m.position, m.role, m.created_at, "
        f"{_snippet(kind, 'messages', 0)} FROM {table} JOIN messages m ON m.pk = {table}.rowid "
        f"JOIN conversations c ON c.id = m.conversation_id WHERE {table} MATCH :match {where} "
        f"ORDER BY {table}.rank LIMIT :limit OFFSET :offset",
        {"match": match, "limit": limit, "offset": offset, **args}).fetchall()
