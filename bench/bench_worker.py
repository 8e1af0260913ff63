"""Worker throughput and end-to-end latency on a real Kafka broker: the faust runtime vs raw aiokafka.

Throughput: ``--events`` interaction events are published first; then, in the same run and on the
same topic, (1) a raw aiokafka consume loop that only decodes, (2) one faust worker doing stats and
the ClickHouse sink (chdb), (3) the embedded :class:`~trainwire.runtime.Pipeline` doing the same.
Worker rates run from the first event taken to the last checkpoint (ClickHouse flushed, offsets
committed), so group joins are left out. Target: >= 20,000 interaction events/s per worker.

Latency: a worker process (faust, then the embedded runtime, both on Kafka) runs while events
are emitted at ``--rate`` events/s for ``--seconds``; latency is ``inserted_at`` (the row's
``DEFAULT now64(6)``) minus the event's ``ts`` (set at ``emit()``). Target: p99 <= 2 s.

    python bench/bench_worker.py [--events 200000] [--rate 5000] [--seconds 10] [--kafka HOST:PORT]
    (without --kafka it starts infra/kafka/local_broker.py on a free port)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from broker import kafka_bootstrap
from table import print_table

from trainwire.bus import Emitter
from trainwire.bus.admin import ensure_topics
from trainwire.config import Settings
from trainwire.events import Event, Interaction, decode
from trainwire.runtime import WorkerOptions, build_pipeline
from trainwire.runtime.faust_app import run_faust_worker
from trainwire.store.clickhouse import open_store
from trainwire.topics import event_topic

ROOT = Path(__file__).resolve().parent.parent
PARTITIONS = 4


def make_events(n: int, runs: int = 8) -> list[Event]:
    """GRPO-like interactions: 8 runs, groups of 8, a step every 512 events per run."""
    return [
        Event(
            f"run-{i % runs}",
            Interaction(
                prompt=f"Solve problem {i // (8 * runs)}",
                completion="The answer is 4. " * 8,
                reward=float(i % 5) / 4,
                rewards={"format": 1.0, "correct": float(i % 2)},
                step=i // (512 * runs),
                group_id=f"g{i // (8 * runs)}",
            ),
        )
        for i in range(n)
    ]


def publish(settings: Settings, events: list[Event]) -> None:
    with Emitter(settings, max_queue=len(events) + 1) as emitter:
        for e in events:
            emitter.emit(e)
        assert emitter.flush(600)
        assert emitter.stats().sent == len(events), emitter.stats()


async def raw_consume(settings: Settings, n: int) -> float:
    """Seconds for a raw aiokafka group member to read and decode ``n`` records (from the first record)."""
    consumer = AIOKafkaConsumer(
        event_topic(settings.topic_prefix, "interaction"),
        bootstrap_servers=settings.kafka,
        group_id=f"raw-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=5000,
    )
    await consumer.start()
    try:
        seen, t0 = 0, None
        while seen < n:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for records in batches.values():
                if t0 is None:
                    t0 = time.perf_counter()
                for r in records:
                    decode(r.value)
                seen += len(records)
        await consumer.commit()
        return time.perf_counter() - (t0 or time.perf_counter())
    finally:
        await consumer.stop()


def faust_throughput(settings: Settings, n: int, work: bool = True) -> tuple[float, int]:
    """(seconds from first event to last commit, records read) for one in-process faust worker.

    ``work`` False: the worker only decodes and commits (no stats, no ClickHouse), which is the
    floor set by faust's own per-record machinery on this machine.
    """
    options = WorkerOptions(group=f"faust-{uuid.uuid4().hex[:6]}", store=work, monitor=work)
    with open_store(settings) as store:
        store.migrate()
        runtime = run_faust_worker(settings, store, options, idle_exit_s=3.0, partitions=PARTITIONS)
    assert runtime.first_record_at is not None and runtime.last_checkpoint_at is not None
    assert runtime.records_in >= n, runtime.records_in
    return runtime.last_checkpoint_at - runtime.first_record_at, runtime.records_in


def pipeline_throughput(settings: Settings, n: int) -> float:
    """Seconds from the first record to the checkpoint after ``n`` records, for the embedded runtime."""
    with open_store(settings) as store:
        store.migrate()
        pipeline = build_pipeline(settings, store, WorkerOptions(group=f"pipe-{uuid.uuid4().hex[:6]}"))
        marks: dict[str, float] = {}

        async def main() -> None:
            stop = asyncio.Event()

            async def watch() -> None:
                while pipeline.records_in == 0:
                    await asyncio.sleep(0.005)
                marks["first"] = time.perf_counter()
                while pipeline.records_in < n or pipeline._uncommitted:
                    await asyncio.sleep(0.005)
                marks["done"] = time.perf_counter()
                stop.set()

            watcher = asyncio.create_task(watch())
            await pipeline.run(stop)
            await watcher

        asyncio.run(main())
    return marks["done"] - marks["first"]


def latency(settings: Settings, rate: int, seconds: float, runtime: str) -> tuple[list[float], int]:
    """[p50, p99, max] in seconds from emit() to a queryable row, at ``rate`` events/s through a worker."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "trainwire",
        "--kafka",
        settings.kafka,
        "--data-dir",
        str(settings.data_dir),
        "--topic-prefix",
        settings.topic_prefix,
        "worker",
        "--runtime",
        runtime,
        "--group",
        "latency",
        "--until-idle",
        "15",
    ]
    worker = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    try:
        time.sleep(8)  # let the worker join its group before the clock starts (it idles out 15 s after)
        total = int(rate * seconds)
        payloads = [(e.run_id, e.payload) for e in make_events(total)]
        with Emitter(settings) as emitter:
            t0 = time.perf_counter()
            for i, (run_id, payload) in enumerate(payloads):
                due = t0 + i / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                emitter.emit(Event(run_id, payload))  # ts is now: the clock starts at emit()
            assert emitter.flush(60)
        assert worker.wait(120) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    with open_store(settings) as store:
        row = store.query_rows(
            "SELECT quantiles(0.5, 0.99)(lat) AS q, max(lat) AS mx, count() AS n FROM "
            "(SELECT dateDiff('microsecond', any(ts), min(inserted_at)) / 1e6 AS lat "
            "FROM interactions GROUP BY event_id)"
        )[0]
    return [*row["q"], row["mx"]], row["n"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=5_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--kafka", default=None)
    args = parser.parse_args()
    with kafka_bootstrap(args.kafka) as kafka:
        args.kafka = kafka
        with tempfile.TemporaryDirectory() as tmp:
            prefix = f"bw{uuid.uuid4().hex[:6]}"
            base = Settings(kafka=args.kafka, data_dir=Path(tmp) / "faust", topic_prefix=prefix)
            asyncio.run(ensure_topics(base, PARTITIONS))
            publish(base, make_events(args.events))
            raw_s = asyncio.run(raw_consume(base, args.events))
            floor_s, _ = faust_throughput(base, args.events, work=False)
            faust_s, faust_records = faust_throughput(base, args.events)
            pipe_s = pipeline_throughput(
                Settings(kafka=args.kafka, data_dir=Path(tmp) / "pipeline", topic_prefix=prefix), args.events
            )
            rows = [
                ("raw aiokafka consume + decode", args.events / raw_s, "-", "100%"),
                ("faust worker: decode + commit only", args.events / floor_s, "-", f"{raw_s / floor_s:.0%}"),
                (
                    "faust worker: stats + ClickHouse sink",
                    args.events / faust_s,
                    faust_records,
                    f"{raw_s / faust_s:.0%}",
                ),
                ("embedded Pipeline: stats + ClickHouse sink", args.events / pipe_s, "-", f"{raw_s / pipe_s:.0%}"),
            ]
            print_table(
                f"Worker throughput, {args.events:,} interaction events, {PARTITIONS} partitions, one worker "
                "(target >= 20,000/s)",
                ["runtime", "interaction events/s", "records read (incl. stats)", "vs raw"],
                rows,
            )
            latencies = []
            for runtime in ("faust", "embedded"):
                lat_settings = Settings(
                    kafka=args.kafka, data_dir=Path(tmp) / f"latency-{runtime}", topic_prefix=f"{prefix}{runtime[0]}"
                )
                asyncio.run(ensure_topics(lat_settings, PARTITIONS))
                (p50, p99, worst), n = latency(lat_settings, args.rate, args.seconds, runtime)
                latencies.append((f"{runtime} worker (commit every 0.5 s)", n, p50, p99, worst))
            print_table(
                f"End-to-end latency, emit() -> row in ClickHouse, {args.rate:,} events/s for {args.seconds:g} s "
                "(target p99 <= 2 s)",
                ["runtime", "events", "p50 s", "p99 s", "max s"],
                latencies,
            )


if __name__ == "__main__":
    main()
