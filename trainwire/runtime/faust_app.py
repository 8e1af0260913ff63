"""The faust-streaming runtime: the worker's stages and sinks on Kafka, shared by partition.

Several workers of one group (``{topic_prefix}.{group}``, also the faust app id) split the
event topics' partitions between them. Events are keyed by run id and every event topic has
the same partition count, so partition ``p`` of every topic holds the same runs: each worker
keeps one :class:`~trainwire.runtime.pipeline.StageSet` per partition number, and a partition's
state is self-contained.

The per-record work and the flush sequence are :class:`~trainwire.runtime.pipeline.WorkerCore`'s,
as in the embedded runtime. faust brings group membership, partition assignment, fetching (on
its consumer thread) and the changelog-backed state table. The event records do not go through
faust's agents and streams: its consumer hands each fetched batch to the runtime as it is (see
:class:`_BatchConsumer`), which is several times faster. Offsets are committed by trainwire, not
by faust's acks:

- the event topics are declared with ``acks=False``, so faust never commits them itself (its
  ack bookkeeping commits past an unacked record in some interleavings of gaps and rebalances);
- a checkpoint flushes the sinks (rows durable in ClickHouse, retried while it pushes back),
  the touched partitions' stages and the publisher, writes each touched partition's
  :class:`StageSet` snapshot (with the offsets it includes) to the ``stage_state`` table, flushes
  faust's producer (the changelog), and only then commits, for each partition, the offset after
  the last record taken.

A checkpoint runs when ``max_batch`` records are pending, every ``flush_interval_s`` (a task
beside the fetcher), when partitions are revoked (before they are given up) and before a graceful
stop (SIGINT/SIGTERM, or idle for ``idle_exit_s``). While it runs no records are taken
records (a lock). A record of a partition this worker no longer holds is not taken: its new
owner reads it from the committed offset. A failure that is not backpressure crashes the worker
without committing: the records since the last checkpoint are read again (at-least-once; the
stores collapse repeats by ``event_id``, and a partition's restored state skips the records it
already counted).

Stage state lives in the faust table ``stage_state`` (in-memory store, changelog topic
``{app id}-stage_state-changelog`` with the input topics' partition count): under the partition
number, the :class:`StageSet` snapshot as JSON; under ``{partition}/{stage}/{n}``, segment ``n`` of
a stage's grow-only keys (the dataset's dedup keys), a JSON list written once (see
:meth:`StageSet.new_key_segments`). So no changelog message grows with the data set: a
checkpoint writes the snapshot and the keys added since the last one, and every message stays
well under Kafka's 1 MiB limit. A snapshot over :data:`SNAPSHOT_PART_BYTES` (interactions waiting
for their judge score, say) is written in parts, ``{partition}/snapshot/{slot}/{n}``, under a
head naming their count and slot; the slot alternates, so a checkpoint cut short between its
parts and its head leaves the previous snapshot whole. A partition's stages are built when its first record arrives,
from what the table recovered, and are dropped when partitions are revoked (after the
revocation checkpoint). The dataset files get one file
per partition (``sft.p3.jsonl``), since two workers never write one file.

Run a worker with ``trainwire --kafka HOST:PORT worker`` (see :func:`run_faust_worker`).
faust's web server is off unless a ``web_port`` is given; faust's and aiokafka's logging is kept
at WARNING.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faust
import orjson
from aiokafka import TopicPartition
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaDriverConsumer
from faust.transport.drivers.aiokafka import Transport as AIOKafkaTransport

from trainwire.bus.admin import admin_client, ensure_topics, topic_partitions
from trainwire.bus.base import Record
from trainwire.bus.kafka import FETCH_MAX_WAIT_MS
from trainwire.config import Settings
from trainwire.errors import BusError, ConfigError
from trainwire.events import Event
from trainwire.private_files import private_dir
from trainwire.processors.base import StateError
from trainwire.runtime import WorkerOptions, build_core, build_stages
from trainwire.runtime.pipeline import StageSet, WorkerCore
from trainwire.store.clickhouse import Store
from trainwire.topics import event_topics

__all__ = ["FaustRuntime", "create_app", "run_faust_worker"]

logger = logging.getLogger("trainwire.faust")

STATE_TABLE = "stage_state"
"""The faust table holding each partition's stage snapshot."""

