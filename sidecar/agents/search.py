"""Ranking agents for a query: BM25 per field, fields weighted, plus typo-tolerant names.

How a score comes about (so `select` can explain itself):
- Text is split into words (letters and digits, any script), lower-cased, English stop words
  dropped, and Latin words reduced by a light suffix stemmer (`reviewer`, `reviews` ->
  `review`; `translator`, `translation` -> `translat`).
- BM25F: for a query term t and an agent, the pseudo term frequency is
  `tf~ = sum over fields f of w_f * tf_f / (1 - b + b * len_f / avglen_f)`, saturated once:
  `idf * tf~ * (k1 + 1) / (k1 + tf~)`, with `idf = ln(1 + (N - df + 0.5) / (df + 0.5))`
  (df: agents holding t in any field); summed over the query's terms. Field weights (FIELDS):
  name 3, capabilities 2, tags 2, summary (the description's first sentence) 1.5, the rest
  of the description 1, category 0.5. A term that is the agent's role (the name's last word,
  `reviewer` in code-reviewer) adds `ROLE_WEIGHT * idf` on top.
- A query word with no exact match in names is compared with name words by Damerau-
  Levenshtein distance 1 (found through a deletion index, so no scan): a hit counts as that
  name word at 0.6 of its weight (`matched` shows `name:reveiw~review`).
- A non-Latin query word with no exact match is cut back to its longest prefix that is a
  known word (Korean particles and endings: `번역해줘` -> `번역`), at 0.8.
- A query word of 3+ letters with no exact match anywhere also matches words that start
  with it (search-as-you-type), at 0.5.
Everything is precomputed per term at build time, so a query is a few dictionary lookups.
"""

from __future__ import annotations

import functools
import math
import re
from collections import defaultdict
from collections.abc import Sequence
from bisect import bisect_left
from dataclasses import dataclass

from sidecar.agents.parser import AgentDef

#: (field, weight in BM25F); "summary" is the description's first sentence (what the agent does),
#: "description" the rest of it (when to use it). "role", the name's last word (code-*reviewer*,
#: sql-*tuner*: what the agent is), is scored apart: ROLE_WEIGHT * idf, added to the BM25F sum,
#: so a query's verb that names an agent's role counts even when other words saturate
ROLE = 1
FIELDS: tuple[tuple[str, float], ...] = (
    ("name", 3.0), ("role", 0.0), ("capabilities", 2.0), ("tags", 2.0), ("summary", 1.5), ("description", 1.0),
    ("category", 0.5),
)
K1 = 1.2
B = 0.75
TYPO_FACTOR = 0.6
PREFIX_FACTOR = 0.5
ROLE_WEIGHT = 1.0
STEM_FACTOR = 0.8
PREFIX_MAX_TERMS = 20

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
STOP_WORDS = frozenset("""
a an and are as at be been but by can could do does for from had has have he her his how i if in into
is it its let me my of on or our please she should so some than that the their them then there these
they this to up us use used using was we were what when where which while who why will with would you
your yours can't don't just also about any want need help make get
""".split())
_SUFFIXES = ("ions", "ion", "ors", "or", "ings", "ing", "ers", "er", "ies", "ied", "es", "ed", "ly", "s")
_KEEP_DOUBLE = frozenset("lsz")


@functools.lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """A light, explainable English suffix stripper for Latin-script words; others unchanged."""
    if not word.isascii() or not word.isalpha() or len(word) <= 4:
        return word
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            base = word[: -len(suffix)]
            if suffix in ("ies", "ied"):
                base += "y"
            elif suffix == "s" and base.endswith(("s", "u", "i")):  # class, status, analysis
                return word
            if len(base) >= 4 and base[-1] == base[-2] and base[-1] not in _KEEP_DOUBLE and base[-1] not in "aeiou":
                base = base[:-1]  # debugg(ing) -> debug
            word = base
            break
    if len(word) > 4 and word.endswith("e"):
        word = word[:-1]  # translate -> translat, like translator
    return word


def words(text: str) -> list[str]:
    """Lower-cased words of `text`, stop words dropped (not stemmed)."""
    return [w for w in _WORD.findall(text.lower()) if w not in STOP_WORDS]


def terms(text: str) -> list[str]:
    return [stem(w) for w in words(text)]


def _deletions(word: str) -> set[str]:
    return {word[:i] + word[i + 1:] for i in range(len(word))}


def damerau1(a: str, b: str) -> bool:
    """Whether a and b are at most one edit apart (insert, delete, substitute, transpose)."""
    if a == b:
        return True
    la, lb = len(a), len(b)
    if abs(la - lb) > 1:
        return False
    if la == lb:
        diff = [i for i in range(la) if a[i] != b[i]]
        if len(diff) == 1:
            return True
        return len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]
    if la > lb:
        a, b = b, a
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    return a[i:] == b[i + 1:]


@dataclass(frozen=True, slots=True)
class Match:
    index: int  # the agent's position in the ranker's list
    score: float
    matched: tuple[str, ...]  # "field:term"


@dataclass(frozen=True, slots=True)
class Doc:
    """One agent's terms, prepared once per file (the loader keeps it): field lengths, and per
    term the (field index, count) pairs, the field names to report, and whether it is the role."""

    lengths: tuple[int, ...]
    terms: dict[str, tuple[tuple[tuple[int, int], ...], tuple[str, ...], bool]]
    name_words: tuple[str, ...]


