"""Workflow documents: parsing (JSON or YAML), validation, and the dependency graph.

Validation reports every problem at once, each naming the step and field with a JSON path
into the document: unknown kinds, missing or unknown inputs, literal inputs of the wrong
type, templates and expressions that do not parse, references to unknown steps, outputs or
inputs, dependency cycles (naming the cycle), misplaced `then`/`else`/`body`, fallbacks.

A step depends on the steps in its `needs`, on every step its templates and `if` read
(`steps.<id>...`), on the condition whose `then`/`else` lists it, and (for a loop) on the
outer steps its body reads.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from protocol import workflows as w
from sidecar.errors import InvalidValue, ResourceExhausted
from sidecar.workflows import expr
from sidecar.workflows.steps import KINDS, output_fields

ROOTS = ("inputs", "steps", "run", "step", "loop")
STEP_FIELDS = ("output", "status", "error", "attempts")
MAX_STEPS = 10_000
#: the most values a YAML document may hold once its aliases are followed: a few KB of
#: nested aliases ("billion laughs") expand to 10**9 values and would exhaust memory when
#: the workflow is converted, stored or run
MAX_YAML_VALUES = 1_000_000


def parse_text(text: str) -> Any:
    """JSON, else YAML (PyYAML, imported on first use, safe loader only)."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            return json.loads(text)
        except ValueError as exc:
            raise InvalidValue(f"the workflow is not valid JSON: {exc}", "$.params.workflow") from None
        except RecursionError:  # json's C scanner has a nesting limit too
            raise InvalidValue("the workflow is nested too deeply", "$.params.workflow") from None
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML is a dependency
        raise InvalidValue("YAML documents need PyYAML, which is not installed", "$.params.workflow") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise InvalidValue(f"the workflow is not valid YAML{where}", "$.params.workflow") from None
    except RecursionError:  # PyYAML's composer recurses once per nesting level
        raise InvalidValue("the workflow is nested too deeply", "$.params.workflow") from None
    _check_expanded_size(data)
    return data


def _check_expanded_size(data: Any) -> None:
    """ResourceExhausted if `data`, with every alias followed, holds more than MAX_YAML_VALUES
    values. Iterative, and stops at the limit: the walk costs at most MAX_YAML_VALUES steps."""
    stack = [data]
    seen = 0
    while stack:
        value = stack.pop()
        seen += 1
        if seen > MAX_YAML_VALUES:
            raise ResourceExhausted(f"the workflow holds more than {MAX_YAML_VALUES} values once its YAML aliases "
                                    "are expanded", limit=MAX_YAML_VALUES, path="$.params.workflow")
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)


def load(raw: Mapping[str, Any] | str, path: str = "$.params.workflow") -> w.Workflow:
    """A document (object, or JSON/YAML text) as a Workflow; InvalidValue with the path of a
    field of the wrong shape."""
    data = parse_text(raw) if isinstance(raw, str) else raw
    if not isinstance(data, Mapping):
        raise InvalidValue("a workflow is an object with steps", path)
    try:
        return msgspec.convert(data, w.Workflow)
    except msgspec.ValidationError as exc:
        text = str(exc)
        reason, _, at = text.partition(" - at `")
        raise InvalidValue(f"workflow: {reason}", path + at.rstrip("`")[1:] if at else path) from None


def load_file(path: str) -> w.Workflow:
    with open(path, encoding="utf-8") as fh:
        return load(fh.read(), path=f"{path}:$")


# --- the graph ------------------------------------------------------------------------------------

@dataclass(slots=True)
class Graph:
    """Steps by id, in document order, with their dependencies (all of them, implicit ones
    included) and dependents."""

    steps: dict[str, w.Step]
    deps: dict[str, list[str]]
    dependents: dict[str, list[str]] = field(default_factory=dict)
    #: step id -> (condition id, "then" | "else") for steps a condition gates
    branches: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    #: step ids that only run as some step's fallback
    fallbacks: dict[str, str] = field(default_factory=dict)  # fallback step -> the step it stands in for
    #: loop step id -> its body's graph
    bodies: dict[str, Graph] = field(default_factory=dict)


def _step_refs(step: w.Step) -> Iterable[tuple[str, ...]]:
    for _, _, parsed in expr.template_nodes(step.inputs, "$"):
        if isinstance(parsed, expr.Template):
            for part in parsed.parts:
                if isinstance(part, expr.Node):
                    yield from expr.references(part)
    texts = [step.if_] if step.if_ else []
    if step.kind == "condition" and isinstance(step.inputs.get("expr"), str) and "{{" not in step.inputs["expr"]:
        texts.append(step.inputs["expr"])
    for text in texts:
        try:
            yield from expr.references(expr.parse(text))
        except expr.ExprError:
            pass
    if step.body is not None:
        inner = {s.id for s in step.body.steps}
        for sub in step.body.steps:
            for ref in _step_refs(sub):
                if not (len(ref) > 1 and ref[0] == "steps" and ref[1] in inner):
                    yield ref
        for _, _, parsed in expr.template_nodes(step.body.output, "$"):
            if isinstance(parsed, expr.Template):
                for part in parsed.parts:
                    if isinstance(part, expr.Node):
                        for ref in expr.references(part):
                            if not (len(ref) > 1 and ref[0] == "steps" and ref[1] in inner):
                                yield ref


