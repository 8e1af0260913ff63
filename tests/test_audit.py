"""``trainwire audit``: each finding's numbers, exactly, on crafted runs stored in ClickHouse (chdb).

Each crafted run shows one problem and nothing else, so each must give its own finding and no other:

- ``dominant``: within every group, ``accuracy`` deviates by +-0.5 and ``format`` by +-0.1 on
  orthogonal patterns, so they explain 25/26 and 1/26 of the total reward's within-group variance;
- ``length-hacker``: the mean completion length grows 10 tokens a step (10..50 over steps 0..4), a
  length bonus (a tenth of the tokens) makes the reward follow it, and ``correct`` stays at 0.5;
- ``saturated``: steps 0..11 of two groups of two; from step 2 on every reward is 1.0 (the run's
  maximum) but one group of step 11 (0.0 and 1.0): over the last 10 steps (2..11), 39 of 40
  completions are at the maximum and 19 of 20 groups have zero variance;
- ``judge-drift``: per step the judge agrees with the reward (0, 1, 2) perfectly, then not at
  all, then inversely: Pearson 1, 0, -1 over steps 0..2, a change of -2;
- ``truncated``: train steps 1..4 record top_p 0.9 with importance-sampling correction and TRL's
  ratio metrics; steps 5..6 sample with top_p 1 (not truncated);
- ``healthy``: two reward functions that share the variance 4:1, lengths that do not trend,
  varied groups, the judge in agreement with ``correct`` every step, top_p 1.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from trainwire.analysis.audit import AuditConfig, audit_run
from trainwire.analysis.queries import run_query
from trainwire.cli import main
from trainwire.events import Event, Interaction, JudgeScore, TrainStep
from trainwire.store.clickhouse import open_store

T0 = datetime(2026, 5, 1, tzinfo=UTC)


class Run:
    """Builds one run's events with increasing times and readable ids."""

    def __init__(self, name: str):
        self.name = name
        self.events: list[Event] = []

    def _event(self, payload) -> Event:
        event = Event(
            self.name,
            payload,
            event_id=f"{self.name}-{len(self.events):03d}",
            ts=T0 + timedelta(seconds=len(self.events)),
        )
        self.events.append(event)
        return event

    def interaction(self, step: int, group: str | None, rewards: dict[str, float], tokens: int = 10, **kw) -> Event:
        total = kw.pop("reward", sum(rewards.values()))
        payload = Interaction(
            prompt=f"{self.name} {group}",
            completion="x" * tokens,
            reward=total,
            rewards=rewards,
            completion_tokens=tokens,
            step=step,
            group_id=group,
            **kw,
        )
        return self._event(payload)

    def judge(self, target: Event, score: float) -> None:
        self._event(
            JudgeScore(
                interaction_id=target.event_id,
                judge_model="j",
                template_version="v1",
                **{"score": score, "score_normalized": score},
            )
        )

    def step(self, step: int, **metrics: float) -> None:
        named = {k.replace("__", "/"): v for k, v in metrics.items()}
        self._event(TrainStep(step=step, loss=1.0, metrics=named))


def dominant() -> Run:
    run = Run("dominant")
    for step in range(3):
        for g in range(2):
            for acc, fmt in ((1.0, 0.6), (1.0, 0.4), (0.0, 0.6), (0.0, 0.4)):
                run.interaction(step, f"{step}:{g}", {"accuracy": acc, "format": fmt}, tokens=10 + 3 * g)
    return run


def length_hacker() -> Run:
    run = Run("length-hacker")
    for step in range(5):
        for correct, extra in ((1.0, -3), (0.0, -3), (1.0, 3), (0.0, 3)):
            tokens = 10 + 10 * step + extra
            run.interaction(step, f"{step}:0", {"correct": correct, "length_bonus": tokens / 10}, tokens=tokens)
    return run


def saturated() -> Run:
    run = Run("saturated")
    for step in range(12):
        for g in range(2):
            pair = (0.0, 1.0) if step < 2 or (step == 11 and g == 1) else (1.0, 1.0)
            for value in pair:
                run.interaction(step, f"{step}:{g}", {"correct": value})
    return run


