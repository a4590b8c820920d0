"""Host functions a plugin imports from the module `sidecar` (ABI v1).

    log(level: i32, ptr: i32, len: i32)                   0 debug, 1 info, 2 warning, 3 error
    kv_get(key_ptr, key_len) -> i32                       value length (read it with result_read), -1 absent
    kv_set(key_ptr, key_len, val_ptr, val_len) -> i32     0 stored, -2 over the kv quota
    kv_delete(key_ptr, key_len) -> i32                    1 deleted, 0 absent
    config_get(key_ptr, key_len) -> i32                   value length (result_read), -1 unset
    http_fetch(req_ptr, req_len) -> i32                   response JSON length (result_read)
    result_read(ptr: i32, cap: i32) -> i32                copies the last result, returns bytes copied

An operation the plugin was not granted stops the call with `permission_denied` (and is
audited). Every function runs on the worker thread that runs the guest; it reaches the
daemon's services through `HostServices`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from protocol.plugins import Permissions
from sidecar.errors import PermissionDenied, PluginTrap, SidecarError
from sidecar.plugins import runtime
from sidecar.plugins.manifest import host_allowed

LEVELS = ("debug", "info", "warning", "error")
MAX_KEY = 512
MAX_LOG = 8192


class HostServices(Protocol):
    """What host functions need from the daemon; synchronous, called on the guest's thread."""

    def log(self, plugin: str, level: str, source: str, message: str) -> None: ...
    def kv_get(self, plugin: str, key: str) -> bytes | None: ...
    def kv_set(self, plugin: str, key: str, value: bytes, quota: int) -> bool: ...
    def kv_delete(self, plugin: str, key: str) -> bool: ...
    def config_get(self, plugin: str, key: str, secret: bool) -> str | None: ...
    def http_fetch(self, plugin: str, request: dict[str, Any], allowed: Callable[[str], bool],
                   audit: Callable[[str, str, bool], None], deadline: float) -> dict[str, Any]: ...


@dataclass(slots=True)
class Audit:
    operation: str
    target: str
    allowed: bool
    at: float = field(default_factory=time.time)


class PluginCall(runtime.HostCall):
    """One call's view of its plugin: who it is, what it may do, what it did."""

    def __init__(self, plugin: str, perms: Permissions, services: HostServices, deadline: float) -> None:
        self.plugin = plugin
        self.perms = perms
        self.services = services
        self.deadline = deadline
        self.result = b""
        self.audits: list[Audit] = []
        self.abort: SidecarError | None = None
        self.captured: tuple[bytes, bytes] = (b"", b"")
        self.store: Any = None
        self.memory: Any = None

    def bind(self, store: Any, memory: Any) -> None:
        self.store, self.memory = store, memory

    def audit(self, operation: str, target: str, allowed: bool) -> None:
        self.audits.append(Audit(operation, target, allowed))

    def deny(self, operation: str, target: str, message: str) -> SidecarError:
        self.audit(operation, target, False)
        self.abort = PermissionDenied(message, operation=operation, target=target)
        return self.abort


def _call() -> PluginCall:
    call = runtime.current_call()
    if not isinstance(call, PluginCall):
        raise PluginTrap("host function called outside a plugin call")
    return call


def _read(caller: Any, ptr: int, length: int, limit: int) -> bytes:
    if length < 0 or length > limit:
        raise PluginTrap(f"host call argument too long ({length} bytes; at most {limit})")
    memory = caller["memory"]
    if ptr < 0 or ptr + length > memory.data_len(caller):
        raise PluginTrap("host call argument outside memory")
    return bytes(memory.read(caller, ptr, ptr + length))


def _text(caller: Any, ptr: int, length: int, limit: int = MAX_KEY) -> str:
    return _read(caller, ptr, length, limit).decode("utf-8", "replace")


def _fail(call: PluginCall, exc: SidecarError) -> SidecarError:
    call.abort = exc
    return exc


# --- the functions -----------------------------------------------------------------------

def h_log(caller: Any, level: int, ptr: int, length: int) -> None:
    call = _call()
    message = _text(caller, ptr, min(length, MAX_LOG), MAX_LOG)
    call.services.log(call.plugin, LEVELS[min(max(level, 0), 3)], "guest", message)


def h_kv_get(caller: Any, kp: int, kl: int) -> int:
    call = _call()
    key = _text(caller, kp, kl)
    if call.perms.kvQuotaBytes <= 0:
        raise call.deny("kv_get", key, "this plugin was not granted key-value storage")
    call.audit("kv_get", key, True)
    value = call.services.kv_get(call.plugin, key)
    if value is None:
        return -1
    call.result = value
    return len(value)


