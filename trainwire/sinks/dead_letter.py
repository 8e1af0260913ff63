"""The dead-letter topic: records that can never be processed or stored, with the reason.

Each dead letter keeps the original key and value (a record with no value, a Kafka tombstone, gets
an empty one) and carries headers ``reason``, ``source_topic``, ``source_partition`` and
``source_offset``. They are published on the same bus as the record came from (through the
worker's :class:`~trainwire.bus.publisher.Publisher`, at the next checkpoint), and logged.
"""

from __future__ import annotations

import logging

from trainwire.bus.base import Message, Record
from trainwire.bus.publisher import Publisher
from trainwire.topics import DEAD_LETTER, topic_name

logger = logging.getLogger("trainwire.dead_letter")


class DeadLetters:
    """Reports records as impossible to process, through a publisher."""

    def __init__(self, publisher: Publisher, prefix: str):
        self.topic = topic_name(prefix, DEAD_LETTER)
        self._publisher = publisher
        self.count = 0

    def add(self, record: Record, reason: str) -> None:
        """Report ``record`` as impossible to process, because of ``reason``."""
        logger.warning("trainwire: dead letter from %s: %s", record.location, reason)
        headers = (
            ("reason", reason.encode(errors="backslashreplace")),  # a foreign error's text may hold anything
            ("source_topic", record.topic.encode()),
            ("source_partition", str(record.partition).encode()),
            ("source_offset", str(record.offset).encode()),
        )
        value = record.value if record.value is not None else b""  # a publisher measures and writes bytes
        self._publisher.add(Message(self.topic, record.key, value, headers))
        self.count += 1
