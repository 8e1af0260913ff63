"""Named, parameterised SQL queries over the store, one readable ``.sql`` file each in ``queries/``.

Each file starts with a header of ``--`` comment lines::

    -- name: reward_summary
    -- description: Reward distribution per run: count, mean, population std, quantiles.
    --   (indented lines continue the description)
    -- param: runs Array(String) = [] -- run ids to include; empty: every run
    -- param: threshold Float64 = 0.8 -- rewards at or above this count as high quality
    -- choices: measure = prompt_chars | completion_chars

A parameter without ``= default`` is required; defaults are Python literals (``[]``, ``0.8``,
``'total'``, ``true``). The body uses server-side placeholders (``{runs:Array(String)}``), so
values never become SQL text: the same file runs on chdb and on a ClickHouse server. Events are
counted once each: the queries read ``FROM table FINAL``, or the views of migrations 0004 and
0005 (``interaction_step_stats``, ``interaction_groups``, ...), aggregates that are checked
against ``interactions FINAL`` on every read and recomputed from it where they disagree.

:func:`run_query` checks the parameters against the header (unknown or missing ones are
named in a :class:`QueryError`), converts them to the declared types and returns an Arrow table.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from trainwire.errors import TrainwireError

if TYPE_CHECKING:
    import pyarrow as pa

    from trainwire.store.clickhouse import Store

__all__ = [
    "STANDARD_QUERIES",
    "Query",
    "QueryError",
    "QueryParam",
    "check_reward_fn",
    "convert_param",
    "get_query",
    "list_queries",
    "run_query",
]

_HEADER = re.compile(r"^--\s*(name|description|param|choices):\s*(.*)$")
_CONTINUATION = re.compile(r"^--\s{2,}(\S.*)$")
_PARAM = re.compile(
    r"^(?P<name>[a-z_][a-z0-9_]*)\s+(?P<type>[A-Za-z0-9_]+(?:\([^)]*\))?)\s*(?:=\s*(?P<default>.+?))?\s*(?:--\s*(?P<doc>.*))?$"
)
_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*):([^}]+)\}")
_NO_DEFAULT = object()


class QueryError(TrainwireError):
    """A named query is unknown, malformed, or called with wrong parameters (names them)."""

    def __init__(self, query: str, problem: str):
        self.query = query
        self.problem = problem
        super().__init__(f"query {query!r}: {problem}")


@dataclass(frozen=True)
class QueryParam:
    """One declared parameter: its name, ClickHouse type, default (if any), description, choices."""

    name: str
    type: str
    default: Any = _NO_DEFAULT
    description: str = ""
    choices: tuple[str, ...] = ()

    @property
    def required(self) -> bool:
        """True when the header gives no default."""
        return self.default is _NO_DEFAULT

    def __repr__(self) -> str:
        default = "" if self.required else f" = {self.default!r}"
        return f"QueryParam({self.name} {self.type}{default})"


@dataclass(frozen=True)
class Query:
    """A named query: its header and SQL body."""

    name: str
    description: str
    params: tuple[QueryParam, ...]
    sql: str
    path: str = field(default="", compare=False)

    def param(self, name: str) -> QueryParam:
        """The declared parameter ``name``."""
        for p in self.params:
            if p.name == name:
                return p
        raise QueryError(self.name, f"no parameter {name!r} (it takes {', '.join(p.name for p in self.params)})")

    def bind(self, values: dict[str, Any]) -> dict[str, Any]:
        """The server-side parameters for ``values``: defaults filled, types checked and converted."""
        known = {p.name for p in self.params}
        unknown = sorted(set(values) - known)
        if unknown:
            raise QueryError(
                self.name,
                f"unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                f"(it takes {', '.join(sorted(known)) or 'none'})",
            )
        missing = sorted(p.name for p in self.params if p.required and p.name not in values)
        if missing:
            raise QueryError(
                self.name, f"missing required parameter{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
            )
        bound = {}
        for p in self.params:
            value = values.get(p.name, p.default)
            bound[p.name] = convert_param(self.name, p, value)
        return bound


def convert_param(query: str, param: QueryParam, value: Any) -> Any:
    """``value`` (a Python value, or text from the command line) as ``param``'s ClickHouse type."""
    kind = param.type
    try:
        if kind.startswith("Array("):
            inner = QueryParam(param.name, kind[6:-1])
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, list | tuple):
                raise ValueError(f"expected a list, got {value!r}")
            return [convert_param(query, inner, v) for v in value]
        if kind == "Bool":
            if isinstance(value, str):
                text = value.strip().lower()
                if text not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(f"expected true or false, got {value!r}")
                return text in ("true", "1", "yes")
            if not isinstance(value, bool | int):
                raise ValueError(f"expected true or false, got {value!r}")
            return bool(value)
        if kind.startswith(("UInt", "Int")):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(f"expected an integer, got {value!r}")
            number = int(value)
            if kind.startswith("UInt") and number < 0:
                raise ValueError(f"expected a non-negative integer, got {value!r}")
            return number
        if kind.startswith("Float"):
            if isinstance(value, bool):
                raise ValueError(f"expected a number, got {value!r}")
            return float(value)
        if kind == "String":
            if not isinstance(value, str):
                raise ValueError(f"expected text, got {value!r}")
            if param.choices and value not in param.choices:
                raise ValueError(f"expected one of {', '.join(param.choices)}, got {value!r}")
            return value
    except (TypeError, ValueError) as exc:
        raise QueryError(query, f"parameter {param.name} ({param.type}): {exc}") from None
    raise QueryError(query, f"parameter {param.name}: unsupported type {kind}")


