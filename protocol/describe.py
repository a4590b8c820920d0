"""What a method takes and answers, read from its Structs: the JSON Schema msgspec makes of
them is the one `tools/gen_schema.py` writes to protocol/schema/openrpc.json, so this and
the schema never disagree. Field descriptions come from `Meta(description=...)`, defaults
and bounds from the Struct fields.

Shared by `sidecar describe`, the shell's `:describe` and the `system/describe` method.
Like all of protocol/, it imports nothing of the daemon.
"""

from __future__ import annotations

import difflib
import functools
import json
from typing import Any

import msgspec

from protocol import catalog
from protocol.spec import MethodSpec, NotificationSpec
from protocol.system import DescribeResult, FieldInfo, StreamInfo, TypeInfo

_REF = "#/components/schemas/{name}"


class UnknownMethod(LookupError):
    """No method of that name; `suggestions` are the closest names there are."""

    def __init__(self, name: str, suggestions: list[str]) -> None:
        hint = f"; did you mean {' or '.join(suggestions)}?" if suggestions else ""
        super().__init__(f"no method {name!r}{hint}")
        self.name = name
        self.suggestions = suggestions


def method_names() -> list[str]:
    return [m.name for m in catalog.METHODS]


def find(name: str) -> MethodSpec:
    for spec in catalog.METHODS:
        if spec.name == name:
            return spec
    raise UnknownMethod(name, difflib.get_close_matches(name, method_names(), n=3, cutoff=0.5))


def param_names(name: str) -> list[str]:
    """The params fields of a method ([] for an unknown one): for completion."""
    try:
        return [f.name for f in describe(name).params]
    except UnknownMethod:
        return []


@functools.lru_cache(maxsize=None)
def describe(name: str) -> DescribeResult:
    """The description of one method; UnknownMethod if there is none of that name."""
    spec = find(name)
    streamed = [_notification(n) for n in spec.streams]
    types: list[Any] = [spec.params] + ([spec.result] if spec.result is not None else [])
    types += [n.params for n in streamed]
    refs, components = msgspec.json.schema_components(types, ref_template=_REF)
    schemas = dict(zip(types, refs))

    def object_fields(ref: dict[str, Any]) -> list[FieldInfo]:
        schema = components.get(_ref_name(ref), {}) if "$ref" in ref else ref
        return _fields(schema)

    result_ref = schemas[spec.result] if spec.result is not None else {"type": "null"}
    result_is_object = "$ref" in result_ref
    own = {_ref_name(schemas[spec.params])} | ({_ref_name(result_ref)} if result_is_object else set())
    own |= {_ref_name(schemas[n.params]) for n in streamed}
    return DescribeResult(
        name=spec.name,
        summary=spec.summary,
        params=object_fields(schemas[spec.params]),
        resultType=_type_of(result_ref),
        result=object_fields(result_ref) if result_is_object else [],
        streams=[StreamInfo(name=n.name, summary=n.summary, fields=object_fields(schemas[n.params]))
                 for n in streamed],
        types=[TypeInfo(name=key, fields=_fields(schema), description=schema.get("description"))
               for key, schema in sorted(components.items()) if key not in own],
        lane=getattr(spec, "lane", None),
        longRunning=bool(getattr(spec, "is_long_running", bool(spec.streams))),
    )


def render(d: DescribeResult) -> str:
    """The description as text for a terminal."""
    lines = [d.name, f"  {d.summary}", "", "params:" if d.params else "params: none"]
    lines += _render_fields(d.params)
    lines += ["", f"result: {d.resultType}"]
    lines += _render_fields(d.result)
    for stream in d.streams:
        lines += ["", f"streams {stream.name}: {stream.summary}"]
        lines += _render_fields(stream.fields)
    for t in d.types:
        lines += ["", f"{t.name}:" + (f" {t.description}" if t.description else "")]
        lines += _render_fields(t.fields)
    notes = ([f"ordered in lane {d.lane!r}"] if d.lane else []) + (["long-running"] if d.longRunning else [])
    if notes:
        lines += ["", "; ".join(notes)]
    return "\n".join(lines)


# ---- JSON Schema -> FieldInfo --------------------------------------------------------------


def _notification(stream: NotificationSpec | str) -> NotificationSpec:
    """A streamed notification's spec (older specs name it by string)."""
    if isinstance(stream, NotificationSpec):
        return stream
    for spec in catalog.NOTIFICATIONS:
        if spec.name == stream:
            return spec
    raise LookupError(f"unknown notification {stream!r}")


def _ref_name(schema: dict[str, Any]) -> str:
    return str(schema.get("$ref", "")).rsplit("/", 1)[-1]


def _fields(schema: dict[str, Any]) -> list[FieldInfo]:
    required = set(schema.get("required", []))
    fields = []
    for name, prop in schema.get("properties", {}).items():
        fields.append(FieldInfo(
            name=name, type=_type_of(prop), required=name in required,
            default=prop["default"] if "default" in prop else msgspec.UNSET,
            description=prop.get("description")))
    return fields


def _type_of(schema: dict[str, Any]) -> str:
    """A short, readable type: "integer 0..10", "string | null", "array of Foo", "any"."""
    if "$ref" in schema:
        return _ref_name(schema)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " | ".join(_type_of(s) for s in schema[key])
    if "enum" in schema:
        return " | ".join(json.dumps(v) for v in schema["enum"])
    if "const" in schema:
        return json.dumps(schema["const"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return " | ".join(kind)
    if kind == "array":
        items = schema.get("items")
        return f"array of {_type_of(items)}" if items else "array"
    if kind == "object":
        extra = schema.get("additionalProperties")
        return f"object of {_type_of(extra)}" if isinstance(extra, dict) and extra else "object"
    if kind is None:
        return "any"
    return str(kind) + _bounds(schema)


def _bounds(schema: dict[str, Any]) -> str:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    if "minLength" in schema or "maxLength" in schema:
        low, high = schema.get("minLength"), schema.get("maxLength")
        unit = " chars"
    else:
        unit = ""
    if low is None and high is None:
        return ""
    return f" {'' if low is None else _num(low)}..{'' if high is None else _num(high)}{unit}"


def _num(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _render_fields(fields: list[FieldInfo]) -> list[str]:
    lines = []
    for f in fields:
        attrs = [f.type, "required" if f.required else "optional"]
        if f.default is not msgspec.UNSET:
            attrs.append(f"default {json.dumps(f.default)}")
        lines.append(f"  {f.name}: {', '.join(attrs)}" + (f" — {f.description}" if f.description else ""))
    return lines
