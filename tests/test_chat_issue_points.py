"""Points of the chat issue (7) that had no test that would fail if they broke: the SDKs' base
URLs, temperature and maxTokens reaching the provider, the built-in file and search tools run in
a tool round, usage grouped by project and agent, timeouts taken from settings (also once the
client exists), the precise providers/test failures (not found, TLS, timeout), OpenAI's model
list, and audit retention. In process (tests/harness.py) against the fixture server."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from sidecar.llm.providers import adapter_for
from sidecar.llm.service import ProvidersService, config_of
from tests.harness import RpcError
from tests.support.chat import daemon_with_chat
from tests.support.http_fixture import HttpFixtureServer, Response

pytestmark = pytest.mark.anyio
FIXTURES = Path(__file__).parent / "fixtures" / "llm"
_START = (b'event: message_start\ndata: {"type":"message_start","message":{"model":"m","usage":'
          b'{"input_tokens":3}}}\n\n')


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def text_reply() -> Response:
    return Response.from_file(FIXTURES / "anthropic_text.sse", headers={"content-type": "text/event-stream"})


def tool_use(name: str, arguments: dict[str, Any]) -> Response:
    return Response.sse([
        ("message_start", {"type": "message_start", "message": {"model": "m", "usage": {"input_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "tool_use", "id": f"t_{name}", "name": name}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "input_json_delta", "partial_json": json.dumps(arguments)}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                           "usage": {"output_tokens": 2}}),
        ("message_stop", {"type": "message_stop"})])


async def test_default_base_urls_follow_each_official_sdk(tmp_path: Path) -> None:
    async with daemon_with_chat(tmp_path) as daemon:
        urls = {}
        for kind in ("anthropic", "openai", "ollama"):
            made = await daemon.call("providers/configure", {"id": kind, "kind": kind, "model": "m"})
            row = await daemon.platform.find(ProvidersService).store.get_provider(kind)
            urls[kind] = (made["baseUrl"], adapter_for(kind).chat_url(config_of(row)))
    assert urls == {"anthropic": ("https://api.anthropic.com", "https://api.anthropic.com/v1/messages"),
                    "openai": ("https://api.openai.com/v1", "https://api.openai.com/v1/chat/completions"),
                    "ollama": ("http://127.0.0.1:11434", "http://127.0.0.1:11434/api/chat")}


async def test_temperature_and_max_tokens_reach_the_provider(tmp_path: Path, http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("POST", "/v1/messages", text_reply())
    async with daemon_with_chat(tmp_path) as daemon:
        await daemon.call("providers/configure", {"id": "main", "kind": "anthropic", "model": "claude-sonnet-4-5",
                                                  "baseUrl": http_fixture.url, "maxOutputTokens": 2000})
        await daemon.call("chat/send", {"message": "hi", "temperature": 0.25, "maxTokens": 300, "tools": False})
        await daemon.call("chat/send", {"message": "hi", "maxTokens": 9000, "tools": False})
        first, second = (r.json() for r in http_fixture.requests)
        assert (first["temperature"], first["max_tokens"]) == (0.25, 300)
        assert "temperature" not in second and second["max_tokens"] == 2000  # the provider's bound holds


async def test_builtin_file_and_search_tools_in_a_project_turn_and_usage_by_project_and_agent(
        tmp_path: Path, http_fixture: HttpFixtureServer) -> None:
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "reader.md").write_text("---\nname: reader\ndescription: Reads files.\n---\nYou read files.\n")
    http_fixture.route("POST", "/v1/messages", text_reply(),  # an earlier conversation to find
                       tool_use("builtin__project_file_read", {"path": "notes/plan.md"}),
                       tool_use("builtin__conversation_search", {"query": "hello", "limit": 3}),
                       tool_use("builtin__project_file_read", {"path": "missing.md"}),
                       text_reply())
    async with daemon_with_chat(tmp_path) as daemon:
        await daemon.call("settings/set", {"key": "agents.paths", "value": [str(agents)]})
        await daemon.call("agents/reload")
        await daemon.call("providers/configure", {"id": "main", "kind": "anthropic", "model": "claude-sonnet-4-5",
                                                  "baseUrl": http_fixture.url})
        earlier = await daemon.call("chat/send", {"message": "say hello", "tools": False})
        project = await daemon.call("projects/create", {"name": "p"})
        await daemon.call("projects/files/put", {"projectId": project["id"], "path": "notes/plan.md",
                                                 "text": "Step one: write the plan."})
        result = await daemon.call("chat/send", {"message": "read my plan", "projectId": project["id"],
                                                 "agent": "reader"})
        read, search, missing = result["toolCalls"]
        assert read["result"] == "Step one: write the plan." and not read.get("isError")
        hits = json.loads(search["result"])
        assert earlier["conversationId"] in {h["conversationId"] for h in hits} and not search.get("isError")
        assert missing["isError"] and "missing.md" in missing["result"]
        # what the model got back is what was streamed and stored
        sent = [r.json()["messages"][-1]["content"][0] for r in http_fixture.requests[2:]]
        assert [s["content"] for s in sent[:1]] == ["Step one: write the plan."]
        by_project = {r["key"]: r["calls"] for r in (await daemon.call("usage/summary", {"groupBy": "project"}))[
            "rows"]}
        by_agent = {r["key"]: r["calls"] for r in (await daemon.call("usage/summary", {"groupBy": "agent"}))["rows"]}
        assert by_project.get(project["id"]) == 4 and by_agent.get("reader") == 4
        assert sum(by_project.values()) == sum(by_agent.values()) == 5


async def test_read_timeout_comes_from_settings_even_once_the_client_exists(
        tmp_path: Path, http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("POST", "/v1/messages", text_reply(),
                       Response(200, {"content-type": "text/event-stream"}, [_START], chunked=True, stall=True))
    async with daemon_with_chat(tmp_path) as daemon:
        await daemon.call("providers/configure", {"id": "main", "kind": "anthropic", "model": "claude-sonnet-4-5",
                                                  "baseUrl": http_fixture.url})
        await daemon.call("chat/send", {"message": "hi", "tools": False})  # the client is made now
        await daemon.call("settings/set", {"key": "llm.readTimeoutSeconds", "value": 1})
        await daemon.call("settings/set", {"key": "llm.maxRetries", "value": 0})
        with pytest.raises(RpcError) as info:
            await daemon.call("chat/send", {"message": "hi", "tools": False}, timeout=30)
        assert info.value.kind == "provider_error" and info.value.error["data"]["details"]["type"] == "ReadTimeout"
        tested = await daemon.call("providers/test", {"id": "main"}, timeout=30)
        assert tested["failure"] == "timeout" and not tested["ok"]


def answer_in_plain_http(listener: socket.socket) -> None:
    with listener:
        conn, _ = listener.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")


async def test_providers_test_names_not_found_and_tls_and_openai_lists_models(
        tmp_path: Path, http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("POST", "/v1/messages", Response.json({"type": "error", "error": {
        "type": "not_found_error", "message": "model: nope"}}, 404))
    http_fixture.route("GET", "/v1/models", Response.json({"object": "list", "data": [
        {"id": "gpt-4o-mini", "object": "model"}, {"id": "gpt-4.1", "object": "model"}]}))
    async with daemon_with_chat(tmp_path) as daemon:
        await daemon.call("providers/configure", {"id": "gone", "kind": "anthropic", "model": "nope",
                                                  "baseUrl": http_fixture.url})
        # a server that answers a TLS hello in plain HTTP: the handshake fails
        listener = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=answer_in_plain_http, args=(listener,), daemon=True).start()
        await daemon.call("providers/configure", {"id": "tls", "kind": "anthropic", "model": "m",
                                                  "baseUrl": f"https://127.0.0.1:{listener.getsockname()[1]}"})
        await daemon.call("providers/configure", {"id": "oa", "kind": "openai", "model": "gpt-4o-mini",
                                                  "baseUrl": http_fixture.url + "/v1"})
        gone = await daemon.call("providers/test", {"id": "gone"})
        assert (gone["ok"], gone["failure"], gone["status"]) == (False, "not_found", 404)
        tls = await daemon.call("providers/test", {"id": "tls"})
        assert (tls["ok"], tls["failure"]) == (False, "tls")
        assert (await daemon.call("providers/models", {"id": "oa"}))["models"] == ["gpt-4o-mini", "gpt-4.1"]


async def test_audit_retention_drops_entries_older_than_the_setting(tmp_path: Path,
                                                                    http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("POST", "/v1/messages", text_reply())
    async with daemon_with_chat(tmp_path) as daemon:
        await daemon.call("providers/configure", {"id": "main", "kind": "anthropic", "model": "claude-sonnet-4-5",
                                                  "baseUrl": http_fixture.url})
        await daemon.call("chat/send", {"message": "old", "tools": False})
        await daemon.call("chat/send", {"message": "recent", "tools": False})
        old, recent = sorted((await daemon.call("audit/list"))["entries"], key=lambda e: e["at"])
        db = daemon.platform.db
        await db.execute("UPDATE llm_usage SET at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-40 days') WHERE id = ?",
                         (old["id"],))
        await daemon.call("settings/set", {"key": "llm.audit.retentionDays", "value": 30})
        await daemon.call("chat/send", {"message": "new", "tools": False})
        kept = {e["id"] for e in (await daemon.call("audit/list"))["entries"]}
        assert old["id"] not in kept and recent["id"] in kept and len(kept) == 2
        with pytest.raises(RpcError) as info:
            await daemon.call("audit/get", {"id": old["id"]})
        assert info.value.kind == "not_found"
        # the usage row stays: only the audit text has a retention
        days = await daemon.call("usage/summary", {"groupBy": "provider"})
        assert days["rows"][0]["calls"] == 3


async def test_a_rate_limited_provider_still_stores_the_turn(tmp_path: Path, http_fixture: HttpFixtureServer) -> None:
    """With a requests-per-minute bucket the opening rows do not wait for the request (the
    bucket may hold it): the turn is stored as without one."""
    http_fixture.route("POST", "/v1/messages", text_reply())
    async with daemon_with_chat(tmp_path) as daemon:
        await daemon.call("providers/configure", {"id": "main", "kind": "anthropic", "model": "claude-sonnet-4-5",
                                                  "baseUrl": http_fixture.url, "requestsPerMinute": 60})
        result = await daemon.call("chat/send", {"message": "hi", "tools": False})
        got = await daemon.call("conversations/get", {"id": result["conversationId"]})
        assert [(m["role"], m["status"]) for m in got["messages"]] == [("user", "complete"), ("assistant", "complete")]
        assert got["messages"][1]["id"] == result["messageId"] and result["text"] == "Hello!"


async def test_urls_headers_and_keys_that_cannot_be_sent_are_refused_up_front(tmp_path: Path) -> None:
    """Found by the params fuzz: these once answered -32603, at once or on every later call."""
    async with daemon_with_chat(tmp_path) as daemon:
        for url in ("http://[::1", "http://127.0.0.1:9/\u0000", "ftp://127.0.0.1"):
            with pytest.raises(RpcError) as info:
                await daemon.call("providers/detect", {"baseUrl": url})
            assert info.value.kind == "invalid_params" and "baseUrl" in str(info.value)
            with pytest.raises(RpcError) as info:
                await daemon.call("providers/configure", {"id": "u", "kind": "ollama", "model": "m", "baseUrl": url})
            assert info.value.kind == "invalid_params"
        bad = [({"apiKey": "é"}, "apiKey"), ({"headers": {"x-é": "1"}}, "header name"),
               ({"headers": {"x-a": "é"}}, "header x-a"), ({"headers": {"": "1"}}, "header name")]
        for extra, named in bad:
            with pytest.raises(RpcError) as info:
                await daemon.call("providers/configure", {"id": "h", "kind": "anthropic", "model": "m", **extra})
            assert info.value.kind == "invalid_params" and named in str(info.value)
        assert (await daemon.call("providers/list", {}))["providers"] == []
        # a key replaced behind configure's back (secrets/set) is refused by name, not sent
        await daemon.call("providers/configure", {"id": "h", "kind": "anthropic", "model": "m", "apiKey": "sk-ok",
                                                  "baseUrl": "http://127.0.0.1:9"})
        await daemon.call("secrets/set", {"name": "llm.provider.h.apiKey", "value": "é"})
        with pytest.raises(RpcError) as info:
            await daemon.call("providers/test", {"id": "h"}, timeout=30)
        assert info.value.kind == "unavailable" and "not printable ASCII" in str(info.value)
