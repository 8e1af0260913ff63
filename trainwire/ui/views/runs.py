"""Runs: every run with its first and last event, steps, interactions, latest windowed mean reward,
alerts and mean judge score; the page picks several to compare in the run view."""

from __future__ import annotations

from trainwire.ui.routes import DataRoute, View

VIEW = View(
    name="runs",
    title="Runs",
    routes=(
        DataRoute("status", "store_status"),
        DataRoute("overview", "runs_overview", ("runs",)),
        DataRoute("latest", "runs_latest", ("runs", "reward_fn")),
    ),
)
