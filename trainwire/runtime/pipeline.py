"""What every runtime does with a record, and the embedded runtime that runs it.

:class:`WorkerCore` holds the per-record work and the flush sequence shared by both runtimes
(this module's :class:`Pipeline` and the faust app in :mod:`trainwire.runtime.faust_app`).
Each record is decoded once. Whatever one record raises cannot stop the worker: a record that
does not decode becomes a dead letter naming the field at fault, one that a stage fails on
becomes a dead letter naming the stage and the error (the other stages and the sinks still
take it), and one ClickHouse cannot store becomes a dead letter from the ClickHouse sink (see
:mod:`trainwire.sinks.clickhouse`); the rest of the batch goes on and is committed. The commit
order is the same in both runtimes:

1. every sink flushed (rows durable in ClickHouse);
2. every stage flushed (fine-tuning files fsynced);
3. what the stages produced (stats, alerts) and the dead letters published;
4. the stages' state saved, with the offsets it includes (first the keys the stages added since
   the last checkpoint, then the snapshot that counts them: see :meth:`StageSet.new_key_segments`);
5. consumer offsets committed.

So a crash at any point replays at most the records since the last commit (at-least-once): the
stores collapse repeated rows by ``event_id`` (stats and alerts have deterministic ids). A
replayed record already counted in the saved state is not processed by the stages again
(:class:`StageSet` keeps the next offset its state includes per topic partition), so stats
windows are not counted twice after a crash between steps 4 and 5. While the embedded runtime's
sinks flush (ClickHouse's insert runs without the GIL), it reads and decodes the records already
there, up to one batch, and handles them once the checkpoint is over; its commit stops at the
first of them. While a sink pushes back (ClickHouse down), the runtime stops consuming and
retries the flush with backoff; nothing is committed meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from trainwire.bus.base import Consumer, Record
from trainwire.bus.publisher import Publisher, event_message
from trainwire.events import Event, decode
from trainwire.gcpause import gc_paused
from trainwire.runtime.stages import Stage, StateStore
from trainwire.sinks.base import Sink, SinkBackpressure
from trainwire.sinks.dead_letter import DeadLetters, failure

logger = logging.getLogger("trainwire.pipeline")

STATE_NAME = "stages"
"""The name under which a :class:`StageSet`'s snapshot is saved."""

POLL_RECORDS = 5000
"""The most records the embedded runtime takes from one poll."""

KEY_SEGMENT_BYTES = 256 * 1024
"""The most bytes of one saved segment of a stage's grow-only keys, as compact JSON of ASCII keys
(such as the dataset's hashes): well under Kafka's 1 MiB message limit, so a segment always fits
in a changelog message."""


class StageSet:
    """The stages that share one saved state, and the offsets that state already includes.

    The embedded runtime has one set for the whole worker; the faust runtime one per partition.
    """

    def __init__(self, stages: Sequence[Stage]):
        self.stages = list(stages)
        self.offsets: dict[str, int] = {}
        """``"topic:partition"`` -> the next offset not yet counted in the stages' state."""
        self.key_segments: dict[str, int] = {}
        """Stage name -> how many segments of its grow-only keys are saved (see :meth:`new_key_segments`)."""

    def process(self, record: Record, event: Any) -> tuple[list[Any], list[str]]:
        """Run ``event`` through every stage unless its record is already in the state.

        Returns the outputs, and why each stage that raised failed (``"stage NAME: ..."``); a
        stage that raises does not keep the others from taking the event.
        """
        key = f"{record.topic}:{record.partition}"
        if record.offset < self.offsets.get(key, 0):
            return [], []  # replayed after a crash that followed the state save: already counted
        self.offsets[key] = record.offset + 1
        outputs: list[Any] = []
        failures: list[str] = []
        for stage in self.stages:
            try:
                outputs.extend(stage.process(event))
            except Exception as exc:
                failures.append(failure(f"stage {stage.name}", exc))
        return outputs, failures

    def flush(self) -> None:
        """Make the stages' local outputs durable."""
        for stage in self.stages:
            stage.flush()

    def close(self) -> None:
        """Release the stages' files."""
        for stage in self.stages:
            stage.close()

    def new_key_segments(self) -> list[tuple[str, int, list[str]]]:
        """The keys the stages gained since the last call, as ``(stage name, segment number, keys)``.

        A runtime saves each segment once, at a checkpoint, before the snapshot: the snapshot
        counts the segments it includes, so segments saved by a checkpoint that never saved its
        snapshot are ignored on restore (and written over). Each segment holds at most
        :data:`KEY_SEGMENT_BYTES` of keys.
        """
        segments = []
        for stage in self.stages:
            number = self.key_segments.get(stage.name, 0)
            segment: list[str] = []
            size = 1  # the brackets, less the last comma
            for key in stage.take_new_keys():
                if segment and size + len(key) + 3 > KEY_SEGMENT_BYTES:
                    segments.append((stage.name, number, segment))
                    number, segment, size = number + 1, [], 1
                segment.append(key)
                size += len(key) + 3  # quotes and comma
            if segment:
                segments.append((stage.name, number, segment))
                self.key_segments[stage.name] = number + 1
        return segments

    def snapshot(self) -> dict[str, Any]:
        """Every stage's state, the offsets it includes and its count of key segments (JSON-able)."""
        return {
            "offsets": dict(self.offsets),
            "stages": {s.name: s.snapshot() for s in self.stages},
            "key_segments": dict(self.key_segments),
        }

    def restore(self, snapshot: dict[str, Any], load_key_segments: Callable[[str, int], list[list[str]]]) -> None:
        """Continue from :meth:`snapshot`'s result (``{}``: from nothing).

        ``load_key_segments(stage name, count)`` returns the first ``count`` saved segments of a
        stage's keys; it is called for every stage, with 0 when there are none to load.
        """
        self.offsets = dict(snapshot.get("offsets", {}))
        self.key_segments = dict(snapshot.get("key_segments", {}))
        saved = snapshot.get("stages", {})
        for stage in self.stages:
            if stage.name in saved:
                stage.restore(saved[stage.name])
            for segment in load_key_segments(stage.name, self.key_segments.get(stage.name, 0)):
                stage.load_keys(segment)


