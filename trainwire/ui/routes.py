"""A view's data routes: each one a named query of the SQL library, with the parameters a page may set.

A route answers ``GET /api/{view}/{route}?param=value&...`` with ``{"query": name, "rows": [...]}``:
the named query's rows, run with the page's parameters (only those the route lets it set; the
others keep the query's defaults or the route's fixed values), as JSON. Nothing else reaches the
store: a visitor can neither write SQL nor change data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from trainwire.analysis.queries import QueryError, get_query, run_query
from trainwire.store.clickhouse import Store


@dataclass(frozen=True)
class DataRoute:
    """One data route: its name, the named query behind it, the parameters a page may set."""

    name: str
    query: str
    params: tuple[str, ...] = ()
    fixed: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        query = get_query(self.query)
        for name in (*self.params, *self.fixed):
            query.param(name)  # a QueryError when the query has no such parameter

    def bind(self, given: Mapping[str, str | Sequence[str]]) -> dict[str, Any]:
        """The query's parameters for the page's ``given`` ones (unknown names are a :class:`QueryError`)."""
        unknown = sorted(set(given) - set(self.params))
        if unknown:
            allowed = ", ".join(self.params) or "none"
            raise QueryError(self.query, f"unknown parameter {', '.join(unknown)} (this page sets {allowed})")
        values = {name: _one_or_list(value) for name, value in given.items()}
        return {**self.fixed, **values}

    def rows(self, store: Store, given: Mapping[str, str | Sequence[str]]) -> list[dict[str, Any]]:
        """The query's rows for the page's parameters, as JSON-ready dicts."""
        return json_rows(run_query(store, self.query, **self.bind(given)))


def _one_or_list(value: str | Sequence[str]) -> str | list[str]:
    if isinstance(value, str):
        return value
    return value[0] if len(value) == 1 else list(value)


@dataclass(frozen=True)
class View:
    """A page of the UI: its name (the URL path ``/{name}``), title and data routes."""

    name: str
    title: str
    routes: tuple[DataRoute, ...]

    def route(self, name: str) -> DataRoute | None:
        """The route called ``name``, or None."""
        return next((r for r in self.routes if r.name == name), None)


def json_rows(table: pa.Table) -> list[dict[str, Any]]:
    """An Arrow table's rows for JSON: maps as objects, NaN and infinities as null."""
    maps = [f.name for f in table.schema if pa.types.is_map(f.type)]
    rows = table.to_pylist()
    for row in rows:
        for name in maps:
            if row[name] is not None:
                row[name] = {k: _finite(v) for k, v in row[name]}
        for name, value in row.items():
            if isinstance(value, float):
                row[name] = _finite(value)
    return rows


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value
