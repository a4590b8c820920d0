"""Loading the agent folders into an immutable snapshot, and reloading only what changed.

Sources in precedence order: the user's folders (`agents.paths`, first wins), then the
bundled folder. Every `*.md` file below a folder (recursively; hidden files and folders and
`README.md` skipped) is one agent. A file that cannot be one is skipped and reported as a
problem; so is a second file with the same name in one source. The same name in two
sources: the higher one wins and lists the other in `shadows`.

`Loader` keeps each parsed file keyed by (path, mtime, size), so a reload after one file
changed re-reads one file, then rebuilds the ranker; a snapshot is never modified once
built, and the service swaps the whole of it at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from sidecar.agents.parser import AgentDef, AgentFileError, parse_file
from sidecar.agents.search import Doc, Ranker, prepare

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    reason: str
    line: int | None = None


@dataclass(frozen=True, slots=True)
class Source:
    label: str  # "user" | "bundled"
    root: Path


@dataclass(frozen=True, slots=True)
class Entry:
    agent: AgentDef
    shadows: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Snapshot:
    entries: dict[str, Entry]  # by name
    names: tuple[str, ...]  # sorted
    problems: tuple[Problem, ...]
    ranker: Ranker
    #: every file seen: path -> (mtime_ns, size), to tell whether anything changed
    signature: dict[str, tuple[int, int]] = field(default_factory=dict)

    @classmethod
    def empty(cls) -> Snapshot:
        return cls({}, (), (), Ranker([]), {})


def scan(root: Path) -> list[tuple[str, int, int]]:
    """(path, mtime_ns, size) of every agent file below `root`, sorted by path."""
    found: list[tuple[str, int, int]] = []
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                for entry in it:
                    if entry.name.startswith("."):
                        continue
                    try:
                        if entry.is_dir():
                            stack.append(entry.path)
                        elif entry.name.endswith(".md") and entry.name.lower() != "readme.md" and entry.is_file():
                            st = entry.stat()
                            found.append((entry.path, st.st_mtime_ns, st.st_size))
                    except OSError:
                        continue
        except OSError:
            continue
    found.sort()
    return found


class Loader:
    """Builds snapshots; remembers parsed files so unchanged ones are not read again.
    Not thread-safe: the service runs one load at a time."""

    def __init__(self) -> None:
        #: path -> (mtime_ns, size, parsed agent or its error, the agent's terms per field)
        self._cache: dict[str, tuple[int, int, AgentDef | AgentFileError, Doc | None]] = {}

    @staticmethod
    def scan_all(sources: list[Source]) -> dict[Path, list[tuple[str, int, int]]]:
        return {source.root: scan(source.root) for source in sources}

    @staticmethod
    def signature(scans: dict[Path, list[tuple[str, int, int]]]) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for found in scans.values():
            for path, mtime, size in found:
                out.setdefault(path, (mtime, size))
        return out

    def load(self, sources: list[Source], scans: dict[Path, list[tuple[str, int, int]]] | None = None) -> Snapshot:
        """A snapshot of `sources`; `scans` (from `scan_all`, just made) saves walking them again."""
        problems: list[Problem] = []
        chosen: dict[str, Entry] = {}
        signature: dict[str, tuple[int, int]] = {}
        cache: dict[str, tuple[int, int, AgentDef | AgentFileError, Doc | None]] = {}
        tokens: dict[str, Doc | None] = {}  # name -> terms of the chosen agent
        for source in sources:
            if not source.root.is_dir():
                if source.label == "user":
                    problems.append(Problem(str(source.root), "the folder does not exist or is not a folder"))
                continue
            in_source: dict[str, str] = {}  # name -> path, within this source
            found = scans[source.root] if scans is not None and source.root in scans else scan(source.root)
            for path, mtime, size in found:
                if path in signature:  # the same folder listed twice
                    continue
                signature[path] = (mtime, size)
                cached = self._cache.get(path)
                if cached is not None and cached[0] == mtime and cached[1] == size:
                    result, terms = cached[2], cached[3]
                else:
                    try:
                        result = parse_file(Path(path), source.label)
                        terms = prepare(result)
                    except AgentFileError as exc:
                        result, terms = exc, None
                cache[path] = (mtime, size, result, terms)
                if isinstance(result, AgentFileError):
                    problems.append(Problem(path, result.reason, result.line))
                    continue
                agent = result if result.source == source.label else _relabel(result, source.label)
                first = in_source.get(agent.name)
                if first is not None:
                    problems.append(Problem(path, f"duplicate name {agent.name!r}: {first} already defines it"))
                    continue
                in_source[agent.name] = path
                held = chosen.get(agent.name)
                if held is None:
                    chosen[agent.name] = Entry(agent)
                    tokens[agent.name] = terms  # type: ignore[assignment]
                else:  # a lower-precedence source: shadowed
                    chosen[agent.name] = Entry(held.agent, (*held.shadows, path))
        self._cache = cache
        names = tuple(sorted(chosen))
        ranker = Ranker([chosen[name].agent for name in names], [tokens[name] for name in names])
        return Snapshot(chosen, names, tuple(problems), ranker, signature)


def _relabel(agent: AgentDef, label: str) -> AgentDef:
    from dataclasses import replace

    return replace(agent, source=label)
