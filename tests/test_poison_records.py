"""One record a worker cannot process is a dead letter with its reason; the rest is stored and committed.

The bad records are written to the bus as raw bytes, as a foreign or older producer could: trainwire's
own producers refuse these values (see test_producer_api.py). Each runtime reads 99 good events
with every bad shape among them, and must store the 99, dead-letter each bad one naming its field,
and commit past them all (a restarted worker would otherwise read them again).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from helpers import read_events, run_pipeline_until
from test_faust_worker import PARTITIONS, start_worker, stop, stored, wait_until_caught_up

from trainwire.bus import open_consumer
from trainwire.bus.admin import ensure_topics
from trainwire.bus.base import Message, Record
from trainwire.bus.local import LocalTransport
from trainwire.config import Settings
from trainwire.events import Event, Interaction, encode
from trainwire.runtime import WorkerOptions, build_core, build_pipeline, build_stages
from trainwire.runtime.pipeline import StageSet
from trainwire.runtime.stages import Stage
from trainwire.sinks.clickhouse import ClickHouseSink
from trainwire.store.clickhouse import open_store
from trainwire.topics import DEAD_LETTER, event_topic, topic_name

RUN = "poison-run"

POISON: dict[str, tuple[str, str]] = {
    # shape: (field, its value as raw JSON text)
    "ts in year 1 with an offset": ("ts", '"0001-01-01T00:30:00+01:00"'),
    "ts in year 9999 with an offset": ("ts", '"9999-12-31T23:30:00-01:00"'),
    "ts before DateTime64's range": ("ts", '"1899-12-31T23:59:59Z"'),
    "step of 2**63": ("payload.step", str(2**63)),
    "token count of 2**64 - 1": ("payload.completion_tokens", str(2**64 - 1)),
    "negative process": ("source.process", "-1"),
    "process of 2**32": ("source.process", str(2**32)),
    "metadata 300 levels deep": ("payload.metadata", '{"a":' * 299 + "{}" + "}" * 299),
    "chat prompt 300 levels deep": ("payload.prompt", '[{"role": "user", "content": ' + "[" * 298 + "]" * 298 + "}]"),
}


def good_events(count: int = 99) -> list[Event]:
    return [
        Event(RUN, Interaction(prompt=f"question {i}", completion=f"answer {i}", reward=1.0, step=i // 10))
        for i in range(count)
    ]


def poisoned(field: str, raw: str) -> bytes:
    """A good interaction's bytes with ``field`` (``a.b``) set to the raw JSON text ``raw``."""
    obj = orjson.loads(encode(Event(RUN, Interaction(prompt="poison", completion="x", reward=1.0, step=3))))
    *parents, name = field.split(".")
    target = obj
    for parent in parents:
        target = target[parent]
    target[name] = "@RAW@"
    return orjson.dumps(obj).replace(b'"@RAW@"', raw.encode())


POISONED = {shape: poisoned(field, raw) for shape, (field, raw) in POISON.items()}
"""Each shape's record, as written to the bus."""


def traffic() -> list[bytes]:
    """99 good events with each poison shape among them, in order."""
    values = [encode(e) for e in good_events()]
    for i, value in enumerate(POISONED.values()):
        values.insert(5 + 10 * i, value)
    return values


def read_dead_letters(settings: Settings, expected: int) -> list[Record]:
    async def main() -> list[Record]:
        consumer = open_consumer(settings, [topic_name(settings.topic_prefix, DEAD_LETTER)], "dead-letter-reader")
        await consumer.start()
        letters: list[Record] = []
        deadline = time.monotonic() + 30
        try:
            while len(letters) < expected and time.monotonic() < deadline:
                letters.extend(await consumer.getmany(timeout_ms=500))
            letters.extend(await consumer.getmany(timeout_ms=500))  # and nothing more
        finally:
            await consumer.stop()
        return letters

    return asyncio.run(main())


def assert_each_poison_dead_lettered(letters: list[Record]) -> None:
    reasons = {letter.value: letter.header("reason").decode() for letter in letters}
    assert len(letters) == len(POISON)
    for shape, (field, _) in POISON.items():
        reason = reasons[POISONED[shape]]
        assert reason.startswith("invalid event:"), (shape, reason)
        assert f" {field}: " in reason, (shape, reason)


def test_embedded_worker_stores_the_good_and_dead_letters_each_bad_record(embedded_settings: Settings) -> None:
    async def produce() -> None:
        transport = LocalTransport(embedded_settings.data_dir)
        await transport.start()
        topic = event_topic(embedded_settings.topic_prefix, "interaction")
        await transport.send_batch([Message(topic, RUN.encode(), value) for value in traffic()])
        await transport.stop()

    asyncio.run(produce())
    dataset = embedded_settings.data_dir / "out" / "sft.jsonl"
    total = 99 + len(POISON)
    with open_store(embedded_settings) as store:
        store.migrate()
        pipeline = build_pipeline(embedded_settings, store, WorkerOptions(dataset_output=dataset))
        run_pipeline_until(pipeline, lambda: pipeline.records_in >= total)
        assert store.query_rows("SELECT count() AS n FROM interactions FINAL") == [{"n": 99}]
        # Committed past the bad records: a worker of the same group does not read them again (it
        # reads only the stats the first one published).
        again = build_pipeline(embedded_settings, store, WorkerOptions(dataset_output=dataset))
        asyncio.run(again.run(idle_exit_s=0.5))
        assert again.core.dead_letters.count == 0
    assert len(dataset.read_text().splitlines()) == 99  # the dataset stage took every good one
    assert_each_poison_dead_lettered(read_dead_letters(embedded_settings, len(POISON)))


