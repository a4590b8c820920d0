"""The embedded store (issue point 9): pragmas on the real file, work off the event loop, and
nothing lost when the daemon is killed -9 in the middle of write transactions."""

from __future__ import annotations

import functools
import gc
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import apsw
import msgspec
import pytest

from sidecar.client import DaemonClient
from sidecar.commit import RequestGuard, current_guard
from sidecar.secrets.keys import FileKeyProvider
from sidecar.secrets.service import SecretService
from sidecar.secrets.store import SecretsStore
from sidecar.settings.store import SettingsStore
from sidecar.store.database import BUSY_TIMEOUT_MS, READ_THREADS, Database

PRAGMAS = ("journal_mode", "foreign_keys", "busy_timeout", "synchronous", "query_only")


def pragmas(conn: apsw.Connection) -> dict[str, Any]:
    return {name: conn.execute(f"PRAGMA {name}").fetchall()[0][0] for name in PRAGMAS}


EXPECTED = {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": BUSY_TIMEOUT_MS, "synchronous": 1,
            "query_only": 0}
READER = {**EXPECTED, "query_only": 1}


def test_writer_and_reader_connections_are_configured(tmp_path: Path) -> None:
    async def main() -> None:
        db = Database(tmp_path / "sidecar.db")
        db.open()
        try:
            assert db.run_now(pragmas) == EXPECTED
            assert await db.read(pragmas) == READER
            assert await db.write(pragmas) == EXPECTED
        finally:
            db.close()

    anyio.run(main)


def test_foreign_keys_are_enforced(tmp_path: Path) -> None:
    mdir = tmp_path / "m"
    mdir.mkdir()
    (mdir / "0001_test_fk.sql").write_text("CREATE TABLE parent (id INTEGER PRIMARY KEY);\n"
                                      "CREATE TABLE child (parent INTEGER NOT NULL REFERENCES parent (id));")

    async def main() -> None:
        db = Database(tmp_path / "sidecar.db", mdir)
        db.open()
        try:
            await db.write(lambda c: c.execute("INSERT INTO parent VALUES (1); INSERT INTO child VALUES (1)"))
            with pytest.raises(apsw.ConstraintError):
                await db.write(lambda c: c.execute("INSERT INTO child VALUES (2)"))
        finally:
            db.close()

    anyio.run(main)


def test_the_daemons_database_file_is_in_wal_mode(daemon: DaemonClient, data_dir: Path) -> None:
    daemon.request("settings/set", {"key": "server.slowRequestMs", "value": 1234})
    conn = apsw.Connection(str(data_dir / "sidecar.db"))
    try:
        # journal_mode=WAL is persistent in the file; the others are per connection (above)
        assert conn.execute("PRAGMA journal_mode").fetchall() == [("wal",)]
        assert conn.execute("PRAGMA user_version").fetchall()[0][0] >= 1
        assert conn.execute("SELECT value FROM settings WHERE key = 'server.slowRequestMs'").fetchall() == [("1234",)]
    finally:
        conn.close()
    assert (data_dir / "sidecar.db-wal").exists()


def test_a_write_rolls_back_when_its_function_raises(tmp_path: Path) -> None:
    async def main() -> None:
        db = Database(tmp_path / "sidecar.db")
        db.open()
        try:
            def half(conn: apsw.Connection) -> None:
                conn.execute("INSERT INTO settings (key, value) VALUES ('a.b', '1')")
                raise RuntimeError("halfway")
            with pytest.raises(RuntimeError):
                await db.write(half)
            assert await db.read(lambda c: c.execute("SELECT count(*) FROM settings").fetchall()) == [(0,)]
        finally:
            db.close()

    anyio.run(main)


def test_reads_run_concurrently_with_a_long_write(tmp_path: Path) -> None:
    """WAL: readers are not blocked by an open write transaction (and the loop is not either)."""
    async def main() -> None:
        db = Database(tmp_path / "sidecar.db")
        db.open()
        in_write = threading.Event()
        release = threading.Event()

        def long_write(conn: apsw.Connection) -> None:
            conn.execute("INSERT INTO settings (key, value) VALUES ('a.b', '1')")
            in_write.set()
            assert release.wait(30)

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(db.write, long_write)
                await anyio.to_thread.run_sync(in_write.wait, 30)
                # the uncommitted row is invisible, and the read did not wait for the writer
                assert await db.read(lambda c: c.execute("SELECT count(*) FROM settings").fetchall()) == [(0,)]
                release.set()
            assert await db.read(lambda c: c.execute("SELECT count(*) FROM settings").fetchall()) == [(1,)]
        finally:
            release.set()
            db.close()

    anyio.run(main)


