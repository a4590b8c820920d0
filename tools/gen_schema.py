"""Write the protocol's OpenRPC document and JSON Schemas from the msgspec Structs.

    python tools/gen_schema.py          # (re)write protocol/schema/
    python tools/gen_schema.py --check  # exit 1 if the committed files differ

The Structs in `protocol/` are the source; these files are what shells consume.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from protocol import PROTOCOL_VERSION, errors, jsonrpc  # noqa: E402
from protocol.catalog import NAMESPACES  # noqa: E402
from protocol.spec import MethodSpec, NotificationSpec  # noqa: E402

SCHEMA_DIR = ROOT / "protocol" / "schema"
ENVELOPES = (jsonrpc.Envelope, jsonrpc.SuccessResponse, jsonrpc.ErrorResponse, jsonrpc.Notification,
             errors.ErrorObject, errors.ErrorData)


def _types(methods: tuple[MethodSpec, ...], notifications: tuple[NotificationSpec, ...]) -> list[Any]:
    found: list[Any] = []
    for spec in methods:
        found += [spec.params] + ([spec.result] if spec.result is not None else [])
    found += [n.params for n in notifications]
    unique: list[Any] = []
    for t in found:
        if t not in unique:
            unique.append(t)
    return unique


def _stream_fields_required(components: dict[str, Any]) -> dict[str, Any]:
    """Streamed events default `requestId`/`seq` in Python (the server fills them in), but
    on the wire they are always there: say so to shells."""
    for schema in components.values():
        props = schema.get("properties", {})
        if "requestId" in props and "seq" in props:
            schema["required"] = sorted(set(schema.get("required", [])) | {"requestId", "seq"})
    return components


# `\Z` not escaped itself (an even number of backslashes before it)
_PYTHON_END = re.compile(r"(?<!\\)((?:\\\\)*)\\Z")


def _ecma_patterns(node: Any) -> Any:
    """Name patterns in `protocol/` end with Python's `\\Z` (its `$` also matches before a
    trailing newline); ECMA-262, which JSON Schema tools use, has no `\\Z` and its `$`
    (without the m flag) is the true end: translate, in place."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str):
                node[key] = _PYTHON_END.sub(r"\1$", value)
            else:
                _ecma_patterns(value)
    elif isinstance(node, list):
        for item in node:
            _ecma_patterns(item)
    return node


def _dump(document: Any) -> str:
    return json.dumps(_ecma_patterns(document), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _content_descriptors(schema: dict[str, Any]) -> list[dict[str, Any]]:
    required = set(schema.get("required", []))
    return [{"name": name, "required": name in required, "schema": prop}
            for name, prop in schema.get("properties", {}).items()]


def openrpc() -> dict[str, Any]:
    methods = tuple(m for mod in NAMESPACES.values() for m in mod.METHODS)
    notifications = tuple(n for mod in NAMESPACES.values() for n in mod.NOTIFICATIONS)
    types = _types(methods, notifications) + list(ENVELOPES)
    refs, components = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    _stream_fields_required(components)
    ref_of = dict(zip(types, refs))

    def params_of(t: Any) -> list[dict[str, Any]]:
        return _content_descriptors(components[ref_of[t]["$ref"].rsplit("/", 1)[1]])

    return {
        "openrpc": "1.3.2",
        "info": {
            "title": "sidecar",
            "version": PROTOCOL_VERSION,
            "description": "JSON-RPC 2.0 over stdio (newline-delimited or Content-Length framed). "
                           "Errors carry data.kind; streamed notifications carry requestId and seq.",
        },
        "methods": [
            {
                "name": m.name,
                "summary": m.summary,
                "paramStructure": "by-name",
                "params": params_of(m.params),
                "result": {"name": "result", "schema": ref_of[m.result] if m.result is not None else {"type": "null"}},
                **({"x-streams": [n.name for n in m.streams]} if m.streams else {}),
                **({"x-lane": m.lane} if m.lane else {}),
                **({"x-long-running": True} if m.is_long_running else {}),
                **({"x-debug-only": True} if m.name.startswith("debug/") else {}),
            }
            for m in methods
        ],
        "x-notifications": [
            {"name": n.name, "summary": n.summary, "direction": n.direction, "params": ref_of[n.params]}
            for n in notifications
        ],
        "components": {"schemas": components},
    }


def namespace_schema(name: str) -> dict[str, Any]:
    module = NAMESPACES[name]
    types = _types(module.METHODS, module.NOTIFICATIONS)
    _, defs = msgspec.json.schema_components(types, ref_template="#/$defs/{name}")
    _stream_fields_required(defs)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": f"sidecar:{name}",
            "title": f"sidecar {name} messages", "$defs": defs}


def generate() -> dict[Path, str]:
    files = {SCHEMA_DIR / "openrpc.json": _dump(openrpc())}
    files[SCHEMA_DIR / "jsonrpc.schema.json"] = _dump({
        "$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "sidecar:jsonrpc",
        "title": "sidecar JSON-RPC envelopes and errors",
        "$defs": msgspec.json.schema_components(ENVELOPES, ref_template="#/$defs/{name}")[1]})
    for name in NAMESPACES:
        files[SCHEMA_DIR / f"{name}.schema.json"] = _dump(namespace_schema(name))
    return files


def differences() -> list[str]:
    """Human-readable differences between the committed schema and the generated one."""
    generated = generate()
    report: list[str] = []
    for path, text in generated.items():
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != text:
            report += difflib.unified_diff(current.splitlines(), text.splitlines(),
                                           f"committed/{path.name}", f"generated/{path.name}", lineterm="", n=1)
    stale = sorted(set(SCHEMA_DIR.glob("*.json")) - set(generated))
    report += [f"stale file, no longer generated: {p.name}" for p in stale]
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    if args.check:
        report = differences()
        if report:
            print("protocol/schema is out of date; run: python tools/gen_schema.py", file=sys.stderr)
            print("\n".join(report[:200]), file=sys.stderr)
            return 1
        print("protocol/schema is up to date")
        return 0
    SCHEMA_DIR.mkdir(parents=True, exist_ok=True)
    for path, text in generate().items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
