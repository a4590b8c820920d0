"""Comparing a message that arrived with the one a transcript expects.

Values are compared exactly (numbers by value, so 1 == 1.0; true is not 1), except at the
JSON paths a line's `match` names: there a matcher checks the value that arrived instead.

Paths: `$` is the message; `.name` or `["name"]` a member; `[3]` an element; `[*]` any
element and `.*` any member. `$.result.methods[*].latencySumMs` matches that field in every
element of `methods`. A matcher on an object or array covers everything inside it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

import msgspec

#: a path step: a member name, an element index, or WILDCARD
Step = str | int
WILDCARD = object()

_STEP = re.compile(r"""\.(?P<name>[A-Za-z_$][\w$-]*|\*)|\[(?P<index>\d+|\*)\]|\[(?P<quoted>"(?:[^"\\]|\\.)*")\]""")
_IDENT = re.compile(r"[A-Za-z_$][\w$-]*")


class Missing:
    """What a matcher sees where the arriving message has no value."""

    def __repr__(self) -> str:
        return "<missing>"


MISSING = Missing()


def parse_path(path: str) -> tuple[object, ...]:
    if not path.startswith("$"):
        raise ValueError(f"path {path!r} must start with $")
    steps: list[object] = []
    pos = 1
    while pos < len(path):
        m = _STEP.match(path, pos)
        if m is None:
            raise ValueError(f"path {path!r}: cannot read {path[pos:]!r}")
        if m["name"] is not None:
            steps.append(WILDCARD if m["name"] == "*" else m["name"])
        elif m["index"] is not None:
            steps.append(WILDCARD if m["index"] == "*" else int(m["index"]))
        else:
            steps.append(msgspec.json.decode(m["quoted"]))
        pos = m.end()
    return tuple(steps)


def format_path(steps: tuple[Step, ...] | list[Step]) -> str:
    out = ["$"]
    for step in steps:
        if isinstance(step, int):
            out.append(f"[{step}]")
        elif _IDENT.fullmatch(step):
            out.append(f".{step}")
        else:
            out.append(f"[{msgspec.json.encode(step).decode()}]")
    return "".join(out)


def generalize(steps: tuple[Step, ...] | list[Step]) -> str:
    """The path with every element index as [*]: one matcher for every element."""
    return "$" + "".join("[*]" if isinstance(s, int) else format_path([s])[1:] for s in steps)


# ---- matchers -------------------------------------------------------------------

#: (expected value, value that arrived) -> None when it matches, else why not
Matcher = Callable[[Any, Any], str | None]


def _kind(check: Callable[[Any], bool], what: str) -> Matcher:
    def match(expected: Any, got: Any) -> str | None:
        return None if got is not MISSING and check(got) else f"expected {what}"
    return match


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def is_timestamp(v: Any) -> bool:
    if not isinstance(v, str) or len(v) < 10:
        return False
    try:
        datetime.fromisoformat(v)
    except ValueError:
        return False
    return True


def is_path(v: Any) -> bool:
    return isinstance(v, str) and (PurePosixPath(v).is_absolute() or PureWindowsPath(v).is_absolute())


def _superset(expected: Any, got: Any) -> str | None:
    """Every expected element (or, for an object, every expected key with its value) is
    there; more may have been added since the recording."""
    if isinstance(expected, dict) and isinstance(got, dict):
        absent = {k: v for k, v in expected.items() if k not in got or got[k] != v}
        return f"missing or changed member(s) {short(absent)}" if absent else None
    if not isinstance(got, list) or not isinstance(expected, list):
        return "expected an array"
    absent = [e for e in expected if e not in got]
    return f"missing element(s) {short(absent)}" if absent else None


MATCHERS: dict[str, Matcher] = {
    "any": lambda expected, got: None,
    "number": _kind(_is_number, "a number"),
    "int": _kind(lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "string": _kind(lambda v: isinstance(v, str), "a string"),
    "bool": _kind(lambda v: isinstance(v, bool), "true or false"),
    "timestamp": _kind(is_timestamp, "an ISO 8601 timestamp"),
    "path": _kind(is_path, "an absolute file system path"),
    "superset": _superset,
}


def matcher(spec: str) -> Matcher:
    if spec.startswith("regex:"):
        try:
            pattern = re.compile(spec[len("regex:"):])
        except re.error as exc:
            raise ValueError(f"bad regex in matcher {spec!r}: {exc}") from None

        def match(expected: Any, got: Any) -> str | None:
            if isinstance(got, str) and pattern.search(got):
                return None
            return f"expected a string matching /{pattern.pattern}/"
        return match
    try:
        return MATCHERS[spec]
    except KeyError:
        raise ValueError(f"unknown matcher {spec!r} (known: {', '.join(MATCHERS)}, regex:<pattern>)") from None


@dataclass(frozen=True)
class CompiledMatchers:
    rules: tuple[tuple[tuple[object, ...], Matcher], ...]

    def find(self, steps: list[Step]) -> Matcher | None:
        for pattern, fn in self.rules:
            if len(pattern) == len(steps) and all(p is WILDCARD or p == s for p, s in zip(pattern, steps)):
                return fn
        return None


def compile_matchers(specs: dict[str, str]) -> CompiledMatchers:
    return CompiledMatchers(tuple((parse_path(path), matcher(spec)) for path, spec in specs.items()))


# ---- comparison ------------------------------------------------------------------

@dataclass(frozen=True)
class Mismatch:
    path: str
    expected: Any
    got: Any
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}: expected {short(self.expected)}, got {short(self.got)}"