GAP_REREADS = 3
"""How many times a partition is read again from a missing offset before the gap is taken as real."""

GAP_REREAD_WAIT_S = 1.0
"""Seconds between two tries at reading a partition again from a missing offset."""

QUIET_LOGGERS = ("faust", "mode", "aiokafka", "kafka")

SNAPSHOT_PART_BYTES = 512 * 1024
"""A partition's snapshot longer than this is saved in parts of this size (Kafka's limit is 1 MiB a message)."""


def app_id(settings: Settings, options: WorkerOptions) -> str:
    """The faust app id and consumer group: ``{topic_prefix}.{group}`` (deployments never share state)."""
    return f"{settings.topic_prefix}.{options.group}"


class FaustRuntime:
    """The stages and sinks of one faust worker, per partition, with commit-after-flush.

    Built by :func:`create_app` (and reachable as ``app.trainwire``); its consumer calls
    :meth:`take_batches` with every fetched batch of event records.

    Args:
        app: the faust app whose table, producer and consumer this uses.
        settings: where to publish (the Kafka bus) and the topic prefix.
        store: the ClickHouse store (None: no ClickHouse sink).
        options: what the worker does (as for the embedded runtime).
        partitions: the event topics' partition count (also the state table's).
        max_batch: records between checkpoints at most.
        flush_interval_s: time between checkpoints at most.
    """

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        store: Store | None,
        options: WorkerOptions,
        partitions: int,
        *,
        max_batch: int = 10_000,
        flush_interval_s: float = 0.5,
    ):
        self.app = app
        self.options = options
        self.partitions = partitions
        self.max_batch = max_batch
        self.flush_interval_s = flush_interval_s
        self.core = build_core(settings, store, options)
        self.table = app.Table(STATE_TABLE, partitions=partitions, key_type=bytes, value_type=bytes)
        self.checkpoints = 0
        self.first_record_at: float | None = None
        """``time.monotonic()`` of the first record taken (for throughput figures)."""
        self.last_checkpoint_at: float | None = None
        """``time.monotonic()`` at the end of the last checkpoint that committed records."""
        self.last_record_at = time.monotonic()
        """When the last record arrived, or partitions were last assigned."""
        self.idle_exit_s: float | None = None
        """Call :attr:`on_idle` once nothing arrived for this many seconds (None: never)."""
        self.on_idle: Callable[[], None] | None = None
        self.event_topics = frozenset(event_topics(settings.topic_prefix))
        """The topics whose records this takes."""
        self._settings = settings
        self._group = app_id(settings, options)
        self._stage_sets: dict[int, StageSet] = {}
        self._snapshot_slots: dict[int, int] = {}  # partition -> the slot of the parts its saved snapshot is in
        self._touched: set[int] = set()
        # faust TP -> the next offset to take, for the event partitions this worker holds
        self._next_offsets: dict[Any, int] = {}
        self._uncommitted: set[Any] = set()  # TPs taken from since the last commit
        self._rereads: dict[Any, tuple[int, int, float]] = {}  # TP -> (offset read again from, tries, when)
        self._seeks: dict[Any, int] = {}  # TP -> offset to seek to (after the batch)
        self._pending = 0
        self._lock = asyncio.Lock()
        self._checkpoint_began = time.monotonic()

    @property
    def records_in(self) -> int:
        """Records taken so far."""
        return self.core.records_in

    # ------------------------------------------------------------------ per record

    async def take_batches(self, batches: dict[Any, list[Any]]) -> None:
        """Take fetched records (topic partition -> aiokafka records, in offset order), then checkpoint if due.

        Waits for a running checkpoint first (records added to a sink while it flushes in its
        thread would be lost), decoding the records meanwhile (the flush's insert runs without
        the GIL), and checkpoints once ``max_batch`` records are pending.
        """
        decoded = None
        if self._lock.locked():
            decoded = {tp: self.core.decode_ahead(r.value for r in records) for tp, records in batches.items()}
            await self.wait_checkpoint()
        for tp, records in batches.items():
            self.take_batch(tp, records, None if decoded is None else decoded[tp])
        if self._seeks:
            await self.seek_skipped()
        if self._pending >= self.max_batch:
            await self.checkpoint()

    def take_batch(self, tp: Any, records: list[Any], decoded: list[Event | None] | None = None) -> None:
        """Hand one partition's fetched records to the sinks and that partition's stages (no I/O).

        ``decoded``: their events from :meth:`WorkerCore.decode_ahead`, in the same order, if taken.

        Only the next record of the partition is taken each time, so the offset committed for it
        never passes a record that was not taken: records left over from before a rebalance, or
        read again after a seek, are not taken again. After a missing offset the partition is read
        again from it, every :data:`GAP_REREAD_WAIT_S` until the record arrives (records fetched
        before a seek still arrive for a while); a gap still there after :data:`GAP_REREADS` tries
        is a real one (compaction, transaction markers, retention) and is passed.
        """
        expected = self._next_offsets.get(tp)
        if expected is None or records[-1].offset < expected:
            return  # not ours (its owner reads it from the committed offset), or already taken
        if self.first_record_at is None:
            self.first_record_at = time.monotonic()
        partition = tp.partition
        taken: list[Record] = []
        events: list[Event | None] = []
        for index, r in enumerate(records):
            offset = r.offset
            if offset < expected:
                continue
            if offset > expected:
                if not self._gap_is_real(tp, expected):
                    break
                logger.warning(
                    "trainwire: %s has no records %d..%d; going on from %d", tp, expected, offset - 1, offset
                )
            taken.append(Record(r.topic, partition, offset, r.key, r.value, r.timestamp, tuple(r.headers or ())))
            if decoded is not None:
                events.append(decoded[index])
            expected = offset + 1
        if taken:
            self.core.handle_batch(taken, self._stage_set(partition), events if decoded is not None else None)
            self._next_offsets[tp] = expected
            self._uncommitted.add(tp)
            self._touched.add(partition)
            self._pending += len(taken)
            self.last_record_at = time.monotonic()

    def _gap_is_real(self, tp: Any, expected: int) -> bool:
        from_offset, tries, _ = self._rereads.get(tp, (None, 0, 0.0))
        if from_offset != expected:
            self._reread(tp, expected, 1)
            return False
        return tries >= GAP_REREADS

    def _reread(self, tp: Any, offset: int, tries: int) -> None:
        self._rereads[tp] = (offset, tries, time.monotonic())
        self._seeks[tp] = offset

    def _retry_rereads(self) -> None:
        """Read partitions still missing a record again (also when nothing newer arrives to notice)."""
        now = time.monotonic()
        for tp, (offset, tries, last_try) in list(self._rereads.items()):
            if self._next_offsets.get(tp) != offset:
                del self._rereads[tp]  # the record arrived, or the partition left
            elif now - last_try >= GAP_REREAD_WAIT_S:
                self._reread(tp, offset, tries + 1)

    async def seek_skipped(self) -> None:
        """Read partitions again from the records faust skipped (see :meth:`take`)."""
        seeks, self._seeks = self._seeks, {}
        for tp, offset in seeks.items():
            if tp in self._next_offsets:
                logger.info("trainwire: %s skipped from offset %d; reading it again", tp, offset)
                await self.app.consumer.seek(tp, offset)

    def _stage_set(self, partition: int) -> StageSet:
        stages = self._stage_sets.get(partition)
        if stages is None:
            output = self.options.dataset_output
            if output is not None:
                output = Path(output).with_name(f"{Path(output).stem}.p{partition}{Path(output).suffix}")
            stages = self._stage_sets[partition] = StageSet(build_stages(self.options, output))
            stages.restore(
                self._load_snapshot(partition), lambda stage, count: self._key_segments(partition, stage, count)
            )
        return stages

    def _load_snapshot(self, partition: int) -> dict[str, Any]:
        """The snapshot of ``partition``'s stages that the table recovered (``{}``: none yet)."""
        head = self.table.data.get(_state_key(partition))
        if head is None:
            return {}
        data = orjson.loads(head)
        if "snapshot_parts" not in data:  # the snapshot itself
            self._snapshot_slots.pop(partition, None)
            return data
        slot, count = data["slot"], data["snapshot_parts"]
        parts = [self.table.data.get(_snapshot_part_key(partition, slot, number)) for number in range(count)]
        if None in parts:
            raise StateError(
                "stages", f"partition {partition}: a part of its snapshot is missing from table {STATE_TABLE}"
            )
        self._snapshot_slots[partition] = slot
        return orjson.loads(b"".join(parts))  # type: ignore[arg-type]

    def _save_snapshot(self, partition: int, snapshot: bytes) -> None:
        """Save ``snapshot`` as the head value, or in parts in the slot the saved one is not in, then the head."""
        if len(snapshot) <= SNAPSHOT_PART_BYTES:
            self._save(partition, _state_key(partition), snapshot)
            self._snapshot_slots.pop(partition, None)
            return
        slot = 1 - self._snapshot_slots.get(partition, 1)
        parts = [snapshot[i : i + SNAPSHOT_PART_BYTES] for i in range(0, len(snapshot), SNAPSHOT_PART_BYTES)]
        for number, part in enumerate(parts):
            self._save(partition, _snapshot_part_key(partition, slot, number), part)
        self._save(partition, _state_key(partition), orjson.dumps({"snapshot_parts": len(parts), "slot": slot}))
        self._snapshot_slots[partition] = slot

    def _key_segments(self, partition: int, stage: str, count: int) -> list[list[str]]:
        """The first ``count`` segments of ``stage``'s keys in ``partition``, as the table recovered them."""
        segments = []
        for number in range(count):
            value = self.table.data.get(_key_segment_key(partition, stage, number))
            if value is None:
                raise StateError(
                    stage, f"partition {partition}: key segment {number} of {count} is missing from table {STATE_TABLE}"
                )
            segments.append(orjson.loads(value))
        return segments

    def _save(self, partition: int, key: bytes, value: bytes) -> None:
        self.table.data[key] = value
        self.table.send_changelog(partition, key, value)

    # ------------------------------------------------------------------ checkpoints

    async def wait_checkpoint(self) -> None:
        """Return when no checkpoint is running."""
        if self._lock.locked():
            async with self._lock:
                pass

    async def checkpoint(self) -> None:
        """Flush sinks, stages and publisher, save the touched partitions' state, commit offsets.

        Shielded: a fetcher cancelled by a rebalance or a stop does not cut a checkpoint short (a
        sink flush left running in its thread while new records are added would lose them).
        """
        await asyncio.shield(asyncio.ensure_future(self._checkpoint()))

    async def _checkpoint(self) -> None:
        async with self._lock:
            self._checkpoint_began = time.monotonic()
            if not self._pending:
                return
            touched, self._touched = self._touched, set()
            await self.core.flush([self._stage_sets[p] for p in touched if p in self._stage_sets])
            for partition in touched:
                stages = self._stage_sets.get(partition)
                if stages is not None:
                    # The keys first: the snapshot, after them in the changelog partition, counts them.
                    for stage, number, keys in stages.new_key_segments():
                        self._save(partition, _key_segment_key(partition, stage, number), orjson.dumps(keys))
                    self._save_snapshot(partition, orjson.dumps(stages.snapshot()))
            await self.app.producer.flush()
            offsets = {tp: self._next_offsets[tp] for tp in self._uncommitted}
            self._uncommitted.clear()
            self._pending = 0
            # Explicit offsets through faust's consumer (its ack-based commit is off for these
            # topics); a commit refused by a rebalance leaves the records to be read again.
            await self.app.consumer._commit(offsets)
            self.checkpoints += 1
            self.last_checkpoint_at = time.monotonic()

    async def on_assigned(self, assigned: set[Any]) -> None:
        """Start each assigned event partition at the group's committed offset.

        Also the partitions this worker kept: a commit refused during the rebalance leaves the
        committed offset behind what was taken, and those records must be taken again.
        """
        tps = [tp for tp in assigned if tp.topic in self.event_topics]
        if tps:
            self._next_offsets.update(await self._start_offsets(tps))
        for tp in tps:
            self._rereads.pop(tp, None)
        self.last_record_at = time.monotonic()

    async def _start_offsets(self, tps: list[Any]) -> dict[Any, int]:
        """The committed offset of each of ``tps``, or its earliest offset when none is committed."""
        async with admin_client(self._settings) as admin:
            committed = await admin.list_consumer_group_offsets(
                self._group, partitions=[TopicPartition(tp.topic, tp.partition) for tp in tps]
            )
        offsets = {}
        for tp in tps:
            meta = committed.get(TopicPartition(tp.topic, tp.partition))
            if meta is not None and meta.offset >= 0:
                offsets[tp] = meta.offset
        fresh = [tp for tp in tps if tp not in offsets]
        if fresh:
            offsets.update(await self.app.consumer.earliest_offsets(*fresh))
        return offsets

    async def on_revoked(self, revoked: set[Any]) -> None:
        """Checkpoint while the partitions are still ours, then forget them and their stages."""
        try:
            await self.checkpoint()
        finally:
            for tp in revoked:
                self._next_offsets.pop(tp, None)
                self._rereads.pop(tp, None)
            held = {tp.partition for tp in self._next_offsets}
            for partition in {tp.partition for tp in revoked} - held:
                stages = self._stage_sets.pop(partition, None)
                if stages is not None:
                    stages.close()

    async def ticker(self) -> None:
        """Checkpoint ``flush_interval_s`` after the last one began; call :attr:`on_idle` once idle long enough.

        Timed from the start of the last checkpoint, not its end, so that records wait at most
        about ``flush_interval_s`` plus one checkpoint to be stored.
        """
        while True:
            await asyncio.sleep(max(0.0, self._checkpoint_began + self.flush_interval_s - time.monotonic()))
            try:
                await self.checkpoint()
                self._retry_rereads()
                await self.seek_skipped()
            except Exception as exc:
                logger.exception("trainwire: checkpoint failed; stopping without committing")
                await self.app.crash(exc)
                return
            idle = time.monotonic() - self.last_record_at
            if self.idle_exit_s is not None and not self._pending and idle >= self.idle_exit_s:
                if self.on_idle is not None:
                    self.on_idle()
                return

    async def close(self) -> None:
        """Release the publisher, the sinks and the stages (after a final checkpoint by the caller)."""
        await self.core.close()
        for stages in self._stage_sets.values():
            stages.close()
        self._stage_sets.clear()


