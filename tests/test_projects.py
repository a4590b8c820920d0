"""ProjectsService on a real database: projects, files, conversations, messages, full-text
search in English and Korean, cascade deletes, fork/save, streaming messages and recovery."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from protocol.projects import TextPart, ToolCallPart, ToolResultPart, Usage
from sidecar.errors import InvalidValue, NotFound, ResourceExhausted
from sidecar.projects import store
from sidecar.projects.service import Limits, ProjectsService, decode_parts, normalise_path, split_snippet
from sidecar.store.database import Database


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(tmp_path / "sidecar.db")
    database.open()
    yield database
    database.close()


@pytest.fixture
def service(db: Database) -> ProjectsService:
    return ProjectsService(db, lambda: Limits(max_file_bytes=1000, max_project_bytes=2500))


def count(db: Database, sql: str) -> int:
    return db.run_now(lambda conn: conn.execute(sql).fetchone()[0])


def integrity(db: Database) -> None:
    """Every external-content FTS index agrees with its table (once the queue is indexed)."""
    def check(conn):  # type: ignore[no-untyped-def]
        while store.index_unindexed(conn, 1000):
            pass
        for table in ("projects_fts", "projects_tri", "messages_fts", "messages_tri", "files_fts", "files_tri"):
            conn.execute(f"INSERT INTO {table} ({table}, rank) VALUES ('integrity-check', 1)")
    db.run_now(check)


async def say(service: ProjectsService, conversation_id: str, role: str, text: str) -> str:
    return (await service.append_message(conversation_id, role, [TextPart(text)])).id


# ---- projects ------------------------------------------------------------------------------------

@pytest.mark.anyio
async def test_project_crud_and_listing(service: ProjectsService) -> None:
    a = await service.create_project("Alpha", "first", "web", ["code-reviewer"])
    b = await service.create_project("Beta")
    assert a.id.startswith("p_") and a.active_agents == '["code-reviewer"]'
    updated = await service.update_project(a.id, description="the first one", active_agents=[])
    assert updated.description == "the first one" and updated.name == "Alpha" and updated.active_agents == "[]"
    page = await service.list_projects(limit=1)
    rest = await service.list_projects(cursor=page.next_cursor, limit=1)
    assert rest.next_cursor is None
    listed = page.items + rest.items
    assert {x.id for x in listed} == {a.id, b.id}
    assert listed[0].updated_at >= listed[1].updated_at  # most recently updated first
    with pytest.raises(NotFound, match="no project p_missing"):
        await service.get_project("p_missing")
    with pytest.raises(NotFound, match="p_missing"):
        await service.update_project("p_missing", name="x")
    with pytest.raises(InvalidValue):
        await service.create_project("   ")
    with pytest.raises(InvalidValue) as info:
        await service.list_projects(cursor="garbage!")
    assert info.value.path == "$.params.cursor"


@pytest.mark.anyio
async def test_delete_cascades_to_conversations_messages_and_files(service: ProjectsService, db: Database) -> None:
    p = await service.create_project("Doomed")
    keep = await service.create_project("Kept")
    c = await service.create_conversation(p.id, "general-assistant", "chat")
    loose = await service.create_conversation(None, "", "no project")
    for i in range(5):
        await say(service, c.id, "user", f"message number {i} about databases")
    await say(service, loose.id, "user", "kept message about databases")
    await service.put_file(p.id, "src/a.py", "print('databases')")
    await service.put_file(keep.id, "README.md", "kept file")
    await service.delete_project(p.id)
    assert count(db, "SELECT count(*) FROM conversations") == 1
    assert count(db, "SELECT count(*) FROM messages") == 1
    assert count(db, "SELECT count(*) FROM project_files") == 1
    assert [r[0] for r in (await service.search_messages("databases")).items] != []
    assert len((await service.search_messages("databases")).items) == 1
    assert (await service.search_files("print")).items == []
    integrity(db)
    with pytest.raises(NotFound):
        await service.get_conversation(c.id)
    with pytest.raises(NotFound):
        await service.delete_project(p.id)


# ---- files ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "expected"), [
    ("a/b/c.txt", "a/b/c.txt"), ("./a//b/./c.txt", "a/b/c.txt"), ("a\\b\\c.txt", "a/b/c.txt"),
    ("cafe\u0301.md", "caf\u00e9.md"),
])
def test_paths_are_normalised(raw: str, expected: str) -> None:
    assert normalise_path(raw) == expected


@pytest.mark.parametrize("raw", ["../x", "a/../../x", "/etc/passwd", "C:\\x", "c:x", "a\x00b", "a\nb", "./", ""])
def test_bad_paths_are_refused(raw: str) -> None:
    with pytest.raises(InvalidValue):
        normalise_path(raw)


@pytest.mark.anyio
async def test_files_text_binary_hash_limits(service: ProjectsService, db: Database) -> None:
    p = await service.create_project("Files")
    text = "SELECT 1; -- 데이터베이스"
    meta = await service.put_file(p.id, "./sql\\q.sql", text)
    assert meta.path == "sql/q.sql" and meta.is_text and meta.language == "sql"
    assert meta.sha256 == hashlib.sha256(text.encode()).hexdigest() and meta.size == len(text.encode())
    blob = bytes(range(256))
    bmeta = await service.put_file(p.id, "img/x.bin", b64=base64.b64encode(blob).decode())
    assert not bmeta.is_text and bmeta.size == 256
    row, got_text, got_data = await service.get_file(p.id, "img/x.bin")
    assert got_text is None and got_data == blob
    row, got_text, got_data = await service.get_file(p.id, "sql/q.sql")
    assert got_text == text and got_data is None
    with pytest.raises(ResourceExhausted, match="per-file limit of 1000") as info:
        await service.put_file(p.id, "big.txt", "x" * 1001)
    assert info.value.details == {"limit": 1000, "size": 1001}
    await service.put_file(p.id, "c.txt", "y" * 1000)
    await service.put_file(p.id, "d.txt", "y" * 900)
    with pytest.raises(ResourceExhausted, match="project limit|over its limit of 2500"):
        await service.put_file(p.id, "e.txt", "z" * 500)
    await service.put_file(p.id, "d.txt", "y" * 100)  # replacing a file counts its new size only
    with pytest.raises(InvalidValue):
        await service.put_file(p.id, "bad.bin", b64="not base64!!")
    with pytest.raises(InvalidValue):
        await service.put_file(p.id, "both.txt", "a", b64="YQ==")
    page = await service.list_files(p.id, limit=2)
    assert [f.path for f in page.items] == ["c.txt", "d.txt"]
    page = await service.list_files(p.id, cursor=page.next_cursor, limit=2)
    assert [f.path for f in page.items] == ["img/x.bin", "sql/q.sql"] and page.next_cursor is None
    assert [f.path for f in (await service.list_files(p.id, prefix="img/")).items] == ["img/x.bin"]
    await service.delete_file(p.id, "c.txt")
    with pytest.raises(NotFound, match="no file c.txt"):
        await service.get_file(p.id, "c.txt")
    with pytest.raises(NotFound, match="no project"):
        await service.put_file("p_nope", "a.txt", "a")
    hits = (await service.search_files("데이터베이스", p.id)).items
    assert [f.path for f, _ in hits] == ["sql/q.sql"]
    integrity(db)


@pytest.mark.anyio
async def test_save_replaces_files_in_one_transaction(service: ProjectsService, db: Database) -> None:
    p = await service.create_project("Save")
    await service.put_file(p.id, "old.txt", "old")
    await service.put_file(p.id, "same.txt", "same")
    files, removed = await service.save_project(p.id, [("same.txt", "same", None), ("new.txt", "new", None)])
    assert [f.path for f in files] == ["new.txt", "same.txt"] and removed == ["old.txt"]
    with pytest.raises(ResourceExhausted):  # over the project limit: nothing changes
        await service.save_project(p.id, [("a.txt", "a" * 1000, None), ("b.txt", "b" * 1000, None),
                                          ("c.txt", "c" * 600, None)])
    with pytest.raises(InvalidValue):  # a bad path anywhere: nothing changes
        await service.save_project(p.id, [("fine.txt", "x", None), ("../escape", "x", None)])
    assert [f.path for f in (await service.list_files(p.id)).items] == ["new.txt", "same.txt"]
    integrity(db)


@pytest.mark.anyio
async def test_fork_copies_files_and_optionally_conversations(service: ProjectsService, db: Database) -> None:
    p = await service.create_project("Origin", "to fork")
    await service.put_file(p.id, "a.txt", "alpha")
    c = await service.create_conversation(p.id, "python-expert", "first chat")
    await say(service, c.id, "user", "hello fork")
    await say(service, c.id, "assistant", "hi")
    plain = await service.fork_project(p.id)
    assert plain.project.name == "Origin (fork)" and plain.project.forked_from == p.id
    assert [f.path for f in plain.files] == ["a.txt"] and plain.conversations == []
    full = await service.fork_project(p.id, "Copy", include_conversations=True)
    assert [c2.title for c2 in full.conversations] == ["first chat"]
    assert full.conversations[0].message_count == 2 and full.conversations[0].id != c.id
    conv, messages, _ = await service.get_conversation(full.conversations[0].id)
    assert [decode_parts(m.content)[0].text for m in messages] == ["hello fork", "hi"]
    await service.delete_project(p.id)  # the forks stand on their own
    assert len((await service.get_project(full.project.id)).files) == 1
    assert len((await service.search_messages("fork")).items) == 1
    integrity(db)


# ---- conversations and messages ------------------------------------------------------------------

@pytest.mark.anyio
async def test_conversations_and_ordered_messages_with_parts(service: ProjectsService) -> None:
    p = await service.create_project("Chat")
    c = await service.create_conversation(p.id, "code-reviewer", "Review")
    await say(service, c.id, "user", "please review")
    parts = [TextPart("looking"), ToolCallPart("t1", "builtin__project_file_read", {"path": "a.py"}),
             ToolResultPart("t1", "print(1)")]
    m = await service.append_message(c.id, "assistant", parts, "claude-sonnet", Usage(10, 20))
    assert m.position == 1 and m.input_tokens == 10 and m.output_tokens == 20 and m.status == "complete"
    conv, messages, more = await service.get_conversation(c.id)
    assert [x.role for x in messages] == ["user", "assistant"] and not more
    assert decode_parts(messages[1].content) == parts
    conv, page, more = await service.get_conversation(c.id, after_position=-1, limit=1)
    assert len(page) == 1 and more
    renamed = await service.rename_conversation(c.id, "Renamed")
    assert renamed.title == "Renamed" and renamed.message_count == 2
    loose = await service.create_conversation(title="loose")
    assert [x.id for x in (await service.list_conversations(unassigned=True)).items] == [loose.id]
    assert [x.id for x in (await service.list_conversations(p.id)).items] == [c.id]
    assert len((await service.list_conversations()).items) == 2
    await service.delete_conversation(loose.id)
    with pytest.raises(NotFound, match=loose.id):
        await service.rename_conversation(loose.id, "x")
    with pytest.raises(NotFound, match="no project"):
        await service.create_conversation("p_nope")
    with pytest.raises(InvalidValue):
        await service.append_message(c.id, "robot", [TextPart("x")])


@pytest.mark.anyio
async def test_streaming_message_lifecycle_and_crash_recovery(service: ProjectsService, db: Database) -> None:
    c = await service.create_conversation(title="stream")
    await say(service, c.id, "user", "tell me a story")
    mid = await service.begin_message(c.id, "assistant", "claude-sonnet")
    await service.update_message(mid, [TextPart("Once upon")])
    conv, messages, _ = await service.get_conversation(c.id)
    assert messages[1].status == "streaming" and decode_parts(messages[1].content) == [TextPart("Once upon")]
    done = await service.finish_message(mid, [TextPart("Once upon a time.")], Usage(5, 7), "complete")
    assert done.status == "complete" and done.output_tokens == 7
    with pytest.raises(InvalidValue, match="no longer streaming"):
        await service.update_message(mid, [TextPart("late")])
    # a daemon that dies mid-reply: the checkpoint stays whole, and start-up marks it
    cut = await service.begin_message(c.id, "assistant")
    await service.update_message(cut, [TextPart("half a sen")])
    assert await service.recover() == 1
    conv, messages, _ = await service.get_conversation(c.id)
    assert messages[-1].status == "incomplete" and decode_parts(messages[-1].content) == [TextPart("half a sen")]
    assert [h[0] for h in (await service.search_messages("upon")).items] == [mid]
    with pytest.raises(NotFound):
        await service.finish_message("m_missing", [], None, "complete")
    integrity(db)


# ---- search --------------------------------------------------------------------------------------

@pytest.mark.anyio
async def test_search_english_korean_snippets_and_pages(service: ProjectsService, db: Database) -> None:
    p = await service.create_project("Café migration", "Moving the résumé service to PostgreSQL")
    await service.create_project("데이터베이스 이전", "회의록과 일정 정리")
    c = await service.create_conversation(p.id, title="plan")
    for i in range(7):
        await say(service, c.id, "user", f"Step {i}: migrate the orders table with zero downtime")
    korean = await say(service, c.id, "assistant", "데이터베이스를 이전하기 전에 회의를 합시다")
    await say(service, c.id, "user", "The naïve approach breaks under load")
    # English words, prefixes, diacritics folded both ways
    assert len((await service.search_messages("migrat downtime", limit=50)).items) == 7
    assert len((await service.search_messages("naive")).items) == 1
    assert [r.name for r, _ in (await service.search_projects("cafe resume")).items] == ["Café migration"]
    # Korean: a substring inside a word (trigram), a short word as a prefix (unicode61)
    assert [h[0] for h in (await service.search_messages("베이스")).items] == [korean]
    assert [h[0] for h in (await service.search_messages("회의")).items] == [korean]
    assert [r.name for r, _ in (await service.search_projects("회의록")).items] == ["데이터베이스 이전"]
    # snippets mark what matched
    (_, _, _, _, _, _, _, snippet), = (await service.search_messages("베이스")).items
    assert ("베이스", True) in split_snippet(snippet)
    # pages
    first = await service.search_messages("orders", limit=3)
    second = await service.search_messages("orders", cursor=first.next_cursor, limit=3)
    third = await service.search_messages("orders", cursor=second.next_cursor, limit=3)
    ids = [h[0] for page in (first, second, third) for h in page.items]
    assert len(ids) == len(set(ids)) == 7 and third.next_cursor is None
    # filtered by project
    assert (await service.search_messages("orders", project_id="p_other")).items == []
    integrity(db)


@pytest.mark.anyio
async def test_a_broad_search_ranks_its_newest_matches(service: ProjectsService, db: Database,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A query matching more than RANK_CANDIDATES messages ranks (bm25, whole-index statistics) only
    the newest RANK_CANDIDATES of them; one matching fewer is ranked exactly as before; a search
    within a project is never bounded."""
    monkeypatch.setattr(store, "RANK_CANDIDATES", 4)
    p = await service.create_project("bounded")
    c = await service.create_conversation(p.id, title="ranking")
    # oldest first: the best (short, repeated) matches are the old ones
    best_old = [await say(service, c.id, "user", "deploy deploy deploy") for _ in range(3)]
    plain_new = [await say(service, c.id, "user", f"we deploy on day {i} after lunch with the whole team")
                 for i in range(4)]
    rare = await say(service, c.id, "user", "one rollback only")
    await service.index_pending()
    exact = await db.read(lambda conn: store.search_messages(conn, "fts", '"deploy"*', None, 0, 20,
                                                             candidates=1000))
    assert len(exact) == 7 and {h[0] for h in exact[:3]} == set(best_old)  # unbounded: the old ones win
    bounded = [h[0] for h in (await service.search_messages("deploy")).items]
    # the newest four matches, best first (bm25 over the whole index: same scores as unbounded)
    assert sorted(bounded) == sorted(plain_new)
    assert bounded == [h[0] for h in exact if h[0] in plain_new]
    # within a project: every match ranked
    scoped = [h[0] for h in (await service.search_messages("deploy", project_id=p.id)).items]
    assert scoped == [h[0] for h in exact]
    # fewer matches than the bound: unchanged
    assert [h[0] for h in (await service.search_messages("rollback")).items] == [rare]


