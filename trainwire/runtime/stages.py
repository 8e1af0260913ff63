"""Stages: the adapters between the pure processors and a runtime.

A stage takes decoded events, drives one or more processors, and hands back the events to
publish (stats, alerts). It also writes local outputs (the fine-tuning files) on ``flush`` and
exposes the processors' state as one JSON-able snapshot, which the runtime saves at every
checkpoint (in the data directory) and restores at start.
"""

from __future__ import annotations

import json
import logging
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from trainwire.events import Alert, Event, Interaction, JudgeScore
from trainwire.processors.dataset import DatasetConfig, DatasetProcessor
from trainwire.processors.health import HealthConfig, HealthMonitor
from trainwire.processors.stats import GroupStats, RewardStatsProcessor, StatsConfig
from trainwire.sinks.dataset import DatasetSink

logger = logging.getLogger("trainwire.worker")


class Stage(ABC):
    """One step of a worker between decoding and publishing."""

    name: str

    @abstractmethod
    def process(self, event: Event) -> list[Event]:
        """Take one event; return the events to publish."""

    def flush(self) -> None:  # noqa: B027 - stages without local outputs have nothing to flush
        """Make local outputs durable (called at every checkpoint, before offsets are committed)."""

    def close(self) -> None:  # noqa: B027 - most stages hold nothing
        """Release files."""

    @abstractmethod
    def snapshot(self) -> dict[str, Any]:
        """The state to save at a checkpoint."""

    @abstractmethod
    def restore(self, snapshot: dict[str, Any]) -> None:
        """Continue from a saved snapshot."""


class MonitorStage(Stage):
    """Rolling reward stats, GRPO group stats, and the health alerts over them and the train steps."""

    name = "monitor"

    def __init__(self, stats: StatsConfig | None = None, health: HealthConfig | None = None):
        self.stats = RewardStatsProcessor(stats or StatsConfig())
        self.health = HealthMonitor(health or HealthConfig())

    def process(self, event: Event) -> list[Event]:
        out: list[Event] = []
        for result in self.stats.process(event):
            out.append(result.to_event())
            if isinstance(result, GroupStats):
                out.extend(self.health.observe_group_stats(result))
        if not isinstance(event.payload, Interaction | JudgeScore):
            # The health rules over rewards get the group stats above; computing them twice
            # (the health monitor's own aggregator) would only cost time.
            out.extend(self.health.process(event))
        for alert in out:
            if isinstance(alert.payload, Alert):
                logger.warning(
                    "ALERT [%s] %s run=%s: %s",
                    alert.payload.severity,
                    alert.payload.rule,
                    alert.run_id,
                    alert.payload.message,
                )
        return out

    def snapshot(self) -> dict[str, Any]:
        return {"stats": self.stats.snapshot(), "health": self.health.snapshot()}

    def restore(self, snapshot: dict[str, Any]) -> None:
        self.stats.restore(snapshot["stats"])
        self.health.restore(snapshot["health"])


class DatasetStage(Stage):
    """The success filter writing fine-tuning files continuously (one file per split)."""

    name = "dataset"

    def __init__(self, output: Path, fmt: str = "alpaca", config: DatasetConfig | None = None):
        self.processor = DatasetProcessor(config or DatasetConfig())
        self.sink = DatasetSink(output, fmt, self.processor.config.splits)

    def process(self, event: Event) -> list[Event]:
        for example in self.processor.process(event):
            self.sink.add(example)
        return []

    def flush(self) -> None:
        self.sink.flush()

    def close(self) -> None:
        self.sink.close()

    def snapshot(self) -> dict[str, Any]:
        return self.processor.snapshot()

    def restore(self, snapshot: dict[str, Any]) -> None:
        self.processor.restore(snapshot)


class StateStore:
    """Stage snapshots as JSON files in a folder, replaced atomically."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def load(self, name: str) -> dict[str, Any] | None:
        """The saved snapshot of stage ``name``, or None."""
        path = self.directory / f"{name}.json"
        if not path.exists():
            return None
        return json.loads(path.read_text())

    def save(self, name: str, snapshot: dict[str, Any]) -> None:
        """Replace the snapshot of stage ``name`` (write, fsync, rename)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{name}.json"
        tmp = path.with_suffix(".tmp")
        text = json.dumps(snapshot)  # in one piece: json.dump writes chunk by chunk, several times slower
        with open(tmp, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
