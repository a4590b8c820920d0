"""The wasm runtime: one wasmtime Engine, a compile cache on disk, and one sandboxed call.

- One `Engine` with fuel metering and epoch interruption. The capability's lifespan ticks
  the epoch every `TICK_SECONDS`; each store's epoch deadline is one tick ahead and a
  callback decides at every tick whether the call may go on (wall-clock deadline not
  passed, not cancelled) - so a running call stops within a tick of `$/cancelRequest`.
- Per call: a fresh `Store` with a fuel budget and `set_limits` (memory, tables,
  instances), a fresh WASI context (preopens, env, stdout/stderr into files read back into
  the plugin's log), and a fresh instance from the plugin's `InstancePre`.
- Compiled modules are cached under `<data dir>/plugins/.cache/` keyed by the wasm's
  sha256, the wasmtime version and the engine settings (`Module.serialize` /
  `Module.deserialize_file`).
- ABI v1 (see `plugins/README.md`): exports `memory`, `alloc(len) -> ptr`,
  `handle(ptr, len) -> i64` (output pointer << 32 | output length), optional
  `dealloc(ptr, len)`; UTF-8 JSON in and out.

wasmtime is imported here only; this module is imported lazily by the service, never at
daemon start-up. Everything in `call` runs in a worker thread: wasmtime releases the GIL
while guest code runs, so the event loop keeps serving.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.metadata
import itertools
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import wasmtime
from wasmtime import _bindings as _b
from wasmtime import _ffi as ffi
from wasmtime import _func as _wasmtime_func

from sidecar.errors import InvalidValue, PluginTrap, ResourceExhausted, SidecarError

log = logging.getLogger("sidecar.plugins")

TICK_SECONDS = 0.01
PAGE = 65536
WASM_VERSION = importlib.metadata.version("wasmtime")
#: what a cached module depends on besides its bytes; bump when the Config changes
ENGINE_SETTINGS = "fuel=1;epoch=1;v2"
#: instance slots of the pooling allocator: calls running at once plus persistent instances
POOL_SLOTS = 256
#: the most output a call may return
MAX_OUTPUT_BYTES = 16 << 20


@dataclass(frozen=True, slots=True)
class CallLimits:
    fuel: int
    memory_bytes: int
    timeout_ms: int


class CallControl:
    """Shared by the event loop (which may cancel) and the worker thread running the guest."""

    __slots__ = ("cancelled", "deadline", "finished", "stopped_by", "started")

    def __init__(self, timeout_ms: int) -> None:
        self.started = time.monotonic()
        self.deadline = self.started + timeout_ms / 1000
        self.cancelled = False
        #: "deadline" or "cancel" once the epoch callback stopped the guest
        self.stopped_by: str | None = None
        #: set by the worker thread once the guest has returned (or stopped)
        self.finished = False

    def cancel(self) -> None:
        self.cancelled = True


class CallCancelled(Exception):
    """The call was stopped because its request was cancelled."""


@dataclass(slots=True)
class Sandbox:
    """What WASI gives one plugin."""

    #: (host dir, guest path, writable)
    preopens: list[tuple[str, str, bool]] = field(default_factory=list)
    env: list[tuple[str, str]] = field(default_factory=list)
    #: where stdout/stderr are written during a call (a private dir, never preopened)
    capture_dir: Path | None = None


@dataclass(slots=True)
class CallOutput:
    output: bytes
    fuel_used: int
    memory_bytes: int
    stdout: bytes = b""
    stderr: bytes = b""


class HostCall:
    """Per-call state the host functions see (set as the thread's current call)."""

    abort: SidecarError | None = None

    def bind(self, store: Any, memory: Any) -> None:  # noqa: D102 - overridden by host.py
        pass


_current = threading.local()


def current_call() -> HostCall | None:
    return getattr(_current, "call", None)


# --- epoch deadline callback -------------------------------------------------------------

_controls: dict[int, CallControl] = {}
_control_ids = itertools.count(1)
_DEADLINE_CB_TYPE = ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.POINTER(ffi.wasmtime_context_t), ctypes.c_void_p,
                                     ctypes.POINTER(ctypes.c_uint64),
                                     ctypes.POINTER(ffi.wasmtime_update_deadline_kind_t))
