"""WorkflowService: saved workflow documents, runs (start, run, cancel, resume), their
history and event logs, and the block palette. Knows nothing of JSON-RPC.

Runs execute in the engine's task group, which the capability's lifespan owns (not in the
task of the request that started them). `run_workflow` waits for the run and streams its
events to a sink; if its caller is cancelled, the run is cancelled too. `start` returns at
once and the run goes on on its own. At start-up (`running()`), runs the store still marks
as running (the daemon died under them) are resumed.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import msgspec

from protocol import workflows as w
from sidecar.errors import Conflict, InvalidValue, NotFound, SidecarError
from sidecar.store.database import Database
from sidecar.workflows import document, steps
from sidecar.workflows import store as sql
from sidecar.workflows.engine import (
    BusPublish,
    Engine,
    EventSink,
    Run,
    RunRecorder,
    StepState,
    decode_json,
    dumps,
    new_run_id,
    now_iso,
)
from sidecar.workflows.store import RunRow, WorkflowRow, WorkflowStore

log = logging.getLogger("sidecar.workflows")

DEFAULTS: dict[str, int] = {"workflows.maxParallelSteps": 8, "workflows.maxDepth": 5}


class WorkflowService:
    def __init__(self, db: Database, services: steps.StepServices, *, publish: BusPublish | None = None,
                 setting: Callable[[str], Any] = DEFAULTS.__getitem__) -> None:
        self.store = WorkflowStore(db)
        self.services = services
        self.engine = Engine(db, services, loader=self._load_saved, publish=publish,
                             max_parallel=lambda: int(setting("workflows.maxParallelSteps")),
                             max_depth=lambda: int(setting("workflows.maxDepth")))

    # ---- lifecycle ------------------------------------------------------------------------------

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The engine serves for the life of the block; runs left running by a crash resume."""
        async with anyio.create_task_group() as tg:
            await tg.start(self.engine.serve)
            try:
                await self._resume_interrupted()
                yield
            finally:
                self.engine.stop()

    async def _resume_interrupted(self) -> None:
        for row in await self.store.running():
            if row.id in self.engine.runs:
                continue
            try:
                await self._relaunch(row, interrupted=True)
                log.info("resumed workflow run %s (%s) after a restart", row.id, row.workflow_id or "inline")
            except Exception:
                log.exception("cannot resume workflow run %s", row.id)

    # ---- documents ------------------------------------------------------------------------------

    async def create(self, raw: Mapping[str, Any] | str) -> w.WorkflowInfo:
        wf = document.load(raw)
        if not wf.id:
            raise InvalidValue("a saved workflow needs an id", "$.params.workflow.id")
        document.check(wf)
        row = await self.store.insert(wf.id, wf.name or wf.id, _encode(wf))
        if row is None:
            raise Conflict(f"a workflow {wf.id} exists already (workflows/update replaces it)", id=wf.id)
        return _info(row)

    async def get(self, wf_id: str) -> w.WorkflowInfo:
        return _info(await self._row(wf_id))

    async def list(self) -> w.WorkflowList:
        out: list[w.WorkflowSummary] = []
        for row in await self.store.all():
            wf = _decode(row.document)
            out.append(w.WorkflowSummary(id=row.id, name=row.name, description=wf.description, steps=len(wf.steps),
                                         version=row.version, updatedAt=row.updated_at, tags=wf.tags))
        return w.WorkflowList(out)

    async def update(self, wf_id: str, raw: Mapping[str, Any] | str) -> w.WorkflowInfo:
        wf = document.load(raw)
        if wf.id and wf.id != wf_id:
            raise InvalidValue(f"the document's id {wf.id} is not {wf_id} (duplicate it to change the id)",
                               "$.params.workflow.id")
        wf.id = wf_id
        document.check(wf)
        row = await self.store.replace(wf_id, wf.name or wf_id, _encode(wf))
        if row is None:
            raise NotFound(f"no workflow {wf_id}", id=wf_id)
        return _info(row)

    async def delete(self, wf_id: str) -> bool:
        return await self.store.delete(wf_id)

    async def duplicate(self, wf_id: str, new_id: str | None = None, name: str | None = None) -> w.WorkflowInfo:
        source = _decode((await self._row(wf_id)).document)
        taken = {row.id for row in await self.store.all()}
        if new_id is None:
            n = 2
            while f"{wf_id}-copy{'' if n == 2 else n - 1}" in taken:
                n += 1
            new_id = f"{wf_id}-copy{'' if n == 2 else n - 1}"
        copy = msgspec.structs.replace(source, id=new_id, name=name or f"{source.name or wf_id} (copy)")
        row = await self.store.insert(new_id, copy.name, _encode(copy))
        if row is None:
            raise Conflict(f"a workflow {new_id} exists already", id=new_id)
        return _info(row)

    def validate(self, raw: Mapping[str, Any] | str) -> w.ValidateResult:
        try:
            wf = document.load(raw)
        except InvalidValue as exc:
            return w.ValidateResult(False, [w.ValidationProblem(message=exc.message, path="$" + exc.path[17:])])
        problems = document.validate(wf)
        return w.ValidateResult(not problems, problems)

    async def _row(self, wf_id: str) -> WorkflowRow:
        row = await self.store.get(wf_id)
        if row is None:
            raise NotFound(f"no workflow {wf_id}", id=wf_id)
        return row

    async def _load_saved(self, wf_id: str) -> w.Workflow:
        return _decode((await self._row(wf_id)).document)

    # ---- runs -------------------------------------------------------------------------------------

    async def start(self, wf_id: str | None = None, inputs: Mapping[str, Any] | None = None, *,
                    workflow: Mapping[str, Any] | str | None = None, sink: EventSink | None = None) -> Run:
        """Validate, record and launch a run; it goes on in the engine's task group."""
        if (wf_id is None) == (workflow is None):
            raise InvalidValue("give either id (a saved workflow) or workflow (a document)", "$.params.id")
        if workflow is not None:
            wf = document.load(workflow)
            document.check(wf)
            saved_id = wf.id  # may be '' for a document without an id
        else:
            assert wf_id is not None
            wf = await self._load_saved(wf_id)
            saved_id = wf_id
        run_inputs = document.apply_inputs(wf, inputs or {})
        run = Run(id=new_run_id(), workflow=wf, inputs=run_inputs, workflow_id=saved_id or wf.id)
        if sink is not None:
            run.listeners.append(sink)
        journal = self.engine.journal
        assert journal is not None
        at = now_iso()
        journal.add(sql.INSERT_RUN, (run.id, saved_id, _encode(wf), dumps(run_inputs), None, at, at))
        await journal.commit()
        self.engine.launch(run, document.build_graph(wf.steps), RunRecorder(run, journal, self.engine.publish))
        return run

    async def run_workflow(self, wf_id: str | None = None, inputs: Mapping[str, Any] | None = None, *,
                           workflow: Mapping[str, Any] | str | None = None,
                           sink: EventSink | None = None) -> w.RunResult:
        """Start a run and wait for its end; cancelling the caller cancels the run."""
        run = await self.start(wf_id, inputs, workflow=workflow, sink=sink)
        return await self.wait(run)

    async def run(self, wf_id: str, inputs: Mapping[str, Any] | None = None) -> w.RunResult:
        """For other capabilities (the scheduler): run a saved workflow; a run that does not
        succeed raises."""
        result = await self.run_workflow(wf_id, inputs)
        if result.status != "succeeded":
            message = (result.error or {}).get("message", result.status)
            raise SidecarError(f"workflow {wf_id} {result.status}: {message}", runId=result.runId)
        return result

    async def wait(self, run: Run) -> w.RunResult:
        try:
            await run.done.wait()
        except BaseException:
            run.cancel()
            with anyio.CancelScope(shield=True):
                with anyio.move_on_after(10):
                    await run.done.wait()
            raise
        return run.result()

    async def cancel(self, run_id: str) -> bool:
        run = self.engine.runs.get(run_id)
        if run is None:
            if await self.store.run(run_id) is None:
                raise NotFound(f"no run {run_id}", runId=run_id)
            return False
        cancelled = run.cancel()
        await run.done.wait()
        return cancelled

    async def resume(self, run_id: str, sink: EventSink | None = None) -> Run:
        """A failed or cancelled run, again from where it stopped: steps that succeeded keep
        their outputs; the others run again."""
        if run_id in self.engine.runs:
            raise Conflict(f"run {run_id} is still running", runId=run_id)
        row = await self.store.run(run_id)
        if row is None:
            raise NotFound(f"no run {run_id}", runId=run_id)
        if row.status == "succeeded":
            raise Conflict(f"run {run_id} succeeded: there is nothing to resume", runId=run_id)
        await self.store.reopen(run_id)
        return await self._relaunch(row, interrupted=False, sink=sink)

    async def _relaunch(self, row: RunRow, *, interrupted: bool, sink: EventSink | None = None) -> Run:
        wf = _decode(row.document)
        run = Run(id=row.id, workflow=wf, inputs=decode_json(row.inputs) or {}, workflow_id=row.workflow_id or wf.id)
        if sink is not None:
            run.listeners.append(sink)
        keep = {"succeeded", "recovered", "skipped", "failed"} if interrupted else {"succeeded", "recovered"}
        known = {s.id for s in wf.steps}
        rows = await self.store.steps(row.id)
        nested = []
        for step in rows:
            if step.step_id not in known:
                nested.append(step)
                continue
            state = StepState(attempts=step.attempts, started_at=step.started_at)
            if step.status in keep:
                state.status = step.status
                state.output = decode_json(step.output)
                state.error = decode_json(step.error)
                state.finished_at = step.finished_at
                state.duration_ms = step.duration_ms
            run.states[step.step_id] = state
        for step in nested:  # inside loops and calls: what succeeded is not run again
            top = _top_step(step.step_id)
            if step.status in ("succeeded", "recovered") and top in known and run.states.get(top, _PENDING).status \
                    not in ("succeeded", "recovered", "skipped"):
                run.recovered[step.step_id] = StepState(
                    status=step.status, attempts=step.attempts, output=decode_json(step.output),
                    started_at=step.started_at, finished_at=step.finished_at, duration_ms=step.duration_ms)
        recorder = RunRecorder(run, self.engine.journal, self.engine.publish, seq=await self.store.last_seq(row.id))
        recorder.emit("run.resumed", None, reason="restart" if interrupted else "resume",
                      completed=sorted(s for s, st in run.states.items() if st.status in ("succeeded", "recovered")))
        self.engine.launch(run, document.build_graph(wf.steps), recorder)
        return run

    # ---- history ----------------------------------------------------------------------------------

    async def runs(self, workflow_id: str | None = None, status: str | None = None, limit: int = 100) -> w.RunList:
        await self._settle()
        return w.RunList([_summary(r) for r in await self.store.runs(workflow_id, status, limit)])

    async def run_detail(self, run_id: str) -> w.RunDetail:
        await self._settle()
        row = await self.store.run(run_id)
        if row is None:
            raise NotFound(f"no run {run_id}", runId=run_id)
        wf = _decode(row.document)
        rows = {s.step_id: s for s in await self.store.steps(run_id)}
        out: list[w.StepRunInfo] = []
        for step in wf.steps:
            s = rows.get(step.id)
            if s is None:
                out.append(w.StepRunInfo(stepId=step.id, status="pending"))
                continue
            out.append(w.StepRunInfo(stepId=s.step_id, status=s.status, attempts=s.attempts,
                                     output=decode_json(s.output), error=decode_json(s.error),
                                     startedAt=s.started_at, finishedAt=s.finished_at, durationMs=s.duration_ms,
                                     idempotencyKey=s.idempotency_key))
        return w.RunDetail(run=_summary(row), inputs=decode_json(row.inputs) or {}, outputs=decode_json(row.outputs),
                           steps=out)

    async def events(self, run_id: str, after: int = 0, limit: int = 1000) -> w.EventsResult:
        await self._settle()
        if await self.store.run(run_id) is None:
            raise NotFound(f"no run {run_id}", runId=run_id)
        return w.EventsResult([w.RunEventInfo(seq=e.seq, type=e.type, time=e.time, stepId=e.step_id,
                                              payload=decode_json(e.payload) or {})
                               for e in await self.store.events(run_id, after, limit)])

    async def _settle(self) -> None:
        """What the journal holds is committed, so reads see every event so far."""
        if self.engine.journal is not None:
            await self.engine.journal.commit()

    # ---- blocks -----------------------------------------------------------------------------------

    def blocks(self, category: str | None = None, query: str | None = None) -> w.BlocksResult:
        out = []
        q = (query or "").lower()
        for block in steps.descriptors(lambda kind: kind != "llm" or self.services.chat is not None):
            if category and block.category != category:
                continue
            if q and q not in f"{block.id} {block.label} {block.description}".lower():
                continue
            out.append(block)
        return w.BlocksResult(out)

    async def run_block(self, kind: str, inputs: Mapping[str, Any], sink: EventSink | None = None) -> w.BlockRunResult:
        """One step alone, as a one-step inline run (journalled like any run)."""
        if kind not in steps.KINDS:
            raise InvalidValue(f"unknown kind {kind!r}; known: {', '.join(steps.KINDS)}", "$.params.kind")
        doc = {"id": f"block-{kind}", "name": f"test {kind}", "steps": [{"id": "block", "kind": kind,
                                                                       "inputs": dict(inputs)}],
               "outputs": {"output": "{{steps.block.output}}"}}
        try:
            run = await self.start(workflow=doc, sink=sink)
        except InvalidValue as exc:
            raise InvalidValue(exc.message, "$.params" + exc.path[len("$.params.workflow.steps[0]"):]
                               if exc.path.startswith("$.params.workflow.steps[0]") else exc.path) from None
        result = await self.wait(run)
        if result.status != "succeeded":
            error = result.error or {}
            raise SidecarError(f"the {kind} block failed: {error.get('message', result.status)}", runId=run.id,
                               error=error)
        return w.BlockRunResult(result.outputs.get("output"))


_PENDING = StepState()


def _top_step(nested_id: str) -> str:
    """The top-level step a nested step id belongs to: `each[3].fetch` -> `each`."""
    return nested_id.split(".", 1)[0].split("[", 1)[0]


def default_file_root(data_dir: Path) -> Path:
    return data_dir / "workflow-files"


def _encode(wf: w.Workflow) -> str:
    return msgspec.json.encode(wf).decode()


def _decode(text: str) -> w.Workflow:
    return msgspec.json.decode(text, type=w.Workflow)


def _info(row: WorkflowRow) -> w.WorkflowInfo:
    return w.WorkflowInfo(workflow=_decode(row.document), version=row.version, createdAt=row.created_at,
                          updatedAt=row.updated_at)


def _summary(row: RunRow) -> w.RunSummary:
    return w.RunSummary(runId=row.id, workflowId=row.workflow_id, status=row.status, createdAt=row.created_at,
                        startedAt=row.started_at, finishedAt=row.finished_at, error=decode_json(row.error),
                        parentRunId=row.parent_run_id)
