"""Bad input gets a clear error and nothing is lost.

Hypothesis drives ONE long-lived daemon per framing with arbitrary bytes, truncated JSON,
wrong types, huge and odd ids, duplicate ids, notifications sent with ids and batches mixing
all of these. After every example a sentinel `system/ping` must be answered, and then:
- every request with a usable id got exactly one response, of the expected kind;
- every message on stdout was a well-formed JSON-RPC response (with `error.data.kind` when
  an error) or notification, and no stray byte reached it (the client's `garbage` is empty);
- the daemon is still running.

Also generated: invalid UTF-8 inside strings and keys, JSON nested past msgspec's limit
(both once crashed the daemon), bad ids (floats, booleans, objects), `$/cancelRequest` of
a running request. In ndjson framing, junk may contain newlines and so split into several messages; we count
only responses to ids we chose (which junk cannot produce) plus the sentinel.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.client import DaemonClient
from sidecar.server.framing import CONTENT_LENGTH, NDJSON, frame
from tests.conftest import serve_argv

TIMEOUT = 20
_epochs = itertools.count()

Check = Callable[[dict[str, Any]], bool]


def key(request_id: Any) -> tuple[str, Any]:
    return (type(request_id).__name__, request_id)


class IdTag:
    """A request id of some shape, made concrete (and unique to its example) only when sent:
    strategies must draw the same data on every run, so they cannot count."""

    __slots__ = ("shape",)

    def __init__(self, shape: str) -> None:
        self.shape = shape


class Ids:
    """Concrete ids for one example's tags: the same tag gets the same id (duplicates)."""

    def __init__(self) -> None:
        self.epoch = next(_epochs)
        self._ids: dict[int, Any] = {}
        self._tags: list[IdTag] = []  # keeps the tags alive, so their id() stays unique

    def __call__(self, tag: Any) -> Any:
        if not isinstance(tag, IdTag):
            raise NotImplementedError(type(tag))
        if id(tag) not in self._ids:
            self._tags.append(tag)
            n = self.epoch * 1000 + len(self._ids)
            self._ids[id(tag)] = {
                "int": 10**12 + n,
                "huge": 10**30 + n,
                "negative": -(10**25) - n,
                "text": f"req-{n}",
                "long": f"{n}-" + "x" * 5000,
                "unicode": f"é\u2028\U0001f600-{n}",
            }[tag.shape]
        return self._ids[id(tag)]


@dataclass
class Part:
    """One message (or batch) to send, and the responses it must cause."""

    value: Any = None  # a JSON value to encode; None when `raw` is used
    raw: bytes | None = None
    expect: list[tuple[IdTag, Check]] = field(default_factory=list)

    def payload(self, ids: Ids) -> bytes:
        return self.raw if self.raw is not None else msgspec.json.encode(self.value, enc_hook=ids)


# ---- what a request can be -------------------------------------------------------

def ok(response: dict[str, Any]) -> bool:
    return "result" in response


def code(*codes: int) -> Check:
    return lambda response: "error" in response and response["error"]["code"] in codes


REQUESTS: list[tuple[str, Any, Check]] = [
    ("system/ping", None, lambda r: r.get("result") == {"pong": True}),
    ("system/ping", {}, ok),
    ("debug/sleep", {"seconds": 0}, ok),
    ("debug/sleep", {"seconds": 0.001}, ok),
    ("settings/get", {"key": "server.slowRequestMs"}, ok),
    ("settings/get", {"key": "no.suchKey"}, code(-32001)),
    ("system/stream", {"count": 3, "chunkBytes": 4}, ok),
    ("debug/print", {"text": "stray \n output {\"jsonrpc\":\"2.0\"}"}, ok),
    ("debug/fail", None, code(-32603)),
    ("no/such/method", {"a": [1]}, code(-32601)),
    ("debug/sleep", {"seconds": "soon"}, code(-32602)),
    ("debug/spawn", {"argv": [1]}, code(-32602)),
    ("system/ping", [], code(-32602)),
    ("system/ping", [1, 2], code(-32602)),
    ("initialize", {}, code(-32600)),  # already initialized
    # notifications sent as requests: not run, answered -32601
    ("initialized", None, code(-32601)),
    ("$/cancelRequest", {"id": 1}, code(-32601)),
    ("exit", None, code(-32601)),
]

