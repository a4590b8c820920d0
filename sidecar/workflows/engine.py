"""Running workflow graphs: ready steps start as soon as their needs are met, in a task group,
at most `maxParallel` leaf steps at once per run; retries with exponential backoff and jitter;
per-step timeouts; `onError` abort / continue / fallback; cancellation.

Durability: the top-level steps of a run are journalled (`step_runs`, `run_events`) through
a group-commit `Journal`: many steps finishing together share one transaction, and a step's
dependents start only once its completion is committed. After a crash, a run still marked
running is resumed: finished steps keep their recorded outputs; a step that was running is
run again (same attempt number) with the same idempotency key (`<runId>:<stepId>`), which
http steps send as the `Idempotency-Key` header and tool steps pass in `ToolCall.extra`.
The steps inside a loop's items and a called workflow are journalled the same way, under
prefixed ids (`each[3].fetch`, `call.render`, `call.inner[0].x`; idempotency key
`<runId>:<prefixed id>`). When the loop (or the call) runs again after a crash or a
`workflows/resume`, the nested steps that had succeeded keep their outputs and are not run
again; the others run. Nested steps are matched by item index and step id: a loop's `items`
are rendered again from the recorded outputs they depend on, so they are the same list; a
called workflow edited in between is run with the recorded outputs of its steps that still
exist.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections import ChainMap
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import anyio
import msgspec
from anyio.abc import ObjectSendStream, TaskGroup

from protocol import workflows as w
from sidecar.errors import InvalidValue, NotFound, SidecarError
from sidecar.store.database import Database
from sidecar.workflows import document, expr
from sidecar.workflows import store as sql
from sidecar.workflows.steps import (
    CONTROL_KINDS,
    KINDS,
    LEAF_RUNNERS,
    StepRuntime,
    StepServices,
    convert_inputs,
    error_info,
    retryable,
)

log = logging.getLogger("sidecar.workflows")

TERMINAL = frozenset({"succeeded", "failed", "recovered", "skipped", "cancelled"})
DONE_OK = frozenset({"succeeded", "failed", "recovered", "skipped"})  # dependents may be decided


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


# --- the journal: group commit ------------------------------------------------------------------

class Journal:
    """Writes queued by `add` go to the database in batches, one transaction per batch, from
    one writer task; `commit()` waits until everything added so far is committed."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._ops: list[tuple[str, tuple[Any, ...]]] = []
        self._added = 0
        self._done = 0
        self._waiters: list[tuple[int, anyio.Event]] = []
        self._wake: anyio.Event | None = None
        self._running = False
        self.batches = 0

    def add(self, sql: str, params: tuple[Any, ...]) -> None:
        self._ops.append((sql, params))
        self._added += 1
        if self._wake is not None:
            self._wake.set()

    async def commit(self) -> None:
        target = self._added
        if self._done >= target:
            return
        if not self._running:
            await self.flush_now()
            return
        event = anyio.Event()
        self._waiters.append((target, event))
        assert self._wake is not None
        self._wake.set()
        await event.wait()

    async def flush_now(self) -> None:
        """Write what is queued here and now (after the writer task has stopped)."""
        while self._ops:
            await self._write_batch()

    async def _write_batch(self) -> None:
        ops, self._ops = self._ops, []

        def work(conn: Any) -> None:
            for sql, params in ops:
                conn.execute(sql, params)

        try:
            await self.db.write(work)
        except anyio.get_cancelled_exc_class():
            # cancelled before the write began (a started write is shielded): keep the batch
            self._ops = ops + self._ops
            raise
        except Exception:
            log.exception("workflow journal: a batch of %d writes failed", len(ops))
        self.batches += 1
        self._done += len(ops)
        still: list[tuple[int, anyio.Event]] = []
        for target, event in self._waiters:
            if target <= self._done:
                event.set()
            else:
                still.append((target, event))
        self._waiters = still

    async def run(self) -> None:
        self._wake = anyio.Event()
        self._running = True
        try:
            while True:
                await self._wake.wait()
                self._wake = anyio.Event()
                while self._ops:
                    await self._write_batch()
        finally:
            self._running = False


# --- step state ------------------------------------------------------------------------------------

