"""Alert delivery to webhooks, against real loopback HTTP servers that accept, refuse, hang and hang up."""

from __future__ import annotations

import json
import logging
import math
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_faust_worker import start_worker, stop

from trainwire.bus import Emitter
from trainwire.cli import main
from trainwire.config import Settings
from trainwire.errors import ConfigError
from trainwire.events import Alert, Event, TrainStep, decode, encode
from trainwire.sinks.alert_webhook import AlertDelivery, AlertOutbox, AlertWebhookSink, DeliveryConfig, Webhook


class HttpServer:
    """A real HTTP server on loopback answering every POST with ``status``, keeping the bodies.

    The first ``unanswered`` POSTs are kept and never answered (a webhook that hangs, then recovers).
    """

    def __init__(self, status: int = 200, unanswered: int = 0):
        self.bodies: list[bytes] = []
        self.received = threading.Condition()
        self._answer_all = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with server.received:  # kept before the answer: once the client has it, the body is here
                    server.bodies.append(body)
                    server.received.notify_all()
                    hold = len(server.bodies) <= unanswered
                if hold:
                    server._answer_all.wait()
                    return
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok" if status < 400 else b"no")

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/hooks/T000/secret-token"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout: float = 120.0) -> list[bytes]:
        with self.received:
            assert self.received.wait_for(lambda: len(self.bodies) >= count, timeout), self.bodies
            return list(self.bodies)

    def close(self) -> None:
        self._answer_all.set()
        self._httpd.shutdown()
        self._httpd.server_close()


class SocketServer:
    """A loopback server that accepts connections and reads the request, then hangs up or never answers."""

    def __init__(self, hang_up: bool):
        self.hang_up = hang_up
        self.connections: list[socket.socket] = []
        self.accepted = threading.Semaphore(0)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/hook"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            conn.recv(65536)
            if self.hang_up:
                conn.close()
            else:
                self.connections.append(conn)  # kept open, never answered
            self.accepted.release()

    def close(self) -> None:
        self._listener.close()
        for conn in self.connections:
            conn.close()


@pytest.fixture
def servers() -> Iterator[dict[str, HttpServer | SocketServer]]:
    made = {
        "accepts": HttpServer(200),
        "refuses": HttpServer(500),
        "hangs": SocketServer(hang_up=False),
        "hangs up": SocketServer(hang_up=True),
    }
    yield made
    for server in made.values():
        server.close()


def alert(run: str, rule: str = "nonfinite", step: int = 7) -> Event:
    return Event(
        run,
        Alert(rule=rule, severity="critical", message="loss is nan", step=step, evidence={"field": "loss"}),
    )


PATIENT = DeliveryConfig(timeout_s=60.0, retries=2, backoff_s=0.01, close_timeout_s=300.0)
"""Short backoff, a timeout no busy machine reaches, and time enough at close for every retry."""
HASTY = DeliveryConfig(timeout_s=0.2, retries=2, backoff_s=0.01, close_timeout_s=300.0)
"""The same with a short timeout, for the server that never answers."""


