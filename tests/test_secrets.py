"""Secrets (issue point 14): encrypted at rest with AES-GCM bound to the name, the key in the
OS keyring or a 0600 file, and values never returned, logged, or put in errors."""

from __future__ import annotations

import os
import secrets as pysecrets
import stat
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import anyio
import apsw
import keyring
import keyring.backend
import keyring.errors
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from keyring.backends import fail

from sidecar.client import DaemonClient, RpcError
from sidecar.errors import NotFound, Unavailable
from sidecar.secrets.keys import (
    KEY_BYTES,
    KEYRING_SERVICE,
    FileKeyProvider,
    KeyringKeyProvider,
    KeyUnavailable,
    choose_provider,
)
from sidecar.secrets.service import SecretService
from sidecar.store.database import Database
from sidecar.secrets.store import SecretsStore
from tests.conftest import serve_argv

T = TypeVar("T")


def plaintext() -> str:
    return f"sk-live-{pysecrets.token_hex(16)}"


class _Capture:
    def __init__(self) -> None:
        self.payloads: list[bytes] = []

    def __call__(self, payload: bytes) -> None:
        self.payloads.append(payload)

    def joined(self) -> bytes:
        return b"\n".join(self.payloads)


def files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


# ---- over RPC ---------------------------------------------------------------------------


def test_set_list_delete(spawn: Callable[..., DaemonClient]) -> None:
    capture = _Capture()
    client = spawn(on_message=capture)
    values = {name: plaintext() for name in ("openai/api-key", "db.password", "TOKEN_1")}
    for name, value in values.items():
        meta = client.request("secrets/set", {"name": name, "value": value})
        assert meta["name"] == name and meta["createdAt"] and meta["updatedAt"]
    listed = client.request("secrets/list")
    assert listed["keyBackend"] == "file"
    assert [s["name"] for s in listed["secrets"]] == sorted(values)
    assert all(set(s) == {"name", "createdAt", "updatedAt"} for s in listed["secrets"])

    replaced = client.request("secrets/set", {"name": "TOKEN_1", "value": plaintext()})
    original = next(s for s in listed["secrets"] if s["name"] == "TOKEN_1")
    assert replaced["createdAt"] == original["createdAt"]
    assert replaced["updatedAt"] >= original["updatedAt"]

    assert client.request("secrets/delete", {"name": "db.password"}) == {"name": "db.password", "deleted": True}
    assert [s["name"] for s in client.request("secrets/list")["secrets"]] == ["TOKEN_1", "openai/api-key"]
    with pytest.raises(RpcError) as err:
        client.request("secrets/delete", {"name": "db.password"})
    assert err.value.code == -32001 and err.value.kind == "not_found"
    for value in values.values():
        assert value.encode() not in capture.joined()


def test_values_stay_out_of_files_logs_and_responses(spawn: Callable[..., DaemonClient], data_dir: Path,
                                                     tmp_path: Path) -> None:
    value = plaintext()
    capture = _Capture()
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("wb") as stderr:
        client = spawn("--log-level", "debug", stderr=stderr, on_message=capture)
        client.request("secrets/set", {"name": "api", "value": value})
        client.request("secrets/list")
        # while the daemon runs the row sits in the WAL; check that too
        assert (data_dir / "sidecar.db-wal").exists()
        assert files_containing(data_dir, value.encode()) == []
        assert client.shutdown() == 0
    assert files_containing(data_dir, value.encode()) == []
    assert value.encode() not in stderr_path.read_bytes()
    assert value.encode() not in capture.joined()
    # but it is stored: the ciphertext is there
    conn = apsw.Connection(str(data_dir / "sidecar.db"))
    (nonce, ciphertext), = conn.execute("SELECT nonce, ciphertext FROM secrets WHERE name = 'api'").fetchall()
    conn.close()
    assert len(nonce) == 12 and len(ciphertext) == len(value) + 16  # AES-GCM: same length plus a tag


@pytest.mark.parametrize("params", [
    {"name": "ok", "value": "{v}" * 5000},  # too long
    {"name": "bad name!", "value": "{v}"},
    {"name": "", "value": "{v}"},
    {"name": "ok", "value": {"nested": "{v}"}},
    {"name": "ok", "value": ["{v}"]},
    {"name": 7, "value": "{v}"},
    {"value": "{v}"},
])
def test_errors_never_echo_the_value(daemon: DaemonClient, data_dir: Path, params: dict[str, Any]) -> None:
    value = plaintext()
    filled = {k: (v.replace("{v}", value) if isinstance(v, str) else
                  [x.replace("{v}", value) for x in v] if isinstance(v, list) else
                  {kk: vv.replace("{v}", value) for kk, vv in v.items()} if isinstance(v, dict) else v)
              for k, v in params.items()}
    response = daemon.call("secrets/set", filled)
    assert response["error"]["code"] == -32602
    assert value not in str(response)
    assert value not in (data_dir / "logs" / "sidecar.log").read_text()
    assert daemon.request("secrets/list")["secrets"] == []


