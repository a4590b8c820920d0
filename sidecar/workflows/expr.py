"""The safe expression and template language of workflows. Nothing is ever `eval`ed.

Expressions (a step's `if`, a condition's `expr`, and what `{{ ... }}` holds in templates):

    literals     1  2.5  'text'  "text"  true  false  null  [1, 2]
    paths        inputs.x  steps.fetch.output.body  steps.a.output.items[0]  loop.item  run.id
    operators    ==  !=  <  <=  >  >=  in  not in  and  or  not  + - * / %  (&& || ! also accepted)
    functions    len(x)  lower(s)  upper(s)  trim(s)  str(x)  int(x)  float(x)  json(x)
                 default(x, fallback)  contains(s, part)  startsWith(s, p)  endsWith(s, p)  keys(o)
                 any(list)  all(list)  sum(list)  pluck(list, key)

A tokenizer and a recursive-descent parser build a small tree; evaluating it looks names up
in the data given (dicts and lists only: a path never reaches a Python attribute), and a
missing key yields null. `*` takes numbers only (no huge strings from a small template).

Templates: a string with `{{ expr }}` parts. A string that is exactly one `{{ expr }}` takes
the expression's value with its type (a list stays a list); otherwise the parts are joined
as text (null as "", objects and lists as JSON).
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

MAX_EXPR_CHARS = 4096
MAX_DEPTH = 64


class ExprError(ValueError):
    """An expression or template that does not parse, or fails to evaluate."""


# --- tokens ------------------------------------------------------------------------------------

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<num>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>==|!=|<=|>=|&&|\|\||[<>()\[\].,!+\-*/%])
""", re.VERBOSE)
_KEYWORDS = {"and", "or", "not", "in", "true", "false", "null"}
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "0": "\0"}


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # num | str | name | kw | op | end
    value: Any
    pos: int


def _unescape(body: str, pos: int) -> str:
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            i += 1
            nxt = body[i]
            if nxt not in _ESCAPES:
                raise ExprError(f"unknown escape \\{nxt} at {pos + i}")
            out.append(_ESCAPES[nxt])
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def tokenize(text: str) -> list[Token]:
    if len(text) > MAX_EXPR_CHARS:
        raise ExprError(f"an expression is at most {MAX_EXPR_CHARS} characters")
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ExprError(f"unexpected character {text[pos]!r} at {pos}")
        kind = m.lastgroup
        raw = m.group()
        if kind == "num":
            tokens.append(Token("num", float(raw) if any(c in raw for c in ".eE") else int(raw), pos))
        elif kind == "str":
            tokens.append(Token("str", _unescape(raw[1:-1], pos + 1), pos))
        elif kind == "name":
            tokens.append(Token("kw" if raw in _KEYWORDS else "name", raw, pos))
        elif kind == "op":
            tokens.append(Token("op", {"&&": "and", "||": "or", "!": "not"}.get(raw, raw), pos))
        pos = m.end()
    tokens.append(Token("end", None, pos))
    return tokens


# --- the tree ---------------------------------------------------------------------------------

class Node:
    __slots__ = ()

    def eval(self, data: Mapping[str, Any]) -> Any:
        raise NotImplementedError

    def children(self) -> tuple[Node, ...]:
        return ()


@dataclass(frozen=True, slots=True)
class Literal(Node):
    value: Any

    def eval(self, data: Mapping[str, Any]) -> Any:
        return self.value


@dataclass(frozen=True, slots=True)
class ListNode(Node):
    items: tuple[Node, ...]

    def eval(self, data: Mapping[str, Any]) -> Any:
        return [item.eval(data) for item in self.items]

    def children(self) -> tuple[Node, ...]:
        return self.items


@dataclass(frozen=True, slots=True)
class Name(Node):
    name: str

    def eval(self, data: Mapping[str, Any]) -> Any:
        if self.name not in data:
            raise ExprError(f"unknown name {self.name}")
        return data[self.name]