def test_each_webhook_gets_its_body_and_failures_are_retried_counted_and_logged(servers, caplog):
    webhooks = [
        Webhook.parse(servers["accepts"].url),
        Webhook.parse("slack+" + servers["accepts"].url),
        Webhook.parse(servers["refuses"].url),
        Webhook.parse(servers["hangs up"].url),
    ]
    hanging = Webhook.parse(servers["hangs"].url)
    deliveries = [AlertDelivery(webhooks, PATIENT), AlertDelivery([hanging], HASTY)]
    first, other_run = alert("run-a"), alert("run-b")
    with caplog.at_level(logging.WARNING, logger="trainwire.alerts"):
        for delivery in deliveries:
            delivery.offer(first)
            delivery.offer(alert("run-a", step=9))  # same rule, same run: rate-limited
            delivery.offer(other_run)
        for delivery in deliveries:
            delivery.close()

    assert [delivery.rate_limited for delivery in deliveries] == [1, 1]
    bodies = servers["accepts"].wait_for(4)
    assert len(bodies) == 4  # two alerts, two bodies each
    events = [decode(b) for b in bodies if b"event_id" in b]
    assert sorted(events, key=lambda e: e.run_id) == [first, other_run]  # the alert event, as on the bus
    texts = sorted(json.loads(b)["text"] for b in bodies if b"event_id" not in b)
    assert texts == [
        "[critical] nonfinite in run run-a, step 7: loss is nan",
        "[critical] nonfinite in run run-b, step 7: loss is nan",
    ]
    assert len(servers["refuses"].bodies) == 2 * 3  # each alert tried 1 + 2 retries times

    stats = {**deliveries[0].stats(), **deliveries[1].stats()}
    port = servers["accepts"].url.split(":")[2].split("/")[0]
    assert list(stats)[:2] == [f"http://127.0.0.1:{port}/...", f"slack+http://127.0.0.1:{port}/..."]
    by_server = dict(zip(["accepts", "slack", "refuses", "hangs up", "hangs"], stats.values(), strict=True))
    for name in ("accepts", "slack"):
        assert (by_server[name].delivered, by_server[name].failed, by_server[name].retried) == (2, 0, 0)
    for name in ("refuses", "hangs up", "hangs"):
        assert (by_server[name].delivered, by_server[name].failed, by_server[name].retried) == (0, 2, 4)
        assert by_server[name].dropped == 0
    # each failing webhook logged its first failure and the summary; the token in the path never
    assert "HTTP 500" in caplog.text and "timed out" in caplog.text
    assert "0 alerts posted, 2 failed, 0 dropped" in caplog.text
    assert "secret-token" not in caplog.text


def test_a_client_error_is_not_retried(servers):
    refuses_for_good = HttpServer(404)
    try:
        delivery = AlertDelivery([Webhook.parse(refuses_for_good.url)], PATIENT)
        delivery.offer(alert("run-a"))
        delivery.close()
        assert len(refuses_for_good.bodies) == 1
        assert delivery.stats()[Webhook.parse(refuses_for_good.url).name].failed == 1
    finally:
        refuses_for_good.close()


def test_a_full_queue_drops_instead_of_blocking_and_a_stop_drops_what_is_queued(servers, caplog):
    hangs = servers["hangs"]
    config = DeliveryConfig(timeout_s=300.0, retries=0, max_queue=1, close_timeout_s=0.0)
    delivery = AlertDelivery([Webhook.parse(hangs.url)], config)
    with caplog.at_level(logging.WARNING, logger="trainwire.alerts"):
        delivery.offer(alert("run-a", rule="nonfinite"))
        assert hangs.accepted.acquire(timeout=60)  # the thread is now waiting on the server's answer
        delivery.offer(alert("run-a", rule="lr_jump"))  # queued
        delivery.offer(alert("run-a", rule="grad_norm_exploding"))  # the queue is full: dropped, not waited for
        delivery.close()  # does not wait for the hanging post: the queued alert is dropped too
    stats = delivery.stats()[Webhook.parse(hangs.url).name]
    assert (stats.delivered, stats.failed, stats.dropped) == (0, 0, 2)
    assert "alert queue full (1), dropped [critical] grad_norm_exploding in run run-a" in caplog.text
    assert "the worker stopped with 1 alerts not posted" in caplog.text


@pytest.mark.parametrize("spec", ["hooks.slack.com/T0/B0", "ftp://host/x", "slack+", "slack+mailto:a@b"])
def test_a_webhook_that_is_not_an_http_url_is_refused_by_name(spec):
    with pytest.raises(ConfigError, match=r"alert_webhook: .* is not an http"):
        Webhook.parse(spec)
    result = CliRunner().invoke(main, ["worker", "--alert-webhook", spec])
    assert result.exit_code == 2
    assert "--alert-webhook / TRAINWIRE_ALERT_WEBHOOKS" in result.output and "Traceback" not in result.output


