"""Ollama's `/api/chat`, streamed as NDJSON: one JSON object per line, `message.content` pieces,
tool calls whole (`message.tool_calls[].function.arguments` is an object), and a last object
with `done: true`, `done_reason`, `prompt_eval_count` and `eval_count`."""

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
from sidecar.llm.sse import aiter_ndjson_lines

if TYPE_CHECKING:
    import httpx


class OllamaAdapter(Adapter):
    kind = "ollama"
    default_base_url = "http://127.0.0.1:11434"

    def chat_url(self, config: ProviderConfig) -> str:
        return config.base_url.rstrip("/") + "/api/chat"

    def models_url(self, config: ProviderConfig) -> str:
        return config.base_url.rstrip("/") + "/api/tags"

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        return {"authorization": f"Bearer {api_key}"} if api_key else {}

    def chat_body(self, request: ChatRequest) -> dict[str, Any]:
        messages: list[dict[str, Any]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        names: dict[str, str] = {}
        for message in request.messages:
            texts = "".join(p.text for p in message.parts if isinstance(p, TextPart))
            calls = [p for p in message.parts if isinstance(p, ToolCallPart)]
            results = [p for p in message.parts if isinstance(p, ToolResultPart)]
            if message.role == "assistant":
                out: dict[str, Any] = {"role": "assistant", "content": texts}
                if calls:
                    for c in calls:
                        names[c.id] = c.name
                    out["tool_calls"] = [{"function": {"name": c.name, "arguments": c.arguments or {}}}
                                         for c in calls]
                messages.append(out)
            elif results:
                for r in results:
                    out = {"role": "tool", "content": f"Error: {r.content}" if r.isError else r.content}
                    if r.toolCallId in names:
                        out["tool_name"] = names[r.toolCallId]
                    messages.append(out)
            else:
                messages.append({"role": "user", "content": texts})
        options: dict[str, Any] = {"num_predict": request.max_tokens}
        if request.temperature is not None:
            options["temperature"] = request.temperature
        body: dict[str, Any] = {"model": request.model, "messages": messages, "stream": True, "options": options}
        if request.tools:
            body["tools"] = [{"type": "function", "function": {"name": t.name, "description": t.description,
                                                                "parameters": t.input_schema}}
                             for t in request.tools]
        return body

    async def events(self, response: httpx.Response) -> AsyncIterator[LlmEvent]:
        calls = ToolCalls()
        started = False
        count = 0
        lines = aiter_ndjson_lines(response.aiter_bytes())
        async for line in lines:
            data = decode_json(line, "a line")
            if not isinstance(data, dict):
                continue
            if data.get("error"):
                yield ErrorEvent(message=str(data["error"]), errorType="ollama_error")
                return
            if not started:
                started = True
                yield MessageStart(model=data.get("model", ""))
            message = data.get("message") or {}
            if message.get("content"):
                yield TextDelta(text=message["content"])
            for tc in message.get("tool_calls") or ():
                function = tc.get("function") or {}
                arguments = function.get("arguments")
                text = arguments if isinstance(arguments, str) else json.dumps(arguments or {})
                yield calls.start(count, tc.get("id") or f"call_{count}", function.get("name") or "")
                yield calls.delta(count, text)
                yield calls.end(count)
                count += 1
            if data.get("done"):
                yield UsageEvent(inputTokens=int(data.get("prompt_eval_count") or 0),
                                 outputTokens=int(data.get("eval_count") or 0))
                yield StopEvent(reason=stop_reason(data.get("done_reason"), count > 0))
                await drain(lines)
                return

    def parse_models(self, data: Any) -> list[str]:
        return [str(m.get("name") or m.get("model")) for m in (data.get("models") or []) if isinstance(m, dict)]
