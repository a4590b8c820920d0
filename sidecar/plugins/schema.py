"""Tool input validation, compiled once per tool when a plugin is loaded.

jsonschema's Draft 2020-12 validator is the judge, but walking it costs 9-18 µs for a
one-property schema, a tenth of a whole plugin call. So each tool also gets a *fast check*
compiled from its schema when the schema uses only common keywords: a plain function that
answers True only when jsonschema would accept the instance too. True: the input is valid.
False (or a schema it cannot compile): jsonschema decides and names the error. The fast
check may be stricter than jsonschema (it refuses 1.0 as an integer, values of types JSON
never decodes to); it is never looser (tests/test_plugins_schema.py checks that).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Check = Callable[[Any], bool]

#: keywords with no effect on validity
_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$comment", "deprecated", "readOnly",
                          "writeOnly"})
_ASSERTIONS = frozenset({"type", "properties", "required", "additionalProperties", "items", "enum", "const",
                         "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength",
                         "minItems", "maxItems"})
#: the Python types JSON decodes to; anything else goes to jsonschema
_JSON_TYPES = (dict, list, str, int, float, bool, type(None))
_TYPE_NAMES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "integer": (int,), "number": (int, float),
    "boolean": (bool,), "null": (type(None),)}
_PRIMITIVES = (str, int, bool, type(None))


class ToolValidator:
    """One tool's input check: the fast check when it says yes, else jsonschema."""

    __slots__ = ("fast", "full")

    def __init__(self, schema: Any) -> None:
        import jsonschema  # lazily: the daemon's start-up does not import it

        self.full = jsonschema.Draft202012Validator(schema)
        self.fast = compile_fast(schema)

    def first_error(self, instance: Any) -> Any:
        """None when `instance` is valid, else jsonschema's first error (by path)."""
        if self.fast is not None and self.fast(instance):
            return None
        return next(iter(sorted(self.full.iter_errors(instance), key=lambda e: list(e.path))), None)


def compile_fast(schema: Any) -> Check | None:
    """A check never looser than jsonschema for `schema`, or None when the schema uses a
    keyword this compiler does not know (jsonschema alone decides then)."""
    if schema is True:
        return _accept
    if not isinstance(schema, dict) or not schema.keys() <= _ANNOTATIONS | _ASSERTIONS:
        return None
    allowed: set[type] = set(_JSON_TYPES)
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not all(isinstance(n, str) and n in _TYPE_NAMES for n in names):
            return None
        allowed = {t for n in names for t in _TYPE_NAMES[n]}
    # the checks that apply to each Python type (a keyword applies to its JSON type only)
    table: dict[type, list[Check]] = {t: [] for t in allowed}
    for keyword in ("enum", "const"):
        if keyword in schema:
            values = schema["enum"] if keyword == "enum" else [schema["const"]]
            if not isinstance(values, list) or not all(type(v) in _PRIMITIVES for v in values):
                return None
            for checks in table.values():
                checks.append(_one_of(values))
    obj = _object_check(schema)
    if obj is False:
        return None
    if obj is not None and dict in table:
        table[dict].append(obj)
    if list in table:
        arr = _array_check(schema)
        if arr is False:
            return None
        if arr is not None:
            table[list].append(arr)
    elif "items" in schema and compile_fast(schema["items"]) is None:
        return None
    if str in table:
        table[str] += _bounds(len, schema, "minLength", "maxLength")
    for number in (int, float):
        if number in table:
            table[number] += _numeric(schema)
    bounds = {t: tuple(checks) for t, checks in table.items()}

    def check(value: Any) -> bool:
        checks = bounds.get(type(value))
        if checks is None:
            return False
        for c in checks:
            if not c(value):
                return False
        return True

    return check


def _accept(value: Any) -> bool:
    return True


def _one_of(values: list[Any]) -> Check:
    # type equality too: JSON Schema tells true from 1 (and Python does not)
    pairs = tuple((type(v), v) for v in values)
    return lambda value: any(type(value) is t and value == v for t, v in pairs)


def _object_check(schema: dict[str, Any]) -> Check | None | bool:
    """The object keywords as one check; None when there are none, False when not compilable."""
    if not ({"properties", "required", "additionalProperties"} & schema.keys()):
        return None
    props: dict[str, Check] = {}
    for name, sub in (schema.get("properties") or {}).items():
        compiled = compile_fast(sub)
        if compiled is None:
            return False
        props[name] = compiled
    required = tuple(schema.get("required") or ())
    extra_schema = schema.get("additionalProperties", True)
    extra: Check | None = None
    if extra_schema is not True:
        if extra_schema is False:
            extra = _refuse
        else:
            extra = compile_fast(extra_schema)
            if extra is None:
                return False

    def check(value: dict[Any, Any]) -> bool:
        for name in required:
            if name not in value:
                return False
        for name, item in value.items():
            sub = props.get(name)
            if sub is None:
                if extra is not None and not extra(item):
                    return False
            elif not sub(item):
                return False
        return True

    return check


def _refuse(value: Any) -> bool:
    return False


def _array_check(schema: dict[str, Any]) -> Check | None | bool:
    checks: list[Check] = list(_bounds(len, schema, "minItems", "maxItems"))
    if "items" in schema:
        item = compile_fast(schema["items"])
        if item is None:
            return False
        checks.append(lambda value: all(item(x) for x in value))
    if not checks:
        return None
    return lambda value: all(c(value) for c in checks)


def _bounds(measure: Callable[[Any], int], schema: dict[str, Any], low: str, high: str) -> list[Check]:
    out: list[Check] = []
    if low in schema:
        lo = schema[low]
        out.append(lambda value: measure(value) >= lo)
    if high in schema:
        hi = schema[high]
        out.append(lambda value: measure(value) <= hi)
    return out


def _numeric(schema: dict[str, Any]) -> list[Check]:
    out: list[Check] = []
    if "minimum" in schema:
        mn = schema["minimum"]
        out.append(lambda value: value >= mn)
    if "maximum" in schema:
        mx = schema["maximum"]
        out.append(lambda value: value <= mx)
    if "exclusiveMinimum" in schema:
        emn = schema["exclusiveMinimum"]
        out.append(lambda value: value > emn)
    if "exclusiveMaximum" in schema:
        emx = schema["exclusiveMaximum"]
        out.append(lambda value: value < emx)
    return out