_NO_FINALIZER = ctypes.cast(0, ctypes.CFUNCTYPE(None, ctypes.c_void_p))


@_DEADLINE_CB_TYPE
def _on_epoch(_ctx: Any, data: Any, delta: Any, kind: Any) -> int:
    control = _controls.get(data or 0)
    if control is not None:
        if control.cancelled:
            control.stopped_by = "cancel"
        elif time.monotonic() >= control.deadline:
            control.stopped_by = "deadline"
        if control.stopped_by:
            err = ffi.wasmtime_error_new(b"sidecar: call interrupted")
            return ctypes.cast(err, ctypes.c_void_p).value or 0
    delta[0] = 1
    kind[0] = 0  # continue
    return 0


# --- programs ----------------------------------------------------------------------------

@dataclass(slots=True)
class Program:
    """A compiled, linked plugin module, ready to instantiate."""

    module: Any
    pre: Any
    sha256: str
    min_memory_bytes: int
    has_dealloc: bool
    persistent: bool = False
    #: exports the WASI reactor initializer `_initialize`, called once per new instance
    has_initialize: bool = False
    #: imports fd_write: its stdout/stderr are captured (skipped otherwise: it costs two files a call)
    writes_output: bool = True
    #: imports anything from WASI (a module that does not gets no WASI context at all)
    uses_wasi: bool = True
    #: persistent instance: (store, instance exports, capture files), made on first call
    kept: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def _new_engine(pooling: bool) -> tuple[Any, bool]:
    """An Engine with fuel and epoch interruption; with the pooling instance allocator when
    it can be had. Pooling keeps linear memories and instances in reused slots (zeroed
    between uses), so a fresh instance per call costs no mmap/munmap and fewer page faults:
    it halves a call of a C plugin with a few pages of memory (about 100 -> 55 µs here).
    Each slot reserves address space only (4 GiB + guard); when that cannot be had (a tight
    RLIMIT_AS), instances are allocated on demand."""
    def config() -> Any:
        cfg = wasmtime.Config()
        cfg.consume_fuel = True
        cfg.epoch_interruption = True
        return cfg

    if pooling:
        cfg = config()
        pool = ffi.wasmtime_pooling_allocation_config_new()
        try:
            for setter in (ffi.wasmtime_pooling_allocation_config_total_core_instances_set,
                           ffi.wasmtime_pooling_allocation_config_total_memories_set,
                           ffi.wasmtime_pooling_allocation_config_total_tables_set):
                setter(pool, POOL_SLOTS)
            ffi.wasmtime_pooling_allocation_strategy_set(cfg.ptr(), pool)
        finally:
            ffi.wasmtime_pooling_allocation_config_delete(pool)
        try:
            return wasmtime.Engine(cfg), True
        except wasmtime.WasmtimeError as exc:
            log.warning("no pooling allocator for plugins (%s); allocating on demand", _first_line(exc))
    return wasmtime.Engine(config()), False


