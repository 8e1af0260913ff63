"""The dead-letter topic: records that can never be processed or stored, with the reason.

Each dead letter keeps the original key and value and carries headers ``reason``,
``source_topic``, ``source_partition`` and ``source_offset``. They are published on the same bus
as the record came from, and logged.
"""

from __future__ import annotations

import logging

from trainwire.bus.base import Message, Record, Transport
from trainwire.errors import BusError
from trainwire.topics import DEAD_LETTER, topic_name

logger = logging.getLogger("trainwire.dead_letter")


class DeadLetters:
    """Collects dead letters between checkpoints; ``flush`` publishes them."""

    def __init__(self, transport: Transport, prefix: str):
        self.topic = topic_name(prefix, DEAD_LETTER)
        self._transport = transport
        self._pending: list[Message] = []
        self._started = False
        self.count = 0

    def add(self, record: Record, reason: str) -> None:
        """Report ``record`` as impossible to process, because of ``reason``."""
        logger.warning("trainwire: dead letter from %s: %s", record.location, reason)
        headers = (
            ("reason", reason.encode()),
            ("source_topic", record.topic.encode()),
            ("source_partition", str(record.partition).encode()),
            ("source_offset", str(record.offset).encode()),
        )
        self._pending.append(Message(self.topic, record.key, record.value, headers))

    async def flush(self) -> None:
        """Publish the pending dead letters; raise :class:`BusError` if the bus refuses them."""
        if not self._pending:
            return
        if not self._started:
            await self._transport.start()
            self._started = True
        failed = await self._transport.send_batch(self._pending)
        if failed:
            raise BusError(f"{len(failed)} dead letters could not be published to {self.topic}")
        self.count += len(self._pending)
        self._pending = []

    async def close(self) -> None:
        """Disconnect from the bus."""
        if self._started:
            await self._transport.stop()
            self._started = False
