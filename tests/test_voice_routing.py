"""voice/process routing into chat, agents and search, for real: the in-process daemon over
JSON-RPC, the real ChatService talking to a real HTTP client against a scripted Anthropic
stream on 127.0.0.1 (tests/support/http_fixture.py), the real ProjectsService and
AgentsService. Text input only (audio: test_voice_e2e.py / test_voice_stt.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("hassil")
pytest.importorskip("rapidfuzz")

from sidecar.llm.capability import ChatCapability  # noqa: E402
from tests.harness import InProcessDaemon, RpcError, in_process  # noqa: E402
from tests.support.chat import daemon_with_chat  # noqa: E402
from tests.support.http_fixture import HttpFixtureServer, Response  # noqa: E402

pytestmark = pytest.mark.anyio
KEY = "sk-ant-test-VOICE-0123456789"
MESSAGES = "/v1/messages"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def answer(text: str, *, input_tokens: int = 12, output_tokens: int = 7) -> Response:
    """One Anthropic streamed reply saying `text` (split in two deltas: real chunk boundaries)."""
    half = len(text) // 2
    return Response.sse([
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_voice", "type": "message", "role": "assistant", "content": [], "model": "claude-sonnet-4-5",
            "stop_reason": None, "usage": {"input_tokens": input_tokens, "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        *[("content_block_delta", {"type": "content_block_delta", "index": 0,
                                   "delta": {"type": "text_delta", "text": piece}})
          for piece in (text[:half], text[half:]) if piece],
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"output_tokens": output_tokens}}),
        ("message_stop", {"type": "message_stop"}),
    ])


async def configure(d: InProcessDaemon, server: HttpFixtureServer) -> None:
    await d.call("providers/configure", {"id": "main", "kind": "anthropic", "model": "claude-sonnet-4-5",
                                         "baseUrl": server.url, "apiKey": KEY})


async def say(d: InProcessDaemon, said: str, conv: str | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"text": said, "speak": False}
    if conv:
        params["conversationId"] = conv
    return await d.call("voice/process", params, timeout=30)


def texts(message: dict[str, Any]) -> str:
    return "".join(part.get("text", "") for part in message["content"])


def sent_user_text(body: dict[str, Any]) -> str:
    """The last user message the provider was sent."""
    last = body["messages"][-1]
    assert last["role"] == "user"
    content = last["content"]
    return content if isinstance(content, str) else "".join(b.get("text", "") for b in content)


def voice_service() -> type:
    from sidecar.voice.service import VoiceService

    return VoiceService


async def test_send_message_goes_to_the_agents_chat_and_stays_in_one_conversation(
        tmp_path: Path, http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("POST", MESSAGES, answer("Hello to you too."), answer("Still here."))
    async with daemon_with_chat(tmp_path) as d:
        await configure(d, http_fixture)
        conv = await d.call("voice/conversations/start", {"agent": "summarizer"})
        assert conv["agent"] == "summarizer"

        first = await say(d, "send hello world message", conv["id"])
        routing = first["routing"]
        assert first["intent"] == "SendMessage" and first["slots"]["message"] == "hello world"
        assert routing["status"] == "executed" and routing["target"] == "chat", routing
        assert routing["name"] == "summarizer" and "error" not in routing
        assert first["reply"] == "Hello to you too." == routing["detail"]["text"]
        chat_id = routing["detail"]["conversationId"]

        # the chat conversation exists, with the user's words and the provider's reply, for that agent
        stored = await d.call("conversations/get", {"id": chat_id})
        assert stored["agent"] == "summarizer"
        assert [(m["role"], texts(m), m["status"]) for m in stored["messages"]] == [
            ("user", "hello world", "complete"), ("assistant", "Hello to you too.", "complete")]
        assert stored["messages"][1]["id"] == routing["detail"]["messageId"]
        # the provider was really asked, with the agent's system prompt and the user's words
        body = http_fixture.requests[0].json()
        assert http_fixture.requests[0].header("x-api-key") == KEY
        prompt = (await d.call("agents/get", {"name": "summarizer"}))["prompt"]
        assert prompt.strip()[:80] in json.dumps(body.get("system"), ensure_ascii=False)
        assert sent_user_text(body) == "hello world"

        # the voice conversation keeps the chat conversation (voice_conversations.chat_conversation_id)
        row = await d.platform.find(voice_service()).store.get_conversation(conv["id"])
        assert row.chat_conversation_id == chat_id and row.agent == "summarizer"

        # a second send in the same voice conversation continues the SAME chat conversation
        second = await say(d, "send see you later message", conv["id"])
        assert second["routing"]["status"] == "executed"
        assert second["routing"]["detail"]["conversationId"] == chat_id
        assert second["reply"] == "Still here."
        stored = await d.call("conversations/get", {"id": chat_id})
        assert [(m["role"], texts(m)) for m in stored["messages"]] == [
            ("user", "hello world"), ("assistant", "Hello to you too."),
            ("user", "see you later"), ("assistant", "Still here.")]
        # ...and the provider got the history with it
        body = http_fixture.requests[1].json()
        assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
        assert sent_user_text(body) == "see you later"
        # one chat conversation in all, not one per utterance
        listed = await d.call("conversations/list", {})
        assert [c["id"] for c in listed["conversations"]] == [chat_id]
        turns = (await d.call("voice/conversations/get", {"id": conv["id"]}))["turns"]
        assert [(t["role"], t["text"]) for t in turns] == [
            ("user", "send hello world message"), ("assistant", "Hello to you too."),
            ("user", "send see you later message"), ("assistant", "Still here.")]


async def test_execute_agent_skill_runs_a_chat_turn_with_that_agent(
        tmp_path: Path, http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("POST", MESSAGES, answer("Send me the diff and I will review it."))
    async with daemon_with_chat(tmp_path) as d:
        await configure(d, http_fixture)
        agent = await d.call("agents/get", {"name": "code-reviewer"})
        r = await say(d, "execute code reviewer skill")
        routing = r["routing"]
        assert r["intent"] == "ExecuteSkill" and r["slots"]["skill"] == "code-reviewer", r
        assert routing["status"] == "executed" and routing["target"] == "agent" and routing["name"] == "code-reviewer"
        assert r["reply"] == "Send me the diff and I will review it."
        (request,) = http_fixture.requests
        body = request.json()
        # the turn is that agent's: its system prompt went to the provider
        system = json.dumps(body.get("system"), ensure_ascii=False)
        assert agent["prompt"].strip()[:80] in system
        assert sent_user_text(body) == "execute code reviewer skill"
        stored = await d.call("conversations/get", {"id": routing["detail"]["conversationId"]})
        assert stored["agent"] == "code-reviewer" and len(stored["messages"]) == 2
        # the voice conversation now talks to that agent: a send continues the same chat
        http_fixture.route("POST", MESSAGES, answer("Looks fine."))
        follow = await say(d, "send check my patch message", r["conversationId"])
        assert follow["routing"]["name"] == "code-reviewer"
        assert follow["routing"]["detail"]["conversationId"] == routing["detail"]["conversationId"]
        assert agent["prompt"].strip()[:80] in json.dumps(http_fixture.requests[1].json().get("system"),
                                                          ensure_ascii=False)


@pytest.mark.parametrize("question, expected", [
    ("what is the weather in Seoul", "general-assistant"),  # no agent matches: select's fallback
    ("how do I tune a slow sql query", "sql-tuner"),  # a best match
])
async def test_ask_picks_an_agent_with_select_and_runs_a_chat_turn(
        tmp_path: Path, http_fixture: HttpFixtureServer, question: str, expected: str) -> None:
    http_fixture.route("POST", MESSAGES, answer("I cannot see live weather, but Seoul in December is cold."))
    async with daemon_with_chat(tmp_path) as d:
        await configure(d, http_fixture)
        selected = await d.call("agents/select", {"prompt": question})
        chosen = selected["agent"]["name"]
        assert chosen == expected, selected
        r = await say(d, question)
        routing = r["routing"]
        assert r["intent"] == "Ask", r
        assert routing["status"] == "executed" and routing["target"] == "chat"
        assert routing["name"] == chosen  # the result names the agent that answered
        assert r["reply"] == "I cannot see live weather, but Seoul in December is cold."
        (request,) = http_fixture.requests
        body = request.json()
        assert sent_user_text(body) == question
        prompt = (await d.call("agents/get", {"name": chosen}))["prompt"]
        assert prompt.strip()[:80] in json.dumps(body.get("system"), ensure_ascii=False)
        stored = await d.call("conversations/get", {"id": routing["detail"]["conversationId"]})
        assert stored["agent"] == chosen
        assert [(m["role"], texts(m)) for m in stored["messages"]][0] == ("user", question)
        # the next question in the voice conversation goes to the same agent and chat
        follow = await say(d, "what is the weather in Busan", r["conversationId"])
        assert follow["intent"] == "Ask" and follow["routing"]["name"] == chosen
        assert follow["routing"]["detail"]["conversationId"] == routing["detail"]["conversationId"]
        assert [m["role"] for m in http_fixture.requests[1].json()["messages"]] == ["user", "assistant", "user"]


async def test_search_finds_conversations_messages_and_agents(tmp_path: Path) -> None:
    async with in_process(tmp_path / "d") as d:
        project = await d.call("projects/create", {"name": "cluster"})
        conv = await d.call("conversations/create", {"projectId": project["id"], "title": "cluster notes"})
        msg = await d.call("conversations/append", {
            "conversationId": conv["id"], "role": "user",
            "content": [{"type": "text", "text": "our kubernetes pods keep restarting at night"}]})
        other = await d.call("conversations/create", {"title": "lunch"})
        await d.call("conversations/append", {"conversationId": other["id"], "role": "user",
                                              "content": [{"type": "text", "text": "pizza or noodles"}]})
        agents = [h["agent"]["name"] if isinstance(h.get("agent"), dict) else h["name"]
                  for h in (await d.call("agents/search", {"query": "kubernetes", "limit": 5}))["results"]]
        assert agents, "a bundled agent should match kubernetes"

        r = await say(d, "search for kubernetes")
        routing = r["routing"]
        assert r["intent"] == "Search" and r["slots"]["query"] == "kubernetes", r
        assert routing["status"] == "executed" and routing["target"] == "search" and routing["name"] == "kubernetes"
        detail = routing["detail"]
        assert detail["query"] == "kubernetes"
        # the matching message's conversation (and the message itself), not the other one
        assert [(m["conversationId"], m["messageId"]) for m in detail["messages"]] == [(conv["id"], msg["id"])]
        hit = detail["messages"][0]
        assert hit["conversationTitle"] == "cluster notes" and hit["projectId"] == project["id"]
        assert hit["role"] == "user" and "kubernetes" in hit["snippet"] and "\x02" not in hit["snippet"]
        # the same hit conversations/search gives
        (wire,) = (await d.call("conversations/search", {"query": "kubernetes"}))["results"]
        assert (wire["conversationId"], wire["messageId"]) == (conv["id"], msg["id"])
        assert detail["agents"] == agents
        n = 1 + len(agents)
        assert r["reply"] == f"Found {n} result{'s' if n != 1 else ''} for kubernetes."

        nothing = await say(d, "search for xylophones")
        assert nothing["routing"]["status"] == "executed" and nothing["reply"] == "Found 0 results for xylophones."
        assert nothing["routing"]["detail"] == {"query": "xylophones", "messages": [], "agents": []}

        # Korean: the same search, a Korean reply
        ko_msg = await d.call("conversations/append", {"conversationId": other["id"], "role": "user",
                                                       "content": [{"type": "text", "text": "내일 서울 날씨 어때"}]})
        ko = await say(d, "날씨 검색해 줘")
        assert ko["language"] == "ko" and ko["intent"] == "Search" and ko["routing"]["name"] == "날씨"
        assert [(m["conversationId"], m["messageId"]) for m in ko["routing"]["detail"]["messages"]] == [
            (other["id"], ko_msg["id"])]
        n = len(ko["routing"]["detail"]["messages"]) + len(ko["routing"]["detail"]["agents"])
        assert ko["reply"] == f"날씨 검색 결과 {n}건입니다."


async def test_korean_send_message_routes_and_replies_in_korean(
        tmp_path: Path, http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("POST", MESSAGES, answer("안녕하세요! 무엇을 도와드릴까요?"))
    async with daemon_with_chat(tmp_path) as d:
        await configure(d, http_fixture)
        r = await say(d, "안녕 메시지 보내 줘")
        routing = r["routing"]
        assert r["language"] == "ko" and r["intent"] == "SendMessage" and r["slots"]["message"] == "안녕", r
        assert routing["status"] == "executed" and routing["target"] == "chat"
        assert routing["name"] == "general-assistant"  # no agent on the conversation: the general one
        assert r["reply"] == "안녕하세요! 무엇을 도와드릴까요?"
        assert sent_user_text(http_fixture.requests[0].json()) == "안녕"
        stored = await d.call("conversations/get", {"id": routing["detail"]["conversationId"]})
        assert [(m["role"], texts(m)) for m in stored["messages"]] == [
            ("user", "안녕"), ("assistant", "안녕하세요! 무엇을 도와드릴까요?")]
        detail = await d.call("voice/conversations/get", {"id": r["conversationId"]})
        assert detail["conversation"]["language"] == "ko"
        assert [t["language"] for t in detail["turns"]] == ["ko", "ko"]


async def test_provider_failure_is_a_failed_routing_and_the_daemon_keeps_answering(
        tmp_path: Path, http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("POST", MESSAGES, Response.json(
        {"type": "error", "error": {"type": "api_error", "message": "upstream broke"}}, status=500))
    async with daemon_with_chat(tmp_path) as d:  # retries 5 ms apart
        await configure(d, http_fixture)
        conv = await d.call("voice/conversations/start", {"agent": "summarizer"})
        r = await say(d, "send hello world message", conv["id"])
        routing = r["routing"]
        assert routing["status"] == "failed" and routing["target"] == "chat", routing
        assert routing["name"] == "summarizer" and routing["detail"]["kind"] == "provider_error"
        first_chat = routing["detail"]["conversationId"]  # the failed turn was stored: chat names it
        assert "upstream broke" in routing["error"], routing
        assert r["reply"] == f"That failed: {routing['error']}"
        assert len(http_fixture.requests) >= 2  # retried (fast), then gave up
        assert await d.call("system/ping") == {"pong": True}  # the daemon answers
        # the provider recovers: the same voice conversation sends for real, and keeps that chat
        http_fixture.route("POST", MESSAGES, answer("Back again."), Response(500))
        again = await say(d, "send hello again message", conv["id"])
        assert again["routing"]["status"] == "executed" and again["reply"] == "Back again."
        chat_id = again["routing"]["detail"]["conversationId"]
        assert chat_id == first_chat  # the failed first turn's chat conversation is continued
        stored = await d.call("conversations/get", {"id": chat_id})
        assert [m["role"] for m in stored["messages"]] == ["user", "assistant", "user", "assistant"]
        # a failure while continuing a chat names the chat conversation it was continuing
        third = await say(d, "send one more message", conv["id"])
        assert third["intent"] == "SendMessage" and third["routing"]["status"] == "failed"
        assert third["routing"]["name"] == "summarizer"
        assert third["routing"]["detail"] == {"kind": "provider_error", "conversationId": chat_id}
        row = await d.platform.find(voice_service()).store.get_conversation(conv["id"])
        assert row.chat_conversation_id == chat_id  # a failure does not lose the conversation's chat

        # Korean: the failure is said in Korean
        http_fixture.route("POST", MESSAGES, Response(500))
        ko = await say(d, "안녕 메시지 보내 줘")
        assert ko["routing"]["status"] == "failed" and ko["reply"].startswith("실패했습니다: ")


async def test_no_provider_configured_fails_with_a_clear_error(tmp_path: Path) -> None:
    async with in_process(tmp_path / "d") as d:
        r = await say(d, "send hello world message")
        assert r["routing"]["status"] == "failed" and r["routing"]["target"] == "chat"
        assert "provider" in r["routing"]["error"] and r["reply"].startswith("That failed:")
        a = await say(d, "what is the weather in Seoul")
        assert a["routing"]["status"] == "failed" and "provider" in a["routing"]["error"]
        assert await d.call("system/ping") == {"pong": True}


async def test_without_chat_in_the_build_chat_routes_say_unavailable(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import tests.harness as harness

    monkeypatch.setattr(harness, "CAPABILITIES", tuple(c for c in harness.CAPABILITIES if c is not ChatCapability))
    async with in_process(tmp_path / "d") as d:
        r = await say(d, "send hello world message")
        assert r["routing"]["status"] == "unavailable" and r["routing"]["target"] == "chat"
        assert r["routing"]["error"] == "chat is not in this build" and "not available" in r["reply"]
        skill = await say(d, "execute code reviewer skill")
        assert skill["routing"]["status"] == "unavailable" and skill["routing"]["target"] == "agent"
        ko = await say(d, "안녕 메시지 보내 줘")
        assert ko["routing"]["status"] == "unavailable" and "채팅 기능이 없습니다" in ko["reply"]


async def test_a_near_miss_agent_name_asks_first_and_yes_runs_the_chat_turn(
        tmp_path: Path, http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("POST", MESSAGES, answer("Ready to review."))
    async with daemon_with_chat(tmp_path) as d:
        await configure(d, http_fixture)
        first = await say(d, "execute code reviewr skill")
        assert first["routing"]["status"] == "confirm" and first["routing"]["name"] == "code-reviewer", first
        assert first["routing"]["target"] == "agent" and http_fixture.requests == []  # nothing ran yet
        second = await say(d, "yes", first["conversationId"])
        assert second["intent"] == "Confirm" and second["routing"]["status"] == "executed"
        assert second["routing"]["target"] == "agent" and second["routing"]["name"] == "code-reviewer"
        assert second["reply"] == "Ready to review."
        (request,) = http_fixture.requests
        assert sent_user_text(request.json()) == "execute code reviewr skill"  # what was said, confirmed


async def test_without_projects_agents_and_chat_search_is_unavailable(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import tests.harness as harness
    from sidecar.agents.capability import AgentsCapability
    from sidecar.projects.capability import ProjectsCapability

    gone = (ChatCapability, AgentsCapability, ProjectsCapability)
    monkeypatch.setattr(harness, "CAPABILITIES", tuple(c for c in harness.CAPABILITIES if c not in gone))
    async with in_process(tmp_path / "d") as d:
        r = await say(d, "search for kubernetes")
        assert r["routing"]["status"] == "unavailable" and r["routing"]["target"] == "search"
        assert r["routing"]["error"] == "search is not in this build"
        ask = await say(d, "what is the weather in Seoul")
        assert ask["routing"]["status"] == "unavailable" and ask["routing"]["name"] == "general-assistant"


async def test_a_deleted_chat_conversation_is_replaced_and_an_unknown_agent_is_refused(
        tmp_path: Path, http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("POST", MESSAGES, answer("Noted."))
    async with daemon_with_chat(tmp_path) as d:
        await configure(d, http_fixture)
        conv = await d.call("voice/conversations/start", {"agent": "summarizer"})
        first = await say(d, "send hello world message", conv["id"])
        old = first["routing"]["detail"]["conversationId"]
        await d.call("conversations/delete", {"id": old})
        # the voice conversation's chat is gone: a new one is started (not "no conversation ..." forever)
        second = await say(d, "send hello again message", conv["id"])
        assert second["routing"]["status"] == "executed" and second["reply"] == "Noted.", second["routing"]
        new = second["routing"]["detail"]["conversationId"]
        assert new != old
        stored = await d.call("conversations/get", {"id": new})
        assert stored["agent"] == "summarizer"
        assert [(m["role"], texts(m)) for m in stored["messages"]] == [("user", "hello again"), ("assistant", "Noted.")]
        assert len(http_fixture.requests) == 2  # one provider call per message: the retry sent nothing twice
        third = await say(d, "send and again message", conv["id"])
        assert third["routing"]["detail"]["conversationId"] == new

        # an agent that does not exist is refused when the conversation starts, naming it
        with pytest.raises(RpcError) as err:
            await d.call("voice/conversations/start", {"agent": "nobody-at-all"})
        assert err.value.kind == "not_found" and "nobody-at-all" in str(err.value)
        assert len(http_fixture.requests) == 3


async def test_open_feature_switch_mode_and_stop_say_what_ran(tmp_path: Path) -> None:
    async with in_process(tmp_path / "d") as d:
        feature = await say(d, "open the projects page")
        mode = await say(d, "switch to dark mode", feature["conversationId"])
        stop = await say(d, "never mind", feature["conversationId"])
        assert (feature["intent"], feature["routing"]["target"], feature["routing"]["name"]) == (
            "OpenFeature", "open", "projects")
        assert feature["routing"]["detail"] == {"kind": "feature"} and feature["reply"] == "Opening projects."
        assert (mode["intent"], mode["routing"]["name"], mode["routing"]["detail"]) == (
            "SwitchMode", "dark", {"kind": "mode"})
        assert (stop["intent"], stop["routing"]["status"], stop["reply"]) == ("Stop", "executed", "Stopped.")
        # the shell hears both, for this voice conversation (notifications may trail the answers)
        with anyio.fail_after(10):
            while len(opened := [n["params"] for n in d.notifications if n["method"] == "voice/open"]) < 2:
                await anyio.sleep(0.01)
        assert opened == [{"kind": "feature", "target": "projects", "conversationId": feature["conversationId"]},
                          {"kind": "mode", "target": "dark", "conversationId": feature["conversationId"]}]