# ---- kill -9 in the middle of writes ----------------------------------------------------

N_WRITES = 1500


def _pipeline_writes(client: DaemonClient, kill_after: int) -> tuple[dict[int, dict[str, Any]], list[dict[str, Any]]]:
    """Send N_WRITES writes (settings and secrets interleaved) without waiting, SIGKILL the
    daemon once `kill_after` have been answered; return the requests and the answers seen."""
    requests: dict[int, dict[str, Any]] = {}
    for i in range(1, N_WRITES + 1):
        if i % 2:
            requests[i] = {"method": "settings/set", "params": {"key": "server.slowRequestMs", "value": 1000 + i}}
        else:
            requests[i] = {"method": "secrets/set", "params": {"name": f"k{i}", "value": f"value-{i}-" + "x" * (i % 97)}}
    answered: queue.Queue[dict[str, Any]] = queue.Queue()
    client.on_message = lambda payload: answered.put(msgspec.json.decode(payload))

    def send_all() -> None:
        try:
            for i, r in requests.items():
                client.send({"jsonrpc": "2.0", "id": i, **r})
        except (BrokenPipeError, OSError):
            pass  # the daemon was killed while we were still sending: expected

    sender = threading.Thread(target=send_all, daemon=True)
    sender.start()
    answers: list[dict[str, Any]] = []
    while len([a for a in answers if "id" in a]) < kill_after:
        answers.append(answered.get(timeout=60))
    client.proc.kill()
    client.proc.wait()
    sender.join(30)
    # everything the daemon wrote before it died still drains from the pipe (responses nobody
    # waits for land in `unrouted` too, after on_message saw them; None marks the end)
    while client.unrouted.get(timeout=30) is not None:
        pass
    while not answered.empty():
        answers.append(answered.get_nowait())
    return requests, answers


@pytest.mark.parametrize("kill_after", [50, 400])
def test_kill_9_during_writes_loses_nothing_acknowledged(spawn: Callable[..., DaemonClient], data_dir: Path,
                                                         kill_after: int) -> None:
    client = spawn()
    requests, answers = _pipeline_writes(client, kill_after)
    acked = sorted(a["id"] for a in answers if "id" in a and "result" in a)
    assert not [a for a in answers if "error" in a]
    assert kill_after <= len(acked) < N_WRITES  # killed with writes still in flight
    print(f"\n[store] kill -9 after {len(acked)} of {N_WRITES} writes acknowledged")

    conn = apsw.Connection(str(data_dir / "sidecar.db"))  # opening recovers the WAL
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        stored = conn.execute("SELECT value FROM settings WHERE key = 'server.slowRequestMs'").fetchall()
        secret_names = {name for (name,) in conn.execute("SELECT name FROM secrets")}
    finally:
        conn.close()

    # settings: writes apply in order, so the stored value is the last acknowledged one or later
    last_setting = max(i for i in acked if i % 2)
    assert stored and int(stored[0][0]) >= requests[last_setting]["params"]["value"]
    # secrets: every acknowledged one is there and decrypts to what was sent
    acked_secrets = [i for i in acked if not i % 2]
    assert {f"k{i}" for i in acked_secrets} <= secret_names

    async def reveal_all() -> None:
        db = Database(data_dir / "sidecar.db")
        db.open()
        try:
            service = SecretService(SecretsStore(db), lambda: FileKeyProvider(data_dir / "secrets.key"))
            for i in acked_secrets:
                assert await service.reveal(f"k{i}") == requests[i]["params"]["value"]
        finally:
            db.close()

    anyio.run(reveal_all)

    # and the daemon starts again on the same data dir and serves what was committed
    again = spawn()
    assert again.request("settings/get", {"key": "server.slowRequestMs"})["value"] == int(stored[0][0])
    listed = {s["name"] for s in again.request("secrets/list")["secrets"]}
    assert listed == secret_names
    health = again.request("system/health")
    assert health["db"]["ok"] is True


