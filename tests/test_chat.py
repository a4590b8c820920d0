"""chat/send, providers/*, usage/*, audit/*, mcp/servers/* through the real session and router
in process (tests/harness.py), against recorded provider streams served on 127.0.0.1."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from sidecar.projects.service import ProjectsService
from tests.harness import InProcessDaemon, RpcError
from tests.support.chat import daemon_with_chat
from tests.support.http_fixture import HttpFixtureServer, Response, ndjson_lines

pytestmark = pytest.mark.anyio
FIXTURES = Path(__file__).parent / "fixtures" / "llm"
MCP_SERVER = Path(__file__).parent / "mcp_servers" / "tools_server.py"
KEY = "sk-ant-test-SECRETKEY-0123456789"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def sse(name: str, **kw: Any) -> Response:
    return Response.from_file(FIXTURES / name, headers={"content-type": "text/event-stream"}, **kw)


async def configure(daemon: InProcessDaemon, server: HttpFixtureServer, kind: str = "anthropic",
                    pid: str = "main", **extra: Any) -> dict[str, Any]:
    base = server.url + ("/v1" if kind == "openai" else "")
    params = {"id": pid, "kind": kind, "model": "claude-sonnet-4-5", "baseUrl": base, **extra}
    if kind == "anthropic":
        params.setdefault("apiKey", KEY)
    return await daemon.call("providers/configure", params)


def deltas(daemon: InProcessDaemon) -> list[dict[str, Any]]:
    return [n["params"] for n in daemon.notifications if n["method"] == "chat/delta"]


def projects(daemon: InProcessDaemon) -> ProjectsService:
    service = daemon.platform.find(ProjectsService)
    assert service is not None
    return service


async def test_provider_config_keeps_the_key_secret(tmp_path: Path, http_fixture: HttpFixtureServer) -> None:
    async with daemon_with_chat(tmp_path) as daemon:
        made = await configure(daemon, http_fixture, headers={"x-org": "o-1"})
        assert made["hasApiKey"] and made["isDefault"] and made["headerNames"] == ["x-org"]
        assert made["contextWindow"] == 200_000 and made["maxOutputTokens"] == 4096
        listed = await daemon.call("providers/list")
        got = await daemon.call("providers/get", {"id": "main"})
        secrets = await daemon.call("secrets/list")
        assert [s["name"] for s in secrets["secrets"]] == ["llm.provider.main.apiKey"]
        assert listed["default"] == "main" and KEY not in repr(listed) + repr(got) + repr(daemon.notifications)
        # a second provider, made default; the first keeps its key when apiKey is omitted
        await configure(daemon, http_fixture, "ollama", "local", model="llama3.2", makeDefault=True)
        await daemon.call("providers/configure", {"id": "main", "kind": "anthropic", "model": "claude-x",
                                                  "baseUrl": http_fixture.url})
        assert (await daemon.call("providers/get", {"id": "main"}))["hasApiKey"] is True
        assert (await daemon.call("providers/list"))["default"] == "local"
        with pytest.raises(RpcError) as info:
            await daemon.call("providers/configure", {"id": "bad", "kind": "openai", "model": "m", "baseUrl": "ftp://x"})
        assert info.value.error["data"]["path"] == "$.params.baseUrl"
        await daemon.call("providers/delete", {"id": "main"})
        assert (await daemon.call("secrets/list"))["secrets"] == []
        with pytest.raises(RpcError) as info:
            await daemon.call("providers/get", {"id": "main"})
        assert info.value.kind == "not_found"


async def test_chat_streams_returns_the_turn_and_stores_the_conversation(tmp_path: Path,
                                                                         http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("POST", "/v1/messages", sse("anthropic_text.sse", chunk_size=9))
    async with daemon_with_chat(tmp_path) as daemon:
        await configure(daemon, http_fixture)
        result = await daemon.call("chat/send", {"message": "Say hello"})
        assert result["text"] == "Hello!" and result["stopReason"] == "end_turn"
        assert result["usage"] == {"inputTokens": 25, "outputTokens": 15} and result["provider"] == "main"
        assert result["model"] == "claude-sonnet-4-5-20250929" and result["firstTokenMs"] > 0
        assert result["totalMs"] >= result["firstTokenMs"] and result.get("rounds", 1) == 1
        events = deltas(daemon)
        assert [e["seq"] for e in events] == list(range(len(events)))
        assert [e["type"] for e in events] == ["message_start", "text_delta", "text_delta", "usage", "stop"]
        assert events[0]["provider"] == "main"
        conversation, rows, _ = await projects(daemon).get_conversation(result["conversationId"])
        assert conversation.title == "Say hello"
        assert [(r.role, r.status) for r in rows] == [("user", "complete"), ("assistant", "complete")]
        assert rows[1].id == result["messageId"] and rows[1].input_tokens == 25
        sent = http_fixture.requests[0]
        assert sent.header("x-api-key") == KEY
        # the next message continues the conversation with its history
        second = await daemon.call("chat/send", {"message": "Again", "conversationId": result["conversationId"]})
        body = http_fixture.requests[1].json()
        assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
        assert body["messages"][1]["content"] == [{"type": "text", "text": "Hello!"}]
        assert second["conversationId"] == result["conversationId"]
        # found again by search
        page = await projects(daemon).search_messages("hello")
        assert {row[1] for row in page.items} == {result["conversationId"]}


async def test_cancel_closes_the_stream_and_stores_the_partial_reply(tmp_path: Path,
                                                                     http_fixture: HttpFixtureServer) -> None:
    endless = Response(200, {"content-type": "text/event-stream"},
                       [b'event: message_start\ndata: {"type":"message_start","message":{"model":"m","usage":'
                        b'{"input_tokens":3}}}\n\n',
                        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":'
                        b'{"type":"text_delta","text":"partial "}}\n\n'], chunked=True, stall=True)
    http_fixture.route("POST", "/v1/messages", endless)
    async with daemon_with_chat(tmp_path) as daemon:
        await configure(daemon, http_fixture)
        request_id = 999
        daemon.send({"jsonrpc": "2.0", "id": request_id, "method": "chat/send", "params": {"message": "go on"}})
        with anyio.fail_after(10):
            while not any(e["type"] == "text_delta" for e in deltas(daemon)):
                await anyio.sleep(0.01)
        daemon.notify("$/cancelRequest", {"id": request_id})
        with anyio.fail_after(10):
            while request_id not in daemon._answers:
                await anyio.sleep(0.01)
        answer = daemon._answers.pop(request_id)
        assert answer["error"]["code"] == -32800
        req = http_fixture.requests[0]
        assert await anyio.to_thread.run_sync(req.wait_disconnected, 5), "the provider never saw the disconnect"
        conversations = await projects(daemon).list_conversations()
        (conversation,) = conversations.items
        _, rows, _ = await projects(daemon).get_conversation(conversation.id)
        assert [(r.role, r.status) for r in rows] == [("user", "complete"), ("assistant", "cancelled")]
        assert "partial " in rows[1].content
        summary = await daemon.call("usage/summary", {"groupBy": "provider"})
        assert summary["rows"][0]["calls"] == 1
        audit = await daemon.call("audit/list")
        assert audit["entries"][0]["outcome"] == "cancelled"


async def test_tool_round_with_builtin_tool(tmp_path: Path, http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("POST", "/v1/messages", sse("anthropic_tool.sse", chunk_size=11), sse("anthropic_text.sse"))
    async with daemon_with_chat(tmp_path) as daemon:
        await configure(daemon, http_fixture)
        result = await daemon.call("chat/send", {"message": "What time is it?"})
        assert result["rounds"] == 2 and result["text"] == "Okay, let's check the time.Hello!"
        (call,) = result["toolCalls"]
        assert call["name"] == "builtin__current_time" and call["arguments"] == {"timezone": "UTC"}
        assert '"iso"' in call["result"] and not call.get("isError")
        types = [e["type"] for e in deltas(daemon)]
        assert types.count("message_start") == 2 and "tool_result" in types
        assert types.index("tool_call_end") < types.index("tool_result") < types.index("message_start", 1)
        first, second = (r.json() for r in http_fixture.requests)
        assert "builtin__current_time" in {t["name"] for t in first["tools"]}
        tool_result = second["messages"][-1]["content"][0]
        assert tool_result["type"] == "tool_result" and tool_result["tool_use_id"] == "toolu_01T1x1fJ34qAmk2tNTrN7Up6"
        _, rows, _ = await projects(daemon).get_conversation(result["conversationId"])
        assert [r.role for r in rows] == ["user", "assistant", "tool", "assistant"]
        assert result["usage"] == {"inputTokens": 472 + 25, "outputTokens": 89 + 15}


async def test_a_tool_the_agent_may_not_use_is_an_error_for_the_model(tmp_path: Path,
                                                                      http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("POST", "/v1/messages", sse("anthropic_tool.sse"), sse("anthropic_text.sse"))
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "pirate.md").write_text("---\nname: pirate\ndescription: Talks like a pirate.\n"
                                      "tools: [builtin__project_file_read]\n---\nYou are a pirate. Arr.\n")
    async with daemon_with_chat(tmp_path) as daemon:
        await daemon.call("settings/set", {"key": "agents.paths", "value": [str(agents)]})
        await daemon.call("agents/reload")
        await configure(daemon, http_fixture)
        result = await daemon.call("chat/send", {"message": "time?", "agent": "pirate"})
        (call,) = result["toolCalls"]
        assert call["isError"] and "no tool named builtin__current_time" in call["result"]
        first, second = (r.json() for r in http_fixture.requests)
        assert first["system"] == "You are a pirate. Arr."
        assert [t["name"] for t in first["tools"]] == ["builtin__project_file_read"]
        assert second["messages"][-1]["content"][0]["is_error"] is True
        conversation, _, _ = await projects(daemon).get_conversation(result["conversationId"])
        assert conversation.agent == "pirate"


async def test_the_agents_model_hint(tmp_path: Path, http_fixture: HttpFixtureServer) -> None:
    """An agent's `model` picks the model when it names one of the provider's family precisely;
    a family alias (what the bundled agents say: `claude-sonnet`) or another family's model keeps
    the provider's; `model` in chat/send beats both."""
    http_fixture.route("POST", "/v1/messages", sse("anthropic_text.sse"))
    http_fixture.route("POST", "/v1/chat/completions", sse("openai_text.sse"))
    agents = tmp_path / "agents"
    agents.mkdir()
    for name, model in [("opus", "claude-opus-4-1"), ("alias", "claude-sonnet"), ("gpt", "gpt-4.1-mini"),
                        ("none", "")]:
        front = f"model: {model}\n" if model else ""
        (agents / f"{name}.md").write_text(f"---\nname: {name}\ndescription: d\n{front}---\nPrompt of {name}.\n")
    async with daemon_with_chat(tmp_path) as daemon:
        await daemon.call("settings/set", {"key": "agents.paths", "value": [str(agents)]})
        await daemon.call("agents/reload")
        await configure(daemon, http_fixture)  # claude-sonnet-4-5
        await configure(daemon, http_fixture, "openai", "oa", model="gpt-4o-mini")

        async def sent_model(**params: Any) -> str:
            await daemon.call("chat/send", {"message": "hi", "tools": False, **params})
            return http_fixture.requests[-1].json()["model"]

        assert await sent_model(agent="opus") == "claude-opus-4-1"
        assert await sent_model(agent="alias") == "claude-sonnet-4-5"
        assert await sent_model(agent="none") == "claude-sonnet-4-5"
        assert await sent_model(agent="gpt") == "claude-sonnet-4-5"  # not an Anthropic model
        assert await sent_model(agent="gpt", provider="oa") == "gpt-4.1-mini"
        assert await sent_model(agent="opus", provider="oa") == "gpt-4o-mini"
        assert await sent_model(agent="opus", model="claude-haiku-4-5") == "claude-haiku-4-5"
        assert http_fixture.requests[0].json()["system"] == "Prompt of opus."


