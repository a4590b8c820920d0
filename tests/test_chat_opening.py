"""chat/send when the turn's opening rows cannot be written: an unknown conversation or project,
a constraint, the store closed. Over JSON-RPC, in process (tests/harness.py) and through a daemon
subprocess, against a provider on 127.0.0.1 that streams without end (so a request that went out
must be closed by us: the fixture server records the disconnect).

Each case checks: a typed error naming what failed; the provider never asked, or asked and then
disconnected; none of the turn's rows stored; no chat/delta of the request after its answer; and
the daemon still serving (the next chat/send works)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from sidecar.client import DaemonClient
from sidecar.projects.service import ProjectsService
from tests.harness import InProcessDaemon
from tests.support.chat import daemon_with_chat
from tests.support.http_fixture import HttpFixtureServer, Response

pytestmark = pytest.mark.anyio
FIXTURES = Path(__file__).parent / "fixtures" / "llm"
_START = (b'event: message_start\ndata: {"type":"message_start","message":{"model":"m","usage":'
          b'{"input_tokens":3}}}\n\n')
_DELTA = (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":'
          b'{"type":"text_delta","text":"streaming "}}\n\n')


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def endless() -> Response:
    """A reply that starts at once and never ends: only our side can close it."""
    return Response(200, {"content-type": "text/event-stream"}, [_START, _DELTA], chunked=True, stall=True)


def complete() -> Response:
    return Response.from_file(FIXTURES / "anthropic_text.sse", headers={"content-type": "text/event-stream"})


class Wire:
    """Everything the in-process daemon writes, in the order written."""

    def __init__(self, daemon: InProcessDaemon) -> None:
        self.items: list[dict[str, Any]] = []
        original = daemon.write
        decode = msgspec.json.Decoder().decode

        async def write(data: bytes) -> None:
            for line in data.splitlines():
                message = decode(line)
                self.items.extend(message if isinstance(message, list) else [message])
            await original(data)

        daemon.write = write  # type: ignore[method-assign]

    def after_answer(self, request_id: int) -> list[dict[str, Any]]:
        """This request's notifications written after its answer."""
        at = next(i for i, m in enumerate(self.items) if "method" not in m and m.get("id") == request_id)
        return [m for m in self.items[at + 1:] if m.get("params", {}).get("requestId") == request_id]


@asynccontextmanager
async def chat_daemon(tmp_path: Path, server: HttpFixtureServer) -> AsyncIterator[tuple[InProcessDaemon, Wire]]:
    async with daemon_with_chat(tmp_path, fast_retries=False) as daemon:
        await daemon.call("providers/configure", {"id": "main", "kind": "anthropic", "model": "claude-sonnet-4-5",
                                                  "baseUrl": server.url})
        yield daemon, Wire(daemon)


def projects(daemon: InProcessDaemon) -> ProjectsService:
    service = daemon.platform.find(ProjectsService)
    assert service is not None
    return service


async def message_count(daemon: InProcessDaemon) -> tuple[int, int]:
    """(conversations, messages) in the store."""
    db = daemon.platform.db
    return (await db.fetch_value("SELECT count(*) FROM conversations"),
            await db.fetch_value("SELECT count(*) FROM messages"))


async def send(daemon: InProcessDaemon, request_id: int, params: dict[str, Any]) -> dict[str, Any]:
    """The answer to a chat/send sent with `request_id`."""
    daemon.send({"jsonrpc": "2.0", "id": request_id, "method": "chat/send", "params": {"tools": False, **params}})
    with anyio.fail_after(15):
        while request_id not in daemon._answers:
            await anyio.sleep(0.005)
    return daemon._answers.pop(request_id)  # type: ignore[no-any-return]


async def closed_or_never_asked(server: HttpFixtureServer, before: int) -> None:
    for request in server.requests[before:]:
        assert await anyio.to_thread.run_sync(request.wait_disconnected, 5), "the provider's request stayed open"


async def still_serving(daemon: InProcessDaemon, server: HttpFixtureServer, wire: Wire, failed_id: int,
                        **params: Any) -> dict[str, Any]:
    """The next chat/send works; and nothing of the failed request was written after its answer
    (checked after a whole other turn has gone through)."""
    server.route("POST", "/v1/messages", complete())
    result = await daemon.call("chat/send", {"message": "again", "tools": False, **params})
    assert result["text"] == "Hello!"
    assert wire.after_answer(failed_id) == []
    return result