def test_reader_connections_are_bounded_and_reused(tmp_path: Path) -> None:
    """anyio retires idle worker threads; their connections must not pile up (a daemon runs
    for weeks). Each anyio.run below has fresh worker threads."""
    db = Database(tmp_path / "sidecar.db")
    db.open()

    async def burst() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(16):
                tg.start_soon(db.read, lambda c: c.execute("SELECT count(*) FROM settings").fetchall())

    try:
        for _ in range(5):
            anyio.run(burst)
        assert 1 <= db.reader_count() <= READ_THREADS
    finally:
        db.close()
    assert db.reader_count() == 0


# ---- the store API: transactions, readers, cancellation, helpers -------------------------

REPO = Path(__file__).resolve().parents[1]

COUNTER = {"0001_test_counter.sql": "CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);\n"
                                    "INSERT INTO counter VALUES (1, 0);"}


def migrations_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    mdir = tmp_path / "m"
    mdir.mkdir(exist_ok=True)
    for name, text in files.items():
        (mdir / name).write_text(text)
    return mdir


_INCREMENT = """
import sys, time
from pathlib import Path
import anyio
from sidecar.store.database import Database

db_path, mdir, ready_dir, count = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])

def increment(conn):
    (n,), = conn.execute("SELECT n FROM counter WHERE id = 1").fetchall()
    time.sleep(0.0005)  # widen the read-to-write window, as real work between them would
    conn.execute("UPDATE counter SET n = ? WHERE id = 1", (n + 1,))

async def main():
    db = Database(db_path, mdir)
    db.open()
    try:
        (ready_dir / str(time.time_ns())).touch()  # start together: both wait for both
        deadline = time.monotonic() + 30
        while len(list(ready_dir.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.001)
        for _ in range(count):
            await db.write(increment)
    finally:
        db.close()

anyio.run(main)
"""


def test_two_processes_doing_read_then_write_never_get_busy(tmp_path: Path) -> None:
    """BEGIN IMMEDIATE: the write lock is taken (waiting up to the busy timeout) before the
    read, so a read-modify-write never finds its snapshot stale. A deferred BEGIN (apsw's
    `with conn:`) fails here with BusyError, busy timeout or not."""
    mdir = migrations_dir(tmp_path, COUNTER)
    db_path = tmp_path / "data" / "sidecar.db"
    db = Database(db_path, mdir)
    db.open()
    db.close()
    ready = tmp_path / "ready"
    ready.mkdir()
    each = 200
    procs = [subprocess.Popen([sys.executable, "-c", _INCREMENT, str(db_path), str(mdir), str(ready), str(each)],
                              cwd=REPO, stderr=subprocess.PIPE) for _ in range(2)]
    errors = [p.communicate(timeout=120)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    conn = apsw.Connection(str(db_path))
    try:
        assert conn.execute("SELECT n FROM counter").fetchall() == [(2 * each,)]
    finally:
        conn.close()


def test_reader_connections_cannot_write(tmp_path: Path) -> None:
    async def main() -> None:
        db = Database(tmp_path / "sidecar.db")
        db.open()
        try:
            with pytest.raises(apsw.ReadOnlyError):
                await db.read(lambda c: c.execute("INSERT INTO settings (key, value) VALUES ('a.b', '1')"))
            with pytest.raises(apsw.ReadOnlyError):
                await db.fetch_all("DELETE FROM settings RETURNING key")
            assert await db.fetch_value("SELECT count(*) FROM settings") == 0
        finally:
            db.close()

    anyio.run(main)


def test_the_writer_connection_is_private(tmp_path: Path) -> None:
    """Start-up code gets `run_now` (one transaction, here and now) instead of the connection."""
    assert not hasattr(Database, "writer")
    db = Database(tmp_path / "sidecar.db")
    db.open()
    try:
        def half(conn: apsw.Connection) -> None:
            conn.execute("INSERT INTO settings (key, value) VALUES ('a.b', '1')")
            raise RuntimeError("halfway")
        with pytest.raises(RuntimeError):
            db.run_now(half)
        db.run_now(lambda c: c.execute("INSERT INTO settings (key, value) VALUES ('c.d', '2')"))
        assert db.run_now(lambda c: c.execute("SELECT key FROM settings").fetchall()) == [("c.d",)]
    finally:
        db.close()
    with pytest.raises(RuntimeError, match="not open"):
        db.run_now(lambda c: None)


# a query that runs for about ten seconds
SLOW = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000000) SELECT count(*) FROM c"


