"""events/*: the daemon's event bus — notable events of every capability (workflow runs,
plugin reloads, scheduler firings, provider errors) under dotted topics, kept in a durable log.

Topics are dotted names (`workflow.run.finished`, `scheduler.fired`). In patterns, `*`
matches one segment, and a trailing `*` matches one or more (`workflow.*` matches
`workflow.run.finished`); `*` alone matches every topic. `events/subscribe` delivers events as
`events/event` notifications; a subscriber that falls behind gets `events/overflow` (what was
dropped) and catches up with `events/replay {afterSeq}` — as does a shell that reconnects.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

from protocol.spec import MethodSpec, NotificationSpec

TOPIC_PATTERN = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\Z"
Topic = Annotated[str, Meta(min_length=1, max_length=200, pattern=TOPIC_PATTERN)]
TopicPattern = Annotated[str, Meta(min_length=1, max_length=200, pattern=r"^(\*|[A-Za-z0-9_-]+)(\.(\*|[A-Za-z0-9_-]+))*\Z")]


class BusEvent(msgspec.Struct):
    seq: int
    topic: str
    payload: Any
    time: str


class SubscribeParams(msgspec.Struct, omit_defaults=True):
    topics: Annotated[list[TopicPattern], Meta(min_length=1, max_length=64)]
    #: events this subscriber may have waiting before the newest are dropped (and reported);
    #: default: the setting events.subscriberBuffer
    buffer: Annotated[int, Meta(ge=1, le=1_000_000)] | None = None


class SubscribeResult(msgspec.Struct):
    subscriptionId: str
    #: the newest event's seq when the subscription began: replay after it to fill a gap
    lastSeq: int


class UnsubscribeParams(msgspec.Struct):
    subscriptionId: str


class UnsubscribeResult(msgspec.Struct):
    removed: bool


class ReplayParams(msgspec.Struct, omit_defaults=True):
    afterSeq: Annotated[int, Meta(ge=0)] = 0
    topics: list[TopicPattern] = msgspec.field(default_factory=lambda: ["*"])
    limit: Annotated[int, Meta(ge=1, le=10_000)] = 1000


class ReplayResult(msgspec.Struct):
    events: list[BusEvent]
    #: the newest event's seq in the log
    lastSeq: int
    #: more events match after the last one returned (call again with its seq)
    more: bool


class PublishParams(msgspec.Struct, omit_defaults=True):
    topic: Topic
    payload: Any = None


class PublishResult(msgspec.Struct):
    seq: int


class EventNotification(msgspec.Struct):
    subscriptionId: str
    seq: int
    topic: str
    payload: Any
    time: str


class OverflowNotification(msgspec.Struct):
    """Events were dropped for a subscriber that fell behind: replay after `firstSeq - 1`."""

    subscriptionId: str
    dropped: int
    firstSeq: int
    lastSeq: int


EVENT = NotificationSpec("events/event", EventNotification, "An event on a subscribed topic")
OVERFLOW = NotificationSpec("events/overflow", OverflowNotification,
                            "A subscriber fell behind and events were dropped; replay to catch up")

SUBSCRIBE = MethodSpec("events/subscribe", SubscribeParams, SubscribeResult,
                       "Receive events on topics matching the patterns as events/event notifications",
                       lane="events")
UNSUBSCRIBE = MethodSpec("events/unsubscribe", UnsubscribeParams, UnsubscribeResult, "End a subscription",
                         lane="events")
REPLAY = MethodSpec("events/replay", ReplayParams, ReplayResult,
                    "Events from the durable log after a seq (catch up after a reconnect or an overflow)",
                    lane="events")
PUBLISH = MethodSpec("events/publish", PublishParams, PublishResult, "Publish an event (shells and tools)",
                     lane="events")

METHODS = (SUBSCRIBE, UNSUBSCRIBE, REPLAY, PUBLISH)
NOTIFICATIONS = (EVENT, OVERFLOW)
