"""The report's plots read well: checked on the figures' data (matplotlib objects, plotly dicts) and on the
dashboard as Chromium renders it (a screenshot is kept in test-artifacts/analysis/)."""

from __future__ import annotations

import json
import re
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from browser import launch_chromium
from conftest import ROOT
from playwright.sync_api import sync_playwright
from test_analysis import _fill

from trainwire.analysis.dashboard import build_charts
from trainwire.analysis.plots import (
    plot_group_stats,
    plot_lengths,
    plot_logits_heatmap,
    plot_logits_models,
    plot_reward_by_step,
    plot_reward_by_time,
    plot_train_metrics,
)
from trainwire.analysis.report import AnalysisResults, analyze, collect
from trainwire.store.clickhouse import open_store

ARTIFACTS = ROOT / "test-artifacts" / "analysis"
T0 = datetime(2026, 12, 6, 7, 55, tzinfo=UTC)


def _results(**tables: list[dict]) -> AnalysisResults:
    results = AnalysisResults(runs=[], threshold=0.8, generated_at=T0, tables=tables)
    results.params = {name: {"query": name, "params": {"bucket_s": 1}} for name in tables}
    return results


def _drawn(fig):
    """``fig`` drawn (tick labels exist once drawn); a glyph missing from the font fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns "Glyph ... missing from font(s)"
        fig.canvas.draw()
    return fig


def _ticks(axis) -> list[str]:
    return [label.get_text() for label in axis.get_ticklabels() if label.get_text()]


def test_reward_and_judge_lines_each_have_their_own_colour_and_one_legend(embedded_settings):
    _fill(embedded_settings)
    with open_store(embedded_settings) as store:
        results = collect(store)
    fig = _drawn(plot_reward_by_step(results))
    lines = [line for ax in fig.axes for line in ax.lines]
    assert [line.get_label() for line in lines] == ["reward a", "reward b", "judge a"]
    assert len({line.get_color() for line in lines}) == 3  # was: the judge line blue like the first reward line
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert len(legends) == 1
    assert [text.get_text() for text in legends[0].get_texts()] == ["reward a", "reward b", "judge a"]

    (chart,) = [c for c in build_charts(results) if c["title"] == "Reward and judge score over steps"]
    assert chart["layout"]["yaxis2"]["automargin"] is True  # the right axis gets the room its labels need


@pytest.mark.parametrize(
    ("span", "expected"),
    [
        (timedelta(0), r"\d\d:\d\d(:\d\d)?"),  # one bucket: not a scale of years
        (timedelta(seconds=2), r"\d\d:\d\d(:\d\d)?"),  # a few seconds: was 55:00.500000
        (timedelta(minutes=20), r"\d\d:\d\d"),
        (timedelta(days=3), r"\d\d:\d\d|[A-Z][a-z]{2} \d\d"),
    ],
)
def test_time_ticks_are_readable(span: timedelta, expected: str):
    buckets = {T0, T0 + span / 2, T0 + span}
    fig = _drawn(
        plot_reward_by_time(
            _results(reward_by_time=[{"run_id": "a", "bucket_start": t, "mean": 0.5} for t in sorted(buckets)])
        )
    )
    (ax,) = fig.axes
    labels = _ticks(ax.xaxis)
    assert len(labels) >= 2 and all(re.fullmatch(expected, label) for label in labels), labels


def test_length_axes_show_whole_characters():
    # demo prompts: 36 to 40 characters in 20 bins of 0.2 characters (most of them empty)
    holding = {0: 36, 5: 37, 10: 38, 15: 39, 19: 40}
    rows = [
        {
            "run_id": "*",
            "bin": b,
            "bin_start": 36 + b * 0.2,
            "bin_end": 36 + (b + 1) * 0.2,
            "count": 3 if b in holding else 0,
        }
        for b in range(20)
    ]
    results = _results(prompt_length_histogram=rows, completion_length_histogram=[], length_vs_reward=[])
    fig = _drawn(plot_lengths(results))
    prompt = fig.axes[0]
    assert [p.get_x() + p.get_width() / 2 for p in prompt.patches] == [36, 37, 38, 39, 40]
    labels = _ticks(prompt.xaxis)
    assert labels and all(re.fullmatch(r"\d+", label) for label in labels), labels  # was 36.5, 37.5, ...

    (chart,) = [c for c in build_charts(results) if c["title"] == "Lengths"]
    assert chart["data"][0]["x"] == [36, 37, 38, 39, 40]
    assert chart["layout"]["xaxis"]["tickformat"] == "d" and chart["layout"]["xaxis"]["dtick"] == 1


def test_step_axes_show_whole_steps():
    """A short run (three steps): matplotlib's own ticks were 1.00, 1.25, 1.50, ..."""
    steps = [1, 2, 3]
    results = _results(
        reward_by_step=[{"run_id": "a", "step": s, "mean": s / 3} for s in steps],
        judge_by_step=[{"run_id": "a", "step": s, "mean_score_normalized": s / 4} for s in steps],
        train_metrics=[
            {"run_id": "a", "step": s, "loss": 1 / s, "learning_rate": 1e-5, "grad_norm": 1.0, "mean_reward": s / 3}
            for s in steps
        ],
        group_stats=[{"run_id": "a", "step": s, "zero_variance_share": 0.5, "mean_group_std": 0.1} for s in steps],
    )
    for plot in (plot_reward_by_step, plot_train_metrics, plot_group_stats):
        for ax in _drawn(plot(results)).axes:
            labels = _ticks(ax.xaxis)
            assert labels and all(re.fullmatch(r"\d+", label) for label in labels), (plot.__name__, labels)


