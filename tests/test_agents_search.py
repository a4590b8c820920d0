"""Search and select ranking, with the expected orders written down.

The small registry below is built so each case isolates one rule of the ranker
(sidecar/agents/search.py): field weights, BM25 saturation, the role word, typo tolerance,
prefixes, Korean endings, the select threshold and its fallback.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.agents.search import damerau1, stem
from sidecar.agents.service import FALLBACK_AGENT, AgentsService
from sidecar.errors import InvalidValue, NotFound
from tests.test_agents import write_agent

REGISTRY = {
    "code-reviewer": ("Reviews a diff or pull request for bugs and style. Use before merging.",
                      "engineering", "[code review, bug finding]", "[review, pull-request]"),
    "pull-request-writer": ("Writes pull request descriptions from a diff. Use when opening a PR.",
                            "engineering", "[pull request descriptions]", "[pull-request, github]"),
    "sql-tuner": ("Speeds up slow SQL queries with indexes. Use when the database is slow.",
                  "engineering", "[query plans, indexes]", "[sql, performance]"),
    "python-expert": ("Writes and explains idiomatic Python. Use for Python code.",
                      "engineering", "[python, packaging]", "[python]"),
    "english-korean-translator": ("Translates between English and Korean (영어 ↔ 한국어 번역). Use for documents.",
                                  "language", "[translation]", "[translation, korean, 번역]"),
    "blog-writer": ("Writes blog posts. Mentions sql once in passing.", "writing", "[blogging]", "[blog]"),
    "general-assistant": ("A helpful all-round assistant for everyday questions.", "general", "[questions]",
                          "[general]"),
}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> AgentsService:
    folder = tmp_path_factory.mktemp("registry")
    for name, (description, category, caps, tags) in REGISTRY.items():
        write_agent(folder / category, name, f"name: {name}\ndescription: {description}\ncategory: {category}\n"
                                             f"capabilities: {caps}\ntags: {tags}")
    s = AgentsService(lambda: [str(folder)], bundled_dir=None)
    s.reload_now()
    return s


def names(service: AgentsService, query: str) -> list[str]:
    return [h.agent.name for h in service.search(query)]


@pytest.mark.parametrize(("query", "expected"), [
    # a name word beats the same word in a description (name weight 3 vs 1)
    ("sql", ["sql-tuner", "blog-writer"]),
    # the role word (the name's last word) decides between two agents about pull requests
    ("review pull request", ["code-reviewer", "pull-request-writer"]),
    # stems: "translating" and "translator" meet at "translat"
    ("translating", ["english-korean-translator"]),
    # a typo in a name word (one transposition) still finds it
    ("pyhton", ["python-expert"]),
    ("reveiw", ["code-reviewer"]),
    # a word cut short while typing matches by prefix
    ("transl", ["english-korean-translator"]),
    # Korean: a word with an ending (번역해줘) matches its known stem (번역)
    ("번역해줘", ["english-korean-translator"]),
    # words in no agent: nothing
    ("zebra", []),
])
def test_search_order(service: AgentsService, query: str, expected: list[str]) -> None:
    assert names(service, query)[: len(expected) or None] == expected


def test_search_reports_what_matched(service: AgentsService) -> None:
    hits = service.search("pyhton code")
    top = hits[0]
    assert top.agent.name == "python-expert"
    assert "name:pyhton~python" in top.matched
    assert any(m.startswith("description:") or m.startswith("summary:") for m in top.matched)
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)


def test_search_ties_go_by_name_and_limit_applies(service: AgentsService) -> None:
    hits = service.search("use", limit=3)  # a stop word: nothing to rank
    assert hits == []
    hits = service.search("writes", limit=2)
    assert len(hits) == 2


def test_empty_query_is_invalid(service: AgentsService) -> None:
    with pytest.raises(InvalidValue) as info:
        service.search("   ")
    assert info.value.path == "$.params.query"


@pytest.mark.parametrize(("prompt", "agent"), [
    ("please review my pull request before I merge", "code-reviewer"),
    ("translate this paragraph to Korean", "english-korean-translator"),
    ("my SQL query is slow", "sql-tuner"),
])
def test_select_picks_the_best_and_explains(service: AgentsService, prompt: str, agent: str) -> None:
    choice = service.select(prompt)
    assert choice.agent.name == agent
    assert not choice.fallback
    assert choice.reason.startswith("best match")
    assert agent not in [a.agent.name for a in choice.alternatives]
    assert service.select(prompt) == choice  # deterministic


def test_select_falls_back_below_the_threshold(service: AgentsService) -> None:
    choice = service.select("what's the weather like on Mars")
    assert choice.agent.name == FALLBACK_AGENT
    assert choice.fallback
    assert "general-assistant" in choice.reason


def test_select_without_a_fallback_agent_and_no_match(tmp_path: Path) -> None:
    write_agent(tmp_path, "only", "name: only\ndescription: Does one thing.")
    s = AgentsService(lambda: [str(tmp_path)], bundled_dir=None)
    with pytest.raises(NotFound, match="general-assistant"):
        s.select("zebra crossing")


def test_stemmer_and_edit_distance() -> None:
    assert stem("reviewer") == stem("reviews") == stem("review") == "review"
    assert stem("translator") == stem("translation") == stem("translate") == "translat"
    assert stem("debugging") == "debug"
    assert stem("class") == "class" and stem("analysis") == "analysis"
    assert damerau1("reveiw", "review") and damerau1("pythn", "python") and damerau1("pythons", "python")
    assert not damerau1("pthyon", "python")


@pytest.mark.parametrize(("prompt", "agent"), [
    ("review my pull request", "code-reviewer"),
    ("translate this to Korean", "english-korean-translator"),
    ("my SQL query is slow", "sql-tuner"),
    ("write a blog post about our launch", "blog-writer"),
    ("이 문장을 영어로 번역해줘", "english-korean-translator"),
    ("hello there", "general-assistant"),
])
def test_select_on_the_bundled_set(prompt: str, agent: str) -> None:
    service = AgentsService()
    assert service.select(prompt).agent.name == agent