async def test_max_tool_rounds_bounds_the_loop(tmp_path: Path, http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("POST", "/v1/messages", sse("anthropic_tool.sse"))  # the model asks again and again
    async with daemon_with_chat(tmp_path) as daemon:
        await configure(daemon, http_fixture)
        await daemon.call("settings/set", {"key": "llm.maxToolRounds", "value": 2})
        result = await daemon.call("chat/send", {"message": "loop"})
        assert result["rounds"] == 3 and len(result["toolCalls"]) == 2 and result["stopReason"] == "max_tool_rounds"


async def test_provider_errors_answer_with_details_and_are_audited(tmp_path: Path,
                                                                   http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("POST", "/v1/messages", Response.json(
        {"type": "error", "error": {"type": "rate_limit_error", "message": "Number of requests exceeded"}}, 429,
        headers={"retry-after": "0"}))
    async with daemon_with_chat(tmp_path) as daemon:
        await configure(daemon, http_fixture)
        await daemon.call("settings/set", {"key": "llm.maxRetries", "value": 1})
        with pytest.raises(RpcError) as info:
            await daemon.call("chat/send", {"message": "hi"})
        error = info.value.error
        assert info.value.kind == "rate_limited"
        details = error["data"]["details"]
        # the failed turn was stored in a new conversation: the error names it
        conversation_id = details.pop("conversationId")
        assert details == {"provider": "main", "status": 429, "type": "rate_limit_error", "retryAfter": 0.0}
        stored = await daemon.call("conversations/get", {"id": conversation_id})
        assert [(m["role"], m["status"]) for m in stored["messages"]] == [("user", "complete"), ("assistant", "error")]
        assert http_fixture.calls("POST", "/v1/messages") == 2
        assert deltas(daemon)[-1]["type"] == "error"
        entries = (await daemon.call("audit/list"))["entries"]
        assert entries[0]["outcome"] == "rate_limited" and entries[0]["conversationId"] == conversation_id
        entry = await daemon.call("audit/get", {"id": entries[0]["id"]})
        assert entry["request"]["messages"][0]["content"][0]["text"] == "hi"
        assert KEY not in repr(entry) and "rate limited" in entry["error"]


async def test_mid_stream_overload_stores_an_error_reply(tmp_path: Path, http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("POST", "/v1/messages", sse("anthropic_overloaded.sse"))
    async with daemon_with_chat(tmp_path) as daemon:
        await configure(daemon, http_fixture)
        with pytest.raises(RpcError) as info:
            await daemon.call("chat/send", {"message": "hi"})
        assert info.value.kind == "provider_error"
        assert info.value.error["data"]["details"]["type"] == "overloaded_error"
        (conversation,) = (await projects(daemon).list_conversations()).items
        _, rows, _ = await projects(daemon).get_conversation(conversation.id)
        assert rows[-1].status == "error" and "Partial" in rows[-1].content
        # the failed call is accounted for (a provider_error outcome was refused by the usage
        # table's CHECK and silently lost)
        (entry,) = (await daemon.call("audit/list"))["entries"]
        assert entry["outcome"] == "error" and entry["conversationId"] == conversation.id
        (row,) = (await daemon.call("usage/summary", {"groupBy": "provider"}))["rows"]
        assert row["calls"] == 1


async def test_context_budget_drops_oldest_turns(tmp_path: Path, http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("POST", "/api/chat", Response(200, {"content-type": "application/x-ndjson"},
                                                     (FIXTURES / "ollama_text.ndjson").read_bytes()))
    async with daemon_with_chat(tmp_path) as daemon:
        await configure(daemon, http_fixture, "ollama", "local", model="llama3.2", contextWindow=900,
                        maxOutputTokens=100)
        await daemon.call("settings/set", {"key": "llm.contextReserveTokens", "value": 100})
        first = await daemon.call("chat/send", {"message": "word " * 300, "tools": False})
        assert first.get("droppedTurns", 0) == 0
        cid = first["conversationId"]
        second = await daemon.call("chat/send", {"message": "more " * 300, "conversationId": cid, "tools": False})
        assert second["droppedTurns"] == 1
        body = http_fixture.requests[-1].json()
        assert [m["role"] for m in body["messages"]] == ["user"] and body["messages"][0]["content"].startswith("more")
        with pytest.raises(RpcError) as info:
            await daemon.call("chat/send", {"message": "x " * 3000})
        assert info.value.kind == "resource_exhausted"


async def test_usage_summary_groups_and_prices(tmp_path: Path, http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("POST", "/v1/chat/completions", sse("openai_text.sse"))
    http_fixture.route("POST", "/api/chat", Response(200, {"content-type": "application/x-ndjson"},
                                                     ndjson_lines([{"model": "llama3.2", "message": {"content": "x"},
                                                                    "done": True, "prompt_eval_count": 5,
                                                                    "eval_count": 7}])))
    async with daemon_with_chat(tmp_path) as daemon:
        await configure(daemon, http_fixture, "openai", "oa", model="gpt-4o-mini")
        await configure(daemon, http_fixture, "ollama", "local", model="llama3.2")
        await daemon.call("settings/set", {"key": "llm.prices", "value": ["gpt-4o-mini=0.15/0.6"]})
        await daemon.call("chat/send", {"message": "a", "provider": "oa"})
        await daemon.call("chat/send", {"message": "b", "provider": "oa"})
        await daemon.call("chat/send", {"message": "c", "provider": "local"})
        rows = {r["key"]: r for r in (await daemon.call("usage/summary", {"groupBy": "model"}))["rows"]}
        assert rows["gpt-4o-mini"]["calls"] == 2 and rows["gpt-4o-mini"]["inputTokens"] == 18
        assert rows["gpt-4o-mini"]["cost"] == pytest.approx(2 * (9 * 0.15 + 2 * 0.6) / 1e6)
        assert rows["llama3.2"]["outputTokens"] == 7 and "cost" not in rows["llama3.2"]
        days = (await daemon.call("usage/summary", {"groupBy": "day", "from": "2000-01-01", "to": "2999-12-31"}))
        assert sum(r["calls"] for r in days["rows"]) == 3
        none = await daemon.call("usage/summary", {"groupBy": "provider", "to": "2000-01-01"})
        assert none["rows"] == []
        await daemon.call("settings/set", {"key": "llm.audit.enabled", "value": False})
        await daemon.call("chat/send", {"message": "d", "provider": "local"})
        assert len((await daemon.call("audit/list"))["entries"]) == 3


async def test_providers_test_and_models(tmp_path: Path, http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("GET", "/api/tags", Response.json({"models": [{"name": "llama3.2:latest"},
                                                                     {"name": "qwen2.5:7b"}]}))
    http_fixture.route("POST", "/api/chat", Response(200, {"content-type": "application/x-ndjson"},
                                                     (FIXTURES / "ollama_text.ndjson").read_bytes()))
    http_fixture.route("GET", "/v1/models", Response.json({"type": "error", "error": {
        "type": "authentication_error", "message": "invalid x-api-key"}}, 401))
    http_fixture.route("POST", "/v1/messages", Response.json({"type": "error", "error": {
        "type": "authentication_error", "message": "invalid x-api-key"}}, 401))
    async with daemon_with_chat(tmp_path) as daemon:
        await configure(daemon, http_fixture, "ollama", "local", model="llama3.2")
        await configure(daemon, http_fixture, "anthropic", "claude")
        assert (await daemon.call("providers/models", {"id": "local"}))["models"] == ["llama3.2:latest", "qwen2.5:7b"]
        ok = await daemon.call("providers/test", {"id": "local"})
        assert ok["ok"] and ok["model"] == "llama3.2" and ok["latencyMs"] > 0
        bad = await daemon.call("providers/test", {"id": "claude"})
        assert not bad["ok"] and bad["failure"] == "auth" and bad["status"] == 401
        with pytest.raises(RpcError) as info:
            await daemon.call("providers/models", {"id": "claude"})
        assert info.value.kind == "provider_error" and info.value.error["data"]["details"]["status"] == 401
        await daemon.call("providers/configure", {"id": "gone", "kind": "ollama", "model": "m",
                                                  "baseUrl": "http://127.0.0.1:9"})
        gone = await daemon.call("providers/test", {"id": "gone"})
        assert gone["failure"] == "unreachable"


async def test_mcp_server_tools_in_the_chat_loop(tmp_path: Path, http_fixture: HttpFixtureServer) -> None:
    def tool_use(name: str, arguments: str) -> Response:
        return Response.sse([
            ("message_start", {"type": "message_start", "message": {"model": "m", "usage": {"input_tokens": 1}}}),
            ("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": {"type": "tool_use", "id": f"t_{name}", "name": name}}),
            ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "input_json_delta", "partial_json": arguments}}),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                               "usage": {"output_tokens": 2}}),
            ("message_stop", {"type": "message_stop"})])

    http_fixture.route("POST", "/v1/messages", tool_use("calc__add", '{"a": 2, "b": 40}'),
                       tool_use("calc__fail", '{"message": "boom"}'), tool_use("calc__die", ""),
                       sse("anthropic_text.sse"))
    async with daemon_with_chat(tmp_path) as daemon:
        await configure(daemon, http_fixture)
        added = await daemon.call("mcp/servers/add", {"id": "calc", "command": sys.executable,
                                                      "args": [str(MCP_SERVER)]})
        assert added.get("state", "stopped") == "stopped" and added["args"] == [str(MCP_SERVER)]
        tested = await daemon.call("mcp/servers/test", {"id": "calc"}, timeout=30)
        assert tested["ok"] and tested["serverName"] == "sidecar-test-tools"
        assert {t["name"] for t in tested["tools"]} >= {"calc__add", "calc__fail", "calc__die"}
        result = await daemon.call("chat/send", {"message": "use the tools"}, timeout=60)
        calls = {c["name"]: c for c in result["toolCalls"]}
        assert calls["calc__add"]["result"] == "42" and not calls["calc__add"].get("isError")
        assert calls["calc__fail"]["isError"]
        assert calls["calc__die"]["isError"] and "calc" in calls["calc__die"]["result"]
        assert result["text"].endswith("Hello!") and result["rounds"] == 4
        first = http_fixture.requests[0].json()
        assert {"calc__add", "builtin__current_time"} <= {t["name"] for t in first["tools"]}
        listed = (await daemon.call("mcp/servers/list"))["servers"]
        assert listed[0]["id"] == "calc"
        await daemon.call("mcp/servers/remove", {"id": "calc"})
        assert (await daemon.call("mcp/servers/list"))["servers"] == []


