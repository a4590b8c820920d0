"""plugins/*: sandboxed WebAssembly plugins (wasmtime), their permissions, logs, stats and audit.

A plugin is a folder with a `plugin.toml` manifest (format in `plugins/README.md`). It runs
only with the permissions it both declares and the user granted; every permissioned
operation is audited. Plugin tools are also offered to agents and workflows as
`plugin__<tool>`.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

from protocol.common import Empty
from protocol.spec import MethodSpec, NotificationSpec

PluginId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*\Z")]
ToolName = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z][A-Za-z0-9_-]*\Z")]


# --- manifest parts (also on the wire) ---------------------------------------------------

class PathPermission(msgspec.Struct, frozen=True):
    #: an absolute host directory, preopened in WASI at the same path
    path: str
    #: "ro" (read only) or "rw"
    access: str = "ro"


class ConfigKey(msgspec.Struct, frozen=True, omit_defaults=True):
    key: str
    #: secret values come from the secret store (`plugin.<id>.<key>`) and never reach logs
    secret: bool = False


class Permissions(msgspec.Struct, omit_defaults=True):
    paths: list[PathPermission] = []
    #: `scheme://host:port` patterns; `*` matches any host label run or any port
    hosts: list[str] = []
    config: list[ConfigKey] = []
    kvQuotaBytes: int = 0
    #: names of environment variables passed through from the daemon's environment
    env: list[str] = []


class Limits(msgspec.Struct, omit_defaults=True):
    fuel: int | None = None
    memoryBytes: int | None = None
    timeoutMs: int | None = None


class ToolDef(msgspec.Struct, omit_defaults=True):
    name: ToolName
    description: str = ""
    inputSchema: dict[str, Any] = msgspec.field(default_factory=lambda: {"type": "object"})


# --- results -----------------------------------------------------------------------------

class EffectiveLimits(msgspec.Struct):
    fuel: int
    memoryBytes: int
    timeoutMs: int


class PluginInfo(msgspec.Struct, omit_defaults=True):
    id: str
    name: str
    version: str
    abi: int
    runtime: str  # "wasm" | "process"
    securityLevel: str  # "sandbox" | "trusted"
    enabled: bool
    description: str
    author: str
    sha256: str
    instance: str  # "fresh" | "persistent"
    tools: list[ToolDef]
    limits: EffectiveLimits
    #: what the manifest asks for
    requested: Permissions
    #: what the user granted
    granted: Permissions
    #: requested and not granted (an update that asks for more shows up here)
    missing: Permissions
    sourcePath: str | None = None
    installedAt: str | None = None
    #: the last load failure (a hot reload that failed keeps the old version running)
    loadError: str | None = None


class PluginList(msgspec.Struct):
    plugins: list[PluginInfo]


class InstallParams(msgspec.Struct):
    #: a folder holding plugin.toml
    path: str


class IdParams(msgspec.Struct):
    id: PluginId


class GrantParams(msgspec.Struct):
    id: PluginId
    permissions: Permissions
    #: process plugins run outside the sandbox and need this set to true
    trusted: bool = False


class UninstallResult(msgspec.Struct):
    id: str
    uninstalled: bool


class CallParams(msgspec.Struct):
    id: PluginId
    tool: ToolName
    input: dict[str, Any] = {}


class CallResult(msgspec.Struct):
    output: Any
    fuelUsed: int
    memoryBytes: int
    durationMs: float


class LogsParams(msgspec.Struct):
    id: PluginId
    limit: Annotated[int, Meta(ge=1, le=10_000)] = 200


class LogEntry(msgspec.Struct):
    time: str
    level: str
    #: "guest" (sidecar.log), "stdout", "stderr" or "host"
    source: str
    message: str


class LogsResult(msgspec.Struct):
    id: str
    entries: list[LogEntry]


class StatsParams(msgspec.Struct):
    id: PluginId | None = None


class PluginStats(msgspec.Struct, omit_defaults=True):
    id: str
    calls: int
    errors: int
    fuelUsed: int
    peakMemoryBytes: int
    p50Ms: float
    p99Ms: float
    #: process plugins: the child's resident memory and CPU seconds (psutil)
    rssBytes: int | None = None
    cpuSeconds: float | None = None


class StatsResult(msgspec.Struct):
    plugins: list[PluginStats]


class AuditParams(msgspec.Struct):
    id: PluginId | None = None
    #: ISO-8601 UTC; rows at or after it
    since: str | None = None
    limit: Annotated[int, Meta(ge=1, le=10_000)] = 500


class AuditRow(msgspec.Struct):
    plugin: str
    operation: str
    target: str
    allowed: bool
    time: str


class AuditResult(msgspec.Struct):
    rows: list[AuditRow]


class ConfigureParams(msgspec.Struct):
    id: PluginId
    #: non-secret config values by key (None clears one); secret keys are set with
    #: `secrets/set` under the name `plugin.<id>.<key>`
    values: dict[str, str | None]


class ReloadParams(msgspec.Struct):
    #: one plugin, or every installed plugin whose source folder changed
    id: PluginId | None = None


class ReloadOutcome(msgspec.Struct, omit_defaults=True):
    id: str
    ok: bool
    version: str | None = None
    error: str | None = None


class ReloadResult(msgspec.Struct):
    results: list[ReloadOutcome]


class ReloadedEvent(msgspec.Struct, omit_defaults=True):
    """A plugin was reloaded from its source folder, or failed to (the old one stays)."""

    id: str
    ok: bool
    version: str | None = None
    error: str | None = None


RELOADED = NotificationSpec("plugins/reloaded", ReloadedEvent,
                            "A watched plugin changed: reloaded, or failed to and kept its old version.")

LIST = MethodSpec("plugins/list", Empty, PluginList, "Installed plugins.")
GET = MethodSpec("plugins/get", IdParams, PluginInfo,
                 "One plugin: manifest, limits, and requested vs granted permissions.")
INSTALL = MethodSpec("plugins/install", InstallParams, PluginInfo,
                     "Copy a plugin folder under the data dir, verify and compile it; reports the "
                     "permissions it asks for (granted separately).", lane="plugins", long_running=True)
UNINSTALL = MethodSpec("plugins/uninstall", IdParams, UninstallResult, "Remove a plugin and its data.",
                       lane="plugins")
ENABLE = MethodSpec("plugins/enable", IdParams, PluginInfo, "Allow calls to a plugin.", lane="plugins")
DISABLE = MethodSpec("plugins/disable", IdParams, PluginInfo, "Refuse calls to a plugin.", lane="plugins")
GRANT = MethodSpec("plugins/grant", GrantParams, PluginInfo,
                   "Grant permissions (replacing earlier grants); only those also declared take effect.",
                   lane="plugins")
REVOKE = MethodSpec("plugins/revoke", IdParams, PluginInfo, "Withdraw every grant.", lane="plugins")
CALL = MethodSpec("plugins/call", CallParams, CallResult,
                  "Call a plugin tool in its sandbox; input is validated against the tool's schema.",
                  long_running=True)
LOGS = MethodSpec("plugins/logs", LogsParams, LogsResult, "The newest entries of a plugin's log ring.")
STATS = MethodSpec("plugins/stats", StatsParams, StatsResult,
                   "Per plugin: calls, errors, fuel, peak memory, p50/p99 call time.")
AUDIT = MethodSpec("plugins/audit", AuditParams, AuditResult, "Audit rows of permissioned operations.")
RELOAD = MethodSpec("plugins/reload", ReloadParams, ReloadResult,
                    "Reload plugins from their source folders now.", lane="plugins", long_running=True)
CONFIGURE = MethodSpec("plugins/configure", ConfigureParams, PluginInfo,
                       "Set a plugin's non-secret config values.", lane="plugins")

METHODS = (LIST, GET, INSTALL, UNINSTALL, ENABLE, DISABLE, GRANT, REVOKE, CALL, LOGS, STATS, AUDIT, RELOAD, CONFIGURE)
NOTIFICATIONS = (RELOADED,)
