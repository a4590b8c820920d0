"""The events capability: the daemon's event bus (in-process pub/sub, durable log with
retention) and its events/* methods.

Who publishes what:
- workflows: `workflow.run.*` and `workflow.step.*` (the workflows capability finds the bus);
- the scheduler: `scheduler.fired` and `scheduler.finished` (found when a run fires);
- plugins: `plugins.reloaded` {pluginId, ok, version, error?};
- chat: `llm.providerError` {provider, model, kind, errorType, status, message, conversationId}.
Plugins and chat offer a `publish_event` hook on their service (a no-op until connected); this
capability connects it to the bus when its lifespan starts, when every capability is built, so
the order of `CAPABILITIES` does not matter for them.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, ClassVar

from protocol import events as p
from protocol.events import BusEvent
from sidecar.capability import Capability, Platform
from sidecar.events import handlers
from sidecar.events.service import DEFAULTS, Delivery, EventBus, Overflow, Subscription
from sidecar.events.store import EventStore
from sidecar.settings.registry import SettingDef

if TYPE_CHECKING:
    from sidecar.server.router import Router

#: services of other capabilities with a `publish_event(topic, payload)` hook: (module, class)
PUBLISHERS: tuple[tuple[str, str], ...] = (
    ("sidecar.plugins.service", "PluginService"),
    ("sidecar.llm.chat", "ChatService"),
)


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

    def _publishers(self) -> list[Any]:
        """The services in this build that publish through a hook."""
        found = []
        for module, name in PUBLISHERS:
            try:
                service_type = getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError):
                continue
            service = self.platform.find(service_type)
            if service is not None:
                found.append(service)
        return found

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        async with self.bus.running(), self.delivery.running():
            publishers = self._publishers()
            for service in publishers:
                service.publish_event = self.bus.publish
            try:
                yield
            finally:
                for service in publishers:
                    service.publish_event = _ignore


def _ignore(topic: str, payload: dict[str, Any]) -> None:
    """What a publisher's hook does once the bus has stopped."""