async def test_a_reconfigured_or_deleted_provider_takes_effect_at_once(tmp_path: Path,
                                                                       http_fixture: HttpFixtureServer) -> None:
    """chat/send resolves providers from memory (no read before the request): configure and
    delete must still show in the very next call."""
    http_fixture.route("POST", "/v1/messages", sse("anthropic_text.sse"))
    http_fixture.route("POST", "/other/v1/messages", sse("anthropic_text.sse"))
    async with daemon_with_chat(tmp_path) as daemon:
        await configure(daemon, http_fixture)
        await daemon.call("chat/send", {"message": "one", "tools": False})
        await daemon.call("providers/configure", {"id": "main", "kind": "anthropic", "model": "claude-haiku-4-5",
                                                  "baseUrl": http_fixture.url + "/other", "apiKey": "sk-ant-new-key-42",
                                                  "headers": {"x-team": "t2"}})
        await daemon.call("chat/send", {"message": "two", "tools": False})
        first, second = http_fixture.requests
        assert (first.path, first.json()["model"], first.header("x-api-key")) == ("/v1/messages",
                                                                                  "claude-sonnet-4-5", KEY)
        assert (second.path, second.json()["model"]) == ("/other/v1/messages", "claude-haiku-4-5")
        assert second.header("x-api-key") == "sk-ant-new-key-42" and second.header("x-team") == "t2"
        # a key changed in the secret store directly is the one sent next
        await daemon.call("secrets/set", {"name": "llm.provider.main.apiKey", "value": "sk-ant-rotated-99"})
        await daemon.call("chat/send", {"message": "three", "tools": False})
        assert http_fixture.requests[-1].header("x-api-key") == "sk-ant-rotated-99"
        await daemon.call("providers/delete", {"id": "main"})
        with pytest.raises(RpcError) as info:
            await daemon.call("chat/send", {"message": "four", "provider": "main", "tools": False})
        assert info.value.kind == "not_found" and len(http_fixture.requests) == 3


async def test_turns_share_one_provider_connection(tmp_path: Path, http_fixture: HttpFixtureServer) -> None:
    """Each turn reads its response to the end, so the shared client keeps the connection for the
    next turn, even across providers on the same host (no new handshake before a first token)."""
    http_fixture.route("POST", "/v1/messages", sse("anthropic_text.sse", chunk_size=50, chunked=True))
    http_fixture.route("POST", "/v1/chat/completions", sse("openai_text.sse", chunked=True))
    http_fixture.route("POST", "/api/chat", Response(200, {"content-type": "application/x-ndjson"},
                                                     (FIXTURES / "ollama_text.ndjson").read_bytes()))
    async with daemon_with_chat(tmp_path) as daemon:
        await configure(daemon, http_fixture)
        await configure(daemon, http_fixture, "openai", "oa", model="gpt-4o-mini")
        await configure(daemon, http_fixture, "ollama", "local", model="llama3.2")
        for provider in ("main", "oa", "local", "main"):
            await daemon.call("chat/send", {"message": "hi", "provider": provider, "tools": False})
        assert len(http_fixture.requests) == 4 and http_fixture.connections_accepted == 1