NOTIFICATIONS: list[tuple[str, Any]] = [
    ("system/ping", None), ("debug/sleep", {"seconds": 0}), ("no/such", {}), ("initialized", None),
    ("$/cancelRequest", {"id": "nobody"}), ("$/cancelRequest", {"id": [1]}), ("system/stream", {"count": 2}),
    ("debug/sleep", {"seconds": "bad"}),
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


#: a fresh id no junk can produce: odd shapes included (huge ints, long or unicode text)
request_ids = st.sampled_from(["int", "huge", "negative", "text", "long", "unicode"]).map(IdTag)


def message(request_id: Any, method: str, params: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": request_id}
    if params is not None:
        out["params"] = params
    return out


@st.composite
def well_formed(draw: st.DrawFn) -> tuple[dict[str, Any], tuple[Any, Check]]:
    method, params, check = draw(st.sampled_from(REQUESTS))
    request_id = draw(request_ids)
    return message(request_id, method, params), (request_id, check)


@st.composite
def notification(draw: st.DrawFn) -> dict[str, Any]:
    method, params = draw(st.sampled_from(NOTIFICATIONS))
    out: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        out["params"] = params
    return out


@st.composite
def invalid_with_id(draw: st.DrawFn) -> tuple[dict[str, Any], tuple[Any, Check]]:
    """Not a valid request, but with an id we can answer to: -32600 with that id."""
    request_id = draw(request_ids)
    broken = draw(st.sampled_from([
        {"jsonrpc": "1.0", "method": "system/ping"},
        {"method": "system/ping"},
        {"jsonrpc": "2.0", "method": 42},
        {"jsonrpc": "2.0"},
        {"jsonrpc": "2.0", "method": "system/ping", "params": "text"},
        {"jsonrpc": 2, "method": None, "params": 3},
    ]))
    return {**broken, "id": request_id}, (request_id, code(-32600))


bad_ids = st.sampled_from([1.5, 2.0, -0.0, 1e300, True, False, {"a": 1}, [1]])


@st.composite
def parts(draw: st.DrawFn, framing: str) -> Part:
    kind = draw(st.sampled_from(["request", "notification", "invalid", "bad_id", "junk", "truncated",
                                 "json", "deep", "bad_utf8", "duplicate", "cancelled", "batch"]))
    if kind == "request":
        value, expect = draw(well_formed())
        return Part(value, expect=[expect])
    if kind == "notification":
        return Part(draw(notification()))
    if kind == "invalid":
        value, expect = draw(invalid_with_id())
        return Part(value, expect=[expect])
    if kind == "bad_id":
        return Part({"jsonrpc": "2.0", "id": draw(bad_ids), "method": "system/ping"})
    if kind == "junk":  # in ndjson it may hold newlines; in content-length it is one framed message
        return Part(raw=draw(st.binary(min_size=1, max_size=300)))
    if kind == "truncated":
        value, _ = draw(well_formed())
        encoded = msgspec.json.encode(value, enc_hook=lambda tag: "x" * 20)
        return Part(raw=encoded[:draw(st.integers(1, len(encoded) - 1))])
    if kind == "json":
        return Part(draw(json_values))
    if kind == "bad_utf8":  # invalid UTF-8 inside a JSON string of an otherwise good request
        value, _ = draw(well_formed())
        encoded = msgspec.json.encode(value, enc_hook=lambda tag: "an-id")
        bad = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80", b"\xf4\x90\x80\x80"]))
        at = draw(st.sampled_from([i for i, c in enumerate(encoded) if c == ord('"')]))
        return Part(raw=encoded[:at + 1] + bad + encoded[at + 1:])
    if kind == "deep":  # past msgspec's nesting limit, alone or as a request's params
        depth = draw(st.sampled_from([2_000, 50_000]))
        nested = b"[" * depth + b"]" * depth
        return Part(raw=draw(st.sampled_from([nested, b'{"jsonrpc":"2.0","id":1,"method":"x","params":' + nested + b"}"])))
    if kind == "duplicate":
        value, (request_id, check) = draw(well_formed())
        return Part([value, value], expect=[(request_id, check), (request_id, check)])
    if kind == "cancelled":
        request_id = draw(request_ids)
        return Part([message(request_id, "debug/sleep", {"seconds": 30}),
                     {"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": request_id}}],
                    expect=[(request_id, code(-32800))])
    # a batch mixing everything
    elements: list[Any] = []
    expect: list[tuple[Any, Check]] = []
    for _ in range(draw(st.integers(0, 6))):
        sub = draw(st.sampled_from(["request", "notification", "invalid", "bad_id", "json"]))
        if sub == "request":
            value, exp = draw(well_formed())
            expect.append(exp)
        elif sub == "invalid":
            value, exp = draw(invalid_with_id())
            expect.append(exp)
        elif sub == "notification":
            value = draw(notification())
        elif sub == "bad_id":
            value = {"jsonrpc": "2.0", "id": draw(bad_ids), "method": "system/ping"}
        else:
            value = draw(json_values)
        elements.append(value)
    return Part(elements, expect=expect)


# ---- the daemon under test ------------------------------------------------------


class Harness:
    def __init__(self, data_dir: Path, framing: str) -> None:
        self.framing = framing
        self.counts: Counter[tuple[str, Any]] = Counter()
        self.responses: dict[tuple[str, Any], list[dict[str, Any]]] = {}
        self.malformed: list[Any] = []
        self.cond = threading.Condition()
        self.client = DaemonClient(serve_argv(data_dir), framing=framing, on_message=self._on_message)
        if framing == CONTENT_LENGTH:
            self.client.send_bytes(msgspec.json.encode(message(0, "initialize", {})))
            with self.cond:
                assert self.cond.wait_for(lambda: self.counts[key(0)] == 1, TIMEOUT)
        else:
            self.client.initialize("fuzz")

    def _on_message(self, payload: bytes) -> None:
        decoded = msgspec.json.decode(payload)
        with self.cond:
            for item in decoded if isinstance(decoded, list) else [decoded]:
                if not _well_formed(item):
                    self.malformed.append(item)
                elif "method" not in item:
                    self.counts[key(item["id"])] += 1
                    self.responses.setdefault(key(item["id"]), []).append(item)
            self.cond.notify_all()

    def send(self, part: Part, ids: Ids) -> None:
        payload = part.payload(ids)
        if self.framing == CONTENT_LENGTH:
            self.client.send_bytes(frame(payload, CONTENT_LENGTH), raw=True)
        else:
            self.client.send_bytes(payload + b"\n", raw=True)

    def wait_for(self, predicate: Callable[[], bool]) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, TIMEOUT)


