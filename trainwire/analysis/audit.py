"""Audits of a GRPO run, after the fact: ``trainwire audit --run R [--fail-on warning|critical]``.

Each check reads one named query (``queries/audit_*.sql``, every number comes from it) and turns
it into a :class:`Finding` when its thresholds (:class:`AuditConfig`) are crossed:

==============================  ========  ============================================================
check                           severity  finding
==============================  ========  ============================================================
``component_dominance``         warning   one reward function explains at least ``dominance_share``
                                          of the total reward's variance within groups (of two or more
                                          functions): the others barely steer the advantages
``length_hacking``              warning   over at least ``min_steps`` steps, completion length grows
                                          with steps and with reward (both Pearson >= ``min_pearson``)
                                          while the correctness reward changes by at most
                                          ``flat_change``
``saturation``                  critical  over the last ``last_steps`` steps, at least ``at_max_share``
                                          of completions score the run's maximum reward and at least
                                          ``zero_variance_share`` of groups have zero variance: no
                                          learning signal left
``judge_drift``                 warning   the Pearson correlation of LLM judge and rule reward falls by
                                          at least ``drift_change`` over at least ``min_steps`` steps
``truncated_sampling_with_is``  critical  steps sampled with top_p < 1, top_k > 0 or min_p > 0 while
                                          TRL corrects with importance sampling, whose ratio is then
                                          biased (TRL issue #6789, PR #7269)
==============================  ========  ============================================================

These signals audit a run once it has happened (or while it runs); they are not an early warning
(TRL issue #6350): a finding says where to look, over which steps, with the evidence.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import click

from trainwire.analysis.queries import QueryError, run_query
from trainwire.config import Settings
from trainwire.errors import ConfigError

if TYPE_CHECKING:
    from trainwire.store.clickhouse import Store

__all__ = ["SEVERITIES", "AuditConfig", "AuditReport", "Finding", "audit_command", "audit_run"]

SEVERITIES = ("warning", "critical")
"""Finding severities, in increasing order."""

CORRECTNESS_NAME = re.compile(r"correct|accura|exact|match", re.IGNORECASE)
"""A reward function whose name matches this is taken as the correctness reward when none is named."""


@dataclass(frozen=True)
class AuditConfig:
    """The thresholds of the audit's checks (see the module docstring)."""

    dominance_share: float = 0.9
    min_steps: int = 3
    min_pearson: float = 0.8
    flat_change: float = 0.05
    last_steps: int = 10
    at_max_share: float = 0.8
    zero_variance_share: float = 0.8
    drift_change: float = 0.5

    def __post_init__(self) -> None:
        for name in ("dominance_share", "min_pearson", "at_max_share", "zero_variance_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"audit.{name}", f"must be between 0 and 1, got {getattr(self, name)}")
        if self.min_steps < 2 or self.last_steps < 1:
            raise ConfigError("audit", f"min_steps >= 2 and last_steps >= 1, got {self.min_steps}, {self.last_steps}")


@dataclass(frozen=True)
class Finding:
    """One thing an audit found: which check, how bad, over which steps, what it means, the numbers."""

    check: str
    severity: str
    step_first: int | None
    step_last: int | None
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditReport:
    """The findings on one run, and the checks that could not be made (with why)."""

    run: str
    summary: dict[str, Any]
    findings: list[Finding]
    not_checked: dict[str, str]

    def at_or_above(self, severity: str) -> list[Finding]:
        """The findings of ``severity`` or worse."""
        rank = SEVERITIES.index(severity)
        return [f for f in self.findings if SEVERITIES.index(f.severity) >= rank]


def audit_run(store: Store, run: str, config: AuditConfig | None = None, correctness: str | None = None) -> AuditReport:
    """Audit the stored run ``run``; ``correctness``: its correctness reward function (default: by name).

    Raises :class:`QueryError` naming the run when the store has nothing of it, or the reward
    function when the run has no ``correctness``.
    """
    config = config or AuditConfig()
    summaries = run_query(store, "audit_run", run=run).to_pylist()
    if not summaries:
        raise QueryError("audit_run", f"run {run!r} has no interactions or train steps in the store")
    summary = summaries[0]
    reward_fns: list[str] = summary["reward_fns"]
    not_checked: dict[str, str] = {}
    if correctness is not None and correctness not in reward_fns:
        have = f"it has {', '.join(reward_fns)}" if reward_fns else "it has no reward functions"
        raise QueryError("audit_length_trend", f"run {run!r} has no reward function {correctness!r} ({have})")
    if correctness is None:
        candidates = [name for name in reward_fns if CORRECTNESS_NAME.search(name)]
        if len(candidates) == 1:
            correctness = candidates[0]
        else:
            which = f"{', '.join(candidates)} all look like one" if candidates else "none is named like one"
            not_checked["length_hacking"] = (
                f"which reward function says correct? {which}: pass --correctness NAME"
                if reward_fns
                else "the run has no reward functions"
            )
    findings = [
        *_dominance(store, run, config),
        *(_length_hacking(store, run, config, correctness) if correctness else []),
        *_saturation(store, run, config),
        *_judge_drift(store, run, config, correctness or "total"),
        *_truncated_sampling(store, run),
    ]
    findings.sort(key=lambda f: (-SEVERITIES.index(f.severity), f.step_first if f.step_first is not None else -1))
    return AuditReport(run, summary, findings, not_checked)


def _dominance(store: Store, run: str, config: AuditConfig) -> list[Finding]:
    rows = run_query(store, "audit_component_dominance", run=run).to_pylist()
    shares = {r["reward_fn"]: r["variance_share"] for r in rows}
    known = [r for r in rows if r["variance_share"] is not None]
    if len(rows) < 2 or not known:
        return []
    top = max(known, key=lambda r: r["variance_share"])
    if top["variance_share"] < config.dominance_share:
        return []
    message = (
        f"{top['reward_fn']} explains {top['variance_share']:.0%} of the total reward's variance within groups: "
        f"the other reward functions ({', '.join(sorted(set(shares) - {top['reward_fn']}))}) barely move the "
        "advantages"
    )
    evidence = {"reward_fn": top["reward_fn"], "variance_share": top["variance_share"], "variance_shares": shares}
    return [Finding("component_dominance", "warning", top["step_first"], top["step_last"], message, evidence)]


def _length_hacking(store: Store, run: str, config: AuditConfig, correctness: str) -> list[Finding]:
    rows = run_query(store, "audit_length_trend", run=run, correctness=correctness).to_pylist()
    if not rows:
        return []
    trend = rows[0]
    with_steps, with_reward = trend["length_step_pearson"], trend["length_reward_pearson"]
    change = trend["correctness_change"]
    if (
        trend["steps"] < config.min_steps
        or with_steps is None
        or with_reward is None
        or change is None
        or with_steps < config.min_pearson
        or with_reward < config.min_pearson
        or trend["length_change"] <= 0
        or abs(change) > config.flat_change
    ):
        return []
    message = (
        f"completions grew by {trend['length_change']:.4g} tokens over the steps and the reward followed "
        f"(Pearson {with_reward:.2f}) while {correctness} changed by {change:+.4g}: the reward pays for length"
    )
    evidence = {"correctness": correctness, **{k: v for k, v in trend.items() if k not in ("step_first", "step_last")}}
    return [Finding("length_hacking", "warning", trend["step_first"], trend["step_last"], message, evidence)]


def _saturation(store: Store, run: str, config: AuditConfig) -> list[Finding]:
    rows = run_query(store, "audit_saturation", run=run, last_steps=config.last_steps).to_pylist()
    if not rows:
        return []
    sat = rows[0]
    if sat["at_max_share"] < config.at_max_share or sat["zero_variance_share"] < config.zero_variance_share:
        return []
    message = (
        f"{sat['at_max_share']:.1%} of completions score the maximum reward ({sat['reward_max']:.4g}) and "
        f"{sat['zero_variance_share']:.1%} of {sat['groups']} groups have zero variance: GRPO has no learning "
        "signal left"
    )
    evidence = {k: v for k, v in sat.items() if k not in ("step_first", "step_last")}
    return [Finding("saturation", "critical", sat["step_first"], sat["step_last"], message, evidence)]


def _judge_drift(store: Store, run: str, config: AuditConfig, reward_fn: str) -> list[Finding]:
    rows = run_query(store, "audit_judge_drift", run=run, reward_fn=reward_fn).to_pylist()
    if not rows:
        return []
    drift = rows[0]
    if drift["steps"] < config.min_steps or drift["agreement_change"] > -config.drift_change:
        return []
    reward = "the total reward" if reward_fn == "total" else reward_fn
    message = (
        f"the LLM judge agrees less and less with {reward}: Pearson {drift['pearson_first']:.2f} at step "
        f"{drift['step_first']}, {drift['pearson_last']:.2f} at step {drift['step_last']} "
        f"(a change of {drift['agreement_change']:+.2f} over the run)"
    )
    evidence = {"reward_fn": reward_fn, **{k: v for k, v in drift.items() if k not in ("step_first", "step_last")}}
    return [Finding("judge_drift", "warning", drift["step_first"], drift["step_last"], message, evidence)]


def _truncated_sampling(store: Store, run: str) -> list[Finding]:
    rows = run_query(store, "audit_sampling", run=run).to_pylist()
    if not rows:
        return []
    sampling = rows[0]
    top_p, top_k, min_p = sampling["top_p"], sampling["top_k"], sampling["min_p"]
    truncation = ", ".join(
        f"{name}={value:g}"
        for name, value, truncates in (
            ("top_p", top_p, top_p is not None and top_p < 1),
            ("top_k", top_k, top_k is not None and top_k > 0),
            ("min_p", min_p, min_p is not None and min_p > 0),
        )
        if truncates
    )
    ratios = (
        f"; importance-sampling ratio mean {sampling['is_ratio_mean']:.3g}, min {sampling['is_ratio_min']:.3g}, "
        f"max {sampling['is_ratio_max']:.3g}"
        if sampling["is_ratio_mean"] is not None
        else ""
    )
    message = (
        f"sampled with {truncation} while correcting with importance sampling: the ratio compares the "
        f"truncated sampler with the full policy and is biased (TRL #6789){ratios}"
    )
    evidence = {k: v for k, v in sampling.items() if k not in ("step_first", "step_last")}
    return [
        Finding(
            "truncated_sampling_with_is", "critical", sampling["step_first"], sampling["step_last"], message, evidence
        )
    ]


# --------------------------------------------------------------------------- the command


def _steps(finding: Finding) -> str:
    if finding.step_first is None:
        return ""
    if finding.step_first == finding.step_last:
        return f", step {finding.step_first}"
    return f", steps {finding.step_first}-{finding.step_last}"


def _print_text(report: AuditReport) -> None:
    summary = report.summary
    steps = "" if summary["step_first"] is None else f" over steps {summary['step_first']}-{summary['step_last']}"
    click.echo(
        f"audit of run {report.run}: {summary['interactions']} interactions{steps}, "
        f"{summary['train_steps']} train steps"
    )
    click.echo("(an audit after the fact: these signals say where to look, they are not an early warning)")
    for finding in report.findings:
        click.echo(f"[{finding.severity}] {finding.check}{_steps(finding)}: {finding.message}")
        numbers = ", ".join(f"{k}={_fmt(v)}" for k, v in finding.evidence.items())
        click.echo(f"    evidence: {numbers}")
    for check, why in report.not_checked.items():
        click.echo(f"[not checked] {check}: {why}")
    if not report.findings:
        click.echo("no findings")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) + "}"
    return str(value)


