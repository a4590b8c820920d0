"""sidecar doctor: each check on real directories, databases, key files and sockets."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import apsw

from sidecar.system import doctor
from sidecar.system.doctor import Check


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def sidecar(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sidecar", *args], capture_output=True, text=True, timeout=60)


def migrated(data_dir: Path) -> Path:
    proc = sidecar("migrate", "--data-dir", str(data_dir))
    assert proc.returncode == 0, proc.stderr
    return data_dir / "sidecar.db"


def test_a_fresh_machine_has_warnings_and_no_problem_and_nothing_is_created(tmp_path: Path) -> None:
    data_dir = tmp_path / "not-yet"
    checks = doctor.run_checks(data_dir)
    assert not doctor.has_problem(checks), doctor.render(checks)
    named = by_name(checks)
    assert named["data dir"].status == "warning" and "does not exist yet" in named["data dir"].detail
    assert named["database"].status == "warning" and f"--data-dir {data_dir}" in (named["database"].fix or "")
    assert named["python"].status == "ok"
    assert "msgspec" in named["sidecar"].detail and "apsw" in named["sidecar"].detail
    assert not data_dir.exists()  # doctor looks, never makes


def test_a_migrated_database_is_ok(data_dir: Path) -> None:
    migrated(data_dir)
    os.chmod(data_dir, 0o700)
    named = by_name(doctor.run_checks(data_dir))
    assert named["data dir"].status == "ok"
    assert named["database integrity"].status == "ok" and "quick_check ok" in named["database integrity"].detail
    assert named["migrations"].status == "ok" and "(latest)" in named["migrations"].detail


def test_pending_migrations_are_a_warning_with_the_fix(data_dir: Path) -> None:
    conn = apsw.Connection(str(data_dir / "sidecar.db"))  # an empty database: schema version 0
    conn.execute("CREATE TABLE t(x)")
    conn.close()
    check = by_name(doctor.check_database(data_dir))["migrations"]
    assert check.status == "warning" and "schema version 0" in check.detail and "0001_" in check.detail
    assert check.fix is not None and check.fix.startswith(f"sidecar migrate --data-dir {data_dir}")


def test_a_newer_schema_or_a_damaged_file_is_a_problem(data_dir: Path) -> None:
    conn = apsw.Connection(str(data_dir / "sidecar.db"))
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    [check] = doctor.check_database(data_dir)
    assert check.status == "problem" and "newer than this sidecar knows" in check.detail

    (data_dir / "sidecar.db").write_bytes(b"this is not a database, " * 200)
    [check] = doctor.check_database(data_dir)
    assert check.status == "problem" and check.fix is not None and "backups" in check.fix


def test_a_corrupt_page_fails_the_integrity_check(data_dir: Path) -> None:
    path = migrated(data_dir)
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA journal_mode = DELETE")  # one file, so the damage below is all there is
    conn.execute("CREATE TABLE filler(x); INSERT INTO filler SELECT randomblob(500) FROM "
                 "(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200) SELECT i FROM n)")
    conn.execute("CREATE INDEX filler_x ON filler(x)")
    page_size = conn.execute("PRAGMA page_size").fetchall()[0][0]
    conn.close()
    data = bytearray(path.read_bytes())
    for page in range(3, len(data) // page_size):  # scribble over every page's header after the schema
        data[page * page_size:page * page_size + 8] = b"\xff" * 8
    path.write_bytes(bytes(data))
    named = by_name(doctor.check_database(data_dir))
    check = named.get("database integrity") or named["database"]
    assert check.status == "problem", check


def test_data_dir_permissions(data_dir: Path) -> None:
    os.chmod(data_dir, 0o755)
    [check] = doctor.check_data_dir(data_dir)
    assert check.status == "warning" and check.fix == f"chmod 700 {data_dir}"
    a_file = data_dir / "file"
    a_file.write_text("")
    [check] = doctor.check_data_dir(a_file)
    assert check.status == "problem" and "not a directory" in check.detail


def test_secrets_key_file_checks(data_dir: Path) -> None:
    key_file = data_dir / "secrets.key"
    [check] = doctor.check_secrets_key(data_dir)
    assert check.status == "ok"  # the keyring, or a key file made on first use
    assert not key_file.exists()
    from sidecar.secrets.keys import FileKeyProvider

    FileKeyProvider(key_file).load_or_create()
    [check] = doctor.check_secrets_key(data_dir)
    assert check.status == "ok" and "key file" in check.detail
    os.chmod(key_file, 0o644)
    [check] = doctor.check_secrets_key(data_dir)
    assert check.status == "problem" and check.fix is not None and "chmod 600" in check.fix


def test_free_disk_is_reported_for_a_directory_not_made_yet(tmp_path: Path) -> None:
    [check] = doctor.check_disk(tmp_path / "a" / "b")
    assert check.status in ("ok", "warning", "problem") and str(tmp_path) in check.detail
    assert "free" in check.detail


def test_optional_parts_are_probed_without_importing() -> None:
    assert doctor.has_module("json") and not doctor.has_module("no_such_module_for_doctor")
    before = set(sys.modules)
    doctor.check_optional_modules()
    doctor.check_voice()
    assert not {"wasmtime", "asyncpg", "aiomysql", "aioboto3", "dulwich", "pyttsx3",
                "pywhispercpp", "faster_whisper"} & (set(sys.modules) - before)

    none = by_name(doctor.check_optional_modules(has=lambda name: False) + doctor.check_voice(
        has=lambda name: False, which=lambda name: None))
    assert none["plugins: wasmtime"] == Check("plugins: wasmtime", "warning",
                                              "not installed: WebAssembly plugins unavailable",
                                              "pip install wasmtime")
    assert none["text to speech: espeak-ng"].fix is not None and "apt install espeak-ng" in none[
        "text to speech: espeak-ng"].fix
    assert all(c.status == "warning" and c.fix for c in none.values())
    every = doctor.check_optional_modules(has=lambda name: True) + doctor.check_voice(
        has=lambda name: True, which=lambda name: f"/usr/bin/{name}")
    assert all(c.status == "ok" for c in every)


def test_node_is_found_on_path_or_reported() -> None:
    [check] = doctor.check_node(which=lambda name: None)
    assert check.status == "warning" and check.fix is not None and "nodejs" in check.fix
    [check] = doctor.check_node(which=lambda name: sys.executable)  # a program that answers --version
    assert check.status == "ok" and "Python 3" in check.detail


def test_database_server_profiles_are_probed_by_tcp_only_when_configured() -> None:
    [check] = doctor.check_database_servers()
    assert check.status == "ok" and "none configured" in check.detail
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        [check] = doctor.check_database_servers([("local", "127.0.0.1", port)])
        assert check.status == "ok"
    [check] = doctor.check_database_servers([("gone", "127.0.0.1", port)])  # closed now
    assert check.status == "problem" and check.fix is not None


def test_doctor_cli_text_json_and_exit_codes(data_dir: Path) -> None:
    migrated(data_dir)
    os.chmod(data_dir, 0o700)
    proc = sidecar("doctor", "--data-dir", str(data_dir))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[0].startswith("ok       python")
    assert proc.stdout.rstrip().splitlines()[-1].startswith("0 problem(s), ")

    proc = sidecar("doctor", "--data-dir", str(data_dir), "--json")
    document = json.loads(proc.stdout)
    assert document["ok"] is True and document["dataDir"] == str(data_dir)
    assert {c["status"] for c in document["checks"]} <= {"ok", "warning"}

    (data_dir / "sidecar.db").write_bytes(b"this is not a database, " * 200)
    proc = sidecar("doctor", "--data-dir", str(data_dir), "--json")
    assert proc.returncode == 1
    document = json.loads(proc.stdout)
    assert document["ok"] is False
    assert [c["name"] for c in document["checks"] if c["status"] == "problem"] == ["database"]


def test_a_data_dir_that_cannot_be_made_is_a_problem(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("")
    [check] = doctor.check_data_dir(a_file / "data")
    assert check.status == "problem" and "cannot be made" in check.detail and check.fix
