"""Where the key that encrypts secrets lives: the OS keyring, or a 0600 file.

`keyring` is imported on first use (it scans entry points). On a headless machine it has
no usable backend; then the key lives in `<data dir>/secrets.key`, created 0600 and read
only if it is still 0600 and ours.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import secrets
import stat
import sys
from pathlib import Path
from typing import Protocol

log = logging.getLogger("sidecar.secrets")

KEY_BYTES = 32
KEYRING_SERVICE = "sidecar"


class KeyUnavailable(Exception):
    pass


class KeyProvider(Protocol):
    name: str

    def load_or_create(self) -> bytes: ...


class FileKeyProvider:
    name = "file"

    def __init__(self, path: Path) -> None:
        self.path = path

    def load_or_create(self) -> bytes:
        try:
            return self._load()
        except FileNotFoundError:
            pass
        self.path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(KEY_BYTES)
        # write a private temporary file, then link it into place: a crash mid-write never
        # leaves a truncated key file behind, and of two racing processes exactly one wins
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(base64.b64encode(key))
                f.flush()
                os.fsync(f.fileno())  # secrets encrypted with this key outlive a power cut only if it does
            try:
                os.link(temp, self.path)
            except FileExistsError:  # another process made it first: use theirs
                return self._load()
        finally:
            temp.unlink(missing_ok=True)
        log.info("created secrets key file %s", self.path)
        return key

    def _load(self) -> bytes:
        info = os.stat(self.path)
        if sys.platform != "win32":
            if stat.S_IMODE(info.st_mode) & 0o077:
                raise KeyUnavailable(f"{self.path} is readable by others; refusing to use it (chmod 600)")
            if info.st_uid != os.getuid():
                raise KeyUnavailable(f"{self.path} belongs to another user; refusing to use it")
        try:
            key = base64.b64decode(self.path.read_bytes(), validate=True)
        except ValueError:
            key = b""
        if len(key) != KEY_BYTES:
            raise KeyUnavailable(f"{self.path} does not hold a {KEY_BYTES}-byte key")
        return key


class KeyringKeyProvider:
    name = "keyring"

    def __init__(self, data_dir: Path) -> None:
        # one key per data directory, so two profiles never share a key
        self.username = "key-" + hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]

    @staticmethod
    def usable() -> bool:
        try:
            import keyring
            from keyring.backends import fail
        except Exception:  # noqa: BLE001 - a broken keyring install means "no keyring"
            return False
        from keyring.backends.chainer import ChainerBackend

        try:
            backend = keyring.get_keyring()
            if isinstance(backend, fail.Keyring):
                return False
            if isinstance(backend, ChainerBackend):
                return bool(backend.backends)
            # a backend says "not here" with a priority that raises (keyring's convention)
            return float(getattr(backend, "priority", 0)) > 0
        except Exception:  # noqa: BLE001 - any failure to probe means "no keyring"
            return False

    def load_or_create(self) -> bytes:
        import keyring

        try:
            stored = keyring.get_password(KEYRING_SERVICE, self.username)
            if stored is None:
                keyring.set_password(KEYRING_SERVICE, self.username,
                                     base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode())
                # read back: a backend that silently drops writes is caught here. (Two
                # processes creating the key at the same moment can still each keep their own:
                # the keyring has no create-if-absent; the file backend does, via link.)
                stored = keyring.get_password(KEYRING_SERVICE, self.username)
        except Exception as exc:  # noqa: BLE001 - keyring backends raise many types
            raise KeyUnavailable(f"the OS keyring failed: {type(exc).__name__}") from None
        try:
            key = base64.b64decode(stored or "", validate=True)
        except ValueError:
            key = b""
        if len(key) != KEY_BYTES:
            raise KeyUnavailable(f"the OS keyring entry {KEYRING_SERVICE}/{self.username} does not hold "
                                 f"a {KEY_BYTES}-byte key")
        return key


def choose_provider(backend: str, data_dir: Path) -> KeyProvider:
    """`backend` is "keyring", "file" or "auto".

    auto: a key file that already exists wins (secrets were stored with it while no keyring
    was usable; switching to a new keyring key would make them unreadable); else the
    keyring where one is usable; else a new key file.
    """
    file_provider = FileKeyProvider(data_dir / "secrets.key")
    if backend == "file" or (backend == "auto" and file_provider.path.exists()):
        return file_provider
    if backend == "keyring" or KeyringKeyProvider.usable():
        return KeyringKeyProvider(data_dir)
    return file_provider


def key_id(key: bytes) -> str:
    """A fingerprint naming the key, safe to store beside the ciphertext."""
    return hashlib.sha256(b"sidecar-key-id" + key).hexdigest()[:16]
