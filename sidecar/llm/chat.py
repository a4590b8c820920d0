"""One chat turn: provider, agent, history, context budget, the streamed provider call, the tool
loop, persistence through the projects service, usage and audit.

Cancellation (`$/cancelRequest`) cancels the request's scope: the HTTP read is not shielded, so
the response closes at once and the provider sees the disconnect. The partial reply is then
stored marked `cancelled` in a shielded `finally` path and the cancellation goes on (-32800).
For that to hold, chat's own writes (the conversation, the user's message, checkpoints) must
not make the request uncancellable, as a committed write does under the daemon's commit rule
(sidecar/commit.py): a chat turn is never "applied or not" as a whole, its messages are stored
as they stream. So chat runs its writes with the request guard detached (`_chat_writes`).
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import msgspec

from protocol import llm as p
from protocol.projects import ContentPart, TextPart, ToolCallPart, ToolResultPart, Usage
from sidecar.commit import current_guard
from sidecar.errors import InvalidValue, ResourceExhausted, SidecarError, Unavailable
from sidecar.llm import budget
from sidecar.llm.providers import adapter_for
from sidecar.llm.providers.base import (
    INVALID_ARGUMENTS,
    CallFailed,
    CallStats,
    ChatRequest,
    Message,
    ProviderConfig,
    stream_chat,
)
from sidecar.llm.service import ProvidersService, UsageService
from sidecar.llm.store import UsageRecord
from sidecar.toolsource import ToolCall, ToolInfo, ToolRegistry

if TYPE_CHECKING:
    from sidecar.agents.parser import AgentDef
    from sidecar.agents.service import AgentsService
    from sidecar.projects.service import ProjectsService
    from sidecar.settings.service import SettingsService

log = logging.getLogger("sidecar.llm")

Emit = Callable[[p.LlmEvent], Awaitable[None]]
A = TypeVar("A")
B = TypeVar("B")
TITLE_CHARS = 60
#: the longest the opening rows wait, after the request went out, for the first token to be relayed
OPENING_DEFER_SECONDS = 0.05
TOOL_RESULT_MAX_CHARS = 100_000
_parts_decoder = msgspec.json.Decoder(list[ContentPart])


@contextmanager
def _chat_writes() -> Iterator[None]:
    """Writes that must not turn a later cancel into "answer the result" (see the module doc)."""
    token = current_guard.set(None)
    try:
        yield
    finally:
        current_guard.reset(token)


@dataclass(slots=True)
class Round:
    """One provider call's output, as it streams."""

    text: list[str] = field(default_factory=list)
    calls: list[ToolCallPart] = field(default_factory=list)
    usage: p.UsageEvent | None = None
    stop: str | None = None
    #: perf_counter of the first text or tool-call event
    first_output: float | None = None

    def parts(self) -> list[ContentPart]:
        out: list[ContentPart] = []
        text = "".join(self.text)
        if text:
            out.append(TextPart(text))
        out.extend(self.calls)
        return out


