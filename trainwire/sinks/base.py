"""The sink contract: ``add`` events as they come, ``flush`` at a checkpoint.

A sink raises :class:`SinkBackpressure` from ``flush`` when its destination is unavailable for
now; the runtime then stops consuming, waits ``retry_after`` seconds and flushes again, and
commits nothing until the flush succeeds.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from trainwire.bus.base import Record
from trainwire.errors import TrainwireError
from trainwire.events import Event


class SinkBackpressure(TrainwireError):
    """The destination is unavailable for now; retry the flush after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float):
        self.retry_after = retry_after
        super().__init__(message)


class Sink(ABC):
    """Receives events between checkpoints and makes them durable on ``flush``."""

    rows_written: int = 0
    """Events this sink has made durable so far (a sink that stores them counts them)."""

    @abstractmethod
    def add(self, event: Event, record: Record) -> None:
        """Take one event, decoded from ``record`` (cheap: buffer it)."""

    @abstractmethod
    def flush(self) -> None:
        """Write everything added since the last flush; raise :class:`SinkBackpressure` to retry later."""

    def close(self) -> None:  # noqa: B027 - most sinks hold nothing
        """Release resources (after a final flush by the runtime)."""