@pytest.mark.anyio
@pytest.mark.parametrize("query", ['"', '"unbalanced', "a*", "NEAR(a b)", "-x", "a OR", "col:x", "(", "^x", "*"])
async def test_fts_syntax_in_queries_is_text(service: ProjectsService, query: str) -> None:
    c = await service.create_conversation(title="x")
    await say(service, c.id, "user", "a plain sentence with x in it")
    await service.search_messages(query)  # never an SQL error
    await service.search_projects(query)
    await service.search_files(query)


@pytest.mark.anyio
async def test_empty_query_is_invalid(service: ProjectsService) -> None:
    for search in (service.search_messages, service.search_projects, service.search_files):
        with pytest.raises(InvalidValue, match="query is empty") as info:
            await search("  ")
        assert info.value.path == "$.params.query"


@pytest.mark.anyio
async def test_project_detail_counts(service: ProjectsService) -> None:
    p = await service.create_project("Detail")
    c1 = await service.create_conversation(p.id, title="one")
    await service.create_conversation(p.id, title="two")
    for i in range(3):
        await say(service, c1.id, "user", str(i))
    await service.put_file(p.id, "a.txt", "abc")
    detail = await service.get_project(p.id)
    assert detail.total_bytes == 3 and [f.path for f in detail.files] == ["a.txt"]
    assert sorted((x.title, x.message_count) for x in detail.conversations) == [("one", 3), ("two", 0)]