def _get(container: Any, key: Any) -> Any:
    if isinstance(container, Mapping):
        return container.get(key) if isinstance(key, str) else None
    if isinstance(container, (list, tuple)) and isinstance(key, int) and not isinstance(key, bool):
        return container[key] if -len(container) <= key < len(container) else None
    if isinstance(container, str) and isinstance(key, int) and not isinstance(key, bool):
        return container[key] if -len(container) <= key < len(container) else None
    return None


@dataclass(frozen=True, slots=True)
class Member(Node):
    """`target.name` or `target[index]`: a lookup in JSON data only."""

    target: Node
    key: Node

    def eval(self, data: Mapping[str, Any]) -> Any:
        return _get(self.target.eval(data), self.key.eval(data))

    def children(self) -> tuple[Node, ...]:
        return (self.target, self.key)


def _compare(op: str, a: Any, b: Any) -> bool:
    if op == "==":
        return _equal(a, b)
    if op == "!=":
        return not _equal(a, b)
    if op in ("in", "not in"):
        if isinstance(b, str):
            if not isinstance(a, str):
                raise ExprError(f"'in' a string takes a string, not {_type(a)}")
            found = a in b
        elif isinstance(b, Mapping):
            found = a in b if isinstance(a, str) else False
        elif isinstance(b, (list, tuple)):
            found = any(_equal(a, item) for item in b)
        elif b is None:
            found = False
        else:
            raise ExprError(f"'in' takes a list, an object or a string, not {_type(b)}")
        return found if op == "in" else not found
    both_numbers = _is_number(a) and _is_number(b)
    if not both_numbers and not (isinstance(a, str) and isinstance(b, str)):
        raise ExprError(f"cannot compare {_type(a)} {op} {_type(b)}")
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    return bool(a >= b)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b if isinstance(a, bool) and isinstance(b, bool) else False
    return bool(a == b)


def _type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if _is_number(v):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, (list, tuple)):
        return "list"
    if isinstance(v, Mapping):
        return "object"
    return type(v).__name__


def truthy(v: Any) -> bool:
    if v is None or v is False:
        return False
    if _is_number(v):
        return v != 0
    if isinstance(v, (str, list, tuple, Mapping)):
        return len(v) > 0
    return True


@dataclass(frozen=True, slots=True)
class Compare(Node):
    op: str
    left: Node
    right: Node

    def eval(self, data: Mapping[str, Any]) -> Any:
        return _compare(self.op, self.left.eval(data), self.right.eval(data))

    def children(self) -> tuple[Node, ...]:
        return (self.left, self.right)


@dataclass(frozen=True, slots=True)
class Logic(Node):
    op: str  # and | or
    left: Node
    right: Node

    def eval(self, data: Mapping[str, Any]) -> Any:
        left = truthy(self.left.eval(data))
        if self.op == "and":
            return left and truthy(self.right.eval(data))
        return left or truthy(self.right.eval(data))

    def children(self) -> tuple[Node, ...]:
        return (self.left, self.right)


@dataclass(frozen=True, slots=True)
class Not(Node):
    operand: Node

    def eval(self, data: Mapping[str, Any]) -> Any:
        return not truthy(self.operand.eval(data))

    def children(self) -> tuple[Node, ...]:
        return (self.operand,)


@dataclass(frozen=True, slots=True)
class Neg(Node):
    operand: Node

    def eval(self, data: Mapping[str, Any]) -> Any:
        v = self.operand.eval(data)
        if not _is_number(v):
            raise ExprError(f"cannot negate {_type(v)}")
        return -v

    def children(self) -> tuple[Node, ...]:
        return (self.operand,)


@dataclass(frozen=True, slots=True)
class Arith(Node):
    op: str
    left: Node
    right: Node

    def eval(self, data: Mapping[str, Any]) -> Any:
        a, b = self.left.eval(data), self.right.eval(data)
        if self.op == "+":
            if _is_number(a) and _is_number(b):
                return a + b
            if isinstance(a, str) and isinstance(b, str):
                return a + b
            if isinstance(a, list) and isinstance(b, list):
                return a + b
            raise ExprError(f"cannot add {_type(a)} and {_type(b)}")
        if not (_is_number(a) and _is_number(b)):
            raise ExprError(f"{self.op} takes numbers, not {_type(a)} and {_type(b)}")
        if self.op == "-":
            return a - b
        if self.op == "*":
            return a * b
        if b == 0:
            raise ExprError("division by zero")
        return a / b if self.op == "/" else a % b

    def children(self) -> tuple[Node, ...]:
        return (self.left, self.right)


