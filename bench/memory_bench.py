"""RSS after big messages: does the daemon give the memory back once they are gone?

    .venv/bin/python bench/memory_bench.py [--before CHECKOUT]

Each daemon gets 30 lines of 1-10 MB (settings/set with a huge value, refused as invalid
params), then 2,000 pings; RSS is read at start, at its peak, and 1 s after the last answer.
Measured side by side with (--before) the daemon from another checkout. An earlier version
also called glibc's `malloc_trim` after big messages: it made no difference (37.1 MB settled
with and without it, same run), so it went; what brings RSS back is that params stay raw
bytes until decoded into their Struct and the read buffer is let go after a big line.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import psutil
from wire import NDJSON, ServerError, Wire

MB = 1 << 20
SIZES = [1 + (i * 7) % 10 for i in range(30)]  # 1..10 MB, mixed


def _argv(checkout: str | None, data_dir: Path) -> list[str]:
    path = f"sys.path.insert(0, {checkout!r}); " if checkout else ""
    boot = f"import sys; {path}from sidecar.cli.main import main; sys.exit(main())"
    return [sys.executable, "-c", boot, "serve", "--data-dir", str(data_dir), "--secrets-backend", "file"]


def measure(checkout: str | None) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        wire = Wire(_argv(checkout, Path(tmp) / "data"), NDJSON)
        try:
            wire.call("initialize", {"clientInfo": {"name": "memory-bench"}})
            proc = psutil.Process(wire.proc.pid)
            start = proc.memory_info().rss / MB
            peak = start
            for size in SIZES:
                try:
                    wire.call("settings/set", {"key": "log.level", "value": "x" * (size * MB)})
                except ServerError:
                    pass  # refused as invalid params, as intended
                peak = max(peak, proc.memory_info().rss / MB)
            for _ in range(2000):
                wire.call("system/ping", {})
            time.sleep(1.0)
            return start, peak, proc.memory_info().rss / MB
        finally:
            wire.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default=None, help="another checkout to measure side by side")
    args = parser.parse_args()
    rows = [("now", measure(None))]
    if args.before:
        rows.append((f"before ({args.before})", measure(str(Path(args.before).resolve()))))
    print(f"RSS in MB around {len(SIZES)} big lines ({sum(SIZES)} MB in all), then 2,000 pings")
    print(f"{'daemon':34} {'start':>7} {'peak':>7} {'settled':>8}")
    for name, (start, peak, settled) in rows:
        print(f"{name:34} {start:7.1f} {peak:7.1f} {settled:8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
