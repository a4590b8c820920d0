"""OpenAI-compatible chat completions, streamed as SSE (`POST {base}/chat/completions`).

Also LM Studio, vLLM, OpenRouter and llama.cpp's server, by base URL. Text arrives in
`choices[0].delta.content`; tool calls in `delta.tool_calls[]` by index (id and name in the
first fragment, `function.arguments` split over many); `finish_reason` ends the choice; usage
comes in a last chunk with empty `choices` (`stream_options.include_usage`); `data: [DONE]`
ends the stream.
"""

from __future__ import annotations

import json
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


class OpenAIAdapter(Adapter):
    kind = "openai"
    default_base_url = "https://api.openai.com/v1"

    def chat_url(self, config: ProviderConfig) -> str:
        return config.base_url.rstrip("/") + "/chat/completions"

    def models_url(self, config: ProviderConfig) -> str:
        return config.base_url.rstrip("/") + "/models"

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        return {"authorization": f"Bearer {api_key}"} if api_key else {}

    def chat_body(self, request: ChatRequest) -> dict[str, Any]:
        messages: list[dict[str, Any]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        for message in request.messages:
            texts = [p.text for p in message.parts if isinstance(p, TextPart)]
            calls = [p for p in message.parts if isinstance(p, ToolCallPart)]
            results = [p for p in message.parts if isinstance(p, ToolResultPart)]
            if message.role == "assistant":
                out: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
                if calls:
                    out["tool_calls"] = [{"id": c.id, "type": "function",
                                          "function": {"name": c.name, "arguments": json.dumps(c.arguments or {})}}
                                         for c in calls]
                messages.append(out)
            elif results:
                for r in results:
                    content = f"Error: {r.content}" if r.isError else r.content
                    messages.append({"role": "tool", "tool_call_id": r.toolCallId, "content": content})
            else:
                messages.append({"role": "user", "content": "".join(texts)})
        body: dict[str, Any] = {"model": request.model, "messages": messages, "stream": True,
                                "stream_options": {"include_usage": True}, "max_tokens": request.max_tokens}
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.tools:
            body["tools"] = [{"type": "function", "function": {"name": t.name, "description": t.description,
                                                                "parameters": t.input_schema}}
                             for t in request.tools]
        return body

    async def events(self, response: httpx.Response) -> AsyncIterator[LlmEvent]:
        parser = SSEParser()
        calls = ToolCalls()
        started = False
        finish: str | None = None
        usage: dict[str, Any] | None = None
        saw_tool = False
        done = False
        chunks = response.aiter_bytes()
        async for chunk in chunks:
            for sse in parser.feed_bytes(chunk):
                if sse.data == "[DONE]":
                    done = True
                    break
                data = decode_json(sse.data, "a chunk")
                if not isinstance(data, dict):
                    continue
                if data.get("error"):
                    error = data["error"] if isinstance(data["error"], dict) else {"message": str(data["error"])}
                    yield ErrorEvent(message=str(error.get("message", "")),
                                     errorType=error.get("type") or error.get("code"))
                    return
                if not started:
                    started = True
                    yield MessageStart(model=data.get("model", ""))
                for choice in data.get("choices") or ():
                    delta = choice.get("delta") or {}
                    content = delta.get("content")
                    if content:
                        yield TextDelta(text=content)
                    for tc in delta.get("tool_calls") or ():
                        index = tc.get("index", 0)
                        function = tc.get("function") or {}
                        if index not in calls:
                            saw_tool = True
                            yield calls.start(index, tc.get("id") or f"call_{index}", function.get("name") or "")
                        arguments = function.get("arguments")
                        if arguments:
                            yield calls.delta(index, arguments)
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
                        for index in calls.open_indexes():
                            yield calls.end(index)
                if data.get("usage"):
                    usage = data["usage"]
            if done:
                break
        if not done and finish is None:
            return  # cut short: the caller reports an incomplete stream
        for index in calls.open_indexes():
            yield calls.end(index)
        usage = usage or {}
        yield UsageEvent(inputTokens=int(usage.get("prompt_tokens") or 0),
                         outputTokens=int(usage.get("completion_tokens") or 0))
        yield StopEvent(reason=stop_reason(finish, saw_tool))
        await drain(chunks)

    def parse_models(self, data: Any) -> list[str]:
        return [str(m["id"]) for m in (data.get("data") or []) if isinstance(m, dict) and "id" in m]