def _len(v: Any) -> int:
    if isinstance(v, (str, list, tuple, Mapping)):
        return len(v)
    if v is None:
        return 0
    raise ExprError(f"len() takes a string, a list or an object, not {_type(v)}")


def _str(v: Any) -> str:
    return to_text(v)


def _int(v: Any) -> int:
    try:
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError
        return int(float(v)) if isinstance(v, str) and "." in v else int(v)
    except (TypeError, ValueError):
        raise ExprError(f"int() cannot convert {_type(v)} {to_text(v)[:40]!r}") from None


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        raise ExprError(f"float() cannot convert {_type(v)}") from None


def _need_str(name: str, v: Any) -> str:
    if not isinstance(v, str):
        raise ExprError(f"{name}() takes a string, not {_type(v)}")
    return v


FUNCTIONS: dict[str, tuple[int, Callable[..., Any]]] = {
    "len": (1, _len),
    "lower": (1, lambda s: _need_str("lower", s).lower()),
    "upper": (1, lambda s: _need_str("upper", s).upper()),
    "trim": (1, lambda s: _need_str("trim", s).strip()),
    "str": (1, _str),
    "int": (1, _int),
    "float": (1, _float),
    "json": (1, lambda v: json.dumps(v, ensure_ascii=False)),
    "default": (2, lambda v, d: d if v is None else v),
    "contains": (2, lambda s, p: _compare("in", p, s)),
    "startsWith": (2, lambda s, p: _need_str("startsWith", s).startswith(_need_str("startsWith", p))),
    "endsWith": (2, lambda s, p: _need_str("endsWith", s).endswith(_need_str("endsWith", p))),
    "keys": (1, lambda o: list(o.keys()) if isinstance(o, Mapping) else []),
    "any": (1, lambda v: any(truthy(x) for x in _need_list("any", v))),
    "all": (1, lambda v: all(truthy(x) for x in _need_list("all", v))),
    "sum": (1, lambda v: _sum(_need_list("sum", v))),
    "pluck": (2, lambda v, k: [_get(x, k) for x in _need_list("pluck", v)]),
}


def _need_list(name: str, v: Any) -> list[Any]:
    if v is None:
        return []
    if not isinstance(v, (list, tuple)):
        raise ExprError(f"{name}() takes a list, not {_type(v)}")
    return list(v)


def _sum(items: list[Any]) -> Any:
    if not all(_is_number(x) for x in items):
        raise ExprError("sum() takes a list of numbers")
    return sum(items)


@dataclass(frozen=True, slots=True)
class Call(Node):
    name: str
    args: tuple[Node, ...]

    def eval(self, data: Mapping[str, Any]) -> Any:
        return FUNCTIONS[self.name][1](*(arg.eval(data) for arg in self.args))

    def children(self) -> tuple[Node, ...]:
        return self.args


# --- the parser -------------------------------------------------------------------------------

