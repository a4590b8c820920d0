"""Workflow engine overhead per step: a 100-step chain and a 100-wide fan-out of `set` steps,
run by the durable engine (SQLite journal, run log, templates), side by side with the same
DAG as plain anyio code (tasks and events, no engine, no database).

    .venv/bin/python bench/workflows_bench.py [--rounds 20]

Prints the median and p90 wall time per run and per step; the target is < 1 ms per step.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sidecar.store.database import Database  # noqa: E402
from sidecar.toolsource import ToolRegistry  # noqa: E402
from sidecar.workflows.service import WorkflowService  # noqa: E402
from sidecar.workflows.steps import StepServices  # noqa: E402

N = 100


def chain_doc() -> dict[str, Any]:
    steps = [{"id": "s0", "kind": "set", "inputs": {"value": 0}}]
    steps += [{"id": f"s{i}", "kind": "set", "inputs": {"value": f"{{{{steps.s{i - 1}.output.value + 1}}}}"}}
              for i in range(1, N)]
    return {"id": "chain", "steps": steps, "outputs": {"last": f"{{{{steps.s{N - 1}.output.value}}}}"}}


def fanout_doc() -> dict[str, Any]:
    steps = [{"id": "root", "kind": "set", "inputs": {"value": 1}}]
    steps += [{"id": f"b{i}", "kind": "set", "inputs": {"value": f"{{{{steps.root.output.value + {i}}}}}"}}
              for i in range(N)]
    steps.append({"id": "join", "kind": "set", "needs": [f"b{i}" for i in range(N)], "inputs": {"value": "done"}})
    return {"id": "fanout", "steps": steps, "outputs": {"v": "{{steps.join.output.value}}"}}


async def plain_chain() -> int:
    results: dict[str, int] = {}

    async def step(i: int) -> None:
        results[f"s{i}"] = 0 if i == 0 else results[f"s{i - 1}"] + 1

    for i in range(N):  # each step its own task, started when the previous one is done
        async with anyio.create_task_group() as tg:
            tg.start_soon(step, i)
    return results[f"s{N - 1}"]


async def plain_fanout() -> str:
    results: dict[str, Any] = {"root": 1}
    done = [anyio.Event() for _ in range(N)]

    async def branch(i: int) -> None:
        results[f"b{i}"] = results["root"] + i
        done[i].set()

    async with anyio.create_task_group() as tg:
        for i in range(N):
            tg.start_soon(branch, i)
        for event in done:
            await event.wait()
    results["join"] = "done"
    return results["join"]


async def measure(rounds: int) -> None:
    tmp = Path(tempfile.mkdtemp())
    db = Database(tmp / "bench.db")
    db.open()
    service = WorkflowService(db, StepServices(tools=ToolRegistry(), file_roots=lambda: [tmp]))
    rows: list[tuple[str, list[float], int]] = []
    async with service.running():
        for name, doc, steps in (("chain", chain_doc(), N), ("fan-out", fanout_doc(), N + 2)):
            await service.run_workflow(workflow=doc)  # warm up (template cache, threads)
            times = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                result = await service.run_workflow(workflow=doc)
                times.append(time.perf_counter() - t0)
                assert result.status == "succeeded", result.error
            rows.append((f"engine {name}", times, steps))
    for name, fn, steps in (("plain anyio chain", plain_chain, N), ("plain anyio fan-out", plain_fanout, N + 2)):
        await fn()
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            await fn()
            times.append(time.perf_counter() - t0)
        rows.append((name, times, steps))
    db.close()
    print(f"{'':24} {'median ms':>10} {'p90 ms':>10} {'µs/step (median)':>18}")
    for name, times, steps in rows:
        times.sort()
        med = statistics.median(times)
        p90 = times[int(len(times) * 0.9) - 1]
        print(f"{name:24} {med * 1000:10.2f} {p90 * 1000:10.2f} {med / steps * 1e6:18.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    anyio.run(measure, args.rounds)


if __name__ == "__main__":
    main()
