"""whisper.cpp through whisper-cpp-python (the binding the design card names), under the
`whisper-cpp-python` extra. Measured here (tiny.en, 2 cores): 1.5-5 s per 2-second command
(its bundled whisper.cpp has no `audio_ctx` shortcut and an old encoder), its import pulls
librosa/numba, and identical calls gave different text (`Run daily mock-up recipe.`,
`Run Callibachup Recipe.`, `Run by the way.` for one clip) even at temperature 0 — its
default parameters sample with temperature fall-back. We call its low-level `_full` with our
own 16 kHz samples (not its librosa file loader), temperature 0 and no fall-back, which makes
it repeatable; it remains the least accurate of the three. Cancellation is between windows."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sidecar.voice.stt.base import Cancelled, Segment, SttEngine, Transcript, windows

if TYPE_CHECKING:
    import numpy as np


class WhisperCppPythonEngine(SttEngine):
    name = "whisper-cpp-python"
    package = "whisper-cpp-python"

    @classmethod
    def module(cls) -> str:
        return "whisper_cpp_python"

    def _load(self) -> None:
        from whisper_cpp_python import Whisper

        self._w: Any = Whisper(self.model_path, n_threads=self.threads)
        self._w.params.temperature = 0.0
        self._w.params.temperature_inc = 0.0
        self._w.params.no_context = True

    def transcribe(self, samples: np.ndarray, *, language: str | None = None, prompt: str = "",
                   cancelled: Callable[[], bool] = lambda: False) -> Transcript:
        import numpy as np

        self.load()
        lang = (language or "en").encode()
        self._lang, self._prompt = lang, prompt.encode("utf-8")  # kept alive while C holds the pointers
        self._w.params.language = self._lang
        self._w.params.initial_prompt = self._prompt if prompt else None
        segments: list[Segment] = []
        offset = 0.0
        for window in windows(samples):
            if cancelled():
                raise Cancelled()
            padded = np.ascontiguousarray(np.pad(window, (0, max(0, 17_600 - len(window)))), dtype=np.float32)
            result = self._w._full(padded)
            segments.extend(Segment(offset + s["start"], offset + s["end"], s["text"]) for s in result["segments"])
            offset += len(window) / 16_000
        return Transcript("".join(s.text for s in segments).strip(), lang.decode(), tuple(segments))

    def close(self) -> None:
        w = self.__dict__.pop("_w", None)
        if w is not None:
            from whisper_cpp_python import whisper_cpp

            whisper_cpp.whisper_free(w.context)
            w.context = None
        self.loaded = False
