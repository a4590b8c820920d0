"""Intent matching: hassil templates per language (bundled + the user's), ranked candidates
with a confidence, an explicit `unknown` outcome, and slot values matched against live names.

Names (skills, recipes, features, modes) are hassil wildcards in the templates; `resolve`
then matches a captured value against the live names with rapidfuzz: `exact` (normalised
equal, or a score of 97+), `near` (a near miss, never executed without a yes), or `none`.

Confidence of a template match: 0.6 + 0.4 x (the share of the utterance's letters matched by
literal template text rather than a wildcard), times the slot's fuzzy score when a name slot
was resolved. hassil gives no score of its own; its ranking (fewer wildcards, more literal
text) orders the candidates, and this number makes them comparable to a threshold.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidecar.errors import InvalidValue

log = logging.getLogger("sidecar.voice")

SENTENCES_DIR = Path(__file__).parent / "sentences"
LANGUAGES = ("en", "ko")
#: intents whose named slot is matched against live names, and the kind of name
NAME_SLOTS = {"ExecuteSkill": ("skill", "skill"), "RunRecipe": ("recipe", "recipe"),
              "ScheduleRecipe": ("recipe", "recipe"), "OpenFeature": ("feature", "feature"),
              "SwitchMode": ("mode", "mode")}
EXACT_SCORE = 97.0
NEAR_SCORE = 72.0

#: what each intent looks like, for the `unknown` reply's "did you mean" (and the docs)
EXAMPLES: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        "ExecuteSkill": ("execute data processing skill", "run the code reviewer agent", "use the wordcount tool"),
        "RunRecipe": ("run daily backup recipe", "start the release workflow"),
        "ScheduleRecipe": ("run the daily backup every day at 9", "schedule the report workflow every hour"),
        "SendMessage": ("send hello world message", "send a message saying good morning"),
        "OpenFeature": ("open the projects page", "show me the plugins"),
        "OpenSettings": ("open settings", "show preferences"),
        "SwitchMode": ("switch to dark mode", "change mode to focus"),
        "Search": ("search for weather", "find the release notes"),
        "Ask": ("what is the weather in Seoul", "tell me about workflows"),
        "Stop": ("stop", "cancel that"),
        "Confirm": ("yes", "go ahead"),
        "Deny": ("no", "not that"),
    },
    "ko": {
        "ExecuteSkill": ("데이터 분석 스킬 실행", "데이터 분석 스킬을 실행해 주세요"),
        "RunRecipe": ("백업 레시피 실행", "백업 레시피를 실행해 줘"),
        "ScheduleRecipe": ("매일 9시에 백업 레시피 실행해 줘",),
        "SendMessage": ("안녕 메시지 보내", "안녕이라고 보내 줘"),
        "OpenFeature": ("프로젝트 화면 열어 줘",),
        "OpenSettings": ("설정 열기", "설정 좀 열어 주세요"),
        "SwitchMode": ("다크 모드로 바꿔 줘",),
        "Search": ("날씨 검색해 줘",),
        "Ask": ("날씨 어때",),
        "Stop": ("멈춰", "취소해 주세요"),
        "Confirm": ("네", "그래"),
        "Deny": ("아니요",),
    },
}

#: features the shell can open (`voice/open`), with spoken aliases
FEATURES: dict[str, tuple[str, ...]] = {
    "settings": ("settings", "preferences", "설정", "환경 설정"),
    "projects": ("projects", "project", "프로젝트"),
    "agents": ("agents", "agent list", "에이전트"),
    "plugins": ("plugins", "extensions", "플러그인"),
    "workflows": ("workflows", "recipes", "워크플로", "레시피"),
    "scheduler": ("scheduler", "schedule", "jobs", "스케줄러", "일정"),
    "chat": ("chat", "conversations", "messages", "채팅", "대화"),
    "voice": ("voice", "microphone", "음성"),
    "history": ("history", "runs", "기록"),
    "templates": ("templates", "템플릿"),
    "usage": ("usage", "costs", "사용량"),
}
MODES: dict[str, tuple[str, ...]] = {
    "dark": ("dark", "night", "다크", "어두운"),
    "light": ("light", "day", "라이트", "밝은"),
    "voice": ("voice", "hands free", "음성"),
    "chat": ("chat", "text", "채팅"),
    "focus": ("focus", "quiet", "집중"),
    "code": ("code", "coding", "developer", "코드", "코딩"),
}


@dataclass(frozen=True, slots=True)
class Candidate:
    intent: str
    slots: dict[str, Any]
    confidence: float
    #: which template text matched (None for custom patterns' own text)
    sentence: str | None = None
    custom: bool = False


@dataclass(frozen=True, slots=True)
class Understanding:
    text: str
    language: str
    #: best first; empty: unknown
    candidates: tuple[Candidate, ...]
    #: for an unknown utterance: the closest intents by example phrasing, best first
    closest: tuple[tuple[str, float], ...] = ()

    @property
    def best(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None


@dataclass(frozen=True, slots=True)
class NameMatch:
    kind: str
    said: str
    outcome: str  # exact | near | none
    name: str | None
    score: float
    alternatives: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class CustomPattern:
    id: str
    intent: str
    language: str
    template: str
    slots: dict[str, Any] = field(default_factory=dict)


def normalise(text: str) -> str:
    """NFKC, lower case, punctuation to spaces (keeps ':' between digits and apostrophes)."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"(?<!\d):|:(?!\d)", " ", text)
    text = re.sub(r"[^\w\s':가-힣]", " ", text)
    return " ".join(text.split())


