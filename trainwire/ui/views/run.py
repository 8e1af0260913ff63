"""Run: reward per reward function over steps (mean, p10-p90 band), the trainer's metrics, GRPO group
stats, judge next to reward and the alerts on one step axis; ``progress`` is what the page polls
to redraw as the run goes on."""

from __future__ import annotations

from trainwire.ui.routes import DataRoute, View

VIEW = View(
    name="run",
    title="Run",
    routes=(
        DataRoute("progress", "run_progress", ("run",)),
        DataRoute("reward_stats", "reward_stats_by_step", ("runs", "window")),
        DataRoute("reward_by_step", "reward_by_step", ("runs", "reward_fn")),
        DataRoute("train_metrics", "train_step_metrics", ("runs",)),
        DataRoute("group_stats", "group_stats", ("runs",)),
        DataRoute("judge_by_step", "judge_by_step", ("runs",)),
        DataRoute("alerts", "alerts", ("runs",)),
    ),
)