@pytest.mark.anyio
async def test_append_many_in_one_transaction(service: ProjectsService, db: Database) -> None:
    c = await service.create_conversation(title="import")
    assert await service.append_messages(c.id, [("user", [TextPart("q")]), ("assistant", [TextPart("a")])]) == 2
    with pytest.raises(InvalidValue):  # one bad role: none of them is written
        await service.append_messages(c.id, [("user", [TextPart("x")]), ("robot", [TextPart("y")])])
    conv, messages, _ = await service.get_conversation(c.id)
    assert [(m.position, m.role) for m in messages] == [(0, "user"), (1, "assistant")]
    integrity(db)


@pytest.mark.anyio
async def test_concurrent_appends_get_consecutive_positions_and_return_the_stored_row(
        service: ProjectsService, db: Database) -> None:
    """The appended row is built in Python (no RETURNING): it must be the row stored, and
    appends racing each other (one transaction each, on the one writer) never share a position;
    the conversation is touched with the message's own time."""
    p = await service.create_project("concurrent")
    c = await service.create_conversation(p.id, title="race")
    returned: list = []

    async def append(i: int) -> None:
        returned.append(await service.append_message(c.id, "user", [TextPart(f"message {i}")], model="m",
                                                     usage=Usage(inputTokens=i, outputTokens=1)))
    async with anyio.create_task_group() as tg:
        for i in range(40):
            tg.start_soon(append, i)
    conv, stored, _ = await service.get_conversation(c.id)
    assert [m.position for m in stored] == list(range(40)) and conv.message_count == 40
    assert sorted(returned, key=lambda m: m.position) == stored
    assert conv.updated_at == max(m.created_at for m in stored)
    with pytest.raises(NotFound):
        await service.append_message("c_missing", "user", [TextPart("x")])
    assert count(db, "SELECT count(*) FROM messages") == 40