@dataclass(slots=True)
class StepState:
    status: str = "pending"
    attempts: int = 0
    output: Any = None
    error: dict[str, Any] | None = None
    started_at: str | None = None
    finished_at: str | None = None
    started: float | None = None  # monotonic
    duration_ms: float | None = None
    recovered_by: str | None = None

    def view(self) -> dict[str, Any]:
        return {"output": self.output, "status": self.status, "error": self.error, "attempts": self.attempts}


class StepsView(Mapping[str, Any]):
    """`steps.<id>` in templates: each step's output, status, error and attempts."""

    __slots__ = ("_states",)

    def __init__(self, states: dict[str, StepState]) -> None:
        self._states = states

    def __getitem__(self, key: str) -> Any:
        return self._states[key].view()

    def __iter__(self) -> Iterator[str]:
        return iter(self._states)

    def __len__(self) -> int:
        return len(self._states)


class Recorder(Protocol):
    def emit(self, type: str, step_id: str | None = None, **payload: Any) -> None: ...
    def step_changed(self, step_id: str, state: StepState, idempotency_key: str) -> None: ...
    async def durable(self) -> None: ...


class RunAborted(Exception):
    def __init__(self, step_id: str, error: dict[str, Any]) -> None:
        super().__init__(f"step {step_id} failed")
        self.step_id = step_id
        self.error = error


@dataclass(slots=True)
class RunContext:
    """What every step of one run (nested graphs included) shares."""

    run_id: str
    workflow_id: str
    engine: Engine
    limiter: anyio.CapacityLimiter
    depth: int = 0
    #: nested steps (loop items' bodies, called workflows' steps) that finished before a crash
    #: or a failure, by their prefixed id (`each[3].fetch`, `call.x`): taken once, when their
    #: graph runs again
    recovered: dict[str, StepState] = field(default_factory=dict)


# --- the graph runner ------------------------------------------------------------------------------

