"""The stream processors driven by crafted event lists: reward stats, the quantile sketch, group stats, health rules."""

from __future__ import annotations

import json
import math
import random
import sys
from datetime import UTC, datetime, timedelta

import pytest

from trainwire.errors import ConfigError
from trainwire.events import Alert, Event, Interaction, JudgeScore, TrainStep
from trainwire.processors.base import StateError
from trainwire.processors.health import HealthConfig, HealthMonitor
from trainwire.processors.stats import (
    GroupStats,
    QuantileSketch,
    RewardStats,
    RewardStatsProcessor,
    StatsConfig,
    Summary,
    mean_of,
    pearson,
    pstd_of,
    spearman,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)  # a multiple of every hop used below


def interaction(
    step: int | None,
    reward: float | None,
    *,
    t: float = 0.0,
    rewards: dict[str, float] | None = None,
    group: str | None = None,
    tokens: int | None = None,
    completion: str = "answer",
    eid: str | None = None,
    run: str = "run-1",
) -> Event:
    payload = Interaction(
        prompt="q",
        completion=completion,
        reward=reward,
        rewards=rewards or {},
        step=step,
        group_id=group,
        completion_tokens=tokens,
    )
    extra = {"event_id": eid} if eid else {}
    return Event(run_id=run, payload=payload, ts=T0 + timedelta(seconds=t), **extra)


def judge(interaction_id: str, score: float | None, success: bool = True, run: str = "run-1") -> Event:
    payload = JudgeScore(
        interaction_id=interaction_id, judge_model="j", template_version="v1", success=success, score_normalized=score
    )
    return Event(run_id=run, payload=payload, ts=T0)


def train_step(step: int, run: str = "run-1", **fields: object) -> Event:
    return Event(run_id=run, payload=TrainStep(step=step, **fields), ts=T0 + timedelta(seconds=step))


def roundtrip(snapshot: dict) -> dict:
    """A snapshot as a runtime stores it: strict JSON text and back."""
    return json.loads(json.dumps(snapshot, allow_nan=False))


def stats_of(outputs: list, window: str, fn: str = "total") -> list[RewardStats]:
    return [o for o in outputs if isinstance(o, RewardStats) and o.window == window and o.reward_fn == fn]


# --------------------------------------------------------------------------- step windows


def test_step_windows_emit_when_a_later_window_starts_with_exact_numbers():
    proc = RewardStatsProcessor(StatsConfig(step_window=2, time_window_s=3600, time_hop_s=3600))
    outputs = []
    for step, reward, fmt in [(0, 1.0, 0.0), (0, 2.0, 1.0), (1, 3.0, 1.0), (1, 4.0, 1.0)]:
        outputs += proc.process(interaction(step, reward, rewards={"format": fmt}))
    assert stats_of(outputs, "steps") == []

    completed = proc.process(interaction(2, 10.0, rewards={"format": 0.0}))
    total = stats_of(completed, "steps")
    assert len(total) == 1
    s = total[0]
    assert (s.run_id, s.step_start, s.step_end, s.count, s.nonfinite) == ("run-1", 0, 2, 4, 0)
    assert s.mean == pytest.approx(2.5)
    assert s.std == pytest.approx(math.sqrt(1.25))
    assert (s.min, s.max) == (1.0, 4.0)
    # nearest rank over 1, 2, 3, 4: p10 -> 1st, p50 -> 2nd, p90 -> 4th
    assert (s.p10, s.p50, s.p90) == (1.0, 2.0, 4.0)
    fmt = stats_of(completed, "steps", "format")[0]
    assert (fmt.count, fmt.mean, fmt.min, fmt.max) == (4, 0.75, 0.0, 1.0)
    # total comes first, then the reward functions by name
    assert [o.reward_fn for o in completed if isinstance(o, RewardStats)] == ["total", "format"]

    outputs = proc.process(interaction(3, 20.0)) + proc.flush()
    last = stats_of(outputs, "steps")
    assert [(s.step_start, s.step_end, s.count, s.mean, s.min, s.max) for s in last] == [(2, 4, 2, 15.0, 10.0, 20.0)]
    assert last[0].std == pytest.approx(5.0)


