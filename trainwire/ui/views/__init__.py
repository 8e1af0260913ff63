"""The views of the UI, one module each; :data:`VIEWS` in the order of the navigation bar."""

from __future__ import annotations

from trainwire.ui.routes import View
from trainwire.ui.views import alerts, groups, judge, logits, run, runs, samples

VIEWS: tuple[View, ...] = (runs.VIEW, run.VIEW, groups.VIEW, samples.VIEW, judge.VIEW, alerts.VIEW, logits.VIEW)

__all__ = ["VIEWS"]
