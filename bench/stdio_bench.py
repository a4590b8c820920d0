"""sidecar over stdio, side by side with the floor and its peers, in one run.

    python bench/stdio_bench.py                 # all four servers, full counts (~45 s)
    python bench/stdio_bench.py --quick         # tiny counts, one spawn each
    python bench/stdio_bench.py --only floor,sidecar --json out.json

Servers, each a child process on stdin/stdout pipes, driven by the same client
(`wire.py`: raw fds and msgspec); only the framing and the handshake differ:

  floor    bench/peers/echo_server.py: blocking fd reads/writes, msgspec, answers everything
  sidecar  python -m sidecar serve, `system/ping` after `initialize`
  mcp      bench/peers/mcp_server.py: the MCP Python SDK's low-level Server on its stdio
           transport, MCP's `ping` after the `initialize` handshake
  pygls    bench/peers/pygls_server.py: a pygls LanguageServer (Content-Length framing),
           a custom `sidecar/ping` request after `initialize`

Figures: sequential round-trip latency (p50/p99) and rate; pipelined throughput with 64
requests in flight; spawn-to-`initialize`-answered time (median); RSS after initialize;
for sidecar also notifications/s from `system/stream` with the daemon's peak RSS, and the
same stream with a client that stops reading for a while (memory must stay bounded).
The targets from issue 2 are printed beside sidecar's figures (printed, never asserted).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import psutil

import tables
from wire import CONTENT_LENGTH, NDJSON, Wire

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
MB = 1 << 20
DEPTH = 64  # requests in flight in the pipelined run
# Every ping carries `"params": {}`: pygls 2.1 never answers a request without params.


@dataclass(frozen=True)
class Counts:
    warmup: int
    sequential: int
    pipelined: int
    pipelined_budget_s: float  # slow peers stop early; the rate is still over what was sent
    spawns: int
    stream_count: int
    stream_chunk: int
    slow_count: int
    slow_chunk: int
    slow_pause_s: float


FULL = Counts(warmup=300, sequential=2000, pipelined=20000, pipelined_budget_s=8.0, spawns=5,
              stream_count=200_000, stream_chunk=16, slow_count=60_000, slow_chunk=1024,
              slow_pause_s=2.0)
QUICK = Counts(warmup=30, sequential=200, pipelined=2000, pipelined_budget_s=2.0, spawns=1,
               stream_count=20_000, stream_chunk=16, slow_count=12_000, slow_chunk=1024,
               slow_pause_s=0.5)


@dataclass(frozen=True)
class Server:
    name: str
    argv: Callable[[Path], list[str]]  # given a private scratch directory
    framing: str
    init_params: dict[str, Any]
    initialized: str | None  # the notification that completes the handshake
    ping: str
    note: str


def _python(*args: str) -> list[str]:
    return [sys.executable, *args]


def _sidecar_from(checkout: str) -> Callable[[Path], list[str]]:
    """sidecar from another checkout (e.g. the previous commit, `git archive REV | tar -x`):
    the same daemon before a change, measured in the same run as after it."""
    boot = (f"import sys; sys.path.insert(0, {checkout!r}); "
            "from sidecar.cli.main import main; sys.exit(main())")
    return lambda d: _python("-c", boot, "serve", "--data-dir", str(d / "before"), "--secrets-backend", "file")


SERVERS: dict[str, Server] = {s.name: s for s in (
    Server("floor", lambda d: _python(str(BENCH / "peers" / "echo_server.py")), NDJSON,
           {}, None, "ping", "raw pipe echo (msgspec, blocking fds)"),
    Server("sidecar", lambda d: _python("-m", "sidecar", "serve", "--data-dir", str(d / "data"),
                                        "--secrets-backend", "file"), NDJSON,
           {"clientInfo": {"name": "bench", "version": "0"}}, "initialized", "system/ping",
           "python -m sidecar serve"),
    Server("mcp", lambda d: _python(str(BENCH / "peers" / "mcp_server.py")), NDJSON,
           {"protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "bench", "version": "0"}},
           "notifications/initialized", "ping", "MCP Python SDK low-level Server, stdio"),
    Server("pygls", lambda d: _python(str(BENCH / "peers" / "pygls_server.py")), CONTENT_LENGTH,
           {"processId": None, "rootUri": None, "capabilities": {}}, "initialized",
           "sidecar/ping", "pygls LanguageServer, Content-Length"),
)}


@dataclass
class Result:
    server: str
    start_ms: list[float] = field(default_factory=list)
    idle_rss_mb: float | None = None
    loaded_rss_mb: float | None = None
    p50_us: float | None = None
    p99_us: float | None = None
    seq_rps: float | None = None
    pipe_rps: float | None = None
    pipe_requests: int | None = None
    stream_nps: float | None = None
    stream_peak_mb: float | None = None
    slow_peak_mb: float | None = None
    slow_backlog_mb: float | None = None
    error: str | None = None

    @property
    def start_median_ms(self) -> float | None:
        return statistics.median(self.start_ms) if self.start_ms else None


class RssSampler:
    """Samples a process's RSS every few ms on a thread; `peak` is the largest seen."""

    def __init__(self, pid: int, interval: float = 0.005) -> None:
        self._process = psutil.Process(pid)
        self._interval = interval
        self._stop = threading.Event()
        self.peak = self._rss()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _rss(self) -> int:
        try:
            return self._process.memory_info().rss
        except psutil.Error:
            return 0

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


