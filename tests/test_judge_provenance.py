"""Judge provenance in the store: migration 0008 on an existing store, and the judge_compare query on crafted scores.

Runs on chdb (and on ClickHouse 25.8 through infra/clickhouse_compat.sh); needs no judge server.
"""

from __future__ import annotations

import statistics
from datetime import UTC, datetime
from typing import Any

import pytest

from trainwire.analysis.queries import run_query
from trainwire.config import Settings
from trainwire.events import Event, Interaction, JudgeScore
from trainwire.store.clickhouse import open_store
from trainwire.store.migrations import MIGRATIONS_TABLE, available_migrations

TS = datetime(2026, 12, 1, tzinfo=UTC)


def score(
    run: str, interaction: str, model: str, value: float | None, *, template: str = "default", **fields: Any
) -> Event:
    """A stored judge score: success with ``value`` on 1..5, or a failed judgement when ``value`` is None."""
    verdict = JudgeScore(
        interaction_id=interaction,
        judge_model=model,
        template_version=f"{template}-0123456789",
        success=value is not None,
        score=value,
        score_normalized=None if value is None else (value - 1) / 4,
        error=None if value is not None else "unparseable: no score found",
        template_name=template,
        template_hash="0123456789" + "0" * 54,
        mode=fields.pop("mode", "single"),
        parser_version="2",
        sampling={"temperature": 0.0, "max_tokens": 512},
        config_id=f"{model}/{template}",
        **fields,
    )
    return Event(run_id=run, payload=verdict, ts=TS)


def test_an_existing_store_migrates_and_keeps_its_scores(embedded_settings: Settings):
    with open_store(embedded_settings) as store:
        # a store made before 0008, with a score written then
        store.command(
            f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} "
            "(version UInt32, name String, applied_at DateTime64(6, 'UTC'))"
            " ENGINE = ReplacingMergeTree ORDER BY version"
        )
        for migration in available_migrations():
            if migration.version < 8:
                for statement in migration.statements():
                    store.command(statement)
                store.command(
                    f"INSERT INTO {MIGRATIONS_TABLE} VALUES ({migration.version}, '{migration.name}', now64(6))"
                )
        store.command(
            "INSERT INTO judge_scores (event_id, run_id, ts, schema_version, source_host, source_process,"
            " source_library, interaction_id, judge_model, template_version, success, score, score_normalized,"
            " raw_output, step) VALUES ('old', 'r', '2026-11-30 00:00:00', 1, 'h', 1, 'l', 'i1', 'm1',"
            " 'default-0123456789', true, 4, 0.75, 'Score: 4', 3)"
        )
        assert "0008_judge_provenance" in store.migrate()
        store.insert_events([score("r", "i1", "m1", 2.0, template="ru")])
        rows = store.query_rows(
            "SELECT event_id, score, template_name, template_hash, mode, parser_version, sampling, config_id"
            " FROM judge_scores FINAL ORDER BY event_id"
        )
    old, new = (r for r in rows if r["event_id"] == "old"), (r for r in rows if r["event_id"] != "old")
    assert next(old) == {
        "event_id": "old",
        "score": 4.0,
        "template_name": "",
        "template_hash": "",
        "mode": "",
        "parser_version": "",
        "sampling": "{}",
        "config_id": "",
    }
    stored = next(new)
    assert (stored["score"], stored["template_name"], stored["mode"], stored["config_id"]) == (
        2.0,
        "ru",
        "single",
        "m1/ru",
    )
    assert stored["sampling"] == '{"temperature":0.0,"max_tokens":512}'


def compare(store: Any, **params: Any) -> Any:
    """judge_compare's row, or [] when it has none."""
    rows = run_query(store, "judge_compare", **params).to_pylist()
    return rows[0] if rows else rows


