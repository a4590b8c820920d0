"""Settings writes under load: one shared ordered lane (before) against named lanes (now).

    .venv/bin/python bench/lanes_bench.py --before /tmp/sidecar-before

The load: 63 `secrets/set` kept in flight, pipelined, while `settings/set` is timed one at a
time. With one lane for everything ordered, each settings write waits behind the secrets
queued before it; with named lanes it waits for nothing but its own lane. `--before` points at
another checkout (e.g. `git archive <rev> | tar -x -C DIR`) measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from wire import NDJSON, Wire

BENCH = Path(__file__).resolve().parent
IN_FLIGHT = 63
SAMPLES = 200
THROUGHPUT_REQUESTS = 2000


def _argv(checkout: str | None, data_dir: Path) -> list[str]:
    if checkout is None:
        return [sys.executable, "-m", "sidecar", "serve", "--data-dir", str(data_dir), "--secrets-backend", "file"]
    boot = f"import sys; sys.path.insert(0, {checkout!r}); from sidecar.cli.main import main; sys.exit(main())"
    return [sys.executable, "-c", boot, "serve", "--data-dir", str(data_dir), "--secrets-backend", "file"]


def measure(checkout: str | None) -> tuple[float, float, float]:
    """settings/set latency p50/p99 in ms under load, then secrets/set per second alone
    (2,000 pipelined, 64 in flight)."""
    with tempfile.TemporaryDirectory() as tmp:
        wire = Wire(_argv(checkout, Path(tmp) / "data"), NDJSON)
        try:
            wire.call("initialize", {"clientInfo": {"name": "lanes-bench"}})
            wire.call("secrets/set", {"name": "warm", "value": "x"})  # loads the key once
            outstanding: set[int] = set()
            sent = 0

            def top_up() -> None:
                nonlocal sent
                batch = b""
                while len(outstanding) < IN_FLIGHT:
                    request_id, data = wire.request_bytes("secrets/set", {"name": f"k{sent % 500}", "value": "v" * 64})
                    outstanding.add(request_id)
                    batch += data
                    sent += 1
                if batch:
                    wire.write(batch)

            latencies: list[float] = []
            for i in range(SAMPLES):
                top_up()
                request_id, data = wire.request_bytes("settings/set", {"key": "server.slowRequestMs",
                                                                      "value": 1000 + i % 7})
                t0 = time.perf_counter()
                wire.write(data)
                done = False
                while not done:
                    for response in wire.responses():
                        outstanding.discard(response.id)  # type: ignore[arg-type]
                        if response.id == request_id:
                            done = True
                latencies.append((time.perf_counter() - t0) * 1000)
            while outstanding:
                for response in wire.responses():
                    outstanding.discard(response.id)  # type: ignore[arg-type]
            latencies.sort()
            began = time.perf_counter()
            done = 0
            while done < THROUGHPUT_REQUESTS:
                top_up()
                for response in wire.responses():
                    outstanding.discard(response.id)  # type: ignore[arg-type]
                    done += 1
            rate = done / (time.perf_counter() - began)
            return (statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1], rate)
        finally:
            wire.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default=None, help="another checkout to measure side by side")
    args = parser.parse_args()
    rows = []
    if args.before:
        rows.append(("before (one ordered lane)", measure(str(Path(args.before).resolve()))))
    rows.append(("now (named lanes)", measure(None)))
    print(f"settings/set while {IN_FLIGHT} secrets/set are in flight, {SAMPLES} samples")
    print(f"{'server':28} {'p50 ms':>8} {'p99 ms':>8} {'secrets/s':>10}")
    for name, (p50, p99, rate) in rows:
        print(f"{name:28} {p50:8.2f} {p99:8.2f} {rate:10.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
