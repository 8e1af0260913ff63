"""The analysis report: run the standard queries once, then print, plot and write what they returned.

:func:`collect` runs the named queries (:mod:`trainwire.analysis.queries`) for the selected runs
and keeps their rows in an :class:`AnalysisResults`; every number the console tables, the PNG
plots and the HTML dashboard show comes from those rows, and :func:`write_results` writes them
all to ``analysis_results.json``. :func:`analyze` does the whole report::

    analysis_results.json   every query's parameters and rows
    samples.json            example interactions: best, worst and random (fixed seed)
    *.png                   matplotlib plots (only those whose data exists)
    dashboard.html          interactive charts, plotly.js inlined: opens from a file, no network
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from trainwire.analysis.queries import get_query, run_query

if TYPE_CHECKING:
    from trainwire.store.clickhouse import Store

HIGH_QUALITY_THRESHOLD: float = get_query("high_quality").param("threshold").default
"""The one default of what counts as high quality (reward at or above it): the ``high_quality``
query's own, used by the report, ``trainwire analyze`` and ``trainwire demo`` alike."""

__all__ = [
    "AnalysisResults",
    "analyze",
    "collect",
    "integer_bins",
    "nothing_to_analyze",
    "position_curves",
    "print_summary",
    "to_jsonable",
    "token_label",
    "write_results",
    "write_samples",
]

SAMPLE_ORDERS = ("best", "worst", "random")


@dataclass
class AnalysisResults:
    """The rows of each standard query for one selection of runs, and the parameters used."""

    runs: list[str]
    threshold: float
    generated_at: datetime
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """True when the selected runs have no events at all."""
        return not self.tables.get("runs_overview")

    def rows(self, name: str) -> list[dict[str, Any]]:
        """The rows of section ``name`` (empty when it was not collected)."""
        return self.tables.get(name, [])

    def has(self, name: str, column: str | None = None) -> bool:
        """True when section ``name`` has rows (with a non-null ``column``, if given)."""
        rows = self.rows(name)
        return any(r.get(column) is not None for r in rows) if column else bool(rows)

    def to_json(self) -> dict[str, Any]:
        """Everything as a JSON-ready dict (the content of ``analysis_results.json``)."""
        return to_jsonable(
            {
                "generated_at": self.generated_at,
                "runs": self.runs,
                "threshold": self.threshold,
                "empty": self.empty,
                "queries": {
                    name: {"query": self.params[name]["query"], "params": self.params[name]["params"], "rows": rows}
                    for name, rows in self.tables.items()
                },
            }
        )


def _sections(runs: list[str], threshold: float, bins: int, bucket_s: int) -> dict[str, tuple[str, dict[str, Any]]]:
    """Section name -> (query name, parameters), in the order they are shown."""
    r = {"runs": runs}
    return {
        "runs_overview": ("runs_overview", r),
        "reward_summary": ("reward_summary", r),
        "reward_summary_all": ("reward_summary", {**r, "by_run": False}),
        "high_quality": ("high_quality", {**r, "threshold": threshold}),
        "high_quality_all": ("high_quality", {**r, "threshold": threshold, "by_run": False}),
        "reward_histogram": ("reward_histogram", {**r, "bins": bins}),
        "reward_functions": ("reward_functions", r),
        "reward_by_step": ("reward_by_step", r),
        "reward_by_time": ("reward_by_time", {**r, "bucket_s": bucket_s}),
        "lengths": ("lengths", r),
        "prompt_length_histogram": ("length_histogram", {**r, "measure": "prompt_chars", "bins": bins}),
        "completion_length_histogram": ("length_histogram", {**r, "measure": "completion_chars", "bins": bins}),
        "length_vs_reward": ("length_vs_reward", {**r, "bins": min(bins, 10)}),
        "length_reward_correlation": ("length_reward_correlation", r),
        "group_stats": ("group_stats", r),
        "group_stats_stored": ("group_stats_stored", r),
        "judge_agreement": ("judge_agreement", r),
        "judge_by_step": ("judge_by_step", r),
        "train_metrics": ("train_metrics", r),
        "alerts_summary": ("alerts_summary", r),
        "alerts": ("alerts", {**r, "limit": 100}),
        "logits_by_model": ("logits_by_model", r),
        "logits_by_level": ("logits_by_level", r),
        "logits_by_correctness": ("logits_by_correctness", r),
        "logits_by_position": ("logits_by_position", r),
    }


def _time_bucket(overview: list[dict[str, Any]]) -> int:
    """A bucket width (seconds) giving about 100 buckets over the runs' time span."""
    starts = [r["first_ts"] for r in overview if r.get("first_ts") is not None]
    ends = [r["last_ts"] for r in overview if r.get("last_ts") is not None]
    if not starts:
        return 60
    span = (max(ends) - min(starts)).total_seconds()
    for width in (1, 5, 10, 30, 60, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 86400, 7 * 86400):
        if span / width <= 150:
            return width
    return 30 * 86400


