"""voice/*: the RPC edge of VoiceService (decode, call, encode)."""

from __future__ import annotations

from protocol import voice as v
from sidecar.server.context import RequestContext
from sidecar.server.router import Router
from sidecar.voice.service import VoiceService


def register(router: Router, service: VoiceService) -> None:
    @router.method(v.M_PROCESS)
    async def process(ctx: RequestContext, params: v.ProcessParams) -> v.ProcessResult:
        return await service.process(params, ctx.stream(v.N_EVENT).send)

    @router.method(v.M_TRANSCRIBE)
    async def transcribe(ctx: RequestContext, params: v.TranscribeParams) -> v.TranscribeResult:
        return await service.transcribe(params, ctx.stream(v.N_EVENT).send)

    @router.method(v.M_UNDERSTAND)
    async def understand(ctx: RequestContext, params: v.UnderstandParams) -> v.Understanding:
        u, match = await service.understand(params.text, params.language)
        return service.wire_understanding(u, match)

    @router.method(v.M_SPEAK)
    async def speak(ctx: RequestContext, params: v.SpeakParams) -> v.SpeakResult:
        return await service.speak(params)

    @router.method(v.M_VOICES)
    async def voices(ctx: RequestContext, params: v.Empty) -> v.VoicesResult:
        return await service.voices()

    @router.method(v.M_SETTINGS)
    async def settings(ctx: RequestContext, params: v.SettingsParams) -> v.VoiceSettings:
        return await service.update_settings(params)

    @router.method(v.M_CONV_START)
    async def conv_start(ctx: RequestContext, params: v.ConversationStartParams) -> v.Conversation:
        return await service.start_conversation(params.language, params.agent)

    @router.method(v.M_CONV_GET)
    async def conv_get(ctx: RequestContext, params: v.IdParams) -> v.ConversationDetail:
        return await service.get_conversation(params.id)

    @router.method(v.M_CONV_LIST)
    async def conv_list(ctx: RequestContext, params: v.ConversationListParams) -> v.ConversationList:
        return await service.list_conversations(params.status, params.limit, params.cursor)

    @router.method(v.M_CONV_END)
    async def conv_end(ctx: RequestContext, params: v.IdParams) -> v.Conversation:
        return await service.end_conversation(params.id)

    @router.method(v.M_PAT_CREATE)
    async def pat_create(ctx: RequestContext, params: v.PatternCreateParams) -> v.Pattern:
        return await service.create_pattern(params)

    @router.method(v.M_PAT_LIST)
    async def pat_list(ctx: RequestContext, params: v.Empty) -> v.PatternList:
        return await service.list_patterns()

    @router.method(v.M_PAT_UPDATE)
    async def pat_update(ctx: RequestContext, params: v.PatternUpdateParams) -> v.Pattern:
        return await service.update_pattern(params)

    @router.method(v.M_PAT_DELETE)
    async def pat_delete(ctx: RequestContext, params: v.IdParams) -> v.Deleted:
        await service.delete_pattern(params.id)
        return v.Deleted(params.id)

    @router.method(v.M_STREAM_START)
    async def stream_start(ctx: RequestContext, params: v.StreamStartParams) -> v.StreamStarted:
        return service.stream_start(params)

    @router.method(v.M_STREAM_CHUNK)
    async def stream_chunk(ctx: RequestContext, params: v.StreamChunkParams) -> v.StreamChunkResult:
        return await service.stream_chunk(params)

    @router.method(v.M_STREAM_END)
    async def stream_end(ctx: RequestContext, params: v.StreamIdParams) -> v.ProcessResult:
        return await service.stream_end(params.streamId, ctx.stream(v.N_EVENT).send)

    @router.method(v.M_MODEL_DOWNLOAD)
    async def model_download(ctx: RequestContext, params: v.ModelDownloadParams) -> v.ModelDownloadResult:
        return await service.download_model(params, ctx.stream(v.N_MODEL_PROGRESS).send)