def test_step_window_late_interaction_is_counted_not_emitted_twice_and_nonfinite_is_counted():
    proc = RewardStatsProcessor(StatsConfig(step_window=2, time_window_s=3600, time_hop_s=3600))
    proc.process(interaction(0, 1.0))
    proc.process(interaction(1, math.nan))
    first = stats_of(proc.process(interaction(2, 5.0)), "steps")
    assert [(s.count, s.nonfinite, s.mean) for s in first] == [(1, 1, 1.0)]
    assert proc.process(interaction(1, 100.0)) == []
    assert proc.late_steps == 1
    assert [(s.step_start, s.count, s.mean) for s in stats_of(proc.flush(), "steps")] == [(2, 1, 5.0)]


def test_lateness_steps_keeps_a_window_open_for_stragglers():
    proc = RewardStatsProcessor(StatsConfig(step_window=1, lateness_steps=1, time_window_s=3600, time_hop_s=3600))
    proc.process(interaction(0, 1.0))
    assert stats_of(proc.process(interaction(1, 2.0)), "steps") == []
    assert stats_of(proc.process(interaction(0, 3.0)), "steps") == []  # straggler of step 0 still counts
    done = stats_of(proc.process(interaction(2, 4.0)), "steps")
    assert [(s.step_start, s.count, s.mean) for s in done] == [(0, 2, 2.0)]


# --------------------------------------------------------------------------- time windows


def test_sliding_time_window_hops_over_event_time():
    proc = RewardStatsProcessor(StatsConfig(time_window_s=30, time_hop_s=10))
    outputs = []
    emitted_at = []
    for t, reward in [(0, 1.0), (5, 2.0), (12, 3.0), (25, 4.0), (41, 5.0)]:
        out = stats_of(proc.process(interaction(None, reward, t=t)), "time")
        emitted_at.append(len(out))
        outputs += out
    outputs += stats_of(proc.flush(), "time")
    assert emitted_at == [0, 0, 1, 1, 2]
    seconds = [((s.window_start - T0).total_seconds(), (s.window_end - T0).total_seconds()) for s in outputs]
    got = [(*span, s.count, s.mean) for span, s in zip(seconds, outputs, strict=True)]
    assert got == [
        (-20.0, 10.0, 2, 1.5),
        (-10.0, 20.0, 3, 2.0),
        (0.0, 30.0, 4, 2.5),
        (10.0, 40.0, 2, 3.5),
        (20.0, 50.0, 2, 4.5),
    ]
    assert all(s.step_start is None and s.step_end is None for s in outputs)
    # an event older than an emitted window is late: counted, not added
    assert proc.process(interaction(None, 9.0, t=15)) == []
    assert proc.late_time == 1


def test_time_windows_skip_gaps_without_data():
    proc = RewardStatsProcessor(StatsConfig(time_window_s=20, time_hop_s=10))
    proc.process(interaction(None, 1.0, t=0))
    out = stats_of(proc.process(interaction(None, 2.0, t=1000)), "time")
    # the two windows holding t=0 (ending at 10s and 20s), none of the empty ones in between
    assert [((s.window_end - T0).total_seconds(), s.count) for s in out] == [(10.0, 1), (20.0, 1)]


