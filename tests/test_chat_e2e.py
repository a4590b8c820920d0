"""chat end to end: the real daemon as a subprocess, over stdio, against the fixture server."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sidecar.client import DaemonClient
from tests.support.http_fixture import Chunk, HttpFixtureServer, Response

FIXTURES = Path(__file__).parent / "fixtures" / "llm"


def drain(client: DaemonClient) -> list[dict[str, Any]]:
    out = []
    while True:
        try:
            out.append(client.notifications.get_nowait())
        except queue.Empty:
            return out


def test_chat_over_stdio_streams_and_cancels(spawn: Callable[..., DaemonClient], http_fixture: HttpFixtureServer,
                                             data_dir: Path) -> None:
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
    # a refused key: the error names the failure, never the key; nor does the daemon's log
    http_fixture.route("POST", "/v1/messages", Response.json({"type": "error", "error": {
        "type": "authentication_error", "message": f"invalid x-api-key {key}"}}, 401))
    refused = client.call("chat/send", {"message": "again", "tools": False})
    assert refused["error"]["data"]["kind"] == "provider_error" and key not in repr(refused)
    assert client.close() == 0
    log_text = (data_dir / "logs" / "sidecar.log").read_text()
    assert "provider claude configured" in log_text and key not in log_text


def test_a_crash_mid_stream_leaves_the_reply_incomplete(spawn: Callable[..., DaemonClient],
                                                        http_fixture: HttpFixtureServer) -> None:
    """kill -9 while the provider still streams: after a restart on the same data dir the reply
    is there, with what was checkpointed, marked `incomplete` (not left `streaming`)."""
    delta = (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
             b'"delta":{"type":"text_delta","text":"%s"}}\n\n')
    http_fixture.route("POST", "/v1/messages", Response(200, {"content-type": "text/event-stream"}, [
        Chunk(b'event: message_start\ndata: {"type":"message_start","message":{"model":"m","usage":'
              b'{"input_tokens":3}}}\n\n'),
        Chunk(delta % b"checkpointed "),
        Chunk(delta % b"text", delay=0.2),  # > llm.checkpointMs after the round began: a checkpoint
    ], chunked=True, stall=True))
    client = spawn()
    client.request("providers/configure", {"id": "claude", "kind": "anthropic", "model": "claude-sonnet-4-5",
                                           "baseUrl": http_fixture.url})
    client.request("settings/set", {"key": "llm.checkpointMs", "value": 100})
    conversation = client.request("conversations/create", {"title": "crash"})["id"]
    client.send({"jsonrpc": "2.0", "id": 500, "method": "chat/send",
                 "params": {"message": "tell me", "conversationId": conversation}})

    def reply() -> dict[str, Any] | None:
        messages = client.request("conversations/get", {"id": conversation})["messages"]
        return next((m for m in messages if m["role"] == "assistant"), None)

    deadline = time.monotonic() + 15
    while True:  # the checkpoint is in the database, the reply still streaming
        message = reply()
        text = "".join(part.get("text", "") for part in message["content"]) if message else ""
        if message and text == "checkpointed text":
            assert message["status"] == "streaming"
            break
        assert time.monotonic() < deadline, f"no checkpoint within 15 s: {message}"
        time.sleep(0.05)
    client.proc.kill()  # SIGKILL: no shutdown path runs
    assert client.proc.wait(timeout=10) == -9
    assert http_fixture.requests[0].wait_disconnected(5)

    again = spawn()
    (user, assistant) = again.request("conversations/get", {"id": conversation})["messages"]
    assert (user["role"], user["status"]) == ("user", "complete")
    assert assistant["status"] == "incomplete"
    assert assistant["content"] == [{"type": "text", "text": "checkpointed text"}]
    # the next turn sends the incomplete reply's text as history
    http_fixture.route("POST", "/v1/messages", Response.from_file(FIXTURES / "anthropic_text.sse",
                                                                  headers={"content-type": "text/event-stream"}))
    again.request("chat/send", {"message": "go on", "conversationId": conversation}, timeout=30)
    sent = http_fixture.requests[-1].json()["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[1]["content"] == [{"type": "text", "text": "checkpointed text"}]


def test_detect_and_pull_over_stdio(spawn: Callable[..., DaemonClient], http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("GET", "/api/tags", Response.json({"models": [{"name": "llama3.2:latest"}]}))
    http_fixture.route("POST", "/api/pull", Response.from_file(FIXTURES / "ollama_pull.ndjson", chunk_size=200,
                                                               headers={"content-type": "application/x-ndjson"},
                                                               chunked=True))
    client = spawn()
    client.request("providers/configure", {"id": "local", "kind": "ollama", "model": "llama3.2",
                                           "baseUrl": http_fixture.url})
    found = client.request("providers/detect", timeout=30)["found"]
    assert {"baseUrl": http_fixture.url, "models": ["llama3.2:latest"], "providers": ["local"]}.items() <= \
        next(f for f in found if f["baseUrl"] == http_fixture.url).items()
    result = client.request("providers/pull", {"id": "local", "model": "llama3.2"}, timeout=30)
    assert result["status"] == "success" and result["bytes"] == 2019393189
    notes = [n["params"] for n in drain(client) if n["method"] == "providers/pullProgress"]
    assert notes[0]["status"] == "pulling manifest" and notes[-1]["status"] == "success"
    assert [n["seq"] for n in notes] == list(range(len(notes)))