class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def at(self, kind: str, value: Any = None) -> bool:
        tok = self.tokens[self.i]
        return tok.kind == kind and (value is None or tok.value == value)

    def expect(self, kind: str, value: Any) -> Token:
        if not self.at(kind, value):
            raise self.error(f"expected {value!r}")
        return self.take()

    def error(self, message: str) -> ExprError:
        tok = self.peek()
        found = "the end" if tok.kind == "end" else repr(self.text[tok.pos:tok.pos + 12])
        return ExprError(f"{message} at {tok.pos} (found {found})")

    def parse(self) -> Node:
        if self.at("end"):
            raise ExprError("empty expression")
        node = self.or_()
        if not self.at("end"):
            raise self.error("unexpected text")
        return node

    def _enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExprError(f"expression nested deeper than {MAX_DEPTH}")

    def or_(self) -> Node:
        node = self.and_()
        while self.at("kw", "or") or self.at("op", "or"):
            self.take()
            node = Logic("or", node, self.and_())
        return node

    def and_(self) -> Node:
        node = self.not_()
        while self.at("kw", "and") or self.at("op", "and"):
            self.take()
            node = Logic("and", node, self.not_())
        return node

    def not_(self) -> Node:
        if self.at("kw", "not") or self.at("op", "not"):
            self.take()
            self._enter()
            node = Not(self.not_())
            self.depth -= 1
            return node
        return self.compare()

    def compare(self) -> Node:
        node = self.additive()
        tok = self.peek()
        if tok.kind == "op" and tok.value in ("==", "!=", "<", "<=", ">", ">="):
            self.take()
            node = Compare(tok.value, node, self.additive())
        elif tok.kind == "kw" and tok.value == "in":
            self.take()
            node = Compare("in", node, self.additive())
        elif tok.kind == "kw" and tok.value == "not" and self.tokens[self.i + 1].kind == "kw" \
                and self.tokens[self.i + 1].value == "in":
            self.i += 2
            node = Compare("not in", node, self.additive())
        else:
            return node
        nxt = self.peek()
        if (nxt.kind == "op" and nxt.value in ("==", "!=", "<", "<=", ">", ">=")) or nxt.kind == "kw" and nxt.value == "in":
            raise self.error("comparisons do not chain; use and")
        return node

    def additive(self) -> Node:
        node = self.multiplicative()
        while self.peek().kind == "op" and self.peek().value in ("+", "-"):
            op = self.take().value
            node = Arith(op, node, self.multiplicative())
        return node

    def multiplicative(self) -> Node:
        node = self.unary()
        while self.peek().kind == "op" and self.peek().value in ("*", "/", "%"):
            op = self.take().value
            node = Arith(op, node, self.unary())
        return node

    def unary(self) -> Node:
        if self.at("op", "-"):
            self.take()
            self._enter()
            node = Neg(self.unary())
            self.depth -= 1
            return node
        return self.postfix()

    def postfix(self) -> Node:
        node = self.primary()
        while True:
            if self.at("op", "."):
                self.take()
                tok = self.take()
                if tok.kind not in ("name", "kw"):
                    self.i -= 1
                    raise self.error("expected a name after '.'")
                node = Member(node, Literal(tok.value))
            elif self.at("op", "["):
                self.take()
                self._enter()
                key = self.or_()
                self.depth -= 1
                self.expect("op", "]")
                node = Member(node, key)
            else:
                return node

    def primary(self) -> Node:
        tok = self.take()
        if tok.kind in ("num", "str"):
            return Literal(tok.value)
        if tok.kind == "kw" and tok.value in ("true", "false", "null"):
            return Literal({"true": True, "false": False, "null": None}[tok.value])
        if tok.kind == "name":
            if self.at("op", "("):
                if tok.value not in FUNCTIONS:
                    self.i -= 1
                    raise self.error(f"unknown function {tok.value}; known: {', '.join(sorted(FUNCTIONS))}")
                self.take()
                args: list[Node] = []
                self._enter()
                if not self.at("op", ")"):
                    args.append(self.or_())
                    while self.at("op", ","):
                        self.take()
                        args.append(self.or_())
                self.depth -= 1
                self.expect("op", ")")
                arity = FUNCTIONS[tok.value][0]
                if len(args) != arity:
                    raise ExprError(f"{tok.value}() takes {arity} argument(s), not {len(args)}")
                return Call(tok.value, tuple(args))
            return Name(tok.value)
        if tok.kind == "op" and tok.value == "(":
            self._enter()
            node = self.or_()
            self.depth -= 1
            self.expect("op", ")")
            return node
        if tok.kind == "op" and tok.value == "[":
            items: list[Node] = []
            self._enter()
            if not self.at("op", "]"):
                items.append(self.or_())
                while self.at("op", ","):
                    self.take()
                    items.append(self.or_())
            self.depth -= 1
            self.expect("op", "]")
            return ListNode(tuple(items))
        self.i -= 1
        raise self.error("expected a value")


