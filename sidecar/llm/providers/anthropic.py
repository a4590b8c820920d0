"""Anthropic Messages API, streamed as SSE (`POST {base}/v1/messages`, `stream: true`).

Events: message_start (model, input tokens), content_block_start (text or tool_use),
content_block_delta (text_delta, input_json_delta), content_block_stop, message_delta (stop
reason, output tokens), message_stop; `ping` is ignored; `error` (e.g. overloaded_error inside
a 200 response) becomes an ErrorEvent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from protocol.llm import ErrorEvent, LlmEvent, MessageStart, StopEvent, TextDelta, UsageEvent
from protocol.projects import TextPart, ToolCallPart, ToolResultPart
from sidecar.llm.providers.base import (
    Adapter,
    ChatRequest,
    ProviderConfig,
    ToolCalls,
    decode_json,
    drain,
    stop_reason,
)
from sidecar.llm.sse import SSEParser

if TYPE_CHECKING:
    import httpx

API_VERSION = "2023-06-01"


class AnthropicAdapter(Adapter):
    kind = "anthropic"
    default_base_url = "https://api.anthropic.com"

    def chat_url(self, config: ProviderConfig) -> str:
        return config.base_url.rstrip("/") + "/v1/messages"

    def models_url(self, config: ProviderConfig) -> str:
        return config.base_url.rstrip("/") + "/v1/models"

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        headers = {"anthropic-version": API_VERSION}
        if api_key:
            headers["x-api-key"] = api_key
        return headers

    def chat_body(self, request: ChatRequest) -> dict[str, Any]:
        messages: list[dict[str, Any]] = []
        for message in request.messages:
            blocks: list[dict[str, Any]] = []
            for part in message.parts:
                if isinstance(part, TextPart):
                    if part.text:
                        blocks.append({"type": "text", "text": part.text})
                elif isinstance(part, ToolCallPart):
                    blocks.append({"type": "tool_use", "id": part.id, "name": part.name,
                                   "input": part.arguments if isinstance(part.arguments, dict) else {}})
                elif isinstance(part, ToolResultPart):
                    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": part.toolCallId,
                                             "content": part.content}
                    if part.isError:
                        block["is_error"] = True
                    blocks.append(block)
            role = "assistant" if message.role == "assistant" else "user"  # tool results go in a user turn
            if not blocks:
                continue
            if messages and messages[-1]["role"] == role:
                messages[-1]["content"].extend(blocks)  # the API wants roles to alternate
            else:
                messages.append({"role": role, "content": blocks})
        body: dict[str, Any] = {"model": request.model, "max_tokens": request.max_tokens, "messages": messages,
                                "stream": True}
        if request.system:
            body["system"] = request.system
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.tools:
            body["tools"] = [{"name": t.name, "description": t.description, "input_schema": t.input_schema}
                             for t in request.tools]
        return body

    async def events(self, response: httpx.Response) -> AsyncIterator[LlmEvent]:
        parser = SSEParser()
        calls = ToolCalls()
        input_tokens = output_tokens = 0
        reason: str | None = None
        saw_tool = False
        chunks = response.aiter_bytes()
        async for chunk in chunks:
            for sse in parser.feed_bytes(chunk):
                if sse.event == "ping":
                    continue
                data = decode_json(sse.data, f"the data of a {sse.event!r} event")
                if not isinstance(data, dict):
                    continue
                kind = data.get("type", sse.event)
                if kind == "content_block_delta":
                    delta = data.get("delta") or {}
                    dtype = delta.get("type")
                    if dtype == "text_delta":
                        yield TextDelta(text=delta.get("text", ""))
                    elif dtype == "input_json_delta":
                        index = data.get("index", 0)
                        if index in calls:
                            yield calls.delta(index, delta.get("partial_json", ""))
                elif kind == "content_block_start":
                    block = data.get("content_block") or {}
                    if block.get("type") == "tool_use":
                        saw_tool = True
                        yield calls.start(data.get("index", 0), block.get("id", ""), block.get("name", ""))
                elif kind == "content_block_stop":
                    index = data.get("index", 0)
                    if index in calls:
                        yield calls.end(index)
                elif kind == "message_start":
                    message = data.get("message") or {}
                    usage = message.get("usage") or {}
                    input_tokens = int(usage.get("input_tokens") or 0) + int(
                        usage.get("cache_read_input_tokens") or 0) + int(usage.get("cache_creation_input_tokens") or 0)
                    output_tokens = int(usage.get("output_tokens") or 0)
                    yield MessageStart(model=message.get("model", ""))
                elif kind == "message_delta":
                    reason = (data.get("delta") or {}).get("stop_reason") or reason
                    usage = data.get("usage") or {}
                    output_tokens = int(usage.get("output_tokens") or output_tokens)
                    if usage.get("input_tokens"):
                        input_tokens = int(usage["input_tokens"])
                elif kind == "message_stop":
                    for index in calls.open_indexes():
                        yield calls.end(index)
                    yield UsageEvent(inputTokens=input_tokens, outputTokens=output_tokens)
                    yield StopEvent(reason=stop_reason(reason, saw_tool and reason is None))
                    await drain(chunks)
                    return
                elif kind == "error":
                    error = data.get("error") or {}
                    yield ErrorEvent(message=str(error.get("message", "")), errorType=error.get("type"))
                    return

    def parse_models(self, data: Any) -> list[str]:
        return [str(m["id"]) for m in (data.get("data") or []) if isinstance(m, dict) and "id" in m]
