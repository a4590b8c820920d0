"""The benchmark scripts run and print their tables (figures are printed, never asserted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"


def run_script(*argv: str, timeout: float = 120) -> str:
    done = subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done.stdout


def table_row(output: str, label: str) -> list[str]:
    for line in output.splitlines():
        if line.startswith(label):
            return re.split(r"\s{2,}", line.strip())
    pytest.fail(f"no row {label!r} in:\n{output}")


def test_stdio_bench_quick_prints_floor_and_sidecar_side_by_side(tmp_path: Path) -> None:
    out = run_script(str(BENCH / "stdio_bench.py"), "--quick", "--only", "floor,sidecar",
                     "--json", str(tmp_path / "figures.json"))
    header = table_row(out, "figure")
    assert header[1:4] == ["floor", "sidecar", "sidecar/floor"]
    assert "mcp" not in header and "pygls" not in header  # --only is honoured
    for label in ("ping p50 (us)", "ping p99 (us)", "pipelined req/s", "start to initialize answered (ms)",
                  "idle RSS after initialize (MB)", "stream notifications/s", "slow reader: RSS growth (MB)"):
        row = table_row(out, label)
        assert row[-1] in ("PASS", "MISS"), row  # every targeted figure was measured for sidecar
    ping = table_row(out, "ping p50 (us)")
    assert re.fullmatch(r"[\d,]+", ping[1]) and re.fullmatch(r"[\d,]+", ping[2])  # both servers answered
    assert re.fullmatch(r"\d+\.\d\dx", ping[3])  # the ratio column
    assert '"sidecar"' in (tmp_path / "figures.json").read_text()


def test_stdio_bench_rejects_an_unknown_server() -> None:
    done = subprocess.run([sys.executable, str(BENCH / "stdio_bench.py"), "--quick", "--only", "nginx"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "unknown server" in done.stderr


def test_db_offload_quick_prints_every_mode_for_every_workload() -> None:
    out = run_script(str(BENCH / "db_offload.py"), "--quick")
    header = table_row(out, "workload")
    assert header[:4] == ["workload", "mode", "ops", "ops/s"]
    rows = [re.split(r"\s{2,}", line.strip()) for line in out.splitlines()
            if line.startswith(("write", "point read", "table scan"))]
    assert {(r[0], r[1]) for r in rows} == {
        (w, m) for w in ("write (1 INSERT/txn)", "point read", "table scan") for m in ("inline", "store", "fresh")}