def _state_key(partition: int) -> bytes:
    return str(partition).encode()


def _key_segment_key(partition: int, stage: str, number: int) -> bytes:
    return f"{partition}/{stage}/{number}".encode()


def _snapshot_part_key(partition: int, slot: int, number: int) -> bytes:
    return f"{partition}/snapshot/{slot}/{number}".encode()


# ---------------------------------------------------------------------- the app


class _BatchConsumer(AIOKafkaDriverConsumer):
    """faust's consumer, handing the event topics' records to the runtime a fetched batch at a time.

    faust's own path makes a message, an event and a stream step of every record, through its
    conductor and sensors: about 100 us a record on a 2-core machine, more than trainwire's
    whole per-record work. Here a fetch's event records go to :meth:`FaustRuntime.take_batches`
    as aiokafka returned them; records of other topics (the state table's changelog while it
    recovers) take faust's path. As in faust's path, a fetch that ends after flow was stopped
    (a rebalance began) or under another group generation is not taken.
    """

    async def _wait_next_records(self, timeout: float) -> tuple[Any, Any]:
        generation = self.app.consumer_generation_id
        records, active = await super()._wait_next_records(timeout)
        runtime: FaustRuntime = self.app.trainwire  # type: ignore[attr-defined]
        ours = [tp for tp in records or () if tp.topic in runtime.event_topics]
        if not ours:
            return records, active
        rest = dict(records)
        batches = {tp: rest.pop(tp) for tp in ours}
        if self.flow_active and generation == self.app.consumer_generation_id:
            await runtime.take_batches({tp: b for tp, b in batches.items() if active is None or tp in active})
        return rest, active

    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _ConsumerThread(AIOKafkaConsumerThread):
    """faust's consumer thread, with a short fetch long-poll (see :data:`~trainwire.bus.kafka.FETCH_MAX_WAIT_MS`)."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # faust passes fetch_max_wait_ms=1500 with no setting to change it; aiokafka reads the
        # attribute when the consumer starts, which is after this.
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


class _Transport(AIOKafkaTransport):
    Consumer = _BatchConsumer


class _App(faust.App):
    """A faust app whose consumer is :class:`_BatchConsumer`."""

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)


def _credentials(settings: Settings) -> Any:
    options = settings.kafka_client_options()
    if settings.kafka_sasl_mechanism:
        return faust.SASLCredentials(
            username=options["sasl_plain_username"],
            password=options["sasl_plain_password"],
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=options.get("ssl_context"),
        )
    if "ssl_context" in options:
        return faust.SSLCredentials(options["ssl_context"])
    return None


def create_app(
    settings: Settings,
    store: Store | None,
    options: WorkerOptions,
    *,
    partitions: int | None = None,
    web_port: int | None = None,
    max_batch: int = 10_000,
    flush_interval_s: float = 0.5,
    session_timeout_s: float = 10.0,
) -> faust.App:
    """The faust app running ``options``'s stages and sinks on the event topics of ``settings``.

    ``partitions`` is the event topics' partition count (None: read from the broker, which
    needs the topics to exist and no running event loop); the ``stage_state`` table gets the
    same count. ``web_port`` None keeps faust's web server off. A worker that dies without leaving
    the group gives its partitions up after ``session_timeout_s``. The runtime is ``app.trainwire``.
    """
    if settings.embedded_bus:
        raise ConfigError("kafka", "the faust runtime needs Kafka (set TRAINWIRE_KAFKA or --kafka)")
    if partitions is None:
        partitions = asyncio.run(topic_partitions(settings))
    ident = app_id(settings, options)
    datadir = Path(settings.data_dir) / "faust" / ident
    private_dir(datadir)
    app = _App(
        ident,
        broker=[f"kafka://{host}" for host in settings.kafka.split(",")],  # type: ignore[union-attr]
        broker_credentials=_credentials(settings),
        store="memory://",
        datadir=str(datadir),
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        web_enabled=web_port is not None,
        web_port=web_port or 6066,
        web_bind="127.0.0.1",
        # Records are never acked (trainwire commits explicit offsets), so faust must not wait
        # for acks on a rebalance or a stop.
        stream_wait_empty=False,
        stream_buffer_maxsize=max(4096, max_batch),
        broker_max_poll_records=5000,
        broker_session_timeout=session_timeout_s,
        broker_heartbeat_interval=min(3.0, session_timeout_s / 5),
        worker_redirect_stdouts=False,
        table_standby_replicas=0,
    )
    runtime = FaustRuntime(
        app, settings, store, options, partitions, max_batch=max_batch, flush_interval_s=flush_interval_s
    )
    app.trainwire = runtime  # type: ignore[attr-defined]
    # Subscribed without an agent: _BatchConsumer hands its records to the runtime.
    topic = app.topic(
        *event_topics(settings.topic_prefix),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=partitions,
        acks=False,
    )
    app.topics.add(topic)

    @app.task
    async def ticker() -> None:
        await runtime.ticker()

    @app.on_partitions_revoked.connect
    async def on_revoked(app: faust.App, revoked: set[Any], **_: Any) -> None:
        await runtime.on_revoked(revoked)

    @app.on_partitions_assigned.connect
    async def on_assigned(app: faust.App, assigned: set[Any], **_: Any) -> None:
        await runtime.on_assigned(assigned)

    @app.on_before_shutdown.connect
    async def on_shutdown(app: faust.App, **_: Any) -> None:
        await runtime.close()

    return app


# ---------------------------------------------------------------------- running a worker


class _Worker(faust.Worker):
    """faust's worker with trainwire's graceful stop on SIGINT/SIGTERM (a final checkpoint first)."""

    def __init__(self, app: faust.App, runtime: FaustRuntime, **kwargs: Any):
        super().__init__(app, **kwargs)
        self.spinner = None  # no terminal spinner: this runs as a service, its output is logs
        self.runtime = runtime
        self._stopping: asyncio.Future[None] | None = None

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.loop.add_signal_handler(sig, self.request_stop)

    def request_stop(self) -> None:
        """Checkpoint, then stop the worker (once)."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self.stop_gracefully(), loop=self.loop)

    async def stop_gracefully(self) -> None:
        """Checkpoint (so a restart replays nothing), then stop."""
        try:
            await self.runtime.checkpoint()
        except Exception:
            logger.exception("trainwire: final checkpoint failed")
        await self.stop()
        if self._starting_fut is not None:
            self._starting_fut.cancel()


