"""Logits: the logits probe's target-word probabilities by model, level, correctness and position
(seed 004's views), when the probe has data."""

from __future__ import annotations

from trainwire.ui.routes import DataRoute, View

VIEW = View(
    name="logits",
    title="Logits",
    routes=(
        DataRoute("by_model", "logits_by_model", ("runs",)),
        DataRoute("by_level", "logits_by_level", ("runs", "model")),
        DataRoute("by_correctness", "logits_by_correctness", ("runs", "model")),
        DataRoute("by_position", "logits_by_position", ("runs", "model", "bucket")),
    ),
)
