"""Speech out: pyttsx3 on espeak-ng, WAV files, voices, rate and volume.

pyttsx3 is not thread-safe and its espeak driver keeps global state, so one dedicated
thread owns the engine: it is created there on first use (pyttsx3 imported lazily there
too) and every job runs there, one at a time. pyttsx3 prints ("Audio saved to ...") to
stdout; the daemon's fd-level guard (README, "stdout is protocol only") sends that to
stderr, and tests/test_voice_e2e.py proves it on the real daemon.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio

from sidecar.errors import InvalidValue, Unavailable

log = logging.getLogger("sidecar.voice")
T = TypeVar("T")

#: the espeak-ng voice used for each language when none is set
DEFAULT_VOICES = {"en": "gmw/en-us", "ko": "ko"}
#: how many times one utterance is made before text-to-speech gives up (synthesize)
SYNTH_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Voice:
    id: str
    name: str
    languages: tuple[str, ...]
    gender: str | None = None


@dataclass(frozen=True, slots=True)
class Speech:
    path: Path
    duration_ms: float
    voice: str
    sample_rate: int


class TtsEngine:
    """pyttsx3 driven from its own thread. `run(fn)` runs `fn(engine)` there."""

    def __init__(self, driver: str = "espeak") -> None:
        self._driver = driver
        self._jobs: queue.SimpleQueue[tuple[Callable[[Any], Any], Future[Any]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._voices: list[Voice] | None = None

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="sidecar-tts", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        engine: Any = None
        error: Exception | None = None
        while (job := self._jobs.get()) is not None:
            fn, fut = job
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                if engine is None and error is None:
                    try:
                        import pyttsx3

                        engine = pyttsx3.init(self._driver)
                        # pyttsx3 queues property changes until its first run loop; an empty
                        # run makes later `setProperty` calls reach the driver at once
                        engine.runAndWait()
                    except Exception as exc:  # no espeak-ng library, no pyttsx3
                        log.warning("text-to-speech is unavailable: %s", exc)
                        error = exc
                if engine is None:
                    raise Unavailable("text-to-speech is unavailable here: install pyttsx3 and espeak-ng "
                                      "(apt-get install espeak-ng libespeak-ng1)", reason=type(error).__name__)
                fut.set_result(fn(engine))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                fut.set_exception(exc)
        if engine is not None:
            try:
                engine.stop()
            except Exception:  # noqa: BLE001
                pass

    def submit(self, fn: Callable[[Any], T]) -> Future[T]:
        self._ensure_thread()
        fut: Future[T] = Future()
        self._jobs.put((fn, fut))
        return fut

    def call(self, fn: Callable[[Any], T]) -> T:
        """Blocking: run on the TTS thread and wait."""
        return self.submit(fn).result()

    async def run(self, fn: Callable[[Any], T]) -> T:
        fut = self.submit(fn)
        return await anyio.to_thread.run_sync(fut.result, abandon_on_cancel=True)

    def close(self) -> None:
        with self._lock:
            if self._thread is not None:
                self._jobs.put(None)
                self._thread.join(timeout=5)
                self._thread = None

    # ---- what the service uses -----------------------------------------------------------------------

    def voices(self) -> list[Voice]:
        if self._voices is None:
            def get(engine: Any) -> list[Voice]:
                out = []
                for v in engine.getProperty("voices"):
                    langs = tuple(x.decode() if isinstance(x, bytes) else str(x) for x in (v.languages or ()))
                    out.append(Voice(v.id, v.name or v.id, langs, getattr(v, "gender", None)))
                return out

            self._voices = self.call(get)
        return self._voices

    def resolve_voice(self, voice: str | None, language: str = "en") -> str:
        """A voice id, or a language's default; InvalidValue naming close ids when unknown."""
        wanted = voice or DEFAULT_VOICES.get(language, DEFAULT_VOICES["en"])
        ids = {v.id for v in self.voices()}
        if wanted in ids:
            return wanted
        by_lang = [v.id for v in self.voices() if wanted in v.languages or v.id.rsplit("/", 1)[-1] == wanted]
        if by_lang:
            return by_lang[0]
        import difflib

        close = difflib.get_close_matches(wanted, sorted(ids), n=3)
        raise InvalidValue(f"no voice {wanted!r}" + (f"; close: {', '.join(close)}" if close else ""),
                           "$.params.voice", choices=close)

    def _wait_idle(self, timeout: float) -> None:
        """Block until espeak-ng's command thread has nothing queued or running."""
        if self._driver != "espeak":
            return
        import time

        from pyttsx3.drivers import _espeak

        deadline = time.monotonic() + timeout
        while _espeak.IsPlaying() and time.monotonic() < deadline:
            time.sleep(0.001)

    def synthesize(self, text: str, path: Path, *, voice: str, rate: int, volume: float) -> Speech:
        """Blocking: speak `text` into the WAV file at `path`, at `rate` words per minute and
        `volume` (0..1).

        Why rate and volume used to be ignored when saving to a file: pyttsx3's espeak driver
        runs espeak-ng in AUDIO_OUTPUT_RETRIEVAL mode, where `espeak_SetParameter` only queues
        the change on espeak's own thread. `runAndWait()` then "stops whatever is playing"
        first: `espeak_IsPlaying()` is true while those changes are still queued, so it calls
        `espeak_Cancel()`, which empties the queue and restores the parameters of the last
        utterance. The new rate (or volume) was dropped whenever espeak's thread had not
        reached it yet. And `runAndWait()` returns after a fixed 10 ms sleep, not when the
        utterance is done; the WAV file is written later from espeak's thread, so under load
        the file read back was missing, empty, or (the next job having already pointed the
        driver at its own path) the previous job's audio at the previous job's settings.

        So: set the properties, wait until espeak's thread has applied them (idle again), then
        synthesise, and wait for the driver's `finished-utterance` (sent after the file is
        written) and for espeak to be idle before the next job.

        Still, once in a full test run an utterance came back as a WAV with no samples (likely
        the same `stop()` in `runAndWait`: a cancelled utterance ends with `completed=False`,
        and espeak's end event may still write the empty buffer). Such an utterance is made
        again (at most SYNTH_ATTEMPTS times in all), never handed on as silence."""
        timeout = 30.0 + len(text) / 10.0  # espeak makes ~100x real time; this only catches a hang

        def job(engine: Any) -> bool:
            """True when the driver says the utterance completed."""
            done = threading.Event()
            outcomes: list[bool] = []

            def finished(completed: bool = True, **_: Any) -> None:
                outcomes.append(bool(completed))
                done.set()

            token = engine.connect("finished-utterance", finished)
            try:
                engine.setProperty("voice", voice)
                engine.setProperty("rate", rate)
                engine.setProperty("volume", volume)
                self._wait_idle(timeout)
                engine.save_to_file(text, str(path))
                engine.runAndWait()
                if not done.wait(timeout):
                    raise Unavailable(f"text-to-speech did not finish within {timeout:.0f} s", reason="tts_timeout")
                self._wait_idle(timeout)
            finally:
                engine.disconnect(token)
            return all(outcomes)

        path.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, SYNTH_ATTEMPTS + 1):
            path.unlink(missing_ok=True)  # what a cancelled attempt left is not this one's
            completed = self.call(job)
            frames, sr = _wav_frames(path)
            if completed and frames > 0:
                break
            log.warning("text-to-speech attempt %d of %d gave %s; %s", attempt, SYNTH_ATTEMPTS,
                        "no samples" if completed else "a cancelled utterance",
                        "trying again" if attempt < SYNTH_ATTEMPTS else "giving up")
        else:
            raise Unavailable(f"text-to-speech produced no audio for {text[:60]!r} in {SYNTH_ATTEMPTS} attempts",
                              reason="tts_empty")
        return Speech(path, frames / sr * 1000.0, voice, sr)


def _wav_frames(path: Path) -> tuple[int, int]:
    """(frames, sample rate) of the WAV file at `path`; (0, 0) when there is none or it is
    not a whole WAV file."""
    import wave

    try:
        with wave.open(str(path)) as w:
            return w.getnframes(), w.getframerate()
    except (OSError, EOFError, wave.Error):
        return 0, 0