def test_probe_tokens_show_their_spaces_and_heatmap_cells_enough_digits():
    rows = [
        {"model": "m1", "target_token": " Actually", "mean_probability": 0.00213, "observations": 4},
        {"model": "m1", "target_token": "Actually", "mean_probability": 0.00247, "observations": 4},
        {"model": "m2", "target_token": " Actually", "mean_probability": 0.0186, "observations": 4},
        {"model": "m2", "target_token": "Actually", "mean_probability": 0.0019, "observations": 4},
    ]
    results = _results(logits_by_model=rows, logits_by_level=[])
    heatmap = _drawn(plot_logits_heatmap(results)).axes[0]
    assert _ticks(heatmap.xaxis) == ["\u2423Actually", "Actually"]  # was: two columns labelled Actually
    assert sorted(text.get_text() for text in heatmap.texts) == ["0.0019", "0.00213", "0.00247", "0.0186"]
    bars = _drawn(plot_logits_models(results)).axes[0]
    assert _ticks(bars.xaxis) == ["\u2423Actually", "Actually"]

    charts = {c["title"]: c for c in build_charts(results)}
    heat = charts["Logits heatmap: model x word"]["data"][0]
    assert heat["x"] == ["\u2423Actually", "Actually"] and heat["texttemplate"] == "%{z:.3g}"
    assert {tuple(trace["x"]) for trace in charts["Target-word probability by model"]["data"]} == {
        ("\u2423Actually", "Actually")
    }


def test_dashboard_shows_samples_and_the_right_axis_whole(embedded_settings, tmp_path: Path):
    """Rendered in Chromium: the right axis' title clear of its tick labels and inside the chart, step axes in
    whole steps; the samples shown."""
    _fill(embedded_settings)
    out = tmp_path / "report"
    with open_store(embedded_settings) as store:
        analyze(store, out, samples=2)
    samples = json.loads((out / "samples.json").read_text())
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto((out / "dashboard.html").as_uri())
            page.wait_for_selector("#tw-status[data-rendered]:not([data-rendered=''])")
            assert page.inner_text("#tw-errors") == ""
            boxes = page.evaluate(
                """() => {
                  const chart = [...document.querySelectorAll('.tw-chart')].find((c) => c.querySelector('.g-y2title'));
                  const box = (e) => e.getBoundingClientRect();
                  const ticks = [...chart.querySelectorAll('.y2tick text')].map((t) => box(t).right);
                  const title = box(chart.querySelector('.g-y2title text'));
                  return {ticks: ticks, title: title, svg: box(chart.querySelector('.main-svg'))};
                }"""
            )
            assert boxes["ticks"], boxes
            assert boxes["title"]["left"] >= max(boxes["ticks"]), boxes  # the title does not cover the tick labels
            assert boxes["title"]["right"] <= boxes["svg"]["right"], boxes  # nor is it cut off at the edge
            step_ticks = page.evaluate(
                """() => [...document.querySelectorAll('.tw-chart')]
                  .filter((c) => c.querySelector('.g-xtitle text')?.textContent === 'step')
                  .map((c) => [...c.querySelectorAll('.xtick text')].map((t) => t.textContent))"""
            )
            assert len(step_ticks) >= 2 and all(step_ticks), step_ticks
            assert all(re.fullmatch(r"\d+", tick) for ticks in step_ticks for tick in ticks), step_ticks  # was 0.5
            shown = page.inner_text("#tw-samples")
            for order in ("best", "worst", "random"):
                for sample in samples[order]:
                    assert sample["completion"] in shown
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        finally:
            browser.close()
