"""Plugins: install, grant, call in a sandbox, log, measure, audit, hot-reload.

Layout under `<data dir>/plugins/`:

    installed/<id>/   the copy made at install (manifest, entry, sources)
    data/<id>/        the plugin's one read-write directory, preopened in WASI as /data
    .cache/           compiled modules (see runtime.py)
    .run/             stdout/stderr capture files
    .staging/         copies being verified before they replace installed/<id>

The service knows nothing of JSON-RPC. wasmtime, jsonschema and httpx are imported on first
use (the daemon's start-up imports none of them).
"""

from __future__ import annotations

import logging
import os
import secrets as pysecrets
import shutil
import stat
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel
import msgspec

from protocol import plugins as p
from protocol.plugins import Permissions
from sidecar.errors import (
    InvalidValue,
    NotFound,
    PermissionDenied,
    PluginTrap,
    ResourceExhausted,
    SidecarError,
    Unavailable,
)
from sidecar.handoff import WorkerThreads, running_loop
from sidecar.notifier import Notifier
from sidecar.plugins import manifest as mf
from sidecar.plugins.manifest import Manifest
from sidecar.plugins.store import PluginRow, PluginStore

if TYPE_CHECKING:
    from sidecar.plugins.process import ProcessPlugin
    from sidecar.plugins.runtime import Program, WasmEngine

log = logging.getLogger("sidecar.plugins")

LOG_RING = 1000
DURATIONS_KEPT = 1000
T = TypeVar("T")
TICK_SECONDS = 0.01  # as runtime.TICK_SECONDS; repeated so the daemon need not import wasmtime
#: wasm calls running at once, at most (more queue for a thread): one per call in flight, so a
#: slow plugin holds up no other; as many as the daemon's default worker-thread limit
CALL_THREADS = 40
#: a plugin folder is a manifest, an entry and some sources: install copies at most this much
#: (a path such as "/" once had it copy the whole filesystem into the data folder)
MAX_SOURCE_ENTRIES = 10_000
MAX_SOURCE_BYTES = 256 * 1024 * 1024
#: folders and files install does not copy (build caches)
_IGNORED_DIRS = (".zig-cache", "zig-cache")

#: the settings this service reads, with their defaults (registered by the capability)
DEFAULTS: dict[str, Any] = {
    "plugins.defaultFuel": 1_000_000_000,
    "plugins.maxFuel": 20_000_000_000,
    "plugins.defaultMemoryBytes": 64 << 20,
    "plugins.maxMemoryBytes": 1 << 30,
    "plugins.defaultTimeoutMs": 5_000,
    "plugins.maxTimeoutMs": 120_000,
    "plugins.httpMaxBytes": 4 << 20,
    "plugins.httpTimeoutMs": 10_000,
    "plugins.watchIntervalMs": 1_000,
}


def _now_iso(ts: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if ts is None else ts, timezone.utc) \
        .strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(slots=True)
class Stats:
    calls: int = 0
    errors: int = 0
    fuel: int = 0
    peak_memory: int = 0
    durations: deque[float] = field(default_factory=lambda: deque(maxlen=DURATIONS_KEPT))

    def percentile(self, q: float) -> float:
        if not self.durations:
            return 0.0
        ordered = sorted(self.durations)
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


@dataclass(slots=True)
class Loaded:
    """A plugin in memory: its manifest, its compiled program, its tool validators."""

    manifest: Manifest
    program: Program | None
    sha256: str
    fingerprint: tuple[Any, ...] = ()
    #: tool name -> schema.ToolValidator, compiled once per load
    validators: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class CallPlan:
    """What every call of one wasm plugin reuses: built on its first call, rebuilt when its
    Loaded or row is replaced (install, reload, grant, revoke, enable) or a setting changes."""

    loaded: Loaded
    row: PluginRow
    settings_generation: int
    perms: Permissions
    limits: p.EffectiveLimits
    call_limits: Any  # runtime.CallLimits
    data_preopen: tuple[str, str, bool]
    #: the sandbox of a plugin granted no paths and no env (the same every call)
    sandbox: Any  # runtime.Sandbox | None
    bridge: _Bridge | None


@dataclass(slots=True)
class Staged:
    manifest: Manifest
    folder: Path
    program: Program | None
    sha256: str
    fingerprint: tuple[Any, ...]


