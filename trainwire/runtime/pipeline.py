"""The embedded runtime: consume a consumer group, run the stages and sinks, checkpoint, repeat.

It runs on either bus (the embedded log or Kafka) and is what ``trainwire worker`` runs on one
machine. Each record is decoded once; an undecodable one becomes a dead letter naming the field
at fault. The commit order is written down once, in :meth:`Pipeline.checkpoint`:

1. every sink flushed (rows durable in ClickHouse);
2. every stage flushed (fine-tuning files fsynced);
3. what the stages produced (stats, alerts) and the dead letters published;
4. the stages' state saved;
5. consumer offsets committed.

So a crash at any point replays at most the records since the last commit (at-least-once): the
stores collapse repeated rows by ``event_id`` (stats and alerts have deterministic ids) and the
dataset sink skips interactions it already wrote. While a sink pushes back (ClickHouse down), the
pipeline stops consuming and retries the flush with backoff; nothing is committed meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from trainwire.bus.base import Consumer
from trainwire.bus.publisher import Publisher, event_message
from trainwire.errors import EventError
from trainwire.events import decode
from trainwire.runtime.stages import Stage, StateStore
from trainwire.sinks.base import Sink, SinkBackpressure
from trainwire.sinks.dead_letter import DeadLetters

logger = logging.getLogger("trainwire.pipeline")


class Pipeline:
    """Moves records from a consumer group through stages into sinks, with commit-after-flush.

    Args:
        consumer: the consumer group member to read from (not started yet).
        sinks: where events go; each gets every event.
        publisher: publishes the stages' outputs and the dead letters at each checkpoint.
        dead_letters: reports records that can never be processed (through ``publisher``).
        prefix: the topic prefix for what is published.
        stages: processors adapted to the runtime (stats, alerts, dataset files).
        state: where stage snapshots live between runs (None: no state kept).
        max_batch: records between checkpoints at most.
        flush_interval_s: time between checkpoints at most.
        max_backoff_s: the longest wait between flush retries while a sink pushes back.
    """

    def __init__(
        self,
        consumer: Consumer,
        sinks: Sequence[Sink],
        publisher: Publisher,
        dead_letters: DeadLetters,
        prefix: str,
        *,
        stages: Sequence[Stage] = (),
        state: StateStore | None = None,
        max_batch: int = 10_000,
        flush_interval_s: float = 0.5,
        max_backoff_s: float = 30.0,
    ):
        self.consumer = consumer
        self.sinks = list(sinks)
        self.publisher = publisher
        self.prefix = prefix
        self.dead_letters = dead_letters
        self.stages = list(stages)
        self.state = state
        self.max_batch = max_batch
        self.flush_interval_s = flush_interval_s
        self.max_backoff_s = max_backoff_s
        self.records_in = 0
        self._uncommitted = 0

    def _restore(self) -> None:
        if self.state is None:
            return
        for stage in self.stages:
            snapshot = self.state.load(stage.name)
            if snapshot is not None:
                stage.restore(snapshot)

    async def run(self, stop: asyncio.Event | None = None, idle_exit_s: float | None = None) -> None:
        """Consume until ``stop`` is set, or until nothing new arrived for ``idle_exit_s`` seconds."""
        stop = stop or asyncio.Event()
        self._restore()
        await self.consumer.start()
        try:
            last_checkpoint = last_record = time.monotonic()
            while not stop.is_set():
                records = await self.consumer.getmany(timeout_ms=int(self.flush_interval_s * 1000), max_records=5000)
                now = time.monotonic()
                for record in records:
                    try:
                        event = decode(record.value, record.location)
                    except EventError as exc:
                        self.dead_letters.add(record, f"invalid event: {exc}")
                        continue
                    for sink in self.sinks:
                        sink.add(event, record)
                    for stage in self.stages:
                        for output in stage.process(event):
                            self.publisher.add(event_message(self.prefix, output))
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
            await self.publisher.close()
            for sink in self.sinks:
                sink.close()
            for stage in self.stages:
                stage.close()

    async def checkpoint(self, stop: asyncio.Event | None = None) -> None:
        """Flush sinks (retrying while they push back) and stages, publish, save state, commit offsets."""
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
        for stage in self.stages:
            stage.flush()
        await self.publisher.flush()
        if self.state is not None:
            for stage in self.stages:
                self.state.save(stage.name, stage.snapshot())
        await self.consumer.commit()
        self._uncommitted = 0
