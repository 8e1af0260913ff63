"""Alerts: the health checks' alerts with severity, evidence and message, each linked to its run and step."""

from __future__ import annotations

from trainwire.ui.routes import DataRoute, View

VIEW = View(
    name="alerts",
    title="Alerts",
    routes=(DataRoute("feed", "alerts", ("runs", "limit")), DataRoute("summary", "alerts_summary", ("runs",))),
)
