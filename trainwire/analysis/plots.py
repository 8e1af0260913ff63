"""PNG plots of an :class:`~trainwire.analysis.report.AnalysisResults` (matplotlib, Agg backend).

Each ``plot_*`` function returns a matplotlib figure, or None when its data does not exist;
:func:`write_plots` saves them and returns the files written. Series per run are capped at
:data:`MAX_SERIES` runs (the first by run id), the rest noted. Every series of a figure has its own
colour and a figure has one legend; tokens are shown with visible spaces (:func:`token_label`).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from trainwire.analysis.report import AnalysisResults, integer_bins, position_curves, token_label
from trainwire.errors import MissingExtraError

__all__ = ["MAX_SERIES", "PLOTS", "write_plots"]

Figure = Any
"""A ``matplotlib.figure.Figure`` (matplotlib is imported only when a plot is drawn)."""

MAX_SERIES = 10


def _plt() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise MissingExtraError("analysis", "trainwire.analysis.plots") from exc

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _by(rows: Iterable[dict[str, Any]], key: str) -> dict[Any, list[dict[str, Any]]]:
    out: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        out[row[key]].append(row)
    return dict(out)


def _capped(series: dict[Any, Any]) -> tuple[list[Any], int]:
    keys = sorted(series, key=str)
    return keys[:MAX_SERIES], max(0, len(keys) - MAX_SERIES)


def _colours() -> Iterator[str]:
    """The colours of matplotlib's cycle, endlessly: one per series, across the axes of a figure."""
    return itertools.cycle(_plt().rcParams["axes.prop_cycle"].by_key()["color"])


def _lines(
    ax: Any,
    rows: list[dict[str, Any]],
    x: str,
    y: str,
    label_prefix: str = "",
    colours: Iterator[str] | None = None,
    **style: Any,
) -> int:
    """One line per run; with ``colours``, each takes the next (so two axes never repeat one)."""
    series = _by((r for r in rows if r.get(y) is not None), "run_id")
    keys, hidden = _capped(series)
    for key in keys:
        points = series[key]
        if colours is not None:
            style["color"] = next(colours)
        ax.plot([p[x] for p in points], [p[y] for p in points], label=f"{label_prefix}{key}", **style)
    return hidden


def _bars(ax: Any, bins: list[dict[str, Any]], **style: Any) -> None:
    """Histogram bins (``bin_start``, ``bin_end``, ``count`` rows) as bars, each as wide as its bin."""
    widths = [max(r["bin_end"] - r["bin_start"], 1e-9) for r in bins]  # a one-value histogram has width 0
    ax.bar([r["bin_start"] for r in bins], [r["count"] for r in bins], width=widths, align="edge", **style)


def _grouped_bars(ax: Any, categories: list[str], series: list[tuple[str, list[float]]]) -> None:
    """One group of bars per category (target words), one bar per series in each, the labels centred."""
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series):
        ax.bar([j + i * width for j in range(len(categories))], values, width, label=label)
    labels = [token_label(c) for c in categories]
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(categories))], labels, rotation=45, ha="right")
    ax.legend()


def _model_panels(rows: list[dict[str, Any]]) -> tuple[Any, list[tuple[Any, str, list[dict[str, Any]]]]]:
    """A figure with one panel per model (the first :data:`MAX_SERIES`): ``(fig, [(ax, model, rows)])``."""
    by_model = _by(rows, "model")
    models = sorted(by_model)[:MAX_SERIES]
    fig, axes = _plt().subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    return fig, [(ax, model, by_model[model]) for ax, model in zip(axes[0], models, strict=True)]


def _finish(fig: Figure, hidden: int = 0) -> Figure:
    if hidden:
        fig.text(0.01, 0.01, f"{hidden} more runs not drawn", fontsize=8)
    fig.tight_layout()
    return fig