def collect(
    store: Store,
    runs: list[str] | tuple[str, ...] = (),
    *,
    threshold: float = HIGH_QUALITY_THRESHOLD,
    bins: int = 20,
    samples: int = 5,
    seed: int = 42,
    on_query: Callable[[int, int], None] | None = None,
) -> AnalysisResults:
    """Run the standard queries for ``runs`` (empty: every run) and keep their rows.

    ``on_query(done, total)`` is called after each query (the total counts the sample queries,
    which are left out when no run has interactions).
    """
    runs = list(runs)
    results = AnalysisResults(runs=runs, threshold=threshold, generated_at=datetime.now(UTC))
    overview = run_query(store, "runs_overview", runs=runs).to_pylist()
    results.tables["runs_overview"] = overview
    results.params["runs_overview"] = {"query": "runs_overview", "params": {"runs": runs}}
    if not overview:
        return results
    sections = _sections(runs, threshold, bins, _time_bucket(overview))
    sample_orders = SAMPLE_ORDERS if any(r["interactions"] for r in overview) else ()
    done = itertools.count(1)

    def ran() -> None:
        if on_query is not None:
            on_query(next(done), len(sections) + len(sample_orders))

    ran()  # runs_overview
    for name, (query, params) in sections.items():
        if name == "runs_overview":
            continue
        results.tables[name] = run_query(store, query, **params).to_pylist()
        results.params[name] = {"query": query, "params": params}
        ran()
    for order in sample_orders:
        rows = run_query(store, "samples", runs=runs, order=order, limit=samples, seed=seed)
        results.samples[order] = rows.to_pylist()
        ran()
    return results


def to_jsonable(value: Any) -> Any:
    """``value`` with datetimes as ISO-8601 text and non-finite floats as None, ready for ``json.dumps``."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        if value and all(isinstance(v, tuple) and len(v) == 2 for v in value):  # an Arrow map: [(k, v), ...]
            return {str(k): to_jsonable(v) for k, v in value}
        rows = _jsonable_rows(value)
        return rows if rows is not None else [to_jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value.tzinfo else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


_ATOMS = frozenset({int, str, bool, type(None)})
"""Types :func:`to_jsonable` returns unchanged."""


def _jsonable_rows(rows: list[Any] | tuple[Any, ...]) -> list[dict[str, Any]] | None:
    """:func:`to_jsonable` of query rows (dicts with the same string keys), column by column.

    A column of ints, texts, booleans and None, or of floats whose sum is finite (so is each of
    them), is taken as it is; only the others go through :func:`to_jsonable` value by value.
    None when ``rows`` are not such rows.
    """
    if not rows or type(rows[0]) is not dict:
        return None
    keys = rows[0].keys()
    if not keys or not all(type(k) is str for k in keys) or not all(type(r) is dict and r.keys() == keys for r in rows):
        return None
    columns = []
    for key in keys:
        values = [r[key] for r in rows]
        types = set(map(type, values))
        plain = types <= _ATOMS or (
            types <= _ATOMS | {float} and math.isfinite(sum(v for v in values if v is not None))
        )
        columns.append(values if plain else [to_jsonable(v) for v in values])
    return [dict(zip(keys, row, strict=True)) for row in zip(*columns, strict=True)]


def json_file_bytes(jsonable: Any) -> bytes:
    """The content of one of the report's JSON files: ``jsonable`` (:func:`to_jsonable`'s) as UTF-8, indented by 2."""
    return orjson.dumps(jsonable, option=orjson.OPT_INDENT_2)


def position_curves(rows: list[dict[str, Any]]) -> dict[str, tuple[list[int], list[float]]]:
    """Mean target-word probability along the answer, per model (sorted): ``{model: (positions, means)}``.

    Over ``logits_by_position`` rows, all words together, each weighted by its observations.
    """
    totals: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0.0]))
    for r in rows:
        cell = totals[r["model"]][r["position_start"]]
        cell[0] += r["mean_probability"] * r["observations"]
        cell[1] += r["observations"]
    curves = {}
    for model, by_position in sorted(totals.items()):
        xs = sorted(by_position)
        curves[model] = (xs, [by_position[x][0] / by_position[x][1] for x in xs])
    return curves


_VISIBLE_WHITESPACE = str.maketrans({" ": "\u2423", "\n": "\u21b5", "\t": "\u21e5"})


def token_label(token: str) -> str:
    """A token as a chart label, its whitespace visible: ``' Actually'`` -> ``'␣Actually'``, newline ``↵``, tab ``⇥``.

    Tokenizers tell ``' Actually'`` and ``'Actually'`` apart; so must the labels.
    """
    return str(token).translate(_VISIBLE_WHITESPACE)


def integer_bins(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Histogram rows of a whole-number measure (a length) with bins that hold whole numbers.

    Bins narrower than 1 (few distinct lengths) each hold one whole number ``k`` at most: each
    non-empty one becomes the bin ``[k - 0.5, k + 0.5]``, the empty ones are left out. Rows of
    wider bins are returned as they are.
    """
    if not any(r["bin_end"] - r["bin_start"] < 1 for r in rows):
        return rows
    out = []
    for row in rows:
        if row["count"]:
            k = math.ceil(row["bin_start"] - 1e-9)
            out.append({**row, "bin_start": k - 0.5, "bin_end": k + 0.5})
    return out


