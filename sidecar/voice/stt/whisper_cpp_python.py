"""whisper.cpp through whisper-cpp-python (the binding the design card names), under the
`whisper-cpp-python` extra. Measured here (tiny.en, 2 cores, bench/voice_bench.py): about
1 s per 2-second command on a quiet machine (whisper.cpp through pywhispercpp: ~0.6 s), its
import pulls librosa/numba, and identical calls gave different text (`Run daily mock-up
recipe.`, `Run Callibachup Recipe.`, `Run by the way.` for one clip) even at temperature 0 —
its default parameters sample with temperature fall-back. We call its low-level `_full` with
our own 16 kHz samples (not its librosa file loader), temperature 0 and no fall-back, which
makes it repeatable. Its bundled whisper.cpp has the `audio_ctx` knob, and the same shortened
context as the pywhispercpp adapter (context.py) cut it to ~0.7 s, but it then got 7 of 8
bench commands right instead of 8: so here it is off unless asked (`short_audio_ctx=True`).
Cancellation is between windows."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sidecar.voice.stt import context
from sidecar.voice.stt.base import Cancelled, Segment, SttEngine, Transcript, decoding_language, windows

if TYPE_CHECKING:
    import numpy as np


class WhisperCppPythonEngine(SttEngine):
    name = "whisper-cpp-python"
    package = "whisper-cpp-python"

    def __init__(self, model_path: str, *, threads: int = 2, short_audio_ctx: bool = False) -> None:
        super().__init__(model_path, threads=threads)
        self.short_audio_ctx = short_audio_ctx
        self.fallbacks = 0

    @classmethod
    def module(cls) -> str:
        return "whisper_cpp_python"

    def _load(self) -> None:
        from whisper_cpp_python import Whisper

        self._w: Any = Whisper(self.model_path, n_threads=self.threads)
        self._w.params.temperature = 0.0
        self._w.params.temperature_inc = 0.0
        self._w.params.no_context = True
        from whisper_cpp_python import whisper_cpp

        self.multilingual = bool(whisper_cpp.whisper_is_multilingual(self._w.context))

    def transcribe(self, samples: np.ndarray, *, language: str | None = None, prompt: str = "",
                   cancelled: Callable[[], bool] = lambda: False) -> Transcript:
        import numpy as np

        self.load()
        lang = decoding_language(language, self.multilingual).encode()
        self._lang, self._prompt = lang, prompt.encode("utf-8")  # kept alive while C holds the pointers
        self._w.params.language = self._lang
        self._w.params.initial_prompt = self._prompt if prompt else None
        segments: list[Segment] = []
        offset = 0.0
        for window in windows(samples):
            if cancelled():
                raise Cancelled()
            padded = np.ascontiguousarray(np.pad(window, (0, max(0, 17_600 - len(window)))), dtype=np.float32)
            seconds = len(padded) / 16_000
            result = None
            ctx = context.audio_ctx_for(len(padded)) if self.short_audio_ctx else 0
            if ctx:  # the same shortened context and loop check as the pywhispercpp adapter
                self._w.params.audio_ctx, self._w.params.max_tokens = ctx, context.max_tokens_for(seconds)
                result = self._w._full(padded)
                if context.looks_looped(result["text"], seconds):
                    self.fallbacks += 1
                    result = None
                if cancelled():
                    raise Cancelled()
            if result is None:
                self._w.params.audio_ctx, self._w.params.max_tokens = 0, context.MAX_TOKENS
                result = self._w._full(padded)
            segments.extend(Segment(offset + s["start"], offset + s["end"], s["text"]) for s in result["segments"])
            offset += len(window) / 16_000
        detected = lang.decode()
        if detected == "auto":  # what whisper.cpp detected (in the last window)
            from whisper_cpp_python import whisper_cpp

            code = whisper_cpp.whisper_lang_str(whisper_cpp.whisper_full_lang_id(self._w.context))
            detected = code.decode() if isinstance(code, bytes) else str(code)
        return Transcript("".join(s.text for s in segments).strip(), detected, tuple(segments))

    def close(self) -> None:
        w = self.__dict__.pop("_w", None)
        if w is not None:
            from whisper_cpp_python import whisper_cpp

            whisper_cpp.whisper_free(w.context)
            w.context = None
        self.loaded = False
