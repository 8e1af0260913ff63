"""Grafana's query interpolation as the ClickHouse data source plugin documents it, for tests that run
dashboard SQL on chdb.

A query goes through three steps, in the plugin's order:

1. ``$__conditionalAll(condition, $var)``, in the plugin's frontend before the variables: the condition,
   or ``1=1`` when ``var`` selects All (or nothing);
2. Grafana's template variables: ``${var:singlequote}`` is each selected value in single quotes (a quote
   inside escaped as ``\\'``), joined by commas; All selects every option (no custom all value here);
3. the plugin's backend macros (``pkg/macros/macros.go``): ``$__timeFilter(col)``, ``$__timeFilter_ms(col)``,
   ``$__dateFilter(col)``, ``$__fromTime``, ``$__toTime``, ``$__fromTime_ms``, ``$__toTime_ms``,
   ``$__interval_s``, ``$__timeInterval(col)`` and ``$__timeInterval_ms(col)``.

Anything else that looks like a macro or a variable (``$name``, ``${...}``) raises :class:`UnknownMacro`
naming it, so a dashboard cannot use one that these tests do not expand as Grafana would.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

ALL = "$__all"


class UnknownMacro(ValueError):
    """A ``$`` macro or variable that :func:`interpolate` does not know, or malformed arguments."""


@dataclass(frozen=True)
class Variable:
    """A dashboard variable: its options and the selected values (``(ALL,)`` for All)."""

    options: tuple[str, ...]
    current: tuple[str, ...] = (ALL,)

    def values(self) -> tuple[str, ...]:
        """What the selection stands for: every option when All is selected."""
        return self.options if self.current == (ALL,) else self.current


@dataclass(frozen=True)
class QueryContext:
    """What Grafana sends with a panel's query: the time range, the interval and the variables."""

    time_from: datetime
    time_to: datetime
    interval_s: float = 60.0
    variables: dict[str, Variable] = field(default_factory=dict)


def _macro_args(sql: str, open_paren: int) -> tuple[list[str], int]:
    """The comma-separated arguments of the call whose ``(`` is at ``open_paren``, and the index after ``)``."""
    depth, quote, escaped, args, start = 0, "", False, [], open_paren + 1
    for i in range(open_paren, len(sql)):
        char = sql[i]
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = ""
        elif char in "'\"`":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                args.append(sql[start:i].strip())
                return args, i + 1
        elif char == "," and depth == 1:
            args.append(sql[start:i].strip())
            start = i + 1
    raise UnknownMacro(f"unclosed macro call at {sql[open_paren - 20 : open_paren + 20]!r}")


def _replace_calls(sql: str, name: str, expand: Callable[[list[str]], str]) -> str:
    """``$__name(...)`` calls replaced by ``expand(arguments)``, innermost-last as the plugin scans."""
    marker = f"$__{name}("
    while (start := sql.rfind(marker)) != -1:
        args, end = _macro_args(sql, start + len(marker) - 1)
        sql = sql[:start] + expand(args) + sql[end:]
    return sql


def _conditional_all(ctx: QueryContext) -> Callable[[list[str]], str]:
    def expand(args: list[str]) -> str:
        if len(args) != 2 or not re.fullmatch(r"\$\{?(\w+)\}?", args[1]):
            raise UnknownMacro(f"$__conditionalAll takes a condition and a plain $variable, got {args!r}")
        name = args[1].strip("${}")
        if name not in ctx.variables:
            raise UnknownMacro(f"$__conditionalAll names the undefined variable {name!r}")
        current = ctx.variables[name].current
        return "1=1" if current in ((ALL,), ()) else args[0]

    return expand


def _singlequote(values: tuple[str, ...]) -> str:
    return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)


def _column_macro(name: str, render: Callable[[str], str]) -> Callable[[list[str]], str]:
    def expand(args: list[str]) -> str:
        if len(args) != 1 or not args[0]:
            raise UnknownMacro(f"$__{name} takes one column, got {args!r}")
        return render(args[0])

    return expand


def _unix_ms(t: datetime) -> int:
    """Milliseconds since the epoch, truncated as Go's ``Time.UnixMilli`` (no float rounding)."""
    return (t - datetime.fromtimestamp(0, UTC)) // timedelta(milliseconds=1)


def interpolate(sql: str, ctx: QueryContext) -> str:
    """``sql`` as the plugin sends it to ClickHouse for ``ctx``; raises :class:`UnknownMacro`."""
    sql = _replace_calls(sql, "conditionalAll", _conditional_all(ctx))

    def variable(match: re.Match[str]) -> str:
        name, fmt = match["name"], match["format"]
        if name not in ctx.variables:
            raise UnknownMacro(f"undefined variable ${{{name}}}")
        if fmt != "singlequote":
            raise UnknownMacro(f"variable ${{{name}:{fmt}}}: only the singlequote format is expanded here")
        return _singlequote(ctx.variables[name].values())

    sql = re.sub(r"\$\{(?P<name>\w+)(?::(?P<format>\w+))?\}", variable, sql)

    start_ms, end_ms = _unix_ms(ctx.time_from), _unix_ms(ctx.time_to)
    start, end = start_ms // 1000, end_ms // 1000
    seconds, millis = max(int(ctx.interval_s), 1), max(int(ctx.interval_s * 1000), 1)
    calls: dict[str, Callable[[str], str]] = {
        "timeFilter_ms": lambda c: (
            f"{c} >= fromUnixTimestamp64Milli({start_ms}) AND {c} <= fromUnixTimestamp64Milli({end_ms})"
        ),
        "timeFilter": lambda c: f"{c} >= toDateTime({start}) AND {c} <= toDateTime({end})",
        "dateFilter": lambda c: (
            f"{c} >= toDate('{ctx.time_from:%Y-%m-%d}') AND {c} <= toDate('{ctx.time_to:%Y-%m-%d}')"
        ),
        "timeInterval_ms": lambda c: f"toStartOfInterval(toDateTime64({c}, 3), INTERVAL {millis} millisecond)",
        "timeInterval": lambda c: f"toStartOfInterval(toDateTime({c}), INTERVAL {seconds} second)",
    }
    for name, render in calls.items():
        sql = _replace_calls(sql, name, _column_macro(name, render))
    constants = {
        "fromTime_ms": f"fromUnixTimestamp64Milli({start_ms})",
        "toTime_ms": f"fromUnixTimestamp64Milli({end_ms})",
        "fromTime": f"toDateTime({start})",
        "toTime": f"toDateTime({end})",
        "interval_s": str(seconds),
    }
    sql = re.sub(r"\$__(fromTime_ms|toTime_ms|fromTime|toTime|interval_s)\b(?!\()", lambda m: constants[m[1]], sql)
    left = re.search(r"\$\{[^}]*\}?|\$\w+(\([^)]*\)?)?", sql)
    if left:
        raise UnknownMacro(f"{left[0]!r} is not a macro or variable the plugin expands as tested here")
    return sql
