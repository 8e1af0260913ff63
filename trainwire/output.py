"""Rows for people and for programs: the one renderer of every table the ``trainwire`` command prints.

``--format`` (:func:`format_option`) picks one of :data:`FORMATS`:

- ``table`` (the default): aligned columns under a dashed header line, numbers right-aligned,
  cells longer than :data:`MAX_CELL` characters cut with ``…`` and line breaks shown as ``↵``.
  A table wider than the output switches to ``vertical``, so nothing wraps into noise. The width
  is the terminal's; piped, it is ``$COLUMNS``, else 80 (:func:`shutil.get_terminal_size`).
- ``vertical``: one block per row, ``name: value`` per column (clickhouse-client's ``\\G``), values
  whole, wrapped to the width.
- ``csv``, ``tsv`` (tab-separated, quoted as CSV where a value holds a tab, quote or line break:
  both read back with Python's ``csv`` module), ``json`` (an array of objects), ``jsonl`` (one
  object per line): every value whole, for programs. Times are ISO-8601, NaN and infinities null,
  decimals and UUIDs JSON strings.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import textwrap
from collections.abc import Callable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["FORMATS", "MAX_CELL", "echo_arrow", "echo_rows", "format_option", "render"]

FORMATS = ("table", "vertical", "csv", "tsv", "json", "jsonl")
"""The output formats of ``--format``."""
MAX_CELL = 40
"""Characters of a cell in ``table`` format; a longer value is cut to this with ``…``."""
_GAP = "  "


def format_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The ``--format`` option of a command that prints rows (its value is the ``fmt`` argument)."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(FORMATS),
        default="table",
        show_default=True,
        help="table (switches to vertical when wider than the terminal, or $COLUMNS/80 when piped), "
        "vertical (one block per row), or csv, tsv, json, jsonl for programs.",
    )(fn)


def echo_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "table") -> None:
    """Print ``rows`` (sequences in the order of ``columns``) in format ``fmt`` on stdout."""
    click.echo(render(columns, rows, fmt), nl=False)


def echo_arrow(table: pa.Table, fmt: str = "table") -> None:
    """Print an Arrow table (a query's result) in format ``fmt`` on stdout."""
    rows = list(zip(*(column.to_pylist() for column in table.columns), strict=True))
    echo_rows(table.column_names, rows, fmt)


def render(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "table", width: int | None = None) -> str:
    """``rows`` in format ``fmt`` (one of :data:`FORMATS`) as text ending with a newline.

    ``width`` bounds the ``table`` and ``vertical`` layouts (default: the terminal's, see the module
    docstring); ``table`` and ``vertical`` end with a ``(N rows)`` line.
    """
    if fmt in ("csv", "tsv"):
        out = io.StringIO()
        writer = csv.writer(out, delimiter="\t" if fmt == "tsv" else ",", lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([_plain(v) for v in row] for row in rows)
        return out.getvalue()
    if fmt in ("json", "jsonl"):
        from trainwire.analysis.report import to_jsonable

        objects = [to_jsonable(dict(zip(columns, row, strict=True))) for row in rows]
        if fmt == "jsonl":
            return "".join(json.dumps(obj, ensure_ascii=False, default=str) + "\n" for obj in objects)
        return json.dumps(objects, ensure_ascii=False, indent=1, default=str) + "\n"
    if fmt not in ("table", "vertical"):
        raise ValueError(f"unknown format {fmt!r}: one of {', '.join(FORMATS)}")
    width = width or shutil.get_terminal_size().columns
    count = f"({len(rows)} row{'s' if len(rows) != 1 else ''})\n"
    if fmt == "table":
        table = _table(columns, rows)
        if all(len(line) <= width for line in table):
            return "".join(line + "\n" for line in table) + count
    return _vertical(columns, rows, width) + count


def _text(value: Any) -> str:
    """A value as people read it: floats to 6 significant digits, times to the second, JSON for the rest."""
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, dict | list | tuple):
        from trainwire.analysis.report import to_jsonable

        return json.dumps(to_jsonable(value), ensure_ascii=False, default=str)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _plain(value: Any) -> Any:
    """A value for csv and tsv: whole, times ISO-8601, NULL as an empty field, nested values as JSON."""
    if value is None:
        return ""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict | list | tuple):
        return _text(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """The lines of the ``table`` layout: header, dashes, one line per row (cells cut at :data:`MAX_CELL`)."""
    cells = [[_cut(_text(v)) for v in row] for row in rows]
    widths = [max([len(name), *(len(row[i]) for row in cells)]) for i, name in enumerate(columns)]
    right = [
        any(_numeric(row[i]) for row in rows) and all(_numeric(row[i]) or row[i] is None for row in rows)
        for i in range(len(columns))
    ]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right, strict=True)]
        return _GAP.join(parts).rstrip()

    return [line(columns), line(["-" * w for w in widths]), *(line(row) for row in cells)]


def _cut(text: str) -> str:
    text = text.replace("\r\n", "↵").replace("\n", "↵").replace("\t", " ")
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def _vertical(columns: Sequence[str], rows: Sequence[Sequence[Any]], width: int) -> str:
    """The ``vertical`` layout: per row a ``Row N:`` heading, then ``name: value`` lines wrapped to ``width``."""
    label = max((len(name) for name in columns), default=0) + 2
    room = width - label
    out = []
    for number, row in enumerate(rows, start=1):
        heading = f"Row {number}:"
        out += [heading, "─" * len(heading)]
        for name, value in zip(columns, row, strict=True):
            lines = [
                piece
                for paragraph in _text(value).splitlines() or [""]
                for piece in (textwrap.wrap(paragraph, room, drop_whitespace=False) if room >= 20 else [paragraph])
                or [""]
            ]
            out.append(f"{name + ':':<{label}}{lines[0]}".rstrip())
            out += [(" " * label + piece).rstrip() for piece in lines[1:]]
        out.append("")
    return "".join(line + "\n" for line in out)
