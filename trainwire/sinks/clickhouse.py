"""The ClickHouse sink: events from the bus into their tables, in Arrow batches.

``add`` buffers an event (the runtime decoded it, and made an undecodable record a dead letter
naming the field at fault); ``flush`` inserts the buffer, one Arrow batch per event type. A connection
failure raises :class:`~trainwire.sinks.base.SinkBackpressure` so the runtime retries without
committing; a batch ClickHouse refuses is split to find the events it refuses, which become dead
letters with ClickHouse's reason, and the rest is stored.
"""

from __future__ import annotations

from trainwire.bus.base import Record
from trainwire.errors import StoreError
from trainwire.events import Event
from trainwire.sinks.base import Sink, SinkBackpressure
from trainwire.sinks.dead_letter import DeadLetters
from trainwire.store.clickhouse import Store


class ClickHouseSink(Sink):
    """Buffers events and inserts them into ClickHouse on flush."""

    def __init__(self, store: Store, dead_letters: DeadLetters, retry_after_s: float = 1.0):
        self.store = store
        self.dead_letters = dead_letters
        self.retry_after_s = retry_after_s
        self._buffer: list[tuple[Record, Event]] = []
        self._settled = 0  # of the buffer being separated: the leading events stored or dead-lettered
        self.rows_written = 0

    def add(self, event: Event, record: Record) -> None:
        self._buffer.append((record, event))

    def flush(self) -> None:
        if not self._buffer:
            return
        try:
            self.store.insert_events(event for _, event in self._buffer)
        except StoreError as exc:
            if exc.retriable:
                raise SinkBackpressure(f"ClickHouse unavailable: {exc}", self.retry_after_s) from exc
            self._settled = 0
            try:
                self._insert_separating_refused(self._buffer)
            finally:
                # Should ClickHouse go down midway, the retry must not store or dead-letter these again
                # (the separation goes left to right, so they lead the buffer).
                del self._buffer[: self._settled]
        else:
            self.rows_written += len(self._buffer)
        self._buffer = []

    def _insert_separating_refused(self, batch: list[tuple[Record, Event]]) -> None:
        """Bisect a refused batch: store what ClickHouse accepts, dead-letter what it refuses."""
        if len(batch) == 1:
            record, event = batch[0]
            try:
                self.store.insert_events([event])
                self.rows_written += 1
                self._settled += 1
            except StoreError as exc:
                if exc.retriable:
                    raise SinkBackpressure(f"ClickHouse unavailable: {exc}", self.retry_after_s) from exc
                self.dead_letters.add(record, f"refused by ClickHouse: {exc}")
                self._settled += 1
            return
        middle = len(batch) // 2
        for half in (batch[:middle], batch[middle:]):
            try:
                self.store.insert_events(event for _, event in half)
                self.rows_written += len(half)
                self._settled += len(half)
            except StoreError as exc:
                if exc.retriable:
                    raise SinkBackpressure(f"ClickHouse unavailable: {exc}", self.retry_after_s) from exc
                self._insert_separating_refused(half)
