"""chat/send overheads against a bare httpx client reading the same fixture stream.

    .venv/bin/python bench/chat_bench.py [--runs 200] [--warmup 20] [--events 2000] [--event-runs 5] [--api-key]

The fixture server (tests/support/http_fixture.py) runs in a process of its own on 127.0.0.1,
so neither side shares an interpreter (or a GIL) with it. It stamps every request when it has
read it whole (`time.monotonic()`, the same system-wide clock as `perf_counter` here), which
splits each first-token time in two: *to request* (from the moment the reader starts until
the server has the request) and *to token* (from the server having the request, sending the
headers and the first delta at once, until the reader has that delta).

**First token, warm on both sides** (`--runs` runs after `--warmup`, p50/p99): a short Anthropic
stream whose first write holds `message_start` and the first text delta, the rest 5 ms later.
Bare and daemon runs are taken in turn (bare, daemon, bare, ...), so that both sides meet the
same moments of a busy machine (the bare reader runs on an event loop in a thread of its own).
- bare: ONE `httpx.AsyncClient` kept across runs (its keep-alive connection reused, as the
  daemon's shared client does), `client.stream` + `aiter_lines` + a JSON decode per `data:`
  line, timed from calling `stream` to decoding the first `content_block_delta`;
- daemon: the real daemon as a subprocess (`python -m sidecar serve`), driven over stdio with
  `sidecar.client.DaemonClient` as a shell would: `chat/send {message, tools: false}` (a new
  conversation each run), timed from writing the request to its stdin until the shell's reader
  has the first `chat/delta` `text_delta` line. *To request* is here the stdin hop, decoding,
  provider resolution (with `--api-key`, a secret store read), budget/prompt building and the
  HTTP send; *to token* is the provider's first byte through the adapter, the `chat/delta`
  encoding, the stdout write and the shell's read. The turn's rows are written after the
  request went out (sidecar/llm/chat.py `Turn._open`).

**Per event** (`--events` deltas, median of `--event-runs`, in process so that no pipe is
counted): bare (warm) vs `stream_chat` through the Anthropic adapter vs `chat/send` through the
real session over memory streams (tests/harness.py), every event encoded as a `chat/delta` and
written. Per-event overhead = (reader total − bare total) / N.

Figures (2 cores shared with other busy agents, measured while the machine was quiet; this
bench, default 200 runs after 20 warm-up, 3 runs each, before and after taken in turn; ms;
"added" = daemon − bare, p50 − p50 and p99 − p99):

    first token (no API key)          before: 3 runs           after: 3 runs
                                      p50       p99            p50       p99
    bare httpx: first delta           1.51 1.05 1.10  2.55 2.22 1.53   0.95 1.02 0.96  1.64 1.77 1.48
    daemon over stdio                 3.93 2.71 2.73  7.10 4.17 4.09   1.61 1.70 1.61  2.61 2.63 2.15
    added by the daemon               2.42 1.66 1.64  4.55 1.95 2.56   0.66 0.67 0.65  0.97 0.85 0.67
      of which to request (p50)       1.97 1.38 1.32                   0.31 0.32 0.32
    with --api-key: added             1.80 1.77 2.65  2.62 2.60 6.55   1.01 0.86 0.92  1.61 1.47 1.59

With 1000 runs after 50 (3 runs each, the machine busier): added p50 2.36 2.36 2.24 -> 0.90
1.18 0.80, p99 12.0 3.82 3.80 -> 2.64 1.99 1.55; with --api-key p50 2.12 2.37 2.25 -> 1.08 1.29
1.08, p99 3.58 3.65 3.85 -> 2.08 2.31 1.93. Per event, added vs bare: 2-6 µs either way (noise).

"before" (the previous commit): the provider row and the key read from the store before every
request (two worker-thread reads), a new TCP connection for every call (the adapters stopped
reading at the model's stop, so httpx closed the unread body's connection: with a real provider
a TLS handshake before every first token), and three opening writes (three writer-thread hops)
racing the request as it was sent. "after": provider rows cached in ProvidersService (kept up
to date by configure/delete), the body read to its end after the stop (bounded, `drain`) so the
connection is kept, the opening rows in one transaction (ProjectsService.open_turn) that starts once
the request is on the wire and the first token relayed, or 50 ms after the request went out
(a real model's first token comes later than that, so its rows still precede it). Left before
the request: the stdin hop and dispatch, budget/prompt building and httpx's request set-up
(~0.3 ms over bare at p50), plus, with a key, its secret store read (~0.3 ms: a worker-thread
read, not cached because secrets/set can change it behind the provider's back); after the first
byte, ~0.3 ms (adapter, `chat/delta`, stdout, the shell's read).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import anyio
import httpx
from anyio.from_thread import start_blocking_portal

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from protocol.llm import TextDelta  # noqa: E402
from protocol.projects import TextPart  # noqa: E402
from sidecar.client import DaemonClient  # noqa: E402
from sidecar.llm.providers import adapter_for  # noqa: E402
from sidecar.llm.providers.base import ChatRequest, Message, ProviderConfig, RetryPolicy, stream_chat  # noqa: E402
from tests.support.http_fixture import Chunk, HttpFixtureServer, Response  # noqa: E402

#: seconds between the first delta and the rest (so that the first read holds only the first)
GAP = 0.02
#: the same for the short first-token stream
FIRST_GAP = 0.005
#: the short stream's deltas (first-token runs)
SHORT = 8


def stream_body(n: int) -> bytes:
    out = [b'event: message_start\ndata: {"type":"message_start","message":{"model":"bench","usage":'
           b'{"input_tokens":10,"output_tokens":1}}}\n\n']
    delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "token "}}
    line = b"event: content_block_delta\ndata: " + json.dumps(delta).encode() + b"\n\n"
    out += [line] * n
    out.append(b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
               b'"usage":{"output_tokens":%d}}\n\n' % n)
    out.append(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    return b"".join(out)


def first_delta_split(body: bytes, gap: float) -> Response:
    """The first delta in its own write (with message_start), as a model's first token comes."""
    cut = body.index(b"event: content_block_delta", body.index(b"content_block_delta") + 1)
    return Response(200, {"content-type": "text/event-stream"}, [body[:cut], Chunk(body[cut:], gap)])