class PluginService:
    def __init__(self, store: PluginStore, data_dir: Path, setting: Callable[[str], Any], notifier: Notifier,
                 reveal_secret: Callable[[str], Any] | None = None) -> None:
        self.store = store
        self.root = data_dir / "plugins"
        self._data_root = str(self.root / "data")
        self._run_dir = self.root / ".run"
        self.setting = setting
        self.notifier = notifier
        #: async (name) -> value, from the secret store; None when secrets are not in this build
        self.reveal_secret = reveal_secret
        self._engine: WasmEngine | None = None
        self._engine_lock = threading.Lock()
        self._loaded: dict[str, Loaded] = {}
        self._plans: dict[str, CallPlan] = {}
        #: bumped by `settings_changed`: call plans hold limits derived from settings
        self._settings_generation = 0
        self._token: Any = None
        self._rows: dict[str, PluginRow] = {}
        self._load_errors: dict[str, str] = {}
        self.logs: dict[str, deque[p.LogEntry]] = {}
        self.stats: dict[str, Stats] = {}
        self._active = 0
        #: where wasm calls run (wasmtime releases the GIL in guest code); made by `running()`
        self._call_threads: WorkerThreads | None = None
        self._wake: anyio.Event | None = None
        self._http: Any = None
        self._http_lock = threading.Lock()
        self._running = False
        #: process plugins' children, started on their first call in `_tg`
        self._processes: dict[str, ProcessPlugin] = {}
        self._tg: Any = None
        #: the event bus's publish (topic, payload), connected by the events capability
        self.publish_event: Callable[[str, dict[str, Any]], object] = lambda topic, payload: None

    # ---- life ----------------------------------------------------------------------------

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Load installed plugins, tick the epoch, watch source folders; undo on exit."""
        for sub in ("installed", "data", ".cache", ".run", ".staging"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.root / ".staging", ignore_errors=True)
        (self.root / ".staging").mkdir(exist_ok=True)
        await self._load_installed()
        self._running = True
        self._token = anyio.lowlevel.current_token()  # host functions reach the loop with it
        self._call_threads = WorkerThreads("sidecar-plugin-call", CALL_THREADS,
                                           closed_message="the plugins capability has stopped")
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._ticker)
                tg.start_soon(self._watcher)
                try:
                    yield
                finally:
                    tg.cancel_scope.cancel()  # ends the process plugins' children too
        finally:
            self._call_threads.stop()  # calls in flight were stopped with the task group above
            self._call_threads = None
            self._tg = None
            self._token = None
            self._plans.clear()
            self._processes.clear()
            self._running = False
            if self._http is not None:
                self._http.close()
                self._http = None
            shutil.rmtree(self.root / ".run", ignore_errors=True)

    def engine(self) -> WasmEngine:
        with self._engine_lock:
            if self._engine is None:
                from sidecar.plugins import host
                from sidecar.plugins.runtime import WasmEngine

                self._engine = WasmEngine(self.root / ".cache", host.define)
            return self._engine

    async def _ticker(self) -> None:
        """Advance the engine's epoch while calls run (idle: sleeps until a call starts)."""
        while True:
            if not self._active:
                self._wake = anyio.Event()
                await self._wake.wait()
            await anyio.sleep(TICK_SECONDS)
            if self._engine is not None:
                self._engine.tick()

    async def _watcher(self) -> None:
        while True:
            interval = int(self.setting("plugins.watchIntervalMs"))
            if interval <= 0:
                await anyio.sleep(1)
                continue
            await anyio.sleep(interval / 1000)
            try:
                await self.reload(None, changed_only=True)
            except Exception:  # noqa: BLE001 - the watcher must outlive one bad scan
                log.exception("plugin watcher scan failed")

    async def _load_installed(self) -> None:
        for row in await self.store.all():
            self._rows[row.id] = row
            folder = self.root / "installed" / row.id
            try:
                staged = await anyio.to_thread.run_sync(self._verify_and_compile, folder, None)
            except SidecarError as exc:
                self._load_errors[row.id] = exc.message
                log.warning("plugin %s failed to load: %s", row.id, exc.message)
                continue
            source_fp = await anyio.to_thread.run_sync(_fingerprint, Path(row.source_path)) \
                if row.source_path else ()
            self._loaded[row.id] = self._as_loaded(staged, source_fp)

    # ---- install / verify ---------------------------------------------------------------

    def _verify_and_compile(self, folder: Path, expect_id: str | None) -> Staged:
        """Parse the manifest, check the entry's sha256, compile. Runs in a worker thread."""
        manifest = mf.load(folder)
        if expect_id is not None and manifest.id != expect_id:
            raise InvalidValue(f"the folder now holds plugin {manifest.id}, not {expect_id}", mf.PATH)
        program = None
        digest = ""
        if manifest.runtime == "wasm":
            entry = folder / manifest.entry
            try:
                raw = entry.read_bytes()
            except OSError:
                raise InvalidValue(f"the entry {manifest.entry} cannot be read", mf.PATH) from None
            import hashlib

            digest = hashlib.sha256(raw).hexdigest()
            if manifest.sha256 is not None and manifest.sha256 != digest:
                raise InvalidValue(f"the entry's sha256 is {digest}, the manifest says {manifest.sha256}",
                                   mf.PATH, expected=manifest.sha256, actual=digest)
            wasm = raw
            if manifest.entry.endswith(".wat"):
                import wasmtime

                try:
                    wasm = wasmtime.wat2wasm(raw.decode("utf-8"))
                except (wasmtime.WasmtimeError, UnicodeDecodeError) as exc:
                    raise InvalidValue(f"the entry is not valid WAT: {str(exc).splitlines()[0][:300]}",
                                       mf.PATH) from None
            program = self.engine().prepare(wasm, persistent=manifest.instance == "persistent")
            limits = self.limits(manifest)
            if program.min_memory_bytes > limits.memoryBytes:
                from sidecar.errors import ResourceExhausted

                raise ResourceExhausted(
                    f"the module needs {program.min_memory_bytes} bytes of memory at start; its limit is "
                    f"{limits.memoryBytes}", limit="memoryBytes", max=limits.memoryBytes,
                    used=program.min_memory_bytes)
        return Staged(manifest, folder, program, digest, ())

    def _stage(self, source: Path, expect_id: str | None) -> Staged:
        """Copy `source` to a staging folder and verify it there (the source may change)."""
        _check_source(source)
        staging = self.root / ".staging" / pysecrets.token_hex(6)
        try:
            shutil.copytree(source, staging, ignore=shutil.ignore_patterns(*_IGNORED_DIRS, "*.o"))
        except (OSError, shutil.Error) as exc:
            raise InvalidValue(f"cannot copy the plugin folder: {exc.__class__.__name__}", mf.PATH) from None
        try:
            staged = self._verify_and_compile(staging, expect_id)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        staged.fingerprint = _fingerprint(source)
        return staged

    def _commit(self, staged: Staged) -> None:
        """Swap the staged copy in as installed/<id> (rename: atomic on one filesystem)."""
        target = self.root / "installed" / staged.manifest.id
        old = self.root / ".staging" / f"old-{pysecrets.token_hex(6)}"
        if target.exists():
            os.replace(target, old)
        os.replace(staged.folder, target)
        staged.folder = target
        shutil.rmtree(old, ignore_errors=True)
        (self.root / "data" / staged.manifest.id).mkdir(parents=True, exist_ok=True)

    def _as_loaded(self, staged: Staged, fingerprint: tuple[Any, ...]) -> Loaded:
        from sidecar.plugins.schema import ToolValidator

        validators = {t.name: ToolValidator(t.inputSchema) for t in staged.manifest.tools}
        return Loaded(staged.manifest, staged.program, staged.sha256, fingerprint, validators)

    async def install(self, path: str) -> p.PluginInfo:
        source = Path(path).expanduser()
        if not source.is_absolute():
            raise InvalidValue("path must be absolute", mf.PATH)
        if not source.is_dir():
            raise InvalidValue(f"{path} is not a folder", mf.PATH)
        staged = await anyio.to_thread.run_sync(self._stage, source, None)
        plugin_id = staged.manifest.id
        await anyio.to_thread.run_sync(self._commit, staged)
        await self._stop_process(plugin_id)  # a reinstalled process plugin restarts on its next call
        await self.store.upsert(plugin_id, staged.manifest.version, str(source))
        self._rows[plugin_id] = await self._row(plugin_id)
        self._loaded[plugin_id] = self._as_loaded(staged, staged.fingerprint)
        self._load_errors.pop(plugin_id, None)
        await self.store.audit([(plugin_id, "install", staged.manifest.version, True, _now_iso())])
        log.info("installed plugin %s %s", plugin_id, staged.manifest.version)
        return self.info(plugin_id)

    async def uninstall(self, plugin_id: str) -> bool:
        self._require_row(plugin_id)
        await self._stop_process(plugin_id)
        self._loaded.pop(plugin_id, None)
        self._plans.pop(plugin_id, None)
        self._rows.pop(plugin_id, None)
        self._load_errors.pop(plugin_id, None)
        await self.store.delete(plugin_id)

        def remove() -> None:
            for sub in ("installed", "data"):
                shutil.rmtree(self.root / sub / plugin_id, ignore_errors=True)
        await anyio.to_thread.run_sync(remove)
        self.logs.pop(plugin_id, None)
        self.stats.pop(plugin_id, None)
        await self.store.audit([(plugin_id, "uninstall", plugin_id, True, _now_iso())])
        return True

    # ---- reload ----------------------------------------------------------------------------

    async def reload(self, plugin_id: str | None, *, changed_only: bool = False) -> list[p.ReloadOutcome]:
        ids = [plugin_id] if plugin_id is not None else sorted(self._rows)
        if plugin_id is not None:
            self._require_row(plugin_id)
        outcomes = []
        for pid in ids:
            row = self._rows.get(pid)
            if row is None or not row.source_path:
                continue
            source = Path(row.source_path)
            loaded = self._loaded.get(pid)
            if changed_only:
                fp = await anyio.to_thread.run_sync(_fingerprint, source)
                if not fp or (loaded is not None and fp == loaded.fingerprint):
                    continue
                if loaded is None and self._load_errors.get(pid + "#fp") == repr(fp):
                    continue
            outcomes.append(await self._reload_one(pid, source))
        return outcomes

    async def _reload_one(self, plugin_id: str, source: Path) -> p.ReloadOutcome:
        try:
            staged = await anyio.to_thread.run_sync(self._stage, source, plugin_id)
        except SidecarError as exc:
            fp = await anyio.to_thread.run_sync(_fingerprint, source)
            loaded = self._loaded.get(plugin_id)
            if loaded is not None:
                loaded.fingerprint = fp  # do not retry until the folder changes again
            else:
                self._load_errors[plugin_id + "#fp"] = repr(fp)
            self._load_errors[plugin_id] = exc.message
            self._log(plugin_id, "error", "host", f"reload failed, keeping the running version: {exc.message}")
            outcome = p.ReloadOutcome(plugin_id, False, loaded.manifest.version if loaded else None, exc.message)
            self.notifier.notify(p.RELOADED, p.ReloadedEvent(plugin_id, False, outcome.version, exc.message))
            self.publish_event("plugins.reloaded", {"pluginId": plugin_id, "ok": False, "version": outcome.version,
                                                    "error": exc.message})
            return outcome
        await anyio.to_thread.run_sync(self._commit, staged)
        self._loaded[plugin_id] = self._as_loaded(staged, staged.fingerprint)  # the atomic swap
        await self._stop_process(plugin_id)  # the next call starts the new code
        self._load_errors.pop(plugin_id, None)
        self._load_errors.pop(plugin_id + "#fp", None)
        await self.store.set_version(plugin_id, staged.manifest.version)
        self._rows[plugin_id] = await self._row(plugin_id)
        self._log(plugin_id, "info", "host", f"reloaded version {staged.manifest.version}")
        self.notifier.notify(p.RELOADED, p.ReloadedEvent(plugin_id, True, staged.manifest.version))
        self.publish_event("plugins.reloaded", {"pluginId": plugin_id, "ok": True, "version": staged.manifest.version})
        return p.ReloadOutcome(plugin_id, True, staged.manifest.version)

    # ---- state ---------------------------------------------------------------------------

    async def _row(self, plugin_id: str) -> PluginRow:
        row = await self.store.get(plugin_id)
        if row is None:
            raise NotFound(f"no plugin {plugin_id}", id=plugin_id)
        return row

    def _require_row(self, plugin_id: str) -> PluginRow:
        row = self._rows.get(plugin_id)
        if row is None:
            raise NotFound(f"no plugin {plugin_id}", id=plugin_id)
        return row

    def granted(self, plugin_id: str) -> Permissions:
        row = self._require_row(plugin_id)
        return msgspec.json.decode(row.granted, type=Permissions)

    def settings_changed(self, key: str, value: Any = None, previous: Any = None) -> None:
        """A setting changed (the capability subscribes this): calls re-read their limits."""
        if key.startswith("plugins."):
            self._settings_generation += 1

    def _plan(self, plugin_id: str, row: PluginRow, loaded: Loaded) -> CallPlan:
        from sidecar.plugins import runtime

        plan = self._plans.get(plugin_id)
        if plan is not None and plan.loaded is loaded and plan.row is row \
                and plan.settings_generation == self._settings_generation:
            return plan
        manifest = loaded.manifest
        perms = mf.effective(manifest.permissions, self.granted(plugin_id))
        limits = self.limits(manifest)
        data_preopen = (f"{self._data_root}{os.sep}{plugin_id}", "/data", True)
        static = not perms.paths and not perms.env
        token = self._token
        plan = CallPlan(loaded, row, self._settings_generation, perms, limits,
                        runtime.CallLimits(limits.fuel, limits.memoryBytes, limits.timeoutMs), data_preopen,
                        runtime.Sandbox(preopens=[data_preopen], capture_dir=self._run_dir) if static else None,
                        _Bridge(self, plugin_id, token) if token is not None else None)
        self._plans[plugin_id] = plan
        return plan

    def limits(self, manifest: Manifest) -> p.EffectiveLimits:
        def pick(asked: int | None, default: str, cap: str) -> int:
            return min(asked if asked is not None else int(self.setting(default)), int(self.setting(cap)))
        return p.EffectiveLimits(
            fuel=pick(manifest.limits.fuel, "plugins.defaultFuel", "plugins.maxFuel"),
            memoryBytes=pick(manifest.limits.memoryBytes, "plugins.defaultMemoryBytes", "plugins.maxMemoryBytes"),
            timeoutMs=pick(manifest.limits.timeoutMs, "plugins.defaultTimeoutMs", "plugins.maxTimeoutMs"))

    def info(self, plugin_id: str) -> p.PluginInfo:
        row = self._require_row(plugin_id)
        loaded = self._loaded.get(plugin_id)
        if loaded is None:
            m = Manifest(id=plugin_id, name=plugin_id, version=row.version)
            sha = ""
        else:
            m, sha = loaded.manifest, loaded.sha256
        granted = self.granted(plugin_id)
        return p.PluginInfo(
            id=plugin_id, name=m.name, version=m.version, abi=m.abi, runtime=m.runtime,
            securityLevel=m.security_level, enabled=bool(row.enabled), description=m.description, author=m.author,
            sha256=sha, instance=m.instance, tools=list(m.tools), limits=self.limits(m),
            requested=m.permissions, granted=granted, missing=mf.missing(m.permissions, granted),
            sourcePath=row.source_path, installedAt=row.installed_at, loadError=self._load_errors.get(plugin_id))

    def list(self) -> list[p.PluginInfo]:
        return [self.info(pid) for pid in sorted(self._rows)]

    async def set_enabled(self, plugin_id: str, enabled: bool) -> p.PluginInfo:
        self._require_row(plugin_id)
        if not enabled:
            await self._stop_process(plugin_id)
        await self.store.set_enabled(plugin_id, enabled)
        self._rows[plugin_id] = await self._row(plugin_id)
        await self.store.audit([(plugin_id, "enable" if enabled else "disable", plugin_id, True, _now_iso())])
        return self.info(plugin_id)

    async def grant(self, plugin_id: str, permissions: Permissions, trusted: bool = False) -> p.PluginInfo:
        self._require_row(plugin_id)

        def bad(msg: str) -> InvalidValue:
            return InvalidValue(msg, "$.params.permissions")
        mf.check_permissions(permissions, bad)
        await self.store.set_grant(plugin_id, msgspec.json.encode(permissions).decode(), trusted)
        self._rows[plugin_id] = await self._row(plugin_id)
        targets = ([f"path:{x.path}:{x.access}" for x in permissions.paths] + [f"host:{h}" for h in permissions.hosts]
                   + [f"config:{c.key}" for c in permissions.config] + [f"env:{e}" for e in permissions.env]
                   + ([f"kv:{permissions.kvQuotaBytes}"] if permissions.kvQuotaBytes else [])
                   + (["trusted"] if trusted else []))
        await self.store.audit([(plugin_id, "grant", t, True, _now_iso()) for t in targets]
                               or [(plugin_id, "grant", "(nothing)", True, _now_iso())])
        return self.info(plugin_id)

    async def revoke(self, plugin_id: str) -> p.PluginInfo:
        self._require_row(plugin_id)
        await self._stop_process(plugin_id)
        await self.store.set_grant(plugin_id, "{}", False)
        self._rows[plugin_id] = await self._row(plugin_id)
        await self.store.audit([(plugin_id, "revoke", "*", True, _now_iso())])
        return self.info(plugin_id)

    async def configure(self, plugin_id: str, values: dict[str, str | None]) -> None:
        """Set (or with None, clear) non-secret config values; secret keys go to the secret
        store as `plugin.<id>.<key>`."""
        self._require_row(plugin_id)
        loaded = self._loaded.get(plugin_id)
        secret = {c.key for c in loaded.manifest.permissions.config if c.secret} if loaded else set()
        for key in values:
            if key in secret:
                raise InvalidValue(f"{key} is a secret: set it with secrets/set plugin.{plugin_id}.{key}",
                                   "$.params.values")
        await self.store.config_set(plugin_id, values)

    # ---- calls ---------------------------------------------------------------------------

    def tool_owner(self, tool: str) -> list[str]:
        return [pid for pid, ld in sorted(self._loaded.items()) if any(t.name == tool for t in ld.manifest.tools)]

    def loaded_tools(self) -> list[tuple[str, p.ToolDef]]:
        return [(pid, t) for pid, ld in sorted(self._loaded.items())
                if self._rows.get(pid) is not None and self._rows[pid].enabled for t in ld.manifest.tools]

    async def call(self, plugin_id: str, tool: str, arguments: dict[str, Any]) -> p.CallResult:
        row = self._require_row(plugin_id)
        loaded = self._loaded.get(plugin_id)
        if loaded is None:
            raise Unavailable(f"plugin {plugin_id} is not loaded: {self._load_errors.get(plugin_id, 'unknown')}",
                              id=plugin_id)
        if not row.enabled:
            raise Unavailable(f"plugin {plugin_id} is disabled", id=plugin_id)
        validator = loaded.validators.get(tool)
        if validator is None:
            raise NotFound(f"plugin {plugin_id} has no tool {tool}", id=plugin_id, tool=tool)
        error = validator.first_error(arguments)
        if error is not None:
            where = "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in error.absolute_path)
            raise InvalidValue(f"input does not match the tool's schema: {error.message}"[:500],
                               f"$.params.input{where}")
        if loaded.manifest.runtime == "process":
            return await self._call_process(plugin_id, row, loaded, tool, arguments)
        if loaded.program is None:
            raise Unavailable(f"plugin {plugin_id} has no program", id=plugin_id)
        return await self._call_wasm(plugin_id, self._plan(plugin_id, row, loaded), tool, arguments)

    async def _call_wasm(self, plugin_id: str, plan: CallPlan, tool: str, arguments: dict[str, Any]) -> p.CallResult:
        from sidecar.plugins import host, runtime  # loaded by `_plan` already: a dict look-up

        perms = plan.perms
        payload = msgspec.json.encode({"tool": tool, "input": arguments})
        control = runtime.CallControl(plan.limits.timeoutMs)
        sandbox = plan.sandbox
        if sandbox is None:  # granted paths may come and go, env values change: read them per call
            sandbox = runtime.Sandbox(
                preopens=[plan.data_preopen]
                + [(x.path, x.path, x.access == "rw") for x in perms.paths if os.path.isdir(x.path)],
                env=[(name, os.environ[name]) for name in perms.env if name in os.environ],
                capture_dir=self._run_dir)
        bridge = plan.bridge or _Bridge(self, plugin_id, anyio.lowlevel.current_token())
        hc = host.PluginCall(plugin_id, perms, bridge, control.deadline)
        program = plan.loaded.program
        engine = self.engine()
        call_limits = plan.call_limits
        stats = self.stats.get(plugin_id)
        if stats is None:
            stats = self.stats[plugin_id] = Stats()
        started = time.perf_counter()
        ok = False
        self._active += 1
        if self._wake is not None:
            self._wake.set()

        def run() -> runtime.CallOutput:
            try:
                return engine.call(program, payload, call_limits, control, sandbox, hc)
            finally:
                control.finished = True

        try:
            try:
                # abandoned on cancel only to stop the guest at once: the call waits below
                # until the guest has stopped (within an epoch tick)
                loop = running_loop()
                if loop is not None and self._call_threads is not None:
                    out = await self._call_threads.run(run, loop)  # a cheaper hop than anyio's pool
                else:  # outside `running()` (tools, tests) or on another backend
                    out = await anyio.to_thread.run_sync(run, abandon_on_cancel=True)
            except anyio.get_cancelled_exc_class():
                control.cancel()
                with anyio.CancelScope(shield=True):
                    while not control.finished:
                        await anyio.sleep(TICK_SECONDS / 2)
                raise
            except runtime.CallCancelled:
                raise Unavailable("the call was stopped", id=plugin_id) from None
            try:
                output = msgspec.json.decode(out.output)
            except msgspec.DecodeError:
                raise PluginTrap("the plugin's output is not valid JSON", reason="invalid_output",
                                 bytes=len(out.output), start=out.output[:80].decode("utf-8", "replace")) from None
            ok = True
            stats.fuel += out.fuel_used
            if out.memory_bytes > stats.peak_memory:
                stats.peak_memory = out.memory_bytes
            return p.CallResult(output, out.fuel_used, out.memory_bytes,
                                round((time.perf_counter() - started) * 1000, 3))
        finally:
            self._active -= 1
            elapsed = (time.perf_counter() - started) * 1000
            stats.calls += 1
            stats.durations.append(elapsed)
            if not ok:
                stats.errors += 1
            stdout, stderr = hc.captured
            if stdout or stderr:
                for source, data in (("stdout", stdout), ("stderr", stderr)):
                    for line in data.decode("utf-8", "replace").splitlines():
                        self._log(plugin_id, "info" if source == "stdout" else "warning", source, line)
            if hc.audits:
                with anyio.CancelScope(shield=True):
                    await self.store.audit([(plugin_id, a.operation, a.target, a.allowed, _now_iso(a.at))
                                            for a in hc.audits])

    async def _call_process(self, plugin_id: str, row: PluginRow, loaded: Loaded, tool: str,
                            arguments: dict[str, Any]) -> p.CallResult:
        from sidecar.plugins.process import ProcessPlugin, child_env

        if not row.trusted:
            await self.store.audit([(plugin_id, "run_process", tool, False, _now_iso())])
            raise PermissionDenied(f"plugin {plugin_id} runs as a process outside the sandbox; it needs a grant "
                                   "with trusted: true", operation="run_process", target=plugin_id)
        if self._tg is None:
            raise Unavailable("the plugins service is not running", id=plugin_id)
        manifest = loaded.manifest
        limits = self.limits(manifest)
        perms = mf.effective(manifest.permissions, self.granted(plugin_id))
        data_dir = self.root / "data" / plugin_id
        proc = self._processes.get(plugin_id)
        if proc is None:
            proc = self._processes[plugin_id] = ProcessPlugin(
                plugin_id, list(manifest.command), self.root / "installed" / plugin_id, data_dir,
                lambda level, source, message: self._log(plugin_id, level, source, message))
        stats = self.stats.setdefault(plugin_id, Stats())
        started = time.perf_counter()
        pid_before = proc.pid
        ok = False
        try:
            output = await proc.call(self._tg, tool, arguments, timeout_ms=limits.timeoutMs,
                                     memory_bytes=limits.memoryBytes, env=child_env(plugin_id, data_dir, perms.env))
            ok = True
        finally:
            elapsed = (time.perf_counter() - started) * 1000
            stats.calls += 1
            stats.durations.append(elapsed)
            if not ok:
                stats.errors += 1
            if proc.pid is not None and proc.pid != pid_before:
                with anyio.CancelScope(shield=True):
                    await self.store.audit([(plugin_id, "run_process", f"pid {proc.pid}", True, _now_iso())])
        usage = proc.usage()
        rss = usage[0] if usage else 0
        stats.peak_memory = max(stats.peak_memory, rss)
        return p.CallResult(output, 0, rss, round(elapsed, 3))

    async def _stop_process(self, plugin_id: str) -> None:
        proc = self._processes.pop(plugin_id, None)
        if proc is not None:
            await proc.stop()

    # ---- logs, stats, audit ----------------------------------------------------------------

    def _log(self, plugin_id: str, level: str, source: str, message: str) -> None:
        ring = self.logs.get(plugin_id)
        if ring is None:
            ring = self.logs.setdefault(plugin_id, deque(maxlen=LOG_RING))
        ring.append(p.LogEntry(_now_iso(), level, source, message[:8192]))

    def get_logs(self, plugin_id: str, limit: int) -> list[p.LogEntry]:
        self._require_row(plugin_id)
        ring = list(self.logs.get(plugin_id, ()))
        return ring[-limit:]

    def get_stats(self, plugin_id: str | None) -> list[p.PluginStats]:
        ids = [plugin_id] if plugin_id is not None else sorted(self._rows)
        if plugin_id is not None:
            self._require_row(plugin_id)
        out = []
        for pid in ids:
            s = self.stats.get(pid, Stats())
            proc = self._processes.get(pid)
            usage = proc.usage() if proc is not None else None
            out.append(p.PluginStats(pid, s.calls, s.errors, s.fuel, s.peak_memory, s.percentile(0.5),
                                     s.percentile(0.99), rssBytes=usage[0] if usage else None,
                                     cpuSeconds=usage[1] if usage else None))
        return out

    async def audit(self, plugin_id: str | None, since: str | None, limit: int) -> list[p.AuditRow]:
        rows = await self.store.audit_rows(plugin_id, since, limit)
        return [p.AuditRow(r.plugin, r.operation, r.target, bool(r.allowed), r.at) for r in rows]

    # ---- host services (called on the guest's worker thread) ------------------------------

    def http_client(self) -> Any:
        with self._http_lock:
            if self._http is None:
                import httpx

                self._http = httpx.Client(follow_redirects=False, trust_env=False,
                                          headers={"user-agent": "sidecar-plugin"})
            return self._http


