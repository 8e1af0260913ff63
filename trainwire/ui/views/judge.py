"""Judge: the LLM judge against the rule reward: agreement per run and per step, a judge-by-reward grid,
and the largest disagreements with the judge's reasoning."""

from __future__ import annotations

from trainwire.ui.routes import DataRoute, View

VIEW = View(
    name="judge",
    title="Judge",
    routes=(
        DataRoute("agreement", "judge_agreement", ("runs", "reward_fn")),
        DataRoute("by_step", "judge_by_step", ("runs",)),
        DataRoute("agreement_by_step", "judge_agreement_by_step", ("runs", "reward_fn")),
        DataRoute("confusion", "judge_confusion", ("runs", "reward_fn", "bins")),
        DataRoute("disagreements", "judge_disagreements", ("runs", "reward_fn", "min_gap", "limit")),
    ),
)
