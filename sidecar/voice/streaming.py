"""Streamed audio input: an energy-based voice-activity detector and the open streams.

The detector works on 20-ms frames of 16 kHz mono. A frame is voiced when its RMS is above
both an absolute floor (-50 dBFS: below that nothing is speech) and the noise floor plus
12 dB. The noise floor is the quietest frame of the last 3 s ("minimum statistics": speech
has pauses and quiet sounds within any 3 s, a fan's hum does not), seeded with -55 dBFS so
that speech from the very first frame counts and steady noise up to about -43 dBFS never
does (louder noise is taken for speech until the seed has aged out, then the utterance ends
as if the speaker stopped). Speech starts after `START_FRAMES` voiced frames in a row
(60 ms: a click is not speech); after speech, `silence_ms` of unvoiced frames ends the
utterance. The utterance handed to speech-to-text is the audio from `PRE_ROLL_MS` before the
speech began to the end (the quiet start of a word sits under the threshold).

Streams live in `StreamTable`, owned by the voice capability: bounded in number and in
buffered audio, dropped when idle (the capability's lifespan sweeps them) and all dropped
when it stops.
"""

from __future__ import annotations

import math
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sidecar.errors import NotFound, ResourceExhausted

if TYPE_CHECKING:
    import numpy as np

RATE = 16_000
FRAME = 320  # 20 ms
START_FRAMES = 3
PRE_ROLL_MS = 300
ABS_FLOOR_DB = -50.0
ABOVE_NOISE_DB = 12.0
NOISE_WINDOW = 150  # frames: 3 s
NOISE_SEED_DB = -55.0


def _db(rms: float) -> float:
    return 20.0 * math.log10(max(rms, 1e-10))


@dataclass(slots=True)
class Vad:
    silence_ms: int = 800
    frames: int = 0
    voiced_run: int = 0
    silent_run: int = 0
    speech_start: int | None = None  # frame index
    ended_at: int | None = None  # frame index one past the utterance
    _carry: list[float] = field(default_factory=list)
    _levels: deque[float] = field(default_factory=lambda: deque([NOISE_SEED_DB] * NOISE_WINDOW,
                                                                 maxlen=NOISE_WINDOW))

    @property
    def noise_db(self) -> float:
        return min(self._levels)

    @property
    def speech(self) -> bool:
        return self.speech_start is not None

    @property
    def ended(self) -> bool:
        return self.ended_at is not None

    def feed(self, samples: np.ndarray) -> int:
        """Classify the new samples; return how many of them belong to the utterance (all,
        unless the utterance ended inside this piece)."""
        import numpy as np

        if self.ended:
            return 0
        start = self.frames * FRAME + len(self._carry)  # where `samples` begins in the stream
        x = np.concatenate([np.asarray(self._carry, dtype=np.float32), samples]) if self._carry else samples
        n = len(x) // FRAME
        silence_frames = max(1, self.silence_ms // 20)
        for i in range(n):
            frame = x[i * FRAME:(i + 1) * FRAME]
            level = _db(float(np.sqrt(np.mean(frame.astype(np.float64) ** 2))))
            voiced = level > ABS_FLOOR_DB and level > self.noise_db + ABOVE_NOISE_DB
            self._levels.append(level)
            if voiced:
                self.voiced_run += 1
                self.silent_run = 0
            else:
                self.voiced_run = 0
                self.silent_run += 1
            self.frames += 1
            if self.speech_start is None and self.voiced_run >= START_FRAMES:
                self.speech_start = self.frames - START_FRAMES
            elif self.speech_start is not None and self.silent_run >= silence_frames:
                self.ended_at = self.frames
                self._carry = []
                return max(0, self.ended_at * FRAME - start)
        self._carry = x[n * FRAME:].tolist()
        return len(samples)

    def utterance(self, audio: np.ndarray) -> np.ndarray:
        """The part of `audio` (everything buffered) worth transcribing."""
        if self.speech_start is None:
            return audio
        start = max(0, self.speech_start * FRAME - PRE_ROLL_MS * RATE // 1000)
        return audio[start:]


@dataclass(slots=True)
class Stream:
    id: str
    language: str | None
    conversation_id: str | None
    speak: bool
    vad: Vad
    chunks: list[np.ndarray] = field(default_factory=list)
    samples: int = 0
    last_used: float = field(default_factory=time.monotonic)
    busy: bool = False  # `end` is running: the sweeper leaves it alone

    def audio(self) -> np.ndarray:
        import numpy as np

        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, dtype=np.float32)


class StreamTable:
    def __init__(self, *, max_streams: int = 8, max_seconds: float = 120.0, idle_seconds: float = 60.0) -> None:
        self.max_streams = max_streams
        self.max_seconds = max_seconds
        self.idle_seconds = idle_seconds
        # (only the event loop touches it: no lock)
        self._streams: dict[str, Stream] = {}

    def __len__(self) -> int:
        return len(self._streams)

    def open(self, *, language: str | None, conversation_id: str | None, speak: bool, silence_ms: int) -> Stream:
        self.sweep()
        if len(self._streams) >= self.max_streams:
            raise ResourceExhausted(f"{len(self._streams)} voice streams are open already; end one first",
                                    limit=self.max_streams)
        s = Stream("vs_" + secrets.token_hex(8), language, conversation_id, speak, Vad(silence_ms))
        self._streams[s.id] = s
        return s

    def get(self, stream_id: str) -> Stream:
        s = self._streams.get(stream_id)
        if s is None:
            raise NotFound(f"no voice stream {stream_id!r} (ended, dropped when idle, or never opened)",
                           streamId=stream_id)
        s.last_used = time.monotonic()
        return s

    def add(self, s: Stream, samples: np.ndarray) -> int:
        """Buffer what the detector keeps of `samples`; return how many samples it ignored."""
        limit = int(self.max_seconds * RATE)
        if s.samples + len(samples) > limit and not s.vad.ended:
            raise ResourceExhausted(f"the stream holds {s.samples / RATE:.1f} s; at most {self.max_seconds:.0f} s "
                                    "can be buffered: call voice/stream/end", limit=self.max_seconds)
        keep = s.vad.feed(samples)
        if keep:
            s.chunks.append(samples[:keep])
            s.samples += keep
        return len(samples) - keep

    def close(self, stream_id: str) -> None:
        self._streams.pop(stream_id, None)

    def sweep(self) -> list[str]:
        """Drop the streams idle for longer than `idle_seconds`; return their ids."""
        now = time.monotonic()
        gone = [k for k, s in self._streams.items() if not s.busy and now - s.last_used > self.idle_seconds]
        for k in gone:
            self._streams.pop(k, None)
        return gone

    def clear(self) -> None:
        self._streams.clear()
