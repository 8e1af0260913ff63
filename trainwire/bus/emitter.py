"""The emitter: how a training loop puts events on the bus without waiting for it.

``emit(event)`` appends to a bounded in-memory queue and returns; a background thread runs an
asyncio loop that serializes events, publishes them in batches (lingering up to ``linger_ms``
for a batch to fill; on Kafka each becomes one compressed record batch per partition) and keeps
counters.

Nothing is dropped silently:

- when the bus is unreachable (at start or later) or fails to take a batch, the messages go to
  the spool, an append-only file, and are replayed in order once the bus is back; why the bus
  did not take them is logged (at most every 10 s);
- ``emit`` never writes to disk per event: when the queue holds ``max_queue`` events and the
  bus is slow to take more, the background thread spools whole batches instead of waiting; only
  if the caller outruns even that (the queue at twice ``max_queue``) does each ``emit`` encode the
  oldest queued event itself, and such events go to the spool ``batch_size`` at a time;
- an event the bus refuses for good (larger than it takes) is counted as ``failed``, logged, and
  kept with the reason in ``{data_dir}/rejected/events.jsonl``; the events after it go on as usual;
- an event that cannot even be serialized is counted as ``failed`` and logged with the field that
  failed;
- every event counted as ``failed`` is also counted by its reason (:attr:`EmitterStats.failed_by_reason`);
  the first failure of each reason is logged at once, and ``flush()`` and ``close()`` log how many
  events failed, by reason, since the last such report;
- at exit (normal, Ctrl+C, or an exception in the caller) ``close()`` runs from ``atexit`` and
  drains the queue within a deadline; what is left is in the spool, which the next emitter for
  the same bus and data directory replays.

After ``os.fork()`` the child gets a fresh queue and thread (events queued in the parent are
the parent's to send).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from trainwire.bus.base import Message, Refused, Transport, WriteFailed, frame
from trainwire.bus.publisher import event_message
from trainwire.bus.rejected import RejectedEvents
from trainwire.bus.spool import Spool, spool_dir
from trainwire.config import Settings
from trainwire.errors import BusError, EventError
from trainwire.events import Event, check_event

logger = logging.getLogger("trainwire.emitter")


@dataclass(frozen=True)
class EmitterStats:
    """What the emitter has done with the events given to it."""

    sent: int
    """Delivered to the bus on first try."""
    spooled: int
    """Written to the spool (bus unreachable, batch refused, or queue full)."""
    replayed: int
    """Delivered from the spool later."""
    failed: int
    """Not delivered and not spooled: refused by the bus for good (kept in the rejected file), not
    serializable, or the spool could not be written."""
    queued: int
    """In memory now, waiting for the background thread."""
    spool_pending: int
    """In the spool now, waiting for the bus."""
    failed_by_reason: dict[str, int] = field(default_factory=dict)
    """``failed`` by reason: :data:`REFUSED`, :data:`NOT_SERIALIZABLE`, :data:`SPOOL_UNWRITABLE`."""


REFUSED = "refused by the bus"
NOT_SERIALIZABLE = "not serializable"
SPOOL_UNWRITABLE = "spool not writable"


class _RateLimitedLog:
    def __init__(self, every_s: float = 10.0):
        self.every_s = every_s
        self._last: dict[str, float] = {}

    def warning(self, key: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -1e9) >= self.every_s:
            self._last[key] = now
            logger.warning(msg, *args)


_live_emitters: weakref.WeakSet[Emitter] = weakref.WeakSet()


def _reset_emitters_after_fork() -> None:
    for emitter in list(_live_emitters):
        emitter._after_fork()


os.register_at_fork(after_in_child=_reset_emitters_after_fork)


class Emitter:
    """Non-blocking event publisher for the embedded bus or Kafka.

    Args:
        settings: where to publish (default: :meth:`Settings.from_env`).
        transport: a ready transport instead of the one ``settings`` implies.
        max_queue: events held in memory for the bus; past it the background thread spools batches
            rather than wait for the bus; at twice it, ``emit`` encodes the oldest event itself and
            spools such events a batch at a time.
        batch_size: events per batch handed to the transport; a full batch wakes the thread early.
        linger_ms: how long the thread waits for more events before sending a partial batch.
        close_timeout_s: the deadline of ``close()`` (and of the exit hook).
        retry_backoff_s: first and largest wait between reconnection attempts.
        max_inflight: batches handed to the bus and not yet acknowledged, at most.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        transport: Transport | None = None,
        max_queue: int = 100_000,
        batch_size: int = 2_000,
        linger_ms: int = 20,
        close_timeout_s: float = 10.0,
        retry_backoff_s: tuple[float, float] = (0.25, 5.0),
        max_inflight: int = 8,
    ):
        self.settings = settings or Settings.from_env()
        self._transport = transport or make_transport(self.settings)
        self._max_queue = max_queue
        self._batch_size = batch_size
        self._linger_s = linger_ms / 1000
        self._close_timeout_s = close_timeout_s
        self._backoff_min, self._backoff_max = retry_backoff_s
        self._max_inflight = max_inflight
        target = "local" if self.settings.embedded_bus else str(self.settings.kafka)
        self._spool = Spool(spool_dir(self.settings.data_dir, target))
        self._rejected = RejectedEvents(self.settings.data_dir)
        self._log = _RateLimitedLog()
        self._start_lock = threading.Lock()
        self._init_runtime_state()
        _live_emitters.add(self)

    def _init_runtime_state(self) -> None:
        self._queue: deque[Event] = deque()
        self._overflow: list[bytes] = []
        """Events :meth:`_overflow_oldest` encoded and framed on the caller's thread, not yet spooled."""
        self._overflow_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake_async: asyncio.Event | None = None
        self._flush_waiters: list[threading.Event] = []
        self._waiters_lock = threading.Lock()
        self._closing = False
        self._closed = False
        self._deadline = float("inf")
        self._sent = self._spooled = self._replayed = 0
        self._failed_by_reason: dict[str, int] = {}
        self._failed_reported: dict[str, int] = {}
        """``_failed_by_reason`` as :meth:`_report_failed` last logged it."""
        self._connected = False
        self._next_attempt = 0.0
        self._backoff = self._backoff_min
        self._idle = False
        self._inflight: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ caller side

    def emit(self, event: Event) -> None:
        """Queue ``event`` for publishing and return at once. Never raises."""
        queue = self._queue
        if self._thread is None:
            if self._closed:
                self._spill(event)
                return
            self._start()
        queue.append(event)
        if len(queue) >= 2 * self._max_queue:  # the thread cannot keep up: take over the oldest event
            self._overflow_oldest()
        if self._idle or len(queue) == self._batch_size:
            self._idle = False
            self._wake()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event emitted so far is delivered or spooled (and fsynced).

        Returns False if ``timeout`` (seconds) passed first.
        """
        if self._thread is None or not self._thread.is_alive():
            return not self._queue
        waiter = threading.Event()
        with self._waiters_lock:
            self._flush_waiters.append(waiter)
        self._wake()
        flushed = waiter.wait(timeout)
        self._report_failed()
        return flushed

    def close(self, timeout: float | None = None) -> None:
        """Deliver or spool everything, stop the thread and disconnect. Idempotent."""
        if self._closed:
            return
        atexit.unregister(self.close)
        timeout = self._close_timeout_s if timeout is None else timeout
        self._deadline = time.monotonic() + timeout
        self._closing = True
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._wake()
            thread.join(timeout + 2.0)
        self._closed = True
        self._thread = None
        self._spool_overflow()
        if self._queue:  # the thread could not finish in time: keep the rest on disk
            self._spill_many(_pop_front(self._queue, len(self._queue)))
        self._spool.close()
        self._report_failed()
        if self._spool.pending:
            logger.warning(
                "trainwire: %d events could not reach the bus and wait in %s; "
                "the next trainwire process on this data directory delivers them",
                self._spool.pending,
                self._spool.path,
            )

    def start(self) -> None:
        """Start publishing now rather than at the first :meth:`emit`: the background thread
        connects and replays what an earlier process left in the spool for this bus."""
        if not self._closed:
            self._start()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run (later events go straight to the spool)."""
        return self._closed

    @property
    def spool_path(self) -> Path:
        """The file this emitter spools to while the bus is unreachable (under ``{data_dir}/spool/``)."""
        return self._spool.path

    def stats(self) -> EmitterStats:
        """Counters of sent, spooled, replayed and failed events, and what is pending now."""
        return EmitterStats(
            sent=self._sent,
            spooled=self._spooled,
            replayed=self._replayed,
            failed=sum(self._failed_by_reason.values()),
            queued=len(self._queue) + len(self._overflow),
            spool_pending=self._spool.pending,
            failed_by_reason=dict(self._failed_by_reason),
        )

    def __enter__(self) -> Emitter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is not None:
                return
            started = threading.Event()
            thread = threading.Thread(target=self._thread_main, args=(started,), name="trainwire-emitter", daemon=True)
            thread.start()
            started.wait()
            self._thread = thread
            atexit.register(self.close)

    def _wake(self) -> None:
        loop, wake = self._loop, self._wake_async
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop already stopped
                loop.call_soon_threadsafe(wake.set)

    def _overflow_oldest(self) -> None:
        """Encode the oldest queued event on the caller's thread; spool such events a batch at a time.

        The thread cannot keep up with the caller: encoding one event per ``emit`` holds the queue
        at its limit, and one write per ``batch_size`` events keeps disk I/O off each call.
        """
        now = int(time.time() * 1000)
        frames = [frame(m, now) for m in self._encode(_pop_front(self._queue, 1))]
        with self._overflow_lock:
            self._overflow.extend(frames)
            if len(self._overflow) < self._batch_size:
                return
            batch, self._overflow = self._overflow, []
        self._spool_frames(batch)

    def _spool_overflow(self) -> None:
        """Spool the events :meth:`_overflow_oldest` encoded and holds (at a flush, close or drain)."""
        with self._overflow_lock:
            batch, self._overflow = self._overflow, []
        self._spool_frames(batch)

    def _spill(self, event: Event) -> None:
        self._spill_many([event])

    def _spill_many(self, events: list[Event]) -> None:
        self._spool_messages(self._encode(events))

    def _after_fork(self) -> None:
        self._start_lock = threading.Lock()
        self._init_runtime_state()
        self._spool.forget_after_fork()
        self._transport = make_transport(self.settings)

    # ------------------------------------------------------------------ background thread

    def _thread_main(self, started: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._run(started))
        except Exception:  # the telemetry thread must never take the process down
            logger.exception("trainwire: emitter thread failed; remaining events go to the spool")
            self._spool_overflow()
            self._spill_many(_pop_front(self._queue, len(self._queue)))
        finally:
            self._release_flush_waiters()
            loop.close()

    async def _run(self, started: threading.Event) -> None:
        self._wake_async = asyncio.Event()
        started.set()
        adopted = self._spool.adopt_orphans()
        if adopted:
            logger.info("trainwire: replaying %d events left in the spool by an earlier process", adopted)
        while True:
            await self._wait_for_work(self._next_attempt)
            past_deadline = time.monotonic() >= self._deadline
            if not self._connected and not past_deadline and time.monotonic() >= self._next_attempt:
                try:
                    await asyncio.wait_for(self._transport.start(), self._remaining(30.0))
                    self._connected = True
                except (BusError, TimeoutError) as exc:
                    self._retry_later()
                    self._log.warning("connect", "trainwire: bus unreachable, spooling events: %s", exc)
            if self._connected and self._spool.pending and not self._inflight:
                await self._replay()
            await self._drain(past_deadline)
            if self._flush_waiters or self._closing:
                await self._settle()
            if self._flush_waiters:
                self._release_flush_waiters(only_if_drained=True)
            if self._closing and not self._queue and (not self._spool.pending or not self._connected or past_deadline):
                break
        if self._connected:
            try:
                await asyncio.wait_for(self._transport.stop(), self._remaining(5.0))
            except (BusError, TimeoutError, OSError) as exc:
                self._log.warning("stop", "trainwire: closing the bus connection failed: %s", exc)

    async def _wait_for_work(self, next_attempt: float) -> None:
        """Sleep until there is something to do, then linger briefly so a batch can fill.

        While idle the thread sleeps without a timer (``emit`` wakes it on the first event), except
        when it must retry the bus for spooled events.
        """
        self._idle = True  # set before looking at the queue: emit() checks it after appending
        if not (self._queue or self._flush_waiters or self._closing):
            retry_in = None
            if self._spool.pending and not self._connected:
                retry_in = max(0.0, next_attempt - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_async.wait(), retry_in)
        self._idle = False
        self._wake_async.clear()
        if len(self._queue) < self._batch_size and not (self._flush_waiters or self._closing):
            with contextlib.suppress(TimeoutError):  # linger: a full batch or a flush cuts it short
                await asyncio.wait_for(self._wake_async.wait(), self._linger_s)
            self._wake_async.clear()

    def _remaining(self, cap: float) -> float:
        return max(0.1, min(cap, self._deadline - time.monotonic()))

    async def _settle(self) -> None:
        """Wait until every batch in flight is delivered or spooled."""
        while self._inflight:
            await asyncio.wait(set(self._inflight))

    async def _replay(self) -> None:
        """Send spooled messages in order, one batch at a time, while the bus takes them."""
        while self._spool.pending and self._connected:
            messages, cursor = self._spool.peek(self._batch_size)
            if not messages:
                return
            refused, failed = _sort_out(await self._send(messages))
            if failed:
                self._bus_failed(len(failed))
                await self._disconnect()
                return
            self._backoff = self._backoff_min
            self._reject(refused)
            self._spool.advance(cursor, len(messages))
            self._replayed += len(messages) - len(refused)

    async def _drain(self, past_deadline: bool) -> None:
        """Hand everything queued now to the bus (up to ``max_inflight`` batches at once) or the spool."""
        queue = self._queue
        if self._overflow:
            self._spool_overflow()
        while batch := _pop_front(queue, self._batch_size):
            messages = self._encode(batch)
            if self._connected and not self._spool.pending and not past_deadline:
                if len(self._inflight) >= self._max_inflight:
                    if len(queue) >= self._max_queue:  # the bus lags: spool rather than let the queue grow
                        self._spool_messages(messages)
                        continue
                    await asyncio.wait(set(self._inflight), return_when=asyncio.FIRST_COMPLETED)
                task = asyncio.create_task(self._deliver(messages))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
            else:
                self._spool_messages(messages)

    async def _deliver(self, messages: list[Message]) -> None:
        refused, failed = _sort_out(await self._send(messages))
        self._sent += len(messages) - len(refused) - len(failed)
        self._reject(refused)
        if failed:
            self._spool_messages(failed)
            self._bus_failed(len(failed))
            await self._disconnect()
        else:
            self._backoff = self._backoff_min

    async def _send(self, messages: list[Message]) -> list[Message | Refused]:
        try:
            return await asyncio.wait_for(self._transport.send_batch(messages), self._remaining(60.0))
        except TimeoutError:
            return list(messages)

    def _reject(self, refused: list[Refused]) -> None:
        """Count, log and keep in the rejected file each message the bus refused for good."""
        for r in refused:
            self._count_failed(REFUSED, 1)
            try:
                self._rejected.append(r)
                kept = f"kept in {self._rejected.path}"
            except OSError as exc:
                kept = f"and lost: cannot write {self._rejected.path}: {exc}"
            event_type, event_id, run_id = _identify(r.message.value)
            logger.warning(
                "trainwire: the bus refused %s event %s of run %s (%d bytes) for good: %s; %s",
                event_type,
                event_id,
                run_id,
                len(r.message.value),
                r.reason,
                kept,
            )

    def _spool_messages(self, messages: list[Message]) -> None:
        """Write ``messages`` to the spool; what it cannot take is counted failed and logged."""
        now = int(time.time() * 1000)
        self._spool_frames([frame(m, now) for m in messages])

    def _spool_frames(self, frames: list[bytes]) -> None:
        """:meth:`_spool_messages` for messages already framed."""
        try:
            self._spool.append_frames(frames)
            self._spooled += len(frames)
        except WriteFailed as exc:
            self._spooled += exc.written
            self._count_failed(SPOOL_UNWRITABLE, len(frames) - exc.written)
            self._log.warning(
                "spool",
                "trainwire: cannot write the spool %s, %d events lost: %s",
                self._spool.path,
                len(frames) - exc.written,
                exc,
            )

    def _bus_failed(self, count: int) -> None:
        """Log (at most every 10 s) that the bus handed ``count`` messages back, and why."""
        self._log.warning(
            "deliver",
            "trainwire: the bus did not take %d events (%s); they wait in the spool %s",
            count,
            self._transport.last_failure or "no reason given",
            self._spool.path,
        )

    def _retry_later(self) -> None:
        """Wait before the next attempt at the bus, twice as long as the last time (up to the maximum)."""
        self._next_attempt = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self._backoff_max)

    def _encode(self, events: list[Event]) -> list[Message]:
        prefix = self.settings.topic_prefix
        messages = []
        for event in events:
            try:
                messages.append(event_message(prefix, event))
            except Exception as exc:  # whatever a value of a foreign type raises: this event's alone
                if self._count_failed(NOT_SERIALIZABLE, 1):
                    logger.warning(
                        "trainwire: event %s (%s) cannot be serialized, so it is dropped: %s; further events that "
                        "cannot be are counted and reported at flush and close",
                        event.event_id,
                        event.event_type,
                        _unserializable_field(event, exc),
                    )
        return messages

    def _count_failed(self, reason: str, count: int) -> bool:
        """Count ``count`` failed events for ``reason``; True when they are the first for that reason."""
        before = self._failed_by_reason.get(reason, 0)
        self._failed_by_reason[reason] = before + count
        return before == 0

    def _report_failed(self) -> None:
        """Log how many events failed since the last report, by reason (nothing when none did)."""
        counts = dict(self._failed_by_reason)
        new = {reason: n - self._failed_reported.get(reason, 0) for reason, n in counts.items()}
        new = {reason: n for reason, n in new.items() if n}
        if not new:
            return
        self._failed_reported = counts
        logger.warning(
            "trainwire: %d events failed since the last report (%s); %d in all",
            sum(new.values()),
            ", ".join(f"{reason}: {n}" for reason, n in sorted(new.items())),
            sum(counts.values()),
        )

    async def _disconnect(self) -> None:
        if not self._connected:
            return
        self._connected = False
        self._retry_later()
        with contextlib.suppress(BusError, TimeoutError, OSError):
            await asyncio.wait_for(self._transport.stop(), 5.0)

    def _sync(self) -> None:
        try:
            self._transport.sync()
            self._spool.sync()
        except OSError as exc:
            self._log.warning("sync", "trainwire: fsync failed: %s", exc)

    def _release_flush_waiters(self, only_if_drained: bool = False) -> None:
        """Wake ``flush()`` callers; with ``only_if_drained``, only once everything they emitted is out."""
        with self._waiters_lock:
            if only_if_drained and (self._queue or self._overflow or self._inflight):
                return
            waiters, self._flush_waiters = self._flush_waiters, []
        if only_if_drained:
            self._sync()
        for waiter in waiters:
            waiter.set()


