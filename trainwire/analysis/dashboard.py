"""A self-contained HTML dashboard of an :class:`~trainwire.analysis.report.AnalysisResults`.

One file: the plotly.js bundle of the installed ``plotly`` package is inlined, the chart data is
embedded as JSON, so it opens from disk with no server and no network. Series longer than
:data:`MAX_POINTS` are thinned to every k-th point (the full rows are in ``analysis_results.json``).
Below the charts: the summary tables and the sample completions of ``samples.json``.

For automated checks the page records ``console.error`` calls and uncaught errors in
``<pre id="tw-errors">`` and, once every chart rendered, sets ``data-rendered`` on
``<div id="tw-status">`` to the number of charts drawn.
"""

from __future__ import annotations

import html
import itertools
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from trainwire.analysis.report import AnalysisResults, integer_bins, position_curves, to_jsonable, token_label
from trainwire.errors import MissingExtraError

__all__ = ["MAX_POINTS", "build_charts", "build_logits_charts", "render_dashboard", "write_dashboard"]

MAX_POINTS = 2000
MAX_RUNS = 10


def _thin(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if len(points) <= MAX_POINTS:
        return points
    stride = math.ceil(len(points) / MAX_POINTS)
    return points[::stride]


def _per_run(rows: list[dict[str, Any]], x: str, y: str, name: str = "{run}", **extra: Any) -> list[dict[str, Any]]:
    series: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row.get(y) is not None:
            series[row["run_id"]].append(row)
    traces = []
    for run in sorted(series)[:MAX_RUNS]:
        points = _thin(series[run])
        traces.append(
            {
                "type": "scatter",
                "mode": "lines" if len(points) > 50 else "lines+markers",
                "name": name.format(run=run),
                "x": [p[x] for p in points],
                "y": [p[y] for p in points],
                **extra,
            }
        )
    return traces


def _layout(title: str, xaxis: str = "", yaxis: str = "", **extra: Any) -> dict[str, Any]:
    """A chart's layout; a right axis (``yaxis2``) gets the margin its tick labels and title need."""
    if "yaxis2" in extra:  # as the web UI's chart() does
        right = extra["yaxis2"]
        extra["yaxis2"] = {"automargin": True, **right, "title": {"standoff": 10, **right.get("title", {})}}
    return {
        "title": {"text": title},
        "xaxis": {"title": {"text": xaxis}},
        "yaxis": {"title": {"text": yaxis}, "automargin": True},
        "margin": {"t": 50, "l": 60, "r": 20, "b": 60},
        "height": 380,
        **extra,
    }


def _heat(rows: list[dict[str, Any]], row_key: str) -> dict[str, Any]:
    rkeys = sorted({r[row_key] for r in rows}, key=str)
    ckeys = sorted({r["target_token"] for r in rows})
    cell = {(r[row_key], r["target_token"]): r["mean_probability"] for r in rows}
    return {
        "type": "heatmap",
        "x": [token_label(k) for k in ckeys],
        "y": [str(k) for k in rkeys],
        "z": [[cell.get((a, b)) for b in ckeys] for a in rkeys],
        "texttemplate": "%{z:.3g}",  # three significant digits: 0.00213, not 0.002 in every cell
        "hovertemplate": "%{y} · %{x}: %{z:.3g}<extra></extra>",
        "colorscale": "Viridis",
        "colorbar": {"title": {"text": "mean p"}},
    }


def _whole_number_axis(layout: dict[str, Any], traces: list[dict[str, Any]]) -> dict[str, Any]:
    """``layout`` with an x axis of whole numbers (steps, lengths): never a tick at 0.2 or 36.5.

    The tick step is 1, 2, 5, 10, 20, ... for at most about 10 ticks over the traces' x values.
    """
    xs = [x for trace in traces for x in trace["x"]]
    span = max(xs) - min(xs) if xs else 0
    steps = (m * 10**e for e in itertools.count() for m in (1, 2, 5))
    layout["xaxis"].update(tickformat="d", dtick=next(step for step in steps if span / step <= 10))
    return layout


def _add(charts: list[dict[str, Any]], title: str, data: list[dict[str, Any]], layout: dict[str, Any]) -> None:
    """Append a figure to ``charts`` when it has data."""
    if data:
        charts.append({"title": title, "data": data, "layout": layout})


def build_charts(results: AnalysisResults) -> list[dict[str, Any]]:
    """The plotly figures (``{"title", "data", "layout"}`` dicts) whose data exists."""
    charts: list[dict[str, Any]] = []

    hist = [r for r in results.rows("reward_histogram") if r["run_id"] == "*"]
    if hist and sum(r["count"] for r in hist):
        _add(
            charts,
            "Reward distribution",
            [
                {
                    "type": "bar",
                    "name": "interactions",
                    "x": [(r["bin_start"] + r["bin_end"]) / 2 for r in hist],
                    "y": [r["count"] for r in hist],
                    "width": [max(r["bin_end"] - r["bin_start"], 1e-9) for r in hist],
                }
            ],
            _layout("Reward distribution", "reward", "interactions"),
        )
    steps = _per_run(results.rows("reward_by_step"), "step", "mean", "reward {run}")
    judge = _per_run(
        results.rows("judge_by_step"), "step", "mean_score_normalized", "judge {run}", line={"dash": "dot"}, yaxis="y2"
    )
    _add(
        charts,
        "Reward and judge score over steps",
        steps + judge,
        _whole_number_axis(
            _layout(
                "Reward and judge score over steps",
                "step",
                "mean reward",
                yaxis2={"title": {"text": "mean judge score (normalized 0-1)"}, "overlaying": "y", "side": "right"},
                legend={"orientation": "h", "y": -0.25},
            ),
            steps + judge,
        ),
    )
    _add(
        charts,
        "Reward over time",
        _per_run(results.rows("reward_by_time"), "bucket_start", "mean", mode="lines+markers"),
        _layout("Reward over time", "time (UTC)", "mean reward"),
    )
    functions = results.rows("reward_functions")
    fn_traces = []
    for fn in sorted({r["reward_fn"] for r in functions}):
        mine = [r for r in functions if r["reward_fn"] == fn][:MAX_RUNS]
        fn_traces.append({"type": "bar", "name": fn, "x": [r["run_id"] for r in mine], "y": [r["mean"] for r in mine]})
    _add(
        charts,
        "Reward functions",
        fn_traces,
        _layout("Mean reward per function and run", "run", "mean", barmode="group"),
    )
    quality = results.rows("high_quality")[:MAX_RUNS]
    _add(
        charts,
        "High-quality share",
        [
            {
                "type": "bar",
                "name": "share",
                "x": [r["run_id"] for r in quality],
                "y": [r["high_quality_share"] for r in quality],
            }
        ]
        if quality
        else [],
        _layout(f"Share of answers with reward >= {results.threshold:g}", "run", "share"),
    )
    length_traces = []
    for name, label in (("prompt_length_histogram", "prompt"), ("completion_length_histogram", "completion")):
        rows = integer_bins(results.rows(name))
        if rows:
            length_traces.append(
                {
                    "type": "bar",
                    "name": label,
                    "opacity": 0.7,
                    "x": [(r["bin_start"] + r["bin_end"]) / 2 for r in rows],
                    "y": [r["count"] for r in rows],
                }
            )
    lengths = _layout("Prompt and completion length (characters)", "characters", "interactions", barmode="overlay")
    _add(charts, "Lengths", length_traces, _whole_number_axis(lengths, length_traces))
    buckets = [r for r in results.rows("length_vs_reward") if r["mean_reward"] is not None]
    _add(
        charts,
        "Reward by completion length",
        [
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": "mean reward",
                "x": [(r["bucket_start"] + r["bucket_end"]) / 2 for r in buckets],
                "y": [r["mean_reward"] for r in buckets],
                "text": [f"{r['interactions']} interactions" for r in buckets],
            }
        ]
        if buckets
        else [],
        _layout("Reward by completion length", "completion characters", "mean reward"),
    )
    train = results.rows("train_metrics")
    for column in ("loss", "learning_rate", "grad_norm"):
        traces = _per_run(train, "step", column)
        _add(charts, column, traces, _whole_number_axis(_layout(f"{column} over steps", "step", column), traces))
    zero_variance = _per_run(results.rows("group_stats"), "step", "zero_variance_share")
    _add(
        charts,
        "Zero-variance groups",
        zero_variance,
        _whole_number_axis(_layout("GRPO: share of zero-variance groups", "step", "share"), zero_variance),
    )
    charts.extend(build_logits_charts(results))
    return charts


