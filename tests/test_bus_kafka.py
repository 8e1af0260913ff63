"""The Kafka path on a real broker (infra/kafka/local_broker.py): emit -> Kafka -> group -> ClickHouse."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
from pathlib import Path

import orjson
import pytest
from conftest import local_broker
from helpers import read_events, run_pipeline_until

from trainwire.bus import Emitter
from trainwire.bus.admin import create_topics
from trainwire.bus.kafka import KafkaTransport
from trainwire.config import Settings
from trainwire.events import Event, Interaction, JudgeScore, TrainStep, encode
from trainwire.runtime import WorkerOptions, build_pipeline
from trainwire.store.clickhouse import open_store
from trainwire.topics import all_topics


def mixed_events(n: int, run_ids: tuple[str, ...] = ("run-1", "run-2", "run-3")) -> list[Event]:
    events: list[Event] = []
    for i in range(n):
        run = run_ids[i % len(run_ids)]
        if i % 10 == 9:
            events.append(Event(run, TrainStep(step=i, loss=1.0 / (i + 1), learning_rate=1e-5)))
        elif i % 10 == 8:
            events.append(
                Event(run, JudgeScore(interaction_id=f"i{i}", judge_model="j", template_version="v1", score=3.0))
            )
        else:
            events.append(Event(run, Interaction(prompt=f"q{i}", completion="x" * 200, reward=i % 3, step=i // 12)))
    return events


def stored_ids(store) -> set[str]:
    rows = store.query_rows(
        "SELECT event_id FROM interactions FINAL UNION ALL SELECT event_id FROM train_steps FINAL "
        "UNION ALL SELECT event_id FROM judge_scores FINAL"
    )
    return {r["event_id"] for r in rows}


def test_topics_create_is_idempotent(kafka_settings: Settings) -> None:
    first = asyncio.run(create_topics(kafka_settings, partitions=3))
    assert set(first) == set(all_topics(kafka_settings.topic_prefix))
    assert set(first.values()) == {"created"}
    again = asyncio.run(create_topics(kafka_settings, partitions=3))
    assert set(again.values()) == {"exists"}


def test_emit_kafka_consumer_group_clickhouse_exact_set(kafka_settings: Settings) -> None:
    asyncio.run(create_topics(kafka_settings, partitions=3))
    events = mixed_events(3000)
    with Emitter(kafka_settings) as emitter:
        for e in events:
            emitter.emit(e)
        assert emitter.flush(60)
        stats = emitter.stats()
    assert (stats.sent, stats.spooled, stats.failed) == (3000, 0, 0)
    with open_store(kafka_settings) as store:
        store.migrate()
        pipeline = build_pipeline(kafka_settings, store, WorkerOptions(group="ch-sink", monitor=False))
        run_pipeline_until(pipeline, lambda: pipeline.records_in >= 3000)
        assert stored_ids(store) == {e.event_id for e in events}
        # Redelivery (a new group reads everything again) cannot double-count with FINAL.
        again = build_pipeline(kafka_settings, store, WorkerOptions(group="ch-sink-replay", monitor=False))
        run_pipeline_until(again, lambda: again.records_in >= 3000)
        assert store.query_rows("SELECT count() AS n FROM interactions FINAL") == [
            {"n": sum(1 for e in events if e.event_type == "interaction")}
        ]


def test_runs_stay_ordered_within_a_partition(kafka_settings: Settings) -> None:
    asyncio.run(create_topics(kafka_settings, partitions=4))
    events = [Event(f"run-{i % 5}", Interaction(prompt="p", completion="c", step=i)) for i in range(500)]
    with Emitter(kafka_settings) as emitter:
        for e in events:
            emitter.emit(e)
    got = read_events(kafka_settings, expected=500)
    assert len(got) == 500
    for run in {e.run_id for e in events}:
        assert [e.payload.step for e in got if e.run_id == run] == [e.payload.step for e in events if e.run_id == run]


def test_runs_stay_ordered_with_many_batches_in_flight(kafka_settings: Settings) -> None:
    """Small emitter batches (several deliveries at once) and small record batches (several per partition)."""
    asyncio.run(create_topics(kafka_settings, partitions=4))
    events = [Event(f"run-{i % 5}", Interaction(prompt="p", completion="c" * 300, step=i)) for i in range(5000)]
    transport = KafkaTransport(kafka_settings, max_batch_bytes=4096)
    with Emitter(kafka_settings, transport=transport, batch_size=250) as emitter:
        for e in events:
            emitter.emit(e)
        assert emitter.flush(60)
        stats = emitter.stats()
    assert (stats.sent, stats.spooled, stats.failed) == (5000, 0, 0)
    got = read_events(kafka_settings, expected=5000)
    assert len(got) == 5000
    for run in {e.run_id for e in events}:
        assert [e.payload.step for e in got if e.run_id == run] == [e.payload.step for e in events if e.run_id == run]


def test_broker_unreachable_at_start_then_started(tmp_path: Path) -> None:
    port = local_broker.free_port()
    settings = Settings(kafka=f"127.0.0.1:{port}", data_dir=tmp_path / "data", topic_prefix="late")
    events = mixed_events(600)
    emitter = Emitter(settings, retry_backoff_s=(0.2, 1.0))
    for e in events[:300]:
        emitter.emit(e)
    assert emitter.flush(30)
    assert emitter.stats().spooled == 300 and emitter.stats().sent == 0
    with local_broker.LocalBroker(port=port):
        for e in events[300:]:
            emitter.emit(e)
        deadline = time.monotonic() + 90
        while emitter.stats().spool_pending and time.monotonic() < deadline:
            time.sleep(0.2)
        emitter.close()
        stats = emitter.stats()
        assert stats.spool_pending == 0 and stats.failed == 0
        assert stats.sent + stats.replayed == 600
        with open_store(settings) as store:
            store.migrate()
            pipeline = build_pipeline(settings, store, WorkerOptions(monitor=False))
            run_pipeline_until(pipeline, lambda: pipeline.records_in >= 600)
            assert stored_ids(store) == {e.event_id for e in events}
            total = store.query_rows(
                "SELECT (SELECT count() FROM interactions FINAL) + (SELECT count() FROM train_steps FINAL)"
                " + (SELECT count() FROM judge_scores FINAL) AS n"
            )
            assert total == [{"n": 600}]


@pytest.mark.parametrize(
    ("max_batch_bytes", "reason"),
    [
        # The default producer refuses the event itself: it is over max_request_size (1 MiB).
        (None, "over the producer's max_request_size of 1048576"),
        # A producer allowing 4 MiB sends it, in one record batch with its neighbours (same run, same
        # partition): the broker (message.max.bytes about 1 MiB) refuses the batch, which goes again
        # one record per batch, so that only the large event is refused.
        (4 << 20, "the broker refused it: [Error 10] MessageSizeTooLargeError"),
    ],
)
def test_an_event_too_large_for_kafka_is_rejected_and_the_next_ones_go_on(
    kafka_settings: Settings, max_batch_bytes: int | None, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    asyncio.run(create_topics(kafka_settings, partitions=1))
    before = Event("run-big", Interaction(prompt="before", completion="c"))
    # Random text, so that lz4 cannot shrink it under the broker's limit.
    big = Event("run-big", Interaction(prompt="big", completion=base64.b64encode(os.urandom(1_500_000)).decode()))
    after = Event("run-big", Interaction(prompt="after", completion="c"))
    transport = KafkaTransport(kafka_settings, max_batch_bytes=max_batch_bytes) if max_batch_bytes else None
    with caplog.at_level(logging.WARNING, "trainwire.emitter"), Emitter(kafka_settings, transport=transport) as emitter:
        for e in (before, big, after):
            emitter.emit(e)
        assert emitter.flush(30)  # refused for good, not retried: failed once, never spooled (below)
        stats = emitter.stats()
    assert (stats.sent, stats.failed, stats.spooled, stats.spool_pending) == (2, 1, 0, 0)
    assert [e.event_id for e in read_events(kafka_settings, expected=2)] == [before.event_id, after.event_id]
    (line,) = (kafka_settings.data_dir / "rejected" / "events.jsonl").read_bytes().splitlines()
    rejected = orjson.loads(line)
    assert reason in rejected["reason"]
    assert rejected["topic"] == f"{kafka_settings.topic_prefix}.interactions"
    assert rejected["size"] == len(encode(big))
    assert orjson.dumps(rejected["event"]) == encode(big)
    messages = [r.getMessage() for r in caplog.records]
    (warning,) = [m for m in messages if big.event_id in m]  # one warning names the event
    assert any("refused by the bus: 1" in m for m in messages)  # and the flush reports the count by reason
    for part in ("interaction", big.event_id, "run-big", f"{len(encode(big))} bytes", reason):
        assert part in warning
