"""Audio in: WAV of any common rate, width and channel count -> 16 kHz mono float32.

The standard library's `wave` reads PCM (8-bit unsigned, 16/24/32-bit signed); IEEE float
and WAVE_FORMAT_EXTENSIBLE files (which `wave` in 3.11 refuses) go through a small RIFF
chunk reader here. Resampling is polyphase with a Kaiser-windowed low-pass
(`scipy.signal.resample_poly`), so 44.1/48 kHz speech does not alias into the band whisper
listens to. numpy/scipy are imported on first use.

Every bad input is a `BadAudio` (answered as invalid params, `details.reason` one of
REASONS) or, for a missing file, `NotFound`; a file longer than the limit is
`ResourceExhausted` — decided from the header, before the samples are read.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import struct
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sidecar.errors import InvalidValue, NotFound, ResourceExhausted

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("sidecar.voice")

TARGET_RATE = 16_000
#: reasons a `BadAudio` carries in `details.reason`
REASONS = ("empty", "no_samples", "not_audio", "unsupported_format", "bad_base64")
_FORMAT_PCM, _FORMAT_FLOAT, _FORMAT_EXTENSIBLE = 1, 3, 0xFFFE


class BadAudio(InvalidValue):
    """Audio that cannot be used; `details.reason` says why."""

    def __init__(self, message: str, reason: str, path: str = "$.params.audio") -> None:
        super().__init__(message, path, reason=reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Audio:
    """Decoded audio, 16 kHz mono float32 in [-1, 1]."""

    samples: np.ndarray
    source_rate: int
    source_channels: int
    source_width: int  # bytes per sample
    #: the header announced more frames than the file holds (decoded what is there)
    truncated: bool = False

    @property
    def duration_s(self) -> float:
        return len(self.samples) / TARGET_RATE


def read_source(path: str | None = None, b64: str | None = None) -> bytes:
    """The bytes of `{path}` or `{base64}`; NotFound / BadAudio when they cannot be had."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise NotFound(f"no audio file at {path}", path=path)
        return p.read_bytes()
    if b64 is not None:
        try:
            return base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise BadAudio("audio.base64 is not valid base64", "bad_base64", "$.params.audio.base64") from None
    raise BadAudio("give audio as {path} or {base64}", "empty")


def decode_wav(data: bytes, *, max_seconds: float = 600.0) -> Audio:
    """WAV bytes -> 16 kHz mono float32."""
    import numpy as np

    if not data:
        raise BadAudio("the audio is empty (0 bytes)", "empty")
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RIFX") or data[8:12] != b"WAVE":
        raise BadAudio("the audio is not a WAV file (no RIFF/WAVE header)", "not_audio")
    fmt_tag, channels, rate, width, frames_declared, raw = _read_chunks(data, max_seconds)
    frame_bytes = channels * width
    frames = len(raw) // frame_bytes
    truncated = frames < frames_declared
    if truncated:
        log.info("WAV header announces %d frames, file holds %d: decoding those", frames_declared, frames)
    if frames == 0:
        raise BadAudio("the WAV file holds no samples", "no_samples")
    raw = raw[: frames * frame_bytes]
    x = _to_float(raw, fmt_tag, width)
    x = x.reshape(frames, channels).mean(axis=1) if channels > 1 else x
    if not np.all(np.isfinite(x)):
        x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
    x = resample(x.astype(np.float32), rate, TARGET_RATE)
    return Audio(np.clip(x, -1.0, 1.0).astype(np.float32), rate, channels, width, truncated)


