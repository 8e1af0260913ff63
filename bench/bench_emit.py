"""emit() cost on the caller's thread for a 1 KB interaction event (target: p50 <= 5 us, p99 <= 50 us).

Side by side in the same run: a seed-000 style logger (``json.dumps`` of the record, written to
a file on the caller's thread) and a bare ``queue.Queue.put_nowait``.

A second table is a burst: ``--burst`` events emitted as fast as the caller can, with the
default ``max_queue`` (100,000), so the queue fills and the emitter spools. It shows the tail of
emit()'s latency (p99.99 and the maximum): the caller never writes the spool itself per event.

    python bench/bench_emit.py [--events 200000] [--burst 500000]
"""

from __future__ import annotations

import argparse
import json
import queue
import tempfile
import time
from pathlib import Path

from table import print_table

from trainwire.bus import Emitter
from trainwire.config import Settings
from trainwire.events import Event, Interaction


def percentiles(samples_ns: list[int]) -> tuple[float, float, float, float, float]:
    """p50, p99, p99.9, p99.99 and the maximum, in microseconds."""
    samples_ns.sort()
    n = len(samples_ns)
    return (
        *(samples_ns[int(n * q)] / 1000 for q in (0.5, 0.99, 0.999, 0.9999)),
        samples_ns[-1] / 1000,
    )  # type: ignore[return-value]


def make_events(count: int) -> list[Event]:
    completion = "x" * 800
    return [
        Event(
            "bench", Interaction(prompt="What is 2 + 2? Think step by step.", completion=completion, reward=1.0, step=i)
        )
        for i in range(count)
    ]


def burst(events: list[Event], data_dir: Path) -> tuple[list[int], str]:
    """emit() latencies of a burst with the default queue size, and what the emitter did with it."""
    emitter = Emitter(Settings(data_dir=data_dir))
    emitter.emit(events[0])
    emit_ns = time_calls(emitter.emit, events[1:])
    emitter.close(timeout=300)
    stats = emitter.stats()
    assert stats.sent + stats.replayed == len(events), stats
    return emit_ns, f"{stats.sent:,} sent, {stats.spooled:,} spooled"


def time_calls(fn, items) -> list[int]:
    out = []
    clock = time.perf_counter_ns
    for item in items:
        t0 = clock()
        fn(item)
        out.append(clock() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--burst", type=int, default=500_000)
    args = parser.parse_args()
    events = make_events(args.events)
    completion = events[0].payload.completion
    with tempfile.TemporaryDirectory() as tmp:
        emitter = Emitter(Settings(data_dir=Path(tmp) / "data"), max_queue=args.events + 1)
        emitter.emit(events[0])  # start the background thread outside the measurement
        emit_ns = time_calls(emitter.emit, events[1:])
        emitter.close()
        assert emitter.stats().sent == args.events

        records = [
            {
                "timestamp": e.ts.isoformat(),
                "prompt": e.payload.prompt,
                "completion": completion,
                "reward": 1.0,
                "metadata": {"step": e.payload.step},
            }
            for e in events
        ]
        with open(Path(tmp) / "llm_logs.jsonl", "w") as handle:

            def seed_logger(record: dict) -> None:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                handle.flush()

            seed_ns = time_calls(seed_logger, records)
    q: queue.Queue = queue.Queue(maxsize=args.events + 1)
    queue_ns = time_calls(q.put_nowait, events)

    rows = []
    for name, samples in (
        ("trainwire emit()", emit_ns),
        ("seed-000 json.dumps + write", seed_ns),
        ("queue.Queue.put_nowait", queue_ns),
    ):
        rows.append((name, *percentiles(samples)))
    base = rows[1][1]
    rows = [(*r, f"{r[1] / base:.2f}x") for r in rows]
    latency = ["p50 us", "p99 us", "p99.9 us", "p99.99 us", "max us"]
    print_table(
        f"emit() on the caller's thread, 1 KB interaction, {args.events:,} calls",
        ["caller-side call", *latency, "p50 vs seed logger"],
        rows,
    )
    del events, records
    with tempfile.TemporaryDirectory() as tmp:
        burst_ns, outcome = burst(make_events(args.burst), Path(tmp) / "data")
    print_table(
        f"emit() in a burst of {args.burst:,} events, default max_queue (100,000)",
        ["caller-side call", *latency, "emitter"],
        [("trainwire emit()", *percentiles(burst_ns), outcome)],
    )


if __name__ == "__main__":
    main()