def parse_query(text: str, path: str = "") -> Query:
    """Parse one query file (header and body); errors name the file."""
    where = path or "<query>"
    name = ""
    description: list[str] = []
    params: list[QueryParam] = []
    choices: dict[str, tuple[str, ...]] = {}
    body_start = 0
    lines = text.splitlines()
    last = ""
    for i, line in enumerate(lines):
        stripped = line.strip()
        match = _HEADER.match(stripped)
        if match:
            key, value = match[1], match[2].strip()
            last = key
            if key == "name":
                name = value
            elif key == "description":
                description.append(value)
            elif key == "param":
                params.append(_parse_param(value, where))
            else:
                cname, _, values = value.partition("=")
                choices[cname.strip()] = tuple(v.strip() for v in values.split("|") if v.strip())
            continue
        cont = _CONTINUATION.match(line)
        if cont and last == "description":
            description.append(cont[1].strip())
            continue
        if stripped.startswith("--") or not stripped:
            continue
        body_start = i
        break
    if not name:
        raise QueryError(where, "no '-- name:' header")
    for cname in choices:
        if cname not in {p.name for p in params}:
            raise QueryError(name, f"{where}: choices for undeclared parameter {cname!r}")
    params = [
        QueryParam(p.name, p.type, p.default, p.description, choices.get(p.name, ())) if p.name in choices else p
        for p in params
    ]
    sql = "\n".join(lines[body_start:]).strip().rstrip(";").strip()
    used = {}
    for pname, ptype in _PLACEHOLDER.findall(sql):
        if used.setdefault(pname, ptype) != ptype:
            raise QueryError(name, f"{where}: parameter {pname} used with two types ({used[pname]}, {ptype})")
    declared = {p.name: p.type for p in params}
    if set(used) != set(declared):
        raise QueryError(
            name,
            f"{where}: declared parameters {sorted(declared)} differ from those used in the SQL {sorted(used)}",
        )
    for pname, ptype in used.items():
        if declared[pname] != ptype:
            raise QueryError(name, f"{where}: {pname} is declared {declared[pname]} but used as {ptype}")
    return Query(name, " ".join(description), tuple(params), sql, path)


def _parse_param(text: str, where: str) -> QueryParam:
    match = _PARAM.match(text)
    if not match:
        raise QueryError(where, f"malformed parameter line {text!r} (want: name Type [= default] [-- description])")
    default: Any = _NO_DEFAULT
    if match["default"] is not None:
        text = match["default"].strip()
        try:
            default = {"true": True, "false": False}[text] if text in ("true", "false") else ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise QueryError(
                where, f"parameter {match['name']}: default {match['default']!r} is not a literal"
            ) from None
    return QueryParam(match["name"], match["type"], default, (match["doc"] or "").strip())


@cache
def _load_all() -> dict[str, Query]:
    folder = resources.files("trainwire.analysis") / "queries"
    found: dict[str, Query] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        query = parse_query(entry.read_text(encoding="utf-8"), f"queries/{entry.name}")
        if query.name != entry.name[:-4]:
            raise QueryError(query.name, f"queries/{entry.name}: the name must match the file name")
        found[query.name] = query
    return found


def list_queries() -> list[Query]:
    """Every named query shipped with trainwire, by name."""
    return list(_load_all().values())


def get_query(name: str) -> Query:
    """The named query ``name``."""
    queries = _load_all()
    if name not in queries:
        raise QueryError(name, f"no such query (known: {', '.join(queries)})")
    return queries[name]


def run_query(store: Store, name: str, **params: Any) -> pa.Table:
    """Run the named query with ``params`` (checked and converted); the result as an Arrow table."""
    query = get_query(name)
    return store.query_arrow(query.sql, query.bind(params) or None)


def check_reward_fn(store: Store, query: str, runs: list[str], reward_fn: str) -> None:
    """Raise a :class:`QueryError` for ``query`` when no run of ``runs`` (every run when empty) has
    a value of the reward function ``reward_fn``, naming the reward functions each run has: such a
    query answers with no pairs and no rows, which alone reads as if there were nothing to compare.
    """
    have: dict[str, list[str]] = {}
    for row in run_query(store, "reward_functions", runs=runs).to_pylist():
        have.setdefault(row["run_id"], []).append(row["reward_fn"])
    if any(reward_fn in names for names in have.values()):
        return
    if not have:
        selected = f"run {', '.join(runs)} has" if runs else "no run has any"
        problem = f"no reward function {reward_fn!r}: {selected} rewards stored"
    elif len(have) == 1:
        ((run, names),) = have.items()
        problem = f"run {run} has no reward function {reward_fn!r} (it has {', '.join(names)})"
    else:
        listing = "; ".join(f"run {run} has {', '.join(names)}" for run, names in have.items())
        problem = f"no run has a reward function {reward_fn!r} ({listing})"
    raise QueryError(query, problem)


STANDARD_QUERIES: dict[str, dict[str, Any]] = {
    "runs_overview": {},
    "reward_summary": {},
    "reward_histogram": {},
    "reward_by_step": {},
    "reward_by_step_fast": {},
    "reward_by_time": {"bucket_s": 3600},
    "reward_functions": {},
    "high_quality": {},
    "lengths": {},
    "length_histogram": {},
    "length_vs_reward": {},
    "length_reward_correlation": {},
    "group_stats": {},
    "group_stats_stored": {},
    "judge_agreement": {},
    "judge_by_step": {},
    "train_metrics": {},
    "alerts": {},
    "alerts_summary": {},
    "logits_by_model": {},
    "logits_by_level": {},
    "logits_by_correctness": {},
    "logits_by_position": {},
}
"""The queries the report and dashboard run, with the parameters the benchmark uses."""
