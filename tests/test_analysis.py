"""The analysis queries, the report and the ``query`` / ``analyze`` commands on a crafted dataset in chdb."""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from trainwire.analysis.commands import analyze_command, query_command
from trainwire.analysis.queries import QueryError, get_query, list_queries, parse_query, run_query
from trainwire.analysis.report import HIGH_QUALITY_THRESHOLD, AnalysisResults, to_jsonable, write_results
from trainwire.config import Settings
from trainwire.events import Alert, Event, Interaction, JudgeScore, Logits, RewardStatsPayload, TrainStep
from trainwire.processors.stats import GroupStatsAggregator, StatsConfig, pearson, spearman
from trainwire.store.clickhouse import open_store

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)

# (run, step, group, reward, rewards, prompt, completion, completion_tokens, success, seconds after T0)
ROWS = [
    ("a", 0, "g0", 1.0, {"acc": 1.0, "fmt": 0.0}, "ab", "abcd", 2, True, 0),
    ("a", 0, "g0", 1.0, {"acc": 1.0, "fmt": 0.0}, "abc", "abcdefgh", 4, True, 10),
    ("a", 0, "g1", 0.0, {"acc": 0.0, "fmt": 0.0}, "abcd", "ab", 1, True, 20),
    ("a", 0, "g1", 1.0, {"acc": 1.0, "fmt": 0.0}, "ab", "abcdef", 3, True, 30),
    ("a", 1, "g2", 2.0, {"acc": 1.0, "fmt": 1.0}, "абв", "abcdefghij", 5, True, 70),
    ("a", 1, "g2", 0.5, {"acc": 0.5, "fmt": 0.0}, "ab", "abcd", None, True, 80),
    ("a", 1, None, None, {}, "a", "x", None, True, 90),
    ("a", None, None, math.nan, {}, "abcdef", "", None, False, 130),
    ("b", 0, "g0", 0.0, {"acc": 0.0}, "q", "xx", 1, True, 0),
    ("b", 0, "g0", 0.0, {"acc": 0.0}, "q", "xxxx", 2, True, 5),
    ("b", 0, "g1", 1.5, {"acc": 1.0}, "q", "xxxxxx", 3, True, 6),
    ("b", 0, "g1", 0.5, {"acc": 1.0}, "q", "xxxxxxxx", 4, True, 7),
]


def _interactions() -> list[Event]:
    events = []
    for i, (run, step, group, reward, rewards, prompt, completion, ctok, ok, sec) in enumerate(ROWS):
        payload = Interaction(
            prompt=prompt,
            completion=completion,
            reward=reward,
            rewards=rewards,
            success=ok,
            step=step,
            group_id=group,
            prompt_tokens=len(prompt),
            completion_tokens=ctok,
            metadata={"i": i},
        )
        events.append(Event(run, payload, event_id=f"ev-{i:02d}", ts=T0 + timedelta(seconds=sec)))
    return events


INTERACTIONS = _interactions()
JUDGED = {"ev-00": 0.9, "ev-01": 0.8, "ev-02": 0.2, "ev-03": 0.6, "ev-04": 1.0}  # ev-02 re-judged: 0.1 then 0.2


def _judge_scores() -> list[Event]:
    def score(i: int, target: str, value: float | None, sec: int, ok: bool = True) -> Event:
        payload = JudgeScore(
            interaction_id=target,
            judge_model="judge",
            template_version="v1",
            success=ok,
            score=None if value is None else value * 10,
            score_normalized=value,
        )
        return Event("a", payload, event_id=f"js-{i}", ts=T0 + timedelta(seconds=sec))

    events = [score(i, target, value, 200 + i) for i, (target, value) in enumerate(JUDGED.items())]
    events.append(score(10, "ev-02", 0.1, 150))  # the earlier verdict on ev-02: the later one (0.2) counts
    events.append(score(11, "ev-05", None, 210, ok=False))
    return events


def _others() -> list[Event]:
    events = [
        Event("a", TrainStep(step=0, loss=2.0, learning_rate=1e-5, grad_norm=1.5, epoch=0.0), ts=T0),
        Event(
            "a",
            TrainStep(step=1, loss=1.5, learning_rate=2e-5, grad_norm=1.0, epoch=0.5),
            ts=T0 + timedelta(seconds=60),
        ),
        Event(
            "a",
            TrainStep(step=1, loss=1.25, learning_rate=2e-5, grad_norm=0.5, epoch=0.5),
            ts=T0 + timedelta(seconds=61),
        ),
        Event(
            "a", Alert(rule="reward_collapse", severity="warning", message="m1", step=1), ts=T0 + timedelta(seconds=100)
        ),
        Event(
            "a", Alert(rule="reward_collapse", severity="warning", message="m2", step=3), ts=T0 + timedelta(seconds=300)
        ),
        Event(
            "b", Alert(rule="grad_explosion", severity="critical", message="m3", step=0), ts=T0 + timedelta(seconds=50)
        ),
    ]
    # logits: model x word x level x correct; probability = base(model) + 0.01 * level + (0.05 if correct)
    for model, base in (("m1", 0.1), ("m2", 0.3)):
        for word in ("wait", "so"):
            for level in (1, 2):
                for correct in (True, False):
                    sample = f"{level}-{correct}"
                    prob = base + 0.01 * level + (0.05 if correct else 0.0) + (0.1 if word == "so" else 0.0)
                    events.append(
                        Event(
                            "probe",
                            Logits(
                                model=model,
                                sample_id=sample,
                                position=level - 1,
                                target_token=word,
                                logit=math.log(prob),
                                probability=prob,
                                rank=level,
                                level=level,
                                correct=correct,
                            ),
                            ts=T0,
                        )
                    )
    return events


EVENTS = INTERACTIONS + _judge_scores() + _others()  # built once: a redelivery sends these same events again


def _rewards(run: str | None = None, fn: str = "total") -> list[float]:
    out = []
    for run_id, _step, _g, reward, rewards, *_ in ROWS:
        if run is not None and run_id != run:
            continue
        value = reward if fn == "total" else rewards.get(fn)
        if value is not None and math.isfinite(value):
            out.append(value)
    return out


def _quantile(values: list[float], q: float) -> float:
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _pstd(values: list[float]) -> float:
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / len(values))


def _histogram(values: list[float], bins: int) -> list[int]:
    lo, hi = min(values), max(values)
    counts = [0] * bins
    for v in values:
        counts[min(int((v - lo) / ((hi - lo) / bins)), bins - 1)] += 1
    return counts


def _median(values: list[float]) -> float:
    return _quantile(values, 0.5)