def test_stats_snapshot_restore_continues_exactly():
    config = StatsConfig(step_window=3, time_window_s=20, time_hop_s=10)
    rng = random.Random(3)
    events = [
        interaction(i // 4, rng.random(), t=i * 2.5, rewards={"acc": float(i % 2)}, group=f"g{i // 2}", eid=f"e{i}")
        for i in range(40)
    ]
    events.insert(10, judge("e3", 0.7))
    straight = RewardStatsProcessor(config).run(events)

    first = RewardStatsProcessor(config)
    outputs = [o for e in events[:17] for o in first.process(e)]
    second = RewardStatsProcessor(config)
    second.restore(roundtrip(first.snapshot()))
    outputs += second.run(events[17:])
    assert [o.to_json() for o in outputs] == [o.to_json() for o in straight]
    assert len(straight) > 20


def test_stats_snapshot_of_overflowing_sums_is_strict_json_and_continues_exactly():
    # rewards near the float maximum: the sum of squared deviations (and the mean) overflow to
    # infinity or NaN, which strict JSON (orjson writes them as null) cannot hold as numbers
    config = StatsConfig(step_window=2, time_window_s=20, time_hop_s=10)
    events = [interaction(i // 4, (-1) ** i * 1.5e308, t=i * 2.5, eid=f"e{i}") for i in range(16)]
    straight = RewardStatsProcessor(config).run(events)

    first = RewardStatsProcessor(config)
    outputs = [o for e in events[:7] for o in first.process(e)]
    second = RewardStatsProcessor(config)
    second.restore(roundtrip(first.snapshot()))
    outputs += second.run(events[7:])
    assert [repr(o.to_json()) for o in outputs] == [repr(o.to_json()) for o in straight]


def test_restore_refuses_another_processors_state():
    with pytest.raises(StateError, match="health"):
        RewardStatsProcessor().restore(HealthMonitor().snapshot())


def test_stats_config_is_validated():
    with pytest.raises(ConfigError, match=r"stats\.time_window_s"):
        StatsConfig(time_window_s=25, time_hop_s=10)
    with pytest.raises(ConfigError, match=r"stats\.step_window"):
        StatsConfig(step_window=0)


# --------------------------------------------------------------------------- the sketch


def test_sketch_is_exact_up_to_k_values():
    values = [random.Random(i).gauss(0, 1) for i in range(256)]
    sketch = QuantileSketch(k=256)
    for v in values:
        sketch.add(v)
    ordered = sorted(values)
    assert sketch.rank_error_bound() == 0.0
    for q in (0.01, 0.1, 0.5, 0.9, 0.99, 1.0):
        assert sketch.quantile(q) == ordered[math.ceil(q * len(values)) - 1]


def _rank_error(sketch: QuantileSketch, n: int, q: float) -> float:
    # values are 0..n-1, so the value v has rank v + 1
    return abs(sketch.quantile(q) + 1 - q * n) / n


def test_sketch_rank_error_stays_within_its_bound_on_100k_values():
    n = 100_000
    values = list(range(n))
    random.Random(42).shuffle(values)
    sketch = QuantileSketch(k=256)
    for v in values:
        sketch.add(float(v))
    bound = sketch.rank_error_bound()
    assert bound == (len(sketch.levels) - 1) / 256
    assert 0 < bound <= math.ceil(math.log2(n / 256)) / 256
    assert sum(len(level) for level in sketch.levels) <= 257 * len(sketch.levels)
    for q in (0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99):
        assert _rank_error(sketch, n, q) <= bound


def test_sketch_merge_and_serialization_keep_the_bound():
    n = 50_000
    values = list(range(n))
    random.Random(9).shuffle(values)
    a, b = QuantileSketch(k=64), QuantileSketch(k=64)
    for v in values[: n // 3]:
        a.add(float(v))
    for v in values[n // 3 :]:
        b.add(float(v))
    a = QuantileSketch.from_dict(roundtrip(a.to_dict()))
    a.merge(b)
    assert a.n == n
    for q in (0.1, 0.5, 0.9):
        assert _rank_error(a, n, q) <= a.rank_error_bound()
    restored = QuantileSketch.from_dict(roundtrip(a.to_dict()))
    assert [restored.quantile(q) for q in (0.1, 0.5, 0.9)] == [a.quantile(q) for q in (0.1, 0.5, 0.9)]


def test_summary_merge_equals_one_pass():
    values = [random.Random(i).gauss(3, 2) for i in range(500)]
    whole, left, right = Summary(), Summary(), Summary()
    for v in values:
        whole.add(v)
    for v in values[:123]:
        left.add(v)
    for v in values[123:]:
        right.add(v)
    left.merge(right)
    mean = math.fsum(values) / len(values)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))
    assert (left.count, left.min, left.max) == (500, min(values), max(values))
    assert left.mean == pytest.approx(mean, rel=1e-12)
    assert left.std == pytest.approx(std, rel=1e-12)
    assert whole.std == pytest.approx(std, rel=1e-12)


def test_sketch_extend_is_adding_one_by_one():
    values = [random.Random(3).random() for _ in range(2_000)]
    one_by_one, extended = QuantileSketch(k=16), QuantileSketch(k=16)
    for v in values:
        one_by_one.add(v)
    for start, end in [(0, 5), (5, 17), (17, 18), (18, 400), (400, 2_000)]:  # around and across compactions
        extended.extend(values[start:end])
    assert extended.to_dict() == one_by_one.to_dict()


def test_summary_numbers_are_those_of_folding_each_value_as_it_comes():
    rng = random.Random(5)
    values = [rng.choice([rng.gauss(3, 2), rng.random(), math.nan, math.inf, -math.inf]) for _ in range(10_000)]
    summary = Summary(k=32)
    count, mean, sq, low, high, nonfinite = 0, 0.0, 0.0, math.inf, -math.inf, 0
    sketch = QuantileSketch(k=32)
    for i, v in enumerate(values):  # buffered past the fold bound, read in between
        summary.add(v)
        if not math.isfinite(v):
            nonfinite += 1
            continue
        count += 1
        delta = v - mean
        mean += delta / count
        sq += delta * (v - mean)
        low, high = min(low, v), max(high, v)
        sketch.add(v)
        if i % 4_999 == 0:
            assert (summary.count, summary.mean, summary.nonfinite) == (count, mean, nonfinite)
    assert (summary.count, summary.mean, summary.min, summary.max, summary.nonfinite) == (
        count,
        mean,
        low,
        high,
        nonfinite,
    )
    assert summary.std == math.sqrt(sq / count)
    assert summary.sketch.to_dict() == sketch.to_dict()
    assert Summary.from_dict(roundtrip(summary.to_dict())).to_dict() == summary.to_dict()


def test_correlations():
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [5, 5, 5]) is None
    assert spearman([1, 2, 3, 4], [1, 4, 9, 16]) == pytest.approx(1.0)
    assert spearman([0.9, 0.8, 0.1], [1, 1, 0]) == pytest.approx(1.5 / math.sqrt(3))


# --------------------------------------------------------------------------- group stats


def test_group_stats_per_step_with_length_and_judge_agreement():
    proc = RewardStatsProcessor(StatsConfig(step_window=100, time_window_s=3600, time_hop_s=3600))
    events = [
        judge("e2", 0.1),  # before its interaction
        interaction(0, 1.0, group="g1", tokens=10, eid="e0"),
        interaction(0, 1.0, group="g1", tokens=20, eid="e1"),
        interaction(0, 0.0, group="g2", tokens=30, eid="e2"),
        interaction(0, 1.0, group="g2", tokens=40, eid="e3"),
        judge("e0", 0.9),
        judge("e1", 0.8),
        judge("e3", None, success=False),  # a failed judgement has no score
    ]
    for event in events:
        assert [o for o in proc.process(event) if isinstance(o, GroupStats)] == []
    closing = [o for o in proc.process(interaction(1, 0.5, group="g3", eid="e4")) if isinstance(o, GroupStats)]
    assert len(closing) == 1
    g = closing[0]
    assert (g.run_id, g.step, g.interactions, g.groups, g.zero_variance_groups) == ("run-1", 0, 4, 2, 1)
    assert g.zero_variance_share == 0.5
    assert g.mean_group_std == pytest.approx(0.25)
    assert g.reward_mean == pytest.approx(0.75)
    assert g.reward_std == pytest.approx(math.sqrt(0.1875))
    # lengths 10, 20, 30, 40 against rewards 1, 1, 0, 1
    assert g.length_reward_corr == pytest.approx(-5 / math.sqrt(375))
    # judge 0.9, 0.8, 0.1 against rewards 1, 1, 0
    assert g.judge_pairs == 3
    assert g.judge_pearson == pytest.approx(0.5 / math.sqrt(0.38 * 2 / 3))
    assert g.judge_spearman == pytest.approx(1.5 / math.sqrt(3))
    assert g.judge_median_agreement == pytest.approx(2 / 3)

    proc.process(interaction(1, 0.2, group="g4", completion="abcd"))
    proc.process(interaction(1, 0.2, group="g4", completion="ab"))
    last = [o for o in proc.flush() if isinstance(o, GroupStats)]
    assert len(last) == 1
    g = last[0]
    # g3 has one member: not a group; g4 has two equal rewards
    assert (g.step, g.interactions, g.groups, g.zero_variance_groups, g.zero_variance_share) == (1, 3, 1, 1, 1.0)
    assert g.mean_group_std == 0.0
    assert (g.judge_pairs, g.judge_pearson, g.judge_spearman, g.judge_median_agreement) == (0, None, None, None)
    # completion lengths in characters (6, 4, 2) when there are no token counts
    assert g.length_reward_corr == pytest.approx(pearson([6, 4, 2], [0.5, 0.2, 0.2]))
    assert g.to_json()["ts"] == "2026-01-01T00:00:00Z"


def test_runs_are_kept_apart():
    proc = RewardStatsProcessor(StatsConfig(step_window=1, time_window_s=3600, time_hop_s=3600))
    proc.process(interaction(0, 1.0, run="a"))
    proc.process(interaction(0, 3.0, run="b"))
    out = proc.process(interaction(1, 0.0, run="a"))
    assert [(s.run_id, s.mean) for s in stats_of(out, "steps")] == [("a", 1.0)]
    assert [(g.run_id, g.step) for g in out if isinstance(g, GroupStats)] == [("a", 0)]


# --------------------------------------------------------------------------- health


def alerts(monitor: HealthMonitor, events: list[Event], flush: bool = False) -> list[Alert]:
    out = monitor.run(events, flush=flush)
    assert all(isinstance(e.payload, Alert) for e in out)
    return [e.payload for e in out]


def test_seed_003_example_is_healthy():
    events = [
        train_step(1, loss=3.8214, learning_rate=0.0, epoch=0.0, grad_norm=1.2),
        train_step(2, loss=3.1959, learning_rate=0.0002, epoch=0.0, grad_norm=1.1),
        train_step(3, loss=2.3571, learning_rate=0.000199, epoch=0.01, grad_norm=0.9),
    ]
    assert alerts(HealthMonitor(), events, flush=True) == []


def test_nonfinite_numbers_alert_with_cooldown():
    monitor = HealthMonitor(HealthConfig(cooldown_steps=3))
    got = alerts(monitor, [train_step(1, loss=1.0), train_step(2, loss=math.nan, metrics={"kl": math.inf})])
    assert len(got) == 1
    a = got[0]
    assert (a.rule, a.severity, a.step) == ("nonfinite", "critical", 2)
    assert a.evidence == {"fields": {"loss": "NaN", "metrics.kl": "Infinity"}}
    assert "loss=NaN" in a.message
    assert alerts(monitor, [train_step(3, loss=math.nan), train_step(4, grad_norm=-math.inf)]) == []
    again = alerts(monitor, [train_step(5, loss=math.nan)])
    assert [(a.rule, a.step) for a in again] == [("nonfinite", 5)]
    # a resumed run (steps going back) is not held by the cool-down
    assert [a.step for a in alerts(monitor, [train_step(2, loss=math.nan)])] == [2]


def test_loss_not_decreasing():
    config = HealthConfig(loss_horizon=4)
    flat = alerts(HealthMonitor(config), [train_step(s, loss=v) for s, v in enumerate([2.0, 1.0, 2.0, 1.0])])
    assert [(a.rule, a.severity, a.step) for a in flat] == [("loss_not_decreasing", "warning", 3)]
    assert flat[0].evidence == {
        "first_half_mean": 1.5,
        "second_half_mean": 1.5,
        "first_steps": [0, 1],
        "second_steps": [2, 3],
        "horizon": 4,
    }
    falling = [train_step(s, loss=v) for s, v in enumerate([4.0, 3.0, 2.0, 1.0, 0.9])]
    assert alerts(HealthMonitor(config), falling) == []
    strict = HealthConfig(loss_horizon=4, loss_min_decrease=0.5)  # must halve: 3.5 -> 1.5 does, 3.5 -> 2.0 not
    assert alerts(HealthMonitor(strict), [train_step(s, loss=v) for s, v in enumerate([4.0, 3.0, 2.0, 1.0])]) == []
    slow = [train_step(s, loss=v) for s, v in enumerate([4.0, 3.0, 2.5, 1.5])]
    assert [a.rule for a in alerts(HealthMonitor(strict), slow)] == ["loss_not_decreasing"]


def test_grad_norm_exploding():
    config = HealthConfig(grad_norm_window=5, grad_norm_min_history=3, grad_norm_explode_factor=10)
    base = [train_step(s, grad_norm=v) for s, v in enumerate([1.0, 2.0, 3.0])]
    got = alerts(HealthMonitor(config), [*base, train_step(3, grad_norm=25.0)])
    assert [(a.rule, a.severity, a.step) for a in got] == [("grad_norm_exploding", "critical", 3)]
    assert got[0].evidence == {"grad_norm": 25.0, "median": 2.0, "ratio": 12.5, "window": 3}
    assert alerts(HealthMonitor(config), [*base, train_step(3, grad_norm=19.0)]) == []
    # too little history: no verdict
    assert alerts(HealthMonitor(config), [base[0], base[1], train_step(2, grad_norm=1000.0)]) == []


def test_grad_norm_vanishing():
    config = HealthConfig(grad_norm_vanish_steps=2)
    got = alerts(HealthMonitor(config), [train_step(1, grad_norm=0.0), train_step(2, grad_norm=0.0)])
    assert [(a.rule, a.severity, a.step) for a in got] == [("grad_norm_vanishing", "warning", 2)]
    assert got[0].evidence["consecutive_steps"] == 2
    interrupted = [train_step(1, grad_norm=0.0), train_step(2, grad_norm=1.0), train_step(3, grad_norm=0.0)]
    assert alerts(HealthMonitor(config), interrupted) == []


def test_learning_rate_jump_and_rise_after_decay():
    jump = alerts(HealthMonitor(), [train_step(1, learning_rate=1e-4), train_step(2, learning_rate=2e-3)])
    assert [(a.rule, a.severity) for a in jump] == [("lr_jump", "warning")]
    assert jump[0].evidence["ratio"] == pytest.approx(20.0)
    warmup = [train_step(s, learning_rate=v) for s, v in enumerate([0.0, 1e-5, 5e-5, 1e-4, 9e-5, 8e-5, 0.0])]
    assert alerts(HealthMonitor(), warmup) == []
    rise = [train_step(s, learning_rate=v) for s, v in enumerate([5e-5, 1e-4, 9e-5, 9.5e-5])]
    got = alerts(HealthMonitor(), rise)
    assert [(a.rule, a.step) for a in got] == [("lr_rise_after_decay", 3)]
    assert got[0].evidence == {"previous": 9e-5, "current": 9.5e-5, "peak": 1e-4}


def test_reward_rules_from_trainer_metrics():
    config = HealthConfig(reward_window=5, reward_min_history=3, reward_std_window=3)
    base = [train_step(s, metrics={"reward": v, "reward_std": 0.3}) for s, v in enumerate([1.0, 1.1, 0.9])]
    got = alerts(HealthMonitor(config), [*base, train_step(3, metrics={"reward": 0.5, "reward_std": 0.3})])
    assert [(a.rule, a.severity, a.step) for a in got] == [("reward_collapse", "critical", 3)]
    spread = math.sqrt(0.02 / 3)
    assert got[0].evidence["baseline_mean"] == pytest.approx(1.0)
    assert got[0].evidence["threshold"] == pytest.approx(4 * spread)
    assert got[0].evidence["window_steps"] == [0, 2]
    mild = [*base, train_step(3, metrics={"reward": 0.8, "reward_std": 0.3})]
    assert alerts(HealthMonitor(config), mild) == []

    flat = [train_step(s, metrics={"reward": 1.0, "reward_std": 0.0}) for s in range(3)]
    assert [(a.rule, a.step) for a in alerts(HealthMonitor(config), flat)] == [("reward_std_zero", 2)]
    recovering = [train_step(s, metrics={"reward": 1.0, "reward_std": v}) for s, v in enumerate([0.0, 0.0, 0.5])]
    assert alerts(HealthMonitor(config), recovering) == []

    share = [train_step(1, metrics={"reward": 1.0, "frac_reward_zero_std": 0.75})]
    got = alerts(HealthMonitor(config), share)
    assert [(a.rule, a.severity) for a in got] == [("zero_variance_groups", "warning")]
    assert got[0].evidence == {"zero_variance_share": 0.75, "threshold": 0.5}
    assert "75% of the GRPO groups" in got[0].message
    ok = [train_step(1, metrics={"reward": 1.0, "frac_reward_zero_std": 0.5})]
    assert alerts(HealthMonitor(config), ok) == []


def test_reward_rules_from_interaction_group_stats():
    config = HealthConfig(reward_window=5, reward_min_history=3, reward_std_window=2, zero_variance_max_share=0.4)
    events = []
    for step, rewards in enumerate([[1.0, 0.0], [1.0, 0.2], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]]):
        events += [interaction(step, r, group=f"s{step}", t=step) for r in rewards]
    monitor = HealthMonitor(config)
    live = alerts(monitor, events)  # steps 0-3 complete while streaming, step 4 on flush
    assert [(a.rule, a.step) for a in live] == [("reward_collapse", 3), ("zero_variance_groups", 3)]
    at_end = alerts(monitor, [], flush=True)
    # step 4: std 0 for the 2nd step in a row; zero-variance again, but within the cool-down
    assert [(a.rule, a.step) for a in at_end] == [("reward_std_zero", 4)]
    collapse = live[0].evidence
    assert collapse["reward_mean"] == 0.0
    assert collapse["baseline_mean"] == pytest.approx((0.5 + 0.6 + 0.5) / 3)


def test_alerts_are_deterministic_and_health_state_survives_restart():
    config = HealthConfig(grad_norm_window=5, grad_norm_min_history=3)
    events = [train_step(s, grad_norm=v) for s, v in enumerate([1.0, 2.0, 3.0, 50.0])]
    once = HealthMonitor(config).run(events)
    twice = HealthMonitor(config).run(events)
    assert [e.event_id for e in once] == [e.event_id for e in twice]
    assert once[0].ts == events[3].ts

    first = HealthMonitor(config)
    first.run(events[:3], flush=False)
    second = HealthMonitor(config)
    second.restore(roundtrip(first.snapshot()))
    resumed = second.run(events[3:])
    assert [(e.event_id, e.payload.rule) for e in resumed] == [(once[0].event_id, "grad_norm_exploding")]


def test_health_config_is_validated():
    with pytest.raises(ConfigError, match=r"health\.loss_horizon"):
        HealthConfig(loss_horizon=3)
    with pytest.raises(ConfigError, match=r"health\.grad_norm_explode_factor"):
        HealthConfig(grad_norm_explode_factor=0.5)
    with pytest.raises(ConfigError, match=r"health\.zero_variance_max_share"):
        HealthConfig(zero_variance_max_share=1.5)


def test_outputs_carry_the_proposed_payload_fields_and_deterministic_ids():
    config = StatsConfig(step_window=2, time_window_s=20, time_hop_s=10)
    events = [interaction(i // 2, float(i), t=i * 4, group="g", rewards={"acc": 1.0}) for i in range(8)]
    once, twice = RewardStatsProcessor(config).run(events), RewardStatsProcessor(config).run(events)
    assert [o.event_id() for o in once] == [o.event_id() for o in twice]
    assert len({o.event_id() for o in once}) == len(once)
    stats = next(o for o in once if isinstance(o, RewardStats) and o.window == "time")
    assert list(stats.payload_dict()) == [
        "window_start_us", "window_end_us", "window", "reward_fn", "step_start", "step_end",
        "count", "nonfinite", "mean", "std", "min", "max", "p10", "p50", "p90",
    ]  # fmt: skip
    assert stats.payload_dict()["window_end_us"] - stats.payload_dict()["window_start_us"] == 20_000_000
    group = next(o for o in once if isinstance(o, GroupStats))
    assert list(group.payload_dict()) == [
        "step", "interactions", "groups", "zero_variance_groups", "zero_variance_share", "mean_group_std",
        "reward_mean", "reward_std", "length_reward_corr", "judge_pairs", "judge_pearson", "judge_spearman",
        "judge_median_agreement",
    ]  # fmt: skip


# --------------------------------------------------------------------------- values near the float maximum

HUGE = 1.7e308  # finite, but the sum of two overflows


def test_group_stats_of_rewards_near_the_float_maximum_are_finite():
    proc = RewardStatsProcessor(StatsConfig(step_window=100, time_window_s=3600, time_hop_s=3600))
    for i, reward in enumerate([HUGE, HUGE, -HUGE, HUGE]):
        proc.process(interaction(0, reward, group="g", tokens=10 + i, eid=f"e{i}"))
    proc.process(judge("e0", 0.9))
    proc.process(judge("e2", 0.1))
    (g,) = [o for o in proc.process(interaction(1, 0.0)) if isinstance(o, GroupStats)]
    assert g.reward_mean == pytest.approx(HUGE / 2)
    assert g.reward_std == pytest.approx(math.sqrt(3) / 2 * HUGE)  # deviations HUGE / 2 (three) and -3 * HUGE / 2
    assert g.mean_group_std == g.reward_std
    assert (g.groups, g.zero_variance_groups) == (1, 0)
    assert g.length_reward_corr == pytest.approx(pearson([10, 11, 12, 13], [1, 1, -1, 1]))
    assert (g.judge_pairs, g.judge_pearson) == (2, pytest.approx(1.0))
    # the float maximum itself, on both sides: the std is exactly half the range
    assert pstd_of([-sys.float_info.max, sys.float_info.max]) == sys.float_info.max
    assert mean_of([sys.float_info.max] * 3) == sys.float_info.max


def test_health_rules_over_values_near_the_float_maximum():
    losses = [train_step(s, loss=v) for s, v in enumerate([HUGE, HUGE, HUGE, HUGE])]
    got = alerts(HealthMonitor(HealthConfig(loss_horizon=4)), losses)
    assert [(a.rule, a.evidence["first_half_mean"]) for a in got] == [("loss_not_decreasing", HUGE)]
    config = HealthConfig(reward_window=5, reward_min_history=3)
    rewards = [train_step(s, metrics={"reward": v}) for s, v in enumerate([HUGE, -HUGE, HUGE, HUGE])]
    assert alerts(HealthMonitor(config), rewards) == []  # HUGE is no collapse from a mean of HUGE / 3
    fall = [train_step(s, metrics={"reward": v}) for s, v in enumerate([HUGE, HUGE, HUGE, -HUGE])]
    got = alerts(HealthMonitor(config), fall)
    assert [(a.rule, a.evidence["baseline_mean"], a.evidence["baseline_std"]) for a in got] == [
        ("reward_collapse", HUGE, 0.0)
    ]
