"""providers/*, chat/*, usage/*, audit/*, mcp/*: LLM providers (Anthropic, OpenAI-compatible,
Ollama) behind one streamed event shape; chat turns with tools; usage and an audit log; MCP
servers as tool sources.

The streamed `chat/delta` events are one tagged union on `type` (`LlmEvent`): every provider's
wire format is normalised into it, so a shell draws every provider the same way.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from protocol.common import Empty
from protocol.projects import ContentPart
from protocol.spec import MethodSpec, NotificationSpec
from protocol.streaming import StreamEvent

ProviderId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*\Z",
                                 description="Lower-case letters, digits, '-' and '_', starting with a letter or digit.")]
ProviderKind = Literal["anthropic", "openai", "ollama"]
ModelName = Annotated[str, Meta(min_length=1, max_length=200)]
ServerId = Annotated[str, Meta(min_length=1, max_length=40, pattern=r"^[a-z0-9](?:[a-z0-9-]|_(?!_))*\Z",
                               description="Lower-case letters, digits, '-' and single '_'; it prefixes the "
                                           "server's tools as `<id>__<tool>`.")]
StopReason = Literal["end_turn", "tool_use", "max_tokens", "stop_sequence", "cancelled", "error", "other"]


# ---- streamed events (chat/delta) ------------------------------------------------------------------

class MessageStart(StreamEvent, tag="message_start", tag_field="type"):
    """A provider call began answering (one per round of the tool loop)."""

    provider: str = ""
    model: str = ""
    round: int = 0


class TextDelta(StreamEvent, tag="text_delta", tag_field="type"):
    text: str = ""


class ToolCallStart(StreamEvent, tag="tool_call_start", tag_field="type"):
    index: int = 0
    id: str = ""
    name: str = ""


class ToolCallDelta(StreamEvent, tag="tool_call_delta", tag_field="type"):
    """A fragment of a tool call's JSON arguments, as the model writes them."""

    index: int = 0
    argumentsDelta: str = ""


class ToolCallEnd(StreamEvent, tag="tool_call_end", tag_field="type"):
    """The call is complete: its arguments, assembled from the fragments and parsed once."""

    index: int = 0
    id: str = ""
    name: str = ""
    arguments: dict[str, Any] = {}


class ToolResultEvent(StreamEvent, tag="tool_result", tag_field="type"):
    """What a tool answered (chat's tool loop; fed back to the model)."""

    id: str = ""
    name: str = ""
    content: str = ""
    isError: bool = False
    ms: float = 0.0


class UsageEvent(StreamEvent, tag="usage", tag_field="type"):
    inputTokens: int = 0
    outputTokens: int = 0


class StopEvent(StreamEvent, tag="stop", tag_field="type"):
    reason: str = "end_turn"


class ErrorEvent(StreamEvent, tag="error", tag_field="type"):
    """The provider reported an error (an HTTP status, or an error event inside the stream)."""

    #: `rate_limited` or `provider_error`
    kind: str = "provider_error"
    message: str = ""
    #: the provider's own error type (`overloaded_error`, `rate_limit_error`...)
    errorType: str | None = None
    status: int | None = None
    retryAfter: float | None = None


LlmEvent = (MessageStart | TextDelta | ToolCallStart | ToolCallDelta | ToolCallEnd | ToolResultEvent | UsageEvent
            | StopEvent | ErrorEvent)


# ---- providers/* --------------------------------------------------------------------------------------

