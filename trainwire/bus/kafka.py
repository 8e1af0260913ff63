"""The Kafka bus: aiokafka producer and consumer behind trainwire's transport and consumer roles."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.conn import create_conn
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    SaslAuthenticationFailed,
)
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from trainwire.bus.base import Consumer, Message, Record, Refused, Transport
from trainwire.config import Settings
from trainwire.errors import BusError

if TYPE_CHECKING:
    from aiokafka.producer.message_accumulator import BatchBuilder


logger = logging.getLogger("trainwire.bus")

_SECURITY_OPTIONS = ("security_protocol", "ssl_context", "sasl_mechanism", "sasl_plain_username", "sasl_plain_password")


async def unreachable(options: dict[str, Any], exc: BaseException) -> BusError:
    """The error for a client that could not start, naming the cause when aiokafka does not.

    aiokafka reports a failed bootstrap as ``Unable to bootstrap from [...]`` and only logs why
    (refused connection, TLS failure, wrong SASL password). One connection to the first bootstrap
    server, with the same security settings, recovers the cause for the message.
    """
    servers = options["bootstrap_servers"]
    message = f"Kafka at {servers} is unreachable: {exc}"
    if not isinstance(exc, KafkaConnectionError):
        return BusError(message)
    host, _, port = servers.split(",")[0].strip().rpartition(":")
    security = {key: options[key] for key in _SECURITY_OPTIONS if key in options}
    try:
        conn = await create_conn(host.strip("[]"), int(port), request_timeout_ms=5000, **security)
    except SaslAuthenticationFailed as cause:
        return BusError(f"Kafka at {servers} refused the login: {cause} (check TRAINWIRE_KAFKA_SASL_*)")
    except ssl.SSLError as cause:
        return BusError(f"Kafka at {servers}: TLS failed: {cause} (check TRAINWIRE_KAFKA_SSL_*)")
    except KafkaConnectionError as cause:  # connected, then dropped: the listener speaks another protocol
        protocol = options.get("security_protocol", "PLAINTEXT")
        return BusError(
            f"Kafka at {servers} is unreachable: {cause} (does the listener expect"
            f" TRAINWIRE_KAFKA_SECURITY_PROTOCOL={protocol}?)"
        )
    except (TimeoutError, KafkaError, OSError, ValueError) as cause:
        return BusError(f"Kafka at {servers} is unreachable: {cause}")
    conn.close()
    return BusError(message)


class KafkaTransport(Transport):
    """Publishes batches with aiokafka's batch API: one compressed record batch per partition.

    Messages are assigned to partitions by aiokafka's default partitioner (murmur2 of the key, as
    the Java client does), so a run keeps its partition, and appended to one ``BatchBuilder`` per
    partition, which goes out as soon as it is queued (no linger: the caller hands over whole
    batches). This skips the coroutine, future and partitioner call that ``producer.send`` makes
    per message.

    A message over the producer's ``max_request_size`` is refused before it is sent, as
    ``producer.send`` would refuse it (the batch API leaves that check to the broker). A record
    batch the broker refuses for its size (its own limit, or the topic's, may be lower) is sent
    again one record per batch, so that only the records too large by themselves are refused.

    Before it publishes, it creates the trainwire topics that are missing, so that the broker does
    not create them with its own default partition count (see :mod:`trainwire.bus.admin`).
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
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._enqueue_lock = asyncio.Lock()

    async def start(self) -> None:
        """Start the producer and create the missing trainwire topics (logged, not raised, if refused)."""
        from trainwire.bus.admin import create_topics  # admin uses this module

        producer = AIOKafkaProducer(**self._options)
        try:
            await producer.start()
        except (KafkaError, OSError) as exc:
            with contextlib.suppress(KafkaError, OSError):
                await producer.stop()
            raise await unreachable(self._options, exc) from exc
        self._producer = producer
        self._enqueue_lock = asyncio.Lock()  # bound to the loop the producer runs on
        try:
            await create_topics(self._settings)
        except (BusError, KafkaError, OSError) as exc:
            logger.warning(
                "trainwire: cannot create the missing trainwire topics (%s); a topic the broker creates when "
                "something is published to it gets the broker's default partition count, which a worker "
                "refuses if it differs from the other event topics': run `trainwire topics create`",
                exc,
            )

    async def send_batch(self, messages: list[Message]) -> list[Message | Refused]:
        producer = self._producer
        if producer is None:
            return list(messages)
        undelivered: dict[int, Message | Refused] = {}  # by id(message)
        limit = self._options["max_request_size"]
        for m in messages:
            # A record is its value and little else (key, headers, framing): aiokafka's exact count
            # is only worth its cost near the limit. Should a record slip through, the broker decides.
            if len(m.value) > limit - _FEW_BYTES:
                size = DefaultRecordBatchBuilder.estimate_size_in_bytes(m.key, m.value, list(m.headers))
                if size > limit:
                    undelivered[id(m)] = Refused(m, f"{size} bytes, over the producer's max_request_size of {limit}")
        pending = [m for m in messages if id(m) not in undelivered] if undelivered else messages
        records_per_batch = None
        # At most twice: the records of a batch refused for its size go again one per batch (after
        # the partition's later batches, should there be any: a rare case, and the alternative is to
        # refuse the records that are not too large).
        while pending:
            too_large = await self._publish(producer, pending, records_per_batch, undelivered)
            pending, records_per_batch = [], 1
            for batched, exc in too_large:
                if len(batched) == 1:
                    undelivered[id(batched[0])] = Refused(batched[0], f"the broker refused it: {exc}")
                else:
                    pending += batched
        return [undelivered[id(m)] for m in messages if id(m) in undelivered] if undelivered else []

    async def _publish(
        self,
        producer: AIOKafkaProducer,
        messages: list[Message],
        records_per_batch: int | None,
        undelivered: dict[int, Message | Refused],
    ) -> list[tuple[list[Message], KafkaError]]:
        """Send ``messages`` in record batches; add the undelivered to ``undelivered``.

        Returns the record batches the broker refused for their size, with its error: those are not
        in ``undelivered``, the caller decides.
        """
        deliveries: list[tuple[asyncio.Future[Any], list[Message]]] = []
        # One caller queues its batches at a time, for two reasons: batches of a partition are
        # sent in the order they are queued, so concurrent callers must not interleave (a run's
        # events would be reordered); and aiokafka's add_batch (0.14) takes the whole time waited
        # so far off its timeout at every wake-up, so callers waiting on the same partition time
        # out after a fraction of request_timeout_ms (what made an earlier batch version fail).
        async with self._enqueue_lock:
            for (topic, partition), group in (await _by_partition(producer, messages, undelivered)).items():
                queued = 0
                for batch, batched in _record_batches(producer, group, records_per_batch):
                    try:
                        deliveries.append((await producer.send_batch(batch, topic, partition=partition), batched))
                    except (KafkaError, OSError):
                        # The rest of this partition stays back too, so its order survives in the spool.
                        undelivered.update((id(m), m) for m in group[queued:])
                        break
                    queued += len(batched)
        results = await asyncio.gather(*(delivery for delivery, _ in deliveries), return_exceptions=True)
        too_large = []
        for (_, batched), result in zip(deliveries, results, strict=True):
            if isinstance(result, _TOO_LARGE):
                too_large.append((batched, result))
            elif isinstance(result, BaseException):
                undelivered.update((id(m), m) for m in batched)
        return too_large

    async def stop(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()


_partitioner = DefaultPartitioner()

FETCH_MAX_WAIT_MS = 100
"""How long the broker may hold a consumer's fetch when it has no new records (aiokafka: 500 ms).

aiokafka keeps one fetch in flight per broker: a partition whose records were just taken is
fetched again only once the current fetch returns, which on a broker with idle partitions in
the request is after this long. It bounds how long a new record can wait at the broker for a
worker to see it (worst case latency), at the cost of a few empty fetches a second when idle.
"""

_FEW_BYTES = 64 << 10

_TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError)
"""What the broker (or aiokafka) answers a record batch over a size limit: sending it again cannot help."""


async def _by_partition(
    producer: AIOKafkaProducer, messages: list[Message], undelivered: dict[int, Message | Refused]
) -> dict[tuple[str, int], list[Message]]:
    """``messages`` grouped by destination partition, in order; those of unknown topics go to ``undelivered``."""
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
                undelivered[id(m)] = m
                continue
            destination = where[m.topic, m.key] = (m.topic, _partitioner(m.key, candidates, candidates))
        groups.setdefault(destination, []).append(m)
    return groups


def _record_batches(
    producer: AIOKafkaProducer, messages: list[Message], max_records: int | None = None
) -> Iterator[tuple[BatchBuilder, list[Message]]]:
    """Closed record batches holding ``messages`` in order, each up to the producer's batch size and ``max_records``."""
    batch, batched = producer.create_batch(), []
    for m in messages:
        headers = list(m.headers) if m.headers else []
        if (
            len(batched) == max_records
            or batch.append(timestamp=None, key=m.key, value=m.value, headers=headers) is None
        ):
            batch.close()  # when full it is closed already
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
            "fetch_max_wait_ms": FETCH_MAX_WAIT_MS,
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
            cause = await unreachable(self._options, exc)
            raise BusError(f"cannot join consumer group {self.group!r}: {cause}") from exc
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

    async def commit(self, held: Mapping[tuple[str, int], int] | None = None) -> None:
        consumer = self._started
        try:
            if not held:
                await consumer.commit()
                return
            offsets = {tp: await consumer.position(tp) for tp in consumer.assignment()}
            for (topic, partition), offset in held.items():
                tp = TopicPartition(topic, partition)
                if tp in offsets:
                    offsets[tp] = min(offsets[tp], offset)
            await consumer.commit(offsets)
        except KafkaError as exc:
            raise BusError(f"consumer group {self.group!r} could not commit: {exc}") from exc

    async def stop(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()