@click.command("audit")
@click.option("--run", required=True, help="The run to audit (finished or running).")
@click.option(
    "--fail-on",
    type=click.Choice(SEVERITIES),
    help="Exit with status 1 when a finding is this severe or worse (to gate a CI job or a sweep).",
)
@click.option(
    "--correctness",
    metavar="REWARD_FN",
    help="The reward function that says whether a completion is correct "
    "(default: the one named like correct/accuracy/exact/match).",
)
@click.option(
    "--last-steps",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Saturation: how many of the run's last steps to look at.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: for a script.",
)
@click.pass_obj
def audit_command(
    settings: Settings, run: str, fail_on: str | None, correctness: str | None, last_steps: int, fmt: str
) -> None:
    """Audit a run after the fact: which reward function dominates, length hacking, saturation, judge
    drift, truncated sampling with importance-sampling correction. Each finding comes with the steps
    it covers and its evidence.
    """
    from trainwire.analysis.commands import open_migrated

    with open_migrated(settings) as store:
        report = audit_run(store, run, AuditConfig(last_steps=last_steps), correctness)
    if fmt == "json":
        click.echo(json.dumps(asdict(report), indent=1))
    else:
        _print_text(report)
    if fail_on is not None:
        failing = report.at_or_above(fail_on)
        if failing:
            count = len(failing)
            click.echo(f"{count} finding{'s' if count != 1 else ''} at or above {fail_on}", err=True)
            raise SystemExit(1)
