"""py-stats: a process plugin in Python (runtime = "process"; see ../README.md).

Reads line-delimited JSON-RPC requests on stdin, answers each on stdout. Only the standard
library; the working directory is the plugin's data dir."""

from __future__ import annotations

import json
import statistics
import sys
from typing import Any


def describe(numbers: list[float]) -> dict[str, Any]:
    if not numbers:
        raise ValueError("numbers is empty")
    out: dict[str, Any] = {"count": len(numbers), "min": min(numbers), "max": max(numbers),
                           "mean": statistics.fmean(numbers), "median": statistics.median(numbers)}
    if len(numbers) > 1:
        out["stdev"] = statistics.stdev(numbers)
    return out


def histogram(numbers: list[float], bins: int) -> dict[str, Any]:
    low, high = min(numbers), max(numbers)
    width = (high - low) / bins or 1
    counts = [0] * bins
    for x in numbers:
        counts[min(int((x - low) / width), bins - 1)] += 1
    return {"low": low, "width": width, "counts": counts}


TOOLS = {
    "describe": lambda args: describe(args["numbers"]),
    "histogram": lambda args: histogram(args["numbers"], int(args.get("bins", 10))),
}


def main() -> None:
    print("py-stats ready", file=sys.stderr, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if "id" not in request:  # a notification ($/cancelRequest): our calls are instant
            continue
        params = request.get("params") or {}
        try:
            result = TOOLS[params["tool"]](params.get("input") or {})
            answer = {"jsonrpc": "2.0", "id": request["id"], "result": result}
        except Exception as exc:  # noqa: BLE001 - every failure is answered
            answer = {"jsonrpc": "2.0", "id": request["id"], "error": {"code": -32000, "message": str(exc)}}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