# ---- one server --------------------------------------------------------------------


def child_env(pycache: Path) -> dict[str, str]:
    """Bytecode cached as an installed package would have it, for every server alike.

    An editable checkout under PYTHONDONTWRITEBYTECODE=1 would recompile sidecar's own
    modules at every start (about 50 ms here) while the peers load cached bytecode from
    site-packages. A private PYTHONPYCACHEPREFIX, filled by the unmeasured first spawn,
    puts every server on the same footing without writing into the source tree.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def spawn(server: Server, scratch: Path) -> Wire:
    return Wire(server.argv(scratch), server.framing, cwd=REPO, env=child_env(scratch / "pycache"))


def handshake(wire: Wire, server: Server) -> float:
    """initialize (+ its notification); returns spawn-to-answer milliseconds."""
    wire.call("initialize", server.init_params)
    answered = time.perf_counter()
    if server.initialized is not None:
        wire.write(wire.notification_bytes(server.initialized, {}))
    return (answered - wire.started) * 1000


def measure_start(server: Server, scratch: Path, spawns: int, result: Result) -> None:
    # one unmeasured spawn first: warms the OS page cache, fills the bytecode cache, and
    # lets sidecar create its database, so every server is timed on a warm start (the
    # everyday case)
    for i in range(spawns + 1):
        wire = spawn(server, scratch)
        try:
            elapsed = handshake(wire, server)
        finally:
            wire.close()
        if i:
            result.start_ms.append(elapsed)


def measure_sequential(wire: Wire, server: Server, counts: Counts, result: Result) -> None:
    for _ in range(counts.warmup):
        wire.call(server.ping, {})
    samples = []
    clock = time.perf_counter_ns
    began = clock()
    for _ in range(counts.sequential):
        request_id, data = wire.request_bytes(server.ping, {})
        t0 = clock()
        wire.write(data)
        wire.wait_for(request_id)
        samples.append(clock() - t0)
    elapsed = (clock() - began) / 1e9
    samples.sort()
    result.p50_us = samples[len(samples) // 2] / 1000
    result.p99_us = samples[min(len(samples) - 1, int(len(samples) * 0.99))] / 1000
    result.seq_rps = len(samples) / elapsed


def measure_pipelined(wire: Wire, server: Server, counts: Counts, result: Result) -> None:
    """Keep DEPTH requests in flight: every answer read lets one more request go out."""
    deadline = time.perf_counter() + counts.pipelined_budget_s
    total = counts.pipelined

    def batch(n: int) -> bytes:
        return b"".join(wire.request_bytes(server.ping, {})[1] for _ in range(n))

    began = time.perf_counter()
    sent = min(DEPTH, total)
    received = 0
    wire.write(batch(sent))
    while received < sent:
        answered = sum(1 for _ in wire.responses())
        received += answered
        more = min(answered, total - sent)
        if more > 0 and time.perf_counter() < deadline:
            wire.write(batch(more))
            sent += more
    result.pipe_rps = received / (time.perf_counter() - began)
    result.pipe_requests = received


def measure_stream(wire: Wire, counts: Counts, result: Result) -> None:
    """system/stream read as fast as we can: notifications/s and the daemon's peak RSS."""
    wire.notifications = 0
    params = {"count": counts.stream_count, "chunkBytes": counts.stream_chunk}
    with RssSampler(wire.pid) as rss:
        began = time.perf_counter()
        wire.call("system/stream", params)
        elapsed = time.perf_counter() - began
    if wire.notifications != counts.stream_count:
        raise RuntimeError(f"expected {counts.stream_count} notifications, got {wire.notifications}")
    result.stream_nps = counts.stream_count / elapsed
    result.stream_peak_mb = rss.peak / MB


