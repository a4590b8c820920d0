"""chat end to end: the real daemon as a subprocess, over stdio, against the fixture server."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sidecar.client import DaemonClient
from tests.support.http_fixture import HttpFixtureServer, Response

FIXTURES = Path(__file__).parent / "fixtures" / "llm"


def drain(client: DaemonClient) -> list[dict[str, Any]]:
    out = []
    while True:
        try:
            out.append(client.notifications.get_nowait())
        except queue.Empty:
            return out


def test_chat_over_stdio_streams_and_cancels(spawn: Callable[..., DaemonClient],
                                             http_fixture: HttpFixtureServer) -> None:
    key = "sk-ant-e2e-SECRET-abcdef"
    http_fixture.route("POST", "/v1/messages",
                       Response.from_file(FIXTURES / "anthropic_text.sse", chunk_size=16,
                                          headers={"content-type": "text/event-stream"}),
                       Response(200, {"content-type": "text/event-stream"},
                                [b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
                                 b'"delta":{"type":"text_delta","text":"so far"}}\n\n'], chunked=True, stall=True))
    client = spawn()
    made = client.request("providers/configure", {"id": "claude", "kind": "anthropic", "model": "claude-sonnet-4-5",
                                                  "baseUrl": http_fixture.url, "apiKey": key})
    assert made["isDefault"] and "apiKey" not in made
    result = client.request("chat/send", {"message": "Hello?"}, timeout=30)
    assert result["text"] == "Hello!" and result["usage"] == {"inputTokens": 25, "outputTokens": 15}
    streamed = [n for n in drain(client) if n["method"] == "chat/delta"]
    assert "".join(n["params"].get("text", "") for n in streamed if n["params"]["type"] == "text_delta") == "Hello!"
    assert all(n["params"]["requestId"] == streamed[0]["params"]["requestId"] for n in streamed)

    # cancel mid-stream: -32800, the provider sees the disconnect
    request_id = client.next_id()
    waiter = client.expect(request_id)
    client.send({"jsonrpc": "2.0", "id": request_id, "method": "chat/send",
                 "params": {"message": "more", "conversationId": result["conversationId"]}})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        note = client.notifications.get(timeout=10)
        if note["params"].get("type") == "text_delta":
            break
    client.notify("$/cancelRequest", {"id": request_id})
    answer = client.wait(request_id, waiter, timeout=10)
    assert answer["error"]["code"] == -32800
    assert http_fixture.requests[1].wait_disconnected(5)
    audit = client.request("audit/list", {"conversationId": result["conversationId"]})
    assert [e["outcome"] for e in audit["entries"]] == ["cancelled", "ok"]
    assert key not in repr(client.request("audit/get", {"id": audit["entries"][1]["id"]}))