def _quiet_logging(level: int) -> None:
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(level)


def run_faust_worker(
    settings: Settings,
    store: Store | None,
    options: WorkerOptions | None = None,
    *,
    web_port: int | None = None,
    idle_exit_s: float | None = None,
    partitions: int = 6,
    max_batch: int = 10_000,
    flush_interval_s: float = 0.5,
    session_timeout_s: float = 10.0,
    loglevel: str = "WARNING",
    on_start: Callable[[WorkerCore], None] | None = None,
) -> FaustRuntime:
    """Run a faust worker in this process until SIGINT/SIGTERM (or idle for ``idle_exit_s``).

    Creates the trainwire topics that are missing (``partitions`` each), runs the worker on a
    fresh event loop, and returns the runtime (its counters) once the worker stopped. ``store``
    is migrated by the caller (None: no ClickHouse sink). ``on_start`` is given the worker's core
    (its counters) before it starts consuming.
    """
    options = options or WorkerOptions()
    count = asyncio.run(ensure_topics(settings, partitions))
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    app = create_app(
        settings,
        store,
        options,
        partitions=count,
        web_port=web_port,
        max_batch=max_batch,
        flush_interval_s=flush_interval_s,
        session_timeout_s=session_timeout_s,
    )
    runtime: FaustRuntime = app.trainwire  # type: ignore[attr-defined]
    if on_start is not None:
        on_start(runtime.core)
    worker = _Worker(app, runtime, loglevel=loglevel, quiet=True, loop=loop, redirect_stdouts=False)
    runtime.idle_exit_s = idle_exit_s
    runtime.on_idle = worker.request_stop
    _quiet_logging(logging.getLevelName(loglevel))
    try:
        # faust's worker ends the process's loop and raises SystemExit when it stops.
        worker.execute_from_commandline()
    except SystemExit as exc:
        if exc.code not in (None, 0):
            raise BusError(f"faust worker {app.conf.id} failed (exit status {exc.code}); see the log") from exc
    return runtime
