"""Audio in: WAV of any common rate/width/channels to 16 kHz mono, and every bad input typed."""

from __future__ import annotations

import base64
import io
import struct
import wave
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")
pytest.importorskip("scipy")

from sidecar.errors import NotFound, ResourceExhausted  # noqa: E402
from sidecar.voice.audio import TARGET_RATE, BadAudio, decode_wav, read_source  # noqa: E402


def tone(rate: int, seconds: float = 0.5, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return 0.5 * np.sin(2 * np.pi * freq * t)


def wav_bytes(samples: np.ndarray, rate: int, width: int = 2, channels: int = 1) -> bytes:
    x = np.repeat(samples[:, None], channels, axis=1).reshape(-1)
    if width == 1:
        raw = np.clip(np.round(x * 127 + 128), 0, 255).astype(np.uint8).tobytes()
    elif width == 2:
        raw = np.round(x * 32767).astype("<i2").tobytes()
    elif width == 3:
        v = np.round(x * (2**23 - 1)).astype("<i4")
        raw = b"".join(int(s).to_bytes(3, "little", signed=True) for s in v)
    else:
        raw = np.round(x * (2**31 - 1)).astype("<i4").tobytes()
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(raw)
    return out.getvalue()


def float_wav(samples: np.ndarray, rate: int) -> bytes:
    data = samples.astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def dominant_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x))
    return float(np.argmax(spectrum) * TARGET_RATE / len(x))


@pytest.mark.parametrize("rate, width, channels", [
    (16000, 2, 1), (8000, 2, 1), (22050, 2, 1), (44100, 2, 2), (48000, 2, 2), (48000, 3, 1), (32000, 4, 1),
    (11025, 1, 1),  # 8-bit unsigned
])
def test_common_formats_become_16k_mono_with_the_tone_kept(rate: int, width: int, channels: int) -> None:
    a = decode_wav(wav_bytes(tone(rate), rate, width, channels))
    assert (a.source_rate, a.source_width, a.source_channels) == (rate, width, channels)
    assert a.samples.dtype == np.float32 and a.samples.ndim == 1
    assert abs(len(a.samples) - TARGET_RATE * 0.5) <= 2
    assert abs(dominant_hz(a.samples) - 440.0) < 5
    assert 0.3 < float(np.max(np.abs(a.samples[1000:-1000]))) < 0.6  # amplitude kept (8-bit: coarse)


def test_resampling_filters_what_16k_cannot_hold() -> None:
    """A 12 kHz tone at 48 kHz is above 16 kHz's Nyquist: it must vanish, not alias to 4 kHz."""
    a = decode_wav(wav_bytes(tone(48000, freq=12000.0), 48000))
    assert float(np.sqrt(np.mean(a.samples[500:-500] ** 2))) < 0.01


def test_ieee_float_wav_which_the_wave_module_refuses() -> None:
    a = decode_wav(float_wav(tone(16000), 16000))
    assert abs(dominant_hz(a.samples) - 440.0) < 5


def test_empty_file() -> None:
    with pytest.raises(BadAudio) as e:
        decode_wav(b"")
    assert e.value.reason == "empty" and e.value.kind == "invalid_params"


def test_zero_samples() -> None:
    with pytest.raises(BadAudio) as e:
        decode_wav(wav_bytes(np.zeros(0), 16000))
    assert e.value.reason == "no_samples"


@pytest.mark.parametrize("data", [b"hello, this is not a wav file at all" * 10, b"\x89PNG\r\n\x1a\n" + bytes(100),
                                  b"RIFF\x10\x00\x00\x00WAVEjunk"])
def test_not_audio(data: bytes) -> None:
    with pytest.raises(BadAudio) as e:
        decode_wav(data)
    assert e.value.reason == "not_audio"


def test_header_that_lies_about_its_length_decodes_what_is_there() -> None:
    good = wav_bytes(tone(16000, 1.0), 16000)
    lying = good[:40] + struct.pack("<I", 10 * len(good)) + good[44:]  # data size: 10x the truth
    a = decode_wav(lying)
    assert a.truncated and abs(len(a.samples) - 16000) <= 1
    cut = decode_wav(good[: 44 + 8000])  # a file cut short: the header is right, the data is not
    assert cut.truncated and len(cut.samples) == 4000


def test_noise_decodes_fine() -> None:
    noise = np.random.default_rng(1).uniform(-0.5, 0.5, 16000)
    a = decode_wav(wav_bytes(noise, 16000))
    assert len(a.samples) == 16000


def test_one_hour_file_is_refused_from_its_header_before_reading(tmp_path: Path) -> None:
    header = wav_bytes(np.zeros(0), 16000)
    hour = 16000 * 2 * 3600
    data = header[:4] + struct.pack("<I", 36 + hour) + header[8:40] + struct.pack("<I", hour) + bytes(hour)
    with pytest.raises(ResourceExhausted) as e:
        decode_wav(data, max_seconds=600)
    assert "3600 s" in e.value.message


def test_streaming_header_with_unknown_length_is_not_too_long() -> None:
    good = wav_bytes(tone(16000, 0.5), 16000)
    streamed = good[:40] + b"\xff\xff\xff\xff" + good[44:]
    a = decode_wav(streamed, max_seconds=10)
    assert len(a.samples) == 8000


def test_missing_path_and_bad_base64(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        read_source(str(tmp_path / "nope.wav"))
    with pytest.raises(BadAudio) as e:
        read_source(None, "!!!not base64!!!")
    assert e.value.reason == "bad_base64"
    ok = wav_bytes(tone(16000), 16000)
    assert read_source(None, base64.b64encode(ok).decode()) == ok
