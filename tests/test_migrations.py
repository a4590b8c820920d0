"""The migration runner (issue point 9): numbered files, `PRAGMA user_version`, one transaction
each, a backup before and a restore on failure; and `sidecar migrate [--status]`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import apsw
import pytest

from sidecar.store import migrations
from sidecar.store.database import Database, connect
from sidecar.store.migrations import MigrationError
from tests.conftest import serve_argv

REPO = Path(__file__).resolve().parents[1]


def write_migrations(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, sql in files.items():
        (directory / name).write_text(sql)
    return directory


def dump(path: Path) -> tuple[int, list[tuple[object, ...]], dict[str, list[tuple[object, ...]]]]:
    """user_version, schema and every table's rows: 'exactly as before' made comparable."""
    conn = apsw.Connection(str(path))
    try:
        version = migrations.user_version(conn)
        schema = conn.execute("SELECT type, name, sql FROM sqlite_schema ORDER BY name").fetchall()
        tables = {name: conn.execute(f'SELECT * FROM "{name}" ORDER BY rowid').fetchall()
                  for (kind, name, _) in schema if kind == "table"}
        return version, schema, tables
    finally:
        conn.close()


BASE = {
    "0001_zoo_people.sql": "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT NOT NULL);",
    "0002_zoo_age.sql": "ALTER TABLE people ADD COLUMN age INTEGER;\nCREATE INDEX people_age ON people (age);",
}


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "sidecar.db"


def test_applies_in_order_and_tracks_user_version(tmp_path: Path, db_path: Path) -> None:
    mdir = write_migrations(tmp_path / "m", BASE)
    db = Database(db_path, mdir)
    applied = db.open()
    try:
        assert [m.version for m in applied] == [1, 2]
        assert db.run_now(migrations.user_version) == 2
        # 0002 depends on 0001: only in order does the column exist
        db.run_now(lambda c: c.execute("INSERT INTO people (name, age) VALUES ('ada', 36)"))
    finally:
        db.close()
    # reopening applies nothing; a new file applies just that one
    write_migrations(mdir, {"0003_zoo_pets.sql": "CREATE TABLE pets (owner INTEGER REFERENCES people (id));"})
    db = Database(db_path, mdir)
    try:
        assert [m.name for m in db.open()] == ["zoo_pets"]
        assert db.migration_status().current == 3
        assert db.migration_status().pending == []
        assert db.run_now(lambda c: c.execute("SELECT name, age FROM people").fetchall()) == [("ada", 36)]
    finally:
        db.close()
    db = Database(db_path, mdir)
    try:
        assert db.open() == []
    finally:
        db.close()


@pytest.mark.parametrize("names", [
    ["0001_x_a.sql", "0003_x_c.sql"],  # gap
    ["0002_x_b.sql"],  # does not start at 0001
    ["0001_x_a.sql", "0001_x_b.sql"],  # duplicate number
    ["0001_x_a.sql", "0001_x_a.py"],  # duplicate number across kinds: one sequence
    ["0001_x_a.sql", "0003_x_c.py"],  # gap with a Python step
    ["1_x_a.sql"],
    ["0001-x_a.sql"],
    ["0001_x_a b.sql"],
    ["00001_x_a.sql"],
    ["0001_a.sql"],  # no capability: NNNN_<capability>_<what>
    ["0001_a.py"],
    ["0001_X_a.sql"],  # lower case only
    ["0001_x_a_.sql"],
    ["0001__a.sql"],
])
def test_refuses_gaps_and_bad_names(tmp_path: Path, names: list[str]) -> None:
    mdir = write_migrations(tmp_path / "m", {name: "SELECT 1;" for name in names})
    with pytest.raises(MigrationError):
        migrations.discover(mdir)


def test_a_database_newer_than_the_code_is_refused(tmp_path: Path, db_path: Path) -> None:
    mdir = write_migrations(tmp_path / "m", BASE)
    db_path.parent.mkdir(parents=True)
    conn = connect(db_path)
    conn.execute("PRAGMA user_version = 7")
    conn.close()
    db = Database(db_path, mdir)
    with pytest.raises(MigrationError, match="newer"):
        db.open()
    db.close()
    assert dump(db_path)[0] == 7


