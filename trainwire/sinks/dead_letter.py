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
from trainwire.errors import EventError
from trainwire.events import Event, decode
from trainwire.topics import DEAD_LETTER, topic_name

logger = logging.getLogger("trainwire.dead_letter")


def failure(step: str, exc: Exception) -> str:
    """How one step's failure on one record is named in its dead letter: ``"STEP: ErrorType: message"``."""
    return f"{step}: {type(exc).__name__}: {exc}"


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

    def decode(self, record: Record) -> Event | None:
        """The event in ``record``; None when it does not decode, and then it is a dead letter with the reason.

        The poison-record policy's first half (:meth:`not_processed` is the second): whatever the
        decoding raises is this record's alone.
        """
        try:
            return decode(record.value)
        except EventError as exc:
            self.add(record, f"invalid event: {exc.at(record.location)}")
        except Exception as exc:  # a decoding failure trainwire did not foresee: still this record's alone
            self.add(record, f"invalid event: {record.location}: {type(exc).__name__}: {exc}")
        return None

    def not_processed(self, record: Record, failures: list[str]) -> None:
        """Report ``record``, which decoded, as a dead letter because of ``failures`` (see :func:`failure`)."""
        self.add(record, f"not processed: {'; '.join(failures)}")
