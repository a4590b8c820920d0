"""`plugin.toml`: reading and checking a plugin's manifest, and permission arithmetic.

The manifest format is documented in `plugins/README.md`. A manifest declares permissions;
the user grants some; a plugin runs with `effective(declared, granted)` only.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec

from protocol.plugins import Limits, PathPermission, Permissions, ToolDef
from sidecar.errors import InvalidValue

MANIFEST = "plugin.toml"
SUPPORTED_ABIS = (1,)
RUNTIMES = ("wasm", "process")
_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_TOOL = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DEFAULT_PORTS = {"http": "80", "https": "443"}
PATH = "$.params.path"
#: a manifest is a page of TOML
MAX_MANIFEST_BYTES = 1024 * 1024


class Manifest(msgspec.Struct, omit_defaults=True):
    id: str
    name: str
    version: str
    entry: str = ""
    abi: int = 1
    runtime: str = "wasm"
    #: process plugins: the command line, run in the plugin's data dir
    command: list[str] = []
    sha256: str | None = None
    description: str = ""
    author: str = ""
    #: "fresh": a new instance per call (default); "persistent": one kept between calls
    instance: str = "fresh"
    limits: Limits = msgspec.field(default_factory=Limits)
    tools: list[ToolDef] = []
    permissions: Permissions = msgspec.field(default_factory=Permissions)

    @property
    def security_level(self) -> str:
        return "trusted" if self.runtime == "process" else "sandbox"


def load(folder: Path) -> Manifest:
    """Parse and check `folder/plugin.toml`; InvalidValue (at `$.params.path`) when it is wrong."""
    path = folder / MANIFEST
    try:
        if not path.is_file():  # a folder, a device (a link to /dev/zero would never end)
            raise FileNotFoundError(path)
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise InvalidValue(f"{MANIFEST} is larger than {MAX_MANIFEST_BYTES} bytes", PATH)
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidValue(f"no {MANIFEST} in {folder}", PATH) from None
    except OSError as exc:  # unreadable: permissions, I/O
        raise InvalidValue(f"{MANIFEST} cannot be read: {exc.strerror}", PATH) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidValue(f"{MANIFEST} is not valid TOML: {exc}", PATH) from None
    return parse(raw)


def parse(raw: dict[str, Any]) -> Manifest:
    try:
        manifest = msgspec.convert(raw, Manifest)
    except msgspec.ValidationError as exc:
        raise InvalidValue(f"{MANIFEST}: {exc}", PATH) from None
    check(manifest)
    return manifest


def check(m: Manifest) -> None:
    def bad(msg: str) -> InvalidValue:
        return InvalidValue(f"{MANIFEST}: {msg}", PATH)

    if not _ID.match(m.id):
        raise bad("id must be lowercase letters, digits and '-' (at most 64)")
    if not _SEMVER.match(m.version):
        raise bad(f"version {m.version!r} is not semver (MAJOR.MINOR.PATCH)")
    if m.abi not in SUPPORTED_ABIS:
        raise bad(f"abi {m.abi} is not supported by this sidecar (supported: "
                  f"{', '.join(map(str, SUPPORTED_ABIS))})")
    if m.runtime not in RUNTIMES:
        raise bad(f"runtime must be one of {', '.join(RUNTIMES)}")
    if m.runtime == "wasm":
        if not m.entry or not m.entry.endswith((".wasm", ".wat")):
            raise bad("entry must name a .wasm or .wat file")
    elif not m.command:
        raise bad("a process plugin needs a command")
    if m.entry and (Path(m.entry).is_absolute() or ".." in Path(m.entry).parts):
        raise bad("entry must be a path inside the plugin folder")
    if m.sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", m.sha256):
        raise bad("sha256 must be 64 lowercase hex digits")
    if m.instance not in ("fresh", "persistent"):
        raise bad("instance must be fresh or persistent")
    for name in ("fuel", "memoryBytes", "timeoutMs"):
        value = getattr(m.limits, name)
        if value is not None and value <= 0:
            raise bad(f"limits.{name} must be positive")
    names = [t.name for t in m.tools]
    if not names:
        raise bad("a plugin declares at least one [[tools]]")
    if len(set(names)) != len(names):
        raise bad("tool names must be unique")
    for tool in m.tools:
        _check_schema(tool, bad)
    check_permissions(m.permissions, bad)


def _check_schema(tool: ToolDef, bad: Any) -> None:
    import jsonschema  # lazily: only installs and validation need it

    try:
        jsonschema.Draft202012Validator.check_schema(tool.inputSchema)
    except jsonschema.SchemaError as exc:
        raise bad(f"tool {tool.name}: inputSchema is not a valid JSON Schema: {exc.message}") from None


def check_permissions(p: Permissions, bad: Any) -> None:
    for item in p.paths:
        if not Path(item.path).is_absolute():
            raise bad(f"permission path {item.path!r} must be absolute")
        if item.access not in ("ro", "rw"):
            raise bad(f"permission path {item.path!r}: access is ro or rw")
    for pattern in p.hosts:
        parse_host_pattern(pattern, bad)
    if p.kvQuotaBytes < 0:
        raise bad("kvQuotaBytes must not be negative")
    for name in p.env:
        if not _ENV.match(name):
            raise bad(f"env name {name!r} is not a variable name")


def parse_host_pattern(pattern: str, bad: Any = None) -> tuple[str, str, str]:
    """`scheme://host:port` -> (scheme, host, port); the port defaults by scheme."""
    match = re.fullmatch(r"(https?)://([A-Za-z0-9*.\-\[\]:]+?)(?::(\d+|\*))?/?", pattern)
    if not match:
        if bad is None:
            raise ValueError(pattern)
        raise bad(f"host {pattern!r} is not of the form scheme://host:port")
    scheme, host, port = match[1], match[2].lower(), match[3] or _DEFAULT_PORTS[match[1]]
    return scheme, host, port


def host_allowed(url: str, patterns: list[str]) -> bool:
    """Is `url` inside one of the granted `scheme://host:port` patterns?"""
    try:
        parts = urlsplit(url)
        port = str(parts.port) if parts.port is not None else _DEFAULT_PORTS.get(parts.scheme, "")
    except ValueError:
        return False
    host = (parts.hostname or "").lower()
    if not host or parts.scheme not in _DEFAULT_PORTS:
        return False
    for pattern in patterns:
        try:
            scheme, phost, pport = parse_host_pattern(pattern)
        except ValueError:
            continue
        if scheme == parts.scheme and fnmatch.fnmatchcase(host, phost) and pport in ("*", port):
            return True
    return False


def _covers(granted: PathPermission, asked: PathPermission) -> bool:
    return granted.path == asked.path and (granted.access == "rw" or asked.access == "ro")


def effective(declared: Permissions, granted: Permissions) -> Permissions:
    """What a plugin may actually do: declared AND granted."""
    return Permissions(
        paths=[p for p in declared.paths if any(_covers(g, p) for g in granted.paths)],
        hosts=[h for h in declared.hosts if h in granted.hosts],
        config=[c for c in declared.config if any(g.key == c.key for g in granted.config)],
        kvQuotaBytes=min(declared.kvQuotaBytes, granted.kvQuotaBytes),
        env=[e for e in declared.env if e in granted.env],
    )


def missing(declared: Permissions, granted: Permissions) -> Permissions:
    """Declared and not (fully) granted: what a new grant would have to add."""
    eff = effective(declared, granted)
    return Permissions(
        paths=[p for p in declared.paths if p not in eff.paths],
        hosts=[h for h in declared.hosts if h not in eff.hosts],
        config=[c for c in declared.config if c not in eff.config],
        kvQuotaBytes=max(0, declared.kvQuotaBytes - granted.kvQuotaBytes),
        env=[e for e in declared.env if e not in eff.env],
    )


def is_empty(p: Permissions) -> bool:
    return not (p.paths or p.hosts or p.config or p.kvQuotaBytes or p.env)