def judge_drift() -> Run:
    run = Run("judge-drift")
    judged = {0: (0.0, 0.5, 1.0), 1: (0.5, 1.0, 0.5), 2: (1.0, 0.5, 0.0)}
    for step, scores in judged.items():
        for reward, score in zip((0.0, 1.0, 2.0), scores, strict=True):
            run.judge(run.interaction(step, None, {}, reward=reward), score)
    return run


def truncated() -> Run:
    run = Run("truncated")
    ratios = {1: (0.75, 0.5, 2.0), 2: (1.25, 0.25, 3.0), 3: (0.75, 0.5, 2.0), 4: (1.25, 0.5, 2.5)}
    for step, (mean, low, high) in ratios.items():
        run.step(
            step,
            sampling_args__top_p=0.9,
            sampling_args__top_k=0.0,
            sampling_args__importance_sampling_correction=1.0,
            sampling__importance_sampling_ratio__mean=mean,
            sampling__importance_sampling_ratio__min=low,
            sampling__importance_sampling_ratio__max=high,
        )
    for step in (5, 6):
        run.step(step, sampling_args__top_p=1.0, sampling_args__importance_sampling_correction=1.0)
    return run


def healthy() -> Run:
    run = Run("healthy")
    for step in range(6):
        for g in range(2):
            for k, (correct, fmt) in enumerate(((1.0, 0.5), (1.0, 0.0), (0.0, 0.5), (0.0, 0.0))):
                event = run.interaction(step, f"{step}:{g}", {"correct": correct, "format": fmt}, tokens=20 + 4 * k)
                if g == 0:
                    run.judge(event, correct)
        run.step(step, sampling_args__top_p=1.0, sampling_args__importance_sampling_correction=1.0)
    return run


RUNS = [dominant(), length_hacker(), saturated(), judge_drift(), truncated(), healthy()]


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    from trainwire.config import Settings

    return Settings(data_dir=tmp_path_factory.mktemp("audit"))


@pytest.fixture(scope="module")
def store(settings):
    with open_store(settings) as store:
        store.migrate()
        store.insert_events(e for run in RUNS for e in run.events)
        yield store


def rows(store, name: str, **params) -> list[dict]:
    return run_query(store, name, **params).to_pylist()


def test_component_dominance_shares(store):
    shares = rows(store, "audit_component_dominance", run="dominant")
    assert [(r["reward_fn"], r["interactions"], r["step_first"], r["step_last"]) for r in shares] == [
        ("accuracy", 24, 0, 2),
        ("format", 24, 0, 2),
    ]
    assert shares[0]["variance_share"] == pytest.approx(25 / 26, rel=1e-12)
    assert shares[1]["variance_share"] == pytest.approx(1 / 26, rel=1e-12)


def test_length_trend(store):
    (trend,) = rows(store, "audit_length_trend", run="length-hacker", correctness="correct")
    assert (trend["steps"], trend["step_first"], trend["step_last"]) == (5, 0, 4)
    assert trend["length_reward_pearson"] == pytest.approx(1.0, rel=1e-12)
    assert trend["length_step_pearson"] == pytest.approx(1.0, rel=1e-12)
    assert trend["length_change"] == pytest.approx(40.0, rel=1e-12)
    assert trend["correctness_change"] == pytest.approx(0.0, abs=1e-12)
    (other,) = rows(store, "audit_length_trend", run="length-hacker", correctness="no-such-function")
    assert other["correctness_change"] is None


def test_saturation(store):
    (saturation,) = rows(store, "audit_saturation", run="saturated")
    assert saturation == {
        "reward_max": 1.0,
        "groups": 20,
        "step_first": 2,
        "step_last": 11,
        "at_max_share": 39 / 40,
        "zero_variance_share": 19 / 20,
    }
    (everything,) = rows(store, "audit_saturation", run="saturated", last_steps=12)
    assert (everything["groups"], everything["step_first"], everything["zero_variance_share"]) == (24, 0, 19 / 24)


