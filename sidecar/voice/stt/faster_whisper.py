"""faster-whisper (CTranslate2, int8 on CPU): segments come lazily, so cancellation is
checked between them. The model path is a CTranslate2 directory (model.bin, tokenizer.json)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sidecar.voice.stt.base import Cancelled, Segment, SttEngine, Transcript, decoding_language

if TYPE_CHECKING:
    import numpy as np


class FasterWhisperEngine(SttEngine):
    name = "faster-whisper"
    package = "faster-whisper"

    @classmethod
    def module(cls) -> str:
        return "faster_whisper"

    def _load(self) -> None:
        from faster_whisper import WhisperModel

        self._model: Any = WhisperModel(self.model_path, device="cpu", compute_type="int8",
                                        cpu_threads=self.threads, local_files_only=True)

    def transcribe(self, samples: np.ndarray, *, language: str | None = None, prompt: str = "",
                   cancelled: Callable[[], bool] = lambda: False) -> Transcript:
        self.load()
        multilingual = bool(getattr(self._model, "model", None) and self._model.model.is_multilingual)
        lang = decoding_language(language, multilingual)
        segments_iter, info = self._model.transcribe(
            samples, language=None if lang == "auto" else lang, beam_size=1, initial_prompt=prompt or None,
            condition_on_previous_text=False, vad_filter=False, without_timestamps=True)
        segments: list[Segment] = []
        no_speech: list[float] = []
        for s in segments_iter:
            if cancelled():
                raise Cancelled()
            segments.append(Segment(s.start, s.end, s.text))
            no_speech.append(s.no_speech_prob)
        return Transcript("".join(s.text for s in segments).strip(), info.language, tuple(segments),
                          max(no_speech) if no_speech else None, info.language_probability)

    def close(self) -> None:
        self.__dict__.pop("_model", None)
        self.loaded = False