def detect_language(text: str, stt_language: str | None = None) -> str:
    """Hangul in the text means Korean; otherwise the STT's language if we have templates for
    it; otherwise English."""
    hangul = sum(1 for ch in text if "\uac00" <= ch <= "\ud7a3" or "\u3131" <= ch <= "\u318e")
    latin = sum(1 for ch in text if ch.isascii() and ch.isalpha())
    if hangul and hangul >= latin / 3:
        return "ko"
    if stt_language in LANGUAGES and not (stt_language == "ko" and latin and not hangul):
        return stt_language
    return "en"


def check_template(template: str, path: str = "$.params.template") -> None:
    """Parse with hassil; InvalidValue naming the position when the template is bad."""
    from hassil import parse_sentence

    if not template.strip():
        raise InvalidValue("the template is empty", path)
    depth = {"(": 0, "[": 0, "{": 0, "<": 0}
    pairs = {")": "(", "]": "[", "}": "{", ">": "<"}
    stack: list[tuple[str, int]] = []
    for i, ch in enumerate(template):
        if ch in depth:
            stack.append((ch, i))
        elif ch in pairs:
            if not stack or stack[-1][0] != pairs[ch]:
                raise InvalidValue(f"the template has an unmatched {ch!r} at position {i + 1}", path, position=i + 1)
            stack.pop()
    if stack:
        ch, i = stack[-1]
        raise InvalidValue(f"the template has an unclosed {ch!r} opened at position {i + 1}", path, position=i + 1)
    try:
        parse_sentence(template, keep_text=True)
    except Exception as exc:  # hassil's ParseExpressionError names the chunk
        chunk = getattr(exc, "chunk", None)
        pos = getattr(chunk, "start_index", None)
        where = f" at position {pos + 1}" if isinstance(pos, int) else ""
        raise InvalidValue(f"the template cannot be parsed{where}: {type(exc).__name__}", path,
                           position=(pos + 1) if isinstance(pos, int) else None) from None


def references(template: str) -> tuple[set[str], set[str]]:
    """The {list} and <rule> names a (parsed) template refers to."""
    from hassil import parse_sentence
    from hassil.expression import Group, ListReference, RuleReference

    lists: set[str] = set()
    rules: set[str] = set()

    def walk(e: Any) -> None:
        if isinstance(e, ListReference):
            lists.add(e.list_name)
        elif isinstance(e, RuleReference):
            rules.add(e.rule_name)
        elif isinstance(e, Group):
            for item in e.items:
                walk(item)

    walk(parse_sentence(template, keep_text=True).expression)
    return lists, rules