def test_a_name_with_a_trailing_newline_is_refused(daemon: DaemonClient) -> None:
    """Python's `$` matches before a final newline: the name pattern ends with `\\Z`."""
    daemon.request("secrets/set", {"name": "api.key", "value": "v"})
    for method, params in (("secrets/set", {"name": "api.key\n", "value": "v"}),
                           ("secrets/delete", {"name": "api.key\n"})):
        response = daemon.call(method, params)
        assert response["error"]["code"] == -32602
        assert response["error"]["data"]["path"] == "$.params.name"
    assert [s["name"] for s in daemon.request("secrets/list")["secrets"]] == ["api.key"]


@pytest.mark.parametrize("name", ["api.key\n", "api.key\r\n", "\napi.key", "api\n.key"])
def test_the_name_type_refuses_newlines(name: str) -> None:
    from protocol.secrets import SecretNameParams

    assert msgspec.json.decode(b'{"name": "api.key"}', type=SecretNameParams).name == "api.key"
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(msgspec.json.encode({"name": name}), type=SecretNameParams)


def test_too_long_value_names_the_field(daemon: DaemonClient) -> None:
    response = daemon.call("secrets/set", {"name": "big", "value": "x" * 65_537})
    assert response["error"]["data"]["path"] == "$.params.value"
    assert "x" * 100 not in str(response)


def test_key_file_is_created_0600(daemon: DaemonClient, data_dir: Path) -> None:
    daemon.request("secrets/set", {"name": "a", "value": "b"})
    key_file = data_dir / "secrets.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert [p.name for p in data_dir.iterdir() if p.name.startswith(".secrets.key")] == []  # no temp left


def test_a_key_file_readable_by_others_is_refused(spawn: Callable[..., DaemonClient], data_dir: Path) -> None:
    first = spawn()
    first.request("secrets/set", {"name": "a", "value": "b"})
    assert first.shutdown() == 0
    key_file = data_dir / "secrets.key"
    key_file.chmod(0o644)
    client = spawn()
    with pytest.raises(RpcError) as err:
        client.request("secrets/set", {"name": "c", "value": "d"})
    assert err.value.code == -32011 and err.value.kind == "unavailable"
    assert "readable by others" in err.value.error["message"] and "chmod 600" in err.value.error["message"]
    # fixing the mode is enough: the next call retries, no restart needed
    key_file.chmod(0o600)
    client.request("secrets/set", {"name": "c", "value": "d"})
    assert [s["name"] for s in client.request("secrets/list")["secrets"]] == ["a", "c"]


def _daemon_without_a_keyring(data_dir: Path, backend: str) -> DaemonClient:
    """A daemon with `--secrets-backend backend` on a machine whose keyring is unusable."""
    argv = serve_argv(data_dir)
    argv[argv.index("file")] = backend
    return DaemonClient(argv, env={**os.environ, "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"})


def test_auto_backend_falls_back_to_the_key_file(data_dir: Path) -> None:
    with _daemon_without_a_keyring(data_dir, "auto") as client:
        client.initialize("pytest")
        client.request("secrets/set", {"name": "a", "value": "b"})
        assert client.request("secrets/list")["keyBackend"] == "file"
    assert (data_dir / "secrets.key").exists()


def test_keyring_backend_without_a_keyring_is_unavailable(data_dir: Path) -> None:
    with _daemon_without_a_keyring(data_dir, "keyring") as client:
        client.initialize("pytest")
        with pytest.raises(RpcError) as err:
            client.request("secrets/set", {"name": "a", "value": "b"})
        assert err.value.kind == "unavailable" and "keyring" in err.value.error["message"]
    assert not (data_dir / "secrets.key").exists()


# ---- SecretService in-process -------------------------------------------------------------


def with_service(data_dir: Path, provider: Callable[[], Any],
                 body: Callable[[SecretService, Database], Awaitable[T]]) -> T:
    async def main() -> T:
        db = Database(data_dir / "sidecar.db")
        db.open()
        try:
            return await body(SecretService(SecretsStore(db), provider), db)
        finally:
            db.close()
    return anyio.run(main)


def file_provider(data_dir: Path) -> Callable[[], FileKeyProvider]:
    return lambda: FileKeyProvider(data_dir / "secrets.key")