class WasmEngine:
    """The Engine, the Linker with host functions and WASI, the compile cache."""

    def __init__(self, cache_dir: Path, define_host: Callable[[Any], None], *, pooling: bool = True) -> None:
        self.engine, self.pooling = _new_engine(pooling)
        self.settings = f"{ENGINE_SETTINGS};pool={int(self.pooling)}"
        self.cache_dir = cache_dir
        self.linker = wasmtime.Linker(self.engine)
        self.linker.define_wasi()
        define_host(self.linker)
        self.cache_hits = 0

    def tick(self) -> None:
        self.engine.increment_epoch()

    # compile ---------------------------------------------------------------------------

    def cache_path(self, digest: str) -> Path:
        key = hashlib.sha256(f"{digest}|{WASM_VERSION}|{self.settings}".encode()).hexdigest()
        return self.cache_dir / f"{key}.cwasm"

    def load_module(self, wasm: bytes) -> tuple[Any, str]:
        """Compile `wasm`, or deserialize it from the cache; returns (module, sha256)."""
        digest = hashlib.sha256(wasm).hexdigest()
        cached = self.cache_path(digest)
        if cached.exists():
            try:
                module = wasmtime.Module.deserialize_file(self.engine, str(cached))
                self.cache_hits += 1
                return module, digest
            except wasmtime.WasmtimeError:
                log.warning("dropping unusable compile cache entry %s", cached.name)
                cached.unlink(missing_ok=True)
        try:
            module = wasmtime.Module(self.engine, wasm)
        except wasmtime.WasmtimeError as exc:
            raise InvalidValue(f"the entry is not a valid WebAssembly module: {_first_line(exc)}",
                               "$.params.path") from None
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(module.serialize())
        os.replace(tmp, cached)
        return module, digest

    def prepare(self, wasm: bytes, *, persistent: bool = False) -> Program:
        """Compile, check the ABI v1 exports, and resolve imports (InstancePre)."""
        module, digest = self.load_module(wasm)
        exports = {e.name: e.type for e in module.exports}
        memory = exports.get("memory")
        if not isinstance(memory, wasmtime.MemoryType):
            raise InvalidValue("ABI v1: the module must export its memory as `memory`", "$.params.path")
        _expect_func(exports, "alloc", [wasmtime.ValType.i32()], [wasmtime.ValType.i32()])
        _expect_func(exports, "handle", [wasmtime.ValType.i32()] * 2, [wasmtime.ValType.i64()])
        has_dealloc = "dealloc" in exports
        if has_dealloc:
            _expect_func(exports, "dealloc", [wasmtime.ValType.i32()] * 2, [])
        for imp in module.imports:
            if imp.module not in ("sidecar", "wasi_snapshot_preview1"):
                raise InvalidValue(f"the module imports {imp.module}.{imp.name}, which sidecar does not "
                                   "provide", "$.params.path")
        try:
            pre = self.linker.instantiate_pre(module)
        except wasmtime.WasmtimeError as exc:
            raise InvalidValue(f"cannot link the module: {_first_line(exc)}", "$.params.path") from None
        has_initialize = "_initialize" in exports
        if has_initialize:
            _expect_func(exports, "_initialize", [], [])
        writes = any(i.module == "wasi_snapshot_preview1" and i.name == "fd_write" for i in module.imports)
        wasi = any(i.module == "wasi_snapshot_preview1" for i in module.imports)
        return Program(module, pre, digest, memory.limits.min * PAGE, has_dealloc, persistent, has_initialize,
                       writes, wasi)

    # call ------------------------------------------------------------------------------

    def _new_store(self, program: Program, limits: CallLimits, sandbox: Sandbox,
                   capture: tuple[Path, Path] | None) -> Any:
        store = _RawStore(self.engine)
        store.set_limits(limits.memory_bytes, 100_000, 1, 4, 1)
        if not program.uses_wasi:
            return store
        wasi = wasmtime.WasiConfig()
        for host_dir, guest_dir, writable in sandbox.preopens:
            wasi.preopen_dir(host_dir, guest_dir, writable)
        if sandbox.env:
            wasi.env(sandbox.env)
        if capture is not None:
            wasi.stdout_file = str(capture[0])
            wasi.stderr_file = str(capture[1])
        store.set_wasi(wasi)
        return store

    def call(self, program: Program, payload: bytes, limits: CallLimits, control: CallControl,
             sandbox: Sandbox, host: HostCall) -> CallOutput:
        """Run `handle(payload)` in a sandbox; raises ResourceExhausted, PluginTrap,
        CallCancelled, or the SidecarError a host function aborted the call with."""
        if program.min_memory_bytes > limits.memory_bytes:
            raise ResourceExhausted(
                f"the module needs {program.min_memory_bytes} bytes of memory at start; the limit is "
                f"{limits.memory_bytes}", limit="memoryBytes", max=limits.memory_bytes,
                used=program.min_memory_bytes)
        if program.persistent:
            with program.lock:
                return self._call(program, payload, limits, control, sandbox, host)
        return self._call(program, payload, limits, control, sandbox, host)

    def _call(self, program: Program, payload: bytes, limits: CallLimits, control: CallControl,
              sandbox: Sandbox, host: HostCall) -> CallOutput:
        capture: tuple[Path, Path] | None = None
        offsets = (0, 0)
        exports: _Exports | None
        if program.kept is not None:
            store, exports, capture = program.kept
            if capture is not None:
                offsets = (_size(capture[0]), _size(capture[1]))
        else:
            if sandbox.capture_dir is not None and program.writes_output:
                # one pair of files per worker thread, truncated by WASI at every new store
                stem = sandbox.capture_dir / f"{os.getpid()}-{threading.get_ident()}{'-p' if program.persistent else ''}"
                capture = (stem.with_suffix(".out"), stem.with_suffix(".err"))
            store = self._new_store(program, limits, sandbox, capture)
            exports = None
        store.set_fuel(limits.fuel)
        key = next(_control_ids)
        _controls[key] = control
        ctx = store._context()
        ffi.wasmtime_store_epoch_deadline_callback(store.ptr(), _on_epoch, key, _NO_FINALIZER)
        ffi.wasmtime_context_set_epoch_deadline(ctx, 1)
        _current.call = host
        memory = None
        try:
            if exports is None:
                try:
                    exports = _Exports.instantiate(program, ctx)
                except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
                    if host.abort is None and control.stopped_by is None and \
                            getattr(exc, "trap_code", None) != wasmtime.TrapCode.OUT_OF_FUEL:
                        raise _instantiate_error(exc, program, limits) from None
                    raise
                if program.persistent:
                    program.kept = (store, exports, capture)
            memory = exports  # for _classify: the memory's size at a trap
            host.bind(store, exports.memory)
            n = len(payload)
            args = exports.args
            args[0].i32 = n
            _raw_call(ctx, exports.alloc, args, 1)
            ptr = args[0].i32
            if ptr <= 0 or ptr + n > exports.size(ctx):
                raise PluginTrap("ABI v1: alloc returned a pointer outside memory", reason="bad_alloc")
            ctypes.memmove(exports.base(ctx) + ptr, payload, n)
            args[0].i32 = ptr
            args[1].i32 = n
            _raw_call(ctx, exports.handle, args, 2)
            packed = args[0].i64 & 0xFFFF_FFFF_FFFF_FFFF
            out_ptr, out_len = packed >> 32, packed & 0xFFFF_FFFF
            size = exports.size(ctx)
            if out_len > MAX_OUTPUT_BYTES or out_ptr + out_len > size:
                raise PluginTrap("ABI v1: handle returned an output range outside memory", reason="bad_output",
                                 pointer=out_ptr, length=out_len)
            output = ctypes.string_at(exports.base(ctx) + out_ptr, out_len)
            if exports.dealloc is not None:
                args[0].i32 = out_ptr
                args[1].i32 = out_len
                _raw_call(ctx, exports.dealloc, args, 2)
            fuel_used = limits.fuel - store.get_fuel()
            return CallOutput(output, fuel_used, size)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            if program.persistent:
                program.kept = None  # a trapped instance is not reused
            raise self._classify(exc, store, memory, limits, control, host) from None
        except BaseException:
            if program.persistent:
                program.kept = None
            if host.abort is not None:
                raise host.abort from None
            raise
        finally:
            _current.call = None
            _controls.pop(key, None)
            # the store must be freed here, on the worker thread, not on the event loop's
            # thread when the caller drops its last reference (~20 µs there)
            host.bind(None, None)
            if program.kept is None or program.kept[0] is not store:
                store.close()
            if capture is not None:
                host.captured = (_read_from(capture[0], offsets[0]), _read_from(capture[1], offsets[1]))  # type: ignore[attr-defined]

    def _classify(self, exc: Exception, store: Any, memory: Any, limits: CallLimits, control: CallControl,
                  host: HostCall) -> BaseException:
        if host.abort is not None:
            return host.abort
        if control.stopped_by == "cancel":
            return CallCancelled()
        elapsed_ms = round((time.monotonic() - control.started) * 1000, 1)
        if control.stopped_by == "deadline":
            return ResourceExhausted(f"the plugin ran past its {limits.timeout_ms} ms deadline",
                                     limit="timeoutMs", max=limits.timeout_ms, used=elapsed_ms)
        code = getattr(exc, "trap_code", None)
        if code == wasmtime.TrapCode.OUT_OF_FUEL:
            return ResourceExhausted(f"the plugin used up its fuel ({limits.fuel})", limit="fuel",
                                     max=limits.fuel, used=limits.fuel)
        size = memory.size(store._context()) if memory is not None else 0
        message = _trap_message(exc)
        if memory is not None and size + PAGE > limits.memory_bytes:
            # a guest whose memory.grow was refused at the cap usually aborts right after
            return ResourceExhausted(f"the plugin hit its memory limit ({limits.memory_bytes} bytes) and "
                                     f"trapped: {message}", limit="memoryBytes", max=limits.memory_bytes,
                                     used=size)
        return PluginTrap(f"the plugin trapped: {message}", trap=message)


