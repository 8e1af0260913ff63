"""The Kafka bus: aiokafka producer and consumer behind trainwire's transport and consumer roles."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from trainwire.bus.base import Consumer, Message, Record, Transport
from trainwire.config import Settings
from trainwire.errors import BusError

if TYPE_CHECKING:
    from aiokafka.producer.message_accumulator import BatchBuilder


class KafkaTransport(Transport):
    """Publishes batches with aiokafka's batch API: one compressed record batch per partition.

    Messages are assigned to partitions by aiokafka's default partitioner (murmur2 of the key, as
    the Java client does), so a run keeps its partition, and appended to one ``BatchBuilder`` per
    partition, which goes out as soon as it is queued (no linger: the caller hands over whole
    batches). This skips the coroutine, future and partitioner call that ``producer.send`` makes
    per message.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        compression: str | None = "lz4",
        max_batch_bytes: int = 1 << 20,
        request_timeout_ms: int = 15_000,
    ):
        self._options: dict[str, Any] = {
            **settings.kafka_client_options(),
            "compression_type": compression,
            "max_batch_size": max_batch_bytes,
            "max_request_size": max(max_batch_bytes, 1 << 20),
            "request_timeout_ms": request_timeout_ms,
            "acks": "all",
            "enable_idempotence": False,
        }
        self._producer: AIOKafkaProducer | None = None
        self._enqueue_lock = asyncio.Lock()

    async def start(self) -> None:
        producer = AIOKafkaProducer(**self._options)
        try:
            await producer.start()
        except (KafkaError, OSError) as exc:
            with contextlib.suppress(KafkaError, OSError):
                await producer.stop()
            raise BusError(f"Kafka at {self._options['bootstrap_servers']} is unreachable: {exc}") from exc
        self._producer = producer
        self._enqueue_lock = asyncio.Lock()  # bound to the loop the producer runs on

    async def send_batch(self, messages: list[Message]) -> list[Message]:
        producer = self._producer
        if producer is None:
            return messages
        failed: set[int] = set()
        deliveries: list[tuple[asyncio.Future[Any], list[Message]]] = []
        # One caller queues its batches at a time, for two reasons: batches of a partition are
        # sent in the order they are queued, so concurrent callers must not interleave (a run's
        # events would be reordered); and aiokafka's add_batch (0.14) takes the whole time waited
        # so far off its timeout at every wake-up, so callers waiting on the same partition time
        # out after a fraction of request_timeout_ms (what made an earlier batch version fail).
        async with self._enqueue_lock:
            for (topic, partition), group in (await _by_partition(producer, messages, failed)).items():
                queued = 0
                for batch, batched in _record_batches(producer, group):
                    try:
                        deliveries.append((await producer.send_batch(batch, topic, partition=partition), batched))
                    except (KafkaError, OSError):
                        # The rest of this partition stays back too, so its order survives in the spool.
                        failed.update(map(id, group[queued:]))
                        break
                    queued += len(batched)
        results = await asyncio.gather(*(delivery for delivery, _ in deliveries), return_exceptions=True)
        for (_, batched), result in zip(deliveries, results, strict=True):
            if isinstance(result, BaseException):
                failed.update(map(id, batched))
        return [m for m in messages if id(m) in failed] if failed else []

    async def stop(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()


_partitioner = DefaultPartitioner()


async def _by_partition(
    producer: AIOKafkaProducer, messages: list[Message], failed: set[int]
) -> dict[tuple[str, int], list[Message]]:
    """``messages`` grouped by destination partition, in order; those of unknown topics go to ``failed``."""
    partitions: dict[str, list[int] | None] = {}
    for topic in {m.topic for m in messages}:
        try:
            partitions[topic] = sorted(await producer.partitions_for(topic))
        except (KafkaError, OSError):
            partitions[topic] = None
    groups: dict[tuple[str, int], list[Message]] = {}
    where: dict[tuple[str, bytes | None], tuple[str, int]] = {}  # a batch holds few distinct keys (runs)
    for m in messages:
        destination = where.get((m.topic, m.key))
        if destination is None:
            candidates = partitions[m.topic]
            if candidates is None:
                failed.add(id(m))
                continue
            destination = where[m.topic, m.key] = (m.topic, _partitioner(m.key, candidates, candidates))
        groups.setdefault(destination, []).append(m)
    return groups


def _record_batches(
    producer: AIOKafkaProducer, messages: list[Message]
) -> Iterator[tuple[BatchBuilder, list[Message]]]:
    """Closed record batches holding ``messages`` in order, each up to the producer's batch size."""
    batch, batched = producer.create_batch(), []
    for m in messages:
        headers = list(m.headers) if m.headers else []
        if batch.append(timestamp=None, key=m.key, value=m.value, headers=headers) is None:  # full
            yield batch, batched
            batch, batched = producer.create_batch(), []
            batch.append(timestamp=None, key=m.key, value=m.value, headers=headers)  # a first record always fits
        batched.append(m)
    batch.close()  # closed: sent at once, and producer.send() cannot add to it
    yield batch, batched


class KafkaConsumer(Consumer):
    """A consumer group member: manual commits, a new group starts from the earliest offset."""

    def __init__(self, settings: Settings, topics: list[str], group: str, **options: Any):
        self.topics = list(topics)
        self.group = group
        self._options = {
            "group_id": group,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            **settings.kafka_client_options(),
            **options,
        }
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        # aiokafka binds a client to the running loop, so it is built here rather than in __init__.
        consumer = AIOKafkaConsumer(*self.topics, **self._options)
        try:
            await consumer.start()
        except (KafkaError, OSError) as exc:
            with contextlib.suppress(KafkaError, OSError):
                await consumer.stop()
            raise BusError(f"cannot join consumer group {self.group!r}: {exc}") from exc
        self._consumer = consumer

    @property
    def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise BusError(f"consumer of group {self.group!r} is not started")
        return self._consumer

    async def getmany(self, timeout_ms: int = 1000, max_records: int = 10_000) -> list[Record]:
        batches = await self._started.getmany(timeout_ms=timeout_ms, max_records=max_records)
        return [
            Record(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp, tuple(r.headers or ()))
            for records in batches.values()
            for r in records
        ]

    async def commit(self) -> None:
        try:
            await self._started.commit()
        except KafkaError as exc:
            raise BusError(f"consumer group {self.group!r} could not commit: {exc}") from exc

    async def stop(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()