def test_a_cancelled_read_is_interrupted_and_frees_its_thread(tmp_path: Path) -> None:
    async def main() -> None:
        db = Database(tmp_path / "sidecar.db")
        db.open()
        try:
            began = time.perf_counter()
            with anyio.move_on_after(0.05) as scope:
                await db.fetch_value(SLOW)
            assert scope.cancelled_caught  # the caller's cancellation, not an InterruptError
            assert time.perf_counter() - began < 1.0

            # every reader slot busy with a slow query, all cancelled: the next read runs at once
            with anyio.move_on_after(0.05):
                async with anyio.create_task_group() as tg:
                    for _ in range(READ_THREADS + 2):
                        tg.start_soon(db.fetch_value, SLOW)
            began = time.perf_counter()
            with anyio.fail_after(1):
                assert await db.fetch_value("SELECT 42") == 42
            assert time.perf_counter() - began < 0.5
            # and the connections came back clean: no transaction left open, none leaked
            for _ in range(READ_THREADS * 2):
                assert await db.read(lambda c: c.in_transaction) is False
            assert db.reader_count() <= READ_THREADS
        finally:
            db.close()

    anyio.run(main)


def test_a_read_cancelled_between_its_statements_is_interrupted(tmp_path: Path) -> None:
    """interrupt() is a no-op on a connection with no statement running; a read cancelled
    while its function does other work must still not start its next query."""
    async def main() -> None:
        db = Database(tmp_path / "sidecar.db")
        db.open()
        try:
            def two_steps(conn: apsw.Connection) -> object:
                conn.execute("SELECT 1").fetchall()
                time.sleep(0.3)  # cancelled while here
                return conn.execute(SLOW).fetchall()
            began = time.perf_counter()
            with anyio.move_on_after(0.05) as scope:
                await db.read(two_steps)
            assert scope.cancelled_caught
            assert time.perf_counter() - began < 1.5
        finally:
            db.close()

    anyio.run(main)


def test_an_interrupt_that_is_not_a_cancellation_is_an_error(tmp_path: Path) -> None:
    async def main() -> None:
        db = Database(tmp_path / "sidecar.db")
        db.open()
        try:
            def interrupted(conn: apsw.Connection) -> object:
                conn.set_progress_handler(lambda: True, 10, id="test")
                return conn.execute(SLOW).fetchall()
            with pytest.raises(apsw.InterruptError):
                await db.read(interrupted)
        finally:
            db.close()

    anyio.run(main)


class Item(msgspec.Struct, frozen=True):
    id: int
    name: str
    data: bytes | None = None


ITEMS = {"0001_test_items.sql": "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, data BLOB);\n"
                                "CREATE TABLE log (item INTEGER);\n"
                                "CREATE TRIGGER items_log AFTER INSERT ON items BEGIN "
                                "INSERT INTO log VALUES (new.id); INSERT INTO log VALUES (new.id); END;"}


