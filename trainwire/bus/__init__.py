"""The bus: an emitter for producers and consumer groups for workers, on Kafka or the embedded log."""

from __future__ import annotations

from trainwire.bus.base import Consumer, Message, Record, Transport
from trainwire.bus.emitter import Emitter, EmitterStats, make_transport
from trainwire.config import Settings

__all__ = [
    "Consumer",
    "Emitter",
    "EmitterStats",
    "Message",
    "Record",
    "Transport",
    "get_emitter",
    "make_transport",
    "open_consumer",
]


def open_consumer(settings: Settings, topics: list[str], group: str) -> Consumer:
    """A consumer group member on the bus ``settings`` implies (not started yet)."""
    if settings.embedded_bus:
        from trainwire.bus.local import LocalConsumer

        return LocalConsumer(settings.data_dir, topics, group)
    from trainwire.bus.kafka import KafkaConsumer

    return KafkaConsumer(settings, topics, group)


_default_emitter: Emitter | None = None


def get_emitter(settings: Settings | None = None) -> Emitter:
    """The process-wide emitter, created on first use from ``settings`` (default: the environment).

    Producers (the trainer hook, the OpenAI wrapper, importers) publish through it unless given
    an emitter of their own. It flushes and closes itself at exit.
    """
    global _default_emitter
    if _default_emitter is None or _default_emitter.closed:
        _default_emitter = Emitter(settings)
    return _default_emitter