def h_kv_set(caller: Any, kp: int, kl: int, vp: int, vl: int) -> int:
    call = _call()
    key = _text(caller, kp, kl)
    quota = call.perms.kvQuotaBytes
    if quota <= 0:
        raise call.deny("kv_set", key, "this plugin was not granted key-value storage")
    if vl > quota:
        call.audit("kv_set", key, False)
        return -2
    value = _read(caller, vp, vl, quota)
    stored = call.services.kv_set(call.plugin, key, value, quota)
    call.audit("kv_set", key, stored)
    return 0 if stored else -2


def h_kv_delete(caller: Any, kp: int, kl: int) -> int:
    call = _call()
    key = _text(caller, kp, kl)
    if call.perms.kvQuotaBytes <= 0:
        raise call.deny("kv_delete", key, "this plugin was not granted key-value storage")
    deleted = call.services.kv_delete(call.plugin, key)
    call.audit("kv_delete", key, True)
    return 1 if deleted else 0


def h_config_get(caller: Any, kp: int, kl: int) -> int:
    call = _call()
    key = _text(caller, kp, kl)
    entry = next((c for c in call.perms.config if c.key == key), None)
    if entry is None:
        raise call.deny("config_get", key, f"this plugin was not granted the config key {key}")
    call.audit("config_get", key, True)
    value = call.services.config_get(call.plugin, key, entry.secret)
    if value is None:
        return -1
    call.result = value.encode()
    return len(call.result)


def h_http_fetch(caller: Any, rp: int, rl: int) -> int:
    call = _call()
    raw = _read(caller, rp, rl, 1 << 20)
    try:
        request = msgspec.json.decode(raw)
        url = request["url"]
        if not isinstance(url, str):
            raise TypeError
    except (msgspec.DecodeError, KeyError, TypeError):
        raise _fail(call, PluginTrap("http_fetch: the request is not JSON with a url", reason="bad_request")) \
            from None
    hosts = call.perms.hosts

    def allowed(target: str) -> bool:
        return host_allowed(target, hosts)

    if not allowed(url):
        raise call.deny("http_fetch", _redact(url), f"this plugin was not granted access to {_origin(url)}")
    try:
        response = call.services.http_fetch(call.plugin, request, allowed, call.audit, call.deadline)
    except PermissionDenied as exc:  # a redirect out of the granted hosts
        raise _fail(call, exc) from None
    call.result = msgspec.json.encode(response)
    return len(call.result)


def h_result_read(caller: Any, ptr: int, cap: int) -> int:
    call = _call()
    data = call.result[:max(cap, 0)]
    memory = caller["memory"]
    if ptr < 0 or ptr + len(data) > memory.data_len(caller):
        raise _fail(call, PluginTrap("result_read: buffer outside memory"))
    memory.write(caller, data, ptr)
    return len(data)


def _origin(url: str) -> str:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
    except ValueError:
        return "that address"


def _redact(url: str) -> str:
    """The URL without credentials, query or fragment (they may hold secrets)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"[:500]
    except ValueError:
        return "<unparsable url>"


redact_url = _redact


def define(linker: Any) -> None:
    """Add the `sidecar` host functions to a wasmtime Linker."""
    import wasmtime

    i32, none = wasmtime.ValType.i32(), []

    def ty(n: int, result: bool) -> Any:
        return wasmtime.FuncType([i32] * n, [i32] if result else none)

    for name, fn, arity, result in (
        ("log", h_log, 3, False),
        ("kv_get", h_kv_get, 2, True),
        ("kv_set", h_kv_set, 4, True),
        ("kv_delete", h_kv_delete, 2, True),
        ("config_get", h_config_get, 2, True),
        ("http_fetch", h_http_fetch, 2, True),
        ("result_read", h_result_read, 2, True),
    ):
        linker.define_func("sidecar", name, ty(arity, result), _guarded(fn), access_caller=True)


def _guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Any failure in a host function stops the call; the call keeps the reason (wasmtime-py
    passes host exceptions through one process-wide slot, which threads could race on)."""

    def wrapper(caller: Any, *args: int) -> Any:
        try:
            return fn(caller, *args)
        except SidecarError as exc:
            call = runtime.current_call()
            if call is not None and call.abort is None:
                call.abort = exc
            raise
        except Exception as exc:
            call = runtime.current_call()
            if call is not None and call.abort is None:
                call.abort = PluginTrap(f"host function {fn.__name__[2:]} failed", reason=type(exc).__name__)
            raise

    wrapper.__name__ = fn.__name__
    return wrapper