def test_fetch_and_execute_helpers(tmp_path: Path) -> None:
    async def main() -> None:
        db = Database(tmp_path / "sidecar.db", migrations_dir(tmp_path, ITEMS))
        db.open()
        try:
            # rows changed, not counting the trigger's
            assert await db.execute("INSERT INTO items (id, name) VALUES (?, ?)", (1, "one")) == 1
            assert await db.execute_many("INSERT INTO items (id, name, data) VALUES (?, ?, ?)",
                                         [(2, "two", b"\x00\x01"), (3, "three", None)]) == 2
            assert await db.execute("INSERT INTO items (id, name) VALUES (:id, :name)", {"id": 4, "name": "four"}) == 1
            assert await db.fetch_value("SELECT count(*) FROM log") == 8
            assert await db.execute("UPDATE items SET name = upper(name) WHERE id > ?", (2,)) == 2
            assert await db.execute("DELETE FROM items WHERE id = ?", (99,)) == 0
            assert await db.execute("SELECT 1") == 0  # not a change, not the last statement's count

            assert await db.fetch_all("SELECT id, name FROM items ORDER BY id") == [
                (1, "one"), (2, "two"), (3, "THREE"), (4, "FOUR")]
            assert await db.fetch_all("SELECT id, name FROM items WHERE id > 10") == []
            assert await db.fetch_all("SELECT id, name, data FROM items WHERE id < ? ORDER BY id", (3,), as_type=Item) == [
                Item(1, "one"), Item(2, "two", b"\x00\x01")]
            assert await db.fetch_all("SELECT id, name FROM items WHERE id = 1", as_type=dict) == [{"id": 1, "name": "one"}]
            assert await db.fetch_all("SELECT id FROM items WHERE id > 10", as_type=Item) == []
            assert await db.fetch_one("SELECT id, name FROM items ORDER BY id DESC") == (4, "FOUR")
            assert await db.fetch_one("SELECT id, name FROM items WHERE id = 9") is None
            assert await db.fetch_one("SELECT id, name FROM items WHERE id = 2", as_type=Item) == Item(2, "two")
            assert await db.fetch_one("SELECT id, name FROM items WHERE id = 9", as_type=Item) is None
            assert await db.fetch_value("SELECT name FROM items WHERE id = ?", (3,)) == "THREE"
            assert await db.fetch_value("SELECT name FROM items WHERE id = 9", default="none") == "none"
            assert await db.execute_returning("UPDATE items SET name = 'x' WHERE id IN (1, 2) RETURNING id, name",
                                              as_type=Item) in ([Item(1, "x"), Item(2, "x")], [Item(2, "x"), Item(1, "x")])
            assert await db.execute_returning("DELETE FROM items WHERE id = 4 RETURNING id") == [(4,)]
            # a wrong shape is an error, not a silent partial row
            with pytest.raises(msgspec.ValidationError):
                await db.fetch_all("SELECT id FROM items", as_type=Item)
            # an execute_many is one transaction: a failing row undoes the others
            with pytest.raises(apsw.ConstraintError):
                await db.execute_many("INSERT INTO items (id, name) VALUES (?, ?)", [(10, "ten"), (1, "dup")])
            assert await db.fetch_value("SELECT count(*) FROM items WHERE id = 10") == 0
        finally:
            db.close()

    anyio.run(main)


# ---- the commit rule (sidecar/commit.py) ----------------------------------------------------


def test_guard_semantics() -> None:
    calls: list[str] = []
    cancel = functools.partial(calls.append, "cancel")

    idle = RequestGuard(cancel)  # nothing in flight: cancelled at once
    assert idle.request_cancel() is True and calls == ["cancel"]

    calls.clear()
    committing = RequestGuard(cancel)  # in flight, then committed: the cancel is dropped
    with committing.writing():
        assert committing.request_cancel() is True
        assert calls == []
        committing.mark_committed()
    assert calls == [] and committing.committed
    assert committing.request_cancel() is False and calls == []

    rolling_back = RequestGuard(cancel)  # in flight, rolled back: the cancel happens then
    with pytest.raises(RuntimeError):
        with rolling_back.writing():
            rolling_back.request_cancel()
            assert calls == []
            raise RuntimeError("rolled back")
    assert calls == ["cancel"] and not rolling_back.committed


def _insert(key: str) -> Callable[[apsw.Connection], None]:
    return lambda conn: conn.execute("INSERT INTO settings (key, value) VALUES (?, '1')", (key,)).fetchall()


async def _keys(db: Database) -> list[str]:
    return [key for (key,) in await db.fetch_all("SELECT key FROM settings ORDER BY key")]


def test_a_cancel_during_a_write_is_dropped_once_it_commits(tmp_path: Path) -> None:
    async def main() -> None:
        db = Database(tmp_path / "sidecar.db")
        db.open()
        in_write, release = threading.Event(), threading.Event()

        def slow_insert(conn: apsw.Connection) -> str:
            _insert("a.b")(conn)
            in_write.set()
            assert release.wait(30)
            return "done"

        async def cancel_when_writing(guard: RequestGuard) -> None:
            await anyio.to_thread.run_sync(in_write.wait, 30)
            assert guard.request_cancel() is True  # taken note of, deferred
            release.set()

        try:
            results: list[str] = []
            with anyio.CancelScope() as scope:
                guard = RequestGuard(scope.cancel)
                token = current_guard.set(guard)
                try:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(cancel_when_writing, guard)
                        results.append(await db.write(slow_insert))
                        await anyio.lowlevel.checkpoint()  # still not cancelled: it committed
                        results.append(await db.fetch_value("SELECT value FROM settings WHERE key = 'a.b'"))
                finally:
                    current_guard.reset(token)
            assert not scope.cancel_called and not scope.cancelled_caught
            assert results == ["done", "1"]
            assert guard.committed
            assert guard.request_cancel() is False
            assert await _keys(db) == ["a.b"]
        finally:
            release.set()
            db.close()

    anyio.run(main)