def _unserializable_field(event: Event, exc: Exception) -> str:
    """``exc`` of serializing ``event``, as the field that failed and why (from :func:`check_event`)."""
    try:
        check_event(event)
    except EventError as error:
        return str(error)
    except Exception:  # the check itself cannot read the event: the original error is all there is
        pass
    return f"(event): {type(exc).__name__}: {exc}"


def _pop_front(queue: deque[Event], count: int) -> list[Event]:
    """Up to ``count`` events from the front of ``queue`` (the thread may take some at the same time)."""
    out: list[Event] = []
    with contextlib.suppress(IndexError):
        while len(out) < count:
            out.append(queue.popleft())
    return out


def _sort_out(undelivered: list[Message | Refused]) -> tuple[list[Refused], list[Message]]:
    """What a transport did not deliver: (refused for good, to try again later)."""
    refused = [m for m in undelivered if isinstance(m, Refused)]
    return refused, [m for m in undelivered if not isinstance(m, Refused)]


def _identify(value: bytes) -> tuple[str, str, str]:
    """(event type, event id, run id) of an event message's value, for a log line; ``?`` where unreadable."""
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        obj = None
    if not isinstance(obj, dict):
        obj = {}
    return str(obj.get("event_type", "?")), str(obj.get("event_id", "?")), str(obj.get("run_id", "?"))


def make_transport(settings: Settings) -> Transport:
    """The transport ``settings`` implies: Kafka when bootstrap servers are set, else the local log."""
    if settings.embedded_bus:
        from trainwire.bus.local import LocalTransport

        return LocalTransport(settings.data_dir)
    from trainwire.bus.kafka import KafkaTransport

    return KafkaTransport(settings)
