"""Publishing from inside a worker: messages collected between checkpoints, sent in one batch.

Workers publish what their processors produce (stats, alerts) and dead letters through a
:class:`Publisher`; the runtime flushes it at a checkpoint, before committing offsets.

What the bus does not take is sorted out at each flush:

- a message it may take later (the bus is down, a timeout) makes ``flush`` raise
  :class:`BusError`, so that nothing is committed and the records are processed again;
- a message it will never take (:class:`~trainwire.bus.base.Refused`: over Kafka's
  ``max_request_size``, or over the topic's ``max.message.bytes``, as a dead letter holding a
  record near the limit plus its headers can be) is counted in ``rejected``, logged, and kept with
  the reason in ``{data_dir}/rejected/published.jsonl`` (see
  :class:`~trainwire.bus.rejected.RejectedMessages`); ``flush`` goes on, as publishing it again
  could never succeed (the worker would replay the same records forever).
"""

from __future__ import annotations

import logging
from pathlib import Path

from trainwire.bus.base import Message, Refused, Transport
from trainwire.bus.rejected import RejectedMessages
from trainwire.errors import BusError
from trainwire.events import Event, encode
from trainwire.topics import event_topic

logger = logging.getLogger("trainwire.publisher")


def event_message(prefix: str, event: Event) -> Message:
    """The bus message for ``event``: its type's topic, keyed by run id, orjson value."""
    return Message(event_topic(prefix, event.event_type), event.key, encode(event))


class Publisher:
    """Collects messages; ``flush`` publishes them, raising :class:`BusError` if any may go through later.

    Args:
        transport: the bus to publish to (started on the first flush).
        data_dir: where the messages the bus refuses for good are kept
            (``{data_dir}/rejected/published.jsonl``); None: they are only logged and counted.
    """

    def __init__(self, transport: Transport, data_dir: Path | None = None):
        self._transport = transport
        self._rejected_file = RejectedMessages(data_dir) if data_dir is not None else None
        self._pending: list[Message] = []
        self._started = False
        self.published = 0
        """Messages the bus took."""
        self.rejected = 0
        """Messages the bus refused for good (kept in the rejected file, or only logged without a data dir)."""

    def add(self, message: Message) -> None:
        """Queue ``message`` for the next flush."""
        self._pending.append(message)

    async def flush(self) -> None:
        """Publish everything queued.

        Raises :class:`BusError` when the bus did not take some messages that it may take later;
        then nothing is recorded as rejected (the records are processed again, and what the bus
        refuses for good is kept by the flush that succeeds). Messages refused for good do not raise.
        """
        if not self._pending:
            return
        if not self._started:
            await self._transport.start()
            self._started = True
        undelivered = await self._transport.send_batch(self._pending)
        refused = [m for m in undelivered if isinstance(m, Refused)]
        if len(refused) < len(undelivered):
            reasons = sorted({r.reason for r in refused})
            also = f"; {len(refused)} refused for good: {'; '.join(reasons)}" if refused else ""
            raise BusError(
                f"{len(undelivered) - len(refused)} of {len(self._pending)} messages could not be published"
                f" (the bus may take them later){also}"
            )
        for r in refused:
            self._reject(r)
        self.published += len(self._pending) - len(refused)
        self._pending = []

    def _reject(self, refused: Refused) -> None:
        """Count, log and keep in the rejected file one message the bus refused for good."""
        self.rejected += 1
        file = self._rejected_file
        if file is None:
            kept = "not kept (the publisher has no data directory)"
        else:
            try:
                file.append(refused)
                kept = f"kept in {file.path}"
            except OSError as exc:
                kept = f"and lost: cannot write {file.path}: {exc}"
        message = refused.message
        logger.warning(
            "trainwire: the bus refused a message for %s%s (%d bytes) for good: %s; %s",
            message.topic,
            _describe(message),
            len(message.value),
            refused.reason,
            kept,
        )

    async def close(self) -> None:
        """Disconnect (what was not flushed is dropped: flush first)."""
        if self._started:
            await self._transport.stop()
            self._started = False


def _describe(message: Message) -> str:
    """`` (key k, from topic[p]@o)``: what identifies a message in a log line, as far as it says."""
    parts = []
    if message.key is not None:
        parts.append(f"key {message.key.decode(errors='replace')}")
    headers = dict(message.headers)
    if "source_topic" in headers:  # a dead letter: where its record was
        source = headers["source_topic"].decode(errors="replace")
        partition = headers.get("source_partition", b"?").decode(errors="replace")
        offset = headers.get("source_offset", b"?").decode(errors="replace")
        parts.append(f"dead letter from {source}[{partition}]@{offset}")
    return f" ({', '.join(parts)})" if parts else ""
