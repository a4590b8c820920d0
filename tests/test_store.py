"""The embedded store (issue point 9): pragmas on the real file, work off the event loop, and
nothing lost when the daemon is killed -9 in the middle of write transactions."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import apsw
import msgspec
import pytest

from sidecar.client import DaemonClient
from sidecar.secrets.keys import FileKeyProvider
from sidecar.secrets.service import SecretService
from sidecar.store.database import BUSY_TIMEOUT_MS, READ_THREADS, Database
from sidecar.secrets.store import SecretsStore

PRAGMAS = ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")


def pragmas(conn: apsw.Connection) -> dict[str, Any]:
    return {name: conn.execute(f"PRAGMA {name}").fetchall()[0][0] for name in PRAGMAS}


EXPECTED = {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": BUSY_TIMEOUT_MS, "synchronous": 1}


def test_writer_and_reader_connections_are_configured(tmp_path: Path) -> None:
    async def main() -> None:
        db = Database(tmp_path / "sidecar.db")
        db.open()
        try:
            assert pragmas(db.writer) == EXPECTED
            assert await db.read(pragmas) == EXPECTED
            assert await db.write(pragmas) == EXPECTED
        finally:
            db.close()

    anyio.run(main)


def test_foreign_keys_are_enforced(tmp_path: Path) -> None:
    mdir = tmp_path / "m"
    mdir.mkdir()
    (mdir / "0001_fk.sql").write_text("CREATE TABLE parent (id INTEGER PRIMARY KEY);\n"
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