def build_logits_charts(results: AnalysisResults) -> list[dict[str, Any]]:
    """The logits probe's figures (target-word probabilities by model, level, correctness, position)."""
    charts: list[dict[str, Any]] = []

    by_model = results.rows("logits_by_model")
    if by_model:
        _add(
            charts,
            "Logits heatmap: model x word",
            [_heat(by_model, "model")],
            _layout("Mean probability: model x word"),
        )
        _add(
            charts,
            "Target-word probability by model",
            [
                {
                    "type": "bar",
                    "name": model,
                    "x": [token_label(r["target_token"]) for r in by_model if r["model"] == model],
                    "y": [r["mean_probability"] for r in by_model if r["model"] == model],
                }
                for model in sorted({r["model"] for r in by_model})
            ],
            _layout("Target-word probability by model", "word", "mean probability", barmode="group"),
        )
    levels = results.rows("logits_by_level")
    for model in sorted({r["model"] for r in levels})[:MAX_RUNS]:
        _add(
            charts,
            f"Level x word ({model})",
            [_heat([r for r in levels if r["model"] == model], "level")],
            _layout(f"Mean probability: level x word ({model})", "word", "level"),
        )
    correctness = results.rows("logits_by_correctness")
    if correctness:
        traces = []
        for model in sorted({r["model"] for r in correctness})[:MAX_RUNS]:
            for verdict, label in ((True, "right"), (False, "wrong")):
                mine = [r for r in correctness if r["model"] == model and r["correct"] is verdict]
                if mine:
                    traces.append(
                        {
                            "type": "bar",
                            "name": f"{model} {label}",
                            "x": [token_label(r["target_token"]) for r in mine],
                            "y": [r["mean_probability"] for r in mine],
                        }
                    )
        _add(
            charts,
            "Right vs wrong",
            traces,
            _layout("Target-word probability: right vs wrong", "word", "mean probability", barmode="group"),
        )
    positions = results.rows("logits_by_position")
    if positions:
        traces = [
            {"type": "scatter", "mode": "lines", "name": model, "x": xs[:MAX_POINTS], "y": ys[:MAX_POINTS]}
            for model, (xs, ys) in list(position_curves(positions).items())[:MAX_RUNS]
        ]
        _add(
            charts,
            "By position",
            traces,
            _layout("Target-word probability by answer position", "position", "mean probability"),
        )
    return charts


