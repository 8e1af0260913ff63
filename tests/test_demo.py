"""The main job: `trainwire demo` end to end on the embedded default (short run)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from trainwire.cli import main
from trainwire.config import Settings
from trainwire.store.clickhouse import open_store


def test_demo_runs_the_whole_pipeline(tmp_path: Path) -> None:
    data_dir, output = tmp_path / "data", tmp_path / "out"
    result = CliRunner().invoke(
        main, ["--data-dir", str(data_dir), "demo", "--steps", "6", "--output", str(output), "--judge-sample-rate", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "demo finished" in result.output and "mean reward" in result.output
    for name in ("analysis_results.json", "dashboard.html", "reward_by_step.png", "samples.json"):
        assert (output / "analysis" / name).is_file(), name
    results = json.loads((output / "analysis" / "analysis_results.json").read_text())
    (run,) = results["runs"]
    with open_store(Settings(data_dir=data_dir)) as store:
        counts = store.query_rows(
            "SELECT (SELECT count() FROM interactions FINAL WHERE run_id = {r:String}) AS interactions,"
            " (SELECT count() FROM train_steps FINAL WHERE run_id = {r:String}) AS steps,"
            " (SELECT count() FROM judge_scores FINAL WHERE run_id = {r:String} AND success) AS judged,"
            " (SELECT count() FROM group_stats FINAL WHERE run_id = {r:String}) AS groups",
            {"r": run},
        )[0]
    assert counts["interactions"] == 6 * 2 * 4  # steps x prompts per step x generations
    assert counts["steps"] >= 6 and counts["groups"] >= 5
    assert counts["judged"] == counts["interactions"]  # every completion judged at sample rate 1