class _Bridge:
    """`host.HostServices` for one plugin: reaches the async store from the guest's thread."""

    MAX_REDIRECTS = 5

    def __init__(self, service: PluginService, plugin_id: str, loop_token: Any) -> None:
        self.service = service
        self.plugin_id = plugin_id
        self._token = loop_token  # the guest runs on a thread of ours, not one of anyio's

    def _on_loop(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return anyio.from_thread.run(fn, *args, token=self._token)

    def log(self, plugin: str, level: str, source: str, message: str) -> None:
        self.service._log(plugin, level, source, message)

    def kv_get(self, plugin: str, key: str) -> bytes | None:
        return self._on_loop(self.service.store.kv_get, plugin, key)

    def kv_set(self, plugin: str, key: str, value: bytes, quota: int) -> bool:
        return self._on_loop(self.service.store.kv_set, plugin, key, value, quota)

    def kv_delete(self, plugin: str, key: str) -> bool:
        return self._on_loop(self.service.store.kv_delete, plugin, key)

    def config_get(self, plugin: str, key: str, secret: bool) -> str | None:
        if not secret:
            return self._on_loop(self.service.store.config_get, plugin, key)
        reveal = self.service.reveal_secret
        if reveal is None:
            return None
        try:
            return self._on_loop(reveal, f"plugin.{plugin}.{key}")
        except NotFound:
            return None

    def http_fetch(self, plugin: str, request: dict[str, Any], allowed: Callable[[str], bool],
                   audit: Callable[[str, str, bool], None], deadline: float) -> dict[str, Any]:
        import httpx

        from sidecar.plugins.host import redact_url

        client = self.service.http_client()
        max_bytes = int(self.service.setting("plugins.httpMaxBytes"))
        timeout = min(int(self.service.setting("plugins.httpTimeoutMs")) / 1000, max(0.05, deadline - time.monotonic()))
        method = str(request.get("method", "GET")).upper()
        headers = request.get("headers") or {}
        body = request.get("body")
        url = request["url"]
        for _ in range(self.MAX_REDIRECTS + 1):
            audit("http_fetch", redact_url(url), True)
            try:
                req = client.build_request(method, url, headers=headers,
                                           content=body.encode() if isinstance(body, str) else None,
                                           timeout=timeout)
                response = client.send(req, stream=True)
            except httpx.TimeoutException:
                return {"error": "timeout", "status": 0}
            except httpx.HTTPError as exc:
                return {"error": type(exc).__name__, "status": 0}
            try:
                if response.is_redirect and "location" in response.headers:
                    target = str(response.url.join(response.headers["location"]))
                    if not allowed(target):
                        audit("http_fetch", redact_url(target), False)
                        raise PermissionDenied(f"a redirect left the granted hosts (to {_origin_of(target)})",
                                               operation="http_fetch", target=redact_url(target))
                    url = target
                    if response.status_code in (301, 302, 303):
                        method, body = "GET", None
                    continue
                data = bytearray()
                truncated = False
                for chunk in response.iter_bytes():
                    data += chunk
                    if len(data) > max_bytes:
                        truncated = True
                        del data[max_bytes:]
                        break
                out: dict[str, Any] = {"status": response.status_code,
                                       "headers": {k: v for k, v in response.headers.items()},
                                       "body": data.decode("utf-8", "replace")}
                if truncated:
                    out["truncated"] = True
                return out
            finally:
                response.close()
        return {"error": "too_many_redirects", "status": 0}


def _origin_of(url: str) -> str:
    from sidecar.plugins.host import _origin

    return _origin(url)


def _check_source(source: Path) -> None:
    """Before anything is copied: the folder has a manifest, and holds at most
    MAX_SOURCE_ENTRIES files and folders of at most MAX_SOURCE_BYTES in all (the walk follows
    links as the copy does, and stops at the first bound, so a link loop ends too)."""
    if not (source / mf.MANIFEST).is_file():
        raise InvalidValue(f"no {mf.MANIFEST} in {source}", mf.PATH)
    entries = 0
    total = 0
    for dirpath, dirnames, filenames in os.walk(source, followlinks=True):
        dirnames[:] = [d for d in dirnames if d not in _IGNORED_DIRS]
        entries += len(dirnames) + len(filenames)
        if entries > MAX_SOURCE_ENTRIES:
            raise ResourceExhausted(f"{source} holds more than {MAX_SOURCE_ENTRIES} files and folders; "
                                    "is it a plugin folder?", limit=MAX_SOURCE_ENTRIES, path=mf.PATH)
        for name in filenames:
            if name.endswith(".o"):
                continue
            try:
                info = os.stat(os.path.join(dirpath, name))
            except OSError:
                continue  # the copy reports what it cannot read
            if not stat.S_ISREG(info.st_mode):  # a link to /dev/zero: the copy would never end
                raise InvalidValue(f"{os.path.join(dirpath, name)} is not a regular file", mf.PATH)
            total += info.st_size
        if total > MAX_SOURCE_BYTES:
            raise ResourceExhausted(f"{source} holds more than {MAX_SOURCE_BYTES} bytes; is it a plugin folder?",
                                    limit=MAX_SOURCE_BYTES, path=mf.PATH)


def _fingerprint(folder: Path) -> tuple[Any, ...]:
    """(relative path, size, mtime) of every file under `folder`; () when it is gone."""
    if not folder.is_dir():
        return ()
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if d not in (".zig-cache", "zig-cache")]
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            found.append((os.path.relpath(path, folder), st.st_size, st.st_mtime_ns))
    return tuple(sorted(found))