def write_results(results: AnalysisResults, output_dir: Path) -> Path:
    """Write ``analysis_results.json``; returns its path."""
    path = output_dir / "analysis_results.json"
    path.write_bytes(json_file_bytes(results.to_json()))
    return path


def write_samples(results: AnalysisResults, output_dir: Path) -> Path:
    """Write ``samples.json`` (best, worst and random examples, metadata parsed); returns its path."""
    out: dict[str, list[dict[str, Any]]] = {}
    for order, rows in results.samples.items():
        records = []
        for row in rows:
            record = dict(row)
            with contextlib.suppress(ValueError):
                record["metadata"] = json.loads(row.get("metadata") or "{}")
            records.append(record)
        out[order] = records
    path = output_dir / "samples.json"
    path.write_bytes(json_file_bytes(to_jsonable(out)))
    return path


# --------------------------------------------------------------------------- console


_CONSOLE_TABLES = (
    ("runs_overview", "Runs", None),
    ("reward_summary", "Reward distribution per run", None),
    ("reward_summary_all", "Reward distribution, all selected runs", None),
    ("high_quality", "High-quality answers (reward >= threshold)", None),
    ("reward_functions", "Reward functions", None),
    ("lengths", "Prompt and completion lengths", None),
    ("length_reward_correlation", "Length vs reward (Pearson)", None),
    ("judge_agreement", "Judge score vs rule reward", None),
    ("alerts_summary", "Alerts", None),
    ("logits_by_model", "Target-word logits by model", None),
)


def nothing_to_analyze(runs: Sequence[str]) -> str:
    """What to say when ``runs`` (empty: every run) have no events in the store."""
    from trainwire.store.clickhouse import NOT_STORED_HINT

    which = ", ".join(runs) if runs else "any run"
    return f"No events for {which} in the store: nothing to analyze. {NOT_STORED_HINT}, then analyze again."


def print_summary(results: AnalysisResults, console: Any = None, max_rows: int = 50) -> None:
    """Print the statistics as the CLI's tables (:func:`trainwire.output.render`; sections without rows
    are left out) on ``console``, a rich console (default: stdout's)."""
    from rich.console import Console

    from trainwire.output import render

    console = console or Console()
    if results.empty:
        console.print(nothing_to_analyze(results.runs))
        return
    for name, title, _ in _CONSOLE_TABLES:
        rows = results.rows(name)
        if not rows:
            continue
        if name == "high_quality":
            title = f"High-quality answers (reward >= {results.threshold:g})"
        columns = [c for c in rows[0] if c != "threshold"]
        cells = [[row[c] for c in columns] for row in rows[:max_rows]]
        console.print(title, style="bold", highlight=False, markup=False)
        console.out(render(columns, cells, "table", width=console.width), end="", highlight=False)
        if len(rows) > max_rows:
            console.print(f"({len(rows) - max_rows} more rows in analysis_results.json)")


# --------------------------------------------------------------------------- everything


@dataclass
class Report:
    """What :func:`analyze` produced: the results and the files written."""

    results: AnalysisResults
    files: list[Path]


def analyze(
    store: Store,
    output_dir: Path,
    runs: list[str] | tuple[str, ...] = (),
    *,
    threshold: float = HIGH_QUALITY_THRESHOLD,
    bins: int = 20,
    samples: int = 5,
    seed: int = 42,
    console: Any = None,
    on_query: Callable[[int, int], None] | None = None,
) -> Report:
    """Collect, print, plot and write the whole report into ``output_dir``.

    An empty selection writes only ``analysis_results.json`` (``empty: true``) and prints nothing:
    the caller says so (:func:`nothing_to_analyze`).
    ``on_query`` is :func:`collect`'s.
    """
    from trainwire.analysis.dashboard import write_dashboard
    from trainwire.analysis.plots import write_plots

    output_dir.mkdir(parents=True, exist_ok=True)
    results = collect(store, runs, threshold=threshold, bins=bins, samples=samples, seed=seed, on_query=on_query)
    if not results.empty:
        print_summary(results, console)
    files = [write_results(results, output_dir)]
    if not results.empty:
        if results.samples:
            files.append(write_samples(results, output_dir))
        files.extend(write_plots(results, output_dir))
        files.extend(write_dashboard(results, output_dir))
    return Report(results, files)
