"""chat/send overheads against a bare httpx client reading the same fixture stream.

    .venv/bin/python bench/chat_bench.py [--events 2000] [--runs 5]

The fixture server (tests/support/http_fixture.py) on 127.0.0.1 serves an Anthropic SSE stream
of N text deltas. Three readers, each timed from sending the request:
- bare: httpx `client.stream` + `aiter_lines` + a JSON decode per `data:` line (the floor);
- adapter: `stream_chat` through the Anthropic adapter (our SSE parser, normalised events);
- daemon: `chat/send` through the real session in process (tests/harness.py): provider
  resolution, agent-less turn, conversation and message writes, every event encoded as a
  `chat/delta` notification and written to the session's output.
Per-event overhead = (reader total - bare total) / N; first-token overhead = the reader's time
to its first text event - bare's. Median of --runs runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from protocol.llm import TextDelta  # noqa: E402
from protocol.projects import TextPart  # noqa: E402
from sidecar.llm.providers import adapter_for  # noqa: E402
from sidecar.llm.providers.base import ChatRequest, Message, ProviderConfig, RetryPolicy, stream_chat  # noqa: E402
from tests.support.http_fixture import Chunk, HttpFixtureServer, Response  # noqa: E402

#: seconds between the first delta and the rest (so that the first read holds only the first)
GAP = 0.02


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


async def bare(url: str) -> tuple[float, float, int]:
    async with httpx.AsyncClient() as client:
        t0 = time.perf_counter()
        first = None
        count = 0
        async with client.stream("POST", url + "/v1/messages", json={"stream": True}) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    data = json.loads(line[6:])
                    if data.get("type") == "content_block_delta":
                        count += 1
                        if first is None:
                            first = time.perf_counter() - t0
        return time.perf_counter() - t0, first or 0.0, count


async def adapter(url: str) -> tuple[float, float, int]:
    config = ProviderConfig(id="b", kind="anthropic", base_url=url, model="bench")
    request = ChatRequest(model="bench", messages=[Message("user", [TextPart("hi")])])
    async with httpx.AsyncClient() as client:
        t0 = time.perf_counter()
        first = None
        count = 0
        async for event in stream_chat(client, adapter_for("anthropic"), config, "k", request, RetryPolicy(0)):
            if type(event) is TextDelta:
                count += 1
                if first is None:
                    first = time.perf_counter() - t0
        return time.perf_counter() - t0, first or 0.0, count


async def daemon(url: str, runs: int) -> list[tuple[float, float, int]]:
    from tests.harness import in_process

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        async with in_process(Path(tmp) / "d") as d:
            # the harness decodes what the session writes, for its tests; a shell's pipe does not
            async def sink(data: bytes) -> None:
                nonlocal last_write
                last_write = time.perf_counter()
                if first_mark[0] is None and b'"text_delta"' in data:
                    first_mark[0] = last_write

            last_write = 0.0
            await d.call("providers/configure", {"id": "b", "kind": "anthropic", "model": "bench", "baseUrl": url})
            d.write = sink  # type: ignore[method-assign]
            for _ in range(runs):
                first_mark: list[float | None] = [None]
                t0 = time.perf_counter()
                d.send({"jsonrpc": "2.0", "id": 1, "method": "chat/send", "params": {"message": "hi", "tools": False}})
                while True:
                    await anyio.sleep(0.001)
                    if last_write and time.perf_counter() - last_write > 0.05 and first_mark[0]:
                        break
                out.append((last_write - t0, (first_mark[0] or t0) - t0, 0))
                last_write = 0.0
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with HttpFixtureServer() as server:
        body = stream_body(args.events)
        # the first delta in its own write, as a model's first token comes; the rest in bulk
        cut = body.index(b"event: content_block_delta", body.index(b"content_block_delta") + 1)
        server.route("POST", "/v1/messages", Response(200, {"content-type": "text/event-stream"},
                                                      [body[:cut], Chunk(body[cut:], GAP)]))
        results: dict[str, list[tuple[float, float, int]]] = {"bare": [], "adapter": []}
        for _ in range(args.runs):
            results["bare"].append(anyio.run(bare, server.url))
            results["adapter"].append(anyio.run(adapter, server.url))
        results["daemon"] = anyio.run(daemon, server.url, args.runs)
    med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v)) for k, v in results.items()}
    n = args.events
    print(f"{n} text deltas, {len(body)} bytes, median of {args.runs} runs (totals include a {GAP * 1e3:g} ms gap "
          "after the first delta)")
    print(f"{'reader':8} {'total ms':>10} {'first ms':>10} {'per event µs':>13} {'+µs/event vs bare':>18} "
          f"{'+ms first vs bare':>18}")
    for name, (total, first) in med.items():
        print(f"{name:8} {total * 1e3:10.2f} {first * 1e3:10.3f} {total / n * 1e6:13.2f} "
              f"{(total - med['bare'][0]) / n * 1e6:18.2f} {(first - med['bare'][1]) * 1e3:18.3f}")


if __name__ == "__main__":
    main()
