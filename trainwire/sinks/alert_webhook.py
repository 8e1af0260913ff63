"""Alert delivery: every health alert a worker stores, posted as JSON to webhooks.

``trainwire worker --alert-webhook URL`` (repeatable, or ``TRAINWIRE_ALERT_WEBHOOKS``, URLs
separated by spaces) adds an :class:`AlertWebhookSink`. The body depends on how the URL is written:

==============================  =====================================================================
URL                             body posted
==============================  =====================================================================
``https://host/path``           the alert event, as on the bus (``event_id``, ``run_id``, ``ts``,
                                ``payload`` with ``rule``, ``severity``, ``message``, ``step``,
                                ``evidence``)
``slack+https://host/path``     ``{"text": "..."}``: one line for Slack's (and Mattermost's, Discord's
                                ``/slack``) incoming webhooks; posted to ``https://host/path``
==============================  =====================================================================

The sink reads the ``alerts`` topic like every other (so it works the same in both runtimes, and
an alert is posted once the worker that raised it has published it) and hands the alerts to
:class:`AlertDelivery` at each checkpoint, each once per data directory and webhook. Delivery is
at least once: an alert is written to ``{data_dir}/state/alerts_outbox`` before the worker commits
its offset, and marked in ``{data_dir}/state/alerts_posted`` for a webhook only once that webhook
has settled it (posted, refused for good, or dropped from a full queue); an alert a worker took on
and did not settle (it was killed, or stopped with the alert queued) is posted by the next worker
on the data directory when it starts (:class:`AlertOutbox`). Delivery never blocks or slows the worker's loop: each
webhook has a background thread and a bounded queue; an alert that finds the queue full is dropped,
counted and logged. Alerts are rate-limited per (rule, run): after one is posted, the same rule
for the same run is not posted again for ``min_interval_s`` seconds (counted as rate-limited). A
post that fails (connection refused or closed, no answer within ``timeout_s``, a 5xx or 429 answer)
is retried with exponential backoff; one that still fails, or gets another 4xx, is counted as
failed and logged (at most once a minute per webhook, with the count), and the worker goes on.
Alerts still queued when the worker stops are given ``close_timeout_s`` to go out; those that do
not stay in the outbox for the next worker.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

from trainwire.bus.base import Record
from trainwire.config import mask_secrets
from trainwire.errors import ConfigError, EventError
from trainwire.events import Alert, Event, decode, encode
from trainwire.private_files import open_private, replace_private
from trainwire.sinks.alert_console import AlertLedger
from trainwire.sinks.base import Sink

__all__ = [
    "SLACK_PREFIX",
    "AlertDelivery",
    "AlertOutbox",
    "AlertWebhookSink",
    "DeliveryConfig",
    "DeliveryStats",
    "Webhook",
]

logger = logging.getLogger("trainwire.alerts")

SLACK_PREFIX = "slack+"
"""Written before a webhook's URL, asks for a Slack-compatible ``{"text": ...}`` body."""

_STOP = object()