class GraphRunner:
    """Runs one graph (a workflow's steps, a loop body for one item, a called workflow) to
    its end. Raises RunAborted when a step fails with onError abort."""

    def __init__(self, ctx: RunContext, graph: document.Graph, scope: Mapping[str, Any],
                 states: dict[str, StepState], recorder: Recorder, prefix: str = "") -> None:
        self.ctx = ctx
        self.graph = graph
        self.states = states
        self.recorder = recorder
        self.prefix = prefix
        self.scope = scope
        self.remaining: dict[str, int] = {}
        self.armed: set[str] = set()
        self.failure: RunAborted | None = None
        self._tg: TaskGroup | None = None

    async def run(self) -> None:
        graph = self.graph
        if self.prefix and self.ctx.recovered:
            for sid in graph.steps:
                done = self.ctx.recovered.pop(self.prefix + sid, None)
                if done is not None:
                    self.states.setdefault(sid, done)
        for sid in graph.steps:
            self.states.setdefault(sid, StepState())
        for sid, deps in graph.deps.items():
            self.remaining[sid] = sum(1 for d in deps if self.states[d].status not in DONE_OK)
        async with anyio.create_task_group() as tg:
            self._tg = tg
            for sid in [s for s in graph.steps if self.states[s].status not in TERMINAL and self.remaining[s] == 0]:
                self._decide(sid)
        if self.failure is not None:
            raise self.failure
        for sid, state in self.states.items():
            if state.status == "pending" and sid in graph.steps:
                reason = "its step did not fail" if sid in graph.fallbacks else "never became ready"
                self._skip(sid, reason, cascade=False)

    # decisions

    def _decide(self, sid: str) -> None:
        step = self.graph.steps[sid]
        state = self.states[sid]
        if state.status in TERMINAL or state.status == "running":
            return
        if sid in self.graph.fallbacks and sid not in self.armed:
            return  # runs only if its step fails
        for dep in self.graph.deps[sid]:
            if self.states[dep].status == "skipped" and step.if_ is None:
                self._skip(sid, f"{dep} was skipped")
                return
        for cond, branch in self.graph.branches.get(sid, ()):
            out = self.states[cond].output
            taken = out.get("branch") if isinstance(out, dict) else None
            if taken != branch:
                self._skip(sid, f"condition {cond} took the {taken or 'no'} branch")
                return
        if step.if_ is not None:
            try:
                ok = expr.truthy(expr.evaluate(step.if_, self._data(sid, 0)))
            except expr.ExprError as exc:
                self._fail_now(sid, {"kind": "invalid_params", "message": f"if: {exc}"})
                return
            if not ok:
                self._skip(sid, "its if was false")
                return
        state.status = "running"
        assert self._tg is not None
        self._tg.start_soon(self._run_step, sid, name=f"workflow step {self.prefix}{sid}")

    def _skip(self, sid: str, reason: str, cascade: bool = True) -> None:
        state = self.states[sid]
        state.status = "skipped"
        state.finished_at = now_iso()
        self._changed(sid)
        self.recorder.emit("step.skipped", self.prefix + sid, reason=reason)
        if cascade:
            self._finished(sid)

    def _finished(self, sid: str) -> None:
        on_error = self.graph.steps[sid].onError
        if isinstance(on_error, w.Fallback) and on_error.fallback not in self.armed \
                and self.states[on_error.fallback].status == "pending":
            self._skip(on_error.fallback, f"{sid} did not fail")
        primary = self.graph.fallbacks.get(sid)
        if primary is not None and sid in self.armed:
            pstate = self.states[primary]
            fstate = self.states[sid]
            if fstate.status == "succeeded":
                pstate.status = "recovered"
                pstate.output = fstate.output
                pstate.recovered_by = sid
                self._changed(primary)
            self._finished(primary)
        for dependent in self.graph.dependents[sid]:
            self.remaining[dependent] -= 1
            if self.remaining[dependent] == 0:
                self._decide(dependent)

    def _fail_now(self, sid: str, error: dict[str, Any]) -> None:
        state = self.states[sid]
        state.status = "failed"
        state.error = error
        state.finished_at = now_iso()
        self._changed(sid)
        self.recorder.emit("step.failed", self.prefix + sid, error=error, attempt=state.attempts)
        self._after_failure(sid, error)

    def _after_failure(self, sid: str, error: dict[str, Any]) -> None:
        step = self.graph.steps[sid]
        if isinstance(step.onError, w.Fallback):
            fb = step.onError.fallback
            self.armed.add(fb)
            if self.remaining.get(fb, 0) == 0:
                self._decide(fb)
            return
        if step.onError == "continue":
            self._finished(sid)
            return
        if self.failure is None:
            self.failure = RunAborted(self.prefix + sid, error)
        assert self._tg is not None
        self._tg.cancel_scope.cancel()

    # running one step

    def _key(self, sid: str) -> str:
        return f"{self.ctx.run_id}:{self.prefix}{sid}"

    def _changed(self, sid: str) -> None:
        self.recorder.step_changed(self.prefix + sid, self.states[sid], self._key(sid))

    def _data(self, sid: str, attempt: int) -> Mapping[str, Any]:
        return ChainMap({"step": {"id": sid, "attempt": attempt, "idempotencyKey": self._key(sid)}}, self.scope)

    async def _run_step(self, sid: str) -> None:
        step = self.graph.steps[sid]
        state = self.states[sid]
        policy = step.retry or _NO_RETRY
        attempt = max(1, state.attempts)  # a resumed step redoes the attempt a crash cut short
        try:
            while True:
                state.status = "running"
                state.attempts = attempt
                state.error = None
                state.started_at = now_iso()
                state.started = time.perf_counter()
                self._changed(sid)
                self.recorder.emit("step.started", self.prefix + sid, attempt=attempt)
                try:
                    if step.timeoutMs is not None:
                        with anyio.fail_after(step.timeoutMs / 1000):
                            output = await self._execute(step, attempt)
                    else:
                        output = await self._execute(step, attempt)
                except Exception as exc:
                    error = error_info(exc)
                    if isinstance(exc, TimeoutError):
                        error = {"kind": "timeout", "message": f"the step took longer than {step.timeoutMs} ms"}
                    if attempt < policy.maxAttempts and retryable(exc):
                        delay = backoff_ms(policy, attempt)
                        self.recorder.emit("step.retrying", self.prefix + sid, attempt=attempt, error=error,
                                           delayMs=int(delay))
                        await anyio.sleep(delay / 1000)
                        attempt += 1
                        continue
                    state.duration_ms = (time.perf_counter() - state.started) * 1000
                    self._fail_now(sid, error)
                    return
                state.status = "succeeded"
                state.output = output
                state.finished_at = now_iso()
                state.duration_ms = (time.perf_counter() - state.started) * 1000
                self._changed(sid)
                self.recorder.emit("step.succeeded", self.prefix + sid, attempt=attempt, output=output)
                with anyio.CancelScope(shield=True):
                    await self.recorder.durable()
                self._finished(sid)
                return
        except anyio.get_cancelled_exc_class():
            if not self.ctx.engine.shutting_down:
                state.status = "cancelled"
                state.finished_at = now_iso()
                self._changed(sid)
                self.recorder.emit("step.cancelled", self.prefix + sid, attempt=attempt)
            raise

    async def _execute(self, step: w.Step, attempt: int) -> Any:
        data = self._data(step.id, attempt)
        inputs = expr.render(step.inputs, data) if step.inputs else {}
        rt = StepRuntime(run_id=self.ctx.run_id, workflow_id=self.ctx.workflow_id, step_id=self.prefix + step.id,
                         attempt=attempt, idempotency_key=self._key(step.id), depth=self.ctx.depth)
        if step.kind in CONTROL_KINDS:
            return await self._control(step, inputs, data, rt)
        params = convert_inputs(step.kind, inputs)
        if KINDS[step.kind].streaming:
            prefixed = self.prefix + step.id

            async def chunk(text: str) -> None:
                self.recorder.emit("step.chunk", prefixed, text=text)

            rt.chunk = chunk
        async with self.ctx.limiter:
            return await LEAF_RUNNERS[step.kind](params, rt, self.ctx.engine.services)

    async def _control(self, step: w.Step, inputs: dict[str, Any], data: Mapping[str, Any], rt: StepRuntime) -> Any:
        params = convert_inputs(step.kind, inputs)
        if isinstance(params, w.ConditionInputs):
            try:
                result = expr.truthy(expr.evaluate(params.expr, data))
            except expr.ExprError as exc:
                raise InvalidValue(f"condition {step.id}: {exc}", "$.inputs.expr") from None
            return {"result": result, "branch": "then" if result else "else"}
        if isinstance(params, w.LoopInputs):
            return await self._loop(step, params, data)
        assert isinstance(params, w.WorkflowCallInputs)
        return await self.ctx.engine.call_workflow(self.ctx, params, f"{self.prefix}{step.id}.", self.recorder)

    async def _loop(self, step: w.Step, params: w.LoopInputs, data: Mapping[str, Any]) -> Any:
        items = params.items
        if not isinstance(items, list):
            raise InvalidValue(f"loop {step.id}: items must be a list, not {type(items).__name__}", "$.inputs.items")
        if len(items) > params.maxItems:
            raise InvalidValue(f"loop {step.id}: {len(items)} items, more than maxItems {params.maxItems}",
                               "$.inputs.items")
        assert step.body is not None
        body = self.graph.bodies[step.id]
        results: list[Any] = [None] * len(items)
        limiter = anyio.CapacityLimiter(params.parallelism)
        last = step.body.steps[-1].id

        async def one(index: int, item: Any) -> None:
            async with limiter:
                states: dict[str, StepState] = {}
                scope = ChainMap({"loop": {"item": item, "index": index},
                                  "steps": ChainMap(StepsView(states), self.scope["steps"])}, self.scope)
                runner = GraphRunner(self.ctx, body, scope, states, self.recorder,
                                     prefix=f"{self.prefix}{step.id}[{index}].")
                await runner.run()
                if step.body is not None and step.body.output is not None:
                    results[index] = expr.render(step.body.output, scope)
                else:
                    results[index] = states[last].output

        async with anyio.create_task_group() as tg:
            for index, item in enumerate(items):
                tg.start_soon(one, index, item)
        return {"results": results, "count": len(results)}


