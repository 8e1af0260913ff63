"""Publishing throughput of 1 KB events to a real Kafka broker: trainwire vs raw aiokafka (target >= 80 %).

Raw aiokafka sends the same events pre-serialized, with the same producer settings (linger,
lz4, batch size, acks=all), in the same run. trainwire's time runs from the first ``emit()``
to ``flush()`` returning, so it includes serialization and the spool-free hand-off.

    python bench/bench_publish.py [--events 200000] [--kafka HOST:PORT]
    (without --kafka it starts infra/kafka/local_broker.py on a free port)
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import sys
import tempfile
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaProducer
from table import print_table

from trainwire.bus import Emitter
from trainwire.bus.admin import create_topics
from trainwire.config import Settings
from trainwire.events import Event, Interaction, encode
from trainwire.topics import event_topic

ROOT = Path(__file__).resolve().parent.parent


def local_broker_module():
    spec = importlib.util.spec_from_file_location("local_broker", ROOT / "infra" / "kafka" / "local_broker.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["local_broker"] = module
    spec.loader.exec_module(module)
    return module


async def raw_aiokafka(bootstrap: str, topic: str, payloads: list[tuple[bytes, bytes]]) -> float:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=10,
        compression_type="lz4",
        max_batch_size=1 << 20,
        max_request_size=1 << 20,
        acks="all",
        enable_idempotence=False,
    )
    await producer.start()
    t0 = time.perf_counter()
    futures = [await producer.send(topic, value, key=key) for key, value in payloads]
    await asyncio.gather(*futures)
    elapsed = time.perf_counter() - t0
    await producer.stop()
    return elapsed


def trainwire_emit(settings: Settings, events: list[Event]) -> float:
    emitter = Emitter(settings, max_queue=len(events) + 1)
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
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    broker = None
    if args.kafka is None:
        broker = local_broker_module().LocalBroker().start()
        args.kafka = broker.bootstrap
    try:
        completion = "x" * 800
        with tempfile.TemporaryDirectory() as tmp:
            results: dict[str, list[float]] = {"raw aiokafka (pre-serialized)": [], "trainwire Emitter": []}
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
                results["raw aiokafka (pre-serialized)"].append(asyncio.run(raw_aiokafka(args.kafka, topic, payloads)))
                results["trainwire Emitter"].append(trainwire_emit(settings, events))
            size = len(payloads[0][1])
            raw_best = min(results["raw aiokafka (pre-serialized)"])
            rows = []
            for name, times in results.items():
                best = min(times)
                rows.append((name, args.events / best, args.events * size / best / 1e6, f"{raw_best / best:.0%}"))
            print_table(
                f"Publishing {args.events:,} events of {size} bytes to Kafka (best of {args.rounds})",
                ["publisher", "events/s", "MB/s", "vs raw aiokafka"],
                rows,
            )
    finally:
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    main()