def _integer_ticks(*axes: Any) -> None:
    """Ticks at whole numbers only on these x axes (lengths and steps: there is no half a character or step)."""
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _time_axis(ax: Any, times: list[Any], bucket_s: int) -> None:
    """Readable time ticks (``07:55``, ``07:55:30``, ``Dec 06``; never fractions of a second).

    The axis spans at least 10 seconds and a bucket on each side, so a run of a few seconds (or
    one bucket) is not drawn on a scale of microseconds or years.
    """
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(minticks=3, maxticks=8)
    formatter = mdates.ConciseDateFormatter(
        locator,
        formats=["%Y", "%b", "%b %d", "%H:%M", "%H:%M", "%H:%M:%S"],
        zero_formats=["", "%Y", "%b", "%b %d", "%H:%M", "%H:%M"],
        offset_formats=["", "%Y", "%Y-%m", "%Y-%m-%d", "%Y-%m-%d", "%Y-%m-%d %H:%M"],
    )
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(formatter)
    pad = timedelta(seconds=max(bucket_s, 1))
    low, high = min(times) - pad, max(times) + pad
    if high - low < timedelta(seconds=10):
        middle = low + (high - low) / 2
        low, high = middle - timedelta(seconds=5), middle + timedelta(seconds=5)
    ax.set_xlim(low, high)


def plot_reward_distribution(results: AnalysisResults) -> Figure | None:
    """Histogram of rewards over the selected runs, with the per-run mean and median noted."""
    rows = [r for r in results.rows("reward_histogram") if r["run_id"] == "*"]
    if not rows or not sum(r["count"] for r in rows):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 5))
    _bars(ax, rows, edgecolor="black")
    total = results.rows("reward_summary_all")
    if total and total[0]["mean"] is not None:
        ax.axvline(total[0]["mean"], color="red", linestyle="--", label=f"mean {total[0]['mean']:.3g}")
        ax.axvline(total[0]["median"], color="green", linestyle=":", label=f"median {total[0]['median']:.3g}")
        ax.legend()
    ax.set(title="Reward distribution", xlabel="reward", ylabel="interactions")
    return _finish(fig)


def plot_reward_by_step(results: AnalysisResults) -> Figure | None:
    """Mean reward per step per run, and the mean judge score per step where there is one."""
    rows = results.rows("reward_by_step")
    if not any(r["mean"] is not None for r in rows):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 5))
    colours = _colours()
    hidden = _lines(ax, rows, "step", "mean", "reward ", colours)
    judge = results.rows("judge_by_step")
    if judge:
        ax2 = ax.twinx()
        _lines(ax2, judge, "step", "mean_score_normalized", "judge ", colours, linestyle="--")
        ax2.set_ylabel("mean judge score (normalized 0-1)")
    ax.set(title="Reward over training steps", xlabel="step", ylabel="mean reward")
    _integer_ticks(ax)
    lines = [line for axes in fig.axes for line in axes.lines]  # one legend for both axes, on top of both
    fig.axes[-1].legend(lines, [line.get_label() for line in lines], loc="best", fontsize=8)
    return _finish(fig, hidden)


def plot_reward_by_time(results: AnalysisResults) -> Figure | None:
    """Mean reward per time bucket per run."""
    rows = results.rows("reward_by_time")
    if not any(r["mean"] is not None for r in rows):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 5))
    hidden = _lines(ax, rows, "bucket_start", "mean", marker=".")
    ax.set(title="Reward over time", xlabel="time (UTC)", ylabel="mean reward")
    ax.legend(fontsize=8)
    bucket_s = results.params.get("reward_by_time", {}).get("params", {}).get("bucket_s", 1)
    _time_axis(ax, [r["bucket_start"] for r in rows if r["mean"] is not None], bucket_s)
    return _finish(fig, hidden)