async def test_unknown_conversation_is_not_found_and_the_provider_is_never_asked(
        tmp_path: Path, http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("POST", "/v1/messages", endless())
    async with chat_daemon(tmp_path, http_fixture) as (daemon, wire):
        answer = await send(daemon, 7, {"message": "hi", "conversationId": "c_missing"})
        error = answer["error"]
        assert error["data"]["kind"] == "not_found" and "c_missing" in error["message"]
        assert http_fixture.requests == []
        assert await message_count(daemon) == (0, 0)
        assert [n for n in daemon.notifications if n["method"] == "chat/delta"] == []
        # the provider and the history are looked up at once: when both are missing, the
        # provider is named, every time
        for request_id in (70, 71, 72):
            answer = await send(daemon, request_id, {"message": "hi", "conversationId": "c_missing",
                                                     "provider": "p_nope"})
            assert answer["error"]["data"]["kind"] == "not_found" and "p_nope" in answer["error"]["message"]
        assert http_fixture.requests == []
        await still_serving(daemon, http_fixture, wire, 7)


async def test_unknown_project_stops_the_request_and_stores_nothing(tmp_path: Path,
                                                                   http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("POST", "/v1/messages", endless())
    async with chat_daemon(tmp_path, http_fixture) as (daemon, wire):
        answer = await send(daemon, 8, {"message": "hi", "projectId": "p_missing"})
        error = answer["error"]
        assert error["data"]["kind"] == "not_found" and "p_missing" in error["message"]
        assert error["data"]["details"]["projectId"] == "p_missing"
        await closed_or_never_asked(http_fixture, 0)
        assert await message_count(daemon) == (0, 0)
        # the provider call that went out is accounted for, pointing at no conversation
        entries = (await daemon.call("audit/list"))["entries"]
        assert [(e["outcome"], e.get("conversationId")) for e in entries] in ([], [("error", None)])
        await still_serving(daemon, http_fixture, wire, 8)


async def test_a_project_other_than_the_conversations_is_refused_before_the_request(
        tmp_path: Path, http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("POST", "/v1/messages", endless())
    async with chat_daemon(tmp_path, http_fixture) as (daemon, wire):
        mine = await daemon.call("projects/create", {"name": "mine"})
        other = await daemon.call("projects/create", {"name": "other"})
        conversation = await daemon.call("conversations/create", {"title": "t", "projectId": mine["id"]})
        answer = await send(daemon, 9, {"message": "hi", "conversationId": conversation["id"],
                                        "projectId": other["id"]})
        error = answer["error"]
        assert error["data"]["kind"] == "invalid_params" and error["data"]["path"] == "$.params.projectId"
        assert mine["id"] in error["message"] and other["id"] in error["message"]
        assert http_fixture.requests == []
        assert await message_count(daemon) == (1, 0)
        # the conversation's own project is the turn's project
        result = await still_serving(daemon, http_fixture, wire, 9, conversationId=conversation["id"],
                                     projectId=mine["id"])
        (entry,) = [e for e in (await daemon.call("audit/list"))["entries"] if e["conversationId"] == result[
            "conversationId"]]
        assert entry["outcome"] == "ok"


@pytest.mark.parametrize("existing", [False, True], ids=["new conversation", "existing conversation"])
async def test_a_constraint_failure_leaves_none_of_the_turns_rows(tmp_path: Path, http_fixture: HttpFixtureServer,
                                                                  existing: bool) -> None:
    """The reply row is refused (a trigger stands in for any constraint): the conversation and the
    user's message, written before it in the same turn, must not stay behind either."""
    http_fixture.route("POST", "/v1/messages", endless())
    async with chat_daemon(tmp_path, http_fixture) as (daemon, wire):
        before = (0, 0)
        params: dict[str, Any] = {"message": "hi"}
        if existing:
            conversation = await daemon.call("conversations/create", {"title": "kept"})
            params["conversationId"] = conversation["id"]
            before = (1, 0)
        await daemon.platform.db.write(lambda conn: conn.execute(
            "CREATE TRIGGER refuse_replies BEFORE INSERT ON messages WHEN new.role = 'assistant' "
            "BEGIN SELECT RAISE(ABORT, 'replies refused'); END"))
        answer = await send(daemon, 10, params)
        error = answer["error"]
        assert error["data"]["kind"] == "conflict" and "constraint" in error["message"]
        assert "replies refused" not in error["message"]  # no raw library text in a user's error
        await closed_or_never_asked(http_fixture, 0)
        assert await message_count(daemon) == before
        await daemon.platform.db.write(lambda conn: conn.execute("DROP TRIGGER refuse_replies"))
        await still_serving(daemon, http_fixture, wire, 10, **({"conversationId": params["conversationId"]}
                                                               if existing else {}))


async def test_the_store_closed_is_unavailable_and_the_stream_is_closed(tmp_path: Path,
                                                                        http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("POST", "/v1/messages", endless())
    async with chat_daemon(tmp_path, http_fixture) as (daemon, wire):
        db = daemon.platform.db
        db.close()
        try:
            answer = await send(daemon, 11, {"message": "hi"})
            assert await daemon.call("system/ping") == {"pong": True}
        finally:
            db.open()
        error = answer["error"]
        assert error["data"]["kind"] == "unavailable" and "could not be stored" in error["message"]
        await closed_or_never_asked(http_fixture, 0)
        assert await message_count(daemon) == (0, 0)
        await still_serving(daemon, http_fixture, wire, 11)


def test_unknown_project_over_stdio(spawn: Callable[..., DaemonClient], http_fixture: HttpFixtureServer) -> None:
    """The same through a daemon subprocess: the order of what reaches the shell's pipe."""
    http_fixture.route("POST", "/v1/messages", endless())
    order: list[dict[str, Any]] = []
    client = spawn(on_message=lambda payload: order.append(msgspec.json.decode(payload)))
    client.request("providers/configure", {"id": "main", "kind": "anthropic", "model": "claude-sonnet-4-5",
                                           "baseUrl": http_fixture.url})
    answer = client.call("chat/send", {"message": "hi", "projectId": "p_nope", "tools": False}, id=41)
    assert answer["error"]["data"]["kind"] == "not_found" and "p_nope" in answer["error"]["message"]
    for request in http_fixture.requests:
        assert request.wait_disconnected(5)
    assert client.request("conversations/list")["conversations"] == []
    http_fixture.route("POST", "/v1/messages", complete())
    assert client.request("chat/send", {"message": "again", "tools": False})["text"] == "Hello!"
    at = next(i for i, m in enumerate(order) if m.get("id") == 41 and "method" not in m)
    assert [m for m in order[at + 1:] if m.get("params", {}).get("requestId") == 41] == []


async def test_the_rows_are_stored_while_the_provider_has_not_answered(tmp_path: Path,
                                                                      http_fixture: HttpFixtureServer) -> None:
    """The opening rows wait for the request to be sent, not for the provider's answer: a model
    that takes long to start has the user's message stored meanwhile; a cancel then leaves the
    reply `cancelled`."""
    http_fixture.route("POST", "/v1/messages", Response(200, {"content-type": "text/event-stream"}, [_START],
                                                        delay_before=60))
    async with chat_daemon(tmp_path, http_fixture) as (daemon, wire):
        daemon.send({"jsonrpc": "2.0", "id": 30, "method": "chat/send", "params": {"message": "slow", "tools": False}})
        with anyio.fail_after(10):
            while True:
                page = await projects(daemon).list_conversations()
                if page.items:
                    _, rows, _ = await projects(daemon).get_conversation(page.items[0].id)
                    if len(rows) == 2:
                        break
                await anyio.sleep(0.01)
        assert [(r.role, r.status) for r in rows] == [("user", "complete"), ("assistant", "streaming")]
        assert http_fixture.requests and not http_fixture.requests[0].completed
        daemon.notify("$/cancelRequest", {"id": 30})
        with anyio.fail_after(10):
            while 30 not in daemon._answers:
                await anyio.sleep(0.01)
        assert daemon._answers.pop(30)["error"]["code"] == -32800
        assert await anyio.to_thread.run_sync(http_fixture.requests[0].wait_disconnected, 5)
        _, rows, _ = await projects(daemon).get_conversation(page.items[0].id)
        assert [(r.role, r.status) for r in rows] == [("user", "complete"), ("assistant", "cancelled")]
        assert wire.after_answer(30) == []