def test_a_request_cancelled_before_its_write_writes_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        db = Database(tmp_path / "sidecar.db")
        db.open()
        try:
            reached = False
            with anyio.CancelScope() as scope:
                guard = RequestGuard(scope.cancel)
                token = current_guard.set(guard)
                try:
                    assert guard.request_cancel() is True
                    await db.execute("INSERT INTO settings (key, value) VALUES ('a.b', '1')")
                    reached = True
                finally:
                    current_guard.reset(token)
            assert scope.cancelled_caught and not reached
            assert not guard.committed
            assert await _keys(db) == []
        finally:
            db.close()

    anyio.run(main)


class _HandOverHook:
    """The writer's limiter, calling `on_release` right after each release: the moment the
    writer is handed to the next in line, before that task has run again."""

    def __init__(self, limiter: anyio.CapacityLimiter, on_release: Callable[[], None]) -> None:
        self._limiter, self._on_release = limiter, on_release

    def acquire_nowait(self) -> None:
        self._limiter.acquire_nowait()

    async def acquire(self) -> None:
        await self._limiter.acquire()

    def release(self) -> None:
        self._limiter.release()
        self._on_release()


def test_a_cancel_while_being_handed_the_writer_writes_nothing(tmp_path: Path) -> None:
    """A cancel landing between another write's release and this request's wake-up is not
    delivered at that await (found by CI: answered -32800, yet applied)."""
    async def main() -> None:
        db = Database(tmp_path / "sidecar.db")
        db.open()
        in_write, release = threading.Event(), threading.Event()
        guard_box: list[RequestGuard] = []
        db._write_limiter = _HandOverHook(  # type: ignore[assignment]
            db._write_limiter, lambda: guard_box and guard_box[0].request_cancel())

        def holding_the_writer(conn: apsw.Connection) -> None:
            in_write.set()
            assert release.wait(30)

        async def queued_write() -> None:
            with anyio.CancelScope() as scope:
                guard = RequestGuard(scope.cancel)
                token = current_guard.set(guard)
                try:
                    await anyio.to_thread.run_sync(in_write.wait, 30)
                    guard_box.append(guard)
                    release.set()  # the holder finishes while this one waits for the writer
                    await db.write(_insert("a.b"))
                    outcome.append("written")
                finally:
                    current_guard.reset(token)
            outcome.append("cancelled" if scope.cancelled_caught else "not cancelled")
            assert not guard.committed

        outcome: list[str] = []
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(db.write, holding_the_writer)
                tg.start_soon(queued_write)
            assert outcome == ["cancelled"]
            assert await _keys(db) == []
        finally:
            release.set()
            db.close()

    anyio.run(main)


def test_a_write_rolled_back_after_a_cancel_request_commits_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        db = Database(tmp_path / "sidecar.db")
        db.open()
        try:
            with anyio.CancelScope() as scope:
                guard = RequestGuard(scope.cancel)
                token = current_guard.set(guard)
                loop = anyio.lowlevel.current_token()  # the writer thread is not an anyio worker

                def fails_after_cancel(conn: apsw.Connection) -> None:
                    _insert("a.b")(conn)
                    anyio.from_thread.run_sync(guard.request_cancel, token=loop)
                    raise RuntimeError("constraint")
                try:
                    with pytest.raises(RuntimeError, match="constraint"):
                        await db.write(fails_after_cancel)
                finally:
                    current_guard.reset(token)
            assert scope.cancel_called and not guard.committed
            assert await _keys(db) == []
        finally:
            db.close()

    anyio.run(main)


def test_a_write_without_a_guard_is_shielded(tmp_path: Path) -> None:
    """Background work: a cancel during the write lets it commit, then takes effect."""
    async def main() -> None:
        db = Database(tmp_path / "sidecar.db")
        db.open()
        try:
            def slow_insert(conn: apsw.Connection) -> None:
                _insert("a.b")(conn)
                time.sleep(0.2)
            with anyio.move_on_after(0.05) as scope:
                await db.write(slow_insert)
                await anyio.lowlevel.checkpoint()
            assert scope.cancelled_caught
            assert await _keys(db) == ["a.b"]
        finally:
            db.close()

    anyio.run(main)


