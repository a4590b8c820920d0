"""EventBus: in-process pub/sub with topic wildcards and a durable log.

`publish(topic, payload)` never blocks and never fails the publisher: the event gets the
next seq, goes at once to every matching subscriber's bounded buffer (a full buffer drops
the event for that subscriber and counts it: `Subscription.overflow`), and is queued for
the log, which a writer task appends in batches and prunes by count and age (settings
events.retainCount / events.retainDays). `replay(after_seq, patterns)` reads the log, so a
subscriber that overflowed, or a shell that reconnected, catches up from a seq.

Other capabilities find the bus with `platform.find(EventBus)` and publish their notable
events (`workflow.run.finished`, `plugins.reloaded`, `scheduler.fired`, `llm.providerError`).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from protocol.events import TOPIC_PATTERN, BusEvent
from sidecar.errors import InvalidValue, NotFound
from sidecar.events.store import EventStore

log = logging.getLogger("sidecar.events")

DEFAULTS: dict[str, int] = {"events.retainCount": 10_000, "events.retainDays": 7, "events.subscriberBuffer": 1000}
PRUNE_EVERY = 500  # events appended between two prunings
_TOPIC = re.compile(TOPIC_PATTERN)
_PATTERN = re.compile(r"^(\*|[A-Za-z0-9_-]+)(\.(\*|[A-Za-z0-9_-]+))*\Z")


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def compile_pattern(pattern: str) -> Callable[[str], bool]:
    """`*` matches one segment; a trailing `*` one or more; `*` alone everything."""
    if _PATTERN.match(pattern) is None:
        raise InvalidValue(f"{pattern!r} is not a topic pattern (dotted names, * for a segment)", "$.params.topics")
    if pattern == "*":
        return lambda topic: True
    parts = pattern.split(".")
    body = [r"[^.]+" if p == "*" else re.escape(p) for p in parts]
    if parts[-1] == "*":
        body[-1] = r"[^.]+(?:\.[^.]+)*"
    regex = re.compile(r"\.".join(body) + r"\Z")
    return lambda topic: regex.match(topic) is not None


def matcher(patterns: Iterable[str]) -> Callable[[str], bool]:
    tests = [compile_pattern(p) for p in patterns]
    return lambda topic: any(test(topic) for test in tests)


@dataclass(slots=True)
class Overflow:
    dropped: int
    first_seq: int
    last_seq: int


class Subscription:
    """A subscriber's bounded buffer. Iterate it (`async for event in sub`) to receive."""

    def __init__(self, sub_id: str, patterns: list[str], buffer: int) -> None:
        self.id = sub_id
        self.patterns = patterns
        self.matches = matcher(patterns)
        send, receive = anyio.create_memory_object_stream[BusEvent](buffer)
        self._send: MemoryObjectSendStream[BusEvent] = send
        self.receive: MemoryObjectReceiveStream[BusEvent] = receive
        self._overflow: Overflow | None = None
        self.dropped_total = 0

    def offer(self, event: BusEvent) -> None:
        try:
            self._send.send_nowait(event)
        except anyio.WouldBlock:
            self.dropped_total += 1
            if self._overflow is None:
                self._overflow = Overflow(1, event.seq, event.seq)
            else:
                self._overflow.dropped += 1
                self._overflow.last_seq = event.seq
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass

    def take_overflow(self) -> Overflow | None:
        """What was dropped since the last call (None: nothing)."""
        overflow, self._overflow = self._overflow, None
        return overflow

    def close(self) -> None:
        self._send.close()

    def __aiter__(self) -> AsyncIterator[BusEvent]:
        return self.receive.__aiter__()


