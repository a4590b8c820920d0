"""workflows/*: the RPC edge of WorkflowService."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import msgspec

from protocol import workflows as p
from protocol.common import Empty
from sidecar.server.context import RequestContext
from sidecar.server.router import Router
from sidecar.workflows.engine import EventSink
from sidecar.workflows.service import WorkflowService

#: events of one run waiting for a slow shell; beyond that they are dropped from the stream
#: (never from the run's log: workflows/events has them all)
STREAM_BUFFER = 4096


async def _streaming(ctx: RequestContext, body: Callable[[EventSink], Awaitable[Any]]) -> Any:
    """Run `body(sink)` while forwarding what the sink receives as workflows/event."""
    send, receive = anyio.create_memory_object_stream[p.WorkflowEvent](STREAM_BUFFER)
    stream = ctx.stream(p.EVENT)

    def sink(event: p.WorkflowEvent) -> None:
        try:
            send.send_nowait(msgspec.structs.replace(event))
        except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass

    async def forward() -> None:
        async with receive:
            async for event in receive:
                await stream.send(event)

    async with anyio.create_task_group() as tg:
        tg.start_soon(forward)
        try:
            return await body(sink)
        finally:
            send.close()  # the forwarder drains what is left, then ends


def register(router: Router, service: WorkflowService) -> None:
    @router.method(p.CREATE)
    async def create(ctx: RequestContext, params: p.WorkflowDocParams) -> p.WorkflowInfo:
        return await service.create(params.workflow)

    @router.method(p.GET)
    async def get(ctx: RequestContext, params: p.IdParams) -> p.WorkflowInfo:
        return await service.get(params.id)

    @router.method(p.LIST)
    async def list_(ctx: RequestContext, params: Empty) -> p.WorkflowList:
        return await service.list()

    @router.method(p.UPDATE)
    async def update(ctx: RequestContext, params: p.UpdateParams) -> p.WorkflowInfo:
        return await service.update(params.id, params.workflow)

    @router.method(p.DELETE)
    async def delete(ctx: RequestContext, params: p.IdParams) -> p.DeleteResult:
        return p.DeleteResult(params.id, await service.delete(params.id))

    @router.method(p.VALIDATE)
    async def validate(ctx: RequestContext, params: p.WorkflowDocParams) -> p.ValidateResult:
        return service.validate(params.workflow)

    @router.method(p.DUPLICATE)
    async def duplicate(ctx: RequestContext, params: p.DuplicateParams) -> p.WorkflowInfo:
        return await service.duplicate(params.id, params.newId, params.name)

    @router.method(p.RUN)
    async def run(ctx: RequestContext, params: p.RunParams) -> p.RunResult:
        return await _streaming(ctx, lambda sink: service.run_workflow(params.id, params.inputs,
                                                                       workflow=params.workflow, sink=sink))

    @router.method(p.START)
    async def start(ctx: RequestContext, params: p.RunParams) -> p.RunStarted:
        run = await service.start(params.id, params.inputs, workflow=params.workflow)
        return p.RunStarted(run.id)

    @router.method(p.CANCEL)
    async def cancel(ctx: RequestContext, params: p.RunIdParams) -> p.CancelResult:
        return p.CancelResult(params.runId, await service.cancel(params.runId))

    @router.method(p.RUNS)
    async def runs(ctx: RequestContext, params: p.RunsParams) -> p.RunList:
        return await service.runs(params.workflowId, params.status, params.limit)

    @router.method(p.RUNS_GET)
    async def runs_get(ctx: RequestContext, params: p.RunIdParams) -> p.RunDetail:
        return await service.run_detail(params.runId)

    @router.method(p.EVENTS)
    async def events(ctx: RequestContext, params: p.EventsParams) -> p.EventsResult:
        return await service.events(params.runId, params.afterSeq, params.limit)

    @router.method(p.RESUME)
    async def resume(ctx: RequestContext, params: p.RunIdParams) -> p.RunResult:
        async def body(sink: EventSink) -> p.RunResult:
            return await service.wait(await service.resume(params.runId, sink))
        return await _streaming(ctx, body)

    @router.method(p.BLOCKS)
    async def blocks(ctx: RequestContext, params: p.BlocksParams) -> p.BlocksResult:
        return service.blocks(params.category, params.query)

    @router.method(p.BLOCKS_RUN)
    async def blocks_run(ctx: RequestContext, params: p.BlockRunParams) -> p.BlockRunResult:
        return await _streaming(ctx, lambda sink: service.run_block(params.kind, params.inputs, sink))
