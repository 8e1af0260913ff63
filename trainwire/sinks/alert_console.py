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
from collections.abc import Iterable
from pathlib import Path

from trainwire.bus.base import Record
from trainwire.events import Alert, Event
from trainwire.private_files import open_private, private_dir
from trainwire.sinks.base import Sink

__all__ = ["AlertConsole", "AlertLedger"]

logger = logging.getLogger("trainwire.worker")


class AlertLedger:
    """The ids of the alerts already handled one way (said, posted) on a data directory.

    ``{data_dir}/state/alerts_{what}``: one id a line, appended (a private file).
    """

    def __init__(self, data_dir: str | Path, what: str):
        self.path = Path(data_dir) / "state" / f"alerts_{what}"
        self._ids = set(self.path.read_text(encoding="utf-8").split()) if self.path.exists() else set()

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def add(self, event_ids: Iterable[str]) -> None:
        """Remember ``event_ids`` (appended to the file)."""
        new = [event_id for event_id in event_ids if event_id not in self._ids]
        if not new:
            return
        private_dir(self.path.parent)
        with open_private(self.path, "a", encoding="utf-8") as fh:
            fh.writelines(event_id + "\n" for event_id in new)
        self._ids.update(new)


class AlertConsole(Sink):
    """Logs each alert event (``ALERT [severity] rule run=...: message``) once per data directory."""

    def __init__(self, data_dir: str | Path):
        self.announced = AlertLedger(data_dir, "announced")
        self._pending: dict[str, tuple[str, Alert]] = {}

    def add(self, event: Event, record: Record) -> None:
        if isinstance(event.payload, Alert) and event.event_id not in self.announced:
            self._pending[event.event_id] = (event.run_id, event.payload)

    def flush(self) -> None:
        """Log the new alerts of the batch and remember their ids."""
        if not self._pending:
            return
        for run_id, alert in self._pending.values():
            logger.warning("ALERT [%s] %s run=%s: %s", alert.severity, alert.rule, run_id, alert.message)
        self.announced.add(self._pending)
        self._pending = {}
