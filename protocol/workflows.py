"""workflows/*: workflows ("recipes") as data — DAGs of system, tool and LLM steps — and
their durable runs.

A workflow is a JSON (or YAML) document: `id`, `name`, `description`, typed `inputs` with
defaults, `steps` and `outputs`. A step has `id`, `kind`, `inputs` (any JSON; strings may
hold `{{ ... }}` templates), `needs`, and optionally `if`, `retry`, `timeoutMs`, `onError`.
Templates and `if`/`condition` expressions use a small safe language (paths such as
`inputs.x` or `steps.fetch.output.body`, comparisons, `and`/`or`/`not`, `in`, `len(...)`);
nothing is ever `eval`ed. The format is described in `workflows/examples/README.md`.

The per-kind input and output Structs below are the contract of each step kind: the block
descriptors of `workflows/blocks` are generated from them (titles are input labels).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from protocol.common import Empty
from protocol.spec import MethodSpec, NotificationSpec
from protocol.streaming import StreamEvent

WorkflowId = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*\Z")]
StepId = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_-]*\Z")]
RunId = Annotated[str, Meta(min_length=1, max_length=64)]
InputType = Literal["string", "number", "integer", "boolean", "object", "array", "any"]


# --- the document ---------------------------------------------------------------------------

class InputDef(msgspec.Struct, omit_defaults=True):
    """One workflow input: its type, whether it must be given, its default."""

    type: InputType = "any"
    required: bool = False
    default: Any = None
    description: str = ""
    enum: list[Any] | None = None


class RetryPolicy(msgspec.Struct, omit_defaults=True):
    """Attempts in all (1: no retry); the wait before retry n is `backoff * factor**(n-1)` ms,
    at most `maxDelay`, times a random factor in [1 - jitter, 1]."""

    maxAttempts: Annotated[int, Meta(ge=1, le=100)] = 1
    backoff: Annotated[int, Meta(ge=0, le=3_600_000)] = 500
    maxDelay: Annotated[int, Meta(ge=0, le=3_600_000)] = 30_000
    factor: Annotated[float, Meta(ge=1.0, le=10.0)] = 2.0
    jitter: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.2


class Fallback(msgspec.Struct):
    """`onError: {fallback: <step id>}`: when this step fails, that step runs instead and its
    output stands for this step's output."""

    fallback: StepId


class SubGraph(msgspec.Struct, omit_defaults=True):
    """A loop's body: steps run once per item (`{{loop.item}}`, `{{loop.index}}`); `output`
    (a template value) is what each item yields, by default the last body step's output."""

    steps: list[Step]
    output: Any = None


class Step(msgspec.Struct, omit_defaults=True):
    id: StepId
    kind: str
    inputs: dict[str, Any] = {}
    #: steps that must finish first (steps referenced in templates are added on their own)
    needs: list[str] = []
    #: an expression; false: the step is skipped. A step with `if` also runs when a step it
    #: needs was skipped (without `if`, skipping spreads to dependents)
    if_: str | None = msgspec.field(default=None, name="if")
    retry: RetryPolicy | None = None
    timeoutMs: Annotated[int, Meta(ge=1, le=86_400_000)] | None = None
    #: "abort" (the run fails), "continue" (dependents run; the output is null) or {fallback}
    onError: Literal["abort", "continue"] | Fallback = "abort"
    #: condition steps: the steps that run when the expression is true / false
    then: list[str] = []
    else_: list[str] = msgspec.field(default_factory=list, name="else")
    #: loop steps: the sub-graph run per item
    body: SubGraph | None = None
    name: str = ""
    description: str = ""
    #: shell metadata (node position...): stored and returned untouched
    ui: dict[str, Any] | None = None


class Workflow(msgspec.Struct, omit_defaults=True):
    id: str = ""
    name: str = ""
    description: str = ""
    inputs: dict[str, InputDef] = {}
    steps: list[Step] = []
    #: name -> template value, computed when the run has finished
    outputs: dict[str, Any] = {}
    tags: list[str] = []
    ui: dict[str, Any] | None = None


# --- step kinds: inputs and outputs (block descriptors are generated from these) ------------

class SetInputs(msgspec.Struct, omit_defaults=True):
    value: Annotated[Any, Meta(title="Value", description="Any JSON value; templates are filled in")]