def prepare(agent: AgentDef) -> Doc:
    texts = field_texts(agent)
    per_field = [terms(text) for text in texts]
    counts: dict[str, dict[int, int]] = {}
    for f, ts in enumerate(per_field):
        if f == ROLE:
            continue
        for t in ts:
            by_field = counts.setdefault(t, {})
            by_field[f] = by_field.get(f, 0) + 1
    role = set(per_field[ROLE])
    out = {}
    for t, by_field in counts.items():
        names = [FIELDS[f][0] for f in by_field]
        if t in role:
            names.insert(1, "role")
        out[t] = (tuple(by_field.items()), tuple(names), t in role)
    name_words = set()
    for w in words(texts[0]):
        name_words.update((w, stem(w)))
    return Doc(tuple(len(ts) for ts in per_field), out, tuple(sorted(name_words)))


class Ranker:
    """An immutable index over a list of agents; build once per registry snapshot."""

    def __init__(self, agents: Sequence[AgentDef], docs: Sequence[Doc] | None = None) -> None:
        """`docs[i]`, when given, is `prepare(agents[i])` (the loader keeps one per file)."""
        self.agents = list(agents)
        n = len(self.agents)
        prepared = list(docs) if docs is not None else [prepare(a) for a in self.agents]
        avg = [sum(d.lengths[f] for d in prepared) / n if n else 1.0 for f in range(len(FIELDS))]
        # BM25F: per (term, agent), the weighted, length-normalised term frequency summed over
        # the fields (tf~); saturated once at query time, with the idf of the day
        postings: dict[str, dict[int, tuple[float, tuple[str, ...], bool]]] = defaultdict(dict)
        for i, doc in enumerate(prepared):
            scale = [w / (1 - B + B * doc.lengths[f] / (avg[f] or 1.0)) for f, (_, w) in enumerate(FIELDS)]
            for t, (pairs, names, is_role) in doc.terms.items():
                postings[t][i] = (sum(scale[f] * tf for f, tf in pairs), names, is_role)
        self._postings = dict(postings)
        self._idf = {t: math.log(1 + (n - len(docs_) + 0.5) / (len(docs_) + 0.5)) for t, docs_ in postings.items()}
        self._vocabulary = sorted(self._postings)
        # typo tolerance over name words (and their stems): deletion -> name words
        self._name_words: set[str] = set()
        for doc in prepared:
            self._name_words.update(doc.name_words)
        self._deletes: dict[str, set[str]] = defaultdict(set)
        for w in self._name_words:
            if len(w) >= 4:
                for d in _deletions(w):
                    self._deletes[d].add(w)

    def _scored(self, term: str) -> list[tuple[int, float, tuple[str, ...]]]:
        """(agent, score, fields) for every agent holding `term`."""
        docs = self._postings.get(term)
        if not docs:
            return []
        idf = self._idf[term]
        return [(i, idf * tf * (K1 + 1) / (K1 + tf) + (ROLE_WEIGHT * idf if is_role else 0.0), names)
                for i, (tf, names, is_role) in docs.items()]

    def _typo_candidates(self, word: str) -> list[str]:
        if len(word) < 4 or not word.isalpha():
            return []
        found: set[str] = set()
        for key in (word, *_deletions(word)):
            for candidate in self._deletes.get(key, ()):
                if candidate != word and damerau1(word, candidate):
                    found.add(candidate)
        if word in self._name_words:
            found.add(word)  # a word equal to a name word after deletion lookups
        return sorted(found)

    def _prefix_terms(self, term: str) -> list[str]:
        start = bisect_left(self._vocabulary, term)
        out = []
        for t in self._vocabulary[start:start + PREFIX_MAX_TERMS + 1]:
            if not t.startswith(term):
                break
            if t != term:
                out.append(t)
        return out[:PREFIX_MAX_TERMS]

    def search(self, query: str, limit: int = 10) -> list[Match]:
        scores: dict[int, float] = {}
        matched: dict[int, list[str]] = defaultdict(list)
        seen: set[str] = set()

        def add(hits: list[tuple[int, float, tuple[str, ...]]], factor: float, shown: str) -> None:
            for i, score, fields in hits:
                scores[i] = scores.get(i, 0.0) + score * factor
                matched[i].extend(f"{f}:{shown}" for f in fields)

        for word in words(query):
            term = stem(word)
            if term in seen:
                continue
            seen.add(term)
            hits = self._scored(term)
            add(hits, 1.0, word)
            if not any("name" in fields for _, _, fields in hits):
                for candidate in self._typo_candidates(word):
                    typo = [(i, s, ("name",)) for i, s, fields in self._scored(stem(candidate)) if "name" in fields]
                    add(typo, TYPO_FACTOR, f"{word}~{candidate}")
            if not hits and not word.isascii():
                # Korean and other agglutinating scripts: 번역해줘 -> 번역 (the longest known prefix)
                for k in range(len(word) - 1, 1, -1):
                    hits = self._scored(word[:k])
                    if hits:
                        add(hits, STEM_FACTOR, word[:k])
                        break
            if not hits and len(term) >= 3:
                for t in self._prefix_terms(term):
                    add(self._scored(t), PREFIX_FACTOR, f"{word}*")
        ranked = sorted(scores.items(), key=lambda item: (-item[1], self.agents[item[0]].name))
        return [Match(i, round(s, 4), tuple(dict.fromkeys(matched[i]))) for i, s in ranked[:limit]]


def field_texts(agent: AgentDef) -> tuple[str, ...]:
    """The agent's text per field, in the order of FIELDS."""
    summary, _, rest = agent.description.partition(". ")
    name = agent.name.replace("-", " ").replace("_", " ")
    return (name, name.rsplit(" ", 1)[-1], " ".join(agent.capabilities), " ".join(agent.tags), summary, rest,
            agent.category)
