"""The agent registry on temporary folders: parsing, precedence, malformed files, hot reload,
listing and pagination; and every bundled agent file."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest

from sidecar.agents.parser import MAX_FILE_BYTES, AgentFileError, parse_text
from sidecar.agents.registry import BUNDLED_DIR
from sidecar.agents.service import AgentsService
from sidecar.errors import InvalidValue, NotFound

PROMPT = "You are a careful assistant. " * 20


def write_agent(folder: Path, stem: str, front: str, body: str = PROMPT) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.md"
    path.write_text(f"---\n{front.strip()}\n---\n{body}", encoding="utf-8")
    return path


def touch_later(path: Path, text: str) -> None:
    """Rewrite `path` and move its mtime forward, so a change within one clock tick is seen."""
    path.write_text(text, encoding="utf-8")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def service_for(*folders: Path) -> AgentsService:
    return AgentsService(lambda: [str(f) for f in folders], bundled_dir=None)


# ---- parsing ------------------------------------------------------------------------------------

def test_front_matter_fields_unknown_keys_and_body() -> None:
    agent = parse_text(
        "---\nname: sql-helper\ndescription: Helps with SQL.\ncategory: Data\ncapabilities: [queries, indexes]\n"
        "tools: Read, Grep\nmodel: claude-sonnet\nversion: 1.2\nauthor: me\ntags: [sql]\n"
        "color: blue\nreleased: 2024-05-01\n---\n\n# Prompt\nBe brief.\n", "/x/sql-helper.md", "user", "sql-helper")
    assert agent.name == "sql-helper"
    assert agent.category == "data"
    assert agent.capabilities == ("queries", "indexes")
    assert agent.tools == ("Read", "Grep")  # Claude Code's comma-separated form
    assert agent.version == "1.2"
    assert agent.extra == {"color": "blue", "released": "2024-05-01"}
    assert agent.prompt == "# Prompt\nBe brief."


def test_name_falls_back_to_the_file_stem() -> None:
    agent = parse_text("---\ndescription: No name here.\n---\nbody", "/x/my-agent.md", "user", "my-agent")
    assert agent.name == "my-agent"
    assert agent.category == "general"


@pytest.mark.parametrize(("text", "reason", "line"), [
    ("no front matter", "no front matter", 1),
    ("---\nname: x\ndescription: open\n", "not closed", 1),
    ("---\nname: x\ndescription: [unclosed\n---\nbody", "invalid YAML", None),
    ("---\nname: x\n---\nbody", "description is missing", 2),
    ("---\nname: x\ndescription: ok\ntags: {a: 1}\n---\nbody", "tags must be a list", 4),
    ("---\n- just\n- a list\n---\nbody", "not a mapping", 2),
])
def test_malformed_text(text: str, reason: str, line: int | None) -> None:
    with pytest.raises(AgentFileError) as info:
        parse_text(text, "/x/a.md", "user", "a")
    assert reason in info.value.reason
    if line is not None:
        assert info.value.line == line


def test_yaml_error_reports_the_file_line() -> None:
    with pytest.raises(AgentFileError) as info:
        parse_text("---\nname: x\ndescription: fine\ntags: [a, b\nmodel: m\n---\nbody", "/x/a.md", "user", "a")
    assert info.value.line is not None and info.value.line >= 5  # the YAML error is past line 4


# ---- loading ------------------------------------------------------------------------------------

def test_user_folder_wins_over_bundled_and_get_says_which_file(tmp_path: Path) -> None:
    user, bundled = tmp_path / "user", tmp_path / "bundled"
    mine = write_agent(user / "nested" / "deeper", "reviewer", "name: reviewer\ndescription: Mine.")
    theirs = write_agent(bundled, "reviewer", "name: reviewer\ndescription: Bundled.")
    write_agent(bundled, "other", "name: other\ndescription: Only bundled.")
    service = AgentsService(lambda: [str(user)], bundled_dir=bundled)
    service.reload_now()
    entry = service.get("reviewer")
    assert entry.agent.description == "Mine."
    assert entry.agent.path == str(mine) and entry.agent.source == "user"
    assert entry.shadows == (str(theirs),)
    assert service.get("other").agent.source == "bundled"
    assert service.problems() == ()


def test_first_user_folder_wins_over_later_ones(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write_agent(a, "x", "name: twin\ndescription: From a.")
    write_agent(b, "y", "name: twin\ndescription: From b.")
    service = service_for(a, b)
    service.reload_now()
    assert service.get("twin").agent.description == "From a."


def test_malformed_files_are_skipped_and_reported(tmp_path: Path) -> None:
    folder = tmp_path / "agents"
    write_agent(folder, "good", "name: good\ndescription: Fine.")
    write_agent(folder, "bad-yaml", "name: bad\ndescription: [oops")
    write_agent(folder, "no-description", "name: nodesc")
    write_agent(folder, "dup-1", "name: twin\ndescription: First.")
    dup2 = write_agent(folder, "dup-2", "name: twin\ndescription: Second.")
    big = write_agent(folder, "big", "name: big\ndescription: Big.", "x" * (MAX_FILE_BYTES + 1))
    latin1 = folder / "latin1.md"
    latin1.write_bytes("---\nname: latin\ndescription: caf\xe9\n---\nbody".encode("latin-1"))
    (folder / "README.md").write_text("# not an agent\n")
    (folder / ".hidden.md").write_text("junk")
    service = service_for(folder, tmp_path / "missing")
    report = service.reload_now()  # never raises
    assert report.count == 2
    assert sorted(service.snapshot.names) == ["good", "twin"]
    assert service.get("twin").agent.description == "First."  # dup-1 sorts first
    problems = {Path(p.file).name: p for p in service.problems()}
    assert set(problems) == {"bad-yaml.md", "no-description.md", "dup-2.md", "big.md", "latin1.md", "missing"}
    assert "invalid YAML" in problems["bad-yaml.md"].reason and problems["bad-yaml.md"].line is not None
    assert "description is missing" in problems["no-description.md"].reason
    assert "duplicate name 'twin'" in problems["dup-2.md"].reason and problems["dup-2.md"].file == str(dup2)
    assert "256 KiB" in problems["big.md"].reason and problems["big.md"].file == str(big)
    assert "not UTF-8" in problems["latin1.md"].reason and problems["latin1.md"].line == 3
    assert "does not exist" in problems["missing"].reason


def test_hot_reload_sees_a_real_file_change_and_announces_it(tmp_path: Path) -> None:
    folder = tmp_path / "agents"
    path = write_agent(folder, "writer", "name: writer\ndescription: Writes prose.")
    changes = []
    service = AgentsService(lambda: [str(folder)], bundled_dir=None, on_change=changes.append)

    async def main() -> None:
        await service.reload()
        assert [c.added for c in changes] == [("writer",)]
        assert await service.poll() is None  # nothing changed: no reload
        touch_later(path, "---\nname: writer\ndescription: Writes poems.\n---\n" + PROMPT)
        write_agent(folder / "sub", "coder", "name: coder\ndescription: Writes code.")
        report = await service.poll()
        assert report is not None and report.changed == ("writer",) and report.added == ("coder",)
        assert service.get("writer").agent.description == "Writes poems."
        path.unlink()
        report = await service.poll()
        assert report is not None and report.removed == ("writer",)
        with pytest.raises(NotFound, match="writer"):
            service.get("writer")
        # a file that turns bad is a problem, and the change is announced
        touch_later(folder / "sub" / "coder.md", "---\nname: coder\n---\n")
        report = await service.poll()
        assert report is not None and report.removed == ("coder",) and report.problems == 1

    anyio.run(main)
    assert len(changes) == 4


def test_a_reload_swaps_the_whole_snapshot(tmp_path: Path) -> None:
    folder = tmp_path / "agents"
    write_agent(folder, "a", "name: a\ndescription: A.")
    service = service_for(folder)
    service.reload_now()
    before = service.snapshot
    write_agent(folder, "b", "name: b\ndescription: B.")
    service.reload_now()
    assert before.names == ("a",)  # a reader holding the old snapshot sees it unchanged
    assert service.snapshot.names == ("a", "b")


def test_list_filters_and_pages(tmp_path: Path) -> None:
    folder = tmp_path / "agents"
    for i in range(7):
        cat = "data" if i % 2 else "writing"
        write_agent(folder, f"agent-{i}", f"name: agent-{i}\ndescription: Agent {i}.\ncategory: {cat}\n"
                                          f"tags: [{'even' if i % 2 == 0 else 'odd'}]")
    service = service_for(folder)
    names: list[str] = []
    cursor = None
    while True:
        page, cursor = service.list(limit=3, cursor=cursor)
        names += [a.name for a in page]
        if cursor is None:
            break
    assert names == [f"agent-{i}" for i in range(7)]
    assert [a.name for a in service.list(category="DATA")[0]] == ["agent-1", "agent-3", "agent-5"]
    assert [a.name for a in service.list(tag="even", limit=2)[0]] == ["agent-0", "agent-2"]
    assert service.categories() == [("data", 3), ("writing", 4)]
    with pytest.raises(InvalidValue) as info:
        service.list(cursor="!!!not a cursor")
    assert info.value.path == "$.params.cursor"


def test_unknown_agent_is_not_found_naming_it(tmp_path: Path) -> None:
    service = service_for(tmp_path)
    with pytest.raises(NotFound, match="no agent named 'ghost'") as info:
        service.get("ghost")
    assert info.value.details == {"name": "ghost"}


# ---- the bundled set ----------------------------------------------------------------------------

def test_every_bundled_agent_parses_with_a_real_prompt() -> None:
    files = sorted(BUNDLED_DIR.rglob("*.md"))
    assert len(files) >= 80
    service = AgentsService()
    report = service.reload_now()
    assert service.problems() == ()
    assert report.count == len(files)
    for name in service.snapshot.names:
        agent = service.get(name).agent
        assert len(agent.prompt) >= 400, f"{agent.path}: prompt has {len(agent.prompt)} characters"
        assert agent.category == Path(agent.path).parent.name, agent.path
    assert "general-assistant" in service.snapshot.entries