class WorkerCore:
    """The per-record work and the flush sequence of a worker, independent of the runtime.

    A runtime hands it the records of each poll with :meth:`handle_batch` (:meth:`handle` takes
    one), then calls :meth:`flush` at a checkpoint.

    Args:
        sinks: where events go; each gets every event.
        publisher: publishes the stages' outputs and the dead letters at each flush.
        dead_letters: reports records that can never be processed (through ``publisher``).
        prefix: the topic prefix for what is published.
        max_backoff_s: the longest wait between flush retries while a sink pushes back.
    """

    def __init__(
        self,
        sinks: Sequence[Sink],
        publisher: Publisher,
        dead_letters: DeadLetters,
        prefix: str,
        *,
        max_backoff_s: float = 30.0,
    ):
        self.sinks = list(sinks)
        self.publisher = publisher
        self.dead_letters = dead_letters
        self.prefix = prefix
        self.max_backoff_s = max_backoff_s
        self.records_in = 0

    @property
    def events_stored(self) -> int:
        """Events the sinks have made durable so far (rows ClickHouse acknowledged)."""
        return sum(sink.rows_written for sink in self.sinks)

    def handle(self, record: Record, stages: StageSet | None, decoded: Event | None = None) -> None:
        """Decode ``record``, give it to the sinks and ``stages``, queue the outputs (no I/O).

        ``decoded`` is the record's event when :meth:`decode_ahead` decoded it already. A record
        that does not decode, or that a stage fails on, is queued as a dead letter with the
        reason; nothing it raises goes further.
        """
        self.records_in += 1
        event = decoded if decoded is not None else self.dead_letters.decode(record)
        if event is None:
            return
        for sink in self.sinks:
            sink.add(event, record)
        if stages is not None:
            outputs, failures = stages.process(record, event)
            for output in outputs:
                try:
                    message = event_message(self.prefix, output)
                except Exception as exc:
                    failures.append(failure(f"its {output.event_type} output", exc))
                else:
                    self.publisher.add(message)
            if failures:
                self.dead_letters.not_processed(record, failures)

    def handle_batch(
        self, records: Iterable[Record], stages: StageSet | None, decoded: Sequence[Event | None] | None = None
    ) -> None:
        """:meth:`handle` each of ``records``, in order, with the cyclic garbage collector paused.

        ``decoded``: their events from :meth:`decode_ahead`, in the same order. The events stay
        buffered in the sinks until the next flush and form no cycles; collections during the
        batch would traverse them again and again (see :mod:`trainwire.gcpause`).
        """
        handle = self.handle
        with gc_paused():
            if decoded is None:
                for record in records:
                    handle(record, stages)
            else:
                for record, event in zip(records, decoded, strict=True):
                    handle(record, stages, event)

    @staticmethod
    def decode_ahead(values: Iterable[bytes | None]) -> list[Event | None]:
        """The events in records' ``values``, decoded with no side effect, for :meth:`handle_batch` later.

        A value that does not decode gets None: :meth:`handle` decodes its record again and makes
        it a dead letter with the reason then, in its turn.
        """
        events: list[Event | None] = []
        with gc_paused():
            for value in values:
                try:
                    events.append(decode(value))  # type: ignore[arg-type]  # None fails like bad bytes
                except Exception:
                    events.append(None)
        return events

    async def flush(self, stage_sets: Iterable[StageSet], stop: asyncio.Event | None = None) -> None:
        """Steps 1-3 of a checkpoint: sinks (retrying while they push back), stages, publisher.

        While a sink pushes back this waits with exponential backoff; once ``stop`` is set it
        gives up and re-raises :class:`SinkBackpressure` (nothing is committed).
        """
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
        for stages in stage_sets:
            stages.flush()
        await self.publisher.flush()

    async def close(self) -> None:
        """Release the publisher and the sinks."""
        await self.publisher.close()
        for sink in self.sinks:
            sink.close()


