"""The agent registry as a service: list, get, search, select, categories, reload, problems.

Reads work on the current `Snapshot` (immutable, swapped whole by a reload), so they never
see half a reload and need no lock. Loads run one at a time (a thread lock), in a worker
thread when called from async code. Other capabilities (chat) call `get` and `select`.
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio

from sidecar.agents.parser import AgentDef
from sidecar.agents.registry import BUNDLED_DIR, Entry, Loader, Problem, Snapshot, Source
from sidecar.agents.search import Match
from sidecar.errors import InvalidValue, NotFound

log = logging.getLogger("sidecar.agents")

#: the agent `select` falls back to when nothing scores at least SELECT_THRESHOLD
FALLBACK_AGENT = "general-assistant"
#: a select score below this is not a confident match. A name word matched in a registry of
#: ~100 agents scores about 8-13, a rare description word 2-4, a common one under 1.
SELECT_THRESHOLD = 3.0
ALTERNATIVES = 3


@dataclass(frozen=True, slots=True)
class Hit:
    agent: AgentDef
    score: float
    matched: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Selection:
    agent: AgentDef
    score: float
    reason: str
    alternatives: tuple[Hit, ...]
    fallback: bool


@dataclass(frozen=True, slots=True)
class ReloadReport:
    count: int
    problems: int
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]
    duration_ms: float
    problems_changed: bool = False

    @property
    def differs(self) -> bool:
        """Agents or problems differ from before the load (worth an `agents/changed`)."""
        return bool(self.added or self.removed or self.changed or self.problems_changed)


class AgentsService:
    def __init__(self, user_paths: Callable[[], list[str]] | None = None, *,
                 bundled_dir: Path | None = BUNDLED_DIR,
                 on_change: Callable[[ReloadReport], None] | None = None) -> None:
        """`user_paths()` gives the user's folders, highest precedence first (read at every load);
        `bundled_dir` None leaves the bundled set out (tests); `on_change` is called (on the
        event loop) after an async load that changed agents or problems."""
        self._user_paths = user_paths or (lambda: [])
        self._bundled_dir = bundled_dir
        self._on_change = on_change
        self._loader = Loader()
        self._load_lock = threading.Lock()
        self.snapshot = Snapshot.empty()
        self._loaded = False

    # ---- loading ----------------------------------------------------------------------------

    def sources(self) -> list[Source]:
        out = [Source("user", Path(p).expanduser()) for p in self._user_paths() if p.strip()]
        if self._bundled_dir is not None:
            out.append(Source("bundled", self._bundled_dir))
        return out

    def reload_now(self, _scans: dict[Path, list[tuple[str, int, int]]] | None = None,
                   _sources: list[Source] | None = None) -> ReloadReport:
        """Load every source again (unchanged files come from the cache); blocking."""
        with self._load_lock:
            started = time.perf_counter()
            before = self.snapshot
            after = self._loader.load(_sources if _sources is not None else self.sources(), _scans)
            self.snapshot = after
            self._loaded = True
            report = _diff(before, after, (time.perf_counter() - started) * 1000)
        for p in after.problems:
            if p not in before.problems:
                log.warning("agent file skipped: %s%s: %s", p.file, f":{p.line}" if p.line else "", p.reason)
        return report

    def changed_on_disk(self) -> bool:
        """Whether any agent file was added, removed or modified since the last load."""
        return self._loader.signature(self._loader.scan_all(self.sources())) != self.snapshot.signature

    def poll_now(self) -> ReloadReport | None:
        """Reload when something changed on disk (the watcher calls this about once a second)."""
        sources = self.sources()
        scans = self._loader.scan_all(sources)
        if not self._loaded or self._loader.signature(scans) != self.snapshot.signature:
            return self.reload_now(scans, sources)
        return None

    async def reload(self) -> ReloadReport:
        """Reload in a worker thread; `on_change` runs here, on the event loop, when it differs."""
        report = await anyio.to_thread.run_sync(self.reload_now)
        self._announce(report)
        return report

    async def poll(self) -> ReloadReport | None:
        report = await anyio.to_thread.run_sync(self.poll_now)
        self._announce(report)
        return report

    def _announce(self, report: ReloadReport | None) -> None:
        if report is not None and report.differs and self._on_change is not None:
            self._on_change(report)

    @property
    def loaded(self) -> bool:
        return self._loaded

    def ensure_loaded(self) -> Snapshot:
        if not self._loaded:
            self.reload_now()
        return self.snapshot

    # ---- reading ----------------------------------------------------------------------------

    def get(self, name: str) -> Entry:
        entry = self.ensure_loaded().entries.get(name)
        if entry is None:
            raise NotFound(f"no agent named {name!r}", name=name)
        return entry

    def list(self, category: str | None = None, tag: str | None = None, cursor: str | None = None,
             limit: int = 100) -> tuple[list[AgentDef], str | None]:
        snap = self.ensure_loaded()
        after = _decode_cursor(cursor) if cursor else None
        category = category.lower() if category else None
        tag = tag.lower() if tag else None
        out: list[AgentDef] = []
        for name in snap.names:
            if after is not None and name <= after:
                continue
            agent = snap.entries[name].agent
            if category is not None and agent.category != category:
                continue
            if tag is not None and tag not in (t.lower() for t in agent.tags):
                continue
            if len(out) == limit:
                return out, _encode_cursor(out[-1].name)
            out.append(agent)
        return out, None

    def categories(self) -> list[tuple[str, int]]:
        counts = Counter(e.agent.category for e in self.ensure_loaded().entries.values())
        return sorted(counts.items())

    def problems(self) -> tuple[Problem, ...]:
        return self.ensure_loaded().problems

    def search(self, query: str, limit: int = 10) -> list[Hit]:
        if not query.strip():
            raise InvalidValue("query is empty: give one or more words to search for", "$.params.query")
        snap = self.ensure_loaded()
        return [_hit(snap, m) for m in snap.ranker.search(query, limit)]

    def select(self, prompt: str) -> Selection:
        """The best agent for `prompt`: the top search result when it scores at least
        SELECT_THRESHOLD, else the fallback agent; deterministic (ties go by name)."""
        if not prompt.strip():
            raise InvalidValue("prompt is empty: give the request to find an agent for", "$.params.prompt")
        snap = self.ensure_loaded()
        hits = [_hit(snap, m) for m in snap.ranker.search(prompt, ALTERNATIVES + 1)]
        if hits and hits[0].score >= SELECT_THRESHOLD:
            best = hits[0]
            reason = f"best match (score {best.score:.2f}) on {_explain(best.matched)}"
            if len(hits) > 1:
                reason += f"; next: {hits[1].agent.name} ({hits[1].score:.2f})"
            return Selection(best.agent, best.score, reason, tuple(hits[1:]), False)
        fallback = snap.entries.get(FALLBACK_AGENT)
        if fallback is None:
            if not hits:
                raise NotFound(f"no agent matches and there is no {FALLBACK_AGENT!r} agent to fall back to",
                               name=FALLBACK_AGENT)
            best = hits[0]
            return Selection(best.agent, best.score, f"weak match (score {best.score:.2f}) on "
                             f"{_explain(best.matched)}; no {FALLBACK_AGENT} to fall back to", tuple(hits[1:]), False)
        if hits:
            reason = (f"no agent scored {SELECT_THRESHOLD:g} or more (best: {hits[0].agent.name}, "
                      f"{hits[0].score:.2f}, on {_explain(hits[0].matched)}): using {FALLBACK_AGENT}")
        else:
            reason = f"no agent matched any word of the prompt: using {FALLBACK_AGENT}"
        alternatives = tuple(h for h in hits if h.agent.name != FALLBACK_AGENT)[:ALTERNATIVES]
        return Selection(fallback.agent, hits[0].score if hits and hits[0].agent.name == FALLBACK_AGENT else 0.0,
                         reason, alternatives, True)


def _hit(snap: Snapshot, match: Match) -> Hit:
    return Hit(snap.ranker.agents[match.index], match.score, match.matched)


def _explain(matched: tuple[str, ...], most: int = 6) -> str:
    """`name:sql, description:slow` -> "name 'sql', description 'slow'"."""
    by_field: dict[str, list[str]] = {}
    for item in matched:
        fld, _, term = item.partition(":")
        by_field.setdefault(fld, []).append(term)
    parts = []
    for fld, found in by_field.items():
        shown = ", ".join(f"'{t}'" for t in found[:most])
        parts.append(f"{fld} {shown}")
    return "; ".join(parts)


def _diff(before: Snapshot, after: Snapshot, ms: float) -> ReloadReport:
    old, new = before.entries, after.entries
    added = tuple(sorted(set(new) - set(old)))
    removed = tuple(sorted(set(old) - set(new)))
    changed = tuple(sorted(n for n in set(old) & set(new) if old[n] != new[n]))
    return ReloadReport(len(new), len(after.problems), added, removed, changed, round(ms, 3),
                        before.problems != after.problems)


def _encode_cursor(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidValue("cursor is not one this method returned", "$.params.cursor") from None
