"""system/* (issue point 10): ping, health, metrics (and their Prometheus form), info; and a
start-up that stays lazy about heavy imports."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from protocol import PROTOCOL_VERSION
from sidecar import __version__
from sidecar.client import DaemonClient
from sidecar.store import migrations
from sidecar.system.metrics import BUCKETS_MS, Metrics, MethodStats
from tests.conftest import serve_argv

LATEST_SCHEMA = len(migrations.discover(migrations.default_migrations_dir()))


def test_ping(daemon: DaemonClient) -> None:
    assert daemon.request("system/ping") == {"pong": True}
    assert daemon.request("system/ping", {}) == {"pong": True}


def test_health(daemon: DaemonClient) -> None:
    health = daemon.request("system/health")
    assert health["status"] == "ok"
    assert health["db"]["ok"] is True and health["db"]["schemaVersion"] == LATEST_SCHEMA
    assert health["db"]["latencyMs"] >= 0
    assert health["uptimeSeconds"] > 0
    assert health["activeRequests"] == 0 and health["queuedRequests"] == 0  # not counting itself
    later = daemon.request("system/health")
    assert later["uptimeSeconds"] >= health["uptimeSeconds"]


def test_health_counts_active_requests(daemon: DaemonClient) -> None:
    waiters = {i: daemon.expect(i) for i in (50, 51)}
    for i in waiters:
        daemon.send({"jsonrpc": "2.0", "id": i, "method": "debug/sleep", "params": {"seconds": 60}})
    # the sleeps were sent first and start in arrival order: both are running by now
    assert daemon.request("system/health")["activeRequests"] == 2
    for i in waiters:
        daemon.notify("$/cancelRequest", {"id": i})
        assert daemon.wait(i, waiters[i])["error"]["code"] == -32800
    assert daemon.request("system/health")["activeRequests"] == 0


def test_health_counts_queued_requests(spawn: Callable[..., DaemonClient]) -> None:
    client = spawn("--max-concurrency", "2")
    waiters = {i: client.expect(i) for i in (60, 61, 62, 63)}

    def send(i: int, method: str, params: dict | None = None) -> None:
        client.send({"jsonrpc": "2.0", "id": i, "method": method, **({"params": params} if params else {})})

    send(60, "debug/sleep", {"seconds": 60})
    send(61, "debug/sleep", {"seconds": 60})  # both slots taken
    send(62, "system/health")  # waits for a slot, first in line
    send(63, "debug/sleep", {"seconds": 60})  # waits behind it
    client.notify("$/cancelRequest", {"id": 60})  # frees the slot health takes
    health = client.wait(62, waiters.pop(62))["result"]
    assert health["activeRequests"] == 1 and health["queuedRequests"] == 1  # 61 runs, 63 waits
    for i in (61, 63):
        client.notify("$/cancelRequest", {"id": i})
    for i, waiter in waiters.items():
        assert client.wait(i, waiter)["error"]["code"] == -32800


def _method(metrics: dict, name: str) -> dict:
    return next(m for m in metrics["methods"] if m["method"] == name)


def test_metrics(daemon: DaemonClient) -> None:
    for _ in range(20):
        daemon.request("system/ping")
    daemon.call("debug/fail")
    daemon.call("debug/fail")
    daemon.call("no/such")
    daemon.call("settings/set", {"key": "server.slowRequestMs", "value": "wrong"})
    waiter = daemon.expect(77)
    daemon.send({"jsonrpc": "2.0", "id": 77, "method": "debug/sleep", "params": {"seconds": 60}})
    daemon.notify("$/cancelRequest", {"id": 77})
    assert daemon.wait(77, waiter)["error"]["code"] == -32800

    metrics = daemon.request("system/metrics")
    assert "prometheus" not in metrics
    ping = _method(metrics, "system/ping")
    assert ping["count"] == 20 and ping["errors"] == 0 and ping["cancelled"] == 0
    fail = _method(metrics, "debug/fail")
    assert fail["count"] == 2 and fail["errors"] == 2
    assert _method(metrics, "settings/set")["errors"] == 1
    assert _method(metrics, "(unknown)")["errors"] == 1
    sleep = _method(metrics, "debug/sleep")
    assert sleep["count"] == 1 and sleep["cancelled"] == 1 and sleep["errors"] == 0
    assert metrics["requests"] == sum(m["count"] for m in metrics["methods"])
    assert metrics["errors"] == sum(m["errors"] for m in metrics["methods"])

    for m in metrics["methods"]:
        counts = [b["count"] for b in m["buckets"]]
        assert counts == sorted(counts), "buckets are cumulative"
        assert counts[-1] == m["count"]
        assert [b["le"] for b in m["buckets"]] == [*BUCKETS_MS, 1e308]
        assert 0 < m["p50Ms"] <= m["p99Ms"]
        assert m["latencySumMs"] >= 0
    assert ping["p99Ms"] in [*BUCKETS_MS, 1e308]  # a bucket's upper bound, as Prometheus estimates


PROM_SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
                         r'(,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*")*\})? '
                         r'(-?[0-9.eE+-]+|\+Inf|-Inf|NaN)$')


def parse_prometheus(text: str) -> dict[str, float]:
    samples: dict[str, float] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+$", line), line
            continue
        assert PROM_SAMPLE.match(line), line
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    return samples


def test_metrics_prometheus_text(daemon: DaemonClient) -> None:
    for _ in range(5):
        daemon.request("system/ping")
    daemon.call("debug/fail")
    daemon.call('we"ird\\name')  # label escaping
    text = daemon.request("system/metrics", {"prometheus": True})["prometheus"]
    samples = parse_prometheus(text)
    assert samples['sidecar_requests_total{method="system/ping",outcome="ok"}'] == 5
    assert samples['sidecar_requests_total{method="debug/fail",outcome="error"}'] == 1
    assert samples['sidecar_request_duration_ms_bucket{method="system/ping",le="+Inf"}'] == 5
    assert samples['sidecar_request_duration_ms_count{method="system/ping"}'] == 5
    # the unknown method is counted under one label, whatever its name
    assert samples['sidecar_requests_total{method="(unknown)",outcome="error"}'] == 1
    buckets = [v for k, v in samples.items() if k.startswith('sidecar_request_duration_ms_bucket{method="system/ping"')]
    assert buckets == sorted(buckets) and len(buckets) == len(BUCKETS_MS) + 1


def test_info(daemon: DaemonClient, data_dir: Path) -> None:
    info = daemon.request("system/info")
    assert info["dataDir"] == str(data_dir)
    assert Path(info["databasePath"]).exists() and Path(info["logPath"]).exists()
    assert info["process"]["pid"] == daemon.proc.pid
    assert info["process"]["parentPid"] == os.getpid()
    assert info["process"]["rssBytes"] > 1 << 20
    assert info["process"]["threads"] >= 1
    assert info["process"]["cpuUserSeconds"] + info["process"]["cpuSystemSeconds"] > 0
    versions = info["versions"]
    assert versions["sidecar"] == __version__ and versions["protocol"] == PROTOCOL_VERSION
    assert all(isinstance(v, str) and v and v != "unknown" for v in versions.values())
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$", info["startedAt"])
    assert info["uptimeSeconds"] > 0


# ---- Metrics in-process ---------------------------------------------------------------------


@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), min_size=1, max_size=200))
def test_histogram_and_quantiles(seconds: list[float]) -> None:
    metrics = Metrics(slow_request_ms=float("inf"))
    for s in seconds:
        metrics.observe("m", s, "ok")
    stats = metrics.methods["m"]
    assert stats.count == len(seconds) == sum(stats.buckets)
    ms = sorted(s * 1000 for s in seconds)
    cumulative = _cumulative(stats)
    for q in (0.5, 0.9, 0.99):
        rank = q * len(ms)
        true = next(x for i, x in enumerate(ms, 1) if i >= rank)
        estimate = stats.quantile(q)
        assert estimate >= true  # the upper bound of the bucket that holds it...
        if estimate in BUCKETS_MS:
            below = BUCKETS_MS.index(estimate) - 1
            assert below < 0 or cumulative[below] < rank  # ...and not a bucket above that
        assert estimate <= stats.quantile(min(1.0, q + 0.05))
    for bound, count in zip(BUCKETS_MS, cumulative):
        assert count == sum(1 for x in ms if x <= bound)


def _cumulative(stats: MethodStats) -> list[int]:
    out, total = [], 0
    for n in stats.buckets:
        total += n
        out.append(total)
    return out


def test_empty_stats_quantile_is_zero() -> None:
    assert MethodStats().quantile(0.5) == 0.0


# ---- lazy start-up --------------------------------------------------------------------------

HEAVY = ("keyring", "cryptography", "jsonschema", "jsonrpcserver", "http.server", "httpx", "yaml", "wasmtime",
         "asyncpg", "aiomysql", "aioboto3", "pyttsx3", "pywhispercpp", "faster_whisper", "mcp", "dulwich")


def test_start_up_stays_lazy(data_dir: Path) -> None:
    """Serving initialize and ping loads none of the heavy modules (seen with -X importtime)."""
    argv = serve_argv(data_dir)
    argv.insert(1, "-X")
    argv.insert(2, "importtime")
    proc = subprocess.run(
        argv, capture_output=True, timeout=60,
        input=b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}\n'
              b'{"jsonrpc":"2.0","id":2,"method":"system/ping"}\n'
              b'{"jsonrpc":"2.0","id":3,"method":"system/health"}\n'
              b'{"jsonrpc":"2.0","id":4,"method":"settings/list"}\n')
    assert proc.returncode == 0
    assert proc.stdout.count(b'"result"') == 4
    imported = {line.split("|")[-1].strip() for line in proc.stderr.decode().splitlines()
                if line.startswith("import time:")}
    assert "sidecar.app" in imported  # the probe sees our own imports
    assert "sidecar.server.session" in imported
    loaded = sorted(m for m in imported if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert loaded == []


def test_secrets_load_their_modules_on_first_use(data_dir: Path) -> None:
    """The other half of laziness: the modules do load when a secret is touched."""
    argv = serve_argv(data_dir)
    argv[1:1] = ["-X", "importtime"]
    proc = subprocess.run(
        argv, capture_output=True, timeout=60,
        input=b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}\n'
              b'{"jsonrpc":"2.0","id":2,"method":"secrets/set","params":{"name":"a","value":"b"}}\n')
    imported = {line.split("|")[-1].strip() for line in proc.stderr.decode().splitlines()
                if line.startswith("import time:")}
    assert any(m.startswith("cryptography") for m in imported)