def resample(x: np.ndarray, rate: int, target: int = TARGET_RATE) -> np.ndarray:
    if rate == target:
        return x
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(rate, target)  # 44100 -> 16000: up 160, down 441
    return resample_poly(x, target // g, rate // g).astype("float32")


def _check_header(channels: int, rate: int, width: int, declared: int, size: int, max_seconds: float) -> None:
    """Before reading samples: a usable format, and not longer than the limit (counting
    what the file can hold, so a header announcing 0xFFFFFFFF bytes is not "too long")."""
    if channels < 1 or channels > 64 or rate < 1000 or rate > 384_000 or width < 1:
        raise BadAudio(f"the WAV header is not usable ({channels} channels at {rate} Hz)", "unsupported_format")
    seconds = min(declared, size // (channels * width)) / rate
    if seconds > max_seconds:
        raise ResourceExhausted(
            f"the audio is {seconds:.0f} s long; the limit is {max_seconds:.0f} s (voice.maxAudioSeconds)",
            limit=max_seconds, seconds=round(seconds, 1))


def _read_chunks(data: bytes, max_seconds: float) -> tuple[int, int, int, int, int, bytes]:
    """(format tag, channels, rate, bytes per sample, frames the header declares, data bytes)."""
    if data[:4] == b"RIFX":
        raise BadAudio("big-endian (RIFX) WAV is not supported", "unsupported_format")
    try:
        with wave.open(io.BytesIO(data)) as w:
            channels, width, rate, nframes = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            _check_header(channels, rate, width, nframes, len(data), max_seconds)
            raw = w.readframes(nframes)
        return _FORMAT_PCM, channels, rate, width, nframes, raw
    except wave.Error as exc:
        if "unknown format" not in str(exc):
            raise BadAudio(f"the WAV file cannot be read: {exc}", "not_audio") from None
    except (EOFError, struct.error):
        raise BadAudio("the WAV file ends inside its header", "not_audio") from None
    tag, channels, rate, width, declared, raw = _riff_fallback(data)
    _check_header(channels, rate, width, declared, len(raw), max_seconds)
    return tag, channels, rate, width, declared, raw


def _riff_fallback(data: bytes) -> tuple[int, int, int, int, int, bytes]:
    """IEEE float and WAVE_FORMAT_EXTENSIBLE, which `wave` refuses."""
    pos, fmt, raw, declared = 12, None, None, 0
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = data[pos + 8: pos + 8 + size]
        if cid == b"fmt " and len(body) >= 16:
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", body)
            if tag == _FORMAT_EXTENSIBLE and len(body) >= 26:
                tag = struct.unpack_from("<H", body, 24)[0]  # first two bytes of the subformat GUID
            fmt = (tag, channels, rate, bits)
        elif cid == b"data":
            raw, declared = body, size
            break
        pos += 8 + size + (size & 1)
    if fmt is None or raw is None:
        raise BadAudio("the WAV file has no fmt or data chunk", "not_audio")
    tag, channels, rate, bits = fmt
    width = bits // 8
    if (tag, width) not in ((_FORMAT_PCM, 1), (_FORMAT_PCM, 2), (_FORMAT_PCM, 3), (_FORMAT_PCM, 4),
                            (_FORMAT_FLOAT, 4), (_FORMAT_FLOAT, 8)):
        raise BadAudio(f"WAV format {tag} with {bits}-bit samples is not supported", "unsupported_format")
    return tag, channels, rate, width, declared // max(1, channels * width), raw


def _to_float(raw: bytes, fmt_tag: int, width: int) -> np.ndarray:
    import numpy as np

    if fmt_tag == _FORMAT_FLOAT:
        return np.frombuffer(raw, dtype="<f4" if width == 4 else "<f8").astype(np.float32)
    if width == 1:  # 8-bit WAV is unsigned, centred on 128
        return (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    if width == 2:
        return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    if width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        return v.astype(np.float32) / float(1 << 23)
    if width == 4:
        return (np.frombuffer(raw, dtype="<i4").astype(np.float64) / 2147483648.0).astype(np.float32)
    raise BadAudio(f"{width * 8}-bit PCM is not supported", "unsupported_format")


def encode_wav(samples: Any, rate: int = TARGET_RATE) -> bytes:
    """float32 mono -> 16-bit PCM WAV bytes (tests, and the TTS output path)."""
    import numpy as np

    pcm = (np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0) * 32767.0).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return out.getvalue()


def rms(samples: np.ndarray) -> float:
    import numpy as np

    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if len(samples) else 0.0
