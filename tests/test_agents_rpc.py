"""agents/* end to end: the real daemon over JSON-RPC, with the bundled registry, a user folder
set through `settings/set agents.paths`, and hot reload of real file changes."""

from __future__ import annotations

import os
import queue
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sidecar.agents.registry import BUNDLED_DIR
from sidecar.client import DaemonClient, RpcError
from tests.test_agents import PROMPT, write_agent

#: a change is noticed within a second (the poll interval); generous for a loaded machine
NOTICE_SECONDS = 15.0


def wait_note(client: DaemonClient, method: str, accept: Callable[[dict[str, Any]], bool] = lambda p: True,
              timeout: float = NOTICE_SECONDS) -> dict[str, Any]:
    """The params of the next `method` notification that `accept`s them (others are dropped)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {method} notification within {timeout} s")
        try:
            note = client.notifications.get(timeout=left)
        except queue.Empty:
            continue
        if note.get("method") == method and accept(note["params"]):
            return note["params"]


def error_of(client: DaemonClient, method: str, params: Any) -> dict[str, Any]:
    with pytest.raises(RpcError) as info:
        client.request(method, params)
    return info.value.error


def bundled_count() -> int:
    return len([p for p in BUNDLED_DIR.rglob("*.md") if p.name.lower() != "readme.md"])


# ---- the bundled registry ------------------------------------------------------------------------

def test_list_pages_through_every_agent_with_filters(daemon: DaemonClient) -> None:
    names: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 25}
        if cursor:
            params["cursor"] = cursor
        page = daemon.request("agents/list", params)
        assert "prompt" not in page["agents"][0]  # summaries only
        names += [a["name"] for a in page["agents"]]
        pages += 1
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert len(names) == bundled_count() >= 84
    assert names == sorted(names) and len(set(names)) == len(names)
    assert pages == -(-len(names) // 25)
    categories = daemon.request("agents/categories")["categories"]
    assert sum(c["count"] for c in categories) == len(names)
    by_name = {c["name"]: c["count"] for c in categories}
    data = daemon.request("agents/list", {"category": "data", "limit": 500})
    assert len(data["agents"]) == by_name["data"] and {a["category"] for a in data["agents"]} == {"data"}
    assert data["nextCursor"] is None
    tagged = daemon.request("agents/list", {"tag": "review", "limit": 500})["agents"]
    assert "code-reviewer" in [a["name"] for a in tagged]
    assert all("review" in [t.lower() for t in a["tags"]] for a in tagged)
    # bad input on the wire
    assert error_of(daemon, "agents/list", {"cursor": "!!not a cursor"})["data"]["path"] == "$.params.cursor"
    assert error_of(daemon, "agents/list", {"limit": 0})["code"] == -32602


def test_get_says_where_an_agent_came_from(daemon: DaemonClient) -> None:
    agent = daemon.request("agents/get", {"name": "code-reviewer"})
    assert agent["source"] == "bundled"
    assert agent["path"] == str(BUNDLED_DIR / "engineering" / "code-reviewer.md")
    assert len(agent["prompt"]) >= 400 and agent["prompt"].startswith("You are a senior code reviewer")
    assert "review" in agent["tags"] and agent["category"] == "engineering"
    error = error_of(daemon, "agents/get", {"name": "no-such-agent"})
    assert error["data"]["kind"] == "not_found" and "no-such-agent" in error["message"]
    assert error["data"]["details"] == {"name": "no-such-agent"}


def test_search_ranks_and_explains(daemon: DaemonClient) -> None:
    results = daemon.request("agents/search", {"query": "review pull request", "limit": 5})["results"]
    assert [r["agent"]["name"] for r in results[:2]] == ["code-reviewer", "pull-request-writer"]
    assert any(m.startswith("name:") for m in results[0]["matched"])
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True) and len(results) <= 5
    # a typo in a name word still finds it
    typo = daemon.request("agents/search", {"query": "pyhton"})["results"]
    assert typo[0]["agent"]["name"] == "python-expert" and "name:pyhton~python" in typo[0]["matched"]
    # Korean with an ending
    korean = daemon.request("agents/search", {"query": "번역해줘"})["results"]
    assert "english-korean-translator" in [r["agent"]["name"] for r in korean[:3]]
    # query syntax is plain text; empty is invalid params
    daemon.request("agents/search", {"query": '"NEAR(a b)* -x'})
    error = error_of(daemon, "agents/search", {"query": "   "})
    assert error["code"] == -32602 and error["data"]["path"] == "$.params.query"


def test_select_picks_with_a_reason_and_falls_back(daemon: DaemonClient) -> None:
    choice = daemon.request("agents/select", {"prompt": "my SQL query is slow, can you help tune it?"})
    assert choice["agent"]["name"] == "sql-tuner" and "fallback" not in choice
    assert choice["reason"].startswith("best match") and "sql" in choice["reason"].lower()
    assert choice["alternatives"] and choice["agent"]["name"] not in [a["agent"]["name"] for a in
                                                                      choice["alternatives"]]
    assert daemon.request("agents/select", {"prompt": "my SQL query is slow, can you help tune it?"}) == choice
    fallback = daemon.request("agents/select", {"prompt": "hello there"})
    assert fallback["agent"]["name"] == "general-assistant" and fallback["fallback"] is True
    assert error_of(daemon, "agents/select", {"prompt": ""})["code"] == -32602


def test_reload_and_problems_with_nothing_wrong(daemon: DaemonClient) -> None:
    # the registry loads on first use: a reload before it reports every agent as added
    first = daemon.request("agents/reload")
    assert first["count"] == bundled_count() and first["problems"] == 0 and len(first["added"]) == first["count"]
    report = daemon.request("agents/reload")
    assert report["count"] == bundled_count() and report["problems"] == 0
    assert report["added"] == report["removed"] == report["changed"] == []
    assert daemon.request("agents/problems") == {"problems": []}


# ---- a user folder -------------------------------------------------------------------------------

def test_user_folder_overrides_a_bundled_agent_and_hot_reloads(daemon: DaemonClient, tmp_path: Path) -> None:
    folder = tmp_path / "my-agents"
    mine = write_agent(folder / "nested", "reviewer",
                       "name: code-reviewer\ndescription: My own reviewer, strict about naming.\ncategory: engineering")
    write_agent(folder, "haiku-poet", "name: haiku-poet\ndescription: Writes haiku about code.\ncategory: writing")
    assert daemon.request("agents/get", {"name": "code-reviewer"})["source"] == "bundled"  # browsing loads it
    daemon.request("settings/set", {"key": "agents.paths", "value": [str(folder)]})
    changed = wait_note(daemon, "agents/changed", lambda p: "haiku-poet" in p["added"])
    assert changed["changed"] == ["code-reviewer"] and changed["count"] == bundled_count() + 1
    agent = daemon.request("agents/get", {"name": "code-reviewer"})
    assert agent["source"] == "user" and agent["path"] == str(mine)
    assert agent["shadows"] == [str(BUNDLED_DIR / "engineering" / "code-reviewer.md")]
    assert agent["description"] == "My own reviewer, strict about naming."
    assert daemon.request("agents/search", {"query": "haiku"})["results"][0]["agent"]["name"] == "haiku-poet"

    # hot reload: a real change to a file in the folder, noticed by the watcher
    poet = folder / "haiku-poet.md"
    poet.write_text("---\nname: haiku-poet\ndescription: Writes limericks now.\ncategory: writing\n---\n" + PROMPT)
    st = poet.stat()
    os.utime(poet, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))  # a change within one clock tick
    changed = wait_note(daemon, "agents/changed", lambda p: p["changed"] == ["haiku-poet"])
    assert changed["added"] == [] and changed["removed"] == []
    assert daemon.request("agents/get", {"name": "haiku-poet"})["description"] == "Writes limericks now."

    # a malformed file is skipped, reported with its line, and announced; the rest still loads
    (folder / "broken.md").write_text("---\nname: broken\ndescription: fine\ntags: [a, b\n---\nbody")
    changed = wait_note(daemon, "agents/changed", lambda p: p["problems"] == 1)
    problems = daemon.request("agents/problems")["problems"]
    assert [Path(p["file"]).name for p in problems] == ["broken.md"]
    assert "invalid YAML" in problems[0]["reason"] and problems[0]["line"] >= 4
    assert error_of(daemon, "agents/get", {"name": "broken"})["data"]["kind"] == "not_found"

    # removing the override brings the bundled agent back; agents/reload reports it at once
    mine.unlink()
    report = daemon.request("agents/reload")
    if report["changed"]:  # the watcher may have got there first
        assert report["changed"] == ["code-reviewer"]
    assert daemon.request("agents/get", {"name": "code-reviewer"})["source"] == "bundled"

    # a folder that does not exist is a problem, not a failure
    daemon.request("settings/set", {"key": "agents.paths", "value": [str(tmp_path / "missing")]})
    wait_note(daemon, "agents/changed", lambda p: "haiku-poet" in p["removed"])
    problems = daemon.request("agents/problems")["problems"]
    assert [p["file"] for p in problems] == [str(tmp_path / "missing")]
    assert "does not exist" in problems[0]["reason"]