class ProviderConfigureParams(msgspec.Struct, omit_defaults=True):
    id: ProviderId
    kind: ProviderKind
    model: ModelName
    #: default per kind: https://api.anthropic.com, https://api.openai.com/v1, http://127.0.0.1:11434
    baseUrl: Annotated[str, Meta(max_length=2000)] | None = None
    #: stored in the secret store; never returned. Omit to keep the stored key, "" to remove it.
    apiKey: Annotated[str, Meta(max_length=10_000)] | None = None
    headers: dict[str, str] = {}
    maxOutputTokens: Annotated[int, Meta(ge=1, le=1_000_000)] | None = None
    contextWindow: Annotated[int, Meta(ge=256, le=100_000_000)] | None = None
    #: requests per minute this daemon sends to the provider (0: no limit)
    requestsPerMinute: Annotated[int, Meta(ge=0, le=100_000)] = 0
    #: make it the default provider (setting `llm.defaultProvider`)
    makeDefault: bool = False

    def __repr__(self) -> str:  # the key never reaches a log line
        return f"ProviderConfigureParams(id={self.id!r}, kind={self.kind!r}, model={self.model!r}, apiKey=<redacted>)"


class Provider(msgspec.Struct, omit_defaults=True):
    id: str
    kind: str
    baseUrl: str
    model: str
    hasApiKey: bool
    maxOutputTokens: int
    contextWindow: int
    requestsPerMinute: int
    createdAt: str
    updatedAt: str
    isDefault: bool = False
    #: header names only (values may be credentials)
    headerNames: list[str] = []


class ProviderIdParams(msgspec.Struct):
    id: ProviderId


class ProviderListResult(msgspec.Struct):
    providers: list[Provider]
    default: str | None = None


class ProviderDeleteResult(msgspec.Struct):
    id: str
    deleted: bool = True


class ProviderTestResult(msgspec.Struct, omit_defaults=True):
    ok: bool
    latencyMs: float
    #: the model the provider says answered
    model: str | None = None
    #: on failure: auth, unreachable, not_found, tls, timeout, rate_limited, provider_error
    failure: str | None = None
    message: str | None = None
    status: int | None = None


class ProviderModelsResult(msgspec.Struct):
    models: list[str]


class ProviderDetectParams(msgspec.Struct, omit_defaults=True):
    #: also probe this base URL (besides the configured Ollama providers' and the default)
    baseUrl: Annotated[str, Meta(max_length=2000)] | None = None


class DetectedOllama(msgspec.Struct):
    baseUrl: str
    #: the models it has pulled (`/api/tags`)
    models: list[str]
    latencyMs: float
    #: ids of the configured providers that use this base URL
    providers: list[str] = []


class ProviderDetectResult(msgspec.Struct):
    #: every base URL that answered `/api/tags` as an Ollama server
    found: list[DetectedOllama]
    #: every base URL probed, in order
    checked: list[str]


class ProviderPullParams(msgspec.Struct):
    #: a configured provider of kind `ollama`
    id: ProviderId
    model: ModelName


class PullProgress(StreamEvent):
    """Ollama's progress line as it pulls: `pulling manifest`, `pulling <digest>` with byte
    counts, `verifying sha256 digest`, `writing manifest`, `success`."""

    status: str = ""
    digest: str | None = None
    total: int | None = None
    completed: int | None = None


class ProviderPullResult(msgspec.Struct):
    id: str
    model: str
    #: the last status Ollama sent (`success`)
    status: str
    totalMs: float
    #: bytes of the layers pulled (sum of their `total`)
    bytes: int = 0


# ---- chat/* -------------------------------------------------------------------------------------------

class ChatSendParams(msgspec.Struct, omit_defaults=True):
    message: Annotated[str, Meta(min_length=1, max_length=1_000_000)]
    provider: ProviderId | None = None
    model: ModelName | None = None
    agent: Annotated[str, Meta(min_length=1, max_length=200)] | None = None
    conversationId: Annotated[str, Meta(min_length=1, max_length=100)] | None = None
    projectId: Annotated[str, Meta(min_length=1, max_length=100)] | None = None
    temperature: Annotated[float, Meta(ge=0, le=2)] | None = None
    maxTokens: Annotated[int, Meta(ge=1, le=1_000_000)] | None = None
    #: let the model call tools (the agent's `tools` list, or every tool without an agent)
    tools: bool = True


class ChatToolCall(msgspec.Struct, omit_defaults=True):
    id: str
    name: str
    arguments: dict[str, Any]
    result: str = ""
    isError: bool = False
    round: int = 0


