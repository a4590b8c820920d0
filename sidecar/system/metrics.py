"""Request counts, error counts and latency histograms per method; Prometheus text too."""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass, field

#: bucket upper bounds in milliseconds (the last, +Inf, is implicit)
BUCKETS_MS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)


@dataclass(slots=True)
class MethodStats:
    count: int = 0
    errors: int = 0
    cancelled: int = 0
    sum_ms: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS_MS) + 1))

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound in ms, requests at or below it), as Prometheus buckets; the last is +Inf."""
        pairs = []
        total = 0
        for bound, n in zip((*BUCKETS_MS, float("inf")), self.buckets):
            total += n
            pairs.append((float(bound), total))
        return pairs

    def quantile(self, q: float) -> float:
        """Upper bound of the bucket holding the q-quantile (as Prometheus estimates it)."""
        if not self.count:
            return 0.0
        rank = q * self.count
        seen = 0
        for i, n in enumerate(self.buckets):
            seen += n
            if seen >= rank:
                return BUCKETS_MS[i] if i < len(BUCKETS_MS) else float("inf")
        return float("inf")


log = logging.getLogger("sidecar.metrics")


class Metrics:
    def __init__(self, slow_request_ms: float = 1000.0) -> None:
        self.methods: dict[str, MethodStats] = {}
        self.slow_request_ms = slow_request_ms

    def observe(self, method: str, seconds: float, outcome: str) -> None:
        stats = self.methods.get(method)
        if stats is None:
            stats = self.methods[method] = MethodStats()
        ms = seconds * 1000.0
        if ms >= self.slow_request_ms:
            log.warning("slow request: %s took %.0f ms (%s)", method, ms, outcome)
        elif log.isEnabledFor(logging.DEBUG):  # one cached check per request when off
            log.debug("%s answered in %.3f ms (%s)", method, ms, outcome)
        stats.count += 1
        stats.sum_ms += ms
        stats.buckets[bisect.bisect_left(BUCKETS_MS, ms)] += 1
        if outcome == "error":
            stats.errors += 1
        elif outcome == "cancelled":
            stats.cancelled += 1

    def totals(self) -> tuple[int, int]:
        return (sum(s.count for s in self.methods.values()), sum(s.errors for s in self.methods.values()))

    def prometheus(self) -> str:
        lines = [
            "# HELP sidecar_requests_total Requests answered, by method and outcome.",
            "# TYPE sidecar_requests_total counter",
        ]
        for method, s in sorted(self.methods.items()):
            ok = s.count - s.errors - s.cancelled
            for outcome, n in (("ok", ok), ("error", s.errors), ("cancelled", s.cancelled)):
                lines.append(f'sidecar_requests_total{{method="{_label(method)}",outcome="{outcome}"}} {n}')
        lines += [
            "# HELP sidecar_request_duration_ms Request latency in milliseconds.",
            "# TYPE sidecar_request_duration_ms histogram",
        ]
        for method, s in sorted(self.methods.items()):
            label = _label(method)
            for bound, cumulative in s.cumulative():
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                lines.append(f'sidecar_request_duration_ms_bucket{{method="{label}",le="{le}"}} {cumulative}')
            lines.append(f'sidecar_request_duration_ms_sum{{method="{label}"}} {s.sum_ms:.6f}')
            lines.append(f'sidecar_request_duration_ms_count{{method="{label}"}} {s.count}')
        return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
