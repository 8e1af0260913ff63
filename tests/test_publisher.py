"""The worker's publisher: messages the bus refuses for good are kept aside, the others must go through.

A message refused for good (too large for the bus) is logged, counted and kept with the reason in
``{data_dir}/rejected/published.jsonl``, and the flush goes on: raising would make the worker
replay the same records, and be refused again, forever. A message the bus may take later makes
the flush raise, so that nothing is committed.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
from pathlib import Path

import orjson
import pytest
from aiokafka.admin import NewTopic
from helpers import run_pipeline_until

from trainwire.bus import make_transport, open_consumer
from trainwire.bus.admin import admin_client, create_topics
from trainwire.bus.base import Message, Record, Refused
from trainwire.bus.local import LocalTransport, log_dir
from trainwire.bus.publisher import Publisher, event_message
from trainwire.config import Settings
from trainwire.errors import BusError
from trainwire.events import Alert, Event, Interaction, encode
from trainwire.runtime.pipeline import Pipeline, WorkerCore
from trainwire.sinks.dead_letter import DeadLetters
from trainwire.topics import DEAD_LETTER, event_topic, event_topics, topic_name

PREFIX = "trainwire"
ALERTS = f"{PREFIX}.alerts"
DEAD = topic_name(PREFIX, DEAD_LETTER)


class SizeLimitedTransport(LocalTransport):
    """The embedded log with a size limit, as Kafka has: larger messages are refused for good.

    A stand-in on purpose: the real embedded log takes any size, so a refusal cannot be produced
    on it; the real refusal by a Kafka broker is tested below (test_a_dead_letter_over_...).
    """

    limit = 10_000

    async def send_batch(self, messages: list[Message]) -> list[Message | Refused]:
        failed = await super().send_batch([m for m in messages if len(m.value) <= self.limit])
        return [Refused(m, "too large") for m in messages if len(m.value) > self.limit] + failed


def break_topic(settings: Settings, topic: str) -> Path:
    """A real fault of the embedded log, one that passes: the topic's log file cannot be opened."""
    path = log_dir(settings.data_dir) / f"{topic}.log"
    path.mkdir(parents=True)  # a directory where the log file should be: open() fails with an OSError
    return path


def read_topic(settings: Settings, topic: str, expected: int, timeout: float = 30.0) -> list[Record]:
    """The records on ``topic``, read as a fresh consumer group: ``expected`` of them, then any more there are."""

    async def main() -> list[Record]:
        consumer = open_consumer(settings, [topic], "test-reader")
        await consumer.start()
        try:
            out: list[Record] = []
            deadline = time.monotonic() + timeout
            while len(out) < expected and time.monotonic() < deadline:
                out.extend(await consumer.getmany(timeout_ms=500))
            out.extend(await consumer.getmany(timeout_ms=500))
            return out
        finally:
            await consumer.stop()

    return asyncio.run(main())


def dead_letter(value: bytes, reason: str = "invalid event: not JSON", offset: int = 7) -> Message:
    headers = (
        ("reason", reason.encode()),
        ("source_topic", f"{PREFIX}.interactions".encode()),
        ("source_partition", b"0"),
        ("source_offset", str(offset).encode()),
    )
    return Message(DEAD, b"run-a", value, headers)