# ---- the batched message index -------------------------------------------------------------------

def fts_rows(db: Database, table: str) -> int:
    """Documents an FTS5 index holds (its docsize table has one row per document)."""
    return count(db, f"SELECT count(*) FROM {table}_docsize")


@pytest.mark.anyio
async def test_messages_are_queued_then_indexed_once_finished(service: ProjectsService, db: Database) -> None:
    c = await service.create_conversation(title="queue")
    await say(service, c.id, "user", "plain ascii question")
    await say(service, c.id, "user", "한국어 질문입니다")
    assert count(db, "SELECT count(*) FROM messages_unindexed") == 2 and fts_rows(db, "messages_fts") == 0
    assert await service.index_pending() == 2
    # the trigram index holds only non-ASCII messages; the word index all of them
    assert fts_rows(db, "messages_fts") == 2 and fts_rows(db, "messages_tri") == 1
    # a streaming reply stays queued: its checkpoints never touch the indexes
    mid = await service.begin_message(c.id, "assistant")
    for i in range(5):
        await service.update_message(mid, [TextPart("streaming words " * i)])
        assert await service.index_pending() == 0
    assert fts_rows(db, "messages_fts") == 2
    assert (await service.search_messages("streaming")).items == []
    await service.finish_message(mid, [TextPart("streaming words, finished")])
    assert [h[0] for h in (await service.search_messages("streaming")).items] == [mid]  # indexed by the search
    assert count(db, "SELECT count(*) FROM messages_unindexed") == 0 and fts_rows(db, "messages_fts") == 3
    integrity(db)