@dataclass(frozen=True)
class Webhook:
    """Where to post alerts, and which body: ``"event"`` (the alert event) or ``"slack"`` (``{"text"}``)."""

    url: str
    body: str = "event"

    @classmethod
    def parse(cls, spec: str) -> Webhook:
        """A webhook from its command-line form: ``URL`` or ``slack+URL``; an http(s) URL is required."""
        body, url = ("slack", spec[len(SLACK_PREFIX) :]) if spec.startswith(SLACK_PREFIX) else ("event", spec)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("alert_webhook", mask_secrets(f"{spec!r} is not an http(s) URL, nor slack+ one"))
        return cls(url, body)

    @property
    def name(self) -> str:
        """The URL without its path and query (which often hold the webhook's secret token), for logs."""
        parts = urlsplit(self.url)
        host = parts.netloc.rpartition("@")[2]
        return f"{SLACK_PREFIX if self.body == 'slack' else ''}{parts.scheme}://{host}/..."

    @property
    def key(self) -> str:
        """A short hash of the URL and body: names the webhook in ``alerts_posted`` without its secret."""
        return hashlib.sha256(f"{self.body} {self.url}".encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"Webhook({self.name!r}, body={self.body!r})"

    def payload(self, event: Event) -> bytes:
        """The JSON body posted for the alert ``event``."""
        if self.body == "event":
            return encode(event)
        return json.dumps({"text": alert_text(event)}).encode()


def alert_text(event: Event) -> str:
    """One line saying what an alert event says: severity, rule, run, step and message."""
    alert = cast(Alert, event.payload)
    step = f", step {alert.step}" if alert.step is not None else ""
    return f"[{alert.severity}] {alert.rule} in run {event.run_id}{step}: {alert.message}"


@dataclass(frozen=True)
class DeliveryConfig:
    """How alerts are delivered (see the module docstring)."""

    timeout_s: float = 10.0
    retries: int = 3
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    min_interval_s: float = 60.0
    max_queue: int = 1000
    close_timeout_s: float = 5.0
    log_every_s: float = 60.0

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ConfigError("alert_delivery.timeout_s", f"must be > 0, got {self.timeout_s}")
        for name in ("backoff_s", "max_backoff_s", "min_interval_s", "close_timeout_s", "log_every_s"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"alert_delivery.{name}", f"must be >= 0, got {getattr(self, name)}")
        if self.retries < 0 or self.max_queue < 1:
            raise ConfigError(
                "alert_delivery", f"retries >= 0 and max_queue >= 1, got {self.retries}, {self.max_queue}"
            )


@dataclass
class DeliveryStats:
    """What became of the alerts offered to one webhook."""

    delivered: int = 0
    failed: int = 0
    """Posted and refused for good, or still failing after every retry."""
    retried: int = 0
    """Posts tried again after a failure."""
    dropped: int = 0
    """Not posted: the webhook's queue was full, or the worker stopped first."""


Settle = Callable[[Event, Webhook], None]
"""Called once a webhook is done with an alert: posted, refused for good, dropped from a full queue or
rate-limited (not when the worker stopped first: the alert is still to post)."""


class _Poster:
    """One webhook's bounded queue and the background thread that posts from it."""

    def __init__(self, webhook: Webhook, config: DeliveryConfig, settle: Settle):
        self.webhook = webhook
        self.config = config
        self.stats = DeliveryStats()
        self._settle = settle
        self._queue: queue.Queue[object] = queue.Queue(maxsize=config.max_queue)
        self._stopping = threading.Event()
        self._logged_at = -float("inf")
        self._unlogged_failures = 0
        self._thread = threading.Thread(target=self._run, name=f"trainwire-alerts {webhook.name}", daemon=True)
        self._thread.start()

    def offer(self, event: Event) -> None:
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.stats.dropped += 1
            self._log("alert queue full (%d), dropped %s", self.config.max_queue, alert_text(event))
            self._settle(event, self.webhook)

    def _run(self) -> None:
        while not self._stopping.is_set():
            item = self._queue.get()
            if item is _STOP:
                return
            self._deliver(cast(Event, item))

    def _deliver(self, event: Event) -> None:
        body = self.webhook.payload(event)
        backoff = self.config.backoff_s
        for attempt in range(self.config.retries + 1):
            if attempt:
                if self._stopping.wait(backoff):
                    self.stats.dropped += 1  # the worker stopped first: the next worker posts it
                    return
                self.stats.retried += 1
                backoff = min(backoff * 2, self.config.max_backoff_s)
            problem, retriable = self._post(body)
            if problem is None:
                self.stats.delivered += 1
                self._settle(event, self.webhook)
                return
            if not retriable:
                break
        self.stats.failed += 1
        self._log("could not post %s: %s", alert_text(event), problem)
        self._settle(event, self.webhook)

    def _post(self, body: bytes) -> tuple[str | None, bool]:
        """Post ``body``; return what went wrong (None: delivered) and whether trying again may help."""
        request = urllib.request.Request(
            self.webhook.url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout_s) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code} {exc.reason}", exc.code >= 500 or exc.code == 429
        except urllib.error.URLError as exc:
            return f"{exc.reason}", True
        except (OSError, ValueError) as exc:  # timeouts, connections closed without an answer, bad answers
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, True
        return None, False

    def _log(self, message: str, *args: object) -> None:
        """Log a problem at most once per ``log_every_s``, with how many others there were since."""
        self._unlogged_failures += 1
        now = time.monotonic()
        if now - self._logged_at < self.config.log_every_s:
            return
        more = self._unlogged_failures - 1
        suffix = f" ({more} more problems since the last report)" if more else ""
        logger.warning("trainwire: webhook %s: " + message + suffix, self.webhook.name, *args)
        self._logged_at, self._unlogged_failures = now, 0

    def close(self, deadline: float) -> None:
        stop_queued = False
        with contextlib.suppress(queue.Full):  # full: the thread sees _stopping after its current alert
            self._queue.put(_STOP, timeout=max(0.0, deadline - time.monotonic()))
            stop_queued = True
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            self._stopping.set()  # cut a backoff short; a post in flight ends at its own timeout
            left = self._queue.qsize() - stop_queued
            self.stats.dropped += left
            logger.warning(
                "trainwire: webhook %s: the worker stopped with %d alerts not posted", self.webhook.name, left
            )