def rejected_lines(settings: Settings) -> list[dict]:
    path = settings.data_dir / "rejected" / "published.jsonl"
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def test_refused_messages_are_kept_with_the_reason_and_the_flush_goes_on(
    embedded_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    small = event_message(PREFIX, Event("run-a", Alert(rule="r", severity="warning", message="small")))
    big_alert = event_message(PREFIX, Event("run-a", Alert(rule="r", severity="warning", message="x" * 20_000)))
    big_letter = dead_letter(b"\xff\xfe not json " + os.urandom(20_000), offset=7)
    small_letter = dead_letter(b"{broken", offset=8)

    async def main() -> Publisher:
        publisher = Publisher(SizeLimitedTransport(embedded_settings.data_dir), embedded_settings.data_dir)
        for m in (small, big_alert, small_letter, big_letter):
            publisher.add(m)
        await publisher.flush()  # does not raise
        await publisher.flush()  # nothing left to send
        await publisher.close()
        return publisher

    with caplog.at_level(logging.WARNING, "trainwire.publisher"):
        publisher = asyncio.run(main())
    assert (publisher.published, publisher.rejected) == (2, 2)
    assert [r.value for r in read_topic(embedded_settings, ALERTS, 1)] == [small.value]
    assert [r.value for r in read_topic(embedded_settings, DEAD, 1)] == [small_letter.value]

    alert_line, letter_line = rejected_lines(embedded_settings)
    assert (alert_line["reason"], alert_line["topic"]) == ("too large", ALERTS)
    assert alert_line["size"] == len(big_alert.value)
    assert orjson.dumps(alert_line["value"]) == big_alert.value  # an event: as JSON, byte for byte
    assert (alert_line["key"], alert_line["headers"]) == ("run-a", [])
    assert (letter_line["reason"], letter_line["topic"]) == ("too large", DEAD)
    assert letter_line["size"] == len(big_letter.value)
    assert "value" not in letter_line
    assert base64.b64decode(letter_line["value_base64"]) == big_letter.value  # not JSON: base64, byte for byte
    assert letter_line["key"] == "run-a"
    assert letter_line["headers"] == [{"name": n, "value": v.decode()} for n, v in big_letter.headers]
    assert letter_line["rejected_at"].endswith("Z")

    warnings = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(warnings) == 2
    for part in (DEAD, "key run-a", f"dead letter from {PREFIX}.interactions[0]@7", f"{len(big_letter.value)} bytes"):
        assert part in warnings[1]
    assert "too large" in warnings[1] and "published.jsonl" in warnings[1]


def test_a_message_the_bus_may_take_later_makes_the_flush_raise_until_it_goes_through(
    embedded_settings: Settings,
) -> None:
    message = event_message(PREFIX, Event("run-a", Alert(rule="r", severity="warning", message="m")))
    fault = break_topic(embedded_settings, ALERTS)

    async def main() -> Publisher:
        # The real embedded log, with a real fault: the alerts log cannot be opened.
        publisher = Publisher(LocalTransport(embedded_settings.data_dir), embedded_settings.data_dir)
        publisher.add(message)
        with pytest.raises(BusError, match=r"1 of 1 messages could not be published \(the bus may take them later\)$"):
            await publisher.flush()
        assert (publisher.published, publisher.rejected) == (0, 0)
        os.rmdir(fault)  # the fault passes: the same flush goes through
        await publisher.flush()
        await publisher.close()
        return publisher

    publisher = asyncio.run(main())
    assert (publisher.published, publisher.rejected) == (1, 0)
    assert [r.value for r in read_topic(embedded_settings, ALERTS, 1)] == [message.value]
    assert not (embedded_settings.data_dir / "rejected").exists()


def test_a_flush_that_raises_keeps_nothing_as_rejected_yet(embedded_settings: Settings) -> None:
    # A batch with both: the flush raises (the records are processed again), and the refused message
    # is kept once, by the flush that goes through.
    ok = event_message(PREFIX, Event("run-a", Alert(rule="r", severity="warning", message="ok")))
    big = dead_letter(os.urandom(20_000))
    fault = break_topic(embedded_settings, ALERTS)

    async def main() -> Publisher:
        publisher = Publisher(SizeLimitedTransport(embedded_settings.data_dir), embedded_settings.data_dir)
        publisher.add(ok)
        publisher.add(big)
        with pytest.raises(BusError, match=r"1 of 2 messages could not be published .*1 refused for good: too large"):
            await publisher.flush()
        assert rejected_lines(embedded_settings) == []
        os.rmdir(fault)
        await publisher.flush()
        await publisher.close()
        return publisher

    publisher = asyncio.run(main())
    assert (publisher.published, publisher.rejected) == (1, 1)
    (line,) = rejected_lines(embedded_settings)
    assert base64.b64decode(line["value_base64"]) == big.value


def test_without_a_data_dir_refused_messages_are_logged_and_counted(
    embedded_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> Publisher:
        publisher = Publisher(SizeLimitedTransport(embedded_settings.data_dir))
        publisher.add(dead_letter(b"x" * 20_000))
        await publisher.flush()
        await publisher.close()
        return publisher

    with caplog.at_level(logging.WARNING, "trainwire.publisher"):
        publisher = asyncio.run(main())
    assert (publisher.published, publisher.rejected) == (0, 1)
    assert not (embedded_settings.data_dir / "rejected").exists()
    (warning,) = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert "too large" in warning and "not kept" in warning


@pytest.mark.kafka
def test_a_dead_letter_over_the_topics_max_message_bytes_is_rejected_and_the_worker_goes_on(
    kafka_settings: Settings,
) -> None:
    """The liveness bug, on a real broker: a worker whose dead letter the broker refuses for good."""
    prefix = kafka_settings.topic_prefix
    dead_topic = topic_name(prefix, DEAD_LETTER)
    interactions = event_topic(prefix, "interaction")

    async def setup() -> None:
        async with admin_client(kafka_settings) as admin:
            # The dead-letter topic takes less than the event topics do (1 MiB by default).
            limit = {"max.message.bytes": "4096"}
            await admin.create_topics([NewTopic(dead_topic, 1, 1, topic_configs=limit)])
        await create_topics(kafka_settings, partitions=1)  # the others, with the broker's defaults
        transport = make_transport(kafka_settings)
        await transport.start()
        try:
            undelivered = await transport.send_batch(records)
        finally:
            await transport.stop()
        assert undelivered == []

    before = Event("run-a", Interaction(prompt="before", completion="c"))
    after = Event("run-a", Interaction(prompt="after", completion="c"))
    # Random bytes, so that lz4 cannot shrink the dead letter under the topic's limit.
    huge_garbage = b"\xff" + os.urandom(8_000)
    records = [
        Message(interactions, b"run-a", encode(before)),
        Message(interactions, b"run-a", b"{not an event"),  # a dead letter the topic takes
        Message(interactions, b"run-a", huge_garbage),  # one it refuses for good
        Message(interactions, b"run-a", encode(after)),
    ]
    asyncio.run(setup())
    group = "worker"

    async def committed() -> int:
        async with admin_client(kafka_settings) as admin:
            offsets = await admin.list_consumer_group_offsets(group)
        return next(o.offset for tp, o in offsets.items() if tp.topic == interactions)

    publisher = Publisher(make_transport(kafka_settings), kafka_settings.data_dir)
    dead_letters = DeadLetters(publisher, prefix)
    core = WorkerCore([], publisher, dead_letters, prefix)
    pipeline = Pipeline(open_consumer(kafka_settings, event_topics(prefix), group), core)
    run_pipeline_until(pipeline, lambda: pipeline.records_in >= len(records), timeout=60)  # raised before the fix

    assert pipeline.records_in == len(records)
    assert (dead_letters.count, publisher.published, publisher.rejected) == (2, 1, 1)
    assert asyncio.run(committed()) == len(records)  # the worker went on and committed past them all
    (letter,) = read_topic(kafka_settings, dead_topic, 1)
    assert letter.value == b"{not an event"
    (line,) = rejected_lines(kafka_settings)
    assert "the broker refused it: [Error 10] MessageSizeTooLargeError" in line["reason"]
    assert (line["topic"], line["size"], line["key"]) == (dead_topic, len(huge_garbage), "run-a")
    assert base64.b64decode(line["value_base64"]) == huge_garbage
    headers = {h["name"]: h["value"] for h in line["headers"]}
    assert headers["reason"].startswith("invalid event")
    assert (headers["source_topic"], headers["source_partition"], headers["source_offset"]) == (interactions, "0", "2")
