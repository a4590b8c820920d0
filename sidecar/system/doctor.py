"""Checks a user (or a shell's settings page) runs when something is wrong.

Each check is a plain function returning `Check`s: ok / warning / problem, what was found,
and how to fix it. Nothing here knows JSON-RPC, so `sidecar doctor` and a later
`system/doctor` method share it. The checks look and never change anything: no directory,
database or key is created, and optional parts are probed with `importlib.util.find_spec`
and `shutil.which`, never imported.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import msgspec

from sidecar.sizes import human_bytes

Status = Literal["ok", "warning", "problem"]

#: free space below which the database and logs are at risk
DISK_PROBLEM_BYTES = 100 << 20
DISK_WARNING_BYTES = 1 << 30
#: the dependencies to report when the package metadata cannot be read (a source tree)
CORE_PACKAGES = ("anyio", "msgspec", "apsw", "httpx", "psutil", "cryptography", "keyring")


class Check(msgspec.Struct, frozen=True, omit_defaults=True):
    name: str
    status: Status
    detail: str
    #: what to do about a warning or a problem
    fix: str | None = None


# ---- the installation ------------------------------------------------------------------


def check_python() -> list[Check]:
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info < (3, 11):
        return [Check("python", "problem", f"{version} at {sys.executable}; sidecar needs 3.11 or newer",
                      "install Python 3.11+ and reinstall sidecar with it")]
    return [Check("python", "ok", f"{version} at {sys.executable}")]


def check_packages() -> list[Check]:
    try:
        own = importlib.metadata.version("sidecar")
        names = _requirement_names(importlib.metadata.requires("sidecar") or [])
    except importlib.metadata.PackageNotFoundError:
        own, names = "not installed (running from a source tree)", list(CORE_PACKAGES)
    found, missing = [], []
    for name in names:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    checks = [Check("sidecar", "ok", f"{own}; {', '.join(found)}")]
    if missing:
        checks.append(Check("dependencies", "problem", f"missing: {', '.join(missing)}",
                            f"pip install {' '.join(missing)}  (or reinstall sidecar)"))
    return checks


def _requirement_names(requirements: Sequence[str]) -> list[str]:
    """Package names of the requirements that are not extras ("pytest>=8; extra == 'dev'")."""
    names = []
    for requirement in requirements:
        if "extra ==" in requirement.replace('"', "'"):
            continue
        if match := re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement):
            names.append(match[0])
    return names


# ---- the data directory and what is in it -----------------------------------------------


def check_data_dir(data_dir: Path) -> list[Check]:
    if not data_dir.exists():
        parent = data_dir.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            return [Check("data dir", "problem", f"{data_dir} does not exist and cannot be made: "
                          f"{parent} is not a writable directory", "pass --data-dir DIR, a directory you can write")]
        return [Check("data dir", "warning", f"{data_dir} does not exist yet",
                      f"it is made on first start, or by: sidecar migrate --data-dir {data_dir}")]
    if not data_dir.is_dir():
        return [Check("data dir", "problem", f"{data_dir} is not a directory",
                      "move the file away, or pass --data-dir DIR")]
    checks = []
    if not os.access(data_dir, os.W_OK | os.X_OK):
        checks.append(Check("data dir", "problem", f"{data_dir} is not writable by this user",
                            f"chown -R $USER {data_dir}  (or pass --data-dir DIR)"))
    mode = stat.S_IMODE(data_dir.stat().st_mode)
    if sys.platform != "win32" and mode & 0o077:
        checks.append(Check("data dir permissions", "warning",
                            f"{data_dir} is mode {mode:o}: others may read the database and logs",
                            f"chmod 700 {data_dir}"))
    return checks or [Check("data dir", "ok", f"{data_dir} (mode {mode:o})")]


def check_database(data_dir: Path, migrations_dir: Path | None = None) -> list[Check]:
    import apsw

    from sidecar.store import migrations

    path = data_dir / "sidecar.db"
    if not path.exists():
        return [Check("database", "warning", f"{path} does not exist yet",
                      f"sidecar migrate --data-dir {data_dir}  (creates it; so does the daemon's first start)")]
    try:
        conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    except apsw.Error as exc:
        return [Check("database", "problem", f"{path} cannot be opened: {exc}",
                      "check its owner and permissions")]
    try:
        integrity = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
        known = migrations.discover(migrations_dir or migrations.default_migrations_dir())
        state = migrations.status(conn, known)
    except (apsw.Error, migrations.MigrationError) as exc:
        backups = data_dir / "backups"
        return [Check("database", "problem", f"{path}: {exc}",
                      f"restore a copy from {backups}, or move the file away to start afresh")]
    finally:
        conn.close()
    size = path.stat().st_size
    if integrity != ["ok"]:
        shown = "; ".join(integrity[:3]) + (" ..." if len(integrity) > 3 else "")
        checks = [Check("database integrity", "problem", f"{path}: {shown}",
                        f"restore a copy from {data_dir / 'backups'}")]
    else:
        checks = [Check("database integrity", "ok", f"{path} ({human_bytes(size)}): quick_check ok")]
    if state.pending:
        checks.append(Check("migrations", "warning",
                            f"schema version {state.current}, {len(state.pending)} pending "
                            f"({', '.join(m.path.name for m in state.pending)})",
                            f"sidecar migrate --data-dir {data_dir}  (the daemon also applies them when it starts)"))
    else:
        checks.append(Check("migrations", "ok", f"schema version {state.current} (latest)"))
    return checks


def check_secrets_key(data_dir: Path) -> list[Check]:
    """Which backend `--secrets-backend auto` would use, and whether its key is usable."""
    from sidecar.secrets.keys import FileKeyProvider, KeyringKeyProvider, KeyUnavailable

    key_file = data_dir / "secrets.key"
    if key_file.exists():
        try:
            FileKeyProvider(key_file).load_or_create()  # it exists: this only reads and checks it
        except (KeyUnavailable, OSError) as exc:
            return [Check("secrets key", "problem", f"key file: {exc}",
                          f"chmod 600 {key_file}; if it is damaged, secrets stored with it are lost: "
                          "move it away and set them again")]
        return [Check("secrets key", "ok", f"key file {key_file} (mode 600)")]
    if KeyringKeyProvider.usable():
        import keyring

        return [Check("secrets key", "ok", f"OS keyring ({type(keyring.get_keyring()).__name__})")]
    return [Check("secrets key", "ok", f"no OS keyring here: a 0600 key file {key_file} is made on first use")]


def check_disk(data_dir: Path) -> list[Check]:
    place = data_dir
    while not place.exists() and place != place.parent:
        place = place.parent
    try:
        free = shutil.disk_usage(place).free
    except OSError as exc:
        return [Check("free disk", "warning", f"cannot tell for {place}: {exc.strerror}")]
    detail = f"{human_bytes(free)} free on the file system of {place}"
    if free < DISK_PROBLEM_BYTES:
        return [Check("free disk", "problem", detail, "free some space: the database and logs need it")]
    if free < DISK_WARNING_BYTES:
        return [Check("free disk", "warning", detail, "free some space soon")]
    return [Check("free disk", "ok", detail)]


# ---- optional parts --------------------------------------------------------------------

#: (check name, module, what it enables, how to install it)
OPTIONAL_MODULES = (
    ("plugins: wasmtime", "wasmtime", "WebAssembly plugins", "pip install wasmtime"),
    ("PostgreSQL driver: asyncpg", "asyncpg", "PostgreSQL connections (and team mode)", "pip install asyncpg"),
    ("MySQL driver: aiomysql", "aiomysql", "MySQL/MariaDB connections", "pip install aiomysql"),
    ("S3: aioboto3", "aioboto3", "the S3 connector", "pip install aioboto3"),
    ("Git: dulwich", "dulwich", "the Git connector", "pip install dulwich"),
)


def has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def check_optional_modules(has: Callable[[str], bool] = has_module) -> list[Check]:
    checks = []
    for name, module, enables, fix in OPTIONAL_MODULES:
        if has(module):
            checks.append(Check(name, "ok", f"installed: {enables} usable"))
        else:
            checks.append(Check(name, "warning", f"not installed: {enables} unavailable", fix))
    return checks


def check_voice(has: Callable[[str], bool] = has_module,
                which: Callable[[str], str | None] = shutil.which) -> list[Check]:
    engines = [m for m in ("pywhispercpp", "faster_whisper") if has(m)]
    checks = [
        Check("speech to text", "ok", f"engine: {', '.join(engines)}") if engines else
        Check("speech to text", "warning", "no engine installed (pywhispercpp or faster_whisper)",
              "pip install pywhispercpp  (or: pip install faster-whisper)"),
        Check("text to speech: pyttsx3", "ok", "installed") if has("pyttsx3") else
        Check("text to speech: pyttsx3", "warning", "not installed", "pip install pyttsx3"),
    ]
    espeak = which("espeak-ng")
    checks.append(Check("text to speech: espeak-ng", "ok", espeak) if espeak else
                  Check("text to speech: espeak-ng", "warning", "not on PATH (pyttsx3 speaks through it on Linux)",
                        "apt install espeak-ng  (macOS: brew install espeak-ng)"))
    return checks


def check_node(which: Callable[[str], str | None] = shutil.which) -> list[Check]:
    node = which("node")
    if node is None:
        return [Check("node (for shells)", "warning", "not on PATH: the TypeScript client and web shell need it",
                      "apt install nodejs  (or from nodejs.org)")]
    try:
        version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [Check("node (for shells)", "warning", f"{node} does not run: {exc}", "reinstall Node.js")]
    return [Check("node (for shells)", "ok", f"{version} at {node}")]


def check_providers(configured: Sequence[str] = ()) -> list[Check]:
    """LLM providers: none can be configured yet (the agents capability has not landed)."""
    if not configured:
        return [Check("LLM providers", "ok", "none configured yet")]
    return [Check("LLM providers", "ok", ", ".join(configured))]


def check_database_servers(profiles: Sequence[tuple[str, str, int]] = (), timeout: float = 1.0) -> list[Check]:
    """A TCP connect to each configured PostgreSQL/MySQL profile `(name, host, port)`. No
    profile can be configured yet: then nothing is probed, and it says so."""
    if not profiles:
        return [Check("PostgreSQL/MySQL profiles", "ok", "none configured; nothing to probe")]
    checks = []
    for name, host, port in profiles:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                checks.append(Check(f"profile {name}", "ok", f"{host}:{port} accepts connections"))
        except OSError as exc:
            checks.append(Check(f"profile {name}", "problem", f"{host}:{port}: {exc.strerror or exc}",
                                "start the server, or correct the profile's host and port"))
    return checks


# ---- all of them -----------------------------------------------------------------------


def run_checks(data_dir: Path) -> list[Check]:
    checks: list[Check] = []
    for check in (check_python, check_packages):
        checks += check()
    for check_dir in (check_data_dir, check_database, check_secrets_key, check_disk):
        checks += _guarded(check_dir.__name__, lambda c=check_dir: c(data_dir))  # type: ignore[misc]
    for check in (check_providers, check_optional_modules, check_voice, check_database_servers, check_node):
        checks += check()
    return checks


def has_problem(checks: Sequence[Check]) -> bool:
    return any(c.status == "problem" for c in checks)


def render(checks: Sequence[Check]) -> str:
    width = max((len(c.name) for c in checks), default=0)
    lines = []
    for c in checks:
        lines.append(f"{c.status:<8} {c.name:<{width}}  {c.detail}")
        if c.fix:
            lines.append(f"{'':<8} {'':<{width}}  fix: {c.fix}")
    problems = sum(c.status == "problem" for c in checks)
    warnings = sum(c.status == "warning" for c in checks)
    lines.append(f"{problems} problem(s), {warnings} warning(s)")
    return "\n".join(lines)


def _guarded(name: str, check: Callable[[], list[Check]]) -> list[Check]:
    """A check that fails unexpectedly is a problem to report, not a traceback."""
    try:
        return check()
    except Exception as exc:  # noqa: BLE001
        return [Check(name.removeprefix("check_").replace("_", " "), "problem",
                      f"the check failed: {type(exc).__name__}: {exc}")]
