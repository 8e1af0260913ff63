"""Alerts said once on the worker's console: each alert read from the bus is logged the first time
any worker on this data directory sees it.

A worker of a new consumer group (``trainwire worker`` after ``trainwire demo``, which uses its
own group) reads the alerts topic from the start and derives the same alerts again from the same
training steps (alert ids come from run, rule, step and cause). Without a memory of what was said,
it would print every old alert again. :class:`AlertConsole` keeps the ids it announced in
``{data_dir}/state/alerts_announced`` (one id a line, appended) and says only new ones.
Workers on other machines (Kafka, another data directory) keep their own list.
"""

from __future__ import annotations

import logging
from pathlib import Path

from trainwire.bus.base import Record
from trainwire.events import Alert, Event
from trainwire.private_files import open_private, private_dir
from trainwire.sinks.base import Sink

__all__ = ["AlertConsole"]

logger = logging.getLogger("trainwire.worker")


class AlertConsole(Sink):
    """Logs each alert event (``ALERT [severity] rule run=...: message``) once per data directory."""

    def __init__(self, data_dir: str | Path):
        self.path = Path(data_dir) / "state" / "alerts_announced"
        self._announced = set(self.path.read_text(encoding="utf-8").split()) if self.path.exists() else set()
        self._pending: dict[str, tuple[str, Alert]] = {}

    def add(self, event: Event, record: Record) -> None:
        if isinstance(event.payload, Alert) and event.event_id not in self._announced:
            self._pending[event.event_id] = (event.run_id, event.payload)

    def flush(self) -> None:
        """Log the new alerts of the batch and remember their ids."""
        if not self._pending:
            return
        for run_id, alert in self._pending.values():
            logger.warning("ALERT [%s] %s run=%s: %s", alert.severity, alert.rule, run_id, alert.message)
        private_dir(self.path.parent)
        with open_private(self.path, "a", encoding="utf-8") as fh:
            fh.writelines(event_id + "\n" for event_id in self._pending)
        self._announced.update(self._pending)
        self._pending = {}