def build_graph(steps: list[w.Step]) -> Graph:
    """The graph of valid steps (run `validate` first: unknown references are ignored here)."""
    by_id = {s.id: s for s in steps}
    deps: dict[str, list[str]] = {}
    branches: dict[str, list[tuple[str, str]]] = {}
    fallbacks: dict[str, str] = {}
    for s in steps:
        if s.kind == "condition":
            for target in s.then:
                branches.setdefault(target, []).append((s.id, "then"))
            for target in s.else_:
                branches.setdefault(target, []).append((s.id, "else"))
        if isinstance(s.onError, w.Fallback):
            fallbacks[s.onError.fallback] = s.id
    for s in steps:
        found: dict[str, None] = {}
        for need in s.needs:
            if need in by_id and need != s.id:
                found[need] = None
        for ref in _step_refs(s):
            if len(ref) > 1 and ref[0] == "steps" and ref[1] in by_id and ref[1] != s.id:
                found[ref[1]] = None
        for cond, _ in branches.get(s.id, ()):
            found[cond] = None
        # a fallback reads the step it stands in for (its error) but must not wait for it
        if s.id in fallbacks:
            found.pop(fallbacks[s.id], None)
        deps[s.id] = list(found)
    dependents: dict[str, list[str]] = {sid: [] for sid in by_id}
    for sid, ds in deps.items():
        for d in ds:
            dependents[d].append(sid)
    graph = Graph(by_id, deps, dependents, branches, fallbacks)
    for s in steps:
        if s.kind == "loop" and s.body is not None:
            graph.bodies[s.id] = build_graph(s.body.steps)
    return graph


