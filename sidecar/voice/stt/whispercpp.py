"""whisper.cpp through pywhispercpp (the default engine): the model path is a ggml file.
whisper.cpp's own abort callback makes cancellation take effect inside a window; its logs go
to stderr (never stdout). Decoding is greedy at temperature 0 with no temperature fall-back
(repeatable, and no re-decoding loops on short commands); threads = the configured count
(physical cores). A clip shorter than ~18 s is encoded with a shortened context and checked
for the loops that can cause, falling back to the full context: see `context.py` for the
figures (`short_audio_ctx=False` turns it off)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sidecar.voice.stt import context
from sidecar.voice.stt.base import Cancelled, Segment, SttEngine, Transcript, decoding_language, windows

if TYPE_CHECKING:
    import numpy as np


class WhisperCppEngine(SttEngine):
    name = "whisper.cpp"
    package = "pywhispercpp"

    def __init__(self, model_path: str, *, threads: int = 2, short_audio_ctx: bool = True) -> None:
        super().__init__(model_path, threads=threads)
        self.short_audio_ctx = short_audio_ctx
        #: shortened-context results rejected as loops and decoded again in full (bench figure)
        self.fallbacks = 0

    @classmethod
    def module(cls) -> str:
        return "pywhispercpp"

    def _load(self) -> None:
        import sys

        from pywhispercpp.model import Model

        import _pywhispercpp as pw

        self._model: Any = Model(self.model_path, redirect_whispercpp_logs_to=sys.stderr, n_threads=self.threads,
                                 print_progress=False, print_realtime=False, print_timestamps=False)
        self.multilingual = bool(pw.whisper_is_multilingual(self._model._ctx))

    def transcribe(self, samples: np.ndarray, *, language: str | None = None, prompt: str = "",
                   cancelled: Callable[[], bool] = lambda: False) -> Transcript:
        import numpy as np

        self.load()
        lang = decoding_language(language, self.multilingual)
        segments: list[Segment] = []
        offset = 0.0
        for window in windows(samples):
            if cancelled():
                raise Cancelled()
            # whisper.cpp refuses less than 1 s: pad with silence
            padded = np.pad(window, (0, max(0, 16_000 + 1600 - len(window)))).astype(np.float32)
            seconds = len(padded) / 16_000
            params: dict[str, Any] = {"language": lang, "initial_prompt": prompt, "no_context": True,
                                      "single_segment": False, "temperature": 0.0, "temperature_inc": 0.0,
                                      "max_tokens": context.MAX_TOKENS, "audio_ctx": 0}
            ctx = context.audio_ctx_for(len(padded)) if self.short_audio_ctx else 0
            result = None
            if ctx:
                # (pywhispercpp keeps parameters between calls: every call sets audio_ctx and max_tokens)
                result = self._model.transcribe(padded, abort_callback=cancelled,
                                                **{**params, "audio_ctx": ctx,
                                                   "max_tokens": context.max_tokens_for(seconds)})
                if cancelled():
                    raise Cancelled()
                if context.looks_looped("".join(s.text for s in result), seconds):
                    self.fallbacks += 1
                    result = None
            if result is None:
                result = self._model.transcribe(padded, abort_callback=cancelled, **params)
            if cancelled():
                raise Cancelled()
            segments.extend(Segment(offset + s.t0 / 100.0, offset + s.t1 / 100.0, s.text) for s in result)
            offset += len(window) / 16_000
        if lang == "auto":  # what whisper.cpp detected (in the last window)
            import _pywhispercpp as pw

            lang = pw.whisper_lang_str(pw.whisper_full_lang_id(self._model._ctx))
        return Transcript("".join(s.text for s in segments).strip(), lang, tuple(segments))

    def close(self) -> None:
        self.__dict__.pop("_model", None)
        self.loaded = False