class ChatUsage(msgspec.Struct):
    inputTokens: int = 0
    outputTokens: int = 0


class ChatSendResult(msgspec.Struct, omit_defaults=True):
    conversationId: str
    messageId: str
    text: str
    toolCalls: list[ChatToolCall]
    usage: ChatUsage
    stopReason: str
    firstTokenMs: float | None
    totalMs: float
    provider: str = ""
    model: str = ""
    #: provider calls made (1 + tool rounds)
    rounds: int = 1
    #: older turns left out to fit the context window
    droppedTurns: int = 0
    #: false when no conversation store is available (nothing was persisted)
    stored: bool = True


# ---- usage/* and audit/* --------------------------------------------------------------------------

class UsageSummaryParams(msgspec.Struct, omit_defaults=True):
    groupBy: Literal["day", "model", "provider", "agent", "project"] = "day"
    #: ISO 8601 date or time, inclusive; omitted: no bound
    from_: Annotated[str, Meta(max_length=40)] | None = msgspec.field(default=None, name="from")
    to: Annotated[str, Meta(max_length=40)] | None = None


class UsageRow(msgspec.Struct, omit_defaults=True):
    key: str
    calls: int
    inputTokens: int
    outputTokens: int
    errors: int
    avgLatencyMs: float
    avgFirstTokenMs: float | None = None
    #: in the price table's currency; null when a model of the group has no price
    cost: float | None = None


class UsageSummaryResult(msgspec.Struct):
    groupBy: str
    rows: list[UsageRow]


class AuditListParams(msgspec.Struct, omit_defaults=True):
    conversationId: str | None = None
    provider: str | None = None
    limit: Annotated[int, Meta(ge=1, le=500)] = 50
    #: `nextCursor` of the previous page
    cursor: str | None = None


class AuditSummary(msgspec.Struct, omit_defaults=True):
    id: str
    at: str
    provider: str
    model: str
    outcome: str
    latencyMs: float
    inputTokens: int
    outputTokens: int
    agent: str | None = None
    conversationId: str | None = None
    firstTokenMs: float | None = None


class AuditListResult(msgspec.Struct):
    entries: list[AuditSummary]
    nextCursor: str | None = None


class AuditIdParams(msgspec.Struct):
    id: Annotated[str, Meta(min_length=1, max_length=100)]


class AuditEntry(msgspec.Struct, omit_defaults=True):
    summary: AuditSummary
    #: the request body as sent (no headers: they hold the key)
    request: Any = None
    response: str = ""
    toolCalls: list[Any] = []
    error: str | None = None


# ---- mcp/servers/* --------------------------------------------------------------------------------

class McpServerAddParams(msgspec.Struct, omit_defaults=True):
    id: ServerId
    command: Annotated[str, Meta(min_length=1, max_length=4096)]
    args: list[Annotated[str, Meta(max_length=4096)]] = []
    env: dict[str, str] = {}
    cwd: Annotated[str, Meta(max_length=4096)] | None = None
    enabled: bool = True


class McpServer(msgspec.Struct, omit_defaults=True):
    id: str
    command: str
    args: list[str]
    enabled: bool
    createdAt: str
    envNames: list[str] = []
    cwd: str | None = None
    #: "stopped", "running", "failed"
    state: str = "stopped"
    error: str | None = None


class McpServerIdParams(msgspec.Struct):
    id: ServerId


class McpServerListResult(msgspec.Struct):
    servers: list[McpServer]


class McpToolInfo(msgspec.Struct):
    name: str
    description: str


class McpServerTestResult(msgspec.Struct, omit_defaults=True):
    ok: bool
    latencyMs: float
    tools: list[McpToolInfo] = []
    serverName: str | None = None
    message: str | None = None


class McpServerRemoveResult(msgspec.Struct):
    id: str
    removed: bool = True


# ---- specs --------------------------------------------------------------------------------------------

