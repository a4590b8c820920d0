"""Workflows, service level on a real database: the expression and template language,
validation, the engine (parallelism, conditions, loops, retries, timeouts, onError, cancel,
resume after a failure and after a stop), tool steps through a ToolSource, the example
workflows, blocks. HTTP steps talk to the real HTTP fixture server on 127.0.0.1."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import workflows as w
from sidecar.errors import Conflict, InvalidValue, NotFound, SidecarError
from sidecar.events.service import EventBus
from sidecar.events.store import EventStore
from sidecar.store.database import Database
from sidecar.toolsource import ToolCall, ToolInfo, ToolRegistry, ToolResult
from sidecar.workflows import document, expr
from sidecar.workflows.engine import backoff_ms
from sidecar.workflows.service import WorkflowService
from sidecar.workflows.steps import StepServices
from tests.support.http_fixture import HttpFixtureServer, Response

pytestmark = pytest.mark.anyio
REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "workflows" / "examples"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class CountingTools:
    """A real ToolSource: `t__echo` echoes, `t__slow` sleeps, and tracks how many run at once."""

    prefix = "t"

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.active = 0
        self.peak = 0

    async def list_tools(self) -> list[ToolInfo]:
        return [ToolInfo("t__echo", "echo", {"type": "object"}), ToolInfo("t__slow", "sleep", {"type": "object"})]

    async def call(self, name: str, arguments: dict[str, Any], call: ToolCall) -> ToolResult:
        self.calls.append({"name": name, "arguments": arguments, "caller": call.caller, **call.extra})
        if name == "t__fail":
            return ToolResult({"problem": "bad"}, is_error=True)
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            if name == "t__slow":
                await anyio.sleep(arguments.get("s", 0.05))
            return ToolResult({"echo": arguments})
        finally:
            self.active -= 1


class Env:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.files = tmp / "files"
        self.files.mkdir(exist_ok=True)
        self.db = Database(tmp / "db.sqlite")
        self.db.open()
        self.tools = CountingTools()
        registry = ToolRegistry()
        registry.add(self.tools)
        self.registry = registry
        self.bus = EventBus(EventStore(self.db))
        self.bus_events = self.bus.subscribe(["workflow.*"], buffer=100_000)

    def service(self) -> WorkflowService:
        services = StepServices(tools=self.registry, file_roots=lambda: [self.files])
        return WorkflowService(self.db, services, publish=self.bus.publish)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[WorkflowService]:
        svc = self.service()
        async with self.bus.running(), svc.running():
            yield svc


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def wf(*steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": extra.pop("id", "t"), "steps": list(steps), **extra}


def setstep(sid: str, value: Any, **extra: Any) -> dict[str, Any]:
    return {"id": sid, "kind": "set", "inputs": {"value": value}, **extra}


# --- the expression and template language -------------------------------------------------------

DATA = {"inputs": {"n": 3, "s": "Hello", "tags": ["a", "b"], "o": {"k": 1},
                   "objs": [{"ok": False, "n": 1}, {"ok": True, "n": 2}]},
        "steps": {"a": {"output": {"items": [1, 2, 3], "status": 200}, "status": "succeeded"}}}


@pytest.mark.parametrize("text, value", [
    ("inputs.n > 2 and inputs.s == 'Hello'", True),
    ("not (inputs.n >= 3) or false", False),
    ("'b' in inputs.tags and 'z' not in inputs.tags", True),
    ("'ell' in inputs.s", True),
    ("'k' in inputs.o", True),
    ("len(steps.a.output.items) == 3 and len(inputs.s) == 5", True),
    ("steps.a.output.items[0] + steps.a.output.items[-1]", 4),
    ("steps.a.output.items[inputs.n - 1]", 3),
    ("steps.missing.output.x == null", True),
    ("inputs.o.nothing.deeper", None),
    ("lower(inputs.s) + '!'", "hello!"),
    ("default(inputs.o.none, 7) * 2", 14),
    ("any(pluck(inputs.objs, 'ok')) and not all([true, 0]) and sum(pluck(inputs.objs, 'n')) == 3", True),
    ("1 == true", False),
    ("[1, 'x'] == [1, 'x']", True),
    ("inputs.s != 'Hello' && true || 1 < 2", True),
])
def test_expressions(text: str, value: Any) -> None:
    assert expr.evaluate(text, DATA) == value


@pytest.mark.parametrize("text, message", [
    ("inputs.n >", "expected a value"),
    ("a == b == c", "do not chain"),
    ("__import__('os')", "unknown function"),
    ("inputs.n.__class__", None),  # parses; yields null, never a Python attribute
    ("(((1)", "expected '\\)'"),
    ("'unterminated", "unexpected character"),
    ("1 +* 2", "expected a value"),
])
def test_expression_errors(text: str, message: str | None) -> None:
    if message is None:
        assert expr.evaluate(text, DATA) is None
        return
    with pytest.raises(expr.ExprError, match=message):
        expr.evaluate(text, DATA)


@pytest.mark.parametrize("text, message", [
    ("inputs.s < 3", "cannot compare string < number"),
    ("'a' * 1000000", "takes numbers"),
    ("len(3)", "len\\(\\) takes"),
    ("1 / 0", "division by zero"),
    ("nope.x", "unknown name nope"),
])
def test_evaluation_errors(text: str, message: str) -> None:
    with pytest.raises(expr.ExprError, match=message):
        expr.evaluate(text, DATA)


def test_deep_nesting_is_refused_not_a_recursion_error() -> None:
    with pytest.raises(expr.ExprError, match="nested deeper"):
        expr.parse("(" * 500 + "1" + ")" * 500)
    with pytest.raises(expr.ExprError, match="nested deeper"):
        expr.parse("not " * 500 + "true")


def test_templates_keep_types_when_alone_and_join_as_text_otherwise() -> None:
    rendered = expr.render({"n": "{{inputs.n}}", "list": "{{ steps.a.output.items }}", "text": "n={{inputs.n}};",
                            "obj": "o={{inputs.o}}", "none": "[{{inputs.o.x}}]", "deep": ["{{inputs.tags[1]}}"],
                            "quoted": "{{ '}}' }}", "plain": 5}, DATA)
    assert rendered == {"n": 3, "list": [1, 2, 3], "text": "n=3;", "obj": 'o={"k":1}', "none": "[]", "deep": ["b"],
                        "quoted": "}}", "plain": 5}


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_any_text_either_parses_or_raises_expr_error(text: str) -> None:
    try:
        node = expr.parse(text)
    except expr.ExprError:
        return
    try:
        node.eval(DATA)
    except expr.ExprError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
                    max_leaves=20))
def test_a_lone_template_yields_the_value_unchanged(value: Any) -> None:
    assert expr.render("{{ inputs.v }}", {"inputs": {"v": value}}) == value


# --- validation ------------------------------------------------------------------------------------

def problems(doc: dict[str, Any]) -> list[w.ValidationProblem]:
    return document.validate(document.load(doc))


@pytest.mark.parametrize("doc, fragment, path", [
    (wf({"id": "a", "kind": "teleport"}), "unknown kind 'teleport'", "$.steps[0].kind"),
    (wf({"id": "a", "kind": "http", "inputs": {}}), "the input url is required", "$.steps[0].inputs.url"),
    (wf({"id": "a", "kind": "delay", "inputs": {"ms": "soon"}}), "input ms: Expected `int`", "$.steps[0].inputs.ms"),
    (wf({"id": "a", "kind": "delay", "inputs": {"ms": 1, "extra": 2}}), "unknown input extra", "$.steps[0].inputs.extra"),
    (wf(setstep("a", 1, needs=["c"]), setstep("b", 1, needs=["a"]), setstep("c", 1, needs=["b"])),
     "cycle: a -> c -> b -> a", "$.steps[0].needs"),
    (wf(setstep("a", "{{steps.b.output.value}}"), setstep("b", "{{steps.a.output.value}}")),
     "cycle: a -> b -> a", "$.steps[0].needs"),
    (wf(setstep("a", 1, needs=["ghost"])), "needs ghost, which is not a step", "$.steps[0].needs[0]"),
    (wf(setstep("a", "{{steps.ghost.output.value}}")), "reads steps.ghost, which is not a step", "$.steps[0].inputs.value"),
    (wf({"id": "h", "kind": "http", "inputs": {"url": "http://x"}}, setstep("a", "{{steps.h.output.bodyy}}")),
     "a http step yields status, headers, body", "$.steps[1].inputs.value"),
    (wf(setstep("a", "{{steps.a.output.value}}")), "reads its own output", "$.steps[0].inputs.value"),
    (wf(setstep("a", "{{inputs.missing}}")), "inputs.missing, which the workflow does not declare",
     "$.steps[0].inputs.value"),
    (wf(setstep("a", "x {{ inputs. }}")), "does not parse", "$.steps[0].inputs.value"),
    (wf(setstep("a", {"deep": ["{{ 1 + }}"]})), "does not parse", "$.steps[0].inputs.value.deep[0]"),
    (wf(setstep("a", 1, **{"if": "1 =="})), "the expression '1 ==' does not parse", "$.steps[0].if"),
    (wf(setstep("a", "{{loop.item}}")), "loop.* is only known inside a loop", "$.steps[0].inputs.value"),
    (wf(setstep("a", 1), setstep("a", 2)), "step id a is used twice", "$.steps[1].id"),
    (wf(setstep("a", 1, then=["a"])), "only condition steps have then", "$.steps[0].then"),
    (wf({"id": "c", "kind": "condition", "inputs": {"expr": "true"}, "then": ["nope"]}),
     "then names nope", "$.steps[0].then[0]"),
    (wf({"id": "l", "kind": "loop", "inputs": {"items": []}}), "needs a body", "$.steps[0].body"),
    (wf(setstep("a", 1, onError={"fallback": "zz"})), "fallback zz is not another step", "$.steps[0].onError.fallback"),
    (wf(setstep("a", 1, onError={"fallback": "b"}), setstep("c", 1, needs=["a"]), setstep("b", 1, needs=["c"])),
     "its fallback b depends on it", "$.steps[0].onError.fallback"),
    (wf(setstep("a", "{{nothing.here}}")), "unknown name nothing", "$.steps[0].inputs.value"),
    (wf({"id": "l", "kind": "loop", "inputs": {"items": [1]},
         "body": {"steps": [setstep("x", "{{loop.itme}}")]}}), "loop has item and index", "$.steps[0].body.steps[0]"),
    ({"id": "t", "steps": []}, "at least one step", "$.steps"),
])
def test_validation_names_the_problem_step_and_field(doc: dict[str, Any], fragment: str, path: str) -> None:
    found = problems(doc)
    assert any(fragment in p.message and p.path.startswith(path) for p in found), found


def test_validation_reports_every_problem_at_once() -> None:
    found = problems(wf({"id": "a", "kind": "nope"}, {"id": "b", "kind": "http", "inputs": {}},
                        setstep("c", "{{steps.zz.output}}")))
    assert [p.stepId for p in found] == ["a", "b", "c"]


def test_valid_documents_have_no_problems() -> None:
    examples = sorted(p for p in EXAMPLES.iterdir() if p.suffix in (".json", ".yaml"))
    assert len(examples) >= 7
    for path in examples:
        assert document.validate(document.load_file(str(path))) == [], path.name


def test_yaml_and_json_text_load_alike() -> None:
    yaml_doc = "id: y\nsteps:\n  - id: a\n    kind: set\n    inputs: {value: [1, 2]}\n"
    json_doc = json.dumps({"id": "y", "steps": [{"id": "a", "kind": "set", "inputs": {"value": [1, 2]}}]})
    assert document.load(yaml_doc) == document.load(json_doc)
    with pytest.raises(InvalidValue, match="not valid YAML"):
        document.load("id: [unclosed\n")
    with pytest.raises(InvalidValue) as info:
        document.load({"id": "x", "steps": [{"id": "a"}]})
    assert info.value.path == "$.params.workflow.steps[0]"


# --- the engine -------------------------------------------------------------------------------------

async def test_fifty_step_workflow_mixing_kinds(env: Env, http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("GET", "/item", Response.json({"ok": True, "n": 5}))
    steps: list[dict[str, Any]] = [setstep("seed", {"count": 0, "names": ["x", "y", "z"]})]
    for i in range(10):  # 10 chains of: http -> set -> tool -> delay -> condition(+branch)
        prev = "seed"
        steps.append({"id": f"get{i}", "kind": "http", "needs": [prev],
                      "inputs": {"url": http_fixture.url + "/item", "headers": {"X-Step": str(i)}}})
        steps.append(setstep(f"calc{i}", f"{{{{steps.get{i}.output.body.n * {i}}}}}"))
        steps.append({"id": f"tool{i}", "kind": "tool", "inputs": {"tool": "t__echo",
                                                                    "arguments": {"v": f"{{{{steps.calc{i}.output.value}}}}"}}})
        steps.append({"id": f"wait{i}", "kind": "delay", "inputs": {"ms": 5}, "needs": [f"tool{i}"]})
        steps.append({"id": f"big{i}", "kind": "condition", "needs": [f"wait{i}"],
                      "inputs": {"expr": f"steps.tool{i}.output.content.echo.v >= 25"}})
    steps.append({"id": "files", "kind": "loop", "inputs": {"items": "{{steps.seed.output.value.names}}"},
                  "body": {"steps": [{"id": "write", "kind": "file",
                                      "inputs": {"op": "write", "path": "out/{{loop.item}}.txt", "content": "{{loop.index}}"}}]}})
    steps.append(setstep("sum", "{{ len(steps.files.output.results) + steps.calc9.output.value }}",
                         needs=[f"big{i}" for i in range(10)]))
    steps.append({"id": "report", "kind": "file", "inputs": {"op": "write", "path": "report.json",
                                                            "content": {"sum": "{{steps.sum.output.value}}"}}})
    assert len(steps) == 54
    async with env.running() as svc:
        result = await svc.run_workflow(workflow=wf(*steps, outputs={"sum": "{{steps.sum.output.value}}",
                                                                      "bigs": "{{steps.big7.output.result}}"}))
        assert result.status == "succeeded", result.error
        assert result.outputs == {"sum": 48, "bigs": True}
        detail = await svc.run_detail(result.runId)
    assert {s.status for s in detail.steps} == {"succeeded"}
    assert len(detail.steps) == 54
    assert http_fixture.calls("GET", "/item") == 10
    assert [c["arguments"]["v"] for c in sorted(env.tools.calls, key=lambda c: c["arguments"]["v"])] == \
        [5 * i for i in range(10)]
    assert (env.files / "out" / "y.txt").read_text() == "1"
    assert json.loads((env.files / "report.json").read_text()) == {"sum": 48}
    # tool steps say who calls and pass the idempotency key
    assert env.tools.calls[0]["caller"] == "workflow:t" and env.tools.calls[0]["idempotencyKey"].startswith(result.runId)


async def test_parallel_branches_run_at_once_and_join(env: Env) -> None:
    doc = wf(setstep("start", 1),
             {"id": "left", "kind": "delay", "inputs": {"ms": 300}, "needs": ["start"]},
             {"id": "right", "kind": "delay", "inputs": {"ms": 300}, "needs": ["start"]},
             {"id": "slow", "kind": "tool", "inputs": {"tool": "t__slow", "arguments": {"s": 0.3}}, "needs": ["start"]},
             setstep("join", "{{steps.left.output.ms + steps.right.output.ms}}", needs=["slow"]))
    async with env.running() as svc:
        result = await svc.run_workflow(workflow=doc)
        detail = await svc.run_detail(result.runId)
    assert result.status == "succeeded"
    steps = {s.stepId: s for s in detail.steps}
    branches = [steps[b] for b in ("left", "right", "slow")]
    # side by side, not one after another: every branch started before the first one finished
    # (the journal's timestamps, not a wall-clock threshold a loaded CI machine can miss)
    assert max(b.startedAt for b in branches) < min(b.finishedAt for b in branches), branches  # type: ignore[type-var]
    assert steps["join"].output == {"value": 600}
    assert steps["join"].startedAt >= max(steps[b].finishedAt for b in ("left", "right", "slow"))  # type: ignore[type-var]


async def test_ready_steps_start_as_soon_as_their_needs_are_met_not_in_waves(env: Env) -> None:
    doc = wf({"id": "fast", "kind": "delay", "inputs": {"ms": 10}},
             {"id": "slow", "kind": "delay", "inputs": {"ms": 400}},
             setstep("afterFast", 1, needs=["fast"]))
    async with env.running() as svc:
        result = await svc.run_workflow(workflow=doc)
        steps = {s.stepId: s for s in (await svc.run_detail(result.runId)).steps}
    assert steps["afterFast"].finishedAt < steps["slow"].finishedAt  # type: ignore[operator]


@pytest.mark.parametrize("n, branch", [(10, "then"), (1, "else")])
async def test_conditions_both_ways(env: Env, n: int, branch: str) -> None:
    doc = wf({"id": "check", "kind": "condition", "inputs": {"expr": "inputs.n > 5 and 'x' in inputs.tags"},
              "then": ["big"], "else": ["small"]},
             setstep("big", "big"), setstep("small", "small"),
             setstep("afterBig", "{{steps.big.output.value}}"),
             setstep("join", "{{default(steps.big.output.value, steps.small.output.value)}}", needs=["big", "small"],
                     **{"if": "true"}),
             inputs={"n": {"type": "integer", "required": True}, "tags": {"type": "array", "default": ["x"]}},
             outputs={"picked": "{{steps.join.output.value}}", "branch": "{{steps.check.output.branch}}"})
    async with env.running() as svc:
        result = await svc.run_workflow(workflow=doc, inputs={"n": n})
        steps = {s.stepId: s.status for s in (await svc.run_detail(result.runId)).steps}
    assert result.outputs == {"picked": "big" if branch == "then" else "small", "branch": branch}
    taken, other = ("big", "small") if branch == "then" else ("small", "big")
    assert steps[taken] == "succeeded" and steps[other] == "skipped"
    assert steps["afterBig"] == ("succeeded" if branch == "then" else "skipped")  # skipping spreads
    assert steps["join"] == "succeeded"


async def test_if_false_skips(env: Env) -> None:
    async with env.running() as svc:
        result = await svc.run_workflow(workflow=wf(setstep("a", 1, **{"if": "inputs.go"}),
                                                    inputs={"go": {"type": "boolean", "default": False}}))
        assert (await svc.run_detail(result.runId)).steps[0].status == "skipped"


async def test_bounded_loop_respects_parallelism_and_max_items(env: Env) -> None:
    body = {"steps": [{"id": "work", "kind": "tool", "inputs": {"tool": "t__slow", "arguments": {"i": "{{loop.item}}", "s": 0.05}}},
                      setstep("double", "{{steps.work.output.content.echo.i * 2}}")],
            "output": "{{steps.double.output.value}}"}
    doc = wf({"id": "each", "kind": "loop", "inputs": {"items": "{{inputs.items}}", "parallelism": 3, "maxItems": 12},
              "body": body},
             inputs={"items": {"type": "array"}}, outputs={"out": "{{steps.each.output.results}}"})
    async with env.running() as svc:
        result = await svc.run_workflow(workflow=doc, inputs={"items": list(range(12))})
        assert result.outputs == {"out": [i * 2 for i in range(12)]}
        assert env.tools.peak == 3
        too_many = await svc.run_workflow(workflow=doc, inputs={"items": list(range(13))})
    assert too_many.status == "failed" and "more than maxItems 12" in too_many.error["message"]  # type: ignore[index]


async def test_retries_back_off_exponentially(env: Env, http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("GET", "/flaky", Response(503), Response(503), Response(500), Response.json({"ok": 1}))
    doc = wf({"id": "get", "kind": "http", "inputs": {"url": http_fixture.url + "/flaky"},
              "retry": {"maxAttempts": 4, "backoff": 100, "factor": 2, "maxDelay": 300, "jitter": 0.25}})
    events: list[w.WorkflowEvent] = []
    async with env.running() as svc:
        result = await svc.run_workflow(workflow=doc, sink=events.append)
        detail = await svc.run_detail(result.runId)
    assert result.status == "succeeded" and detail.steps[0].attempts == 4
    times = [r.received_at for r in http_fixture.requests]
    gaps = [b - a for a, b in zip(times, times[1:])]
    # waits of 100, 200, 300 (capped) ms, each times [0.75, 1]
    for gap, nominal in zip(gaps, (0.1, 0.2, 0.3)):
        assert nominal * 0.75 - 0.01 <= gap <= nominal + 0.15, gaps
    retrying = [e for e in events if e.type == "step.retrying"]
    assert [e.attempt for e in retrying] == [1, 2, 3]
    assert all(75 <= e.delayMs <= 100 * 2 ** i for i, e in enumerate(retrying))  # type: ignore[operator]
    assert {r.header("idempotency-key") for r in http_fixture.requests} == {f"{result.runId}:get"}


def test_backoff_is_capped_and_jittered() -> None:
    policy = w.RetryPolicy(maxAttempts=10, backoff=100, factor=3, maxDelay=1000, jitter=0.5)
    delays = [backoff_ms(policy, n) for n in range(1, 8)]
    assert 50 <= delays[0] <= 100 and 150 <= delays[1] <= 300 and all(500 <= d <= 1000 for d in delays[3:])


async def test_a_client_error_is_not_retried(env: Env, http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("GET", "/gone", Response(404))
    async with env.running() as svc:
        result = await svc.run_workflow(workflow=wf({"id": "get", "kind": "http", "inputs": {"url": http_fixture.url + "/gone"},
                                                     "retry": {"maxAttempts": 5, "backoff": 10}}))
    assert result.status == "failed" and result.error["stepId"] == "get"  # type: ignore[index]
    assert "answered 404" in result.error["message"] and http_fixture.calls("GET", "/gone") == 1  # type: ignore[index]


async def test_step_timeout(env: Env) -> None:
    doc = wf({"id": "sleepy", "kind": "delay", "inputs": {"ms": 5000}, "timeoutMs": 100,
              "retry": {"maxAttempts": 2, "backoff": 10, "jitter": 0}})
    async with env.running() as svc:
        t0 = time.monotonic()
        result = await svc.run_workflow(workflow=doc)
        elapsed = time.monotonic() - t0
        step = (await svc.run_detail(result.runId)).steps[0]
    assert result.status == "failed" and 0.2 <= elapsed < 4.0, elapsed  # no timeout: 2 x 5 s
    assert step.attempts == 2 and step.error["kind"] == "timeout"  # type: ignore[index]
    assert "longer than 100 ms" in step.error["message"]  # type: ignore[index]


async def test_on_error_continue_and_fallback(env: Env, http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("POST", "/hook", Response(503))
    doc = document.load_file(str(EXAMPLES / "webhook-with-fallback.json"))
    doc_dict = msgspec.to_builtins(doc)
    async with env.running() as svc:
        result = await svc.run_workflow(workflow=doc_dict, inputs={"url": http_fixture.url + "/hook",
                                                                   "payload": {"n": 1}})
        steps = {s.stepId: s for s in (await svc.run_detail(result.runId)).steps}
        assert result.status == "succeeded", result.error
        assert result.outputs == {"delivered": False, "queued": True}
        assert steps["deliver"].status == "recovered" and steps["deliver"].attempts == 3
        assert json.loads((env.files / "outbox.jsonl").read_text()) == {"n": 1}
        http_fixture.route("POST", "/hook", Response.json({"ok": True}))
        ok = await svc.run_workflow(workflow=doc_dict, inputs={"url": http_fixture.url + "/hook", "payload": {"n": 2}})
        steps = {s.stepId: s for s in (await svc.run_detail(ok.runId)).steps}
        assert ok.outputs == {"delivered": True, "queued": False}
        assert steps["queue"].status == "skipped"
        cont = await svc.run_workflow(workflow=wf(
            {"id": "bad", "kind": "tool", "inputs": {"tool": "t__fail"}, "onError": "continue"},
            setstep("after", "{{steps.bad.status}}")), inputs={})
    assert cont.status == "succeeded"
    assert (await svc_detail_status(env, cont.runId)) == {"bad": "failed", "after": "succeeded"}


async def svc_detail_status(env: Env, run_id: str) -> dict[str, str]:
    async with env.running() as svc:
        return {s.stepId: s.status for s in (await svc.run_detail(run_id)).steps}


async def test_cancel_a_run_with_parallel_steps(env: Env) -> None:
    doc = wf(*[{"id": f"d{i}", "kind": "delay", "inputs": {"ms": 10_000}} for i in range(4)], setstep("end", 1,
                                                                                                      needs=["d0"]))
    events: list[w.WorkflowEvent] = []
    async with env.running() as svc:
        run = await svc.start(workflow=doc, sink=events.append)
        while sum(e.type == "step.started" for e in events) < 4:
            await anyio.sleep(0.01)
        t0 = time.monotonic()
        assert await svc.cancel(run.id) is True
        assert time.monotonic() - t0 < 4  # the delays are 10 s
        detail = await svc.run_detail(run.id)
        assert await svc.cancel(run.id) is False  # not running any more
    assert detail.run.status == "cancelled"
    assert {s.stepId: s.status for s in detail.steps} == {"d0": "cancelled", "d1": "cancelled", "d2": "cancelled",
                                                           "d3": "cancelled", "end": "pending"}
    assert events[-1].type == "run.finished" and events[-1].status == "cancelled"


async def test_cancelling_the_waiting_caller_cancels_the_run(env: Env) -> None:
    async with env.running() as svc:
        with anyio.move_on_after(0.2):
            await svc.run_workflow(workflow=wf({"id": "d", "kind": "delay", "inputs": {"ms": 10_000}}))
        runs = (await svc.runs()).runs
    assert runs[0].status == "cancelled"


async def test_resume_a_failed_run_from_the_failed_step(env: Env, http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("POST", "/side-effect", Response.json({"n": 1}))
    http_fixture.route("GET", "/later", Response(500))
    doc = wf({"id": "effect", "kind": "http", "inputs": {"method": "POST", "url": http_fixture.url + "/side-effect"}},
             {"id": "fragile", "kind": "http", "inputs": {"url": http_fixture.url + "/later"}, "needs": ["effect"]},
             setstep("end", "{{steps.fragile.output.body.v}}"), outputs={"v": "{{steps.end.output.value}}"})
    async with env.running() as svc:
        failed = await svc.run_workflow(workflow=doc)
        assert failed.status == "failed" and failed.error["stepId"] == "fragile"  # type: ignore[index]
        http_fixture.route("GET", "/later", Response.json({"v": 42}))
        resumed = await svc.wait(await svc.resume(failed.runId))
        assert resumed.status == "succeeded" and resumed.outputs == {"v": 42} and resumed.runId == failed.runId
        with pytest.raises(Conflict, match="nothing to resume"):
            await svc.resume(failed.runId)
        with pytest.raises(NotFound):
            await svc.resume("nope")
        events = (await svc.events(failed.runId)).events
    assert http_fixture.calls("POST", "/side-effect") == 1  # the completed step was not repeated
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.type for e in events if e.type.startswith("run.")] == ["run.started", "run.finished", "run.resumed",
                                                                      "run.started", "run.finished"]


async def test_a_stopped_engine_resumes_its_runs_at_the_next_start(env: Env, http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("POST", "/once", Response.json({"ok": True}))
    http_fixture.route("POST", "/slow", Response.json({"ok": True}, delay_before=0.3))
    doc = wf({"id": "first", "kind": "http", "inputs": {"method": "POST", "url": http_fixture.url + "/once"}},
             {"id": "second", "kind": "http", "inputs": {"method": "POST", "url": http_fixture.url + "/slow"},
              "needs": ["first"]},
             setstep("third", "{{steps.second.output.status}}"), outputs={"s": "{{steps.third.output.value}}"})
    async with env.running() as svc:
        run = await svc.start(workflow=doc)
        await anyio.to_thread.run_sync(http_fixture.wait_for_requests, 2, 5.0)  # `second` is in flight: stop
    async with env.running() as svc:  # a new service on the same database: the run resumes
        assert run.id in svc.engine.runs
        result = await svc.wait(svc.engine.runs[run.id])
        steps = {s.stepId: s for s in (await svc.run_detail(run.id)).steps}
    assert result.status == "succeeded" and result.outputs == {"s": 200}
    assert http_fixture.calls("POST", "/once") == 1 and http_fixture.calls("POST", "/slow") == 2
    keys = [r.header("idempotency-key") for r in http_fixture.requests if r.path == "/slow"]
    assert keys == [f"{run.id}:second"] * 2 == [steps["second"].idempotencyKey] * 2


async def test_a_loop_resumes_after_a_stop_without_repeating_finished_items(env: Env,
                                                                             http_fixture: HttpFixtureServer) -> None:
    for i in range(6):
        http_fixture.route("POST", f"/item/{i}", Response.json({"i": i}, delay_before=0.4 if i == 3 else 0.0))
    body = {"steps": [{"id": "post", "kind": "http", "inputs": {"method": "POST",
                                                                "url": http_fixture.url + "/item/{{loop.index}}"}},
                      setstep("pick", "{{steps.post.output.body.i * 10}}")],
            "output": "{{steps.pick.output.value}}"}
    doc = wf({"id": "each", "kind": "loop", "inputs": {"items": [0, 1, 2, 3, 4, 5], "parallelism": 1}, "body": body},
             outputs={"r": "{{steps.each.output.results}}"})
    async with env.running() as svc:
        run = await svc.start(workflow=doc)
        await anyio.to_thread.run_sync(http_fixture.wait_for_requests, 4, 5.0)  # item 3 in flight: stop
    async with env.running() as svc:
        result = await svc.wait(svc.engine.runs[run.id])
        events = (await svc.events(run.id)).events
    assert result.status == "succeeded" and result.outputs == {"r": [0, 10, 20, 30, 40, 50]}
    assert [http_fixture.calls("POST", f"/item/{i}") for i in range(6)] == [1, 1, 1, 2, 1, 1]
    keys = [r.header("idempotency-key") for r in http_fixture.requests if r.path == "/item/3"]
    assert keys == [f"{run.id}:each[3].post"] * 2
    resumed = [e for e in events if e.type == "step.started" and e.seq > next(
        x.seq for x in events if x.type == "run.resumed")]
    assert [e.stepId for e in resumed] == ["each", "each[3].post", "each[3].pick", "each[4].post", "each[4].pick",
                                           "each[5].post", "each[5].pick"]


async def test_a_failed_loop_resumes_from_its_failed_item(env: Env, http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("POST", "/ok", Response.json({"ok": True}))
    http_fixture.route("POST", "/flaky", Response.json({"no": 1}, 400), Response.json({"ok": True}))
    url = http_fixture.url
    doc = wf({"id": "each", "kind": "loop", "inputs": {"items": ["/ok", "/ok", "/flaky", "/ok"], "parallelism": 1},
              "body": {"steps": [{"id": "post", "kind": "http",
                                  "inputs": {"method": "POST", "url": url + "{{loop.item}}"}}]}})
    async with env.running() as svc:
        failed = await svc.run_workflow(workflow=doc)
        assert failed.status == "failed" and http_fixture.calls("POST", "/ok") == 2
        resumed = await svc.wait(await svc.resume(failed.runId))
    assert resumed.status == "succeeded"
    assert http_fixture.calls("POST", "/ok") == 3 and http_fixture.calls("POST", "/flaky") == 2


async def test_a_called_workflow_resumes_after_a_stop_without_repeating_its_finished_steps(
        env: Env, http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("POST", "/child-a", Response.json({"a": 1}))
    http_fixture.route("POST", "/child-b", Response.json({"b": 2}, delay_before=0.4))
    child = wf({"id": "a", "kind": "http", "inputs": {"method": "POST", "url": http_fixture.url + "/child-a"}},
               {"id": "b", "kind": "http", "inputs": {"method": "POST", "url": http_fixture.url + "/child-b"},
                "needs": ["a"]},
               id="child", outputs={"sum": "{{steps.a.output.body.a + steps.b.output.body.b}}"})
    parent = wf({"id": "call", "kind": "workflow", "inputs": {"workflow": "child"}},
                outputs={"sum": "{{steps.call.output.outputs.sum}}"})
    async with env.running() as svc:
        await svc.create(child)
        run = await svc.start(workflow=parent)
        await anyio.to_thread.run_sync(http_fixture.wait_for_requests, 2, 5.0)  # `b` in flight: stop
    async with env.running() as svc:
        result = await svc.wait(svc.engine.runs[run.id])
    assert result.status == "succeeded" and result.outputs == {"sum": 3}
    assert http_fixture.calls("POST", "/child-a") == 1 and http_fixture.calls("POST", "/child-b") == 2
    keys = {r.header("idempotency-key") for r in http_fixture.requests if r.path == "/child-b"}
    assert keys == {f"{run.id}:call.b"}


async def test_workflow_steps_call_saved_workflows_within_the_depth_bound(env: Env) -> None:
    async with env.running() as svc:
        await svc.create(wf(setstep("x", "{{inputs.v * 10}}"), id="child", inputs={"v": {"type": "integer"}},
                            outputs={"r": "{{steps.x.output.value}}"}))
        parent = await svc.run_workflow(workflow=wf({"id": "call", "kind": "workflow",
                                                     "inputs": {"workflow": "child", "inputs": {"v": 4}}},
                                                    outputs={"r": "{{steps.call.output.outputs.r}}"}))
        assert parent.outputs == {"r": 40}
        await svc.create(wf({"id": "again", "kind": "workflow", "inputs": {"workflow": "self"}}, id="self"))
        deep = await svc.run_workflow("self")
    assert deep.status == "failed" and "nest at most 5 deep" in json.dumps(deep.error)


async def test_events_reach_the_bus_and_the_durable_run_log(env: Env) -> None:
    async with env.running() as svc:
        result = await svc.run_workflow(workflow=wf(setstep("a", 1), setstep("b", "{{steps.a.output.value}}")))
        log = (await svc.events(result.runId)).events
        after = (await svc.events(result.runId, after=3)).events
    assert [e.type for e in log] == ["run.started", "step.started", "step.succeeded", "step.started",
                                     "step.succeeded", "run.finished"]
    assert log[2].payload["output"] == {"value": 1} and [e.seq for e in after] == [4, 5, 6]
    topics = []
    while True:
        try:
            topics.append(env.bus_events.receive.receive_nowait().topic)
        except (anyio.WouldBlock, anyio.EndOfStream):
            break
    assert topics == ["workflow.run.started", "workflow.step.started", "workflow.step.succeeded",
                      "workflow.step.started", "workflow.step.succeeded", "workflow.run.finished"]


async def test_saved_workflows_crud(env: Env) -> None:
    doc = wf(setstep("a", 1, ui={"x": 10, "y": 20, "color": "red"}), name="First", ui={"zoom": 2})
    async with env.running() as svc:
        info = await svc.create(doc)
        assert info.version == 1 and info.workflow.steps[0].ui == {"x": 10, "y": 20, "color": "red"}
        with pytest.raises(Conflict):
            await svc.create(doc)
        with pytest.raises(InvalidValue, match="unknown kind"):
            await svc.create(wf({"id": "a", "kind": "bogus"}, id="bad"))
        updated = await svc.update("t", {**doc, "name": "Second"})
        assert updated.version == 2 and updated.workflow.name == "Second" and updated.workflow.ui == {"zoom": 2}
        copy = await svc.duplicate("t")
        assert copy.workflow.id == "t-copy" and copy.workflow.name == "Second (copy)"
        assert (await svc.duplicate("t")).workflow.id == "t-copy2"
        assert [s.id for s in (await svc.list()).workflows] == ["t", "t-copy", "t-copy2"]
        run = await svc.run_workflow("t")
        assert run.status == "succeeded"
        assert await svc.delete("t") and not await svc.delete("t")
        with pytest.raises(NotFound):
            await svc.get("t")
        assert (await svc.runs(workflow_id="t")).runs[0].runId == run.runId  # runs outlive their workflow
        with pytest.raises(InvalidValue, match="no input nope"):
            await svc.run_workflow("t-copy", {"nope": 1})


async def test_run_inputs_are_typed_with_defaults(env: Env) -> None:
    doc = wf(setstep("a", "{{inputs.n}}-{{inputs.mode}}"), inputs={
        "n": {"type": "integer", "required": True}, "mode": {"type": "string", "default": "fast", "enum": ["fast", "slow"]}},
        outputs={"v": "{{steps.a.output.value}}"})
    async with env.running() as svc:
        assert (await svc.run_workflow(workflow=doc, inputs={"n": 2})).outputs == {"v": "2-fast"}
        with pytest.raises(InvalidValue, match="the input n is required"):
            await svc.run_workflow(workflow=doc)
        with pytest.raises(InvalidValue, match="takes a integer"):
            await svc.run_workflow(workflow=doc, inputs={"n": "2"})
        with pytest.raises(InvalidValue, match="must be one of"):
            await svc.run_workflow(workflow=doc, inputs={"n": 2, "mode": "warp"})


async def test_file_steps_stay_inside_their_folders(env: Env) -> None:
    (env.tmp / "secret.txt").write_text("no")
    (env.files / "link").symlink_to(env.tmp / "secret.txt")
    async with env.running() as svc:
        for path in ("../secret.txt", str(env.tmp / "secret.txt"), "link"):
            result = await svc.run_workflow(workflow=wf({"id": "r", "kind": "file", "inputs": {"op": "read", "path": path}}))
            assert result.status == "failed" and result.error["kind"] == "permission_denied", path  # type: ignore[index]


async def test_blocks_are_generated_from_the_step_structs(env: Env) -> None:
    svc = env.service()
    blocks = {b.id: b for b in svc.blocks().blocks}
    assert set(blocks) == {"set", "delay", "http", "file", "condition", "loop", "workflow", "tool", "llm"}
    http = blocks["http"]
    assert (http.category, http.icon) == ("network", "globe")
    url = next(f for f in http.inputs if f.id == "url")
    method = next(f for f in http.inputs if f.id == "method")
    assert url.required and url.label == "URL" and method.default == "GET" and "POST" in (method.enum or [])
    assert [f.id for f in http.outputs] == ["status", "headers", "body"]
    assert blocks["llm"].streaming and not blocks["llm"].available  # no chat service here
    assert [b.id for b in svc.blocks(category="control").blocks] == ["delay", "condition", "loop", "workflow"]
    assert [b.id for b in svc.blocks(query="HTTP").blocks] == ["http"]


async def test_blocks_run_one_block_alone(env: Env) -> None:
    async with env.running() as svc:
        assert (await svc.run_block("set", {"value": {"a": [1]}})).output == {"value": {"a": [1]}}
        assert (await svc.run_block("condition", {"expr": "2 > 1"})).output == {"result": True, "branch": "then"}
        with pytest.raises(InvalidValue, match="the input ms is required"):
            await svc.run_block("delay", {})
        with pytest.raises(SidecarError, match="chat capability"):
            await svc.run_block("llm", {"prompt": "hi"})


async def test_llm_steps_answer_unavailable_without_chat(env: Env) -> None:
    async with env.running() as svc:
        result = await svc.run_workflow(workflow=wf({"id": "ask", "kind": "llm", "inputs": {"prompt": "hi"},
                                                     "retry": {"maxAttempts": 3, "backoff": 1}}))
        step = (await svc.run_detail(result.runId)).steps[0]
    assert result.status == "failed" and step.error["kind"] == "unavailable" and step.attempts == 1  # type: ignore[index]


# --- the examples --------------------------------------------------------------------------------------

def example(name: str) -> dict[str, Any]:
    return msgspec.to_builtins(document.load_file(str(EXAMPLES / name)))


async def test_example_health_check(env: Env, http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("GET", "/a", Response.json({"ok": 1}))
    http_fixture.route("GET", "/b", Response(503))
    http_fixture.route("POST", "/alert", Response(502), Response.json({"sent": True}))
    urls = [http_fixture.url + p for p in ("/a", "/b", "/a")]
    async with env.running() as svc:
        result = await svc.run_workflow(workflow=example("health-check.json"),
                                        inputs={"urls": urls, "webhook": http_fixture.url + "/alert"})
        healthy = await svc.run_workflow(workflow=example("health-check.json"),
                                         inputs={"urls": urls[:1], "webhook": http_fixture.url + "/alert"})
    assert result.status == "succeeded", result.error
    assert result.outputs["alerted"] is True
    assert [r["ok"] for r in result.outputs["results"]] == [True, False, True]
    assert http_fixture.calls("POST", "/alert") == 2  # retried once after the 502
    assert healthy.outputs["alerted"] is False
    lines = (env.files / "health.log").read_text().splitlines()
    assert lines == [f"{result.runId} alerted", f"{healthy.runId} all healthy"]


async def test_example_nightly_report(env: Env, http_fixture: HttpFixtureServer) -> None:
    for table, rows, yesterday in (("users", 10, 9), ("orders", 5, 7), ("invoices", 3, 3)):
        http_fixture.route("GET", f"/tables/{table}/count", Response.json({"rows": rows, "yesterday": yesterday}))
    http_fixture.route("POST", "/alerts", Response.json({}))
    async with env.running() as svc:
        result = await svc.run_workflow(workflow=example("nightly-report.yaml"), inputs={"api": http_fixture.url})
    assert result.status == "succeeded", result.error
    assert result.outputs["tables"] == 3 and result.outputs["alerted"] is True
    alert = next(r for r in http_fixture.requests if r.path == "/alerts").json()
    assert [r["shrunk"] for r in alert["results"]] == [False, True, False]
    report = (env.files / "reports" / "nightly.md").read_text()
    assert report.startswith(f"# Nightly report ({result.runId})") and '"table": "orders"' in report


async def test_example_webhook_with_fallback_delivers(env: Env, http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("POST", "/in", Response(503), Response.json({"ok": True}))
    async with env.running() as svc:
        result = await svc.run_workflow(workflow=example("webhook-with-fallback.json"),
                                        inputs={"url": http_fixture.url + "/in", "payload": {"id": 7}})
    assert result.outputs == {"delivered": True, "queued": False}
    assert [r.json() for r in http_fixture.requests] == [{"id": 7}, {"id": 7}]


async def test_example_plugin_pipeline(env: Env) -> None:
    pytest.importorskip("wasmtime")
    from sidecar.notifier import Notifier
    from sidecar.plugins.service import DEFAULTS, PluginService
    from sidecar.plugins.store import PluginStore
    from sidecar.plugins.toolsource import PluginToolSource

    plugins = PluginService(PluginStore(env.db), env.tmp / "data", DEFAULTS.__getitem__, Notifier())
    env.registry.add(PluginToolSource(plugins))
    (env.files / "essay.txt").write_text("one two three\nfour five\n")
    async with plugins.running(), env.running() as svc:
        await plugins.install(str(REPO / "plugins" / "text-tools"))
        result = await svc.run_workflow(workflow=example("plugin-pipeline.yaml"),
                                        inputs={"path": "essay.txt", "title": "My First Essay!"})
    assert result.status == "succeeded", result.error
    assert result.outputs["slug"] == "my-first-essay"
    saved = json.loads((env.files / "stats" / "my-first-essay.json").read_text())
    assert saved["title"] == "My First Essay!" and saved["counts"]["words"] == 5


def test_llm_examples_validate() -> None:
    for name in ("summarize-url.yaml", "triage-issue.yaml", "translate-en-ko.yaml"):
        doc = document.load_file(str(EXAMPLES / name))
        assert document.validate(doc) == [] and any(s.kind == "llm" for s in doc.steps)





# ---- found by tests/test_params_fuzz.py -------------------------------------------------------

def _yaml_bomb(levels: int) -> str:
    """A few hundred bytes of YAML whose aliases expand to 10**levels values ("billion laughs")."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "id: bomb\nx:\n" + "\n".join("  " + line for line in lines) + \
        f"\noutputs: {{o: *l{levels - 1}}}\nsteps: [{{id: s, kind: set, inputs: {{value: 1}}}}]\n"


def test_a_yaml_alias_bomb_is_refused_before_it_expands() -> None:
    # 10**9 values: converting, storing or running it would exhaust memory
    with pytest.raises(SidecarError) as err:
        document.load(_yaml_bomb(9))
    assert err.value.kind == "resource_exhausted"
    assert err.value.details == {"limit": document.MAX_YAML_VALUES, "path": "$.params.workflow"}
    # aliases within the bound still load
    assert document.load(_yaml_bomb(3)).id == "bomb"


@pytest.mark.parametrize("text", [
    "id: deep\nsteps: " + "[" * 3000 + "]" * 3000,  # PyYAML's composer recurses per level
    '{"id": "deep", "steps": ' + "[" * 100_000 + "]" * 100_000 + "}",  # so does json's scanner
])
def test_a_deeply_nested_document_is_invalid_params(text: str) -> None:
    with pytest.raises(InvalidValue) as err:
        document.load(text)
    assert err.value.path == "$.params.workflow" and "nested too deeply" in err.value.message