def nan_losses(settings: Settings, runs: list[str]) -> None:
    """Train steps of ``runs``, the last of each with a NaN loss (the nonfinite rule fires)."""
    emitter = Emitter(settings)
    for run in runs:
        for step in range(3):
            emitter.emit(Event(run, TrainStep(step=step, loss=math.nan if step == 2 else 1.0, learning_rate=1e-5)))
    emitter.close()


def posted_alerts(bodies: list[bytes]) -> list[tuple[str, str]]:
    """(run, text) of Slack bodies and (run, rule) of event bodies, sorted."""
    out = []
    for body in bodies:
        obj = json.loads(body)
        out.append(("slack", obj["text"]) if "text" in obj else (obj["run_id"], obj["payload"]["rule"]))
    return sorted(out)


NAN_MESSAGE = "Step 2 logged non-finite numbers (loss=NaN); training has likely diverged."
EXPECTED = [
    ("run-1", "nonfinite"),
    ("run-2", "nonfinite"),
    *(("slack", f"[critical] nonfinite in run {run}, step 2: {NAN_MESSAGE}") for run in ("run-1", "run-2")),
]


def run_worker(data_dir: str, *args: str) -> None:
    """``trainwire worker --no-store --until-idle 2 ARGS`` on ``data_dir``, in this process; it exits 0."""
    result = CliRunner().invoke(
        main, ["--data-dir", data_dir, "worker", "--no-store", "--until-idle", "2", *args], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output


def test_embedded_worker_posts_the_alerts_it_raises(embedded_settings, servers, monkeypatch):
    accepts, refuses = servers["accepts"], servers["refuses"]
    nan_losses(embedded_settings, ["run-1", "run-2"])
    monkeypatch.setenv("TRAINWIRE_ALERT_WEBHOOKS", f"{accepts.url} slack+{accepts.url} {refuses.url}")
    monkeypatch.setenv("TRAINWIRE_ALERT_RETRIES", "1")
    monkeypatch.setenv("TRAINWIRE_ALERT_BACKOFF", "0.01")
    run_worker(str(embedded_settings.data_dir))  # a webhook that refuses everything never stopped the worker
    assert posted_alerts(accepts.wait_for(4)) == EXPECTED
    assert len(refuses.bodies) == 2 * 2  # each alert tried once and retried once, then given up

    # a worker of another group reads the alerts topic from the start and derives the same alerts
    # again: none is posted twice from this data directory
    run_worker(str(embedded_settings.data_dir), "--group", "another")
    assert len(accepts.bodies) == 4 and len(refuses.bodies) == 4


def test_an_alert_a_killed_worker_did_not_post_is_posted_by_the_next_worker(embedded_settings):
    """At least once across restarts: the worker is SIGKILLed while its webhook has not answered."""
    webhook = HttpServer(200, unanswered=1)
    data_dir = str(embedded_settings.data_dir)
    try:
        nan_losses(embedded_settings, ["run-1"])
        command = ["--data-dir", data_dir, "worker", "--no-store", "--alert-webhook", webhook.url]
        worker = subprocess.Popen(
            [sys.executable, "-m", "trainwire", *command],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            webhook.wait_for(1)  # the alert is being posted; the webhook holds it without an answer
        finally:
            worker.kill()
            worker.wait()
        # the next worker (of another group: it also reads the alerts topic from the start and
        # derives the alert again) posts the alert once
        run_worker(data_dir, "--group", "next", "--alert-webhook", webhook.url)
        assert posted_alerts(webhook.bodies) == [("run-1", "nonfinite")] * 2
        assert (
            (embedded_settings.data_dir / "state" / "alerts_posted")
            .read_text()
            .startswith(decode(webhook.bodies[0]).event_id + "@")
        )  # settled: a later worker does not post it again
    finally:
        webhook.close()


def test_an_outbox_line_cut_short_is_named_and_the_other_alerts_are_posted(servers, tmp_path, caplog):
    """A worker killed while appending to the outbox leaves a line cut short (written here as such)."""
    accepts = servers["accepts"]
    webhook = Webhook.parse(accepts.url)
    pending = alert("run-a")
    outbox_file = tmp_path / "state" / "alerts_outbox"
    outbox_file.parent.mkdir()
    outbox_file.write_bytes(encode(pending) + b"\n" + encode(alert("run-b"))[:40])
    with caplog.at_level(logging.WARNING, logger="trainwire.alerts"):
        outbox = AlertOutbox(tmp_path, [webhook])
        AlertWebhookSink(AlertDelivery([webhook], PATIENT, outbox.settle), outbox).close()
    assert [decode(body) for body in accepts.bodies] == [pending]
    assert f"{outbox_file}:2" in caplog.text and "read from the bus again" in caplog.text
    assert outbox.pending() == [] and AlertOutbox(tmp_path, [webhook]).pending() == []


def test_an_alert_still_unposted_when_the_worker_stops_is_posted_by_the_next_one(tmp_path, caplog):
    webhook_server = HttpServer(200, unanswered=1)  # holds the first post until it is closed
    webhook = Webhook.parse(webhook_server.url)
    stops_at_once = DeliveryConfig(timeout_s=300.0, close_timeout_s=0.0)
    try:
        outbox = AlertOutbox(tmp_path, [webhook])
        sink = AlertWebhookSink(AlertDelivery([webhook], stops_at_once, outbox.settle), outbox)
        raised = alert("run-a")
        sink.add(raised, None)
        sink.flush()
        webhook_server.wait_for(1)
        with caplog.at_level(logging.WARNING, logger="trainwire.alerts"):
            sink.close()  # the post has no answer yet
        assert f"1 alerts not posted yet are kept in {outbox.path}" in caplog.text

        outbox = AlertOutbox(tmp_path, [webhook])
        AlertWebhookSink(AlertDelivery([webhook], PATIENT, outbox.settle), outbox).close()
        assert [decode(body) for body in webhook_server.bodies] == [raised] * 2
        assert AlertOutbox(tmp_path, [webhook]).pending() == []
    finally:
        webhook_server.close()


def test_faust_worker_posts_the_alerts_it_raises(kafka_settings, servers, tmp_path: Path):
    accepts = servers["accepts"]
    nan_losses(kafka_settings, ["run-1", "run-2"])
    hooks = ["--alert-webhook", accepts.url, "--alert-webhook", f"slack+{accepts.url}"]
    worker = start_worker(kafka_settings, tmp_path / "w", "alerts", "--no-store", *hooks)
    try:
        bodies = accepts.wait_for(4, timeout=300)
    finally:
        stop(worker)
    assert posted_alerts(bodies) == EXPECTED


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"timeout_s": 0.0}, "alert_delivery.timeout_s"),
        ({"backoff_s": -1.0}, "alert_delivery.backoff_s"),
        ({"retries": -1}, "alert_delivery"),
        ({"max_queue": 0}, "alert_delivery"),
    ],
)
def test_a_bad_delivery_setting_is_named(values, field):
    with pytest.raises(ConfigError, match=f"^{field}: "):
        DeliveryConfig(**values)


@pytest.mark.parametrize(
    ("option", "value"),
    [("--alert-timeout", "0"), ("--alert-retries", "-1"), ("--alert-backoff", "-1"), ("--alert-queue", "0")],
)
def test_a_bad_delivery_option_is_named(option, value):
    result = CliRunner().invoke(main, ["worker", option, value])
    assert result.exit_code == 2
    assert f"Invalid value for '{option}'" in result.output and "is not in the range" in result.output
    assert "Traceback" not in result.output