# --- the raw call path ---------------------------------------------------------------------

class _RawStore:
    """A wasmtime store without wasmtime-py's `Store` object around it (whose making and
    finalizing cost several µs a call): only what a call uses. `close()` frees it at once."""

    __slots__ = ("_ctx", "_ptr")

    def __init__(self, engine: Any) -> None:
        self._ptr = _store_new(engine.ptr(), None, _NO_FINALIZER)
        self._ctx = _store_context(self._ptr)

    def ptr(self) -> Any:
        return self._ptr

    def _context(self) -> Any:
        return self._ctx

    def set_limits(self, memory_size: int, table_elements: int, instances: int, tables: int, memories: int) -> None:
        _store_limiter(self._ptr, memory_size, table_elements, instances, tables, memories)

    def set_wasi(self, wasi: Any) -> None:
        error = ffi.wasmtime_context_set_wasi(self._ctx, wasi._consume())
        if error:
            raise wasmtime.WasmtimeError._from_ptr(error)

    def set_fuel(self, fuel: int) -> None:
        error = _set_fuel(self._ctx, fuel)
        if error:
            raise wasmtime.WasmtimeError._from_ptr(error)

    def get_fuel(self) -> int:
        remaining = ctypes.c_uint64(0)
        error = _get_fuel(self._ctx, ctypes.byref(remaining))
        if error:
            raise wasmtime.WasmtimeError._from_ptr(error)
        return remaining.value

    def close(self) -> None:
        ptr, self._ptr, self._ctx = self._ptr, None, None
        if ptr is not None:
            _store_delete(ptr)

    def __del__(self) -> None:  # a persistent instance's store, dropped with its Program
        self.close()