# ---- the fixture server, in its own process --------------------------------------------------

def serve_fixture(conn: Connection, events: int) -> None:
    """Routes `/v1/messages` (short stream) and `/long/v1/messages` (`events` deltas); answers
    "requests" with [(path, received_at)] for every request so far, "stop" ends."""
    with HttpFixtureServer() as server:
        server.route("POST", "/v1/messages", first_delta_split(stream_body(SHORT), FIRST_GAP))
        server.route("POST", "/bare/v1/messages", first_delta_split(stream_body(SHORT), FIRST_GAP))
        server.route("POST", "/long/v1/messages", first_delta_split(stream_body(events), GAP))
        conn.send(server.url)
        while True:
            command = conn.recv()
            if command == "requests":
                conn.send([(r.path, r.received_at) for r in server.requests])
            else:
                break


class Fixture:
    def __init__(self, events: int) -> None:
        ctx = multiprocessing.get_context("fork")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=serve_fixture, args=(child, events), daemon=True)
        self._proc.start()
        self.url: str = self._conn.recv()

    def requests(self) -> list[tuple[str, float]]:
        self._conn.send("requests")
        return self._conn.recv()  # type: ignore[no-any-return]

    def close(self) -> None:
        self._conn.send("stop")
        self._proc.join(5)


# ---- first token -----------------------------------------------------------------------------

#: one run: (t0, first delta seen) in perf_counter seconds
Run = tuple[float, float]


async def bare_client() -> httpx.AsyncClient:
    return httpx.AsyncClient()


async def bare_once(client: httpx.AsyncClient, url: str) -> Run:
    t0 = time.perf_counter()
    first = 0.0
    async with client.stream("POST", url + "/bare/v1/messages", json={"stream": True}) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                data = json.loads(line[6:])
                if not first and data.get("type") == "content_block_delta":
                    first = time.perf_counter()
    return t0, first


def first_token(url: str, runs: int, data_dir: Path, api_key: bool = False) -> tuple[list[Run], list[Run],
                                                                                      list[float]]:
    """Bare and daemon runs taken in turn (bare, daemon, bare...), so that both sides meet the
    same moments of a busy machine; the daemon's own `firstTokenMs` of each run too."""
    first: list[float] = [0.0]

    def on_message(payload: bytes) -> None:
        if not first[0] and b'"text_delta"' in payload:
            first[0] = time.perf_counter()

    argv = [sys.executable, "-m", "sidecar", "serve", "--data-dir", str(data_dir), "--secrets-backend", "file"]
    bare: list[Run] = []
    daemon: list[Run] = []
    reported: list[float] = []
    with DaemonClient(argv, on_message=on_message) as client, start_blocking_portal() as portal:
        client.initialize("chat-bench")
        provider = {"id": "b", "kind": "anthropic", "model": "bench", "baseUrl": url}
        if api_key:  # read from the secret store for every request, as a configured key is
            provider["apiKey"] = "sk-ant-bench-0123456789"
        client.request("providers/configure", provider)
        reader = portal.call(bare_client)
        try:
            for _ in range(runs):
                bare.append(portal.call(bare_once, reader, url))
                request_id = client.next_id()
                waiter = client.expect(request_id)
                first[0] = 0.0
                message = {"jsonrpc": "2.0", "id": request_id, "method": "chat/send",
                           "params": {"message": "hi", "tools": False}}
                t0 = time.perf_counter()
                client.send(message)
                response = client.wait(request_id, waiter)
                if "error" in response:
                    raise RuntimeError(response["error"])
                daemon.append((t0, first[0]))
                reported.append(response["result"]["firstTokenMs"])
        finally:
            portal.call(reader.aclose)
    return bare, daemon, reported