_NO_RETRY = w.RetryPolicy()


def backoff_ms(policy: w.RetryPolicy, attempt: int) -> float:
    """The wait after failed attempt `attempt` (1-based): exponential, capped, with jitter."""
    base = min(policy.maxDelay, policy.backoff * policy.factor ** (attempt - 1))
    return base * random.uniform(1.0 - policy.jitter, 1.0)


# --- recorders ------------------------------------------------------------------------------------

EventSink = Callable[[w.WorkflowEvent], None]
BusPublish = Callable[[str, dict[str, Any]], Any]


class RunRecorder:
    """A top-level run's journal: run_events, step_runs, the bus, and live listeners."""

    def __init__(self, run: Run, journal: Journal | None, publish: BusPublish | None, seq: int = 0) -> None:
        self.run = run
        self.journal = journal
        self.publish = publish
        self.seq = seq

    def emit(self, type: str, step_id: str | None = None, **payload: Any) -> None:
        self.seq += 1
        at = now_iso()
        if self.journal is not None:
            self.journal.add(sql.INSERT_EVENT, (self.run.id, self.seq, type, step_id, dumps(payload), at))
        if self.publish is not None and type != "step.chunk":
            self.publish(f"workflow.{type}", {"runId": self.run.id, "workflowId": self.run.workflow_id,
                                              "stepId": step_id, "seq": self.seq, **_small(payload)})
        if self.run.listeners:
            event = w.WorkflowEvent(type=type, runId=self.run.id, runSeq=self.seq, stepId=step_id, **payload)
            for sink in list(self.run.listeners):
                sink(event)

    def step_changed(self, step_id: str, state: StepState, idempotency_key: str) -> None:
        if self.journal is None:
            return
        self.journal.add(
            sql.UPSERT_STEP,
            (self.run.id, step_id, state.status, state.attempts,
             None if state.output is None else dumps(state.output),
             None if state.error is None else dumps(state.error), state.started_at,
             state.finished_at if state.status in TERMINAL else None, state.duration_ms, idempotency_key))

    async def durable(self) -> None:
        if self.journal is not None:
            await self.journal.commit()