class EventBus:
    def __init__(self, store: EventStore | None, setting: Callable[[str], Any] = DEFAULTS.__getitem__) -> None:
        self.store = store
        self.setting = setting
        self.seq = store.last_seq_now() if store is not None else 0
        self._subs: dict[str, Subscription] = {}
        self._pending: list[tuple[int, str, str, str]] = []
        self._wake: anyio.Event | None = None
        self._loop_thread: int | None = None
        #: the loop's token, so threads that are not anyio's workers can publish too
        self._loop_token: Any = None
        self._since_prune = 0
        self.published = 0

    # ---- publishing --------------------------------------------------------------------------

    def publish(self, topic: str, payload: Any = None) -> int:
        """Publish now; returns the event's seq. Safe from worker threads too."""
        if _TOPIC.match(topic) is None:
            raise InvalidValue(f"{topic!r} is not a topic (dotted names of letters, digits, _ and -)",
                               "$.params.topic")
        if self._loop_thread is not None and threading.get_ident() != self._loop_thread:
            return anyio.from_thread.run_sync(  # type: ignore[no-any-return]
                self._publish, topic, payload, token=self._loop_token)
        return self._publish(topic, payload)

    def _publish(self, topic: str, payload: Any) -> int:
        try:
            text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str)
        except ValueError:
            text = "null"
            payload = None
        self.seq += 1
        event = BusEvent(seq=self.seq, topic=topic, payload=payload, time=now_iso())
        self.published += 1
        for sub in list(self._subs.values()):
            if sub.matches(topic):
                sub.offer(event)
        if self.store is not None:
            self._pending.append((event.seq, topic, text, event.time))
            if self._wake is not None:
                self._wake.set()
        return event.seq

    # ---- subscribing -------------------------------------------------------------------------

    def subscribe(self, patterns: list[str], buffer: int | None = None) -> Subscription:
        size = buffer or int(self.setting("events.subscriberBuffer"))
        sub = Subscription(uuid.uuid4().hex[:16], list(patterns), size)
        self._subs[sub.id] = sub
        return sub

    def unsubscribe(self, sub_id: str) -> bool:
        sub = self._subs.pop(sub_id, None)
        if sub is None:
            return False
        sub.close()
        return True

    def subscription(self, sub_id: str) -> Subscription:
        sub = self._subs.get(sub_id)
        if sub is None:
            raise NotFound(f"no subscription {sub_id}", subscriptionId=sub_id)
        return sub

    # ---- the log -----------------------------------------------------------------------------

    async def replay(self, after_seq: int, patterns: list[str], limit: int = 1000) -> tuple[list[BusEvent], bool]:
        """Logged events after `after_seq` on matching topics, oldest first; and whether more
        match after the last one returned."""
        if self.store is None:
            return [], False
        await self.flush()
        match = matcher(patterns)
        out: list[BusEvent] = []
        cursor = after_seq
        page = max(limit, 500)
        while True:
            rows = await self.store.after(cursor, page)
            for row in rows:
                if match(row.topic):
                    if len(out) == limit:
                        return out, True
                    out.append(BusEvent(seq=row.seq, topic=row.topic, payload=json.loads(row.payload),
                                        time=row.time))
            if len(rows) < page:
                return out, False
            cursor = rows[-1].seq

    async def flush(self) -> None:
        while self._pending:
            rows, self._pending = self._pending, []
            assert self.store is not None
            try:
                await self.store.append(rows)
            except anyio.get_cancelled_exc_class():
                self._pending = rows + self._pending
                raise
            except Exception:
                log.exception("the event log lost %d event(s)", len(rows))
            self._since_prune += len(rows)
        if self._since_prune >= PRUNE_EVERY:
            self._since_prune = 0
            await self.prune()

    async def prune(self) -> int:
        if self.store is None:
            return 0
        cutoff = datetime.now(UTC) - timedelta(days=int(self.setting("events.retainDays")))
        return await self.store.prune(int(self.setting("events.retainCount")),
                                      cutoff.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z")

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The log writer, for the life of the block; what is queued is written at the end."""
        self._loop_thread = threading.get_ident()
        self._loop_token = anyio.lowlevel.current_token()
        self._wake = anyio.Event()

        async def writer() -> None:
            assert self._wake is not None
            while True:
                await self._wake.wait()
                self._wake = anyio.Event()
                await self.flush()

        try:
            async with anyio.create_task_group() as tg:
                if self.store is not None:
                    await self.prune()
                    tg.start_soon(writer)
                try:
                    yield
                finally:
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                if self.store is not None:
                    await self.flush()
            for sub in list(self._subs.values()):
                sub.close()
            self._subs.clear()
            self._loop_thread = None
            self._loop_token = None
            self._wake = None


Deliver = Callable[[Subscription, "BusEvent | Overflow"], None]


class Delivery:
    """Subscriptions that a shell holds: a pump task per subscription hands its events to
    `deliver` (the notifier: `events/event`, and `events/overflow` once the buffer is
    drained after a drop)."""

    def __init__(self, bus: EventBus, deliver: Deliver) -> None:
        self.bus = bus
        self.deliver = deliver
        self._tg: Any = None

    def subscribe(self, patterns: list[str], buffer: int | None = None) -> tuple[Subscription, int]:
        if self._tg is None:
            raise RuntimeError("the event bus is not running")
        for pattern in patterns:
            compile_pattern(pattern)
        sub = self.bus.subscribe(patterns, buffer)
        self._tg.start_soon(self._pump, sub, name=f"events subscription {sub.id}")
        return sub, self.bus.seq

    async def _pump(self, sub: Subscription) -> None:
        async with sub.receive:
            async for event in sub.receive:
                self.deliver(sub, event)
                if sub.receive.statistics().current_buffer_used == 0:
                    overflow = sub.take_overflow()
                    if overflow is not None:
                        self.deliver(sub, overflow)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            try:
                yield
            finally:
                self._tg = None
                tg.cancel_scope.cancel()