def _settled_nowhere(event: Event, webhook: Webhook) -> None:
    """The default :data:`Settle`: nothing keeps track of what was posted."""


class AlertDelivery:
    """Posts alert events to webhooks from background threads, rate-limited per (rule, run).

    :meth:`offer` never blocks. :meth:`close` waits up to ``close_timeout_s`` for what is queued.
    ``settle`` is called (from the posting threads) for each alert and webhook that is done with it.
    """

    def __init__(
        self, webhooks: Sequence[Webhook], config: DeliveryConfig | None = None, settle: Settle = _settled_nowhere
    ):
        self.config = config or DeliveryConfig()
        self._posters = [_Poster(webhook, self.config, settle) for webhook in webhooks]
        self._settle = settle
        self._last_offered: dict[tuple[str, str], float] = {}
        self.rate_limited = 0
        """Alerts not posted because the same rule fired for the same run within ``min_interval_s``."""

    @property
    def webhooks(self) -> list[Webhook]:
        """Where alerts are posted."""
        return [poster.webhook for poster in self._posters]

    def offer(self, event: Event) -> None:
        """Queue the alert ``event`` for every webhook, unless rate-limited (never blocks)."""
        key, now = (cast(Alert, event.payload).rule, event.run_id), time.monotonic()
        last = self._last_offered.get(key)
        if last is not None and now - last < self.config.min_interval_s:
            self.rate_limited += 1
            for webhook in self.webhooks:
                self._settle(event, webhook)
            return
        self._last_offered[key] = now
        for poster in self._posters:
            poster.offer(event)

    def resume(self, event: Event, webhooks: Iterable[Webhook]) -> None:
        """Queue ``event`` for ``webhooks`` again: an earlier worker offered it and stopped before it was
        posted (not rate-limited again; it counts for the rate limit of what comes next)."""
        self._last_offered[(cast(Alert, event.payload).rule, event.run_id)] = time.monotonic()
        wanted = set(webhooks)
        for poster in self._posters:
            if poster.webhook in wanted:
                poster.offer(event)

    def stats(self) -> dict[str, DeliveryStats]:
        """Each webhook's counters, by its :attr:`Webhook.name`."""
        return {poster.webhook.name: poster.stats for poster in self._posters}

    def close(self) -> None:
        """Give the queued alerts ``close_timeout_s`` to go out, then stop the threads."""
        deadline = time.monotonic() + self.config.close_timeout_s
        for poster in self._posters:
            poster.close(deadline)
        for name, stats in self.stats().items():
            if stats.failed or stats.dropped:
                logger.warning(
                    "trainwire: webhook %s: %d alerts posted, %d failed, %d dropped",
                    name,
                    stats.delivered,
                    stats.failed,
                    stats.dropped,
                )


