"""Stages: the adapters between the pure processors and a runtime.

A stage takes decoded events, drives one or more processors, and hands back the events to
publish (stats, alerts). It also writes local outputs (the fine-tuning files) on ``flush`` and
exposes the processors' state as one JSON-able snapshot, which the runtime saves at every
checkpoint (in the data directory) and restores at start, and their grow-only keys (the dataset's
dedup keys; see :mod:`trainwire.processors.base`), which the runtime saves once each.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from trainwire.events import Event, Interaction, JudgeScore
from trainwire.private_files import open_private, replace_private
from trainwire.processors.base import StateError
from trainwire.processors.dataset import DatasetConfig, DatasetProcessor
from trainwire.processors.health import HealthConfig, HealthMonitor
from trainwire.processors.stats import GroupStats, RewardStatsProcessor, StatsConfig
from trainwire.sinks.dataset import DatasetSink


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

    def take_new_keys(self) -> list[str]:
        """The keys this stage's grow-only state gained since the last call (the default keeps none)."""
        return []

    def load_keys(self, keys: Iterable[str]) -> None:
        """Add saved keys back to the grow-only state (after :meth:`restore`)."""
        raise StateError(self.name, "this stage keeps no keys")


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
        return out  # alerts are logged when the worker reads them back from the bus (AlertConsole), once

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

    def take_new_keys(self) -> list[str]:
        return self.processor.take_new_keys()

    def load_keys(self, keys: Iterable[str]) -> None:
        self.processor.load_keys(keys)


class StateStore:
    """Stage snapshots as JSON files in a folder, replaced atomically, and grow-only keys appended to files.

    The keys of stage ``STAGE`` in the snapshot ``NAME`` are in ``NAME.STAGE.keys``, one segment a
    line (``number<TAB>JSON list``), each appended once; the snapshot says how many segments it
    includes, and :meth:`load_key_segments` cuts off the segments it does not (appended by a
    checkpoint that crashed before it saved its snapshot).
    """

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def load(self, name: str) -> dict[str, Any] | None:
        """The saved snapshot of stage ``name``, or None."""
        path = self.directory / f"{name}.json"
        if not path.exists():
            return None
        return json.loads(path.read_text())

    def save(self, name: str, snapshot: dict[str, Any]) -> None:
        """Replace the snapshot of stage ``name`` (write, fsync, rename).

        Compact JSON by orjson (several times faster than ``json.dumps``, and strict: the stages'
        snapshots hold no NaN or infinity); :meth:`load` reads it and the spaced JSON written before.
        """
        replace_private(self.directory / f"{name}.json", orjson.dumps(snapshot))

    def _keys_path(self, name: str, stage: str) -> Path:
        return self.directory / f"{name}.{stage}.keys"

    def append_key_segment(self, name: str, stage: str, number: int, keys: list[str]) -> None:
        """Append segment ``number`` of ``stage``'s keys (fsynced: saved before the snapshot that counts it)."""
        with open_private(self._keys_path(name, stage), "ab") as handle:
            handle.write(f"{number}\t{json.dumps(keys, separators=(',', ':'))}\n".encode())
            handle.flush()
            os.fsync(handle.fileno())

    def load_key_segments(self, name: str, stage: str, count: int) -> list[list[str]]:
        """The first ``count`` segments of ``stage``'s keys; the file is cut after them."""
        path = self._keys_path(name, stage)
        if not path.exists():
            if count:
                raise StateError(stage, f"{path} is missing; the snapshot includes {count} segments of keys")
            return []
        segments: list[list[str]] = []
        with open(path, "r+b") as handle:
            while len(segments) < count:
                line = handle.readline()
                if not line:
                    raise StateError(stage, f"{path} has {len(segments)} key segments; the snapshot includes {count}")
                number, _, keys = line.partition(b"\t")
                if not line.endswith(b"\n") or number != str(len(segments)).encode():
                    raise StateError(stage, f"{path}, line {len(segments) + 1}: not key segment {len(segments)}")
                segments.append(json.loads(keys))
            handle.truncate(handle.tell())
        return segments
