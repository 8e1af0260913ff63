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
:class:`AlertDelivery` at each checkpoint, each once per data directory (their ids are kept in
``{data_dir}/state/alerts_posted``). Delivery never blocks or slows the worker's loop: each
webhook has a background thread and a bounded queue; an alert that finds the queue full is dropped,
counted and logged. Alerts are rate-limited per (rule, run): after one is posted, the same rule
for the same run is not posted again for ``min_interval_s`` seconds (counted as rate-limited). A
post that fails (connection refused or closed, no answer within ``timeout_s``, a 5xx or 429 answer)
is retried with exponential backoff; one that still fails, or gets another 4xx, is counted as
failed and logged (at most once a minute per webhook, with the count), and the worker goes on.
Alerts still queued when the worker stops are given ``close_timeout_s`` to go out.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

from trainwire.bus.base import Record
from trainwire.config import mask_secrets
from trainwire.errors import ConfigError
from trainwire.events import Alert, Event, encode
from trainwire.sinks.alert_console import AlertLedger
from trainwire.sinks.base import Sink

__all__ = ["SLACK_PREFIX", "AlertDelivery", "AlertWebhookSink", "DeliveryConfig", "DeliveryStats", "Webhook"]

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


class _Poster:
    """One webhook's bounded queue and the background thread that posts from it."""

    def __init__(self, webhook: Webhook, config: DeliveryConfig):
        self.webhook = webhook
        self.config = config
        self.stats = DeliveryStats()
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
                self.stats.retried += 1
                if self._stopping.wait(backoff):
                    break  # the worker is stopping: no more waiting
                backoff = min(backoff * 2, self.config.max_backoff_s)
            problem, retriable = self._post(body)
            if problem is None:
                self.stats.delivered += 1
                return
            if not retriable:
                break
        self.stats.failed += 1
        self._log("could not post %s: %s", alert_text(event), problem)

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


class AlertDelivery:
    """Posts alert events to webhooks from background threads, rate-limited per (rule, run).

    :meth:`offer` never blocks. :meth:`close` waits up to ``close_timeout_s`` for what is queued.
    """

    def __init__(self, webhooks: Sequence[Webhook], config: DeliveryConfig | None = None):
        self.config = config or DeliveryConfig()
        self._posters = [_Poster(webhook, self.config) for webhook in webhooks]
        self._last_offered: dict[tuple[str, str], float] = {}
        self.rate_limited = 0
        """Alerts not posted because the same rule fired for the same run within ``min_interval_s``."""

    def offer(self, event: Event) -> None:
        """Queue the alert ``event`` for every webhook, unless rate-limited (never blocks)."""
        key, now = (cast(Alert, event.payload).rule, event.run_id), time.monotonic()
        last = self._last_offered.get(key)
        if last is not None and now - last < self.config.min_interval_s:
            self.rate_limited += 1
            return
        self._last_offered[key] = now
        for poster in self._posters:
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


class AlertWebhookSink(Sink):
    """The worker's end of alert delivery: alert events read from the bus go to :class:`AlertDelivery`.

    ``add`` keeps the alerts of the batch that ``posted`` does not hold; ``flush`` (at the
    checkpoint) offers them, without waiting, and adds them to ``posted``. So an alert is offered
    once per data directory, also when a worker of another consumer group reads the alerts topic
    from the start (and derives the same alerts, with the same ids, again).
    """

    def __init__(self, delivery: AlertDelivery, posted: AlertLedger):
        self.delivery = delivery
        self.posted = posted
        self._alerts: dict[str, Event] = {}

    def add(self, event: Event, record: Record) -> None:
        if isinstance(event.payload, Alert) and event.event_id not in self.posted:
            self._alerts[event.event_id] = event

    def flush(self) -> None:
        alerts, self._alerts = self._alerts, {}
        for event in alerts.values():
            self.delivery.offer(event)
        self.posted.add(alerts)

    def close(self) -> None:
        self.delivery.close()
