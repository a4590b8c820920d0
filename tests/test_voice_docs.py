"""docs/voice.md stays honest: every voice/* method and notification in the protocol catalog,
every `voice/event` stage name, every voice setting key the capability registers and every
speech-to-text engine name appears in it, and the README points to it. A name is found only
as a whole token (so `voice/stream/start|chunk|end` shorthand does not count for
`voice/stream/chunk`, and `voice.rate` is not found inside `voice.rateLimit`)."""

from __future__ import annotations

import re
import typing
from collections.abc import Iterable
from pathlib import Path

from protocol import catalog
from protocol import voice as v
from sidecar.voice.capability import VoiceCapability
from sidecar.voice.service import ENGINES

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "voice.md"


def missing(names: Iterable[str], text: str) -> list[str]:
    """The names that do not occur in `text` as whole tokens (not part of a longer name)."""
    return [n for n in names if re.search(rf"(?<![\w/.-]){re.escape(n)}(?![\w/-]|\.\w)", text) is None]


def _doc() -> str:
    return DOC.read_text("utf-8")


def voice_methods() -> list[str]:
    return [m.name for m in catalog.METHODS if m.name.startswith("voice/")]


def voice_notifications() -> list[str]:
    return [n.name for n in catalog.NOTIFICATIONS if n.name.startswith("voice/")]


def test_the_catalog_has_voice_methods() -> None:
    # guards the tests below against passing on an empty list
    assert len(voice_methods()) >= 18 and "voice/process" in voice_methods()
    assert "voice/event" in voice_notifications()


def test_every_voice_method_is_documented() -> None:
    assert missing(voice_methods(), _doc()) == []


def test_every_voice_notification_is_documented() -> None:
    assert missing(voice_notifications(), _doc()) == []


def test_every_event_stage_is_documented() -> None:
    stages = typing.get_args(typing.get_type_hints(v.VoiceEvent)["type"])
    assert "stt-end" in stages
    assert missing(stages, _doc()) == []


def test_every_voice_setting_is_documented() -> None:
    keys = [s.key for s in VoiceCapability.settings]
    assert "voice.modelPath" in keys
    assert missing(keys, _doc()) == []


def test_every_engine_is_documented() -> None:
    assert missing(ENGINES, _doc()) == []


def test_the_readme_points_to_the_page() -> None:
    readme = (ROOT / "README.md").read_text("utf-8")
    section = readme.split("\n## Voice\n", 1)
    assert len(section) == 2, "README.md has no '## Voice' section"
    assert "docs/voice.md" in section[1].split("\n## ", 1)[0]


def test_an_undocumented_name_is_caught() -> None:
    # what the tests above rely on: a new method, a shorthand or a longer name is not "documented"
    text = "`voice/process`, `voice/stream/start|chunk|end`, `voice.rateLimit`, voice/processAll"
    assert missing(["voice/process"], text) == []
    assert missing(["voice/stream/chunk", "voice/stream/end"], text) == ["voice/stream/chunk", "voice/stream/end"]
    assert missing(["voice.rate"], text) == ["voice.rate"]
    assert missing(["voice/processAll", "voice/models/list"], text) == ["voice/models/list"]
    assert missing(["voice/models/download"], "`voice/models/download`.") == []