class Pipeline:
    """The embedded runtime: one consumer group member, one :class:`StageSet`, commit-after-flush.

    Args:
        consumer: the consumer group member to read from (not started yet).
        core: the per-record work and flush sequence.
        stages: processors adapted to the runtime (stats, alerts, dataset files).
        state: where the stages' snapshot lives between runs (None: no state kept).
        max_batch: records between checkpoints at most.
        flush_interval_s: time between checkpoints at most.
    """

    def __init__(
        self,
        consumer: Consumer,
        core: WorkerCore,
        *,
        stages: Sequence[Stage] = (),
        state: StateStore | None = None,
        max_batch: int = 10_000,
        flush_interval_s: float = 0.5,
    ):
        self.consumer = consumer
        self.core = core
        self.stages = StageSet(stages)
        self.state = state
        self.max_batch = max_batch
        self.flush_interval_s = flush_interval_s
        self._uncommitted = 0

    @property
    def records_in(self) -> int:
        """Records read so far."""
        return self.core.records_in

    def _restore(self) -> None:
        if self.state is not None:
            state = self.state
            snapshot = state.load(STATE_NAME) or {}
            self.stages.restore(snapshot, lambda stage, count: state.load_key_segments(STATE_NAME, stage, count))

    async def run(self, stop: asyncio.Event | None = None, idle_exit_s: float | None = None) -> None:
        """Consume until ``stop`` is set, or until nothing new arrived for ``idle_exit_s`` seconds."""
        stop = stop or asyncio.Event()
        self._restore()
        await self.consumer.start()
        try:
            last_checkpoint = last_record = time.monotonic()
            while not stop.is_set():
                wait_s = self.flush_interval_s
                if self._uncommitted:  # wait no longer than until the next checkpoint is due
                    wait_s = max(0.0, last_checkpoint + self.flush_interval_s - time.monotonic())
                records = await self.consumer.getmany(timeout_ms=math.ceil(wait_s * 1000), max_records=POLL_RECORDS)
                now = time.monotonic()
                self.core.handle_batch(records, self.stages)
                if records:
                    last_record = now
                    self._uncommitted += len(records)
                due = self._uncommitted >= self.max_batch or now - last_checkpoint >= self.flush_interval_s
                if self._uncommitted and due:
                    last_checkpoint = time.monotonic()  # the next is due an interval after this one began
                    ahead, decoded = await self._checkpoint_reading_ahead(stop)
                    self.core.handle_batch(ahead, self.stages, decoded)
                    self._uncommitted = len(ahead)
                    if ahead:
                        last_record = time.monotonic()
                elif idle_exit_s is not None and not self._uncommitted and now - last_record >= idle_exit_s:
                    break
            if self._uncommitted:
                await self.checkpoint(stop)
        finally:
            await self.consumer.stop()
            await self.core.close()
            self.stages.close()

    async def checkpoint(self, stop: asyncio.Event | None = None) -> None:
        """Flush sinks, stages and publisher, save the state, commit offsets."""
        await self.core.flush([self.stages], stop)
        await self._save_and_commit({})

    async def _checkpoint_reading_ahead(self, stop: asyncio.Event) -> tuple[list[Record], list[Event | None]]:
        """:meth:`checkpoint`, reading and decoding the records already there while the sinks flush.

        ClickHouse's insert runs in a thread without the GIL, so the next records are read and
        decoded meanwhile (up to ``max_batch``), but not handled: no sink, stage or publisher sees
        them before the checkpoint ends, and the offsets committed stop at the first of them
        (they are read again after a crash). Returns them and their events, to handle next.
        """
        flushing = asyncio.ensure_future(self.core.flush([self.stages], stop))
        ahead: list[Record] = []
        decoded: list[Event | None] = []
        try:
            while not flushing.done() and len(ahead) < self.max_batch:
                records = await self.consumer.getmany(timeout_ms=0, max_records=POLL_RECORDS)
                if not records:
                    break
                ahead.extend(records)
                decoded.extend(self.core.decode_ahead(r.value for r in records))
        finally:
            await flushing  # a flush that failed raises here (the records read ahead are read again)
        held: dict[tuple[str, int], int] = {}
        for record in ahead:
            held.setdefault((record.topic, record.partition), record.offset)
        await self._save_and_commit(held)
        return ahead, decoded

    async def _save_and_commit(self, held: dict[tuple[str, int], int]) -> None:
        """Steps 4 and 5 of a checkpoint: save the stages' state, commit the offsets read (but ``held``)."""
        segments = self.stages.new_key_segments()  # taken even without a state store: they would pile up
        if self.state is not None:
            for stage, number, keys in segments:
                self.state.append_key_segment(STATE_NAME, stage, number, keys)
            self.state.save(STATE_NAME, self.stages.snapshot())
        await self.consumer.commit(held)
        self._uncommitted = 0
