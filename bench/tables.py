"""Plain-text tables for the bench scripts (no dependency, aligned columns)."""

from __future__ import annotations

from collections.abc import Sequence


def render(header: Sequence[str], rows: Sequence[Sequence[str]], right_from: int = 1) -> str:
    """Columns from `right_from` on are right-aligned (numbers); the first ones left."""
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).rjust(w) if i >= right_from else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def number(value: float | None, digits: int = 0) -> str:
    """Thousands separators; '-' when not measured."""
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def ratio(value: float | None, other: float | None) -> str:
    if value is None or other is None or other == 0:
        return "-"
    return f"{value / other:.2f}x"