class Matcher:
    """The compiled templates per language; custom patterns are merged in by `set_custom`."""

    def __init__(self, sentences_dir: Path = SENTENCES_DIR) -> None:
        self._dir = sentences_dir
        self._lock = threading.Lock()
        self._bundled: dict[str, dict[str, Any]] = {}
        self._compiled: dict[str, Any] = {}
        self._custom: list[CustomPattern] = []

    def _load_bundled(self, language: str) -> dict[str, Any]:
        if language not in self._bundled:
            import yaml

            merged: dict[str, Any] = {}
            for f in sorted((self._dir / language).glob("*.yaml")):
                data = yaml.safe_load(f.read_text("utf-8")) or {}
                for key, value in data.items():
                    if isinstance(value, dict):
                        merged.setdefault(key, {}).update(value)
                    elif isinstance(value, list):
                        merged.setdefault(key, []).extend(value)
                    else:
                        merged[key] = value
            self._bundled[language] = merged
        return self._bundled[language]

    def set_custom(self, patterns: Iterable[CustomPattern]) -> None:
        with self._lock:
            self._custom = list(patterns)
            self._compiled.clear()

    def intents_for(self, language: str) -> Any:
        with self._lock:
            if language not in self._compiled:
                from hassil import Intents

                base = self._load_bundled(language)
                data = {**base, "intents": {k: {"data": list(v["data"])} for k, v in base["intents"].items()}}
                for c in self._custom:
                    if c.language != language:
                        continue
                    data["intents"].setdefault(c.intent, {"data": []})["data"].append(
                        {"sentences": [c.template], "slots": dict(c.slots), "metadata": {"custom": c.id}})
                self._compiled[language] = Intents.from_dict(data)
            return self._compiled[language]

    def names_in(self, language: str) -> tuple[set[str], set[str]]:
        """The list names and expansion-rule names a template of this language may use."""
        base = self._load_bundled(language)
        return set(base.get("lists", {})), set(base.get("expansion_rules", {}))

    def known_intents(self, language: str = "en") -> list[str]:
        return sorted(self._load_bundled(language)["intents"])

    def understand(self, text: str, language: str) -> Understanding:
        from hassil import recognize_ranked

        clean = normalise(text)
        intents = self.intents_for(language)
        results = recognize_ranked(clean, intents, language=language) if clean else []
        letters = max(1, sum(1 for ch in clean if ch.isalnum()))
        seen: dict[str, Candidate] = {}
        for r in results:
            slots: dict[str, Any] = {}
            wild = 0
            for name, ent in r.entities.items():
                value = ent.value
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                if isinstance(value, str):
                    value = value.strip()
                slots[name] = value
                if ent.is_wildcard:
                    wild += sum(1 for ch in str(ent.text or value) if ch.isalnum())
            literal = max(0.0, min(1.0, (letters - wild) / letters))
            meta = r.intent_metadata or {}
            custom = bool(meta.get("custom"))
            conf = round(0.6 + 0.4 * literal, 3)
            if custom:
                conf = min(1.0, conf + 0.05)  # the user's own phrasing wins ties
            if r.intent.name == "Ask":
                slots["query"] = clean  # the whole question, not the part after "what"
            cand = Candidate(r.intent.name, slots, conf, r.intent_sentence.text if r.intent_sentence else None, custom)
            prev = seen.get(r.intent.name)
            if prev is None or cand.confidence > prev.confidence:
                seen[r.intent.name] = cand
        ranked = tuple(sorted(seen.values(), key=lambda c: -c.confidence))
        closest: tuple[tuple[str, float], ...] = ()
        if not ranked:
            closest = self.closest(clean, language)
        return Understanding(text, language, ranked, closest)

    def closest(self, clean: str, language: str, limit: int = 3) -> tuple[tuple[str, float], ...]:
        from rapidfuzz import fuzz

        scores: list[tuple[str, float]] = []
        for intent, examples in EXAMPLES.get(language, EXAMPLES["en"]).items():
            best = max((fuzz.token_set_ratio(clean, e) for e in examples), default=0.0)
            scores.append((intent, round(best / 100.0, 3)))
        scores.sort(key=lambda x: -x[1])
        return tuple(scores[:limit])


def resolve(kind: str, said: str, names: Sequence[str], aliases: dict[str, Sequence[str]] | None = None) -> NameMatch:
    """Match a spoken name against live names (and aliases: name -> spoken forms)."""
    from rapidfuzz import fuzz, process

    forms: dict[str, str] = {}
    for n in names:
        forms[_spoken(n)] = n
    for n, spoken in (aliases or {}).items():
        for s in spoken:
            forms.setdefault(_spoken(s), n)
    target = _spoken(said)
    for suffix in (" skill", " agent", " tool", " recipe", " workflow", " plugin", " mode"):
        if target.endswith(suffix) and target[: -len(suffix)].strip():
            target = target[: -len(suffix)].strip()
    if target.startswith("the "):
        target = target[4:]
    if not forms or not target:
        return NameMatch(kind, said, "none", None, 0.0)
    if target in forms:
        return NameMatch(kind, said, "exact", forms[target], 100.0)
    hits = process.extract(target, list(forms), scorer=fuzz.WRatio, limit=5)
    best_by_name: dict[str, float] = {}
    for form, score, _ in hits:
        n = forms[form]
        best_by_name[n] = max(best_by_name.get(n, 0.0), float(score))
    ranked = sorted(best_by_name.items(), key=lambda x: -x[1])
    name, score = ranked[0]
    # WRatio scores a short form inside a long utterance high; a plain ratio keeps it honest
    plain = max(fuzz.ratio(target, f) for f, n in forms.items() if n == name)
    score = round(min(score, max(plain, score - 10)), 1)
    alts = tuple((n, round(s, 1)) for n, s in ranked[1:4])
    if score >= EXACT_SCORE:
        return NameMatch(kind, said, "exact", name, score, alts)
    if score >= NEAR_SCORE:
        return NameMatch(kind, said, "near", name, score, alts)
    return NameMatch(kind, said, "none", None, score, ((name, score), *alts))


def _spoken(name: str) -> str:
    """How a name sounds: `plugin__word_count` -> `word count`, `code-reviewer` -> `code reviewer`."""
    name = name.split("__", 1)[-1]
    name = re.sub(r"([a-z])([A-Z])", r"\1 \2", name)
    return normalise(re.sub(r"[-_./]+", " ", name))