# ---- the writer thread ---------------------------------------------------------------------

def _writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "sidecar-db-writer"]


def test_concurrent_writes_run_one_at_a_time_in_arrival_order_off_the_loop(tmp_path: Path) -> None:
    async def main() -> None:
        db = Database(tmp_path / "sidecar.db")
        db.open()
        ran: list[tuple[int, int]] = []  # (write, thread)
        active = [0]

        def numbered(i: int) -> Callable[[apsw.Connection], int]:
            def run(conn: apsw.Connection) -> int:
                active[0] += 1
                assert active[0] == 1  # never two at once
                _insert(f"k.{i:03d}")(conn)
                time.sleep(0.001 if i % 7 == 0 else 0)  # some slower: later ones queue up
                ran.append((i, threading.get_ident()))
                active[0] -= 1
                return i
            return run

        results: list[int] = []

        async def one(i: int) -> None:
            results.append(await db.write(numbered(i)))

        try:
            async with anyio.create_task_group() as tg:
                for i in range(60):
                    tg.start_soon(one, i)
                    if i % 10 == 0:
                        await anyio.lowlevel.checkpoint()  # let some start while others arrive
            assert [i for i, _ in ran] == list(range(60))
            assert sorted(results) == list(range(60))
            threads = {ident for _, ident in ran}
            assert len(threads) == 1 and threading.get_ident() not in threads
            assert await _keys(db) == [f"k.{i:03d}" for i in range(60)]
        finally:
            db.close()

    anyio.run(main)


def test_a_write_cancelled_while_queued_writes_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        db = Database(tmp_path / "sidecar.db")
        db.open()
        in_write, release = threading.Event(), threading.Event()

        def holding_the_writer(conn: apsw.Connection) -> str:
            _insert("a.first")(conn)
            in_write.set()
            assert release.wait(30)
            return "first"

        outcome: list[str] = []

        async def queued(scope: anyio.CancelScope) -> None:
            with scope:
                await db.write(_insert("a.queued"))
                outcome.append("written")
            outcome.append("left while the writer was held" if not release.is_set() else "left later")

        try:
            scope = anyio.CancelScope()
            async with anyio.create_task_group() as tg:
                first = []
                tg.start_soon(lambda: _append(first, db.write(holding_the_writer)))
                await anyio.to_thread.run_sync(in_write.wait, 30)
                tg.start_soon(queued, scope)
                await anyio.wait_all_tasks_blocked()  # queued behind the first
                scope.cancel()
                await anyio.wait_all_tasks_blocked()
                release.set()
            # it left at once, without waiting for the writer, and wrote nothing
            assert first == ["first"] and scope.cancelled_caught
            assert outcome == ["left while the writer was held"]
            assert await _keys(db) == ["a.first"]
            await db.write(_insert("a.after"))  # the writer is free again
            assert await _keys(db) == ["a.after", "a.first"]
        finally:
            release.set()
            db.close()

    anyio.run(main)


async def _append(out: list[Any], awaitable: Any) -> None:
    out.append(await awaitable)


def test_an_error_in_a_write_reaches_its_caller_and_the_writer_goes_on(tmp_path: Path) -> None:
    async def main() -> None:
        db = Database(tmp_path / "sidecar.db")
        db.open()
        try:
            with pytest.raises(apsw.ConstraintError):
                await db.write(lambda c: c.execute("INSERT INTO settings (key, value) VALUES (NULL, '1')"))

            def stops(conn: apsw.Connection) -> None:
                raise StopIteration  # an asyncio Future refuses it as an exception: wrapped
            with pytest.raises(RuntimeError, match="StopIteration"):
                await db.write(stops)
            with pytest.raises(KeyError):
                await db.write(lambda c: {}["missing"])
            assert await db.write(lambda c: c.in_transaction) is True
            assert await db.execute("INSERT INTO settings (key, value) VALUES ('a.b', '1')") == 1
        finally:
            db.close()

    anyio.run(main)