def plot_lengths(results: AnalysisResults) -> Figure | None:
    """Prompt and completion length histograms, and mean reward by completion length."""
    prompt = integer_bins(results.rows("prompt_length_histogram"))
    completion = integer_bins(results.rows("completion_length_histogram"))
    if not prompt and not completion:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for ax, rows, title in ((axes[0], prompt, "Prompt length"), (axes[1], completion, "Completion length")):
        if rows:
            _bars(ax, rows)
        ax.set(title=title, xlabel="characters", ylabel="interactions")
    buckets = [r for r in results.rows("length_vs_reward") if r["mean_reward"] is not None]
    if buckets:
        axes[2].plot(
            [(r["bucket_start"] + r["bucket_end"]) / 2 for r in buckets], [r["mean_reward"] for r in buckets], "o-"
        )
    axes[2].set(title="Reward by completion length", xlabel="completion characters", ylabel="mean reward")
    _integer_ticks(*axes)
    return _finish(fig)


def plot_train_metrics(results: AnalysisResults) -> Figure | None:
    """Loss, learning rate and grad norm over steps, per run, with the mean reward."""
    rows = results.rows("train_metrics")
    if not rows:
        return None
    plt = _plt()
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    hidden = 0
    for ax, column in zip(axes.flat, ("loss", "learning_rate", "grad_norm", "mean_reward"), strict=True):
        hidden = _lines(ax, rows, "step", column)
        ax.set(title=column, xlabel="step")
        if ax.lines:
            ax.legend(fontsize=7)
    _integer_ticks(*axes.flat)
    return _finish(fig, hidden)


def plot_group_stats(results: AnalysisResults) -> Figure | None:
    """GRPO zero-variance group share and mean within-group std over steps."""
    rows = results.rows("group_stats")
    if not any(r["zero_variance_share"] is not None for r in rows):
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    hidden = _lines(axes[0], rows, "step", "zero_variance_share")
    _lines(axes[1], rows, "step", "mean_group_std")
    axes[0].set(title="Share of zero-variance groups", xlabel="step")
    axes[1].set(title="Mean within-group reward std", xlabel="step")
    _integer_ticks(*axes)
    axes[0].legend(fontsize=7)
    return _finish(fig, hidden)


def _matrix(rows: list[dict[str, Any]], row_key: str, col_key: str) -> tuple[list[Any], list[Any], list[list[float]]]:
    rkeys = sorted({r[row_key] for r in rows}, key=str)
    ckeys = sorted({r[col_key] for r in rows}, key=str)
    cell = {(r[row_key], r[col_key]): r["mean_probability"] for r in rows}
    nan = float("nan")
    return rkeys, ckeys, [[cell.get((a, b), nan) for b in ckeys] for a in rkeys]


def _heatmap(ax: Any, fig: Any, rows: list[dict[str, Any]], row_key: str, title: str) -> None:
    rkeys, ckeys, values = _matrix(rows, row_key, "target_token")
    image = ax.imshow(values, aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(ckeys)), [token_label(k) for k in ckeys], rotation=45, ha="right")
    ax.set_yticks(range(len(rkeys)), [str(k) for k in rkeys])
    ax.set_title(title)
    if len(rkeys) * len(ckeys) <= 120:
        for i, line in enumerate(values):
            for j, v in enumerate(line):
                if v == v:  # three significant digits: 0.00213, not 0.002 in every cell
                    colour = "black" if image.norm(v) > 0.6 else "white"  # readable on viridis' yellow end
                    ax.text(j, i, f"{v:.3g}", ha="center", va="center", color=colour, fontsize=7)
    fig.colorbar(image, ax=ax, label="mean probability")


def plot_logits_heatmap(results: AnalysisResults) -> Figure | None:
    """Heatmaps of mean target-word probability: model x word, and level x word per model."""
    by_model = results.rows("logits_by_model")
    if not by_model:
        return None
    levels = _by(results.rows("logits_by_level"), "model")
    models = sorted(levels)[: MAX_SERIES - 1]
    plt = _plt()
    fig, axes = plt.subplots(1 + len(models), 1, figsize=(11, 3.5 * (1 + len(models))), squeeze=False)
    _heatmap(axes[0][0], fig, by_model, "model", "Mean probability: model x word")
    for ax, model in zip(axes[1:, 0], models, strict=True):
        _heatmap(ax, fig, levels[model], "level", f"Mean probability: level x word ({model})")
    return _finish(fig)