@pytest.mark.anyio
async def test_deleting_indexed_and_queued_messages_keeps_the_indexes_whole(service: ProjectsService,
                                                                            db: Database) -> None:
    indexed = await service.create_conversation(title="indexed")
    queued = await service.create_conversation(title="queued")
    await say(service, indexed.id, "user", "데이터베이스 indexed words")
    await say(service, indexed.id, "user", "ascii indexed words")
    await service.index_pending()
    await say(service, queued.id, "user", "데이터베이스 queued words")
    await service.delete_conversation(indexed.id)  # 'delete' for rows the indexes hold
    await service.delete_conversation(queued.id)  # only the queue entry for the other
    assert fts_rows(db, "messages_fts") == fts_rows(db, "messages_tri") == 0
    assert count(db, "SELECT count(*) FROM messages_unindexed") == 0
    assert (await service.search_messages("words")).items == []
    integrity(db)


@pytest.mark.anyio
async def test_background_indexer_indexes_soon_after_writes(service: ProjectsService, db: Database) -> None:
    import anyio

    async with anyio.create_task_group() as tg:
        tg.start_soon(service.run_indexer)
        c = await service.create_conversation(title="bg")
        await say(service, c.id, "user", "indexed in the background")
        with anyio.fail_after(10):
            while count(db, "SELECT count(*) FROM messages_unindexed"):
                await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    assert fts_rows(db, "messages_fts") == 1


@pytest.mark.anyio
async def test_latin_words_with_diacritics_use_the_word_index(service: ProjectsService) -> None:
    c = await service.create_conversation(title="accents")
    plain = await say(service, c.id, "user", "the cafe opens at nine")
    accented = await say(service, c.id, "user", "le café ouvre à neuf")
    for query in ("cafe", "café", "CAFÉ"):
        assert sorted(h[0] for h in (await service.search_messages(query)).items) == sorted([plain, accented])
