"""The events capability: the daemon's event bus (in-process pub/sub, durable log with
retention) and its events/* methods. Listed before the capabilities that publish to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, ClassVar

from protocol import events as p
from protocol.events import BusEvent
from sidecar.capability import Capability, Platform
from sidecar.events import handlers
from sidecar.events.service import DEFAULTS, Delivery, EventBus, Overflow, Subscription
from sidecar.events.store import EventStore
from sidecar.settings.registry import SettingDef

if TYPE_CHECKING:
    from sidecar.server.router import Router


class EventsCapability(Capability):
    name: ClassVar[str] = "events"
    settings: ClassVar[tuple[SettingDef, ...]] = (
        SettingDef("events.retainCount", "int", DEFAULTS["events.retainCount"],
                   "The most events the bus's durable log keeps (the oldest go first).", minimum=0,
                   maximum=100_000_000),
        SettingDef("events.retainDays", "int", DEFAULTS["events.retainDays"],
                   "Days an event stays in the bus's durable log.", minimum=0, maximum=36_500),
        SettingDef("events.subscriberBuffer", "int", DEFAULTS["events.subscriberBuffer"],
                   "Events a subscriber may have waiting before newer ones are dropped (and reported).",
                   minimum=1, maximum=1_000_000),
    )

    def __init__(self, platform: Platform) -> None:
        super().__init__(platform)
        self.bus = EventBus(EventStore(platform.db), platform.settings.value)
        self.delivery = Delivery(self.bus, self._deliver)
        platform.provide(self.bus)

    def _deliver(self, sub: Subscription, item: BusEvent | Overflow) -> None:
        if isinstance(item, Overflow):
            self.platform.notifier.notify(p.OVERFLOW, p.OverflowNotification(sub.id, item.dropped, item.first_seq,
                                                                             item.last_seq))
        else:
            self.platform.notifier.notify(p.EVENT, p.EventNotification(sub.id, item.seq, item.topic, item.payload,
                                                                       item.time))

    def register(self, router: Router) -> None:
        handlers.register(router, self.bus, self.delivery)

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        async with self.bus.running(), self.delivery.running():
            yield
