"""Printing benchmark results as a table (shared by the scripts in bench/)."""

from __future__ import annotations

import platform
from collections.abc import Sequence

import psutil


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print a Markdown table with a title line naming the machine."""
    machine = (
        f"{platform.processor() or platform.machine()}, {psutil.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"\n### {title}\n\n_{machine}_\n")
    cells = [[str(c) for c in header]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for i, row in enumerate(cells):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if value >= 100 else f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