def test_judge_compare_on_the_interactions_both_scored(embedded_settings: Settings):
    a = {"i1": 5.0, "i2": 4.0, "i3": 2.0, "i4": 1.0, "i5": 3.0}
    b = {"i1": 5.0, "i2": 3.0, "i3": 2.0, "i4": None, "i6": 4.0}  # i4 failed with b, i5 not scored, i6 only b's
    events = [score("r1", i, "m1", v) for i, v in a.items()]
    events += [score("r1", i, "m2", v) for i, v in b.items()]
    events += [score("r1", i, "m1", 1.0, template="ru") for i in ("i1", "i2")]  # another template of judge a
    events += [score("r2", "j1", "m1", 5.0), score("r2", "j1", "m2", 1.0)]  # another run
    with open_store(embedded_settings) as store:
        store.migrate()
        store.insert_events(events)
        models = compare(store, a_model="m1", a_template="default", b_model="m2", runs=["r1"])
        templates = compare(store, a_model="m1", a_template="default", b_template="ru", runs=["r1"])
        by_version = compare(store, a_model="m1", a_template="default-0123456789", b_template="ru", runs=["r1"])
        all_runs = compare(store, a_model="m1", a_template="default", b_model="m2")
        nothing = compare(store, a_model="m1", b_model="no-such-judge")
        modes = compare(store, a_mode="single", b_mode="group")
    # both scored i1, i2, i3: a = 5, 4, 2 and b = 5, 3, 2 on 1..5
    na, nb = [1.0, 0.75, 0.25], [1.0, 0.5, 0.25]
    assert models["n"] == 3
    assert models["agreement"] == pytest.approx(2 / 3)
    assert models["pearson"] == pytest.approx(statistics.correlation(na, nb))
    assert (models["mean_score_normalized_a"], models["mean_score_normalized_b"]) == (
        pytest.approx(2 / 3),
        pytest.approx(1.75 / 3),
    )
    assert models["mean_difference"] == pytest.approx(-0.25 / 3)
    assert models["mean_abs_difference"] == pytest.approx(0.25 / 3)
    # m1's default vs ru template on i1, i2: 5, 4 vs 1, 1
    assert templates["n"] == 2 and templates["agreement"] == 0.0
    assert (
        templates["mean_score_normalized_a"],
        templates["mean_score_normalized_b"],
        templates["mean_difference"],
    ) == (0.875, 0.0, -0.875)
    assert templates["pearson"] is None  # ru gave one score to both: no variation
    assert by_version == templates
    assert all_runs["n"] == 4 and all_runs["mean_difference"] == pytest.approx((-0.25 - 1.0) / 4)
    assert nothing == [] and modes == []  # no interaction scored by both sides: no row


def test_the_verdict_that_counts_is_the_score_stored_last_when_a_rescore_shares_its_time(embedded_settings: Settings):
    """A rescore's score carries its request's time, as the first score does: of two scores of one
    interaction at the same time, the one stored last (the rescore) is the verdict, in every view and
    query that picks one (was: whichever argMax met first)."""
    right, other = (
        Event(
            run_id="r",
            payload=Interaction(prompt="2+2?", completion=text, reward=reward, step=3, group_id="g", group_index=index),
            ts=TS,
        )
        for index, (text, reward) in enumerate([("4", 1.0), ("5", 0.0)])
    )
    first = score("r", right.event_id, "m1", 1.0, reasoning="first judge: wrong", step=3, reward=1.0)
    rescored = score("r", right.event_id, "m2", 5.0, reasoning="rescore: right", step=3, reward=1.0)
    with open_store(embedded_settings) as store:
        store.migrate()
        store.insert_events([right, other, first, score("r", other.event_id, "m1", 3.0, reasoning="so-so", step=3)])
        store.insert_events([rescored])  # a later insert: a later inserted_at, the same ts
        verdicts = store.query_rows(
            "SELECT interaction_id, score, score_normalized FROM judge_verdicts(runs = ['r']) ORDER BY score"
        )
        pairs = store.query_rows("SELECT score FROM judge_pairs(runs = ['r'], reward_fn = 'total') ORDER BY score")
        group = run_query(store, "group_completions", run="r", step=3, group="g").to_pylist()
        record = run_query(store, "interaction_record", event_id=right.event_id).to_pylist()
        disagreements = run_query(store, "judge_disagreements", min_gap=0.0).to_pylist()
    assert verdicts == [
        {"interaction_id": other.event_id, "score": 3.0, "score_normalized": 0.5},
        {"interaction_id": right.event_id, "score": 5.0, "score_normalized": 1.0},
    ]
    assert pairs == [{"score": 3.0}, {"score": 5.0}]
    assert [(r["judge_score"], r["judge_reasoning"]) for r in group] == [(5.0, "rescore: right"), (3.0, "so-so")]
    assert [(r["judge_score"], r["judge_model"], r["judge_reasoning"]) for r in record] == [
        (5.0, "m2", "rescore: right")
    ]
    assert [(r["interaction_id"], r["gap"], r["reasoning"]) for r in disagreements] == [
        (other.event_id, 0.5, "so-so"),
        (right.event_id, 0.0, "rescore: right"),
    ]
