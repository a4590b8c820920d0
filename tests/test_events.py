"""The event bus, service level on a real database: topic wildcards, bounded subscriber
buffers with overflow reported, the durable log (seq kept across restarts, replay, retention),
publishing from worker threads, and the delivery pump behind events/subscribe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from protocol.events import BusEvent
from sidecar.errors import InvalidValue
from sidecar.events.service import DEFAULTS, Delivery, EventBus, Overflow, Subscription, compile_pattern
from sidecar.events.store import EventStore
from sidecar.store.database import Database

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(tmp_path / "db.sqlite")
    database.open()
    return database


def drain(sub: Subscription) -> list[BusEvent]:
    out = []
    while True:
        try:
            out.append(sub.receive.receive_nowait())
        except (anyio.WouldBlock, anyio.EndOfStream):
            return out


@pytest.mark.parametrize("pattern, topic, matches", [
    ("workflow.*", "workflow.run.finished", True),
    ("workflow.*", "workflow.step", True),
    ("workflow.*", "workflow", False),
    ("workflow.*", "workflows.run", False),
    ("workflow.*.finished", "workflow.run.finished", True),
    ("workflow.*.finished", "workflow.run.step.finished", False),
    ("scheduler.fired", "scheduler.fired", True),
    ("scheduler.fired", "scheduler.fired.late", False),
    ("*", "anything.at.all", True),
    ("*.error", "llm.error", True),
    ("*.error", "llm.provider.error", False),
])
def test_topic_patterns(pattern: str, topic: str, matches: bool) -> None:
    assert compile_pattern(pattern)(topic) is matches


def test_bad_topics_and_patterns_are_refused() -> None:
    bus = EventBus(None)
    for topic in ("", "a..b", "a.*", "has space"):
        with pytest.raises(InvalidValue):
            bus.publish(topic)
    with pytest.raises(InvalidValue):
        compile_pattern("a.**")


async def test_subscribers_get_matching_events_in_order(db: Database) -> None:
    bus = EventBus(EventStore(db))
    async with bus.running():
        wf = bus.subscribe(["workflow.*"])
        plugins = bus.subscribe(["plugins.reloaded", "scheduler.*"])
        for topic in ("workflow.run.started", "plugins.reloaded", "scheduler.fired", "workflow.run.finished", "other"):
            bus.publish(topic, {"t": topic})
        assert [e.topic for e in drain(wf)] == ["workflow.run.started", "workflow.run.finished"]
        got = drain(plugins)
        assert [(e.seq, e.topic, e.payload) for e in got] == [(2, "plugins.reloaded", {"t": "plugins.reloaded"}),
                                                              (3, "scheduler.fired", {"t": "scheduler.fired"})]
        assert bus.unsubscribe(wf.id) and not bus.unsubscribe(wf.id)
        bus.publish("workflow.x")
        with pytest.raises(anyio.EndOfStream):
            wf.receive.receive_nowait()


async def test_a_slow_subscriber_never_blocks_the_publisher_and_hears_of_the_overflow(db: Database) -> None:
    bus = EventBus(EventStore(db))
    async with bus.running():
        slow = bus.subscribe(["*"], buffer=3)
        fast = bus.subscribe(["*"], buffer=100)
        with anyio.fail_after(1):
            for i in range(10):
                bus.publish("tick", i)  # never waits
        assert [e.payload for e in drain(slow)] == [0, 1, 2]
        overflow = slow.take_overflow()
        assert overflow == Overflow(dropped=7, first_seq=4, last_seq=10)
        assert slow.take_overflow() is None
        assert len(drain(fast)) == 10
        # catching up by replay
        events, more = await bus.replay(overflow.first_seq - 1, ["tick"])
        assert [e.payload for e in events] == list(range(3, 10)) and not more


async def test_the_log_keeps_seq_across_restarts_and_replays_by_topic(db: Database) -> None:
    bus = EventBus(EventStore(db))
    async with bus.running():
        for i in range(5):
            bus.publish("a.x" if i % 2 else "b.y", {"i": i})
    again = EventBus(EventStore(db))  # a restart
    assert again.seq == 5
    async with again.running():
        assert again.publish("a.z") == 6
        events, more = await again.replay(0, ["a.*"], limit=2)
        assert [(e.seq, e.topic) for e in events] == [(2, "a.x"), (4, "a.x")] and more
        events, more = await again.replay(4, ["a.*"])
        assert [(e.seq, e.topic, e.payload) for e in events] == [(6, "a.z", None)] and not more


async def test_retention_by_count_and_age(db: Database) -> None:
    settings = dict(DEFAULTS, **{"events.retainCount": 5})
    bus = EventBus(EventStore(db), settings.__getitem__)
    async with bus.running():
        for i in range(12):
            bus.publish("n", i)
        await bus.flush()
        assert await bus.prune() == 7
        events, _ = await bus.replay(0, ["*"])
        assert [e.payload for e in events] == [7, 8, 9, 10, 11]
        settings["events.retainDays"] = 0  # anything older than now goes
        await anyio.sleep(0.01)
        await bus.prune()
        assert (await bus.replay(0, ["*"]))[0] == []


async def test_publishing_from_a_worker_thread(db: Database) -> None:
    bus = EventBus(EventStore(db))
    async with bus.running():
        sub = bus.subscribe(["thread.*"])
        seqs = await anyio.to_thread.run_sync(lambda: [bus.publish("thread.hello", i) for i in range(3)])
        assert seqs == [1, 2, 3]
        assert [e.payload for e in drain(sub)] == [0, 1, 2]


async def test_publishing_from_a_thread_of_our_own(db: Database) -> None:
    """Plugin calls and store writes run on sidecar's own threads (sidecar/handoff.py), not
    anyio's: publishing from there works too."""
    import threading

    bus = EventBus(EventStore(db))
    async with bus.running():
        sub = bus.subscribe(["own.*"])
        seqs: list[int] = []
        thread = threading.Thread(target=lambda: seqs.extend(bus.publish("own.hello", i) for i in range(2)))
        thread.start()
        await anyio.to_thread.run_sync(thread.join)
        assert seqs == [1, 2]
        assert [e.payload for e in drain(sub)] == [0, 1]


async def test_delivery_pumps_events_and_reports_overflow_after_the_backlog(db: Database) -> None:
    bus = EventBus(EventStore(db))
    delivered: list[Any] = []
    delivery = Delivery(bus, lambda sub, item: delivered.append(item))
    async with bus.running(), delivery.running():
        sub, last = delivery.subscribe(["x.*"], buffer=2)
        assert last == 0
        for i in range(5):
            bus.publish("x.y", i)  # no yield in between: the pump cannot keep up
        bus.publish("other")
        for _ in range(20):
            await anyio.sleep(0.01)
    assert [d.payload for d in delivered if isinstance(d, BusEvent)] == [0, 1]
    assert delivered[-1] == Overflow(dropped=3, first_seq=3, last_seq=5)


async def test_replay_after_a_seq_past_64_bits_is_empty(db: Database) -> None:
    # found by tests/test_params_fuzz.py: afterSeq 2**64 answered -32603 (it did not bind)
    bus = EventBus(EventStore(db))
    async with bus.running():
        bus.publish("a", 1)
        assert await bus.replay(2**64, ["*"]) == ([], False)
        assert await bus.replay(2**63 - 1, ["*"]) == ([], False)