def test_judge_drift(store):
    (drift,) = rows(store, "audit_judge_drift", run="judge-drift")
    assert (drift["steps"], drift["step_first"], drift["step_last"], drift["pairs"]) == (3, 0, 2, 9)
    assert drift["pearson_first"] == pytest.approx(1.0, rel=1e-12)
    assert drift["pearson_last"] == pytest.approx(-1.0, rel=1e-12)
    assert drift["agreement_change"] == pytest.approx(-2.0, rel=1e-12)
    by_step = rows(store, "judge_agreement_by_step", runs=["judge-drift"])  # the same per-step numbers
    assert [round(r["pearson"], 12) for r in by_step] == [1.0, 0.0, -1.0]


def test_truncated_sampling_with_importance_sampling(store):
    (sampling,) = rows(store, "audit_sampling", run="truncated")
    assert sampling == {
        "steps": 4,
        "step_first": 1,
        "step_last": 4,
        "top_p": 0.9,
        "top_k": 0.0,
        "min_p": None,
        "is_ratio_mean": 1.0,
        "is_ratio_min": 0.25,
        "is_ratio_max": 3.0,
    }
    assert rows(store, "audit_sampling", run="healthy") == []


EXPECTED = {
    "dominant": [("warning", "component_dominance", 0, 2)],
    "length-hacker": [("warning", "length_hacking", 0, 4)],
    "saturated": [("critical", "saturation", 2, 11)],
    "judge-drift": [("warning", "judge_drift", 0, 2)],
    "truncated": [("critical", "truncated_sampling_with_is", 1, 4)],
    "healthy": [],
}


@pytest.mark.parametrize("run", list(EXPECTED))
def test_each_run_gets_its_own_finding_and_no_other(store, run):
    report = audit_run(store, run, AuditConfig())
    assert [(f.severity, f.check, f.step_first, f.step_last) for f in report.findings] == EXPECTED[run]


def test_findings_carry_their_evidence(store):
    (finding,) = audit_run(store, "dominant", AuditConfig()).findings
    assert finding.evidence["reward_fn"] == "accuracy"
    assert finding.evidence["variance_share"] == pytest.approx(25 / 26, rel=1e-12)
    assert finding.evidence["variance_shares"] == pytest.approx({"accuracy": 25 / 26, "format": 1 / 26}, rel=1e-12)
    assert "accuracy explains 96% of the total reward's variance within groups" in finding.message
    (finding,) = audit_run(store, "truncated", AuditConfig()).findings
    assert finding.evidence == {
        "steps": 4,
        "top_p": 0.9,
        "top_k": 0.0,
        "min_p": None,
        "is_ratio_mean": 1.0,
        "is_ratio_min": 0.25,
        "is_ratio_max": 3.0,
    }


def audit(settings, *args: str):
    """``trainwire audit ARGS`` on the test's store."""
    return CliRunner().invoke(main, ["--data-dir", str(settings.data_dir), "audit", *args])


def test_the_command_prints_findings_and_fails_on_the_given_severity(settings, store):

    result = audit(settings, "--run", "length-hacker")
    assert result.exit_code == 0, result.output  # without --fail-on, findings only print
    assert "[warning] length_hacking, steps 0-4:" in result.output
    assert "correct" in result.output and "after the fact" in result.output
    assert audit(settings, "--run", "length-hacker", "--fail-on", "critical").exit_code == 0
    failed = audit(settings, "--run", "length-hacker", "--fail-on", "warning")
    assert failed.exit_code == 1
    assert "1 finding at or above warning" in failed.output
    assert audit(settings, "--run", "saturated", "--fail-on", "critical").exit_code == 1
    assert audit(settings, "--run", "healthy", "--fail-on", "warning").exit_code == 0

    as_json = json.loads(audit(settings, "--run", "truncated", "--format", "json").output)
    assert as_json["run"] == "truncated"
    assert [(f["severity"], f["check"], f["step_first"], f["step_last"]) for f in as_json["findings"]] == [
        ("critical", "truncated_sampling_with_is", 1, 4)
    ]


def test_an_unknown_run_is_named(settings, store):
    result = audit(settings, "--run", "nope")
    assert result.exit_code == 1
    assert "run 'nope' has no interactions or train steps in the store" in result.output
    assert "Traceback" not in result.output


def test_a_correctness_function_that_the_run_lacks_is_named(settings, store):
    result = audit(settings, "--run", "dominant", "--correctness", "nope")
    assert result.exit_code == 1
    assert "run 'dominant' has no reward function 'nope' (it has accuracy, format)" in result.output
