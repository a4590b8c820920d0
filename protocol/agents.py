"""agents/*: the agent registry — Markdown files with YAML front matter, from the user's folders
(setting `agents.paths`) and the bundled set; listing, ranked search, selection for a prompt,
hot reload and the files that could not be loaded."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

from protocol.common import Empty
from protocol.spec import MethodSpec, NotificationSpec

NAME_MAX_LENGTH = 200
QUERY_MAX_LENGTH = 1000
PROMPT_MAX_LENGTH = 100_000
LIST_MAX_LIMIT = 500
SEARCH_MAX_LIMIT = 100

AgentName = Annotated[str, Meta(min_length=1, max_length=NAME_MAX_LENGTH, description="An agent's name.")]


class AgentSummary(msgspec.Struct, omit_defaults=True):
    """An agent as lists and searches show it (no prompt)."""

    name: str
    description: str
    category: str = "general"
    capabilities: list[str] = []
    tags: list[str] = []
    tools: list[str] = []
    model: str | None = None
    version: str | None = None
    author: str | None = None
    #: "user" (a folder of `agents.paths`) or "bundled"
    source: str = "bundled"


class Agent(msgspec.Struct, omit_defaults=True):
    """One agent in full: its front matter, its prompt (the Markdown body) and where it came from."""

    name: str
    description: str
    #: the system prompt: the file's body after the front matter
    prompt: str
    #: the file it was loaded from
    path: str
    source: str
    category: str = "general"
    capabilities: list[str] = []
    tags: list[str] = []
    tools: list[str] = []
    model: str | None = None
    version: str | None = None
    author: str | None = None
    #: front-matter keys this daemon does not know, kept as written
    extra: dict[str, Any] = {}
    #: files of lower precedence that define the same name and are shadowed by this one
    shadows: list[str] = []


class AgentsListParams(msgspec.Struct, omit_defaults=True):
    category: str | None = None
    tag: str | None = None
    #: `nextCursor` of the previous page
    cursor: str | None = None
    limit: Annotated[int, Meta(ge=1, le=LIST_MAX_LIMIT)] = 100


class AgentsListResult(msgspec.Struct):
    agents: list[AgentSummary]
    #: pass as `cursor` for the next page; null on the last page
    nextCursor: str | None = None


class AgentsGetParams(msgspec.Struct):
    name: AgentName


class AgentsSearchParams(msgspec.Struct):
    query: Annotated[str, Meta(max_length=QUERY_MAX_LENGTH, description="Words to look for; not empty.")]
    limit: Annotated[int, Meta(ge=1, le=SEARCH_MAX_LIMIT)] = 10


class SearchHit(msgspec.Struct):
    agent: AgentSummary
    #: BM25 score over the weighted fields (higher is better; comparable within one query)
    score: float
    #: what matched, as `field:term` (`name:review`, `tags:sql`, `name:reveiw~review` for a typo)
    matched: list[str]


class AgentsSearchResult(msgspec.Struct):
    results: list[SearchHit]


class CategoryCount(msgspec.Struct):
    name: str
    count: int


class AgentsCategoriesResult(msgspec.Struct):
    categories: list[CategoryCount]


class AgentsSelectParams(msgspec.Struct):
    prompt: Annotated[str, Meta(max_length=PROMPT_MAX_LENGTH, description="The user's request, as typed.")]


class AgentsSelectResult(msgspec.Struct, omit_defaults=True):
    agent: AgentSummary
    score: float
    #: why this agent, in words: the fields and terms that matched, or why the fallback was used
    reason: str
    #: the next best matches, best first
    alternatives: list[SearchHit] = []
    #: the best score was below the threshold: the general agent was chosen
    fallback: bool = False


class AgentProblem(msgspec.Struct, omit_defaults=True):
    """A file (or folder) that was skipped, and why."""

    file: str
    reason: str
    #: 1-based line in the file, where known
    line: int | None = None


class AgentsProblemsResult(msgspec.Struct):
    problems: list[AgentProblem]


class AgentsReloadResult(msgspec.Struct):
    count: int
    problems: int
    added: list[str]
    removed: list[str]
    changed: list[str]
    durationMs: float


class AgentsChanged(msgspec.Struct):
    """The registry was reloaded and something differs (agents or problems)."""

    count: int
    problems: int
    added: list[str]
    removed: list[str]
    changed: list[str]


LIST = MethodSpec("agents/list", AgentsListParams, AgentsListResult,
                  "Agents sorted by name, optionally of one category or tag, a page at a time.")
GET = MethodSpec("agents/get", AgentsGetParams, Agent, "One agent with its prompt and the file it came from.")
SEARCH = MethodSpec("agents/search", AgentsSearchParams, AgentsSearchResult,
                    "Agents ranked by BM25 over name, capabilities, tags, description and category; "
                    "tolerates one typo per word in names.")
CATEGORIES = MethodSpec("agents/categories", Empty, AgentsCategoriesResult, "Categories with their agent counts.")
SELECT = MethodSpec("agents/select", AgentsSelectParams, AgentsSelectResult,
                    "The best agent for a free-text prompt (the search ranking over its words), with the reason "
                    "and alternatives; the general agent when nothing scores above the threshold.")
RELOAD = MethodSpec("agents/reload", Empty, AgentsReloadResult,
                    "Reload the registry now (it also reloads by itself when a file changes).")
PROBLEMS = MethodSpec("agents/problems", Empty, AgentsProblemsResult,
                      "Files that were skipped: bad YAML, no description, a duplicate name, too large, not UTF-8.")

CHANGED = NotificationSpec("agents/changed", AgentsChanged, "The agent registry was reloaded and differs.")

METHODS = (LIST, GET, SEARCH, CATEGORIES, SELECT, RELOAD, PROBLEMS)
NOTIFICATIONS = (CHANGED,)