DELTA = NotificationSpec("chat/delta", LlmEvent,  # type: ignore[arg-type]
                         "A normalised event of a chat turn: message_start, text_delta, tool_call_start / "
                         "tool_call_delta / tool_call_end, tool_result, usage, stop, error (tagged by `type`).")

PROVIDERS_CONFIGURE = MethodSpec("providers/configure", ProviderConfigureParams, Provider,
                                 "Add or update a provider (the API key goes to the secret store, never out).",
                                 lane="providers")
PROVIDERS_LIST = MethodSpec("providers/list", Empty, ProviderListResult, "The configured providers.",
                            lane="providers")
PROVIDERS_GET = MethodSpec("providers/get", ProviderIdParams, Provider, "One provider.", lane="providers")
PROVIDERS_DELETE = MethodSpec("providers/delete", ProviderIdParams, ProviderDeleteResult,
                              "Remove a provider and its stored key.", lane="providers")
PROVIDERS_TEST = MethodSpec("providers/test", ProviderIdParams, ProviderTestResult,
                            "Send a tiny request: latency and model, or the precise failure.", long_running=True)
PROVIDERS_MODELS = MethodSpec("providers/models", ProviderIdParams, ProviderModelsResult,
                              "The models the provider offers.", long_running=True)
PULL_PROGRESS = NotificationSpec("providers/pullProgress", PullProgress,
                                 "Progress of providers/pull: Ollama's status lines (throttled to one every "
                                 "100 ms per status, every change of status sent).")
PROVIDERS_DETECT = MethodSpec("providers/detect", ProviderDetectParams, ProviderDetectResult,
                              "Find a running Ollama (`/api/tags`) at the configured Ollama base URLs, "
                              "$OLLAMA_HOST, the default http://127.0.0.1:11434 and `baseUrl`.", long_running=True)
PROVIDERS_PULL = MethodSpec("providers/pull", ProviderPullParams, ProviderPullResult,
                            "Pull a model into an Ollama provider (`/api/pull`), streaming progress; "
                            "cancel stops the download.", streams=(PULL_PROGRESS,), long_running=True)
CHAT_SEND = MethodSpec("chat/send", ChatSendParams, ChatSendResult,
                       "Send a message; streams chat/delta and answers the complete assistant turn.",
                       streams=(DELTA,), long_running=True)
USAGE_SUMMARY = MethodSpec("usage/summary", UsageSummaryParams, UsageSummaryResult,
                           "Tokens, calls, latency and cost per day, model, provider, agent or project.")
AUDIT_LIST = MethodSpec("audit/list", AuditListParams, AuditListResult, "Provider calls, newest first.")
AUDIT_GET = MethodSpec("audit/get", AuditIdParams, AuditEntry, "One provider call: prompt, response, tool calls.")
MCP_ADD = MethodSpec("mcp/servers/add", McpServerAddParams, McpServer,
                     "Add (or replace) an MCP server run over stdio; its tools become `<id>__<tool>`.",
                     lane="mcp")
MCP_LIST = MethodSpec("mcp/servers/list", Empty, McpServerListResult, "The MCP servers.", lane="mcp")
MCP_REMOVE = MethodSpec("mcp/servers/remove", McpServerIdParams, McpServerRemoveResult,
                        "Stop and remove an MCP server.", lane="mcp")
MCP_TEST = MethodSpec("mcp/servers/test", McpServerIdParams, McpServerTestResult,
                      "Start the server, initialise and list its tools.", long_running=True)

METHODS = (PROVIDERS_CONFIGURE, PROVIDERS_LIST, PROVIDERS_GET, PROVIDERS_DELETE, PROVIDERS_TEST, PROVIDERS_MODELS,
           PROVIDERS_DETECT, PROVIDERS_PULL, CHAT_SEND, USAGE_SUMMARY, AUDIT_LIST, AUDIT_GET, MCP_ADD, MCP_LIST,
           MCP_REMOVE, MCP_TEST)
NOTIFICATIONS = (DELTA, PULL_PROGRESS)

__all__ = ["ContentPart"]