class AlertOutbox:
    """The alerts taken on for posting on a data directory, kept until each webhook settled them.

    ``{data_dir}/state/alerts_outbox`` holds the alert events (one JSON a line, appended);
    ``{data_dir}/state/alerts_posted`` (an :class:`AlertLedger`) the ``event_id@webhook key`` of each
    alert a webhook settled. An alert is pending for a webhook until then. Opening the outbox
    rewrites it with only the alerts still pending for one of ``webhooks``.
    """

    def __init__(self, data_dir: str | Path, webhooks: Sequence[Webhook]):
        self.path = Path(data_dir) / "state" / "alerts_outbox"
        self.posted = AlertLedger(data_dir, "posted")
        self._webhooks = list(webhooks)
        self._lock = threading.Lock()
        self._pending: dict[str, Event] = {}
        for event in self._read():
            if self.pending_for(event):
                self._pending[event.event_id] = event
        if self.path.exists():
            replace_private(self.path, b"".join(encode(event) + b"\n" for event in self._pending.values()), fsync=False)

    def _read(self) -> list[Event]:
        if not self.path.exists():
            return []
        events = []
        with open(self.path, "rb") as fh:
            for number, line in enumerate(fh, 1):
                try:
                    events.append(decode(line, f"{self.path}:{number}"))
                except EventError as exc:
                    # a line cut short when a worker was killed while writing it: that worker had not
                    # committed the alert's offset, so the next worker reads the alert from the bus again
                    logger.warning("trainwire: %s (skipped: the alert is read from the bus again)", exc)
        return events

    def pending_for(self, event: Event) -> list[Webhook]:
        """The webhooks that have not settled ``event``."""
        return [webhook for webhook in self._webhooks if f"{event.event_id}@{webhook.key}" not in self.posted]

    def __contains__(self, event_id: object) -> bool:
        """Whether the alert was taken on before: pending, or settled (an id alone: settled everywhere)."""
        return (
            event_id in self._pending
            or event_id in self.posted
            or any(f"{event_id}@{webhook.key}" in self.posted for webhook in self._webhooks)
        )

    def pending(self) -> list[Event]:
        """The alerts that one of the webhooks has not settled, in the order they were taken on."""
        with self._lock:
            return list(self._pending.values())

    def add(self, events: Iterable[Event]) -> None:
        """Take on ``events`` (appended to the outbox before they are offered)."""
        new = [event for event in events if event.event_id not in self]
        if not new:
            return
        with self._lock, open_private(self.path, "ab") as fh:
            fh.writelines(encode(event) + b"\n" for event in new)
            self._pending.update((event.event_id, event) for event in new)

    def settle(self, event: Event, webhook: Webhook) -> None:
        """``webhook`` is done with ``event`` (thread-safe: called from the posting threads)."""
        with self._lock:
            self.posted.add([f"{event.event_id}@{webhook.key}"])
            if not self.pending_for(event):
                self._pending.pop(event.event_id, None)


class AlertWebhookSink(Sink):
    """The worker's end of alert delivery: alert events read from the bus go to :class:`AlertDelivery`.

    On start it offers again what an earlier worker left pending in ``outbox``. ``add`` keeps the
    alerts of the batch that ``outbox`` has not taken on; ``flush`` (at the checkpoint, before the
    offsets are committed) adds them to ``outbox`` and offers them, without waiting. So an alert is
    posted at least once per data directory and webhook, and once unless a worker stops before a
    webhook settled it, also when a worker of another consumer group reads the alerts topic from
    the start (and derives the same alerts, with the same ids, again).
    """

    def __init__(self, delivery: AlertDelivery, outbox: AlertOutbox):
        self.delivery = delivery
        self.outbox = outbox
        self._alerts: dict[str, Event] = {}
        for event in outbox.pending():
            delivery.resume(event, outbox.pending_for(event))

    def add(self, event: Event, record: Record) -> None:
        if isinstance(event.payload, Alert) and event.event_id not in self.outbox:
            self._alerts[event.event_id] = event

    def flush(self) -> None:
        alerts, self._alerts = self._alerts, {}
        self.outbox.add(alerts.values())
        for event in alerts.values():
            self.delivery.offer(event)

    def close(self) -> None:
        self.delivery.close()
        if left := len(self.outbox.pending()):
            logger.warning(
                "trainwire: %d alerts not posted yet are kept in %s: the next worker on this data directory posts them",
                left,
                self.outbox.path,
            )