_TABLES = (
    ("runs_overview", "Runs"),
    ("reward_summary", "Reward distribution"),
    ("high_quality", "High-quality answers (reward >= {threshold:g})"),
    ("judge_agreement", "Judge vs rule reward"),
    ("alerts_summary", "Alerts"),
)

_CAPTURE = """
window.__twErrors = [];
(function () {
  function record(text) {
    window.__twErrors.push(String(text));
    var box = document.getElementById('tw-errors');
    if (box) { box.textContent = window.__twErrors.join('\\n'); }
  }
  var original = console.error;
  console.error = function () {
    record(Array.prototype.map.call(arguments, String).join(' '));
    return original.apply(console, arguments);
  };
  window.addEventListener('error', function (e) { record('uncaught: ' + (e.message || e)); });
  window.addEventListener('unhandledrejection', function (e) { record('unhandled rejection: ' + e.reason); });
  window.__twRecord = record;
})();
"""

_RENDER = """
(function () {
  var charts = JSON.parse(document.getElementById('tw-data').textContent);
  var status = document.getElementById('tw-status');
  var box = document.getElementById('tw-errors');
  if (box && window.__twErrors.length) { box.textContent = window.__twErrors.join('\\n'); }
  if (typeof Plotly === 'undefined') { window.__twRecord('plotly.js did not load'); return; }
  var config = {displaylogo: false, responsive: true};
  Promise.all(charts.map(function (c, i) {
    return Plotly.newPlot('tw-chart-' + i, c.data, c.layout, config);
  })).then(function () {
    var drawn = charts.filter(function (c, i) {
      return document.querySelector('#tw-chart-' + i + ' .main-svg') !== null;
    }).length;
    status.setAttribute('data-rendered', String(drawn));
    status.textContent = 'rendered ' + drawn + ' of ' + charts.length + ' charts';
  }).catch(function (err) { window.__twRecord('render failed: ' + err); });
})();
"""

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 16px 24px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; }
table { border-collapse: collapse; font-size: 12px; margin: 6px 0 12px; }
td, th { border: 1px solid #ccc; padding: 3px 7px; text-align: right; } th { background: #f2f2f2; }
td:first-child, th:first-child { text-align: left; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(640px, 1fr)); gap: 12px; }
.tw-chart { border: 1px solid #e4e4e4; border-radius: 4px; min-height: 380px; }
#tw-errors { color: #b00; white-space: pre-wrap; } .meta { color: #666; font-size: 12px; }
.samples td { text-align: left; white-space: pre-wrap; vertical-align: top; max-width: 560px; }
"""


def _html_table(rows: list[dict[str, Any]], limit: int = 30) -> str:
    if not rows:
        return ""
    columns = [c for c in rows[0] if c != "threshold"]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in to_jsonable(rows[:limit]):
        cells = []
        for c in columns:
            v = row[c]
            text = "" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))
            cells.append(f"<td>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    more = f"<p class='meta'>{len(rows) - limit} more rows in analysis_results.json</p>" if len(rows) > limit else ""
    return f"<table><tr>{head}</tr>{''.join(body)}</table>{more}"


SAMPLE_COLUMNS = ("run_id", "step", "reward", "prompt", "completion")
"""What the dashboard shows of each sample (``samples.json`` has every column)."""


def _samples_html(samples: dict[str, list[dict[str, Any]]]) -> str:
    """The sample completions, as ``samples.json`` has them: a table per kind (best, worst, random)."""
    tables = "".join(
        f"<h3>{html.escape(order)}</h3>{_html_table([{c: row.get(c) for c in SAMPLE_COLUMNS} for row in rows])}"
        for order, rows in samples.items()
        if rows
    )
    return f'<h2>Sample completions</h2><div class="samples" id="tw-samples">{tables}</div>' if tables else ""


def _script_json(value: Any) -> str:
    """JSON safe inside a <script> element."""
    text = json.dumps(to_jsonable(value), ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_dashboard(
    results: AnalysisResults,
    charts: list[dict[str, Any]] | None = None,
    title: str = "trainwire analysis",
    tables: bool = True,
) -> str:
    """One self-contained HTML document: ``charts`` (default: :func:`build_charts`) and the summary tables."""
    try:
        from plotly.offline import get_plotlyjs
    except ImportError as exc:
        raise MissingExtraError("analysis", "trainwire.analysis.dashboard") from exc

    charts = build_charts(results) if charts is None else charts
    runs = ", ".join(results.runs) if results.runs else "all runs"
    summary = "".join(
        f"<h2>{html.escape(heading.format(threshold=results.threshold))}</h2>{_html_table(results.rows(name))}"
        for name, heading in _TABLES
        if tables and results.rows(name)
    )
    if tables:
        summary += _samples_html(results.samples)
    divs = "".join(f'<div class="tw-chart" id="tw-chart-{i}"></div>' for i in range(len(charts)))
    generated = to_jsonable(results.generated_at)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_STYLE}</style>
<script>{_CAPTURE}</script>
<script>{get_plotlyjs()}</script>
</head><body>
<h1>{html.escape(title)}</h1>
<p class="meta">{html.escape(runs)} · generated {html.escape(str(generated))} · high-quality threshold
{results.threshold:g}</p>
<div id="tw-status" data-charts="{len(charts)}" data-rendered="">rendering {len(charts)} charts...</div>
<pre id="tw-errors"></pre>
<div class="grid">{divs}</div>
{summary}
<script type="application/json" id="tw-data">{_script_json(charts)}</script>
<script>{_RENDER}</script>
</body></html>
"""


def write_dashboard(results: AnalysisResults, output_dir: Path) -> list[Path]:
    """Write ``dashboard.html`` and, when the logits probe has data, ``target_token_probabilities.html``
    (its charts alone, the interactive page of seed 004); returns their paths."""
    path = output_dir / "dashboard.html"
    path.write_text(render_dashboard(results), encoding="utf-8")
    paths = [path]
    logits = build_logits_charts(results)
    if logits:
        page = output_dir / "target_token_probabilities.html"
        page.write_text(
            render_dashboard(results, logits, title="Target-token probabilities", tables=False), encoding="utf-8"
        )
        paths.append(page)
    return paths
