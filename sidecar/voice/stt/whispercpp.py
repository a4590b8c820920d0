"""whisper.cpp through pywhispercpp (the default engine): the model path is a ggml file.
whisper.cpp's own abort callback makes cancellation take effect inside a window; its logs go
to stderr (never stdout). Decoding is greedy at temperature 0 with no temperature fall-back
(repeatable, and no re-decoding loops on short commands). Cutting `audio_ctx` to the clip's
length is available (`short_audio_ctx=True`) but off: measured on tiny.en it made a
1-second "open settings" take 32 s (the decoder looped) and garbled another command."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sidecar.voice.stt.base import Cancelled, Segment, SttEngine, Transcript, windows

if TYPE_CHECKING:
    import numpy as np


class WhisperCppEngine(SttEngine):
    name = "whisper.cpp"
    package = "pywhispercpp"

    def __init__(self, model_path: str, *, threads: int = 2, short_audio_ctx: bool = False) -> None:
        super().__init__(model_path, threads=threads)
        self.short_audio_ctx = short_audio_ctx

    @classmethod
    def module(cls) -> str:
        return "pywhispercpp"

    def _load(self) -> None:
        import sys

        from pywhispercpp.model import Model

        self._model: Any = Model(self.model_path, redirect_whispercpp_logs_to=sys.stderr, n_threads=self.threads,
                                 print_progress=False, print_realtime=False, print_timestamps=False)

    def transcribe(self, samples: np.ndarray, *, language: str | None = None, prompt: str = "",
                   cancelled: Callable[[], bool] = lambda: False) -> Transcript:
        import numpy as np

        self.load()
        lang = language or "en"
        segments: list[Segment] = []
        offset = 0.0
        for window in windows(samples):
            if cancelled():
                raise Cancelled()
            # whisper.cpp refuses less than 1 s: pad with silence
            padded = np.pad(window, (0, max(0, 16_000 + 1600 - len(window)))).astype(np.float32)
            params: dict[str, Any] = {"language": lang, "initial_prompt": prompt, "no_context": True,
                                      "single_segment": False, "temperature": 0.0,
                                      "temperature_inc": 0.0, "max_tokens": 128}
            if self.short_audio_ctx and len(padded) < 16_000 * 10:
                # 50 encoder frames per second; whisper needs some margin past the speech
                params["audio_ctx"] = min(1500, int(len(padded) / 16_000 * 50) + 128)
            result = self._model.transcribe(padded, abort_callback=cancelled, **params)
            if cancelled():
                raise Cancelled()
            segments.extend(Segment(offset + s.t0 / 100.0, offset + s.t1 / 100.0, s.text) for s in result)
            offset += len(window) / 16_000
        return Transcript("".join(s.text for s in segments).strip(), lang, tuple(segments))

    def close(self) -> None:
        self.__dict__.pop("_model", None)
        self.loaded = False