def measure_slow_reader(wire: Wire, counts: Counts, result: Result) -> None:
    """system/stream while the client does not read for a while: the backlog must stay
    in the daemon's bounded outbox (and the pipe), not grow its memory."""
    wire.notifications = 0
    params = {"count": counts.slow_count, "chunkBytes": counts.slow_chunk}
    request_id, data = wire.request_bytes("system/stream", params)
    with RssSampler(wire.pid) as rss:
        wire.write(data)
        time.sleep(counts.slow_pause_s)
        wire.wait_for(request_id)
    if wire.notifications != counts.slow_count:
        raise RuntimeError(f"expected {counts.slow_count} notifications, got {wire.notifications}")
    result.slow_peak_mb = rss.peak / MB
    # the size of one notification on the wire, times the count: what an unbounded
    # queue would have had to hold
    one = len(msgspec.json.encode({"jsonrpc": "2.0", "method": "system/streamChunk", "params": {
        "requestId": request_id, "seq": counts.slow_count, "data": "x" * counts.slow_chunk}})) + 1
    result.slow_backlog_mb = one * counts.slow_count / MB


class Stuck(Exception):
    """A server stopped answering: the bench moves on instead of hanging."""


def _stuck(signum: int, frame: object) -> None:
    raise Stuck("no progress within the time limit")


def run_server(server: Server, counts: Counts, time_limit_s: int) -> Result:
    result = Result(server.name)
    with tempfile.TemporaryDirectory(prefix=f"bench-{server.name}-") as tmp:
        scratch = Path(tmp)
        if hasattr(signal, "SIGALRM"):  # a blocked os.read is interrupted and raises Stuck
            signal.signal(signal.SIGALRM, _stuck)
            signal.alarm(time_limit_s)
        try:
            measure_start(server, scratch, counts.spawns, result)
            wire = spawn(server, scratch)
            try:
                handshake(wire, server)
                wire.call(server.ping, {})  # the first call may import lazily: count it as idle
                time.sleep(0.2)
                result.idle_rss_mb = psutil.Process(wire.pid).memory_info().rss / MB
                measure_sequential(wire, server, counts, result)
                measure_pipelined(wire, server, counts, result)
                if server.name in ("sidecar", "before"):
                    measure_stream(wire, counts, result)
                    measure_slow_reader(wire, counts, result)
                result.loaded_rss_mb = psutil.Process(wire.pid).memory_info().rss / MB
            finally:
                wire.close()
        except Exception as exc:  # noqa: BLE001 - one server failing must not hide the others
            result.error = f"{type(exc).__name__}: {exc}"
        finally:
            if hasattr(signal, "SIGALRM"):
                signal.alarm(0)
    return result


# ---- the table ---------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    label: str
    value: Callable[[Result], float | None]
    digits: int
    target: str = ""
    meets: Callable[[float], bool] | None = None
    sidecar_only: bool = False


def _bounded(result: Result) -> float | None:
    """RSS growth while a slow reader left the stream's output unread."""
    if result.slow_peak_mb is None or result.idle_rss_mb is None:
        return None
    return result.slow_peak_mb - result.idle_rss_mb


