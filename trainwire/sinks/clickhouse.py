"""The ClickHouse sink: events from the bus into their tables, in Arrow batches.

``add`` buffers an event (the runtime decoded it, and made an undecodable record a dead letter
naming the field at fault); ``flush`` inserts the buffer, one Arrow batch per event type. A connection
failure raises :class:`~trainwire.sinks.base.SinkBackpressure` so the runtime retries without
committing. A batch that cannot be stored for good, because ClickHouse refuses it or because a
value does not fit its column, is split to find the events at fault, which become dead letters
with the reason, and the rest is stored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trainwire.bus.base import Record
from trainwire.errors import EventError, StoreError
from trainwire.events import Event
from trainwire.sinks.base import Sink, SinkBackpressure
from trainwire.sinks.dead_letter import DeadLetters

if TYPE_CHECKING:
    from trainwire.store.clickhouse import Store


class ClickHouseSink(Sink):
    """Buffers events and inserts them into ClickHouse on flush."""

    def __init__(self, store: Store, dead_letters: DeadLetters, retry_after_s: float = 1.0):
        self.store = store
        self.dead_letters = dead_letters
        self.retry_after_s = retry_after_s
        self._buffer: list[tuple[Record, Event]] = []
        self._settled = 0  # of the buffer being flushed: the leading events stored or dead-lettered
        self.rows_written = 0

    def add(self, event: Event, record: Record) -> None:
        self._buffer.append((record, event))

    def flush(self) -> None:
        if not self._buffer:
            return
        self._settled = 0
        try:
            self._insert_separating_refused(self._buffer)
        finally:
            # Should ClickHouse go down midway, the retry must not store or dead-letter these again
            # (the separation goes left to right, so they lead the buffer).
            del self._buffer[: self._settled]

    def _insert_separating_refused(self, batch: list[tuple[Record, Event]]) -> None:
        """Insert ``batch``; if it cannot be stored for good, bisect it: store what can be, dead-letter the rest."""
        try:
            self.store.insert_events(event for _, event in batch)
        except StoreError as exc:
            if exc.retriable:
                raise SinkBackpressure(f"ClickHouse unavailable: {exc}", self.retry_after_s) from exc
            refusal = f"refused by ClickHouse: {exc}"
        except EventError as exc:  # a value that does not fit its column
            refusal = f"not stored: {exc}"
        else:
            self.rows_written += len(batch)
            self._settled += len(batch)
            return
        if len(batch) == 1:
            self.dead_letters.add(batch[0][0], refusal)
            self._settled += 1
            return
        middle = len(batch) // 2
        self._insert_separating_refused(batch[:middle])
        self._insert_separating_refused(batch[middle:])
