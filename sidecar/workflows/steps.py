"""Step kinds: what each takes and yields (the Structs in protocol/workflows.py), how the leaf
kinds run, and the block descriptors generated from them.

The control kinds (`condition`, `loop`, `workflow`) need the graph runner and are run by the
engine (sidecar/workflows/engine.py); the leaf kinds run here, with what `StepServices` gives.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import msgspec

from protocol import workflows as w
from sidecar.errors import InvalidValue, NotFound, PermissionDenied, SidecarError, Unavailable
from sidecar.http import SharedHttp
from sidecar.toolsource import ToolCall, ToolRegistry

log = logging.getLogger("sidecar.workflows")


@dataclass(frozen=True, slots=True)
class KindSpec:
    kind: str
    label: str
    category: str  # control | data | network | ai | io
    icon: str
    description: str
    inputs: type[msgspec.Struct]
    output: type[msgspec.Struct]
    #: output fields whose content has no fixed shape (references below them are not checked)
    streaming: bool = False


KINDS: dict[str, KindSpec] = {spec.kind: spec for spec in (
    KindSpec("set", "Set value", "data", "variable", "Yields a JSON value (templates filled in): "
             "for wiring and shaping data", w.SetInputs, w.SetOutput),
    KindSpec("delay", "Delay", "control", "clock", "Waits a number of milliseconds", w.DelayInputs, w.DelayOutput),
    KindSpec("http", "HTTP request", "network", "globe", "Sends an HTTP request and yields the status, headers "
             "and body (JSON parsed)", w.HttpInputs, w.HttpOutput),
    KindSpec("file", "File", "io", "file", "Reads, writes, appends or lists files inside the allowed folders",
             w.FileInputs, w.FileOutput),
    KindSpec("condition", "Condition", "control", "git-branch", "Evaluates an expression; the steps in `then` "
             "run when it is true, those in `else` when it is false", w.ConditionInputs, w.ConditionOutput),
    KindSpec("loop", "Loop", "control", "repeat", "Runs its body sub-graph once per item of a list, a few at "
             "a time", w.LoopInputs, w.LoopOutput),
    KindSpec("workflow", "Call workflow", "control", "workflow", "Runs another saved workflow with inputs and "
             "yields its outputs", w.WorkflowCallInputs, w.WorkflowCallOutput),
    KindSpec("tool", "Tool", "data", "wrench", "Calls a tool: a plugin, an integration or an MCP tool",
             w.ToolInputs, w.ToolOutput),
    KindSpec("llm", "LLM", "ai", "sparkles", "Sends a prompt to an agent through the chat service; yields "
             "the text and usage", w.LlmInputs, w.LlmOutput, streaming=True),
)}

CONTROL_KINDS = frozenset({"condition", "loop", "workflow"})


def output_fields(kind: str) -> tuple[str, ...]:
    return tuple(f.name for f in msgspec.structs.fields(KINDS[kind].output))


# --- block descriptors --------------------------------------------------------------------------

def _type_name(t: msgspec.inspect.Type) -> tuple[str, list[Any] | None]:
    ti = msgspec.inspect
    if isinstance(t, ti.Metadata):
        return _type_name(t.type)
    if isinstance(t, ti.LiteralType):
        return "enum", list(t.values)
    if isinstance(t, ti.UnionType):
        kinds = [_type_name(x)[0] for x in t.types if not isinstance(x, ti.NoneType)]
        return (kinds[0] if len(kinds) == 1 else "any"), None
    return {ti.StrType: "string", ti.IntType: "integer", ti.FloatType: "number", ti.BoolType: "boolean",
            ti.DictType: "object", ti.ListType: "array", ti.AnyType: "json"}.get(type(t), "json"), None


def _meta(t: msgspec.inspect.Type) -> dict[str, Any]:
    if isinstance(t, msgspec.inspect.Metadata):
        return {"title": t.extra_json_schema.get("title") if t.extra_json_schema else None,
                **(t.extra_json_schema or {})}
    return {}


def _fields(struct: type[msgspec.Struct]) -> list[w.BlockField]:
    info = msgspec.inspect.type_info(struct)
    assert isinstance(info, msgspec.inspect.StructType)
    out: list[w.BlockField] = []
    for f in info.fields:
        type_name, enum = _type_name(f.type)
        meta = _meta(f.type)
        default = None if f.default is msgspec.NODEFAULT else f.default
        out.append(w.BlockField(id=f.encode_name, label=meta.get("title") or f.name, type=type_name,
                                required=f.required, default=default, enum=enum,
                                description=meta.get("description", "")))
    return out


def descriptors(available: Callable[[str], bool] = lambda kind: True) -> list[w.BlockDescriptor]:
    return [w.BlockDescriptor(id=s.kind, label=s.label, category=s.category, icon=s.icon, description=s.description,
                              inputs=_fields(s.inputs), outputs=_fields(s.output), streaming=s.streaming,
                              available=available(s.kind))
            for s in KINDS.values()]


# --- running the leaf kinds ---------------------------------------------------------------------

@dataclass(slots=True)
class StepRuntime:
    """What a running step knows about itself."""

    run_id: str
    workflow_id: str
    step_id: str
    attempt: int
    idempotency_key: str
    depth: int
    #: streamed output (LLM text) as it comes
    chunk: Callable[[str], Awaitable[None]] | None = None


ChatFn = Callable[[w.LlmInputs, StepRuntime], Awaitable[w.LlmOutput]]


@dataclass(slots=True)
class StepServices:
    tools: ToolRegistry
    file_roots: Callable[[], list[Path]]
    #: the llm step's way to the chat service; None when chat is not in this build
    chat: ChatFn | None = None
    http_max_bytes: int = 10 * 1024 * 1024
    #: the daemon's shared client (`platform.http`); a standalone StepServices makes its own
    http: SharedHttp = field(default_factory=SharedHttp)
    #: close `http` in `aclose` (not when it is the daemon's: the composition root closes that)
    owns_http: bool = True

    async def aclose(self) -> None:
        if self.owns_http:
            await self.http.aclose()


class StepFailed(SidecarError):
    """A step failed in a way worth retrying (status 5xx, connection error...)."""

    kind = "step_failed"


def convert_inputs(kind: str, inputs: dict[str, Any]) -> msgspec.Struct:
    try:
        return msgspec.convert(inputs, KINDS[kind].inputs)
    except msgspec.ValidationError as exc:
        text = str(exc)
        path = text.rpartition("- at `")[2].rstrip("`") if "- at `" in text else "$"
        raise InvalidValue(f"{kind} step: {text.partition(' - at ')[0]}", "$.inputs" + path[1:]) from None


async def run_set(inputs: w.SetInputs, rt: StepRuntime, services: StepServices) -> dict[str, Any]:
    return {"value": inputs.value}


async def run_delay(inputs: w.DelayInputs, rt: StepRuntime, services: StepServices) -> dict[str, Any]:
    await anyio.sleep(inputs.ms / 1000)
    return {"ms": inputs.ms}


RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


async def run_http(inputs: w.HttpInputs, rt: StepRuntime, services: StepServices) -> dict[str, Any]:
    import httpx

    if not inputs.url.startswith(("http://", "https://")):
        raise InvalidValue("an http step's url must start with http:// or https://", "$.inputs.url")
    headers = dict(inputs.headers)
    if inputs.idempotencyKey and not any(k.lower() == "idempotency-key" for k in headers):
        headers["Idempotency-Key"] = rt.idempotency_key
    content: bytes | None = None
    if inputs.body is not None:
        if isinstance(inputs.body, str):
            content = inputs.body.encode()
        else:
            content = json.dumps(inputs.body).encode()
            if not any(k.lower() == "content-type" for k in headers):
                headers["Content-Type"] = "application/json"
    client = await services.http.client()
    try:
        async with client.stream(inputs.method, inputs.url, headers=headers, content=content,
                                 timeout=inputs.timeoutMs / 1000, follow_redirects=True) as response:
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > services.http_max_bytes:
                    raise StepFailed(f"the response of {inputs.url} is larger than {services.http_max_bytes} bytes",
                                     retryable=False)
                chunks.append(chunk)
    except httpx.TimeoutException:
        raise StepFailed(f"{inputs.method} {inputs.url} timed out", retryable=True) from None
    except httpx.HTTPError as exc:
        raise StepFailed(f"{inputs.method} {inputs.url} failed: {type(exc).__name__}", retryable=True) from None
    raw = b"".join(chunks)
    body: Any
    ctype = response.headers.get("content-type", "")
    text = raw.decode(response.encoding or "utf-8", errors="replace")
    if "json" in ctype:
        try:
            body = json.loads(text) if text else None
        except ValueError:
            body = text
    else:
        body = text
    if inputs.failOnStatus and response.status_code >= 400:
        raise StepFailed(f"{inputs.method} {inputs.url} answered {response.status_code}",
                         status=response.status_code, retryable=response.status_code in RETRYABLE_STATUS)
    return {"status": response.status_code, "headers": dict(response.headers), "body": body}


def resolve_inside(path: str, roots: list[Path]) -> Path:
    """`path` (absolute, or relative to the first root) resolved, symlinks included; it must
    lie inside one of `roots`."""
    if not roots:
        raise PermissionDenied("no folder is allowed for file steps (setting workflows.fileRoots)")
    candidate = Path(path)
    if not candidate.is_absolute():
        candidate = roots[0] / candidate
    resolved = Path(os.path.realpath(candidate))
    for root in roots:
        real_root = Path(os.path.realpath(root))
        if resolved == real_root or resolved.is_relative_to(real_root):
            return resolved
    raise PermissionDenied(f"{path} is outside the folders file steps may use", path=path)


async def run_file(inputs: w.FileInputs, rt: StepRuntime, services: StepServices) -> dict[str, Any]:
    target = resolve_inside(inputs.path, services.file_roots())

    def work() -> dict[str, Any]:
        if inputs.op == "exists":
            return {"path": str(target), "exists": target.exists()}
        if inputs.op == "list":
            if not target.is_dir():
                raise NotFound(f"no folder {inputs.path}")
            return {"path": str(target), "entries": sorted(p.name for p in target.iterdir())}
        if inputs.op == "read":
            if not target.is_file():
                raise NotFound(f"no file {inputs.path}")
            data = target.read_bytes()
            if len(data) > services.http_max_bytes:
                raise StepFailed(f"{inputs.path} is larger than {services.http_max_bytes} bytes", retryable=False)
            return {"path": str(target), "content": data.decode(inputs.encoding, errors="replace"),
                    "bytes": len(data)}
        content = inputs.content
        text = content if isinstance(content, str) else ("" if content is None else json.dumps(content, indent=2))
        data = text.encode(inputs.encoding)
        target.parent.mkdir(parents=True, exist_ok=True)
        if inputs.op == "append":
            with target.open("ab") as fh:
                fh.write(data)
        else:  # write: whole file, atomically
            tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
            tmp.write_bytes(data)
            os.replace(tmp, target)
        return {"path": str(target), "bytes": len(data)}

    return await anyio.to_thread.run_sync(work)


async def run_tool(inputs: w.ToolInputs, rt: StepRuntime, services: StepServices) -> dict[str, Any]:
    result = await services.tools.call(inputs.tool, inputs.arguments,
                                       ToolCall(caller=f"workflow:{rt.workflow_id}",
                                                extra={"runId": rt.run_id, "stepId": rt.step_id,
                                                       "idempotencyKey": rt.idempotency_key}))
    if result.is_error:
        raise StepFailed(f"tool {inputs.tool} reported an error", content=result.content, retryable=False)
    return {"content": result.content, "isError": False}


async def run_llm(inputs: w.LlmInputs, rt: StepRuntime, services: StepServices) -> dict[str, Any]:
    if services.chat is None:
        raise Unavailable("llm steps need the chat capability, which is not in this build")
    out = await services.chat(inputs, rt)
    return msgspec.to_builtins(out)


LEAF_RUNNERS: dict[str, Callable[[Any, StepRuntime, StepServices], Awaitable[dict[str, Any]]]] = {
    "set": run_set, "delay": run_delay, "http": run_http, "file": run_file, "tool": run_tool, "llm": run_llm,
}


def retryable(exc: BaseException) -> bool:
    """Whether a failed attempt is worth another: bad inputs and missing things are not."""
    if isinstance(exc, StepFailed):
        return bool((exc.details or {}).get("retryable", True))
    if isinstance(exc, (InvalidValue, NotFound, PermissionDenied, Unavailable)):
        return False
    return True


def error_info(exc: BaseException) -> dict[str, Any]:
    """What is recorded and shown of a failure: safe text only."""
    if isinstance(exc, SidecarError):
        info: dict[str, Any] = {"kind": exc.kind, "message": exc.message}
        details = {k: v for k, v in (exc.details or {}).items() if k != "retryable"}
        if details:
            info["details"] = msgspec.to_builtins(details, builtin_types=(), str_keys=True) \
                if _jsonable(details) else {k: str(v) for k, v in details.items()}
        return info
    if isinstance(exc, TimeoutError):
        return {"kind": "timeout", "message": "the step timed out"}
    log.warning("workflow step raised %s", type(exc).__name__, exc_info=exc)
    return {"kind": "internal", "message": f"the step failed ({type(exc).__name__})"}


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True