def find_cycle(deps: Mapping[str, list[str]]) -> list[str] | None:
    """A dependency cycle as [a, b, ..., a] (a needs b needs ... needs a), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []
    for start in deps:
        if state.get(start):
            continue
        # iterative DFS: (node, iterator over its deps)
        work = [(start, iter(deps[start]))]
        state[start] = 1
        stack.append(start)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is None:
                work.pop()
                stack.pop()
                state[node] = 2
                continue
            if nxt not in deps:
                continue
            mark = state.get(nxt, 0)
            if mark == 1:
                return stack[stack.index(nxt):] + [nxt]
            if mark == 0:
                state[nxt] = 1
                stack.append(nxt)
                work.append((nxt, iter(deps[nxt])))
    return None


# --- validation ---------------------------------------------------------------------------------

class _Checker:
    def __init__(self, wf: w.Workflow) -> None:
        self.wf = wf
        self.problems: list[w.ValidationProblem] = []

    def add(self, message: str, path: str, step: str | None = None, fld: str | None = None) -> None:
        self.problems.append(w.ValidationProblem(message=message, path=path, stepId=step, field=fld))

    def check(self) -> list[w.ValidationProblem]:
        wf = self.wf
        if not wf.steps:
            self.add("a workflow needs at least one step", "$.steps")
        if wf.id and not _valid_id(wf.id):
            self.add("a workflow id is letters, digits, '.', '_' or '-', starting with a letter or digit", "$.id")
        for name, spec in wf.inputs.items():
            if spec.default is not None and not type_ok(spec.type, spec.default):
                self.add(f"input {name}: the default is not a {spec.type}", f"$.inputs.{name}.default", fld=name)
        self.check_steps(wf.steps, "$.steps", outer=None, in_loop=False)
        known = {s.id: s for s in wf.steps}
        for name, value in wf.outputs.items():
            self.check_templates(value, f"$.outputs.{name}", known, None, f"output {name}", in_loop=False)
        return self.problems

    def check_steps(self, steps: list[w.Step], base: str, outer: Mapping[str, w.Step] | None, in_loop: bool) -> None:
        if len(steps) > MAX_STEPS:
            self.add(f"a workflow has at most {MAX_STEPS} steps", base)
            return
        seen: dict[str, int] = {}
        for i, s in enumerate(steps):
            if s.id in seen:
                self.add(f"step id {s.id} is used twice (steps {seen[s.id]} and {i})", f"{base}[{i}].id", s.id, "id")
            seen.setdefault(s.id, i)
        local = {s.id: s for s in steps}
        visible: dict[str, w.Step] = {**(outer or {}), **local}
        for i, s in enumerate(steps):
            at = f"{base}[{i}]"
            spec = KINDS.get(s.kind)
            if spec is None:
                self.add(f"step {s.id}: unknown kind {s.kind!r}; known: {', '.join(KINDS)}", f"{at}.kind", s.id, "kind")
            else:
                self.check_inputs(s, at, spec.inputs)
            for j, need in enumerate(s.needs):
                if need == s.id:
                    self.add(f"step {s.id} needs itself", f"{at}.needs[{j}]", s.id, "needs")
                elif need not in local:
                    self.add(f"step {s.id} needs {need}, which is not a step{' of this body' if outer else ''}",
                             f"{at}.needs[{j}]", s.id, "needs")
            for branch, targets in (("then", s.then), ("else", s.else_)):
                if targets and s.kind != "condition":
                    self.add(f"step {s.id}: only condition steps have {branch}", f"{at}.{branch}", s.id, branch)
                for j, target in enumerate(targets):
                    if target not in local or target == s.id:
                        self.add(f"step {s.id}: {branch} names {target}, which is not another step",
                                 f"{at}.{branch}[{j}]", s.id, branch)
            if s.kind == "loop":
                if s.body is None or not s.body.steps:
                    self.add(f"loop step {s.id} needs a body with steps", f"{at}.body", s.id, "body")
                else:
                    self.check_steps(s.body.steps, f"{at}.body.steps", visible, in_loop=True)
                    inner = {**visible, **{b.id: b for b in s.body.steps}}
                    self.check_templates(s.body.output, f"{at}.body.output", inner, s.id, "body.output", True)
            elif s.body is not None:
                self.add(f"step {s.id}: only loop steps have a body", f"{at}.body", s.id, "body")
            if isinstance(s.onError, w.Fallback):
                fb = s.onError.fallback
                if fb not in local or fb == s.id:
                    self.add(f"step {s.id}: fallback {fb} is not another step", f"{at}.onError.fallback", s.id,
                             "onError")
            self.check_templates(s.inputs, f"{at}.inputs", visible, s.id, "inputs", in_loop)
            if s.if_ is not None:
                self.check_expression(s.if_, f"{at}.if", visible, s.id, "if", in_loop)
            if s.kind == "condition" and isinstance(s.inputs.get("expr"), str) and "{{" not in s.inputs["expr"]:
                self.check_expression(s.inputs["expr"], f"{at}.inputs.expr", visible, s.id, "inputs.expr", in_loop)
        graph = build_graph(steps)
        cycle = find_cycle(graph.deps)
        if cycle is not None:
            first = cycle[0]
            index = next(i for i, s in enumerate(steps) if s.id == first)
            self.add(f"steps form a cycle: {' -> '.join(cycle)} (each needs the next)", f"{base}[{index}].needs",
                     first, "needs")
        for fb, primary in graph.fallbacks.items():
            if primary in _upstream(graph.deps, fb):
                index = next(i for i, s in enumerate(steps) if s.id == primary)
                self.add(f"step {primary}: its fallback {fb} depends on it", f"{base}[{index}].onError.fallback",
                         primary, "onError")

    def check_inputs(self, s: w.Step, at: str, struct: type[msgspec.Struct]) -> None:
        fields = {f.encode_name: f for f in msgspec.structs.fields(struct)}
        for name, f in fields.items():
            if f.required and name not in s.inputs:
                self.add(f"step {s.id} ({s.kind}): the input {name} is required", f"{at}.inputs.{name}", s.id,
                         f"inputs.{name}")
        for name in s.inputs:
            if name not in fields:
                self.add(f"step {s.id} ({s.kind}): unknown input {name}; known: {', '.join(fields)}",
                         f"{at}.inputs.{name}", s.id, f"inputs.{name}")
        literal = {k: v for k, v in s.inputs.items() if k in fields and not expr.has_template(v)}
        for name, value in literal.items():
            probe = {k: _placeholder(f) for k, f in fields.items() if f.required}
            probe[name] = value
            try:
                msgspec.convert(probe, struct)
            except msgspec.ValidationError as exc:
                reason = str(exc).partition(" - at ")[0]
                self.add(f"step {s.id} ({s.kind}): input {name}: {reason}", f"{at}.inputs.{name}", s.id,
                         f"inputs.{name}")

    def check_templates(self, value: Any, base: str, visible: Mapping[str, w.Step], step: str | None, fld: str,
                        in_loop: bool) -> None:
        for path, text, parsed in expr.template_nodes(value, base):
            sub = fld + path[len(base):]
            if isinstance(parsed, expr.ExprError):
                self.add(f"{_who(step)}: the template {text[:80]!r} does not parse: {parsed}", path, step, sub)
                continue
            for part in parsed.parts:
                if isinstance(part, expr.Node):
                    self.check_refs(part, path, visible, step, sub, in_loop)

    def check_expression(self, text: str, path: str, visible: Mapping[str, w.Step], step: str | None, fld: str,
                         in_loop: bool) -> None:
        try:
            node = expr.parse(text)
        except expr.ExprError as exc:
            self.add(f"{_who(step)}: the expression {text[:80]!r} does not parse: {exc}", path, step, fld)
            return
        self.check_refs(node, path, visible, step, fld, in_loop)

    def check_refs(self, node: expr.Node, path: str, visible: Mapping[str, w.Step], step: str | None, fld: str,
                   in_loop: bool) -> None:
        for ref in expr.references(node):
            root = ref[0]
            if root not in ROOTS:
                self.add(f"{_who(step)}: unknown name {root} in {fld}; names start with {', '.join(ROOTS)}", path,
                         step, fld)
            elif root == "loop" and not in_loop:
                self.add(f"{_who(step)}: loop.* is only known inside a loop's body", path, step, fld)
            elif root == "loop" and len(ref) > 1 and ref[1] not in ("item", "index"):
                self.add(f"{_who(step)}: loop has item and index, not {ref[1]}", path, step, fld)
            elif root == "inputs" and len(ref) > 1 and ref[1] not in self.wf.inputs:
                self.add(f"{_who(step)}: {fld} reads inputs.{ref[1]}, which the workflow does not declare", path,
                         step, fld)
            elif root == "steps" and len(ref) > 1:
                target = visible.get(ref[1])
                if target is None:
                    self.add(f"{_who(step)}: {fld} reads steps.{ref[1]}, which is not a step", path, step, fld)
                elif ref[1] == step:
                    self.add(f"{_who(step)}: {fld} reads its own output", path, step, fld)
                elif len(ref) > 2 and ref[2] not in STEP_FIELDS:
                    self.add(f"{_who(step)}: steps.{ref[1]}.{ref[2]} is unknown; a step has "
                             f"{', '.join(STEP_FIELDS)}", path, step, fld)
                elif len(ref) > 3 and ref[2] == "output" and target.kind in KINDS \
                        and ref[3] not in output_fields(target.kind):
                    self.add(f"{_who(step)}: {fld} reads steps.{ref[1]}.output.{ref[3]}, but a {target.kind} "
                             f"step yields {', '.join(output_fields(target.kind))}", path, step, fld)


def _upstream(deps: Mapping[str, list[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(deps.get(start, ()))
    while todo:
        cur = todo.pop()
        if cur not in seen:
            seen.add(cur)
            todo.extend(deps.get(cur, ()))
    return seen


def _placeholder(f: msgspec.structs.FieldInfo) -> Any:
    t = f.type
    names = repr(t)
    if "int" in names:
        return 0
    if "str" in names:
        return ""
    if "dict" in names:
        return {}
    if "list" in names:
        return []
    return None


def _who(step: str | None) -> str:
    return f"step {step}" if step else "workflow"


def _valid_id(value: str) -> bool:
    import re

    return re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", value) is not None


def validate(wf: w.Workflow) -> list[w.ValidationProblem]:
    return _Checker(wf).check()


def check(wf: w.Workflow, path: str = "$.params.workflow") -> None:
    """InvalidValue naming the first problem (all of them in `details.problems`)."""
    problems = validate(wf)
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise InvalidValue(first.message + more, path + first.path[1:],
                           problems=[msgspec.to_builtins(p) for p in problems])


# --- inputs of a run ------------------------------------------------------------------------------

def type_ok(kind: str, value: Any) -> bool:
    if kind == "any":
        return True
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    return False


def apply_inputs(wf: w.Workflow, given: Mapping[str, Any], path: str = "$.params.inputs") -> dict[str, Any]:
    """The run's inputs: the given ones checked against their types, defaults for the rest."""
    out: dict[str, Any] = {}
    for name in given:
        if name not in wf.inputs:
            known = ", ".join(wf.inputs) or "none"
            raise InvalidValue(f"the workflow has no input {name} (its inputs: {known})", f"{path}.{name}")
    for name, spec in wf.inputs.items():
        if name in given and given[name] is not None:
            value = given[name]
            if not type_ok(spec.type, value):
                raise InvalidValue(f"input {name} takes a {spec.type}", f"{path}.{name}")
            if spec.enum is not None and value not in spec.enum:
                raise InvalidValue(f"input {name} must be one of {', '.join(map(str, spec.enum))}", f"{path}.{name}")
            out[name] = value
        elif spec.required and spec.default is None:
            raise InvalidValue(f"the input {name} is required", f"{path}.{name}")
        else:
            out[name] = spec.default
    return out