def test_faust_worker_stores_the_good_and_dead_letters_each_bad_record(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    asyncio.run(ensure_topics(kafka_settings, PARTITIONS))

    async def produce() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_settings.kafka)
        await producer.start()
        topic = event_topic(kafka_settings.topic_prefix, "interaction")
        values = traffic()
        values.insert(50, None)  # a tombstone: a record with no value, as compaction tools write
        for value in values:  # one key: one partition, in this order
            await producer.send(topic, value, key=RUN.encode())
        await producer.flush()
        await producer.stop()

    asyncio.run(produce())
    data_dir = tmp_path / "worker"
    worker = start_worker(kafka_settings, data_dir, "poison", "--dataset", str(tmp_path / "out" / "sft.jsonl"))
    try:
        wait_until_caught_up(kafka_settings, "poison", [worker])  # committed past the bad records
    finally:
        stop(worker)
    assert stored(data_dir, "SELECT count() AS n FROM interactions FINAL") == [{"n": 99}]
    written = [line for path in (tmp_path / "out").glob("sft.p*.jsonl") for line in path.read_text().splitlines()]
    assert len(written) == 99
    letters = read_dead_letters(kafka_settings, len(POISON) + 1)
    (tombstone,) = [letter for letter in letters if letter.value == b""]
    assert tombstone.header("reason").decode().startswith("invalid event:")
    assert_each_poison_dead_lettered([letter for letter in letters if letter is not tombstone])


class FailsOnOnePrompt(Stage):
    """A stage that raises on the interaction with ``prompt``: a stand-in for a stage's failure.

    No real input makes trainwire's own stages raise any more: the last one found, rewards near
    the float maximum overflowing the monitor's group stats, is fixed (and is the traffic below,
    which must now give finite group stats). So this stage, beside the real ones, fails on one
    record, as a stage with a bug would; nothing else about the worker is replaced.
    """

    name = "fails-on-one-prompt"

    def __init__(self, prompt: str):
        self.prompt = prompt

    def process(self, event: Event) -> list[Event]:
        if isinstance(event.payload, Interaction) and event.payload.prompt == self.prompt:
            raise ValueError(f"cannot take prompt {self.prompt!r}")
        return []

    def snapshot(self) -> dict[str, Any]:
        return {}

    def restore(self, snapshot: dict[str, Any]) -> None:
        pass


def test_a_stage_failing_on_a_record_dead_letters_it_and_the_rest_goes_on(embedded_settings: Settings) -> None:
    # Rewards near the float maximum at step 0: its group stats are finite, not a failure.
    events = [Event(RUN, Interaction(prompt="p", reward=1.7e308, step=0, group_id="g")) for _ in range(3)]
    events += [Event(RUN, Interaction(prompt=f"q{s}", reward=1.0, step=s, group_id="g")) for s in range(1, 6)]
    topic = event_topic(embedded_settings.topic_prefix, "interaction")
    records = [Record(topic, 0, i, RUN.encode(), encode(e), 0) for i, e in enumerate(events)]
    core = build_core(embedded_settings, None, WorkerOptions())
    real = build_stages(WorkerOptions(), embedded_settings.data_dir / "out" / "sft.jsonl")
    stages = StageSet([*real, FailsOnOnePrompt("q3")])
    core.handle_batch(records, stages)

    async def checkpoint() -> None:
        await core.flush([stages])
        await core.close()

    asyncio.run(checkpoint())
    assert core.records_in == len(events)
    (letter,) = read_dead_letters(embedded_settings, 1)
    assert letter.value == records[5].value  # prompt q3
    assert letter.header("reason") == b"not processed: stage fails-on-one-prompt: ValueError: cannot take prompt 'q3'"
    # The other stages took every record, the failed one too, and went on: each closed step has its
    # group stats (step 5 is still open), step 0's as finite as its rewards.
    group_stats = {e.payload.step: e.payload for e in read_events(embedded_settings) if e.event_type == "group_stats"}
    assert sorted(group_stats) == [0, 1, 2, 3, 4]
    assert (group_stats[0].reward_mean, group_stats[0].reward_std, group_stats[0].mean_group_std) == (1.7e308, 0.0, 0.0)


def test_an_event_clickhouse_cannot_hold_is_a_dead_letter_and_the_batch_is_stored(embedded_settings: Settings) -> None:
    # Events made in Python reach the sink without decoding (no range check on the way): a step
    # beyond Int64 fails the Arrow conversion of its batch, for real.
    events = good_events()
    events.insert(40, Event(RUN, Interaction(prompt="too far", step=2**63)))
    topic = event_topic(embedded_settings.topic_prefix, "interaction")
    with open_store(embedded_settings) as store:
        store.migrate()
        core = build_core(embedded_settings, store, WorkerOptions(monitor=False))
        sink = next(s for s in core.sinks if isinstance(s, ClickHouseSink))  # beside the alert console
        for offset, event in enumerate(events):
            sink.add(event, Record(topic, 0, offset, RUN.encode(), encode(event), 0))

        async def checkpoint() -> None:
            await core.flush([])
            await core.close()

        asyncio.run(checkpoint())
        assert store.query_rows("SELECT count() AS n FROM interactions FINAL") == [{"n": 99}]
    (letter,) = read_dead_letters(embedded_settings, 1)
    assert letter.value == encode(events[40])
    assert letter.header("reason").decode().startswith("not stored: column step: cannot be stored in ClickHouse:")