def test_reveal_returns_the_value(tmp_path: Path) -> None:
    async def body(service: SecretService, db: Database) -> None:
        await service.set("a", "alpha")
        await service.set("b", "")
        assert await service.reveal("a") == "alpha"
        assert await service.reveal("b") == ""
        with pytest.raises(NotFound):
            await service.reveal("nope")
        await service.delete("a")
        with pytest.raises(NotFound):
            await service.reveal("a")
    with_service(tmp_path, file_provider(tmp_path), body)
    # a new service (a restarted daemon) reads the same key file and the same values
    async def again(service: SecretService, db: Database) -> None:
        assert await service.reveal("b") == ""
    with_service(tmp_path, file_provider(tmp_path), again)


@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.text(max_size=300), min_size=1, max_size=5))
def test_any_value_round_trips(tmp_path_factory: pytest.TempPathFactory, values: list[str]) -> None:
    data_dir = tmp_path_factory.mktemp("rt")

    async def body(service: SecretService, db: Database) -> None:
        for i, value in enumerate(values):
            await service.set(f"s{i}", value)
        for i, value in enumerate(values):
            assert await service.reveal(f"s{i}") == value
    with_service(data_dir, file_provider(data_dir), body)


def _swap_rows(db: Database, a: str, b: str) -> Awaitable[None]:
    def swap(conn: apsw.Connection) -> None:
        rows = dict((n, (nonce, ct)) for n, nonce, ct in conn.execute(
            "SELECT name, nonce, ciphertext FROM secrets WHERE name IN (?, ?)", (a, b)))
        for name, other in ((a, b), (b, a)):
            conn.execute("UPDATE secrets SET nonce = ?, ciphertext = ? WHERE name = ?", (*rows[other], name))
    return db.write(swap)


def test_ciphertext_is_bound_to_its_name(tmp_path: Path) -> None:
    """Swapping two rows' ciphertexts (same key) must not hand one secret out under another name."""
    async def body(service: SecretService, db: Database) -> None:
        await service.set("bank", "bank-password")
        await service.set("forum", "forum-password")
        await _swap_rows(db, "bank", "forum")
        for name in ("bank", "forum"):
            with pytest.raises(Unavailable, match="integrity"):
                await service.reveal(name)
    with_service(tmp_path, file_provider(tmp_path), body)


def test_tampered_ciphertext_fails_integrity(tmp_path: Path) -> None:
    async def body(service: SecretService, db: Database) -> None:
        await service.set("a", "alpha")
        def flip_a_bit(conn: apsw.Connection) -> None:
            (ciphertext,), = conn.execute("SELECT ciphertext FROM secrets WHERE name = 'a'").fetchall()
            tampered = bytes([ciphertext[0] ^ 1]) + ciphertext[1:]
            conn.execute("UPDATE secrets SET ciphertext = ? WHERE name = 'a'", (tampered,))
        await db.write(flip_a_bit)
        with pytest.raises(Unavailable, match="integrity") as err:
            await service.reveal("a")
        assert "alpha" not in str(err.value)
    with_service(tmp_path, file_provider(tmp_path), body)


def test_a_different_key_is_detected(tmp_path: Path) -> None:
    async def store(service: SecretService, db: Database) -> None:
        await service.set("a", "alpha")
    with_service(tmp_path, file_provider(tmp_path), store)
    (tmp_path / "secrets.key").unlink()  # the key is lost; a new one gets made

    async def read(service: SecretService, db: Database) -> None:
        with pytest.raises(Unavailable, match="another key"):
            await service.reveal("a")
    with_service(tmp_path, file_provider(tmp_path), read)


# ---- the key file --------------------------------------------------------------------------


def test_key_file_provider(tmp_path: Path) -> None:
    provider = FileKeyProvider(tmp_path / "sub" / "secrets.key")
    key = provider.load_or_create()
    assert len(key) == KEY_BYTES
    assert stat.S_IMODE(provider.path.stat().st_mode) == 0o600
    assert FileKeyProvider(provider.path).load_or_create() == key
    provider.path.chmod(0o640)
    with pytest.raises(KeyUnavailable, match="readable by others"):
        provider.load_or_create()
    provider.path.chmod(0o600)
    provider.path.write_bytes(b"c2hvcnQ=")  # "short"
    with pytest.raises(KeyUnavailable, match="32-byte key"):
        provider.load_or_create()
    provider.path.write_bytes(b"")  # a truncated file is refused, never replaced silently
    with pytest.raises(KeyUnavailable):
        provider.load_or_create()


def test_racing_processes_agree_on_one_key(tmp_path: Path) -> None:
    """Several processes create the key file at once: all end up with the same key."""
    path = tmp_path / "secrets.key"
    code = ("import sys; from pathlib import Path; from sidecar.secrets.keys import FileKeyProvider; "
            "sys.stdout.write(FileKeyProvider(Path(sys.argv[1])).load_or_create().hex())")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE)
             for _ in range(4)]
    keys = {p.communicate(timeout=60)[0] for p in procs}
    assert len(keys) == 1 and len(next(iter(keys))) == 2 * KEY_BYTES


