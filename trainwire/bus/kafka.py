"""The Kafka bus: aiokafka producer and consumer behind trainwire's transport and consumer roles."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from trainwire.bus.base import Consumer, Message, Record, Transport
from trainwire.config import Settings
from trainwire.errors import BusError


class KafkaTransport(Transport):
    """Publishes batches with aiokafka: batching, linger and compression are aiokafka's own."""

    def __init__(
        self,
        settings: Settings,
        *,
        linger_ms: int = 10,
        compression: str | None = "lz4",
        max_batch_bytes: int = 1 << 20,
        request_timeout_ms: int = 15_000,
    ):
        self._options: dict[str, Any] = {
            **settings.kafka_client_options(),
            "linger_ms": linger_ms,
            "compression_type": compression,
            "max_batch_size": max_batch_bytes,
            "max_request_size": max(max_batch_bytes, 1 << 20),
            "request_timeout_ms": request_timeout_ms,
            "acks": "all",
            "enable_idempotence": False,
        }
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        producer = AIOKafkaProducer(**self._options)
        try:
            await producer.start()
        except (KafkaError, OSError) as exc:
            with contextlib.suppress(KafkaError, OSError):
                await producer.stop()
            raise BusError(f"Kafka at {self._options['bootstrap_servers']} is unreachable: {exc}") from exc
        self._producer = producer

    async def send_batch(self, messages: list[Message]) -> list[Message]:
        producer = self._producer
        if producer is None:
            return messages
        futures = []
        for m in messages:
            try:
                futures.append(await producer.send(m.topic, m.value, key=m.key, headers=list(m.headers) or None))
            except (KafkaError, OSError) as exc:
                futures.append(_failed(exc))
        results = await asyncio.gather(*futures, return_exceptions=True)
        return [m for m, r in zip(messages, results, strict=True) if isinstance(r, BaseException)]

    async def stop(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()


def _failed(exc: BaseException) -> asyncio.Future[None]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_exception(exc)
    return future


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