def _reward_by_time(bucket_s: int, fn: str = "total", rows: list[tuple] | None = None) -> list[dict]:
    """What reward_by_time must return for ``rows`` (``ROWS`` when None), computed row by row."""
    buckets: dict[tuple[str, int], list] = {}
    for run, _step, _g, reward, rewards, *_rest, sec in ROWS if rows is None else rows:
        buckets.setdefault((run, sec // bucket_s), []).append(reward if fn == "total" else rewards.get(fn))
    out = []
    for (run, b), values in sorted(buckets.items()):
        finite = [v for v in values if v is not None and math.isfinite(v)]
        out.append(
            {
                "run_id": run,
                "bucket_start": T0 + timedelta(seconds=b * bucket_s),
                "interactions": len(values),
                "rewarded": len(finite),
                "mean": sum(finite) / len(finite) if finite else None,
                "std": _pstd(finite) if finite else None,
                "min": min(finite) if finite else None,
                "max": max(finite) if finite else None,
            }
        )
    return out


@pytest.fixture
def store(embedded_settings):
    with open_store(embedded_settings) as store:
        store.migrate()
        store.insert_events(EVENTS)
        yield store


def _close(a: object, b: object) -> bool:
    """Equal, floats up to rounding (parallel aggregation may sum in another order)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=1e-9, abs=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _by(rows: list[dict], *keys: str) -> dict:
    return {tuple(r[k] for k in keys) if len(keys) > 1 else r[keys[0]]: r for r in rows}


# --------------------------------------------------------------------------- the library


def test_every_query_has_a_documented_header_and_runs_on_an_empty_store(embedded_settings):
    queries = list_queries()
    assert len(queries) >= 20
    with open_store(embedded_settings) as store:
        store.migrate()
        for query in queries:
            assert query.description, query.name
            assert all(p.type for p in query.params)
            params = {"order": "random"} if query.name == "samples" else {}
            table = run_query(store, query.name, **params)
            if query.name not in ("reward_histogram", "length_histogram"):
                assert table.num_rows == 0, query.name


def test_parameter_errors_name_the_parameter(store):
    with pytest.raises(QueryError, match="unknown parameter bogus"):
        run_query(store, "reward_summary", bogus=1)
    with pytest.raises(QueryError, match=r"parameter bins \(UInt32\)"):
        run_query(store, "reward_histogram", bins="many")
    with pytest.raises(QueryError, match="expected one of prompt_chars, completion_chars"):
        run_query(store, "length_histogram", measure="words")
    with pytest.raises(QueryError, match="no such query"):
        run_query(store, "nope")
    query = parse_query(
        "-- name: needs\n-- description: d\n-- param: step Int64 -- required\n-- param: x Float64 = 1.5\n"
        "SELECT {step:Int64} + {x:Float64} AS v"
    )
    assert query.param("step").required and not query.param("x").required
    with pytest.raises(QueryError, match="missing required parameter step"):
        query.bind({})
    assert query.bind({"step": "3"}) == {"step": 3, "x": 1.5}
    with pytest.raises(QueryError, match="differ from those used"):
        parse_query("-- name: bad\n-- param: a Int64 = 1\nSELECT {b:Int64}")


def test_reward_summary_histogram_and_high_quality(store):
    rows = _by(run_query(store, "reward_summary").to_pylist(), "run_id")
    assert set(rows) == {"a", "b"}
    a = rows["a"]
    values = _rewards("a")
    assert (a["interactions"], a["rewarded"]) == (8, 6)
    assert a["mean"] == pytest.approx(sum(values) / 6)
    assert a["std"] == pytest.approx(_pstd(values))
    assert (a["min"], a["max"]) == (0.0, 2.0)
    for column, q in (("p10", 0.1), ("p25", 0.25), ("median", 0.5), ("p75", 0.75), ("p90", 0.9)):
        assert a[column] == pytest.approx(_quantile(values, q)), column
    everything = run_query(store, "reward_summary", by_run=False).to_pylist()
    assert [(r["run_id"], r["rewarded"]) for r in everything] == [("*", 10)]
    only_b = run_query(store, "reward_summary", runs=["b"], reward_fn="acc").to_pylist()
    assert [(r["run_id"], r["mean"]) for r in only_b] == [("b", 0.5)]

    hist = run_query(store, "reward_histogram", bins=4).to_pylist()
    assert [(r["bin"], r["bin_start"], r["bin_end"], r["count"]) for r in hist] == [
        (0, 0.0, 0.5, 3),
        (1, 0.5, 1.0, 2),
        (2, 1.0, 1.5, 3),
        (3, 1.5, 2.0, 2),
    ]
    per_run = run_query(store, "reward_histogram", bins=4, by_run=True).to_pylist()
    assert [r["count"] for r in per_run if r["run_id"] == "b"] == [2, 1, 0, 1]
    fmt = run_query(store, "reward_histogram", runs=["a"], reward_fn="fmt", bins=2).to_pylist()
    assert [(r["bin_start"], r["bin_end"], r["count"]) for r in fmt] == [(0.0, 0.5, 5), (0.5, 1.0, 1)]
    constant = run_query(store, "reward_histogram", runs=["b"], reward_fn="acc", bins=5).to_pylist()
    assert [(r["bin"], r["count"]) for r in constant] == [(0, 2), (1, 0), (2, 0), (3, 0), (4, 2)]
    single = run_query(store, "reward_histogram", runs=["a"], reward_fn="acc", bins=3, by_run=True).to_pylist()
    assert sum(r["count"] for r in single) == 6

    hq = _by(run_query(store, "high_quality", threshold=1.0).to_pylist(), "run_id")
    assert (hq["a"]["rewarded"], hq["a"]["high_quality"]) == (6, 4)
    assert hq["a"]["high_quality_share"] == pytest.approx(4 / 6)
    assert (hq["b"]["high_quality"], hq["b"]["high_quality_share"]) == (1, 0.25)


def test_reward_over_steps_time_and_functions(store):
    steps = _by(run_query(store, "reward_by_step").to_pylist(), "run_id", "step")
    assert set(steps) == {("a", 0), ("a", 1), ("b", 0)}
    assert (steps["a", 1]["interactions"], steps["a", 1]["rewarded"], steps["a", 1]["mean"]) == (3, 2, 1.25)
    assert steps["a", 0]["std"] == pytest.approx(_pstd([1.0, 1.0, 0.0, 1.0]))
    assert (steps["b", 0]["min"], steps["b", 0]["max"]) == (0.0, 1.5)

    by_minute = run_query(store, "reward_by_time", runs=["a"], bucket_s=60).to_pylist()
    assert [(r["bucket_start"], r["interactions"], r["rewarded"], r["mean"]) for r in by_minute] == [
        (T0, 4, 4, 0.75),
        (T0 + timedelta(minutes=1), 3, 2, 1.25),
        (T0 + timedelta(minutes=2), 1, 0, None),
    ]

    # 15 s buckets split steps a/0 (0-30 s) and a/1 (70-90 s): those are read row by row, b/0 (0-7 s)
    # and the interaction without a step come from the per-step aggregates
    for fn in ("total", "acc"):
        by_15s = run_query(store, "reward_by_time", reward_fn=fn, bucket_s=15).to_pylist()
        assert _close(by_15s, _reward_by_time(15, fn)), fn

    fns = _by(run_query(store, "reward_functions").to_pylist(), "run_id", "reward_fn")
    assert [k for k in fns if k[0] == "a"] == [("a", "total"), ("a", "acc"), ("a", "fmt")]
    assert fns["a", "acc"]["count"] == 6
    assert fns["a", "acc"]["mean"] == pytest.approx(sum(_rewards("a", "acc")) / 6)
    assert fns["a", "fmt"]["std"] == pytest.approx(_pstd(_rewards("a", "fmt")))
    assert (fns["b", "total"]["min"], fns["b", "total"]["max"], fns["b", "acc"]["count"]) == (0.0, 1.5, 4)


def test_reward_by_time_from_the_per_step_aggregates(embedded_settings):
    # two runs of 100 steps, two interactions each, 10 s apart: with 60 s buckets one step (17) is
    # split between two buckets, the others add their per-step aggregate; run "u" also holds a
    # redelivered event, so it is read row by row
    rows = []
    for run in ("t", "u"):
        for step in range(100):
            for k, sec in enumerate((step * 10, step * 10 + (25 if step == 17 else 1))):
                reward = [0.0, 0.5, 1.0, None, math.nan][(step + k) % 5] if run == "t" else step / 7 + k
                rows.append((run, step, None, reward, {"acc": float(k)}, "p", "c", None, True, sec))
    events = [
        Event(
            run,
            Interaction(prompt="p", completion="c", reward=r, rewards=fns, step=step),
            ts=T0 + timedelta(seconds=sec),
        )
        for run, step, _g, r, fns, *_rest, sec in rows
    ]
    with open_store(embedded_settings) as store:
        store.migrate()
        store.insert_events(events)
        store.insert_events([e for e in events if e.run_id == "u"][:3])
        for fn in ("total", "acc"):
            got = run_query(store, "reward_by_time", reward_fn=fn, bucket_s=60).to_pylist()
            assert _close(got, _reward_by_time(60, fn, rows)), fn


def test_lengths_and_their_relation_to_reward(store):
    rows = _by(run_query(store, "lengths", runs=["a"]).to_pylist(), "measure")
    assert list(rows) == ["prompt_chars", "completion_chars", "prompt_tokens", "completion_tokens"]
    prompt_chars = [len(r[5]) for r in ROWS if r[0] == "a"]
    assert rows["prompt_chars"]["count"] == 8
    assert rows["prompt_chars"]["mean"] == pytest.approx(sum(prompt_chars) / 8)  # "абв" counts 3, not 6 bytes
    assert rows["prompt_chars"]["max"] == 6
    tokens = [r[7] for r in ROWS if r[0] == "a" and r[7] is not None]
    assert rows["completion_tokens"]["count"] == len(tokens)
    assert rows["completion_tokens"]["median"] == pytest.approx(_median(tokens))

    hist = run_query(store, "length_histogram", measure="completion_chars", bins=5).to_pylist()
    assert [r["count"] for r in hist] == _histogram([len(r[6]) for r in ROWS], 5)
    assert (hist[0]["bin_start"], hist[-1]["bin_end"]) == (0.0, 10.0)

    buckets = run_query(store, "length_vs_reward", measure="completion_tokens", bins=2).to_pylist()
    # completion_tokens 1..5 -> [1, 3) and [3, 5]: tokens 1, 2 vs 3, 4, 5
    low = [r[3] for r in ROWS if r[7] is not None and r[7] < 3]
    high = [r[3] for r in ROWS if r[7] is not None and r[7] >= 3]
    assert [(r["bucket"], r["interactions"]) for r in buckets] == [(0, len(low)), (1, len(high))]
    assert buckets[0]["mean_reward"] == pytest.approx(sum(low) / len(low))
    assert buckets[1]["mean_reward"] == pytest.approx(sum(high) / len(high))

    corr = _by(run_query(store, "length_reward_correlation").to_pylist(), "run_id")
    pairs = [(len(r[6]), r[3]) for r in ROWS if r[0] == "a" and r[3] is not None and math.isfinite(r[3])]
    assert corr["a"]["rewarded"] == 6
    assert corr["a"]["completion_chars_corr"] == pytest.approx(pearson([p[0] for p in pairs], [p[1] for p in pairs]))
    assert corr["b"]["prompt_chars_corr"] is None  # every prompt of b is one character: no variation


def test_group_stats_match_the_stream_processor(store):
    aggregator = GroupStatsAggregator(StatsConfig())
    emitted = [stats for event in INTERACTIONS for stats in aggregator.add_interaction(event)]
    expected = {(g.run_id, g.step): g for g in emitted + aggregator.flush()}
    rows = _by(run_query(store, "group_stats").to_pylist(), "run_id", "step")
    assert set(rows) == set(expected)
    for key, stats in expected.items():
        row = rows[key]
        for column in ("interactions", "groups", "zero_variance_groups"):
            assert row[column] == getattr(stats, column), (key, column)
        for column in ("zero_variance_share", "mean_group_std", "reward_mean", "reward_std", "length_reward_corr"):
            want = getattr(stats, column)
            assert (row[column] is None) == (want is None), (key, column)
            if want is not None:
                assert row[column] == pytest.approx(want, abs=1e-9), (key, column)
    assert (rows["a", 0]["groups"], rows["a", 0]["zero_variance_groups"], rows["a", 0]["mean_group_std"]) == (
        2,
        1,
        0.25,
    )


def test_group_stats_stored_reads_the_published_table(store):
    from trainwire.events import GroupStatsPayload

    payload = GroupStatsPayload(step=3, interactions=8, groups=2, zero_variance_groups=1, zero_variance_share=0.5)
    store.insert_events([Event("a", payload, ts=T0)] * 2)  # delivered twice: counted once
    rows = run_query(store, "group_stats_stored").to_pylist()
    assert [(r["run_id"], r["step"], r["groups"], r["zero_variance_share"]) for r in rows] == [("a", 3, 2, 0.5)]


def test_judge_agreement_and_judge_by_step(store):
    rows = _by(run_query(store, "judge_agreement").to_pylist(), "run_id")
    a = rows["a"]
    judge = list(JUDGED.values())
    reward = [ROWS[int(k[3:])][3] for k in JUDGED]
    assert (a["judged"], a["failed"], a["pairs"]) == (6, 1, 5)
    assert a["mean_score_normalized"] == pytest.approx(sum(judge) / 5)
    assert a["mean_reward"] == pytest.approx(sum(reward) / 5)
    assert a["pearson"] == pytest.approx(pearson(judge, reward))
    assert a["spearman"] == pytest.approx(spearman(judge, reward))
    mj, mr = _median(judge), _median(reward)
    same = sum(1 for j, r in zip(judge, reward, strict=True) if (j > mj) - (j < mj) == (r > mr) - (r < mr))
    assert a["median_agreement"] == pytest.approx(same / 5)
    assert "b" not in rows

    steps = _by(run_query(store, "judge_by_step").to_pylist(), "run_id", "step")
    assert steps["a", 0]["pairs"] == 4
    assert steps["a", 0]["mean_score_normalized"] == pytest.approx((0.9 + 0.8 + 0.2 + 0.6) / 4)
    assert steps["a", 0]["mean_reward"] == pytest.approx(0.75)
    assert (steps["a", 1]["pairs"], steps["a", 1]["mean_score_normalized"], steps["a", 1]["mean_reward"]) == (
        1,
        1.0,
        2.0,
    )


def test_a_reward_function_without_values_gives_no_pairs(store):
    """Pairs need a value of the reward function: none for one no interaction has (was: its NULLs
    counted as 0.0, the alias assumeNotNull(reward) shadowing the column in WHERE); a judged
    interaction without a step is not put on step 0."""
    store.insert_events([Event("a", JudgeScore("ev-07", "judge", "v1", score=5, score_normalized=1.0), ts=T0)])
    (row,) = run_query(store, "judge_agreement", reward_fn="accuracy").to_pylist()
    assert (row["pairs"], row["mean_reward"], row["median_agreement"]) == (0, None, None)
    assert run_query(store, "judge_disagreements", reward_fn="accuracy", min_gap=0.0).num_rows == 0
    assert run_query(store, "judge_confusion", reward_fn="accuracy").num_rows == 0
    steps = _by(run_query(store, "judge_by_step").to_pylist(), "run_id", "step")
    assert set(steps) == {("a", 0), ("a", 1)} and steps["a", 0]["pairs"] == 4


def test_one_name_per_judge_scale_in_a_store_migrated_before(embedded_settings, monkeypatch):
    """`score` is the judge's own scale and `score_normalized` 0..1 in every view and query (was:
    judge_pairs.score and mean_judge on 0..1 beside judge_scores.score on the judge's scale); a
    store made by an older release (its migrations only: the list is cut) gets the new views."""
    import trainwire.store.migrations as migrations

    shipped = migrations.available_migrations()
    monkeypatch.setattr(migrations, "available_migrations", lambda: [m for m in shipped if m.version < 9])
    with open_store(embedded_settings) as store:
        store.migrate()
        store.insert_events(EVENTS)
        monkeypatch.undo()
        assert "0009_new_user_fixes" in store.migrate()
        pairs = store.query_rows("SELECT * FROM judge_pairs(runs = [], reward_fn = 'total') ORDER BY interaction_id")
        assert [(r["interaction_id"], r["score"], r["score_normalized"]) for r in pairs] == [
            (target, value * 10, value) for target, value in sorted(JUDGED.items())
        ]
        verdicts = store.query_rows("SELECT * FROM judge_verdicts(runs = []) ORDER BY interaction_id")
        assert verdicts == [
            {"interaction_id": target, "score": value * 10, "score_normalized": value}
            for target, value in sorted(JUDGED.items())
        ]
        for query in ("judge_agreement", "judge_by_step", "runs_latest"):
            columns = run_query(store, query).column_names
            assert "mean_score_normalized" in columns and "mean_judge" not in columns, query
        (gap,) = run_query(store, "judge_disagreements", min_gap=0.35).to_pylist()  # 0.9 vs 1.0 scaled to 0.5
        assert (gap["interaction_id"], gap["score"], gap["score_normalized"]) == ("ev-00", 9.0, 0.9)


def _carrying(events: list[Event], keep: set[str]) -> list[Event]:
    """``events`` with the judge scores on ``keep`` carrying their interaction's step and rewards,
    as the judge worker writes them (the scores of ``_judge_scores`` carry nothing)."""
    interactions = {e.event_id: e.payload for e in INTERACTIONS}
    out = []
    for event in events:
        payload = event.payload
        if isinstance(payload, JudgeScore) and payload.interaction_id in keep:
            judged = interactions[payload.interaction_id]
            payload = dataclasses.replace(payload, step=judged.step, reward=judged.reward, rewards=judged.rewards)
            event = dataclasses.replace(event, payload=payload)
        out.append(event)
    return out


@pytest.mark.parametrize("carried", ["all", "some"])
def test_scores_carrying_their_reward_give_the_same_judge_answers(tmp_path, carried):
    """judge_pairs pairs a score that carries its interaction's reward without a join: same rows."""
    judged = {e.payload.interaction_id for e in _judge_scores()}
    keep = judged if carried == "all" else {"ev-00", "ev-02"}
    answers = []
    for name, events in (("joined", EVENTS), ("carried", _carrying(EVENTS, keep))):
        with open_store(Settings(data_dir=tmp_path / name)) as store:
            store.migrate()
            store.insert_events(events)
            if name == "carried" and carried == "all":  # no score needs its interaction
                rows = store.query_rows("SELECT count() AS n FROM judge_scores WHERE reward IS NULL AND empty(rewards)")
                assert rows == [{"n": 0}]
            answers.append(
                {
                    (query, repr(params)): run_query(store, query, **params).to_pylist()
                    for query in ("judge_by_step", "judge_agreement")
                    for params in [{}, {"runs": ["a"]}, *_VARIANTS.get(query, [])]
                }
            )
    joined, carrying = answers
    assert joined.keys() == carrying.keys()
    for key, rows in joined.items():
        assert rows and _close(carrying[key], rows), key


def test_training_metrics_alerts_and_overview(store):
    rows = run_query(store, "train_metrics").to_pylist()
    assert [(r["run_id"], r["step"], r["loss"], r["grad_norm"], r["interactions"], r["mean_reward"]) for r in rows] == [
        ("a", 0, 2.0, 1.5, 4, 0.75),
        ("a", 1, 1.25, 0.5, 3, 1.25),  # the later train_steps row of step 1 wins
    ]
    alerts = run_query(store, "alerts").to_pylist()
    assert [(a["run_id"], a["rule"], a["step"]) for a in alerts] == [
        ("b", "grad_explosion", 0),
        ("a", "reward_collapse", 1),
        ("a", "reward_collapse", 3),
    ]
    assert len(run_query(store, "alerts", runs=["a"], limit=1).to_pylist()) == 1
    summary = _by(run_query(store, "alerts_summary").to_pylist(), "run_id", "rule")
    assert (summary["a", "reward_collapse"]["alerts"], summary["a", "reward_collapse"]["last_step"]) == (2, 3)

    overview = _by(run_query(store, "runs_overview").to_pylist(), "run_id")
    assert set(overview) == {"a", "b", "probe"}
    a = overview["a"]
    assert (a["interactions"], a["rewarded"], a["judge_scores"], a["train_steps"], a["alerts"]) == (8, 6, 7, 3, 2)
    assert a["success_share"] == pytest.approx(7 / 8)
    assert a["mean_reward"] == pytest.approx(sum(_rewards("a")) / 6)
    assert (a["min_step"], a["max_step"], a["first_ts"]) == (0, 1, T0)
    assert overview["probe"]["logits"] == 16


def test_logits_queries(store):
    by_model = _by(run_query(store, "logits_by_model").to_pylist(), "model", "target_token")
    # m1 wait: levels 1, 2 x correct/wrong: 0.1 + {0.01, 0.02} + {0.05, 0}
    assert by_model["m1", "wait"]["observations"] == 4
    assert by_model["m1", "wait"]["samples"] == 4
    assert by_model["m1", "wait"]["mean_probability"] == pytest.approx(0.1 + 0.015 + 0.025)
    assert by_model["m2", "so"]["mean_probability"] == pytest.approx(0.3 + 0.015 + 0.025 + 0.1)
    levels = _by(run_query(store, "logits_by_level", model="m1").to_pylist(), "level", "target_token")
    assert set(levels) == {(1, "wait"), (1, "so"), (2, "wait"), (2, "so")}
    assert levels[2, "wait"]["mean_probability"] == pytest.approx(0.1 + 0.02 + 0.025)
    right = _by(run_query(store, "logits_by_correctness").to_pylist(), "model", "correct", "target_token")
    assert right["m2", True, "wait"]["mean_probability"] == pytest.approx(0.3 + 0.015 + 0.05)
    assert right["m2", False, "wait"]["mean_probability"] == pytest.approx(0.3 + 0.015)
    positions = _by(
        run_query(store, "logits_by_position", bucket=2).to_pylist(), "model", "position_start", "target_token"
    )
    assert set(p[1] for p in positions) == {0}
    assert positions["m1", 0, "so"]["observations"] == 4


def test_samples_best_worst_and_seeded_random(store):
    best = run_query(store, "samples", order="best", limit=2).to_pylist()
    assert [(s["event_id"], s["reward"]) for s in best] == [("ev-04", 2.0), ("ev-10", 1.5)]
    worst = run_query(store, "samples", order="worst", limit=3).to_pylist()
    assert [s["event_id"] for s in worst] == ["ev-02", "ev-08", "ev-09"]
    first = run_query(store, "samples", order="random", limit=5, seed=7).to_pylist()
    again = run_query(store, "samples", order="random", limit=5, seed=7).to_pylist()
    other = run_query(store, "samples", order="random", limit=5, seed=8).to_pylist()
    assert [s["event_id"] for s in first] == [s["event_id"] for s in again]
    assert len(first) == 5 and [s["event_id"] for s in first] != [s["event_id"] for s in other]


def _ids(rows: list[dict]) -> list[str]:
    return [r["event_id"] for r in rows]


def test_the_web_ui_queries_for_groups_and_samples(store):
    """step_groups, group_completions, search_interactions, interaction_record (the UI's groups and samples)."""
    assert [r["table"] for r in run_query(store, "store_status").to_pylist()] == [
        "alerts",
        "interactions",
        "judge_scores",
        "logits",
        "train_steps",
    ]
    groups = run_query(store, "step_groups", run="a", step=0).to_pylist()
    summary = [
        (g["group_id"], g["prompt"], g["size"], g["rewarded"], g["reward_mean"], g["reward_std"]) for g in groups
    ]
    assert summary == [("g0", "ab", 2, 2, 1.0, 0.0), ("g1", "abcd", 2, 2, 0.5, 0.5)]
    assert [g["zero_variance"] for g in groups] == [True, False]
    assert [
        g["group_id"] for g in run_query(store, "step_groups", run="a", step=0, zero_variance_only=True).to_pylist()
    ] == ["g0"]
    assert [g["group_id"] for g in run_query(store, "step_groups", run="a", step=0, order="worst").to_pylist()] == [
        "g1",
        "g0",
    ]
    assert [g["group_id"] for g in run_query(store, "step_groups", run="a", step=0, search="ABCDEFGH").to_pylist()] == [
        "g0"
    ]
    assert [g["group_id"] for g in run_query(store, "step_groups", run="a", step=0, search="ABCDEF").to_pylist()] == [
        "g0",
        "g1",
    ]
    (g2,) = run_query(store, "step_groups", run="a", step=1).to_pylist()  # the interaction without a group: none
    assert (g2["group_id"], g2["size"], g2["reward_mean"], g2["reward_std"]) == ("g2", 2, 1.25, 0.75)

    g1 = run_query(store, "group_completions", run="a", step=0, group="g1").to_pylist()
    assert [(c["event_id"], c["reward"], dict(c["rewards"]), c["completion_chars"]) for c in g1] == [
        ("ev-02", 0.0, {"acc": 0.0, "fmt": 0.0}, 2),
        ("ev-03", 1.0, {"acc": 1.0, "fmt": 0.0}, 6),
    ]
    assert [(c["judge_score_normalized"], c["judge_score"]) for c in g1] == [(0.2, 2.0), (0.6, 6.0)]  # ev-02: the later

    secs = {f"ev-{i:02d}": row[-1] for i, row in enumerate(ROWS)}
    newest_first = sorted(secs, key=lambda e: (-secs[e], e))
    assert _ids(run_query(store, "search_interactions").to_pylist()) == newest_first
    assert _ids(run_query(store, "search_interactions", limit=2, offset=1).to_pylist()) == newest_first[1:3]
    judged = [e for e in newest_first if e in JUDGED]
    assert _ids(run_query(store, "search_interactions", judged="yes").to_pylist()) == judged
    assert _ids(run_query(store, "search_interactions", judged="no").to_pylist()) == [
        e for e in newest_first if e not in JUDGED
    ]
    in_range = [e for e in newest_first if (r := ROWS[int(e[3:])][3]) is not None and 0.5 <= r <= 1.0]
    assert _ids(run_query(store, "search_interactions", reward_min=0.5, reward_max=1.0).to_pylist()) == in_range
    assert _ids(run_query(store, "search_interactions", text="АБВ").to_pylist()) == ["ev-04"]
    assert _ids(run_query(store, "search_interactions", success="false").to_pylist()) == ["ev-07"]
    assert _ids(run_query(store, "search_interactions", runs=["a"], step_min=1).to_pylist()) == [
        "ev-06",
        "ev-05",
        "ev-04",
    ]
    assert set(_ids(run_query(store, "search_interactions", step_max=0).to_pylist())) == {
        f"ev-{i:02d}" for i, row in enumerate(ROWS) if row[1] == 0
    }

    (record,) = run_query(store, "interaction_record", event_id="ev-02", run="a").to_pylist()
    assert (record["prompt"], record["completion"], record["judge_score_normalized"], record["judge_model"]) == (
        "abcd",
        "ab",
        0.2,
        "judge",
    )
    (failed,) = run_query(store, "interaction_record", event_id="ev-05").to_pylist()
    assert (failed["judge_score"], failed["judge_failures"]) == (None, 1)
    (nan,) = run_query(store, "interaction_record", event_id="ev-07").to_pylist()
    assert nan["reward"] is None and nan["success"] is False


def test_the_web_ui_queries_for_runs_judge_and_metrics(store):
    """runs_latest, run_progress, train_step_metrics, reward_stats_by_step and the judge view's queries."""
    judge = list(JUDGED.values())
    reward = [ROWS[int(k[3:])][3] for k in JUDGED]
    (latest,) = run_query(store, "runs_latest").to_pylist()
    assert (latest["run_id"], latest["judged"], latest["latest_window_mean"]) == ("a", 6, None)
    assert latest["mean_score_normalized"] == pytest.approx(
        (sum(judge) + 0.1) / 6
    )  # every successful score: ev-02's two

    (progress,) = run_query(store, "run_progress", run="a").to_pylist()
    assert (progress["rows"], progress["last_step"]) == (8 + 3 + 7 + 2, 3)  # interactions, steps, scores, alerts
    assert run_query(store, "run_progress", run="nobody").num_rows == 0

    metrics = [(r["metric"], r["step"], r["value"]) for r in run_query(store, "train_step_metrics").to_pylist()]
    assert metrics == [
        ("epoch", 0, 0.0),
        ("epoch", 1, 0.5),
        ("grad_norm", 0, 1.5),
        ("grad_norm", 1, 0.5),  # the later train_steps row of step 1
        ("learning_rate", 0, 1e-5),
        ("learning_rate", 1, 2e-5),
        ("loss", 0, 2.0),
        ("loss", 1, 1.25),
    ]
    window = {"window_start_us": 0, "window_end_us": 10, "reward_fn": "acc", "count": 4, "mean": 0.5}
    window |= {"std": 0.5, "min": 0.0, "max": 1.0, "p10": 0.0, "p50": 0.5, "p90": 1.0}
    store.insert_events(
        [
            Event("a", TrainStep(step=2, loss=1.0, metrics={"kl": 0.5}), ts=T0 + timedelta(seconds=400)),
            Event("a", RewardStatsPayload(window="steps", step_start=0, step_end=2, **window)),
            Event("a", RewardStatsPayload(window="time", **window)),
        ]
    )
    step2 = [(r["metric"], r["value"]) for r in run_query(store, "train_step_metrics").to_pylist() if r["step"] == 2]
    assert step2 == [("kl", 0.5), ("loss", 1.0)]
    (window,) = run_query(store, "reward_stats_by_step", runs=["a"]).to_pylist()
    assert (window["reward_fn"], window["step_start"], window["step_end"], window["p10"], window["p90"]) == (
        "acc",
        0,
        2,
        0,
        1,
    )
    (latest,) = run_query(store, "runs_latest", reward_fn="acc").to_pylist()
    assert (latest["latest_window_mean"], latest["latest_window_step_end"]) == (0.5, 2)

    by_step = run_query(store, "judge_agreement_by_step").to_pylist()
    step0 = [k for k in JUDGED if ROWS[int(k[3:])][1] == 0]
    assert [(r["run_id"], r["step"], r["pairs"]) for r in by_step] == [("a", 0, len(step0)), ("a", 1, 1)]
    step0_rewards = [ROWS[int(k[3:])][3] for k in step0]
    assert by_step[0]["pearson"] == pytest.approx(pearson([JUDGED[k] for k in step0], step0_rewards))
    assert by_step[1]["pearson"] is None  # one pair

    lo, hi = min(reward), max(reward)
    scaled = [(r - lo) / (hi - lo) for r in reward]
    cells: dict[tuple[int, int], int] = {}
    for j, s in zip(judge, scaled, strict=True):
        key = (min(int(j * 2), 1), min(int(s * 2), 1))
        cells[key] = cells.get(key, 0) + 1
    grid = run_query(store, "judge_confusion", bins=2).to_pylist()
    assert {(c["judge_bin"], c["reward_bin"]): c["pairs"] for c in grid} == cells
    gaps = sorted(((abs(j - s), k) for k, j, s in zip(JUDGED, judge, scaled, strict=True)), reverse=True)
    expected = [k for gap, k in sorted(gaps, key=lambda g: (-g[0], g[1])) if gap >= 0.25]
    rows = run_query(store, "judge_disagreements", min_gap=0.25).to_pylist()
    assert [r["interaction_id"] for r in rows] == expected and expected
    assert [r["gap"] for r in rows] == pytest.approx([g for g, _ in sorted(gaps, reverse=True)][: len(expected)])


def test_duplicates_counted_once_and_the_fast_view_reports_them(store):
    exact_before = run_query(store, "reward_by_step").to_pylist()
    fast = _by(run_query(store, "reward_by_step_fast").to_pylist(), "run_id", "step")
    for row in exact_before:
        f = fast[row["run_id"], row["step"]]
        assert (f["rows"], f["events"], f["duplicates"], f["rewarded"]) == (
            row["interactions"],
            row["interactions"],
            0,
            row["rewarded"],
        )
        assert f["mean"] == pytest.approx(row["mean"])
        assert f["std"] == pytest.approx(row["std"], abs=1e-9)
    store.insert_events(INTERACTIONS[:4])  # a redelivered batch
    assert run_query(store, "reward_by_step").to_pylist() == exact_before
    fast = _by(run_query(store, "reward_by_step_fast").to_pylist(), "run_id", "step")
    assert (fast["a", 0]["rows"], fast["a", 0]["events"], fast["a", 0]["duplicates"]) == (8, 4, 4)
    assert (fast["a", 0]["rewarded"], fast["a", 0]["mean"]) == (4, 0.75)  # the statistics count each event once
    assert fast["a", -1]["rows"] == 1  # interactions without a step


# Parameters that change what a query reads, tried besides its defaults in the redelivery tests.
_VARIANTS: dict[str, list[dict]] = {
    "reward_summary": [{"reward_fn": "acc", "by_run": False}],
    "reward_by_step": [{"reward_fn": "acc"}, {"reward_fn": "fmt", "runs": ["a"]}],
    "reward_by_step_fast": [{"reward_fn": "acc"}],
    "reward_by_time": [{"bucket_s": 15, "reward_fn": "acc"}, {"bucket_s": 1}],
    "reward_histogram": [{"by_run": True, "reward_fn": "fmt"}],
    "reward_functions": [{"runs": ["b"]}],
    "length_histogram": [{"measure": "prompt_tokens", "by_run": True}],
    "length_vs_reward": [{"measure": "completion_tokens", "reward_fn": "acc", "by_run": True}],
    "group_stats": [{"runs": ["a"], "zero_std_eps": 0.3}],
    "judge_agreement": [{"by_run": False}, {"reward_fn": "acc"}],
    "train_metrics": [{"runs": ["a"]}],
    "samples": [{"order": "random"}],
}


def _answers(store) -> dict[tuple[str, str], list[dict]]:
    """Every query's rows, with its defaults and the parameters in ``_VARIANTS``."""
    out = {}
    for query in list_queries():
        for params in [{}, *_VARIANTS.get(query.name, [])]:
            rows = run_query(store, query.name, **params).to_pylist()
            if query.name == "reward_by_step_fast":  # what the aggregate received: rows, duplicates
                rows = [{k: v for k, v in r.items() if k not in ("rows", "duplicates")} for r in rows]
            out[query.name, repr(params)] = rows
    return out


def _dirty_cells(store) -> set[tuple[str, int]]:
    rows = store.query_rows("SELECT run_id, step FROM interaction_agg_dirty(runs = [])")
    return {(r["run_id"], r["step"]) for r in rows}


def test_redelivered_events_change_no_answer(store):
    once = _answers(store)
    assert _dirty_cells(store) == set()  # every (run, step) is read from the aggregate
    store.insert_events(EVENTS)  # everything delivered twice
    store.insert_events(INTERACTIONS[5:9])  # and some of it three times
    assert _dirty_cells(store) == {(run, -1 if step is None else step) for run, step, *_ in ROWS}
    again = _answers(store)
    for key, rows in once.items():
        assert _close(again[key], rows), key
    fast = run_query(store, "reward_by_step_fast").to_pylist()
    assert all(r["rows"] - r["events"] == r["duplicates"] >= r["events"] for r in fast)


def test_a_stale_aggregate_is_not_trusted(store):
    once = _answers(store)
    store.insert_events(INTERACTIONS[:2])  # counted twice by the aggregate
    store.command("ALTER TABLE interaction_agg DELETE WHERE run_id = 'b' SETTINGS mutations_sync = 2")  # never seen
    assert _dirty_cells(store) == {("a", 0), ("b", 0)}
    again = _answers(store)
    for key, rows in once.items():
        assert _close(again[key], rows), key


def test_applying_the_aggregate_migration_again_adds_nothing(store):
    from trainwire.store.migrations import available_migrations

    (migration,) = [m for m in available_migrations() if m.name == "exact_aggregates"]
    before = store.query_rows("SELECT sum(rows) AS n FROM interaction_agg")
    for statement in migration.statements():  # as after an interruption: the backfill finds its cells filled
        store.command(statement)
    assert store.query_rows("SELECT sum(rows) AS n FROM interaction_agg") == before == [{"n": len(INTERACTIONS)}]
    assert _dirty_cells(store) == set()


def test_interactions_stored_before_the_aggregate_existed_are_backfilled(embedded_settings):
    from trainwire.store.migrations import available_migrations

    with open_store(embedded_settings) as store:
        store.migrate()
        store.command("DROP TABLE interaction_agg_mv")  # a store migrated up to 0003 and filled since
        store.command("TRUNCATE TABLE interaction_agg")
        store.insert_events(EVENTS)
        (migration,) = [m for m in available_migrations() if m.name == "exact_aggregates"]
        for statement in migration.statements():
            store.command(statement)
        assert _dirty_cells(store) == set()
        rows = _by(run_query(store, "reward_by_step").to_pylist(), "run_id", "step")
        assert (rows["a", 1]["interactions"], rows["a", 1]["rewarded"], rows["a", 1]["mean"]) == (3, 2, 1.25)


# --------------------------------------------------------------------------- the commands


def _fill(settings) -> None:
    with open_store(settings) as store:
        store.migrate()
        store.insert_events(EVENTS)


def test_query_command(embedded_settings):
    _fill(embedded_settings)
    runner = CliRunner()
    result = runner.invoke(query_command, ["--list"], obj=embedded_settings)
    assert result.exit_code == 0, result.output
    for query in list_queries():
        assert query.name in result.output
    result = runner.invoke(
        query_command,
        ["high_quality", "-p", "runs=a,b", "-p", "threshold=1", "--format", "json"],
        obj=embedded_settings,
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [(r["run_id"], r["high_quality"]) for r in rows] == [("a", 4), ("b", 1)]
    result = runner.invoke(query_command, ["reward_summary", "--format", "csv"], obj=embedded_settings)
    assert result.output.splitlines()[0].startswith("run_id,interactions,rewarded,mean")
    result = runner.invoke(query_command, ["reward_summary", "-p", "bogus=1"], obj=embedded_settings)
    assert result.exit_code != 0 and "unknown parameter bogus" in result.output
    result = runner.invoke(query_command, ["reward_histogram", "-p", "bins=x"], obj=embedded_settings)
    assert result.exit_code != 0 and "bins" in result.output
    assert get_query("reward_histogram").param("bins").default == 20


def test_query_names_a_reward_function_the_runs_do_not_have(embedded_settings):
    _fill(embedded_settings)
    runner = CliRunner()
    result = runner.invoke(
        query_command, ["judge_agreement", "-p", "reward_fn=accuracy", "-p", "runs=a"], obj=embedded_settings
    )
    assert result.exit_code == 1
    assert "run a has no reward function 'accuracy' (it has total, acc, fmt)" in result.output
    result = runner.invoke(query_command, ["judge_agreement", "-p", "reward_fn=accuracy"], obj=embedded_settings)
    assert result.exit_code == 1
    assert "no run has a reward function 'accuracy' (run a has total, acc, fmt; run b has total, acc)" in result.output
    result = runner.invoke(  # a query of one run (-p run=) is checked against that run
        query_command, ["audit_judge_drift", "-p", "run=b", "-p", "reward_fn=fmt"], obj=embedded_settings
    )
    assert result.exit_code == 1
    assert "run b has no reward function 'fmt' (it has total, acc)" in result.output
    result = runner.invoke(
        query_command, ["judge_agreement", "-p", "reward_fn=fmt", "--format", "json"], obj=embedded_settings
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)[0]["pairs"] == 5


def test_analyze_command_writes_the_report(embedded_settings, tmp_path: Path):
    _fill(embedded_settings)
    out = tmp_path / "report"
    result = CliRunner().invoke(
        analyze_command, ["--output", str(out), "--threshold", "1.0", "--samples", "2"], obj=embedded_settings
    )
    assert result.exit_code == 0, result.output
    assert "High-quality answers (reward >= 1)" in result.output
    pngs = {p.name for p in out.glob("*.png")}
    assert {
        "reward_distribution.png",
        "reward_by_step.png",
        "reward_by_time.png",
        "lengths.png",
        "train_metrics.png",
        "group_stats.png",
        "logits_model_comparison.png",
        "logits_level_analysis.png",
        "logits_correctness_comparison.png",
        "logits_position.png",
        "logits_heatmap.png",
    } <= pngs
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000

    results = json.loads((out / "analysis_results.json").read_text())
    assert results["threshold"] == 1.0 and results["empty"] is False
    with open_store(embedded_settings) as store:
        for name, section in results["queries"].items():
            expected = to_jsonable(run_query(store, section["query"], **section["params"]).to_pylist())
            assert _close(section["rows"], expected), name
    hq = {r["run_id"]: r for r in results["queries"]["high_quality"]["rows"]}
    assert hq["a"]["high_quality"] == 4

    samples = json.loads((out / "samples.json").read_text())
    assert [s["event_id"] for s in samples["best"]] == ["ev-04", "ev-10"]
    assert samples["best"][0]["metadata"] == {"i": 4}
    assert len(samples["worst"]) == 2 and len(samples["random"]) == 2

    page = (out / "dashboard.html").read_text()
    assert "https://" not in page.split("<script>", 1)[0]
    assert 'id="tw-data"' in page and "Plotly.newPlot" in page and len(page) > 1_000_000  # plotly.js inlined


def test_analyze_only_some_runs_and_plots_only_what_exists(embedded_settings, tmp_path: Path):
    with open_store(embedded_settings) as store:
        store.migrate()
        store.insert_events(INTERACTIONS[8:])  # run b: interactions only
    out = tmp_path / "b"
    result = CliRunner().invoke(analyze_command, ["--run", "b", "--output", str(out)], obj=embedded_settings)
    assert result.exit_code == 0, result.output
    pngs = {p.name for p in out.glob("*.png")}
    assert "reward_distribution.png" in pngs and "lengths.png" in pngs
    assert not any(name.startswith("logits") for name in pngs) and "train_metrics.png" not in pngs
    results = json.loads((out / "analysis_results.json").read_text())
    assert results["runs"] == ["b"]
    # one high-quality default (the query's), shown wherever the count is
    assert results["threshold"] == HIGH_QUALITY_THRESHOLD == get_query("high_quality").param("threshold").default
    assert f"High-quality answers (reward >= {HIGH_QUALITY_THRESHOLD:g})" in result.output
    assert f"High-quality answers (reward &gt;= {HIGH_QUALITY_THRESHOLD:g})" in (out / "dashboard.html").read_text()
    assert [r["run_id"] for r in results["queries"]["runs_overview"]["rows"]] == ["b"]


def test_analyze_an_empty_store_says_so(embedded_settings, tmp_path: Path):
    out = tmp_path / "empty"
    result = CliRunner().invoke(analyze_command, ["--output", str(out)], obj=embedded_settings)
    assert result.exit_code == 1, result.output  # as export
    assert result.stderr.startswith("Error: No events for any run in the store: nothing to analyze.")
    assert "nothing to analyze" not in result.stdout  # said once
    assert json.loads((out / "analysis_results.json").read_text())["empty"] is True
    assert not list(out.glob("*.png")) and not (out / "dashboard.html").exists()


def _value_jsonable(value):
    """What the report writes for one value: the contract of ``to_jsonable``, one value at a time."""
    if isinstance(value, dict):
        return {str(k): _value_jsonable(v) for k, v in value.items()}
    if isinstance(value, list) and value and all(isinstance(v, tuple) and len(v) == 2 for v in value):
        return {str(k): _value_jsonable(v) for k, v in value}
    if isinstance(value, list | tuple):
        return [_value_jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


_CELLS = {
    "ints": st.one_of(st.none(), st.integers(-(2**63), 2**64 - 1)),
    "floats": st.one_of(st.none(), st.floats(), st.integers(-5, 5)),
    "flags": st.one_of(st.none(), st.booleans()),
    "texts": st.one_of(st.none(), st.text()),
    "times": st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5))])),
    "maps": st.lists(st.tuples(st.text(max_size=3), st.floats()), max_size=3),
    "bytes": st.binary(max_size=4),
}


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_analysis_results_json_holds_each_value_as_to_jsonable_defines_it(tmp_path_factory, data):
    # query rows: the same columns in every row, each column of one kind, a few of them chosen at random
    kinds = data.draw(st.lists(st.sampled_from(sorted(_CELLS)), max_size=4))
    rows = data.draw(
        st.lists(st.fixed_dictionaries({f"{kind}_{i}": _CELLS[kind] for i, kind in enumerate(kinds)}), max_size=12)
    )
    results = AnalysisResults(runs=["r"], threshold=1.0, generated_at=T0)
    results.tables["runs_overview"] = rows
    results.params["runs_overview"] = {"query": "runs_overview", "params": {"runs": ["r"]}}
    out = tmp_path_factory.mktemp("results")
    written = json.loads(write_results(results, out).read_text(encoding="utf-8"))
    assert written["queries"]["runs_overview"]["rows"] == [_value_jsonable(row) for row in rows]
    assert written["generated_at"] == "2026-03-01T12:00:00Z"
