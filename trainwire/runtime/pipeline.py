"""The embedded runtime: consume a consumer group, feed sinks, checkpoint, repeat.

It runs on either bus (the embedded log or Kafka) and is what ``trainwire worker`` runs on one
machine. The commit order is written down once, in :meth:`Pipeline.checkpoint`:

1. every sink flushed (data durable at its destination);
2. dead letters published;
3. consumer offsets committed.

So a crash at any point replays at most the records since the last commit (at-least-once), and
the stores collapse the repeats by ``event_id``. While a sink pushes back (ClickHouse down), the
pipeline stops consuming and retries the flush with backoff; nothing is committed meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from trainwire.bus.base import Consumer
from trainwire.sinks.base import Sink, SinkBackpressure
from trainwire.sinks.dead_letter import DeadLetters

logger = logging.getLogger("trainwire.pipeline")


class Pipeline:
    """Moves records from a consumer group into sinks with commit-after-flush.

    Args:
        consumer: the consumer group member to read from (not started yet).
        sinks: where records go; each gets every record.
        dead_letters: where records that can never be processed are reported.
        max_batch: records between checkpoints at most.
        flush_interval_s: time between checkpoints at most.
        max_backoff_s: the longest wait between flush retries while a sink pushes back.
    """

    def __init__(
        self,
        consumer: Consumer,
        sinks: Sequence[Sink],
        dead_letters: DeadLetters,
        *,
        max_batch: int = 10_000,
        flush_interval_s: float = 0.5,
        max_backoff_s: float = 30.0,
    ):
        self.consumer = consumer
        self.sinks = list(sinks)
        self.dead_letters = dead_letters
        self.max_batch = max_batch
        self.flush_interval_s = flush_interval_s
        self.max_backoff_s = max_backoff_s
        self.records_in = 0
        self._uncommitted = 0

    async def run(self, stop: asyncio.Event | None = None, idle_exit_s: float | None = None) -> None:
        """Consume until ``stop`` is set, or until nothing new arrived for ``idle_exit_s`` seconds."""
        stop = stop or asyncio.Event()
        await self.consumer.start()
        try:
            last_checkpoint = last_record = time.monotonic()
            while not stop.is_set():
                records = await self.consumer.getmany(timeout_ms=int(self.flush_interval_s * 1000), max_records=5000)
                now = time.monotonic()
                for record in records:
                    for sink in self.sinks:
                        sink.add(record)
                if records:
                    last_record = now
                    self.records_in += len(records)
                    self._uncommitted += len(records)
                due = self._uncommitted >= self.max_batch or now - last_checkpoint >= self.flush_interval_s
                if self._uncommitted and due:
                    await self.checkpoint(stop)
                    last_checkpoint = time.monotonic()
                if idle_exit_s is not None and not self._uncommitted and now - last_record >= idle_exit_s:
                    break
            if self._uncommitted:
                await self.checkpoint(stop)
        finally:
            await self.consumer.stop()
            await self.dead_letters.close()
            for sink in self.sinks:
                sink.close()

    async def checkpoint(self, stop: asyncio.Event | None = None) -> None:
        """Flush every sink (retrying while they push back), publish dead letters, commit offsets."""
        backoff = 0.0
        for sink in self.sinks:
            while True:
                try:
                    await asyncio.to_thread(sink.flush)
                    break
                except SinkBackpressure as exc:
                    backoff = min(max(exc.retry_after, backoff * 2), self.max_backoff_s)
                    logger.warning("trainwire: %s; retrying in %.1fs without consuming", exc, backoff)
                    if stop is not None and stop.is_set():
                        raise
                    await asyncio.sleep(backoff)
        await self.dead_letters.flush()
        await self.consumer.commit()
        self._uncommitted = 0