class ChatService:
    def __init__(self, providers: ProvidersService, usage: UsageService, settings: SettingsService,
                 tools: ToolRegistry, agents: Callable[[], AgentsService | None],
                 projects: Callable[[], ProjectsService | None]) -> None:
        self.providers = providers
        self.usage = usage
        self.settings = settings
        self.tools = tools
        self._agents = agents
        self._projects = projects
        self.calibration = budget.Calibration()
        #: the event bus's publish (topic, payload), connected by the events capability
        self.publish_event: Callable[[str, dict[str, Any]], object] = lambda topic, payload: None

    async def send(self, params: p.ChatSendParams, emit: Emit) -> p.ChatSendResult:
        with _chat_writes():
            return await self._send(params, emit)

    async def _send(self, params: p.ChatSendParams, emit: Emit) -> p.ChatSendResult:
        started = time.perf_counter()
        projects = self._projects()
        history: list[Message] = []
        conversation_id = params.conversationId
        project_id = params.projectId
        if projects is not None and conversation_id is not None:
            # the key (a secret store read) and the history (a projects read) at once: two
            # worker-thread reads in the time of one
            (config, key), (conversation, rows, _more) = await _both(
                self.providers.resolve(params.provider), projects.get_conversation(conversation_id, limit=10_000))
        else:
            config, key = await self.providers.resolve(params.provider)
        agent = self._agent(params.agent)
        model = params.model or _model_for(config, agent)
        max_tokens = min(params.maxTokens or config.max_output_tokens, config.max_output_tokens)
        system = agent.prompt if agent is not None else ""
        tools = await self._tools_for(agent) if params.tools else []
        allowed = {t.name for t in tools}

        if projects is not None and conversation_id is not None:
            if project_id is not None and project_id != conversation.project_id:
                # the turn's tools and usage would say one project while its rows are in another
                where = f"project {conversation.project_id}" if conversation.project_id else "no project"
                raise InvalidValue(f"conversation {conversation_id} is in {where}, not in project {project_id}",
                                   "$.params.projectId")
            project_id = conversation.project_id
            history = _history(rows)
        elif projects is None and conversation_id is None:
            conversation_id = "c_" + secrets.token_hex(10)
        messages = history + [Message("user", [TextPart(params.message)])]

        reserve = self.settings.value("llm.contextReserveTokens")
        fitted = budget.fit(messages, system=system, tools=tools, context_window=config.context_window,
                            max_output=max_tokens, reserve=reserve, ratio=self.calibration.ratio(config.id))
        if fitted.estimated_tokens > fitted.budget:
            raise ResourceExhausted(
                f"the message needs about {fitted.estimated_tokens} tokens, more than the "
                f"{fitted.budget} this model's context leaves (window {config.context_window} - output "
                f"{max_tokens} - reserve {reserve})", limit=fitted.budget, estimated=fitted.estimated_tokens)
        messages = fitted.messages

        turn = Turn(self, config, key, model, max_tokens, params, agent, system, tools, allowed, emit,
                    conversation_id or "", project_id, projects, started, fitted.raw_tokens)
        if projects is not None:
            turn.opening = _Opening(params.conversationId is None, agent.name if agent else "", params.message)
        try:
            await turn.run(messages)
        except SidecarError as exc:
            if params.conversationId is None and turn.message_id is not None:
                # the failed turn's rows were stored (its reply marked error) in a conversation the
                # caller never heard of: name it, so the caller can show or continue it
                exc.details = {**(exc.details or {}), "conversationId": turn.conversation_id}
            raise
        assert turn.message_id is not None
        return p.ChatSendResult(
            conversationId=turn.conversation_id, messageId=turn.message_id, text="".join(turn.text),
            toolCalls=turn.tool_calls, usage=p.ChatUsage(turn.input_tokens, turn.output_tokens),
            stopReason=turn.stop_reason, firstTokenMs=turn.first_token_ms, totalMs=_ms(started),
            provider=config.id, model=turn.model, rounds=turn.rounds, droppedTurns=fitted.dropped_turns,
            stored=projects is not None)

    # ---- helpers ------------------------------------------------------------------------------

    def _agent(self, name: str | None) -> AgentDef | None:
        if name is None:
            return None
        agents = self._agents()
        if agents is None:
            raise Unavailable("agents are not available in this build", agent=name)
        return agents.get(name).agent

    async def _tools_for(self, agent: AgentDef | None) -> list[ToolInfo]:
        tools = await self.tools.list_tools()
        if agent is not None and agent.tools:
            wanted = set(agent.tools)
            prefixes = tuple(name[:-1] for name in wanted if name.endswith("*"))
            tools = [t for t in tools if t.name in wanted or (prefixes and t.name.startswith(prefixes))]
        return tools


@dataclass(slots=True)
class _Opening:
    """The rows that open a turn: a new conversation (if `create`), the user's message and the
    reply row, in one transaction (ProjectsService.open_turn) that runs alongside the first provider
    request (`Turn._open`)."""

    create: bool
    agent: str
    message: str