def test_close_waits_for_the_write_in_flight_then_writes_fail(tmp_path: Path) -> None:
    async def main() -> None:
        db = Database(tmp_path / "sidecar.db")
        db.open()
        in_write, release = threading.Event(), threading.Event()

        def slow(conn: apsw.Connection) -> str:
            _insert("a.b")(conn)
            in_write.set()
            assert release.wait(30)
            return "committed"

        closed = threading.Event()

        def close_from_a_thread() -> None:
            in_write.wait(30)
            threading.Timer(0.05, release.set).start()
            db.close()  # waits for the write in flight
            closed.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, close_from_a_thread)
            assert await db.write(slow) == "committed"
        assert closed.is_set()
        with pytest.raises(RuntimeError, match="not open"):
            await db.write(_insert("c.d"))
        conn = apsw.Connection(str(tmp_path / "sidecar.db"))
        try:
            assert conn.execute("SELECT key FROM settings").fetchall() == [("a.b",)]
        finally:
            conn.close()
        # opened again: writes work again (a new writer thread)
        db.open()
        try:
            await db.write(_insert("e.f"))
            assert await _keys(db) == ["a.b", "e.f"]
        finally:
            db.close()

    anyio.run(main)


def test_close_during_a_read_in_flight_lets_the_read_finish(tmp_path: Path) -> None:
    """close() while another thread reads: apsw refuses to close a connection in use
    (ThreadingViolationError, seen in CI); the reader is closed when it is given back."""
    async def main() -> None:
        db = Database(tmp_path / "sidecar.db")
        db.open()
        await db.write(_insert("a.b"))
        await db.read(lambda c: None)  # one idle reader as well
        in_read, release = threading.Event(), threading.Event()
        lent: list[apsw.Connection] = []

        def slow(conn: apsw.Connection) -> list[tuple[str]]:
            lent.append(conn)
            in_read.set()
            assert release.wait(30)
            return conn.execute("SELECT key FROM settings").fetchall()

        async def close_while_reading() -> None:
            await anyio.to_thread.run_sync(in_read.wait, 30)
            db.close()  # must not raise; the idle reader closes now
            release.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(close_while_reading)
            assert await db.read(slow) == [("a.b",)]
        assert db.reader_count() == 0
        with pytest.raises(apsw.ConnectionClosedError):
            lent[0].execute("SELECT 1")  # given back after close(): closed then
        db.open()
        try:
            assert await _keys(db) == ["a.b"]
        finally:
            db.close()

    anyio.run(main)


def test_the_writer_thread_ends_with_its_database(tmp_path: Path) -> None:
    """Closed, or collected without being closed (a tool, a test): no thread left behind."""
    async def write_once(db: Database) -> threading.Thread:
        await db.write(_insert("a.b"))
        [thread] = db._writer_thread._threads
        assert thread.is_alive() and thread in _writer_threads()
        return thread

    db = Database(tmp_path / "one.db")
    db.open()
    thread = anyio.run(write_once, db)
    db.close()
    assert not thread.is_alive()

    forgotten = Database(tmp_path / "two.db")
    forgotten.open()
    thread = anyio.run(write_once, forgotten)
    del forgotten
    gc.collect()
    thread.join(10)
    assert not thread.is_alive()


def test_writes_from_two_event_loops_in_turn(tmp_path: Path) -> None:
    """The writer thread serves whichever loop hands it a write (each anyio.run is a new loop)."""
    db = Database(tmp_path / "sidecar.db")
    db.open()
    try:
        for i in range(3):
            anyio.run(db.execute, "INSERT INTO settings (key, value) VALUES (?, '1')", (f"k.{i}",))
        assert db.run_now(lambda c: c.execute("SELECT count(*) FROM settings").fetchall()) == [(3,)]
    finally:
        db.close()


def test_settings_store_writes(tmp_path: Path) -> None:
    async def main() -> None:
        db = Database(tmp_path / "sidecar.db")
        db.open()
        try:
            store = SettingsStore(db)
            await store.put("a.one", 1)
            await store.put("a.two", {"x": [1, "y"]})
            await store.put_many({"a.three": "3", "a.one": 11}, deleted=["a.two"])
            assert store.load_all_now() == {"a.one": 11, "a.three": "3"}
            await store.delete("a.one")
            await store.put_many({}, deleted=["a.three", "a.none"])
            assert store.load_all_now() == {}
        finally:
            db.close()

    anyio.run(main)