def test_the_daemon_refuses_a_newer_database(data_dir: Path) -> None:
    conn = connect(data_dir / "sidecar.db")
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    proc = subprocess.run(serve_argv(data_dir), input=b"", capture_output=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == b""
    assert b"newer than this sidecar knows" in proc.stderr
    assert b"Traceback" not in proc.stderr


def test_each_migration_is_one_transaction(tmp_path: Path, db_path: Path) -> None:
    """A fresh database whose first migration fails halfway is left empty."""
    mdir = write_migrations(tmp_path / "m", {
        "0001_zoo_half.sql": "CREATE TABLE a (x INTEGER);\nINSERT INTO a VALUES (1);\nINSERT INTO nowhere VALUES (2);",
    })
    db = Database(db_path, mdir)
    with pytest.raises(MigrationError, match="0001_zoo_half.sql"):
        db.open()
    db.close()
    assert dump(db_path) == (0, [], {})


def test_a_failed_run_on_a_fresh_database_undoes_the_whole_run(tmp_path: Path, db_path: Path) -> None:
    """0001 commits, 0002 fails: the database goes back to empty, not to a half-upgraded 1."""
    mdir = write_migrations(tmp_path / "m", {**BASE, "0002_zoo_age.sql": "CREATE TABLE b (y); SELECT broken("})
    db = Database(db_path, mdir)
    with pytest.raises(MigrationError):
        db.open()
    db.close()
    assert dump(db_path) == (0, [], {})
    # the fixed migration then applies cleanly
    write_migrations(mdir, BASE)
    db = Database(db_path, mdir)
    try:
        assert len(db.open()) == 2
    finally:
        db.close()


def test_a_failing_migration_leaves_the_database_exactly_as_before(tmp_path: Path, db_path: Path) -> None:
    mdir = write_migrations(tmp_path / "m", {"0001_zoo_people.sql": BASE["0001_zoo_people.sql"]})
    db = Database(db_path, mdir)
    db.open()
    db.run_now(lambda c: c.executemany("INSERT INTO people (name) VALUES (?)", [(f"p{i}",) for i in range(500)]))
    db.close()
    before = dump(db_path)

    write_migrations(mdir, {
        "0002_zoo_ok.sql": "CREATE TABLE projects (id INTEGER PRIMARY KEY);\nINSERT INTO projects VALUES (1);",
        "0003_zoo_bad.sql": "CREATE TABLE tags (id INTEGER);\nUPDATE people SET name = 'x';\n"
                        "INSERT INTO tags VALUES (1);\nTHIS IS NOT SQL;",
    })
    db = Database(db_path, mdir)
    with pytest.raises(MigrationError, match="0003_zoo_bad.sql"):
        db.open()
    db.close()
    assert dump(db_path) == before  # 0002 undone too: version 1, no projects, names intact
    backups = list((db_path.parent / "backups").glob("sidecar-v0001-*.db"))
    assert len(backups) == 1
    assert dump(backups[0]) == before
    conn = apsw.Connection(str(db_path))
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert conn.execute("PRAGMA journal_mode").fetchall() == [("wal",)]
    conn.close()


def test_backup_and_restore_round_trip(tmp_path: Path, db_path: Path) -> None:
    mdir = write_migrations(tmp_path / "m", BASE)
    db = Database(db_path, mdir)
    db.open()
    db.close()
    conn = connect(db_path)
    try:
        conn.execute("INSERT INTO people (name, age) VALUES ('a', 1)")
        saved = migrations.backup(conn, tmp_path / "b", 2)
        conn.execute("DELETE FROM people; DROP INDEX people_age; PRAGMA user_version = 5")
        migrations.restore(conn, saved)
        assert migrations.user_version(conn) == 2
        assert conn.execute("SELECT name, age FROM people").fetchall() == [("a", 1)]
    finally:
        conn.close()


def test_old_backups_are_pruned(tmp_path: Path, db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    conn = connect(db_path)
    try:
        for version in range(migrations.KEEP_BACKUPS + 3):
            migrations.backup(conn, tmp_path / "b", version)
    finally:
        conn.close()
    kept = sorted(p.name for p in (tmp_path / "b").glob("*.db"))
    assert len(kept) == migrations.KEEP_BACKUPS
    assert kept[0].startswith("sidecar-v0003-")


def test_shipped_migrations_are_well_formed(tmp_path: Path) -> None:
    found = migrations.discover(migrations.default_migrations_dir())
    assert found and found[0].path.name == "0001_core_settings_secrets.sql"
    conn = apsw.Connection(":memory:")
    try:  # each applies on top of the previous ones, SQL and Python steps alike
        assert migrations.apply(conn, found, tmp_path / "backups") == found
        assert migrations.user_version(conn) == len(found)
    finally:
        conn.close()


# ---- sidecar migrate ------------------------------------------------------------------


def sidecar(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sidecar", *args], capture_output=True, text=True, timeout=60,
                          cwd=REPO)


def test_migrate_status_then_migrate(data_dir: Path) -> None:
    latest = len(migrations.discover(migrations.default_migrations_dir()))
    status = sidecar("migrate", "--data-dir", str(data_dir), "--status")
    assert status.returncode == 0, status.stderr
    assert f"schema version: 0 (latest {latest})" in status.stdout
    assert "0001_core_settings_secrets.sql" in status.stdout

    applied = sidecar("migrate", "--data-dir", str(data_dir))
    assert applied.returncode == 0, applied.stderr
    assert f"applied {latest} migration(s)" in applied.stdout
    assert "0001_core_settings_secrets.sql" in applied.stdout

    status = sidecar("migrate", "--data-dir", str(data_dir), "--status")
    assert f"schema version: {latest} (latest {latest})" in status.stdout
    assert "pending: none" in status.stdout

    again = sidecar("migrate", "--data-dir", str(data_dir))
    assert "applied 0 migration(s)" in again.stdout


def test_migrate_refuses_a_newer_database(data_dir: Path) -> None:
    conn = connect(data_dir / "sidecar.db")
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    for args in (("--status",), ()):
        result = sidecar("migrate", "--data-dir", str(data_dir), *args)
        assert result.returncode == 1
        assert "newer than this sidecar knows" in result.stdout + result.stderr


_OPEN = ("import sys; from pathlib import Path; from sidecar.store.database import Database; "
         "db = Database(Path(sys.argv[1]), Path(sys.argv[2])); db.open(); db.close()")


def test_processes_migrating_at_once_agree(tmp_path: Path, db_path: Path) -> None:
    """Two daemons started together on a fresh data dir: both come up, neither undoes the
    other's migration."""
    many = {f"{i:04d}_zoo_t{i}.sql": f"CREATE TABLE t{i} (x INTEGER);\nINSERT INTO t{i} VALUES ({i});"
            for i in range(1, 31)}
    mdir = write_migrations(tmp_path / "m", many)
    db_path.parent.mkdir(parents=True)
    for attempt in range(3):
        for p in db_path.parent.glob("sidecar.db*"):
            p.unlink()
        procs = [subprocess.Popen([sys.executable, "-c", _OPEN, str(db_path), str(mdir)], cwd=REPO,
                                  stderr=subprocess.PIPE) for _ in range(4)]
        errors = [p.communicate(timeout=60)[1].decode() for p in procs]
        assert [p.returncode for p in procs] == [0] * 4, errors
        version, schema, tables = dump(db_path)
        assert version == 30
        assert tables == {f"t{i}": [(i,)] for i in range(1, 31)}


def test_a_table_rebuild_keeps_child_rows_and_foreign_keys_are_checked(tmp_path: Path) -> None:
    """The usual SQLite table rebuild (create, copy, drop, rename) of a parent table must not
    cascade-delete its children; a migration that leaves dangling references fails."""
    m = migrations
    mig = tmp_path / "mig"
    mig.mkdir()
    (mig / "0001_core_settings_secrets.sql").write_text(
        "CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT);"
        "CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER NOT NULL "
        "REFERENCES parent(id) ON DELETE CASCADE);"
        "INSERT INTO parent VALUES (1, 'a'); INSERT INTO child VALUES (10, 1);")
    (mig / "0002_core_rebuild.sql").write_text(
        "CREATE TABLE parent_new (id INTEGER PRIMARY KEY, name TEXT NOT NULL DEFAULT '');"
        "INSERT INTO parent_new SELECT id, name FROM parent; DROP TABLE parent;"
        "ALTER TABLE parent_new RENAME TO parent;")
    conn = connect(tmp_path / "db.sqlite")
    m.apply(conn, m.discover(mig), tmp_path / "backups")
    assert conn.execute("SELECT id, parent_id FROM child").fetchall() == [(10, 1)]
    assert conn.execute("PRAGMA foreign_keys").fetchall() == [(1,)]  # back on afterwards

    (mig / "0003_core_dangling.sql").write_text("DELETE FROM parent;")  # cascade is off: would dangle
    with pytest.raises(m.MigrationError, match="foreign key"):
        m.apply(conn, m.discover(mig), tmp_path / "backups")
    assert m.user_version(conn) == 2
    assert conn.execute("SELECT count(*) FROM parent").fetchall() == [(1,)]
    assert conn.execute("PRAGMA foreign_keys").fetchall() == [(1,)]
    conn.close()


# ---- Python steps ------------------------------------------------------------------------

SPLIT_NAMES = """
import unicodedata

import apsw


def migrate(conn: apsw.Connection) -> None:
    # what SQL cannot do: Unicode normalisation and splitting on the last space
    conn.execute("ALTER TABLE people ADD COLUMN family TEXT")
    rows = conn.execute("SELECT id, name FROM people").fetchall()
    for person_id, name in rows:
        given, _, family = unicodedata.normalize("NFC", name).rpartition(" ")
        conn.execute("UPDATE people SET name = ?, family = ? WHERE id = ?", (given, family, person_id))
"""


def test_a_python_step_runs_in_sequence_with_sql_steps(tmp_path: Path, db_path: Path) -> None:
    mdir = write_migrations(tmp_path / "m", {
        "0001_zoo_people.sql": BASE["0001_zoo_people.sql"] + "\nINSERT INTO people (name) VALUES ('Ada Lovelace'), "
                               "('Jose\u0301 de San Marti\u0301n');",
        "0002_zoo_split_names.py": SPLIT_NAMES,
        "0003_zoo_family_index.sql": "CREATE INDEX people_family ON people (family);",
    })
    found = migrations.discover(mdir)
    assert [(m.version, m.kind, m.capability) for m in found] == [(1, "sql", "zoo"), (2, "py", "zoo"), (3, "sql", "zoo")]
    db = Database(db_path, mdir)
    try:
        assert [m.name for m in db.open()] == ["zoo_people", "zoo_split_names", "zoo_family_index"]
        assert db.run_now(migrations.user_version) == 3
        assert db.run_now(lambda c: c.execute("SELECT name, family FROM people ORDER BY id").fetchall()) == [
            ("Ada", "Lovelace"), ("Jos\u00e9 de San", "Mart\u00edn")]
    finally:
        db.close()
    assert not [name for name in sys.modules if name.startswith("sidecar_migration_")]


@pytest.mark.parametrize("body, message", [
    ("def migrate(conn):\n    conn.execute(\"UPDATE people SET name = 'x'\")\n    raise ValueError('bad row')\n",
     "bad row"),
    ("def migrate(conn):\n    conn.execute(\"UPDATE people SET name = 'x'\")\n    conn.execute('COMMIT')\n",
     "ended the transaction"),
    ("def migrate(conn):\n    conn.execute(\"DELETE FROM people\")\n    conn.execute('INSERT INTO pets VALUES (99)')\n",
     "foreign key"),
])
def test_a_failing_python_step_leaves_the_database_exactly_as_before(tmp_path: Path, db_path: Path,
                                                                      body: str, message: str) -> None:
    mdir = write_migrations(tmp_path / "m", {
        "0001_zoo_people.sql": BASE["0001_zoo_people.sql"] + "\nINSERT INTO people (name) VALUES ('a'), ('b');"
                               "\nCREATE TABLE pets (owner INTEGER REFERENCES people (id));",
    })
    db = Database(db_path, mdir)
    db.open()
    db.close()
    before = dump(db_path)
    write_migrations(mdir, {"0002_zoo_ok.sql": "CREATE TABLE projects (id INTEGER PRIMARY KEY);",
                            "0003_zoo_bad.py": body})
    db = Database(db_path, mdir)
    with pytest.raises(MigrationError, match=message):
        db.open()
    db.close()
    assert dump(db_path) == before


@pytest.mark.parametrize("body, message", [
    ("def migrate(conn)\n    pass\n", "cannot load"),  # a syntax error
    ("import no_such_module_here\n", "cannot load"),
    ("MIGRATE = 1\n", "no migrate"),
])
def test_a_python_step_that_cannot_load_fails_before_anything_changes(tmp_path: Path, db_path: Path,
                                                                      body: str, message: str) -> None:
    mdir = write_migrations(tmp_path / "m", {"0001_zoo_people.sql": BASE["0001_zoo_people.sql"]})
    db = Database(db_path, mdir)
    db.open()
    db.close()
    before = dump(db_path)
    write_migrations(mdir, {"0002_zoo_ok.sql": "CREATE TABLE projects (id INTEGER PRIMARY KEY);",
                            "0003_zoo_broken.py": body})
    db = Database(db_path, mdir)
    with pytest.raises(MigrationError, match=message):
        db.open()
    db.close()
    assert dump(db_path) == before
    assert not (db_path.parent / "backups").exists()  # it failed before even the backup
