"""The one interface every speech-to-text engine implements, and what it returns.

An engine is built cheap (no model loaded) and loads its model on first `load()`, which the
service calls once, in a worker thread. `transcribe` runs in a worker thread too and must
return promptly once `cancelled()` turns true (between segments, or from the engine's abort
callback when it has one), raising `Cancelled`.

Streamed input (`voice/stream/start|chunk|end`, sidecar/voice/streaming.py) feeds 16 kHz mono
chunks to an energy voice-activity detector; when the utterance is over, the collected samples
go through this same `transcribe` (via VoiceService.process). Engines that can decode
incrementally may override `stream()` to return a `StreamSession`; the default buffers and
transcribes at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    import numpy as np


class Cancelled(Exception):
    """`cancelled()` turned true: the transcription stopped early."""


@dataclass(frozen=True, slots=True)
class Segment:
    start_s: float
    end_s: float
    text: str


@dataclass(frozen=True, slots=True)
class Transcript:
    text: str
    #: the engine's language code ("en"); an English-only model always says "en"
    language: str
    segments: tuple[Segment, ...] = ()
    #: the engine's estimate that the audio held no speech, when it gives one (0..1)
    no_speech_prob: float | None = None
    language_probability: float | None = None


@dataclass(slots=True)
class StreamSession:
    """Collects chunks; `finish()` transcribes what was collected."""

    engine: SttEngine
    language: str | None
    prompt: str
    chunks: list[np.ndarray] = field(default_factory=list)

    def feed(self, samples: np.ndarray) -> None:
        self.chunks.append(samples)

    def finish(self, cancelled: Callable[[], bool] = lambda: False) -> Transcript:
        import numpy as np

        audio = np.concatenate(self.chunks) if self.chunks else np.zeros(0, dtype=np.float32)
        return self.engine.transcribe(audio, language=self.language, prompt=self.prompt, cancelled=cancelled)


class SttEngine:
    """Subclass: set `name`, implement `_load` and `transcribe`."""

    name: ClassVar[str]
    #: the pip extra / package that provides it, named in "not installed" errors
    package: ClassVar[str]

    def __init__(self, model_path: str, *, threads: int = 2) -> None:
        self.model_path = model_path
        self.threads = threads
        self.loaded = False

    @classmethod
    def available(cls) -> bool:
        """Whether the engine's library is importable (without importing it)."""
        import importlib.util

        return importlib.util.find_spec(cls.module()) is not None

    @classmethod
    def module(cls) -> str:
        raise NotImplementedError

    def load(self) -> None:
        if not self.loaded:
            self._load()
            self.loaded = True

    def _load(self) -> None:
        raise NotImplementedError

    def transcribe(self, samples: np.ndarray, *, language: str | None = None, prompt: str = "",
                   cancelled: Callable[[], bool] = lambda: False) -> Transcript:
        raise NotImplementedError

    def stream(self, *, language: str | None = None, prompt: str = "") -> StreamSession:
        return StreamSession(self, language, prompt)

    def close(self) -> None:
        """Free the model."""


def decoding_language(requested: str | None, multilingual: bool) -> str:
    """The language to decode in: an English-only model always decodes English (asked for
    another language it only makes up text); a multilingual one decodes the requested language,
    or detects it ("auto") when none is given."""
    if not multilingual:
        return "en"
    return requested or "auto"


def windows(samples: np.ndarray, seconds: float = 30.0, rate: int = 16_000) -> list[np.ndarray]:
    """Split into whisper-sized windows (so engines without a segment hook can still stop
    between windows)."""
    step = int(seconds * rate)
    return [samples[i:i + step] for i in range(0, max(len(samples), 1), step)]
