"""Publishing from inside a worker: messages collected between checkpoints, sent in one batch.

Workers publish what their processors produce (stats, alerts) and dead letters through a
:class:`Publisher`; the runtime flushes it at a checkpoint, before committing offsets.
"""

from __future__ import annotations

from trainwire.bus.base import Message, Refused, Transport
from trainwire.errors import BusError
from trainwire.events import Event, encode
from trainwire.topics import event_topic


def event_message(prefix: str, event: Event) -> Message:
    """The bus message for ``event``: its type's topic, keyed by run id, orjson value."""
    return Message(event_topic(prefix, event.event_type), event.key, encode(event))


class Publisher:
    """Collects messages; ``flush`` publishes them and raises :class:`BusError` if the bus refuses any."""

    def __init__(self, transport: Transport):
        self._transport = transport
        self._pending: list[Message] = []
        self._started = False
        self.published = 0

    def add(self, message: Message) -> None:
        """Queue ``message`` for the next flush."""
        self._pending.append(message)

    async def flush(self) -> None:
        """Publish everything queued."""
        if not self._pending:
            return
        if not self._started:
            await self._transport.start()
            self._started = True
        failed = await self._transport.send_batch(self._pending)
        if failed:
            reasons = sorted({f.reason for f in failed if isinstance(f, Refused)})
            refused = f" (refused for good: {'; '.join(reasons)})" if reasons else ""
            raise BusError(f"{len(failed)} of {len(self._pending)} messages could not be published{refused}")
        self.published += len(self._pending)
        self._pending = []

    async def close(self) -> None:
        """Disconnect (what was not flushed is dropped: flush first)."""
        if self._started:
            await self._transport.stop()
            self._started = False
