"""events/*: the RPC edge of the EventBus."""

from __future__ import annotations

from protocol import events as p
from sidecar.events.service import Delivery, EventBus
from sidecar.server.context import RequestContext
from sidecar.server.router import Router


def register(router: Router, bus: EventBus, delivery: Delivery) -> None:
    @router.method(p.SUBSCRIBE)
    async def subscribe(ctx: RequestContext, params: p.SubscribeParams) -> p.SubscribeResult:
        sub, last = delivery.subscribe(params.topics, params.buffer)
        return p.SubscribeResult(sub.id, last)

    @router.method(p.UNSUBSCRIBE)
    async def unsubscribe(ctx: RequestContext, params: p.UnsubscribeParams) -> p.UnsubscribeResult:
        return p.UnsubscribeResult(bus.unsubscribe(params.subscriptionId))

    @router.method(p.REPLAY)
    async def replay(ctx: RequestContext, params: p.ReplayParams) -> p.ReplayResult:
        events, more = await bus.replay(params.afterSeq, params.topics, params.limit)
        return p.ReplayResult(events, bus.seq, more)

    @router.method(p.PUBLISH)
    async def publish(ctx: RequestContext, params: p.PublishParams) -> p.PublishResult:
        return p.PublishResult(bus.publish(params.topic, params.payload))