class Turn:
    """The rounds of one chat/send: provider call, tools, provider call... until the model stops."""

    def __init__(self, chat: ChatService, config: ProviderConfig, key: str | None, model: str, max_tokens: int,
                 params: p.ChatSendParams, agent: AgentDef | None, system: str, tools: list[ToolInfo],
                 allowed: set[str], emit: Emit, conversation_id: str, project_id: str | None,
                 projects: ProjectsService | None, started: float, estimated_input: int) -> None:
        """`estimated_input`: the uncalibrated estimate of the first round's input tokens."""
        self.chat = chat
        self.config = config
        self.key = key
        self.model = model
        self.max_tokens = max_tokens
        self.params = params
        self.agent = agent
        self.system = system
        self.tools = tools
        self.allowed = allowed
        self.emit = emit
        self.conversation_id = conversation_id
        self.project_id = project_id
        self.projects = projects
        self.started = started
        self.estimated_input = estimated_input
        self.message_id: str | None = None
        self.text: list[str] = []
        self.tool_calls: list[p.ChatToolCall] = []
        self.input_tokens = 0
        self.output_tokens = 0
        self.stop_reason = "end_turn"
        self.first_token_ms: float | None = None
        self.rounds = 0
        #: set by ChatService when the turn's opening writes are still to be done (first round)
        self.opening: _Opening | None = None
        self._opening_error: BaseException | None = None
        #: set once the round's first token has been relayed (while the opening rows wait for it)
        self._first_relayed: anyio.Event | None = None

    async def run(self, messages: list[Message]) -> None:
        max_rounds = self.chat.settings.value("llm.maxToolRounds")
        while True:
            current = await self._round(messages)
            messages.append(Message("assistant", current.parts()))
            if current.stop != "tool_use" or not current.calls:
                return
            if self.rounds - 1 >= max_rounds:  # tool rounds run so far
                self.stop_reason = "max_tool_rounds"
                return
            results = await self._run_tools(current.calls)
            messages.append(Message("tool", list(results)))
            if self.projects is not None:
                await self.projects.append_message(self.conversation_id, "tool", results)

    async def _round(self, messages: list[Message]) -> Round:
        chat = self.chat
        request = ChatRequest(model=self.model, messages=messages, system=self.system, tools=self.tools,
                              max_tokens=self.max_tokens, temperature=self.params.temperature)
        adapter = adapter_for(self.config.kind)
        self.rounds += 1
        current = Round()
        stats = CallStats()
        call_started = time.perf_counter()
        opening, self.opening = self.opening, None
        self.message_id = None
        if opening is None:
            if self.projects is not None:
                self.message_id = await self.projects.begin_message(self.conversation_id, "assistant", self.model)
            else:
                self.message_id = "m_" + secrets.token_hex(10)
        outcome = "error"
        error: str | None = None
        failed: CallFailed | None = None
        checkpoint_every = chat.settings.value("llm.checkpointMs") / 1000
        last_checkpoint = time.perf_counter()
        try:
            async with anyio.create_task_group() as tg:
                sent: Callable[[], object] | None = None
                if opening is not None:
                    # the rows are written while the provider works on the request: not before it
                    # goes out, nor while it is sent or its first token relayed (a write's thread
                    # competes with the loop); see `_open`
                    request_sent = anyio.Event()
                    sent = request_sent.set
                    self._first_relayed = anyio.Event()
                    tg.start_soon(self._open, opening, request_sent, self._first_relayed, tg.cancel_scope)
                try:
                    events = stream_chat(await chat.providers.client(), adapter, self.config, self.key, request,
                                         chat.providers.retry_policy(), chat.providers.bucket(self.config), stats,
                                         sent)
                    await self._stream(events, current, checkpoint_every, last_checkpoint)
                    outcome = "ok"
                except CallFailed as exc:
                    failed = exc
                finally:
                    if sent is not None:  # however the call ended, the rows wait no longer
                        sent()
                    self._relayed()
            if self._opening_error is not None:
                outcome = "error"
                error = str(self._opening_error)
                raise self._opening_error
            if failed is not None:
                exc = failed
                # the usage table knows rate_limited apart; any other failure (provider_error,
                # timeout, ...) is an "error" there: its CHECK refused the raw kind, and the
                # failed call went unrecorded
                outcome = "rate_limited" if exc.kind == "rate_limited" else "error"
                error = exc.message
                current.stop = "error"
                chat.publish_event("llm.providerError", {"provider": self.config.id, "model": self.model,
                                                         "kind": exc.kind, "errorType": exc.error_type or exc.failure,
                                                         "status": exc.status, "message": exc.message,
                                                         "conversationId": self.conversation_id})
                await self.emit(exc.to_event())
                raise exc.to_error(self.config.id) from None
        except anyio.get_cancelled_exc_class():
            outcome = "cancelled"
            current.stop = "cancelled"
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await self._finish_round(current, stats, request, call_started, current.first_output, outcome,
                                         error)
        return current

    async def _open(self, opening: _Opening, request_sent: anyio.Event, first_relayed: anyio.Event,
                    stream_scope: anyio.CancelScope) -> None:
        """The opening rows (ProjectsService.open_turn: one transaction), written once the request is
        on the wire and then either the first token has been relayed or OPENING_DEFER_SECONDS
        have passed (or the call ended first). A real model takes longer than that to start, so
        its rows are stored before its first token, while the loop only waits; a model that
        answers at once is not slowed by them. Shielded: once begun they finish even if the
        stream fails or is cancelled, so a cancelled or failed turn is stored as it would be had
        they run first. A crash leaves them all or none. A failing write (say, an unknown
        project) stops the stream (the provider sees the disconnect) and is the turn's error;
        nothing of the turn is stored then."""
        assert self.projects is not None
        with anyio.CancelScope(shield=True):
            try:
                await request_sent.wait()
                with anyio.move_on_after(OPENING_DEFER_SECONDS):
                    await first_relayed.wait()
                opened = await self.projects.open_turn(
                    conversation_id=None if opening.create else self.conversation_id,
                    project_id=self.project_id, agent=opening.agent, title=_title(opening.message),
                    message=opening.message, model=self.model)
            except Exception as exc:  # noqa: BLE001 - raised by _round once the stream has stopped
                self._opening_error = exc
                stream_scope.cancel()
            else:
                self.conversation_id = opened.conversation_id
                self.message_id = opened.message_id

    def _relayed(self) -> None:
        """The first token is out (or the call ended): the opening rows need not wait for it."""
        if self._first_relayed is not None:
            self._first_relayed.set()
            self._first_relayed = None

    async def _stream(self, events: AsyncIterator[p.LlmEvent], current: Round, checkpoint_every: float,
                      last_checkpoint: float) -> None:
        """Relay one call's events, keeping the round's text, calls, usage and stop; checkpoint
        the reply every `checkpoint_every` s once its row exists."""
        async for event in events:
            kind = type(event)
            if kind is p.TextDelta:
                current.text.append(event.text)
                if current.first_output is None:
                    current.first_output = time.perf_counter()
            elif kind is p.ToolCallEnd:
                current.calls.append(ToolCallPart(event.id, event.name, event.arguments))
            elif kind is p.ToolCallStart:
                if current.first_output is None:
                    current.first_output = time.perf_counter()
            elif kind is p.UsageEvent:
                current.usage = event
            elif kind is p.StopEvent:
                current.stop = event.reason
            elif kind is p.MessageStart:
                event.provider = self.config.id
                event.round = self.rounds
                if event.model:
                    self.model = event.model
            await self.emit(event)
            if self._first_relayed is not None and current.first_output is not None:
                self._relayed()
            if (self.projects is not None and self.message_id is not None and checkpoint_every > 0
                    and time.perf_counter() - last_checkpoint >= checkpoint_every):
                last_checkpoint = time.perf_counter()
                await self.projects.update_message(self.message_id, current.parts())

    async def _finish_round(self, current: Round, stats: CallStats, request: ChatRequest, call_started: float,
                            first_output: float | None, outcome: str, error: str | None) -> None:
        """Store the reply (complete, cancelled or error) and one usage/audit row. Shielded."""
        text = "".join(current.text)
        self.text.append(text)
        usage = current.usage
        tin = usage.inputTokens if usage else 0
        tout = usage.outputTokens if usage else 0
        self.input_tokens += tin
        self.output_tokens += tout
        if self.rounds == 1 and tin:
            self.chat.calibration.observe(self.config.id, self.estimated_input, tin)
        if first_output is not None and self.first_token_ms is None:
            self.first_token_ms = round((first_output - self.started) * 1000, 3)
        self.stop_reason = current.stop or "end_turn"
        status = {"ok": "complete", "cancelled": "cancelled"}.get(outcome, "error")
        try:
            if self.projects is not None and self.message_id is not None:
                await self.projects.finish_message(self.message_id, current.parts(), Usage(tin, tout), status=status,
                                                   error=error)
        except Exception:  # noqa: BLE001 - storing must not hide the turn's own outcome
            log.exception("chat: could not store the reply of conversation %s", self.conversation_id)
        latency = (time.perf_counter() - call_started) * 1000
        record = UsageRecord(
            id="u_" + secrets.token_hex(10), provider=self.config.id, model=stats.model or self.model,
            agent=self.agent.name if self.agent else None, project_id=self.project_id,
            conversation_id=self.conversation_id or None, input_tokens=tin, output_tokens=tout,
            latency_ms=round(latency, 3),
            first_token_ms=None if first_output is None else round((first_output - call_started) * 1000, 3),
            outcome=outcome, attempts=max(1, stats.attempts),
            cost=self.chat.usage.cost(stats.model or self.model, tin, tout))
        audit = {"usage_id": record.id,
                 "request": msgspec.json.encode(adapter_for(self.config.kind).chat_body(request)).decode(),
                 "response": text,
                 "tool_calls": msgspec.json.encode([{"id": c.id, "name": c.name, "arguments": c.arguments}
                                                    for c in current.calls]).decode(),
                 "error": error}
        try:
            await self.chat.usage.record(record, audit)
        except Exception:  # noqa: BLE001
            log.exception("chat: could not record usage")

    async def _run_tools(self, calls: list[ToolCallPart]) -> list[ToolResultPart]:
        results: list[ToolResultPart] = []
        timeout = self.chat.settings.value("llm.toolTimeoutSeconds")
        caller = f"agent:{self.agent.name}" if self.agent else "user"
        for call in calls:
            started = time.perf_counter()
            arguments = call.arguments if isinstance(call.arguments, dict) else {}
            content, is_error = await self._call_tool(call.name, arguments, caller, timeout)
            ms = round((time.perf_counter() - started) * 1000, 3)
            await self.emit(p.ToolResultEvent(id=call.id, name=call.name, content=content, isError=is_error, ms=ms))
            self.tool_calls.append(p.ChatToolCall(id=call.id, name=call.name, arguments=arguments, result=content,
                                                  isError=is_error, round=self.rounds))
            results.append(ToolResultPart(call.id, content, is_error))
        return results

    async def _call_tool(self, name: str, arguments: dict[str, Any], caller: str, timeout: float) -> tuple[str, bool]:
        """(content, is_error): a failing tool is an answer for the model, not an error for the user."""
        if INVALID_ARGUMENTS in arguments:
            return f"the arguments were not a JSON object: {str(arguments[INVALID_ARGUMENTS])[:200]}", True
        if name not in self.allowed:
            return f"no tool named {name} is available here", True
        extra = {"conversationId": self.conversation_id, "projectId": self.project_id}
        try:
            with anyio.fail_after(timeout):
                result = await self.chat.tools.call(name, arguments, ToolCall(caller=caller, extra=extra))
        except TimeoutError:
            return f"the tool took longer than {timeout:g} s", True
        except SidecarError as exc:
            return exc.message, True
        except Exception as exc:  # noqa: BLE001 - a broken tool is reported to the model, and logged
            log.warning("tool %s failed: %s", name, type(exc).__name__, exc_info=True)
            return f"the tool failed ({type(exc).__name__})", True
        content = result.content if isinstance(result.content, str) else json.dumps(result.content,
                                                                                     ensure_ascii=False)
        if len(content) > TOOL_RESULT_MAX_CHARS:
            content = content[:TOOL_RESULT_MAX_CHARS] + f"\n[... cut at {TOOL_RESULT_MAX_CHARS} characters]"
        return content, result.is_error