def plot_logits_models(results: AnalysisResults) -> Figure | None:
    """Grouped bars: mean target-word probability per word, one bar per model."""
    rows = results.rows("logits_by_model")
    if not rows:
        return None
    words = sorted({r["target_token"] for r in rows})
    cell = {(r["model"], r["target_token"]): r["mean_probability"] for r in rows}
    fig, ax = _plt().subplots(figsize=(12, 5))
    models = sorted({r["model"] for r in rows})
    _grouped_bars(ax, words, [(model, [cell.get((model, w), 0.0) for w in words]) for model in models])
    ax.set(title="Target-word probability by model", ylabel="mean probability")
    return _finish(fig)


def plot_logits_levels(results: AnalysisResults) -> Figure | None:
    """Mean probability over difficulty levels, one line per model and word (a panel per model)."""
    rows = results.rows("logits_by_level")
    if not rows:
        return None
    fig, panels = _model_panels(rows)
    for ax, model, mine in panels:
        for word, points in sorted(_by(mine, "target_token").items()):
            ax.plot(
                [p["level"] for p in points], [p["mean_probability"] for p in points], "o-", label=token_label(word)
            )
        ax.set(title=f"{model}: probability by level", xlabel="level", ylabel="mean probability")
        ax.legend(fontsize=7)
    return _finish(fig)


def plot_logits_correctness(results: AnalysisResults) -> Figure | None:
    """Right vs wrong answers: mean probability per word, a panel per model."""
    rows = results.rows("logits_by_correctness")
    if not rows:
        return None
    fig, panels = _model_panels(rows)
    for ax, model, mine in panels:
        words = sorted({r["target_token"] for r in mine})
        cell = {(r["correct"], r["target_token"]): r["mean_probability"] for r in mine}
        verdicts = ((True, "right"), (False, "wrong"))
        _grouped_bars(ax, words, [(label, [cell.get((verdict, w), 0.0) for w in words]) for verdict, label in verdicts])
        ax.set(title=f"{model}: right vs wrong answers", ylabel="mean probability")
    return _finish(fig)


def plot_logits_position(results: AnalysisResults) -> Figure | None:
    """Mean probability along the answer (all target words), one line per model."""
    rows = results.rows("logits_by_position")
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for model, (xs, ys) in list(position_curves(rows).items())[:MAX_SERIES]:
        ax.plot(xs, ys, label=model)
    ax.set(title="Target-word probability by position", xlabel="answer position", ylabel="mean probability")
    ax.legend()
    return _finish(fig)


PLOTS: dict[str, Callable[[AnalysisResults], Figure | None]] = {
    "reward_distribution.png": plot_reward_distribution,
    "reward_by_step.png": plot_reward_by_step,
    "reward_by_time.png": plot_reward_by_time,
    "lengths.png": plot_lengths,
    "train_metrics.png": plot_train_metrics,
    "group_stats.png": plot_group_stats,
    "logits_model_comparison.png": plot_logits_models,
    "logits_level_analysis.png": plot_logits_levels,
    "logits_correctness_comparison.png": plot_logits_correctness,
    "logits_position.png": plot_logits_position,
    "logits_heatmap.png": plot_logits_heatmap,
}
"""File name -> plotting function (returns None when it has no data to draw)."""


def write_plots(results: AnalysisResults, output_dir: Path) -> list[Path]:
    """Draw every plot whose data exists into ``output_dir``; returns the files written."""
    written = []
    for name, draw in PLOTS.items():
        fig = draw(results)
        if fig is not None:
            fig.savefig(output_dir / name, dpi=100)
            _plt().close(fig)
            written.append(output_dir / name)
    return written
