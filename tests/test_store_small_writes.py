"""Small writes (`Database.write(fn, small=True)`) run on the event loop when nothing needs
waiting for; the WAL's checkpoints, which sync the disk, stay on the writer thread."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import anyio
import apsw
import pytest

from sidecar.commit import RequestGuard, current_guard
from sidecar.store import database
from sidecar.store.database import Database


def _insert(key: str, seen: list[str]) -> object:
    def run(conn: apsw.Connection) -> int:
        seen.append(threading.current_thread().name)
        conn.execute("INSERT INTO settings (key, value) VALUES (?, ?)", (key, "x" * 1000))
        return conn.changes()
    return run


def _wal_frames(db: Database) -> int:
    """Frames (pages) in the WAL now: what a checkpoint would have to copy."""
    frames, _copied = db._conn().wal_checkpoint()
    return frames


@pytest.fixture
def db(tmp_path: Path) -> object:
    db = Database(tmp_path / "sidecar.db")
    db.open()
    yield db
    db.close()


def test_a_small_write_runs_on_the_loop_and_a_plain_one_on_the_writer_thread(db: Database) -> None:
    seen: list[str] = []

    async def main() -> None:
        assert await db.write(_insert("a", seen), small=True) == 1
        assert await db.write(_insert("b", seen)) == 1

    anyio.run(main)
    assert seen == [threading.main_thread().name, "sidecar-db-writer"]
    assert db.run_now(lambda c: c.execute("SELECT key FROM settings ORDER BY key").fetchall()) == [("a",), ("b",)]


def test_a_small_write_that_raises_rolls_back_and_the_writer_goes_on(db: Database) -> None:
    def half(conn: apsw.Connection) -> None:
        conn.execute("INSERT INTO settings (key, value) VALUES ('half', '1')")
        raise ValueError("refused")

    async def main() -> None:
        with pytest.raises(ValueError, match="refused"):
            await db.write(half, small=True)
        assert await db.write(_insert("after", []), small=True) == 1

    anyio.run(main)
    assert db.run_now(lambda c: c.execute("SELECT key FROM settings").fetchall()) == [("after",)]


def test_a_small_write_marks_its_request_committed(db: Database) -> None:
    guard = RequestGuard(cancel=lambda: None)

    async def main() -> None:
        token = current_guard.set(guard)
        try:
            await db.write(_insert("k", []), small=True)
        finally:
            current_guard.reset(token)

    anyio.run(main)
    assert guard.committed


def test_a_cancelled_request_starts_no_small_write(db: Database) -> None:
    async def main() -> None:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await db.write(_insert("never", []), small=True)

    anyio.run(main)
    assert db.run_now(lambda c: c.execute("SELECT count(*) FROM settings").fetchall()) == [(0,)]


def test_while_another_process_holds_the_write_lock_a_small_write_waits_on_the_writer_thread(
        db: Database, tmp_path: Path) -> None:
    """Busy timeout 0 on the loop: the loop never waits on SQLite's lock; the writer thread does
    (up to the busy timeout), and the write lands once the other connection commits."""
    other = database.connect(tmp_path / "sidecar.db")
    other.execute("BEGIN IMMEDIATE")
    seen: list[str] = []

    async def write_small() -> None:
        await db.write(_insert("late", seen), small=True)  # type: ignore[arg-type]

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(write_small)
            started = time.monotonic()
            await anyio.sleep(0.2)
            assert time.monotonic() - started < 3  # the loop did not wait (busy timeout: 5 s)
            assert seen == []  # waiting on the writer thread
            other.execute("INSERT INTO settings (key, value) VALUES ('first', '1')")
            other.execute("COMMIT")

    anyio.run(main)
    other.close()
    assert seen == ["sidecar-db-writer"]
    assert db.run_now(lambda c: c.execute("SELECT key FROM settings ORDER BY key").fetchall()) == [
        ("first",), ("late",)]
    assert db.run_now(lambda c: c.execute("PRAGMA busy_timeout").fetchall()) == [(database.BUSY_TIMEOUT_MS,)]


def test_checkpoints_run_on_the_writer_thread_and_keep_the_wal_short(
        db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The WAL hook replaces SQLite's automatic checkpoint: without the writer's own, the WAL
    of these 400 writes would grow past 400 pages; with it, it stays under twice the
    threshold, and every write that checkpointed ran on the writer thread."""
    monkeypatch.setattr(database, "WAL_AUTOCHECKPOINT_PAGES", 20)
    checkpoints: list[str] = []
    checkpoint = database.Database._checkpoint_if_due

    def spy(self: Database, conn: apsw.Connection) -> None:
        before = self._wal.pages
        checkpoint(self, conn)
        if before >= database.WAL_AUTOCHECKPOINT_PAGES:
            checkpoints.append(threading.current_thread().name)

    monkeypatch.setattr(database.Database, "_checkpoint_if_due", spy)
    seen: list[str] = []

    async def main() -> None:
        for i in range(400):
            await db.write(_insert(f"k{i:03}", seen), small=True)  # type: ignore[arg-type]

    anyio.run(main)
    assert len(checkpoints) >= 10 and set(checkpoints) == {"sidecar-db-writer"}
    assert seen.count("sidecar-db-writer") == len(checkpoints)  # the rest ran on the loop
    assert _wal_frames(db) < 40
    assert db.run_now(lambda c: c.execute("SELECT count(*) FROM settings").fetchall()) == [(400,)]


def test_run_now_checkpoints_when_due(db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(database, "WAL_AUTOCHECKPOINT_PAGES", 20)
    for i in range(200):
        db.run_now(_insert(f"k{i:03}", []))  # type: ignore[arg-type]
    assert _wal_frames(db) < 40  # 200 and more without checkpoints


def test_message_writes_up_to_64_kib_are_small(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """ProjectsService declares its message rows small; a message over SMALL_WRITE_CHARS is not."""
    from protocol.projects import TextPart
    from sidecar.projects import service as projects_service
    from sidecar.projects import store as projects_store

    threads: list[str] = []
    insert = projects_store.insert_message

    def spy(*args: object, **kwargs: object) -> object:
        threads.append(threading.current_thread().name)
        return insert(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(projects_store, "insert_message", spy)

    async def main() -> None:
        service = projects_service.ProjectsService(db)
        conversation = await service.create_conversation(None, "general-assistant", "t")
        await service.append_message(conversation.id, "user", [TextPart("hello")])
        big = "x" * (projects_service.SMALL_WRITE_CHARS + 1)
        await service.append_message(conversation.id, "user", [TextPart(big)])
        reply = await service.begin_message(conversation.id)
        await service.finish_message(reply, [TextPart("done")])

    anyio.run(main)
    assert threads == [threading.main_thread().name, "sidecar-db-writer", threading.main_thread().name]