def split(runs: list[Run], received: list[float]) -> dict[str, list[float]]:
    """ms: total, to request (t0 -> server has it), to token (server has it -> delta seen)."""
    assert len(runs) == len(received), (len(runs), len(received))
    return {"first": [(f - t0) * 1e3 for t0, f in runs],
            "to request": [(r - t0) * 1e3 for (t0, _f), r in zip(runs, received, strict=True)],
            "to token": [(f - r) * 1e3 for (_t0, f), r in zip(runs, received, strict=True)]}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# ---- per event (in process) --------------------------------------------------------------------

async def bare_total(url: str, runs: int) -> list[float]:
    out = []
    async with httpx.AsyncClient() as client:
        for _ in range(runs + 1):  # the first opens the connection
            t0 = time.perf_counter()
            async with client.stream("POST", url + "/long/v1/messages", json={"stream": True}) as response:
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        json.loads(line[6:])
            out.append(time.perf_counter() - t0)
    return out[1:]


async def adapter_total(url: str, runs: int) -> list[float]:
    config = ProviderConfig(id="b", kind="anthropic", base_url=url + "/long", model="bench")
    request = ChatRequest(model="bench", messages=[Message("user", [TextPart("hi")])])
    out = []
    async with httpx.AsyncClient() as client:
        for _ in range(runs + 1):
            t0 = time.perf_counter()
            async for event in stream_chat(client, adapter_for("anthropic"), config, "k", request, RetryPolicy(0)):
                if type(event) is TextDelta:
                    pass
            out.append(time.perf_counter() - t0)
    return out[1:]


async def daemon_total(url: str, runs: int) -> list[float]:
    from tests.harness import in_process

    out: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        async with in_process(Path(tmp) / "d") as d:
            await d.call("providers/configure", {"id": "b", "kind": "anthropic", "model": "bench",
                                                 "baseUrl": url + "/long"})
            done = anyio.Event()
            last_write = 0.0

            async def sink(data: bytes) -> None:  # a shell's pipe does not decode for it
                nonlocal last_write
                last_write = time.perf_counter()
                if b'"result"' in data:
                    done.set()

            d.write = sink  # type: ignore[method-assign]
            for _ in range(runs + 1):
                done = anyio.Event()
                t0 = time.perf_counter()
                d.send({"jsonrpc": "2.0", "id": 1, "method": "chat/send", "params": {"message": "hi", "tools": False}})
                await done.wait()
                out.append(last_write - t0)
    return out[1:]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200, help="first-token runs per side")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--events", type=int, default=2000, help="deltas of the per-event stream")
    parser.add_argument("--event-runs", type=int, default=5)
    parser.add_argument("--api-key", action="store_true", help="configure the daemon's provider with an API key")
    args = parser.parse_args()
    fixture = Fixture(args.events)
    try:
        total = args.warmup + args.runs
        with tempfile.TemporaryDirectory() as tmp:
            bare_runs, daemon_runs, reported = first_token(fixture.url, total, Path(tmp) / "data", args.api_key)
        received = fixture.requests()
        bare_received = [at for path, at in received if path == "/bare/v1/messages"]
        daemon_received = [at for path, at in received if path == "/v1/messages"]
        per_event = {"bare": bare_total, "adapter": adapter_total, "daemon": daemon_total}
        totals = {name: statistics.median(anyio.run(fn, fixture.url, args.event_runs))
                  for name, fn in per_event.items()}
    finally:
        fixture.close()

    w = args.warmup
    bare = split(bare_runs[w:], bare_received[w:])
    daemon = split(daemon_runs[w:], daemon_received[w:])
    print(f"first token, both sides warm: {args.runs} runs after {w} warm-up, ms")
    print(f"{'':34} {'p50':>7} {'p99':>7}")
    rows = [("bare httpx: first delta", bare["first"]),
            ("  to request (server has it)", bare["to request"]),
            ("  server has it -> delta read", bare["to token"]),
            ("daemon over stdio: first chat/delta", daemon["first"]),
            ("  to request (server has it)", daemon["to request"]),
            ("  server has it -> delta read", daemon["to token"]),
            ("  firstTokenMs (daemon's own)", reported[w:])]
    for name, values in rows:
        print(f"{name:34} {pct(values, .5):7.3f} {pct(values, .99):7.3f}")
    print(f"{'added by the daemon (p50 − p50)':34} {pct(daemon['first'], .5) - pct(bare['first'], .5):7.3f} "
          f"{pct(daemon['first'], .99) - pct(bare['first'], .99):7.3f}")
    print(f"{'  of which to request':34} {pct(daemon['to request'], .5) - pct(bare['to request'], .5):7.3f}")
    print(f"{'  of which to token':34} {pct(daemon['to token'], .5) - pct(bare['to token'], .5):7.3f}")
    n = args.events
    print(f"\nper event: {n} text deltas, median of {args.event_runs} runs, in process "
          f"(totals include a {GAP * 1e3:g} ms gap after the first delta)")
    print(f"{'reader':8} {'total ms':>10} {'+µs/event vs bare':>18}")
    for name, value in totals.items():
        print(f"{name:8} {value * 1e3:10.2f} {(value - totals['bare']) / n * 1e6:18.2f}")


if __name__ == "__main__":
    main()