class SetOutput(msgspec.Struct):
    value: Any


class DelayInputs(msgspec.Struct, omit_defaults=True):
    ms: Annotated[int, Meta(ge=0, le=86_400_000, title="Milliseconds", description="How long to wait")]


class DelayOutput(msgspec.Struct):
    ms: int


class HttpInputs(msgspec.Struct, omit_defaults=True):
    url: Annotated[str, Meta(title="URL", description="http:// or https:// address")]
    method: Annotated[Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"], Meta(title="Method")] = "GET"
    headers: Annotated[dict[str, str], Meta(title="Headers")] = {}
    body: Annotated[Any, Meta(title="Body", description="A string is sent as is; other JSON as application/json")] = None
    timeoutMs: Annotated[int, Meta(ge=1, le=600_000, title="Timeout (ms)")] = 30_000
    failOnStatus: Annotated[bool, Meta(title="Fail on 4xx/5xx")] = True
    #: sent as the `Idempotency-Key` header (the run and step ids), so that a step retried
    #: after a crash can be recognised by the server
    idempotencyKey: Annotated[bool, Meta(title="Send Idempotency-Key")] = True


class HttpOutput(msgspec.Struct):
    status: int
    headers: dict[str, str]
    #: parsed JSON when the response is JSON, else text
    body: Any


class FileInputs(msgspec.Struct, omit_defaults=True):
    path: Annotated[str, Meta(title="Path", description="Inside one of the folders in workflows.fileRoots")]
    op: Annotated[Literal["read", "write", "append", "exists", "list"], Meta(title="Operation")] = "read"
    content: Annotated[Any, Meta(title="Content", description="For write/append; non-strings are written as JSON")] = None
    encoding: Annotated[str, Meta(title="Encoding")] = "utf-8"


class FileOutput(msgspec.Struct, omit_defaults=True):
    path: str
    exists: bool = True
    content: str | None = None
    bytes: int = 0
    entries: list[str] | None = None


class ConditionInputs(msgspec.Struct, omit_defaults=True):
    expr: Annotated[str, Meta(title="Expression", description="e.g. steps.fetch.output.status == 200 and "
                                                              "len(steps.fetch.output.body) > 0")]


class ConditionOutput(msgspec.Struct):
    result: bool
    branch: str  # "then" | "else"


class LoopInputs(msgspec.Struct, omit_defaults=True):
    items: Annotated[Any, Meta(title="Items", description="A list (usually a template)")]
    parallelism: Annotated[int, Meta(ge=1, le=64, title="Parallelism")] = 4
    maxItems: Annotated[int, Meta(ge=1, le=100_000, title="Most items")] = 1000


class LoopOutput(msgspec.Struct):
    results: list[Any]
    count: int


class WorkflowCallInputs(msgspec.Struct, omit_defaults=True):
    workflow: Annotated[str, Meta(title="Workflow id")]
    inputs: Annotated[dict[str, Any], Meta(title="Inputs")] = {}


class WorkflowCallOutput(msgspec.Struct):
    outputs: dict[str, Any]


class ToolInputs(msgspec.Struct, omit_defaults=True):
    tool: Annotated[str, Meta(title="Tool", description="Full tool name, e.g. plugin__wordcount")]
    arguments: Annotated[dict[str, Any], Meta(title="Arguments")] = {}


class ToolOutput(msgspec.Struct):
    content: Any
    isError: bool = False


class LlmInputs(msgspec.Struct, omit_defaults=True):
    prompt: Annotated[str, Meta(title="Prompt")]
    agent: Annotated[str, Meta(title="Agent", description="An agent id; empty: the default assistant")] = ""
    model: Annotated[str, Meta(title="Model", description="Empty: the agent's or the default model")] = ""
    system: Annotated[str, Meta(title="System prompt")] = ""
    maxTokens: Annotated[int, Meta(ge=1, title="Max tokens")] | None = None


class LlmOutput(msgspec.Struct, omit_defaults=True):
    text: str
    usage: dict[str, Any] = {}
    stopReason: str = ""


# --- block descriptors -----------------------------------------------------------------------

class BlockField(msgspec.Struct, omit_defaults=True):
    id: str
    label: str
    type: str
    required: bool = False
    default: Any = None
    enum: list[Any] | None = None
    description: str = ""


class BlockDescriptor(msgspec.Struct, omit_defaults=True):
    id: str
    label: str
    category: str  # control | data | network | ai | io
    icon: str
    description: str
    inputs: list[BlockField]
    outputs: list[BlockField]
    #: streams output chunks while it runs (llm)
    streaming: bool = False
    #: the kind is in this build but cannot run now (e.g. llm without the chat capability)
    available: bool = True


# --- params and results ----------------------------------------------------------------------

class ValidationProblem(msgspec.Struct, omit_defaults=True):
    message: str
    #: where, as a JSON path into the document (`$.steps[2].inputs.url`)
    path: str
    stepId: str | None = None
    field: str | None = None


class WorkflowDocParams(msgspec.Struct):
    #: the document: an object, or JSON/YAML text
    workflow: dict[str, Any] | str


class ValidateResult(msgspec.Struct):
    valid: bool
    problems: list[ValidationProblem]


class WorkflowInfo(msgspec.Struct, omit_defaults=True):
    workflow: Workflow
    version: int
    createdAt: str
    updatedAt: str


class WorkflowSummary(msgspec.Struct, omit_defaults=True):
    id: str
    name: str
    description: str
    steps: int
    version: int
    updatedAt: str
    tags: list[str] = []


class WorkflowList(msgspec.Struct):
    workflows: list[WorkflowSummary]


class IdParams(msgspec.Struct):
    id: WorkflowId


class UpdateParams(msgspec.Struct):
    id: WorkflowId
    workflow: dict[str, Any] | str


class DeleteResult(msgspec.Struct):
    id: str
    deleted: bool


class DuplicateParams(msgspec.Struct, omit_defaults=True):
    id: WorkflowId
    newId: WorkflowId | None = None
    name: str | None = None


class RunParams(msgspec.Struct, omit_defaults=True):
    #: a saved workflow's id, or an inline `workflow` document (validated, not saved)
    id: WorkflowId | None = None
    workflow: dict[str, Any] | str | None = None
    inputs: dict[str, Any] = {}


class RunResult(msgspec.Struct, omit_defaults=True):
    runId: str
    status: str  # succeeded | failed | cancelled
    outputs: dict[str, Any] = {}
    error: dict[str, Any] | None = None


class RunStarted(msgspec.Struct):
    runId: str


class RunIdParams(msgspec.Struct):
    runId: RunId


class CancelResult(msgspec.Struct):
    runId: str
    #: false when the run was not running
    cancelled: bool


class RunsParams(msgspec.Struct, omit_defaults=True):
    workflowId: str | None = None
    status: Literal["running", "succeeded", "failed", "cancelled"] | None = None
    limit: Annotated[int, Meta(ge=1, le=1000)] = 100


class RunSummary(msgspec.Struct, omit_defaults=True):
    runId: str
    workflowId: str
    status: str
    createdAt: str
    startedAt: str | None = None
    finishedAt: str | None = None
    error: dict[str, Any] | None = None
    parentRunId: str | None = None


class RunList(msgspec.Struct):
    runs: list[RunSummary]


class StepRunInfo(msgspec.Struct, omit_defaults=True):
    stepId: str
    status: str  # pending | running | succeeded | failed | recovered | skipped | cancelled
    attempts: int = 0
    output: Any = None
    error: dict[str, Any] | None = None
    startedAt: str | None = None
    finishedAt: str | None = None
    durationMs: float | None = None
    idempotencyKey: str | None = None


class RunDetail(msgspec.Struct, omit_defaults=True):
    run: RunSummary
    inputs: dict[str, Any]
    outputs: dict[str, Any] | None
    steps: list[StepRunInfo]


class EventsParams(msgspec.Struct, omit_defaults=True):
    runId: RunId
    afterSeq: int = 0
    limit: Annotated[int, Meta(ge=1, le=10_000)] = 1000


class RunEventInfo(msgspec.Struct, omit_defaults=True):
    seq: int
    type: str
    time: str
    stepId: str | None = None
    payload: dict[str, Any] = {}


class EventsResult(msgspec.Struct):
    events: list[RunEventInfo]


class BlocksParams(msgspec.Struct, omit_defaults=True):
    category: str | None = None
    query: str | None = None


class BlocksResult(msgspec.Struct):
    blocks: list[BlockDescriptor]


class BlockRunParams(msgspec.Struct, omit_defaults=True):
    kind: str
    inputs: dict[str, Any] = {}


class BlockRunResult(msgspec.Struct, omit_defaults=True):
    output: Any = None


# --- notifications ---------------------------------------------------------------------------

class WorkflowEvent(StreamEvent, kw_only=True):
    """One event of a run: `type` is run.started, step.started, step.retrying,
    step.succeeded, step.failed, step.skipped, step.cancelled, step.chunk (streamed LLM text)
    run.resumed or run.finished. `runSeq` is the event's place in the run's durable log
    (`workflows/events {runId, afterSeq}` catches up from it)."""

    type: str
    runId: str
    runSeq: int = 0
    stepId: str | None = None
    attempt: int | None = None
    status: str | None = None
    output: Any = None
    error: dict[str, Any] | None = None
    delayMs: int | None = None
    text: str | None = None
    workflowId: str | None = None
    #: why a step was skipped; why a run resumed ("restart" | "resume")
    reason: str | None = None
    #: run.resumed: the steps whose recorded outputs are reused
    completed: list[str] | None = None


EVENT = NotificationSpec("workflows/event", WorkflowEvent, "An event of a workflow run (streamed by run and resume)")

CREATE = MethodSpec("workflows/create", WorkflowDocParams, WorkflowInfo,
                    "Validate and save a workflow document (its id must be new)", lane="workflows")
GET = MethodSpec("workflows/get", IdParams, WorkflowInfo, "A saved workflow", lane="workflows")
LIST = MethodSpec("workflows/list", Empty, WorkflowList, "Saved workflows", lane="workflows")
UPDATE = MethodSpec("workflows/update", UpdateParams, WorkflowInfo, "Validate and replace a saved workflow",
                    lane="workflows")
DELETE = MethodSpec("workflows/delete", IdParams, DeleteResult, "Delete a saved workflow (its runs stay)",
                    lane="workflows")
VALIDATE = MethodSpec("workflows/validate", WorkflowDocParams, ValidateResult,
                      "Every problem of a document: unknown kinds, missing inputs, cycles, bad references, "
                      "templates that do not parse")
DUPLICATE = MethodSpec("workflows/duplicate", DuplicateParams, WorkflowInfo, "Save a copy under a new id",
                       lane="workflows")
RUN = MethodSpec("workflows/run", RunParams, RunResult,
                 "Run a workflow, streaming its events; answers its outputs. Cancelling this request "
                 "cancels the run (use workflows/start for a run that outlives the request)",
                 streams=(EVENT,), long_running=True)
START = MethodSpec("workflows/start", RunParams, RunStarted,
                   "Start a run in the background and answer its id at once (follow it with "
                   "workflows/events, workflows/runs/get or the event bus)")
CANCEL = MethodSpec("workflows/cancel", RunIdParams, CancelResult, "Cancel a running run and its running steps")
RUNS = MethodSpec("workflows/runs", RunsParams, RunList, "Runs, newest first")
RUNS_GET = MethodSpec("workflows/runs/get", RunIdParams, RunDetail,
                      "A run with every step's status, attempts, timings, outputs and errors")
EVENTS = MethodSpec("workflows/events", EventsParams, EventsResult, "A run's durable event log after a seq")
RESUME = MethodSpec("workflows/resume", RunIdParams, RunResult,
                    "Run a failed or cancelled run again from where it stopped (succeeded steps are "
                    "not repeated), streaming its events", streams=(EVENT,), long_running=True)
BLOCKS = MethodSpec("workflows/blocks", BlocksParams, BlocksResult, "Step kinds as blocks for a palette")
BLOCKS_RUN = MethodSpec("workflows/blocks/run", BlockRunParams, BlockRunResult,
                        "Run one block alone (a shell's 'test this block')", streams=(EVENT,), long_running=True)

METHODS = (CREATE, GET, LIST, UPDATE, DELETE, VALIDATE, DUPLICATE, RUN, START, CANCEL, RUNS, RUNS_GET, EVENTS,
           RESUME, BLOCKS, BLOCKS_RUN)
NOTIFICATIONS = (EVENT,)