@functools.lru_cache(maxsize=4096)
def parse(text: str) -> Node:
    """The expression's tree; ExprError (with the position) when it does not parse."""
    return _Parser(text).parse()


def evaluate(text: str, data: Mapping[str, Any]) -> Any:
    return parse(text).eval(data)


def references(node: Node) -> Iterator[tuple[str, ...]]:
    """Every path the expression reads, as its leading constant parts:
    `steps.a.output.items[i]` -> ("steps", "a", "output", "items")."""
    if isinstance(node, (Member, Name)):
        parts: list[str] = []
        cur: Node = node
        trailing_dynamic: list[Node] = []
        while isinstance(cur, Member):
            if isinstance(cur.key, Literal) and isinstance(cur.key.value, str):
                parts.append(cur.key.value)
            else:
                parts.clear()  # a dynamic key: only what precedes it is known
                trailing_dynamic.append(cur.key)
            cur = cur.target
        if isinstance(cur, Name):
            yield (cur.name, *reversed(parts))
        else:
            yield from references(cur)
        for key in trailing_dynamic:
            yield from references(key)
        return
    for child in node.children():
        yield from references(child)


# --- templates --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Template:
    parts: tuple[str | Node, ...]

    @property
    def single(self) -> Node | None:
        """The node when the template is exactly one `{{ expr }}`."""
        return self.parts[0] if len(self.parts) == 1 and isinstance(self.parts[0], Node) else None

    def render(self, data: Mapping[str, Any]) -> Any:
        single = self.single
        if single is not None:
            return single.eval(data)
        return "".join(part if isinstance(part, str) else to_text(part.eval(data)) for part in self.parts)


def to_text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e16:
        return str(int(v))
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"))


@functools.lru_cache(maxsize=8192)
def parse_template(text: str) -> Template:
    parts: list[str | Node] = []
    pos = 0
    while True:
        start = text.find("{{", pos)
        if start < 0:
            if pos < len(text):
                parts.append(text[pos:])
            break
        if start > pos:
            parts.append(text[pos:start])
        end = _template_end(text, start + 2)
        if end < 0:
            raise ExprError(f"'{{{{' at {start} is never closed with '}}}}'")
        inner = text[start + 2:end]
        try:
            parts.append(parse(inner.strip()))
        except ExprError as exc:
            raise ExprError(f"in {{{{{inner.strip()[:60]}}}}}: {exc}") from None
        pos = end + 2
    return Template(tuple(parts))


def _template_end(text: str, pos: int) -> int:
    """The index of the `}}` that closes a `{{` (skipping quoted strings)."""
    quote: str | None = None
    while pos < len(text):
        ch = text[pos]
        if quote:
            if ch == "\\":
                pos += 1
            elif ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif text.startswith("}}", pos):
            return pos
        pos += 1
    return -1


def has_template(value: Any) -> bool:
    if isinstance(value, str):
        return "{{" in value
    if isinstance(value, Mapping):
        return any(has_template(v) for v in value.values())
    if isinstance(value, list):
        return any(has_template(v) for v in value)
    return False


def render(value: Any, data: Mapping[str, Any]) -> Any:
    """`value` (any JSON) with every template string filled in from `data`."""
    if isinstance(value, str):
        return parse_template(value).render(data) if "{{" in value else value
    if isinstance(value, dict):
        return {k: render(v, data) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, data) for v in value]
    return value


def template_nodes(value: Any, path: str) -> Iterator[tuple[str, str, Template | ExprError]]:
    """(JSON path, text, parsed template or its parse error) for every template string in `value`."""
    if isinstance(value, str):
        if "{{" in value:
            try:
                yield path, value, parse_template(value)
            except ExprError as exc:
                yield path, value, exc
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from template_nodes(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from template_nodes(v, f"{path}[{i}]")