#
# wasmtime-py's `Func.__call__` asks the engine for the function's type and converts every
# argument through `Val` on each call, and `Instance.exports` wraps every export: together
# more than half of a small call's cost. The ABI's signatures are checked once in `prepare`,
# so a call goes straight to `wasmtime_func_call_unchecked` with a reused argument array,
# and memory is reached through its base pointer (re-read after every guest call: a
# `memory.grow` may move it).

_RawArgs = ffi.wasmtime_val_raw_t * 2


def _direct(name: str) -> Any:
    """The ctypes function itself, without wasmtime-py's Python wrapper around it (a frame
    and a call less each: a call makes about twenty of these)."""
    return getattr(_b, f"_{name}", None) or getattr(ffi, name)


_export_get = _direct("wasmtime_instance_export_get")
_func_call = _direct("wasmtime_func_call_unchecked")
_memory_size = _direct("wasmtime_memory_data_size")
_store_new = _direct("wasmtime_store_new")
_store_context = _direct("wasmtime_store_context")
_store_delete = _direct("wasmtime_store_delete")
_store_limiter = _direct("wasmtime_store_limiter")
_set_fuel = _direct("wasmtime_context_set_fuel")
_get_fuel = _direct("wasmtime_context_get_fuel")
_pre_instantiate = _direct("wasmtime_instance_pre_instantiate")
#: the memory's base address as an int (wasmtime-py's binding returns a pointer object to cast)
_memory_base = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.POINTER(ffi.wasmtime_context_t),
                                ctypes.POINTER(ffi.wasmtime_memory_t))(("wasmtime_memory_data", ffi.dll))


