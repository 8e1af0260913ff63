"""Groups: a step's GRPO groups (prompt, size, reward mean and std, zero-variance flag) with filters,
and one group's completions side by side with their rewards, advantage, length and judge verdict."""

from __future__ import annotations

from trainwire.ui.routes import DataRoute, View

VIEW = View(
    name="groups",
    title="Groups",
    routes=(
        DataRoute("steps", "reward_by_step", ("runs",)),
        DataRoute("groups", "step_groups", ("run", "step", "zero_variance_only", "search", "order", "limit")),
        DataRoute("group", "group_completions", ("run", "step", "group")),
    ),
)
