"""Kafka topic names, defined once.

Every topic is ``{prefix}.{name}``; the prefix comes from :class:`~trainwire.config.Settings`
(``trainwire`` by default), so several deployments or test runs can share one cluster.
Event topics are named after the payload's ``TOPIC`` (which is also its ClickHouse table).
"""

from __future__ import annotations

import functools

from trainwire.events import PAYLOAD_TYPES

DEAD_LETTER = "dead_letter"
"""Records that could not be processed or stored, with the reason in a header."""


def topic_name(prefix: str, name: str) -> str:
    """The full topic name for ``name`` under ``prefix``."""
    return f"{prefix}.{name}"


@functools.cache
def event_topic(prefix: str, event_type: str) -> str:
    """The topic events of ``event_type`` are published to (looked up once per prefix and type:
    the emitter and the workers ask for every event)."""
    return topic_name(prefix, PAYLOAD_TYPES[event_type].TOPIC)


def event_topics(prefix: str) -> list[str]:
    """Every event topic, in registration order."""
    return [topic_name(prefix, cls.TOPIC) for cls in PAYLOAD_TYPES.values()]


def all_topics(prefix: str) -> list[str]:
    """Every topic trainwire uses: the event topics, then the dead-letter topic."""
    return [*event_topics(prefix), topic_name(prefix, DEAD_LETTER)]