def _small(payload: dict[str, Any]) -> dict[str, Any]:
    """Bus events carry what happened, not whole outputs (those are in the run's log)."""
    return {k: v for k, v in payload.items() if k != "output"}


# --- runs -----------------------------------------------------------------------------------------

@dataclass(eq=False)
class Run:
    id: str
    workflow: w.Workflow
    inputs: dict[str, Any]
    workflow_id: str
    states: dict[str, StepState] = field(default_factory=dict)
    #: nested steps recorded before a restart or a resume (see RunContext.recovered)
    recovered: dict[str, StepState] = field(default_factory=dict)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    done: anyio.Event = field(default_factory=anyio.Event)
    listeners: list[EventSink] = field(default_factory=list)
    status: str = "running"
    outputs: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    cancel_requested: bool = False
    seq: int = 0

    def cancel(self) -> bool:
        if self.done.is_set():
            return False
        self.cancel_requested = True
        self.scope.cancel()
        return True

    def result(self) -> w.RunResult:
        return w.RunResult(runId=self.id, status=self.status, outputs=self.outputs, error=self.error)


WorkflowLoader = Callable[[str], Awaitable[w.Workflow]]


class Engine:
    def __init__(self, db: Database | None, services: StepServices, *, loader: WorkflowLoader | None = None,
                 publish: BusPublish | None = None, max_parallel: Callable[[], int] = lambda: 8,
                 max_depth: Callable[[], int] = lambda: 5) -> None:
        self.journal = Journal(db) if db is not None else None
        self.services = services
        self.loader = loader
        self.publish = publish
        self.max_parallel = max_parallel
        self.max_depth = max_depth
        self.runs: dict[str, Run] = {}
        self.shutting_down = False
        self._tg: TaskGroup | None = None
        self._serve_scope: anyio.CancelScope | None = None

    # lifecycle

    async def serve(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Own the runs' task group (and the journal writer) until cancelled. Runs still going
        when it is cancelled stay `running` in the store, to be resumed at the next start."""
        self._serve_scope = anyio.CancelScope()
        try:
            with self._serve_scope:
                async with anyio.create_task_group() as outer:
                    if self.journal is not None:
                        outer.start_soon(self.journal.run)
                    try:
                        async with anyio.create_task_group() as tg:
                            self._tg = tg
                            task_status.started()
                            await anyio.sleep_forever()
                    finally:
                        self.shutting_down = True
                        self._tg = None
                        outer.cancel_scope.cancel()
        finally:
            if self.journal is not None:
                with anyio.CancelScope(shield=True):
                    await self.journal.flush_now()
            with anyio.CancelScope(shield=True):
                await self.services.aclose()

    def stop(self) -> None:
        """Stop serving: running runs are left `running` in the store (resumed at the next
        start), not recorded as cancelled."""
        self.shutting_down = True
        if self._serve_scope is not None:
            self._serve_scope.cancel()

    def launch(self, run: Run, graph: document.Graph, recorder: RunRecorder) -> None:
        if self._tg is None:
            raise RuntimeError("the workflow engine is not running")
        self.runs[run.id] = run
        self._tg.start_soon(self._execute, run, graph, recorder, name=f"workflow run {run.id}")

    async def _execute(self, run: Run, graph: document.Graph, recorder: RunRecorder) -> None:
        ctx = RunContext(run.id, run.workflow_id, self, anyio.CapacityLimiter(max(1, self.max_parallel())),
                         recovered=run.recovered)
        scope = {"inputs": run.inputs, "steps": StepsView(run.states),
                 "run": {"id": run.id, "workflowId": run.workflow_id}}
        runner = GraphRunner(ctx, graph, scope, run.states, recorder)
        try:
            with run.scope:
                recorder.emit("run.started", None, workflowId=run.workflow_id)
                try:
                    await runner.run()
                    run.outputs = _render_outputs(run.workflow, scope)
                    run.status = "succeeded"
                except RunAborted as exc:
                    run.status = "failed"
                    run.error = {"stepId": exc.step_id, **exc.error}
                except expr.ExprError as exc:
                    run.status = "failed"
                    run.error = {"kind": "invalid_params", "message": f"outputs: {exc}"}
                except Exception as exc:  # a bug: the run fails, the daemon goes on
                    log.exception("workflow run %s failed unexpectedly", run.id)
                    run.status = "failed"
                    run.error = error_info(exc)
            if run.scope.cancelled_caught or run.cancel_requested:
                if run.status == "running" or run.cancel_requested:
                    run.status = "cancelled"
                    run.error = None
                    run.outputs = {}
        finally:
            if self.shutting_down and run.status == "running":
                # left as running: resumed at the next start
                self.runs.pop(run.id, None)
                run.done.set()
            else:
                with anyio.CancelScope(shield=True):
                    await self._finish(run, recorder)

    async def _finish(self, run: Run, recorder: RunRecorder) -> None:
        if self.journal is not None:
            self.journal.add(sql.FINISH_RUN, (run.status, dumps(run.outputs) if run.status == "succeeded" else None,
                                              None if run.error is None else dumps(run.error), now_iso(), run.id))
        recorder.emit("run.finished", None, status=run.status, output=run.outputs or None, error=run.error)
        if self.journal is not None:
            await self.journal.commit()
        self.runs.pop(run.id, None)
        run.done.set()

    # nested workflows

    async def call_workflow(self, ctx: RunContext, params: w.WorkflowCallInputs, prefix: str,
                            recorder: Recorder) -> Any:
        if self.loader is None:
            raise NotFound("no saved workflows to call here")
        if ctx.depth + 1 > self.max_depth():
            raise InvalidValue(f"workflow calls nest at most {self.max_depth()} deep", "$.inputs.workflow")
        wf = await self.loader(params.workflow)
        document.check(wf, "$.inputs.workflow")
        inputs = document.apply_inputs(wf, params.inputs, "$.inputs.inputs")
        states: dict[str, StepState] = {}
        scope = {"inputs": inputs, "steps": StepsView(states), "run": {"id": ctx.run_id, "workflowId": wf.id}}
        child = RunContext(ctx.run_id, wf.id, self, ctx.limiter, ctx.depth + 1, ctx.recovered)
        runner = GraphRunner(child, document.build_graph(wf.steps), scope, states, recorder, prefix)
        try:
            await runner.run()
        except RunAborted as exc:
            raise SidecarError(f"the called workflow {wf.id} failed at step {exc.step_id}: "
                               f"{exc.error.get('message', '')}") from None
        return {"outputs": _render_outputs(wf, scope)}


def _render_outputs(wf: w.Workflow, scope: Mapping[str, Any]) -> dict[str, Any]:
    return {name: expr.render(value, scope) for name, value in wf.outputs.items()}


def new_run_id() -> str:
    return uuid.uuid4().hex


def decode_json(text: str | None) -> Any:
    return None if text is None else msgspec.json.decode(text)