def _well_formed(item: Any) -> bool:
    if not isinstance(item, dict) or item.get("jsonrpc") != "2.0":
        return False
    if "method" in item:  # a notification from the daemon
        return isinstance(item["method"], str) and "id" not in item
    if "id" not in item or ("result" in item) == ("error" in item):
        return False
    if "error" in item:
        error = item["error"]
        return (isinstance(error.get("code"), int) and isinstance(error.get("message"), str)
                and isinstance((error.get("data") or {}).get("kind"), str))
    return True


@pytest.fixture(scope="module", params=[NDJSON, CONTENT_LENGTH])
def harness(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    data_dir = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    h = Harness(data_dir, request.param)
    yield h
    assert h.client.proc.poll() is None, "the daemon died during the fuzz run"
    assert h.client.shutdown() == 0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_bad_input_gets_errors_and_nothing_is_lost(harness: Harness, data: st.DataObject) -> None:
    example = data.draw(st.lists(parts(harness.framing), min_size=1, max_size=8))
    ids = Ids()
    expected: Counter[tuple[str, Any]] = Counter()
    checks: dict[tuple[str, Any], Check] = {}
    for part in example:
        harness.send(part, ids)
        for tag, check in part.expect:
            expected[key(ids(tag))] += 1
            checks[key(ids(tag))] = check
    sentinel = f"sentinel-{ids.epoch}"
    harness.send(Part(message(sentinel, "system/ping", None)), ids)
    assert harness.wait_for(lambda: harness.counts[key(sentinel)] == 1), "the sentinel was not answered"
    assert harness.wait_for(lambda: all(harness.counts[k] >= n for k, n in expected.items())), \
        f"missing responses: {[k for k, n in expected.items() if harness.counts[k] < n]}"
    with harness.cond:
        for k, n in expected.items():
            assert harness.counts[k] == n, f"{k}: {harness.counts[k]} responses, expected {n}"
            for response in harness.responses[k]:
                assert checks[k](response), response
        assert harness.malformed == []
    assert harness.client.garbage == []
    while not harness.client.notifications.empty():  # streamChunk and friends: not asserted here
        harness.client.notifications.get_nowait()
    assert harness.client.proc.poll() is None
