"""Hypothesis strategies for a method's params, read from its msgspec Struct (the same types
`protocol/schema/` is generated from), in three families:

- `wrong`: a valid-looking object with one field of the wrong JSON type, a required field
  missing, or an unknown field added;
- `hostile`: every field of the right JSON type but with hostile contents (empty and 10 KB
  strings, NUL/RTL/emoji, path traversal, 2**63 and 1e308, deep nesting, ids that do not exist);
- `valid`: values that satisfy the schema (types, lengths, patterns, ranges).

`Pool` holds the ids of things that exist in the daemon, so id fields sometimes name real
ones (deeper code paths) and `Overrides` pins the few fields whose legal values would run
long or reach outside the test (sleep seconds, stream counts, commands to spawn).
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec.inspect as mi
from hypothesis import strategies as st

#: JSON kinds of values, for picking a wrong one
KINDS = ("null", "bool", "int", "float", "str", "list", "object")

HOSTILE_STRINGS: tuple[str, ...] = (
    "", " ", "x" * 10_240, "\x00", "a\x00b", "\u202eevil\u202c", "é\u2028\u2029\U0001f600",
    "\ufeff", "../../etc/passwd", "../../../../../../../../etc/shadow", "/etc/passwd",
    "/proc/self/mem", "/proc/self/environ", "/dev/zero", "/", ".", "..", "C:\\Windows\\system32",
    "\\\\server\\share", "file:///etc/passwd", "%s%s%n", "'; DROP TABLE projects; --", "*", "**/*",
    "{{inputs.x}}", "$(id)", "\n", "\t\r\n", "null", "0", "-1", "NaN", "a" * 300,
    # full-text query syntax (FTS5) that is not plain words
    '"', 'a"b', "NEAR(a b", "a AND", "OR", "^x", "col:foo", "-x", "(((", "a*b*", "%", "_",
)

HOSTILE_INTS: tuple[int, ...] = (0, -1, 1, 2**31, 2**31 - 1, 2**53 + 1, 2**63 - 1, 2**63, -(2**63),
                                 -(2**63) - 1, 2**64, 10**30, -(10**30))
HOSTILE_FLOATS: tuple[float, ...] = (0.0, -0.0, -1.0, 0.5, 1e308, -1e308, 5e-324, 1.7976931348623157e308,
                                     2.0**63, 1e-300)


def _deep(depth: int, kind: str) -> Any:
    value: Any = "leaf"
    for i in range(depth):
        value = [value] if kind == "list" else {f"k{i % 3}": value}
    return value


#: free-form (`any`, dict values) hostile contents: nesting, size, odd numbers and keys
HOSTILE_ANY: tuple[Any, ...] = (
    _deep(64, "list"), _deep(500, "object"), _deep(900, "list"),
    {str(i): i for i in range(2_000)}, ["x" * 1_000] * 200, 2**64, -(2**64), 1e308, -0.0,
    {"\x00": "\x00", "": None, "\u202e": [1]}, {"__proto__": {"polluted": True}}, {"constructor": 1},
    "x" * 100_000, [], {}, None, True,
)

json_leaf = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) \
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
json_values = st.recursive(json_leaf,
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=3),
                           max_leaves=8)

_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=24)


@dataclass
class Pool:
    """Ids that exist in the daemon under test, by field name (and a few values to reuse)."""

    ids: dict[str, list[str]] = field(default_factory=dict)

    def add(self, name: str, value: str) -> None:
        self.ids.setdefault(name, []).append(value)

    def set(self, name: str, value: str) -> None:
        self.ids[name] = [value]

    def for_field(self, method: str, name: str) -> list[str]:
        """Ids for field `name` of `method`: registered as "<method or a prefix>:<name>"
        (`projects:id` serves projects/get and projects/files/get), else as plain `name`."""
        parts = method.split("/")
        for n in range(len(parts), 0, -1):
            found = self.ids.get(f"{'/'.join(parts[:n])}:{name}")
            if found:
                return found
        return self.ids.get(name, [])


#: (method or "*", field encode name) -> strategy factory, given the family
Overrides = dict[tuple[str, str], Callable[[str], st.SearchStrategy[Any]]]
#: (method or "*", field encode name) -> which generated values to keep (to leave out the
#: inputs of known bugs that cannot be fixed here yet)
Filters = dict[tuple[str, str], Callable[[Any], bool]]


@dataclass
class Ctx:
    method: str
    family: str  # "valid" | "hostile"
    pool: Pool
    overrides: Overrides
    filters: Filters = field(default_factory=dict)


def _kinds(t: mi.Type) -> set[str]:
    """The JSON kinds a value of type `t` may have."""
    if isinstance(t, mi.Metadata):
        return _kinds(t.type)
    if isinstance(t, mi.AnyType):
        return set(KINDS)
    if isinstance(t, mi.NoneType):
        return {"null"}
    if isinstance(t, mi.BoolType):
        return {"bool"}
    if isinstance(t, mi.IntType):
        return {"int"}
    if isinstance(t, mi.FloatType):
        return {"int", "float"}
    if isinstance(t, mi.StrType):
        return {"str"}
    if isinstance(t, mi.LiteralType):
        return {"str" if isinstance(v, str) else "int" for v in t.values}
    if isinstance(t, (mi.ListType, mi.SetType, mi.FrozenSetType, mi.TupleType, mi.VarTupleType)):
        return {"list"}
    if isinstance(t, (mi.DictType, mi.StructType, mi.TypedDictType, mi.DataclassType)):
        return {"object"}
    if isinstance(t, mi.UnionType):
        return set().union(*(_kinds(x) for x in t.types))
    return set(KINDS)


_OF_KIND: dict[str, st.SearchStrategy[Any]] = {
    "null": st.none(), "bool": st.booleans(), "int": st.sampled_from([0, -1, 2**63, 7]),
    "float": st.sampled_from([0.5, -0.0, 1e308, -2.5]), "str": st.sampled_from(["", "x", "1", "true", "null"]),
    "list": st.sampled_from([[], [1], [None], [{}], ["a", 1]]),
    "object": st.sampled_from([{}, {"a": 1}, {"": None}, {"0": []}]),
}


def wrong_value(t: mi.Type) -> st.SearchStrategy[Any] | None:
    """A value whose JSON kind `t` does not accept; None if it accepts every kind."""
    bad = [k for k in KINDS if k not in _kinds(t)]
    if not bad:
        return None
    return st.sampled_from(bad).flatmap(lambda k: _OF_KIND[k])


def _override(ctx: Ctx, name: str) -> st.SearchStrategy[Any] | None:
    make = ctx.overrides.get((ctx.method, name)) or ctx.overrides.get(("*", name))
    return make(ctx.family) if make is not None else None


def value(t: mi.Type, ctx: Ctx, name: str = "") -> st.SearchStrategy[Any]:
    """A value of type `t` (its JSON kind), valid or hostile as `ctx.family` says."""
    if name:
        keep = ctx.filters.get((ctx.method, name)) or ctx.filters.get(("*", name))
        if keep is not None:
            return value(t, Ctx(ctx.method, ctx.family, ctx.pool, ctx.overrides), name).filter(keep)
        pinned = _override(ctx, name)
        if pinned is not None:
            return pinned
    if isinstance(t, mi.Metadata):
        return value(t.type, ctx, name)
    hostile = ctx.family == "hostile"
    if isinstance(t, mi.AnyType):
        return st.sampled_from(HOSTILE_ANY) | json_values if hostile else json_values
    if isinstance(t, mi.NoneType):
        return st.none()
    if isinstance(t, mi.BoolType):
        return st.booleans()
    if isinstance(t, mi.IntType):
        return _int(t, hostile)
    if isinstance(t, mi.FloatType):
        return _float(t, hostile)
    if isinstance(t, mi.StrType):
        return _str(t, ctx, name)
    if isinstance(t, mi.LiteralType):
        literal = st.sampled_from(list(t.values))
        return literal | st.sampled_from(["", "X" * 300, "\x00", "Assistant"]) if hostile else literal
    if isinstance(t, mi.ListType):
        items = value(t.item_type, ctx, _singular(name))
        low = t.min_length or 0
        high = min(t.max_length if t.max_length is not None else 4, low + 4)
        out = st.lists(items, min_size=low, max_size=high)
        if hostile:
            many = st.lists(items, min_size=100, max_size=100) if t.max_length is None or t.max_length > 100 \
                else st.lists(items, min_size=t.max_length + 1, max_size=t.max_length + 1)
            out = out | st.just([]) | many
        return out
    if isinstance(t, mi.DictType):
        keys = st.sampled_from(HOSTILE_STRINGS) if hostile else _TEXT
        out = st.dictionaries(keys, value(t.value_type, ctx, ""), max_size=3)
        if hostile and isinstance(t.value_type, mi.AnyType):
            out = out | st.sampled_from([v for v in HOSTILE_ANY if isinstance(v, dict)])
        return out
    if isinstance(t, mi.StructType):
        return struct(t, ctx)
    if isinstance(t, mi.UnionType):
        return st.one_of(*(value(x, ctx, name) for x in t.types))
    return json_values


def _singular(name: str) -> str:
    return name[:-1] if name.endswith("s") else name


def _int(t: mi.IntType, hostile: bool) -> st.SearchStrategy[int]:
    low = t.ge if t.ge is not None else (t.gt + 1 if t.gt is not None else -(2**63))
    high = t.le if t.le is not None else (t.lt - 1 if t.lt is not None else 2**63 - 1)
    edges = [v for v in (low, high) if abs(v) < 2**63]
    valid = st.integers(low, high) | st.sampled_from(edges)
    if not hostile:
        return valid
    return st.sampled_from(HOSTILE_INTS + (low - 1, high + 1)) | valid


def _float(t: mi.FloatType, hostile: bool) -> st.SearchStrategy[float]:
    low = t.ge if t.ge is not None else t.gt
    high = t.le if t.le is not None else t.lt
    valid = st.floats(low, high, allow_nan=False, allow_infinity=False, exclude_min=t.gt is not None,
                      exclude_max=t.lt is not None)
    if not hostile:
        return valid
    return st.sampled_from(HOSTILE_FLOATS) | valid


def _str(t: mi.StrType, ctx: Ctx, name: str) -> st.SearchStrategy[str]:
    existing = ctx.pool.for_field(ctx.method, name)
    if ctx.family == "hostile":
        out = st.sampled_from(HOSTILE_STRINGS) | st.sampled_from(["no-such-id", "p_0000000000000000", "0" * 64])
    elif t.pattern is not None:
        out = st.from_regex(t.pattern, fullmatch=True).filter(
            lambda s: (t.min_length or 0) <= len(s) <= (t.max_length or 10**9))
    else:
        low = t.min_length or 0
        high = min(t.max_length if t.max_length is not None else 40, max(low, 40))
        out = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=low, max_size=high)
        out = out | st.text(string.ascii_lowercase + string.digits + "-_", min_size=max(low, 1), max_size=max(low, 12))
    return st.sampled_from(existing) | out if existing else out


def struct(t: mi.StructType, ctx: Ctx) -> st.SearchStrategy[dict[str, Any]]:
    """An object for Struct `t`: every required field, and any subset of the optional ones."""
    required = {f.encode_name: value(f.type, ctx, f.encode_name) for f in t.fields if f.required}
    optional = {f.encode_name: value(f.type, ctx, f.encode_name) for f in t.fields if not f.required}
    out = st.fixed_dictionaries(required, optional=optional)
    if t.tag_field is not None:
        out = out.map(lambda d: {t.tag_field: t.tag, **d})
    return out


def params(spec_params: type, method: str, family: str, pool: Pool, overrides: Overrides,
           filters: Filters | None = None) -> st.SearchStrategy[Any]:
    """The params object for one request of `family`."""
    t = mi.type_info(spec_params)
    assert isinstance(t, mi.StructType), spec_params
    if family in ("valid", "hostile"):
        return struct(t, Ctx(method, family, pool, overrides, filters or {}))
    assert family == "wrong"
    return _wrong(t, Ctx(method, "valid", pool, overrides, filters or {}))


@dataclass(frozen=True)
class Wrong:
    """Params with one known defect, and whether msgspec must reject it."""

    params: dict[str, Any]
    defect: str  # "type" | "missing" | "unknown"
    field: str


def _wrong(t: mi.StructType, ctx: Ctx) -> st.SearchStrategy[Wrong]:
    base = struct(t, ctx)
    choices: list[st.SearchStrategy[Wrong]] = []
    for f in t.fields:
        bad = wrong_value(f.type)
        if bad is not None:
            choices.append(st.tuples(base, bad).map(
                lambda pair, name=f.encode_name: Wrong({**pair[0], name: pair[1]}, "type", name)))
        if f.required:
            choices.append(base.map(lambda d, name=f.encode_name: Wrong(
                {k: v for k, v in d.items() if k != name}, "missing", name)))
    unknown = st.sampled_from(["zzUnknown", "__proto__", "", "ID", "\x00"])
    choices.append(st.tuples(base, unknown, json_values).map(
        lambda x: Wrong({**x[0], x[1]: x[2]} if x[1] not in x[0] else x[0], "unknown", x[1])))
    return st.one_of(*choices)
