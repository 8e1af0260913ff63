"""Publishing throughput of 1 KB events to a real Kafka broker: trainwire vs raw aiokafka (target >= 80 %).

Raw aiokafka sends the same events pre-serialized, with the same producer settings (lz4,
1 MiB batches, acks=all), in the same run, two ways: ``send()`` per message (linger 10 ms), and
its batch API (``create_batch``/``send_batch``, one record batch per partition for every 2,000
messages, partitioned by key with aiokafka's default partitioner), which is what trainwire's
Kafka transport uses. trainwire's time runs from the first ``emit()`` to ``flush()`` returning,
so it includes serialization and the hand-off to the emitter's thread.

    python bench/bench_publish.py [--events 200000] [--kafka HOST:PORT]
    (without --kafka it starts infra/kafka/local_broker.py on a free port)
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from broker import kafka_bootstrap
from table import print_table

from trainwire.bus import Emitter
from trainwire.bus.admin import create_topics
from trainwire.config import Settings
from trainwire.events import Event, Interaction, encode
from trainwire.topics import event_topic

BATCH_EVENTS = 2_000  # the Emitter's default batch, also the raw batch API's unit
SEND = "raw aiokafka send() (pre-serialized)"
SEND_BATCH = "raw aiokafka send_batch() (pre-serialized)"
EMITTER = "trainwire Emitter"


def raw_producer(bootstrap: str) -> AIOKafkaProducer:
    """A producer with the settings of trainwire's Kafka transport."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=10,
        compression_type="lz4",
        max_batch_size=1 << 20,
        max_request_size=1 << 20,
        acks="all",
        enable_idempotence=False,
    )


async def raw_send(bootstrap: str, topic: str, payloads: list[tuple[bytes, bytes]]) -> float:
    producer = raw_producer(bootstrap)
    await producer.start()
    t0 = time.perf_counter()
    futures = [await producer.send(topic, value, key=key) for key, value in payloads]
    await asyncio.gather(*futures)
    elapsed = time.perf_counter() - t0
    await producer.stop()
    return elapsed


async def raw_send_batch(
    bootstrap: str, topic: str, payloads: list[tuple[bytes, bytes]], chunk: int = BATCH_EVENTS
) -> float:
    producer = raw_producer(bootstrap)
    await producer.start()
    partitioner = DefaultPartitioner()
    t0 = time.perf_counter()
    partitions = sorted(await producer.partitions_for(topic))
    partition_of = {key: partitioner(key, partitions, partitions) for key in {key for key, _ in payloads}}
    futures = []
    for start in range(0, len(payloads), chunk):
        batches: dict[int, Any] = {}
        for key, value in payloads[start : start + chunk]:
            partition = partition_of[key]
            batch = batches.get(partition)
            if batch is not None and batch.append(timestamp=None, key=key, value=value, headers=[]) is not None:
                continue
            if batch is not None:  # full: send it and start another
                futures.append(await producer.send_batch(batch, topic, partition=partition))
            batch = batches[partition] = producer.create_batch()
            batch.append(timestamp=None, key=key, value=value, headers=[])
        for partition, batch in batches.items():
            batch.close()
            futures.append(await producer.send_batch(batch, topic, partition=partition))
    await asyncio.gather(*futures)
    elapsed = time.perf_counter() - t0
    await producer.stop()
    return elapsed


def trainwire_emit(settings: Settings, events: list[Event]) -> float:
    emitter = Emitter(settings, max_queue=len(events) + 1, batch_size=BATCH_EVENTS)
    t0 = time.perf_counter()
    for e in events:
        emitter.emit(e)
    emitter.flush(600)
    elapsed = time.perf_counter() - t0
    emitter.close()
    stats = emitter.stats()
    assert stats.sent == len(events), stats
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--kafka", default=None)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with kafka_bootstrap(args.kafka) as kafka:
        args.kafka = kafka
        completion = "x" * 800
        with tempfile.TemporaryDirectory() as tmp:
            results: dict[str, list[float]] = {SEND: [], SEND_BATCH: [], EMITTER: []}
            for round_ in range(args.rounds):
                prefix = f"bench{uuid.uuid4().hex[:6]}"
                settings = Settings(kafka=args.kafka, data_dir=Path(tmp) / str(round_), topic_prefix=prefix)
                asyncio.run(create_topics(settings, partitions=6))
                events = [
                    Event(
                        f"run-{i % 8}", Interaction(prompt="What is 2 + 2?", completion=completion, reward=1.0, step=i)
                    )
                    for i in range(args.events)
                ]
                payloads = [(e.key, encode(e)) for e in events]
                topic = event_topic(prefix, "interaction")
                names = list(results)
                for name in names[round_ % 3 :] + names[: round_ % 3]:  # no publisher always goes first
                    if name == EMITTER:
                        results[name].append(trainwire_emit(settings, events))
                    else:
                        raw = raw_send if name == SEND else raw_send_batch
                        results[name].append(asyncio.run(raw(args.kafka, topic, payloads)))
            size = len(payloads[0][1])
            send_best, batch_best = min(results[SEND]), min(results[SEND_BATCH])
            rows = []
            for name, times in results.items():
                best = min(times)
                rate, mb = args.events / best, args.events * size / best / 1e6
                rows.append((name, rate, mb, f"{send_best / best:.0%}", f"{batch_best / best:.0%}"))
            print_table(
                f"Publishing {args.events:,} events of {size} bytes to Kafka (best of {args.rounds})",
                ["publisher", "events/s", "MB/s", "vs raw send()", "vs raw send_batch()"],
                rows,
            )


if __name__ == "__main__":
    main()