class _Exports:
    """One instance's ABI exports, as raw wasmtime handles."""

    __slots__ = ("alloc", "args", "dealloc", "handle", "memory", "memory_ref")

    def __init__(self, memory: Any, alloc: Any, handle: Any, dealloc: Any) -> None:
        self.memory = memory
        self.memory_ref = ctypes.byref(memory)
        self.alloc = alloc
        self.handle = handle
        self.dealloc = dealloc
        self.args = _RawArgs()

    @property
    def memory_object(self) -> Any:
        """wasmtime-py's Memory (made only when a trap is classified: it costs a few µs)."""
        return wasmtime.Memory._from_raw(self.memory)

    @classmethod
    def instantiate(cls, program: Program, ctx: Any) -> _Exports:
        instance = ffi.wasmtime_instance_t()
        trap = ctypes.POINTER(ffi.wasm_trap_t)()
        error = _pre_instantiate(program.pre.ptr(), ctx, ctypes.byref(instance), ctypes.byref(trap))
        _raise_failure(error, trap)

        def get(name: bytes) -> Any:
            item = ffi.wasmtime_extern_t()
            if not _export_get(ctx, ctypes.byref(instance), name, len(name), ctypes.byref(item)):
                raise PluginTrap(f"ABI v1: the instance has no export {name.decode()}", reason="bad_export")
            return item.of

        if program.has_initialize:  # a WASI reactor: libc and constructors set up once per instance
            _raw_call(ctx, get(b"_initialize").func, _RawArgs(), 0)
        return cls(get(b"memory").memory, get(b"alloc").func, get(b"handle").func,
                   get(b"dealloc").func if program.has_dealloc else None)

    def base(self, ctx: Any) -> int:
        return _memory_base(ctx, self.memory_ref) or 0

    def size(self, ctx: Any) -> int:
        return int(_memory_size(ctx, self.memory_ref))


def _raw_call(ctx: Any, func: Any, args: Any, nargs: int) -> None:
    """Call `func` with `args[:nargs]`; its results replace `args` (capacity 2)."""
    trap = ctypes.POINTER(ffi.wasm_trap_t)()
    error = _func_call(ctx, ctypes.byref(func), args, 2, ctypes.byref(trap))
    _raise_failure(error, trap)


def _raise_failure(error: Any, trap: Any) -> None:
    if not error and not trap:
        return
    # a host function that raised left its exception in wasmtime-py's one global slot; the
    # call keeps its own copy (HostCall.abort), so the slot is cleared for the next caller
    _wasmtime_func.LAST_EXCEPTION = None
    if error:
        raise wasmtime.WasmtimeError._from_ptr(error)
    raise wasmtime.Trap._from_ptr(trap)


def _instantiate_error(exc: Exception, program: Program, limits: CallLimits) -> SidecarError:
    text = _first_line(exc)
    if "concurrent" in text and "limit" in text:  # every pooling slot is in use
        return ResourceExhausted(f"too many plugin instances at once: {text}", limit="instances", max=POOL_SLOTS,
                                 reason="busy")
    if "memory" in text and ("limit" in text or "exceed" in text or "resource" in text):
        return ResourceExhausted(f"the module's memory does not fit its limit: {text}", limit="memoryBytes",
                                 max=limits.memory_bytes, used=program.min_memory_bytes)
    return PluginTrap(f"the plugin failed to start: {text}", trap=text)


def _expect_func(exports: dict[str, Any], name: str, params: list[Any], results: list[Any]) -> None:
    ty = exports.get(name)
    if not isinstance(ty, wasmtime.FuncType):
        raise InvalidValue(f"ABI v1: the module must export a function `{name}`", "$.params.path")
    if [str(p) for p in ty.params] != [str(p) for p in params] or \
            [str(r) for r in ty.results] != [str(r) for r in results]:
        raise InvalidValue(f"ABI v1: `{name}` has the wrong signature", "$.params.path")


def _trap_message(exc: Exception) -> str:
    """The cause of a trap without the wasm backtrace (`wasm trap: unreachable ...`)."""
    text = getattr(exc, "message", None) or str(exc)
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    if "Caused by:" in lines:
        rest = lines[lines.index("Caused by:") + 1:]
        if rest:
            return rest[-1][:500]
    return (lines[0] if lines else "trap")[:500]


def _first_line(exc: Exception) -> str:
    return _trap_message(exc)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_from(path: Path, offset: int, limit: int = 64 << 10) -> bytes:
    if _size(path) <= offset:
        return b""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(limit)
    except OSError:
        return b""