ROWS = (
    Row("ping p50 (us)", lambda r: r.p50_us, 0, "<= 150", lambda v: v <= 150),
    Row("ping p99 (us)", lambda r: r.p99_us, 0, "<= 400", lambda v: v <= 400),
    Row("sequential req/s", lambda r: r.seq_rps, 0),
    Row(f"pipelined req/s ({DEPTH} in flight)", lambda r: r.pipe_rps, 0, ">= 30,000", lambda v: v >= 30_000),
    Row("start to initialize answered (ms)", lambda r: r.start_median_ms, 1, "< 150", lambda v: v < 150),
    Row("idle RSS after initialize (MB)", lambda r: r.idle_rss_mb, 1, "< 60", lambda v: v < 60),
    Row("RSS after the runs (MB)", lambda r: r.loaded_rss_mb, 1),
    Row("stream notifications/s", lambda r: r.stream_nps, 0, ">= 100,000", lambda v: v >= 100_000, True),
    Row("stream peak RSS (MB)", lambda r: r.stream_peak_mb, 1, sidecar_only=True),
    Row("slow reader: unread output (MB)", lambda r: r.slow_backlog_mb, 1, sidecar_only=True),
    Row("slow reader: peak RSS (MB)", lambda r: r.slow_peak_mb, 1, sidecar_only=True),
    Row("slow reader: RSS growth (MB)", _bounded, 1, "bounded (< 48)", lambda v: v < 48, True),
)


def render(results: dict[str, Result]) -> str:
    names = list(results)
    peers = [n for n in ("floor", "mcp", "pygls") if n in results and "sidecar" in results]
    header = ["figure", *names, *(f"sidecar/{p}" for p in peers), "target", "sidecar"]
    rows = []
    for row in ROWS:
        if row.sidecar_only and "sidecar" not in results:
            continue
        values = {n: row.value(r) for n, r in results.items()}
        cells = [row.label, *(tables.number(values[n], row.digits) for n in names)]
        cells += [tables.ratio(values["sidecar"], values[p]) if not row.sidecar_only else "-" for p in peers]
        verdict = "-"
        mine = values.get("sidecar")
        if row.meets is not None and mine is not None:
            verdict = "PASS" if row.meets(mine) else "MISS"
        cells += [row.target or "-", verdict]
        rows.append(cells)
    return tables.render(header, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny counts and one spawn (a smoke run)")
    parser.add_argument("--only", default=",".join(SERVERS), help="comma-separated: " + ",".join(SERVERS))
    parser.add_argument("--json", type=Path, default=None, help="also write the raw figures here")
    parser.add_argument("--before", default=None, metavar="CHECKOUT",
                        help="also measure sidecar from this other checkout, as server 'before'")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    if args.before:
        base = SERVERS["sidecar"]
        SERVERS["before"] = Server("before", _sidecar_from(str(Path(args.before).resolve())), base.framing,
                                   base.init_params, base.initialized, base.ping, f"sidecar from {args.before}")
        names.insert(names.index("sidecar") if "sidecar" in names else len(names), "before")
    unknown = [n for n in names if n not in SERVERS]
    if unknown:
        parser.error(f"unknown server(s): {', '.join(unknown)}")
    counts = QUICK if args.quick else FULL

    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    print(f"stdio bench: python {sys.version.split()[0]}, {os.cpu_count()} cpus, "
          f"load average {load[0]:.2f} at start, {'quick' if args.quick else 'full'} counts "
          f"(sequential {counts.sequential}, pipelined {counts.pipelined} at {DEPTH} in flight, "
          f"{counts.spawns} timed spawns)", flush=True)
    results: dict[str, Result] = {}
    for name in names:
        server = SERVERS[name]
        print(f"  {name:8} {server.note} ...", end=" ", flush=True)
        began = time.perf_counter()
        results[name] = run_server(server, counts, 60 if args.quick else 300)
        outcome = results[name].error or "ok"
        print(f"{outcome} ({time.perf_counter() - began:.1f} s)", flush=True)
    print()
    print(render(results))
    notes = []
    for r in results.values():
        if r.pipe_requests is not None and r.pipe_requests < counts.pipelined:
            notes.append(f"{r.server}: pipelined run stopped after {r.pipe_requests} requests "
                         f"({counts.pipelined_budget_s:.0f} s budget)")
    for note in notes:
        print(f"note: {note}")
    if args.json is not None:
        args.json.write_bytes(msgspec.json.encode(results))  # msgspec encodes dataclasses
    failed = [r for r in results.values() if r.error]
    for r in failed:
        print(f"error: {r.server}: {r.error}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