def compare(expected: Any, got: Any, matchers: CompiledMatchers | dict[str, str] | None = None) -> list[Mismatch]:
    """Every difference between what was expected and what arrived (empty: they match)."""
    if not isinstance(matchers, CompiledMatchers):
        matchers = compile_matchers(matchers or {})
    out: list[Mismatch] = []
    _compare(expected, got, [], matchers, out)
    return out


def compare_batch(expected: list[Any], got: list[Any],
                  matchers: CompiledMatchers | dict[str, str] | None = None) -> list[Mismatch]:
    """A batch response: JSON-RPC lets its elements come in any order, so each expected
    element is paired with an equal one wherever it is (paths name the expected index)."""
    if not isinstance(matchers, CompiledMatchers):
        matchers = compile_matchers(matchers or {})
    out: list[Mismatch] = []
    if len(expected) != len(got):
        out.append(Mismatch("$", f"{len(expected)} elements", f"{len(got)} elements", "batch size differs"))
    unpaired = list(range(len(got)))
    leftovers: list[int] = []
    for i, element in enumerate(expected):
        for j in unpaired:
            trial: list[Mismatch] = []
            _compare(element, got[j], [i], matchers, trial)
            if not trial:
                unpaired.remove(j)
                break
        else:
            leftovers.append(i)
    for i in leftovers:
        # no equal element: compare with the one answering the same id, else the next one left
        same_id = [j for j in unpaired if _element_id(got[j]) == _element_id(expected[i])]
        if not (same_id or unpaired):
            out.append(Mismatch(format_path([i]), expected[i], MISSING, "missing from the batch"))
            continue
        j = (same_id or unpaired)[0]
        unpaired.remove(j)
        _compare(expected[i], got[j], [i], matchers, out)
    for j in unpaired:
        out.append(Mismatch(format_path([j]), MISSING, got[j], "not expected in the batch"))
    return out


def _element_id(element: Any) -> Any:
    return (type(element.get("id")).__name__, element.get("id")) if isinstance(element, dict) else None


def _compare(expected: Any, got: Any, steps: list[Step], matchers: CompiledMatchers, out: list[Mismatch]) -> None:
    fn = matchers.find(steps) if matchers.rules else None
    if fn is not None:
        reason = fn(expected, got)
        if reason is not None:
            out.append(Mismatch(format_path(steps), expected, got, reason))
        return
    if isinstance(expected, dict) and isinstance(got, dict):
        for key, value in expected.items():
            steps.append(key)
            if key in got:
                _compare(value, got[key], steps, matchers, out)
            elif (fn := matchers.find(steps)) is None or fn(value, MISSING) is not None:
                out.append(Mismatch(format_path(steps), value, MISSING, "missing"))
            steps.pop()
        for key in got.keys() - expected.keys():
            steps.append(key)
            if (fn := matchers.find(steps)) is None or fn(MISSING, got[key]) is not None:
                out.append(Mismatch(format_path(steps), MISSING, got[key], "not expected"))
            steps.pop()
        return
    if isinstance(expected, list) and isinstance(got, list):
        if len(expected) != len(got):
            out.append(Mismatch(format_path(steps), f"{len(expected)} elements", f"{len(got)} elements",
                                "array length differs"))
        for i, (e, g) in enumerate(zip(expected, got)):
            steps.append(i)
            _compare(e, g, steps, matchers, out)
            steps.pop()
        return
    if not _same_scalar(expected, got):
        out.append(Mismatch(format_path(steps), expected, got, "differs"))


def _same_scalar(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return a is b
    if _is_number(a) and _is_number(b):
        return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))
    return type(a) is type(b) and a == b


def short(value: Any, limit: int = 160) -> str:
    if value is MISSING:
        return "<missing>"
    try:
        text = msgspec.json.encode(value).decode()
    except (TypeError, msgspec.EncodeError):
        text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."