# ---- the keyring backend --------------------------------------------------------------------


class MemoryKeyring(keyring.backend.KeyringBackend):
    """An OS keyring stand-in: CI machines have no keyring daemon."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.entries: dict[tuple[str, str], str] = {}
        self.broken = False

    def get_password(self, service: str, username: str) -> str | None:
        if self.broken:
            raise keyring.errors.KeyringLocked("locked")
        return self.entries.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        if self.broken:
            raise keyring.errors.PasswordSetError("locked")
        self.entries[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.entries.pop((service, username), None)


@pytest.fixture
def memory_keyring() -> Iterator[MemoryKeyring]:
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    try:
        yield backend
    finally:
        keyring.set_keyring(previous)


@pytest.fixture
def no_keyring() -> Iterator[None]:
    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    try:
        yield
    finally:
        keyring.set_keyring(previous)


def test_keyring_backend_keeps_the_key(memory_keyring: MemoryKeyring, tmp_path: Path) -> None:
    assert KeyringKeyProvider.usable()
    provider = choose_provider("auto", tmp_path)
    assert isinstance(provider, KeyringKeyProvider)

    async def body(service: SecretService, db: Database) -> None:
        assert await service.key_backend() == "keyring"
        await service.set("a", "alpha")
        assert await service.reveal("a") == "alpha"
    with_service(tmp_path, lambda: provider, body)
    assert not (tmp_path / "secrets.key").exists()
    [(service_name, username)] = memory_keyring.entries
    assert service_name == KEYRING_SERVICE and username == provider.username

    # another process (a new provider) finds the same key in the keyring
    async def again(service: SecretService, db: Database) -> None:
        assert await service.reveal("a") == "alpha"
    with_service(tmp_path, lambda: choose_provider("keyring", tmp_path), again)


def test_each_data_dir_has_its_own_keyring_entry(memory_keyring: MemoryKeyring, tmp_path: Path) -> None:
    a = KeyringKeyProvider(tmp_path / "a").load_or_create()
    b = KeyringKeyProvider(tmp_path / "b").load_or_create()
    assert a != b and len(memory_keyring.entries) == 2


def test_a_failing_keyring_is_unavailable_not_internal(memory_keyring: MemoryKeyring, tmp_path: Path) -> None:
    memory_keyring.broken = True
    with pytest.raises(KeyUnavailable, match="KeyringLocked"):
        KeyringKeyProvider(tmp_path).load_or_create()

    async def body(service: SecretService, db: Database) -> None:
        with pytest.raises(Unavailable, match="keyring"):
            await service.set("a", "alpha")
        memory_keyring.broken = False  # unlocked: the next call works
        await service.set("a", "alpha")
        assert await service.reveal("a") == "alpha"
    with_service(tmp_path, lambda: KeyringKeyProvider(tmp_path), body)


def test_a_corrupt_keyring_entry_is_refused(memory_keyring: MemoryKeyring, tmp_path: Path) -> None:
    provider = KeyringKeyProvider(tmp_path)
    memory_keyring.entries[(KEYRING_SERVICE, provider.username)] = "not base64 !"
    with pytest.raises(KeyUnavailable, match="32-byte key"):
        provider.load_or_create()


def test_auto_falls_back_to_file_without_a_keyring(no_keyring: None, tmp_path: Path) -> None:
    assert not KeyringKeyProvider.usable()
    assert isinstance(choose_provider("auto", tmp_path), FileKeyProvider)
    assert isinstance(choose_provider("file", tmp_path), FileKeyProvider)
    assert isinstance(choose_provider("keyring", tmp_path), KeyringKeyProvider)


def test_a_keyring_that_declines_is_not_usable(tmp_path: Path) -> None:
    class Declines(MemoryKeyring):
        @property  # type: ignore[misc]
        def priority(self) -> float:  # type: ignore[override]
            raise RuntimeError("no D-Bus session")

    previous = keyring.get_keyring()
    keyring.set_keyring(Declines())
    try:
        assert not KeyringKeyProvider.usable()
        assert isinstance(choose_provider("auto", tmp_path), FileKeyProvider)
    finally:
        keyring.set_keyring(previous)


def test_auto_keeps_an_existing_key_file_when_a_keyring_appears(memory_keyring: MemoryKeyring,
                                                                tmp_path: Path) -> None:
    """Secrets stored with the key file while no keyring was usable stay readable after a
    keyring becomes usable: auto must not start a new key in the keyring."""
    FileKeyProvider(tmp_path / "secrets.key").load_or_create()
    assert KeyringKeyProvider.usable()
    assert isinstance(choose_provider("auto", tmp_path), FileKeyProvider)
    assert isinstance(choose_provider("keyring", tmp_path), KeyringKeyProvider)  # explicit wins
