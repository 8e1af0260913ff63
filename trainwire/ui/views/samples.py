"""Samples: interactions searched by text, run, step and reward range, success and judged or not;
one of them in full."""

from __future__ import annotations

from trainwire.ui.routes import DataRoute, View

_FILTERS = ("runs", "text", "step_min", "step_max", "reward_min", "reward_max", "success", "judged")

VIEW = View(
    name="samples",
    title="Samples",
    routes=(
        DataRoute("search", "search_interactions", (*_FILTERS, "limit", "offset")),
        DataRoute("record", "interaction_record", ("event_id", "run")),
    ),
)