async def _both(first: Awaitable[A], second: Awaitable[B]) -> tuple[A, B]:
    """Two independent lookups run at once; if both fail, the first one's error is raised (the
    same error for the same request, whichever finished first)."""
    results: list[Any] = [None, None]
    errors: list[Exception | None] = [None, None]

    async def run(i: int, awaitable: Awaitable[Any]) -> None:
        try:
            results[i] = await awaitable
        except Exception as exc:  # noqa: BLE001 - raised below, in a fixed order
            errors[i] = exc

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, 0, first)
        tg.start_soon(run, 1, second)
    for error in errors:
        if error is not None:
            raise error
    return results[0], results[1]


def _history(rows: list[Any]) -> list[Message]:
    """Stored messages as provider turns: errors and empty replies left out, and a tool call whose
    result was never stored (a cancelled round) dropped with it."""
    out: list[Message] = []
    for row in rows:
        if row.role not in ("user", "assistant", "tool") or row.status == "error":
            continue
        try:
            parts = _parts_decoder.decode(row.content)
        except msgspec.DecodeError:
            continue
        if row.role == "assistant" and row.status != "complete":
            parts = [part for part in parts if isinstance(part, TextPart)]
        if parts:
            out.append(Message(row.role, parts))
    # a call must be followed by its results
    cleaned: list[Message] = []
    for i, message in enumerate(out):
        if message.role == "assistant" and any(isinstance(x, ToolCallPart) for x in message.parts):
            follows = out[i + 1] if i + 1 < len(out) else None
            if follows is None or follows.role != "tool":
                message = Message("assistant", [x for x in message.parts if isinstance(x, TextPart)])
                if not message.parts:
                    continue
        if message.role == "tool" and (not cleaned or cleaned[-1].role != "assistant"):
            continue
        cleaned.append(message)
    return cleaned


def _model_for(config: ProviderConfig, agent: AgentDef | None) -> str:
    """The provider's model, or the agent's hint when it names a model of this provider's family
    that is more specific than a family alias (`claude-sonnet` is a hint, not a model id)."""
    hint = agent.model if agent is not None else None
    if not hint or config.model.startswith(hint):
        return config.model
    family = {"anthropic": ("claude-",), "openai": ("gpt-", "o1", "o3", "o4")}.get(config.kind, ())
    if hint.startswith(family) and any(ch.isdigit() for ch in hint):
        return hint
    return config.model


def _title(message: str) -> str:
    line = " ".join(message.split())
    return line if len(line) <= TITLE_CHARS else line[:TITLE_CHARS - 1].rstrip() + "…"


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)

