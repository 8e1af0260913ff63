"""The main job: `trainwire demo` end to end on the embedded default (short run)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from click.testing import CliRunner

from trainwire.analysis.queries import get_query
from trainwire.analysis.report import HIGH_QUALITY_THRESHOLD
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
    # the headline gives each reward function, what it measures and what it reached, not the total alone
    for name, measures in [
        ("digit_share", "the share of characters of the completion that are digits"),
        ("exact_answer", "1 when the completion contains the expected answer"),
        ("total", "what GRPO trains on: the sum of digit_share and exact_answer"),
    ]:
        assert re.search(rf"^  {name} +\d\.\d{{3}} -> \d\.\d{{3}}  {re.escape(measures)}", result.output, re.M), name
    # one high-quality threshold, shown with the count, for the report and the fine-tuning data alike
    assert results["threshold"] == HIGH_QUALITY_THRESHOLD == get_query("high_quality").param("threshold").default
    assert f"High-quality answers (reward >= {HIGH_QUALITY_THRESHOLD:g})" in result.output
    assert re.search(
        rf"^fine-tuning data \(the high-quality answers, reward >= {HIGH_QUALITY_THRESHOLD:g}\): "
        r"kept \d+ interactions; dropped ",
        result.output,
        re.M,
    )
    for path in (output / "datasets").glob("*.jsonl"):  # never a replacement character, raw or escaped
        text = path.read_text(encoding="utf-8")
        assert "\ufffd" not in text and "\\ufffd" not in text.lower(), path
    # TRL's log dicts are not printed (a progress line shows the step and reward on a terminal): they are in a file
    assert "{'loss'" not in result.output and "'reward'" not in result.output
    log = output / "training_logs" / f"{run}.jsonl"
    assert f"training logs: {log} (" in result.output
    assert [r["step"] for r in map(json.loads, log.read_text().splitlines()) if "reward" in r] == list(range(1, 7))
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


def test_demo_judge_grades_as_it_was_taught(tmp_path: Path) -> None:
    """The demo's tiny judge, served over the OpenAI API, mostly gives judge_target's grade to answers it never saw."""
    import asyncio
    import statistics

    from transformers import AutoTokenizer

    from trainwire.demo import JUDGE_CONTEXT_TOKENS, judge_examples, judge_target, train_tiny_judge
    from trainwire.judge import Judge, JudgeConfig
    from trainwire.judge.servers import TransformersChatServer

    path = train_tiny_judge(tmp_path / "judge")
    held_out = judge_examples(AutoTokenizer.from_pretrained(path), 60, seed=99)
    server = TransformersChatServer(
        path, model="tiny-judge", max_new_tokens=8, max_input_tokens=JUDGE_CONTEXT_TOKENS
    ).start()
    try:
        judge = Judge(JudgeConfig(base_url=server.base_url, model="tiny-judge", guided_choice=True, concurrency=2))

        async def grade_all() -> list[float | None]:
            scores = await asyncio.gather(*(judge.grade(q, a, reference=r) for q, a, r, _ in held_out))
            return [s.score for s in scores]

        grades = asyncio.run(grade_all())
    finally:
        server.stop()
    targets = [judge_target(a, r) for _, a, r, _ in held_out]
    assert all(g is not None for g in grades)
    assert len(set(grades)) >= 3  # it tells answers apart, not one grade for all
    assert statistics.correlation(grades, targets) > 0.6
    assert sum(g == t for g, t in zip(grades, targets, strict=True)) / len(held_out) > 0.4
