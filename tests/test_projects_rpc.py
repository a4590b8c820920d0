"""projects/*, projects/files/*, conversations/* end to end: the real daemon over JSON-RPC.

CRUD, search in English and Korean with highlighted snippets and pages, fork, save, cascade
delete, and every "bad input" case of the issue: not_found naming what is missing, FTS syntax
as plain text, an empty query as invalid params, an oversized file as resource_exhausted
with the limit."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest

from sidecar.client import DaemonClient, RpcError


def error_of(client: DaemonClient, method: str, params: Any) -> dict[str, Any]:
    with pytest.raises(RpcError) as info:
        client.request(method, params)
    return info.value.error


def say(client: DaemonClient, conversation_id: str, role: str, text: str) -> dict[str, Any]:
    return client.request("conversations/append", {"conversationId": conversation_id, "role": role,
                                                   "content": [{"type": "text", "text": text}]})


def marked(snippet: list[dict[str, Any]]) -> list[str]:
    """The highlighted pieces of a snippet."""
    return [part["text"] for part in snippet if part.get("match")]


def every_page(client: DaemonClient, method: str, params: dict[str, Any], key: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = client.request(method, {**params, **({"cursor": cursor} if cursor else {})})
        items += page[key]
        cursor = page["nextCursor"]
        if cursor is None:
            return items


def test_project_crud(daemon: DaemonClient) -> None:
    a = daemon.request("projects/create", {"name": "Alpha", "description": "first", "type": "web",
                                           "activeAgents": ["code-reviewer"]})
    assert a["id"].startswith("p_") and a["activeAgents"] == ["code-reviewer"] and a["type"] == "web"
    ids = {a["id"]} | {daemon.request("projects/create", {"name": f"P{i}"})["id"] for i in range(4)}
    listed = every_page(daemon, "projects/list", {"limit": 2}, "projects")
    assert {p["id"] for p in listed} == ids and len(listed) == 5
    updated = daemon.request("projects/update", {"id": a["id"], "description": "the first one"})
    assert updated["description"] == "the first one" and updated["name"] == "Alpha"
    detail = daemon.request("projects/get", {"id": a["id"]})
    assert detail["project"] == updated and detail["files"] == [] and detail["totalBytes"] == 0
    assert daemon.request("projects/delete", {"id": a["id"]}) == {"id": a["id"], "deleted": True}
    for method in ("projects/get", "projects/delete", "projects/fork"):
        error = error_of(daemon, method, {"id": a["id"]})
        assert error["data"]["kind"] == "not_found" and a["id"] in error["message"], method
    error = error_of(daemon, "projects/update", {"id": "p_ghost", "name": "x"})
    assert error["data"]["kind"] == "not_found" and error["data"]["details"] == {"id": "p_ghost"}
    assert error_of(daemon, "projects/create", {"name": "  "})["code"] == -32602
    assert error_of(daemon, "projects/create", {})["data"]["path"] == "$.params.name"


def test_files_text_binary_paths_and_limits(daemon: DaemonClient) -> None:
    p = daemon.request("projects/create", {"name": "Files"})["id"]
    text = "SELECT 1; -- 데이터베이스 마이그레이션"
    meta = daemon.request("projects/files/put", {"projectId": p, "path": "./sql\\query.sql", "text": text})
    assert meta["path"] == "sql/query.sql" and meta["kind"] == "text" and meta["language"] == "sql"
    assert meta["sha256"] == hashlib.sha256(text.encode()).hexdigest() and meta["size"] == len(text.encode())
    blob = bytes(range(256)) * 4
    daemon.request("projects/files/put", {"projectId": p, "path": "img/logo.png",
                                          "base64": base64.b64encode(blob).decode()})
    got = daemon.request("projects/files/get", {"projectId": p, "path": "img/logo.png"})
    assert base64.b64decode(got["base64"]) == blob and got["file"]["kind"] == "binary" and "text" not in got
    assert daemon.request("projects/files/get", {"projectId": p, "path": "sql/query.sql"})["text"] == text
    listed = every_page(daemon, "projects/files/list", {"projectId": p, "limit": 1}, "files")
    assert [f["path"] for f in listed] == ["img/logo.png", "sql/query.sql"]
    assert [f["path"] for f in daemon.request("projects/files/list", {"projectId": p, "prefix": "sql/"})["files"]] \
        == ["sql/query.sql"]
    hits = daemon.request("projects/files/search", {"query": "마이그레이션", "projectId": p})["results"]
    assert [h["file"]["path"] for h in hits] == ["sql/query.sql"] and "마이그레이션" in "".join(marked(hits[0]["snippet"]))
    # bad paths: invalid params naming the field
    for bad in ("../escape.txt", "a/../../x", "/etc/passwd", "C:\\x.txt", "a\u0000b"):
        error = error_of(daemon, "projects/files/put", {"projectId": p, "path": bad, "text": "x"})
        assert error["code"] == -32602 and error["data"]["path"] == "$.params.path", bad
    assert error_of(daemon, "projects/files/put", {"projectId": p, "path": "x.bin", "base64": "not base64!"})[
        "code"] == -32602
    # oversized: resource_exhausted with the limit, per file and per project (limits from settings)
    daemon.request("settings/set", {"key": "projects.maxFileBytes", "value": 2000})
    error = error_of(daemon, "projects/files/put", {"projectId": p, "path": "big.txt", "text": "x" * 2001})
    assert error["data"]["kind"] == "resource_exhausted" and error["data"]["details"] == {"limit": 2000, "size": 2001}
    assert "2000" in error["message"] and "projects.maxFileBytes" in error["message"]
    daemon.request("settings/set", {"key": "projects.maxProjectBytes", "value": 3000})
    daemon.request("projects/files/put", {"projectId": p, "path": "a.txt", "text": "a" * 1500})
    error = error_of(daemon, "projects/files/put", {"projectId": p, "path": "b.txt", "text": "b" * 1500})
    assert error["data"]["kind"] == "resource_exhausted" and error["data"]["details"]["limit"] == 3000
    # not found names what is missing
    error = error_of(daemon, "projects/files/get", {"projectId": p, "path": "nope.txt"})
    assert error["data"]["kind"] == "not_found" and "nope.txt" in error["message"]
    error = error_of(daemon, "projects/files/put", {"projectId": "p_ghost", "path": "a.txt", "text": "a"})
    assert error["data"]["kind"] == "not_found" and "p_ghost" in error["message"]
    assert daemon.request("projects/files/delete", {"projectId": p, "path": "a.txt"}) == {"path": "a.txt",
                                                                                           "deleted": True}
    assert error_of(daemon, "projects/files/delete", {"projectId": p, "path": "a.txt"})["data"]["kind"] == "not_found"


def test_conversations_messages_and_search(daemon: DaemonClient) -> None:
    p = daemon.request("projects/create", {"name": "Café migration",
                                           "description": "Moving the résumé service to PostgreSQL"})["id"]
    daemon.request("projects/create", {"name": "데이터베이스 이전", "description": "회의록과 일정 정리"})
    c = daemon.request("conversations/create", {"projectId": p, "agent": "sql-tuner", "title": "plan"})
    assert c["projectId"] == p and c["messageCount"] == 0
    for i in range(7):
        say(daemon, c["id"], "user", f"Step {i}: migrate the orders table with zero downtime")
    korean = say(daemon, c["id"], "assistant", "데이터베이스를 이전하기 전에 회의를 합시다")
    tool = daemon.request("conversations/append", {
        "conversationId": c["id"], "role": "assistant", "model": "claude-sonnet", "usage": {"inputTokens": 12,
                                                                                           "outputTokens": 34},
        "content": [{"type": "toolCall", "id": "t1", "name": "read", "arguments": {"path": "a.sql"}},
                    {"type": "toolResult", "toolCallId": "t1", "content": "the naïve index"}]})
    assert tool["position"] == 8 and tool["usage"] == {"inputTokens": 12, "outputTokens": 34}
    conv = daemon.request("conversations/get", {"id": c["id"]})
    assert [m["position"] for m in conv["messages"]] == list(range(9)) and "hasMore" not in conv
    assert conv["messages"][8]["content"][0] == {"type": "toolCall", "id": "t1", "name": "read",
                                                 "arguments": {"path": "a.sql"}}
    page = daemon.request("conversations/get", {"id": c["id"], "afterPosition": 6, "limit": 1})
    assert [m["position"] for m in page["messages"]] == [7] and page["hasMore"] is True

    # English: prefixes, every match on some page exactly once, diacritics folded both ways
    hits = every_page(daemon, "conversations/search", {"query": "migrat downtime", "limit": 3}, "results")
    assert len(hits) == 7 and len({h["messageId"] for h in hits}) == 7
    assert all(h["conversationTitle"] == "plan" and h["projectId"] == p for h in hits)
    assert "migrate" in marked(hits[0]["snippet"]) and "downtime" in marked(hits[0]["snippet"])
    assert [h["messageId"] for h in daemon.request("conversations/search", {"query": "naive"})["results"]] \
        == [tool["id"]]
    found = daemon.request("projects/search", {"query": "cafe resume"})["results"]
    assert [h["project"]["name"] for h in found] == ["Café migration"]
    # Korean: a substring inside a word, and a short word as a prefix
    for query, piece in (("베이스", "베이스"), ("회의", "회의")):
        results = daemon.request("conversations/search", {"query": query})["results"]
        assert [h["messageId"] for h in results] == [korean["id"]], query
        assert piece in "".join(marked(results[0]["snippet"]))
    assert [h["project"]["name"] for h in daemon.request("projects/search", {"query": "회의록"})["results"]] \
        == ["데이터베이스 이전"]

    # rename, list, delete
    assert daemon.request("conversations/rename", {"id": c["id"], "title": "Plan B"})["title"] == "Plan B"
    loose = daemon.request("conversations/create", {"title": "loose"})
    assert "projectId" not in loose
    assert [x["id"] for x in daemon.request("conversations/list", {"unassigned": True})["conversations"]] \
        == [loose["id"]]
    in_p = daemon.request("conversations/list", {"projectId": p})["conversations"]
    assert [(x["id"], x["messageCount"]) for x in in_p] == [(c["id"], 9)]
    assert daemon.request("conversations/delete", {"id": loose["id"]})["deleted"] is True
    for method, params in (("conversations/get", {"id": loose["id"]}),
                           ("conversations/rename", {"id": loose["id"], "title": "x"}),
                           ("conversations/delete", {"id": loose["id"]}),
                           ("conversations/append", {"conversationId": loose["id"], "role": "user",
                                                     "content": [{"type": "text", "text": "x"}]})):
        error = error_of(daemon, method, params)
        assert error["data"]["kind"] == "not_found" and loose["id"] in error["message"], method
    error = error_of(daemon, "conversations/create", {"projectId": "p_ghost"})
    assert error["data"]["kind"] == "not_found" and "p_ghost" in error["message"]
    assert error_of(daemon, "conversations/append", {"conversationId": c["id"], "role": "robot",
                                                     "content": []})["data"]["path"] == "$.params.role"


@pytest.mark.parametrize("query", ['"', '"unbalanced', "a*", "*", "NEAR(orders zero)", "-orders", "orders -zero",
                                   "orders OR", "AND", "text:orders", "(orders", "^orders", "orders + zero",
                                   "orders\u0000", "0\u0000", "ord\u0000ers", "orders\u001f\u007f"])
def test_fts_syntax_characters_are_plain_text(daemon: DaemonClient, query: str) -> None:
    c = daemon.request("conversations/create", {"title": "syntax"})["id"]
    say(daemon, c, "user", "orders with zero downtime")
    for method in ("conversations/search", "projects/search", "projects/files/search"):
        result = daemon.request(method, {"query": query})  # never an SQL error
        assert isinstance(result["results"], list)
    if query in ("-orders", "^orders", "(orders", "orders\u0000"):  # the word itself is still found
        assert len(daemon.request("conversations/search", {"query": query})["results"]) == 1


def test_empty_query_is_invalid_params(daemon: DaemonClient) -> None:
    for method in ("conversations/search", "projects/search", "projects/files/search"):
        for query in ("", "   "):
            error = error_of(daemon, method, {"query": query})
            assert error["code"] == -32602 and error["data"]["path"] == "$.params.query", method
            assert "query is empty" in error["message"]
    assert error_of(daemon, "conversations/search", {})["data"]["path"] == "$.params.query"
    assert error_of(daemon, "conversations/search", {"query": "x", "cursor": "garbage!"})["data"]["path"] \
        == "$.params.cursor"


def test_fork_save_and_cascade_delete(daemon: DaemonClient) -> None:
    p = daemon.request("projects/create", {"name": "Origin", "description": "to fork"})["id"]
    daemon.request("projects/files/put", {"projectId": p, "path": "a.txt", "text": "alpha"})
    c = daemon.request("conversations/create", {"projectId": p, "agent": "python-expert", "title": "first chat"})
    say(daemon, c["id"], "user", "hello pelican")
    say(daemon, c["id"], "assistant", "hi")
    loose = daemon.request("conversations/create", {"title": "elsewhere"})
    say(daemon, loose["id"], "user", "pelican outside any project")

    plain = daemon.request("projects/fork", {"id": p})
    assert plain["project"]["name"] == "Origin (fork)" and plain["project"]["forkedFrom"] == p
    assert [f["path"] for f in plain["files"]] == ["a.txt"] and plain["conversations"] == []
    full = daemon.request("projects/fork", {"id": p, "name": "Copy", "includeConversations": True})
    (copied,) = full["conversations"]
    assert copied["title"] == "first chat" and copied["messageCount"] == 2 and copied["id"] != c["id"]
    assert len(daemon.request("conversations/search", {"query": "pelican"})["results"]) == 3

    saved = daemon.request("projects/save", {"id": p, "files": [{"path": "b.txt", "text": "beta"},
                                                                {"path": "bin/x", "base64": "AAEC"}]})
    assert [f["path"] for f in saved["files"]] == ["b.txt", "bin/x"] and saved["removed"] == ["a.txt"]
    assert saved["totalBytes"] == 7
    # a bad file anywhere in a save changes nothing
    assert error_of(daemon, "projects/save", {"id": p, "files": [{"path": "c.txt", "text": "c"},
                                                                 {"path": "../x", "text": "x"}]})["code"] == -32602
    assert [f["path"] for f in daemon.request("projects/get", {"id": p})["files"]] == ["b.txt", "bin/x"]

    # cascade: the project's conversations, messages and files go; forks and loose ones stay
    daemon.request("projects/delete", {"id": p})
    error = error_of(daemon, "conversations/get", {"id": c["id"]})
    assert error["data"]["kind"] == "not_found" and c["id"] in error["message"]
    assert error_of(daemon, "projects/files/get", {"projectId": p, "path": "b.txt"})["data"]["kind"] == "not_found"
    results = daemon.request("conversations/search", {"query": "pelican"})["results"]
    assert sorted(h["conversationId"] for h in results) == sorted([copied["id"], loose["id"]])
    assert daemon.request("projects/files/search", {"query": "beta"})["results"] == []
    assert [f["path"] for f in daemon.request("projects/get", {"id": full["project"]["id"]})["files"]] == ["a.txt"]
    assert len(daemon.request("conversations/get", {"id": copied["id"]})["messages"]) == 2


def test_search_sees_a_message_appended_just_before(daemon: DaemonClient) -> None:
    """Messages are indexed in batches; a pipelined append-then-search still finds it (lane
    order, and the search indexes whatever is queued first)."""
    c = daemon.request("conversations/create", {"title": "pipelined"})["id"]
    first = daemon.next_id()
    second = daemon.next_id()
    waiters = [daemon.expect(first), daemon.expect(second)]
    daemon.send({"jsonrpc": "2.0", "id": first, "method": "conversations/append",
                 "params": {"conversationId": c, "role": "user", "content": [{"type": "text", "text": "quokka"}]}})
    daemon.send({"jsonrpc": "2.0", "id": second, "method": "conversations/search", "params": {"query": "quokka"}})
    appended = daemon.wait(first, waiters[0])["result"]
    found = daemon.wait(second, waiters[1])["result"]["results"]
    assert [h["messageId"] for h in found] == [appended["id"]]
