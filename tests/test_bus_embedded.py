"""The embedded bus: durable local log, consumer groups, spooling, and two processes at once."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest
from helpers import read_events, run_pipeline_until

from trainwire.bus import Emitter, open_consumer
from trainwire.bus.base import Message, Refused, Transport
from trainwire.bus.local import LocalTransport
from trainwire.config import Settings
from trainwire.errors import BusError
from trainwire.events import Event, Interaction, TrainStep, encode
from trainwire.runtime import build_pipeline
from trainwire.store.clickhouse import open_store
from trainwire.topics import event_topics


def interactions(n: int, run_id: str = "run-a") -> list[Event]:
    return [
        Event(run_id, Interaction(prompt=f"q{i}", completion="a" * 100, reward=i / n, step=i // 8)) for i in range(n)
    ]


def test_emit_then_consume_in_order(embedded_settings: Settings) -> None:
    events = [*interactions(500), Event("run-a", TrainStep(step=1, loss=0.5))]
    with Emitter(embedded_settings) as emitter:
        for e in events:
            emitter.emit(e)
        assert emitter.flush(10)
        stats = emitter.stats()
    assert (stats.sent, stats.spooled, stats.failed, stats.queued) == (len(events), 0, 0, 0)
    got = read_events(embedded_settings, expected=len(events))
    assert [e.event_id for e in got if e.event_type == "interaction"] == [e.event_id for e in events[:-1]]
    assert {e.event_id for e in got} == {e.event_id for e in events}


def test_consumer_group_commits_after_processing_and_new_group_starts_at_earliest(embedded_settings: Settings) -> None:
    with Emitter(embedded_settings) as emitter:
        for e in interactions(10):
            emitter.emit(e)

    async def take(group: str, commit: bool) -> int:
        consumer = open_consumer(embedded_settings, event_topics("trainwire"), group)
        await consumer.start()
        records = await consumer.getmany(timeout_ms=1000, max_records=4)
        if commit:
            await consumer.commit()
        await consumer.stop()
        return len(records)

    assert asyncio.run(take("g1", commit=False)) == 4
    assert asyncio.run(take("g1", commit=True)) == 4  # nothing was committed: the same 4 again
    assert asyncio.run(take("g1", commit=True)) == 4  # the next 4
    assert asyncio.run(take("g1", commit=True)) == 2
    assert asyncio.run(take("g2", commit=False)) == 4  # a new group starts from the earliest offset


def test_one_live_consumer_per_group(embedded_settings: Settings) -> None:
    async def main() -> None:
        first = open_consumer(embedded_settings, event_topics("trainwire"), "solo")
        await first.start()
        try:
            second = open_consumer(embedded_settings, event_topics("trainwire"), "solo")
            with pytest.raises(BusError, match="already has a live consumer"):
                await second.start()
        finally:
            await first.stop()

    asyncio.run(main())


def test_full_queue_spools_and_replays_nothing_lost(embedded_settings: Settings) -> None:
    emitter = Emitter(embedded_settings, max_queue=5, batch_size=1000, linger_ms=200)
    events = interactions(200)
    for e in events:
        emitter.emit(e)
    emitter.close()
    stats = emitter.stats()
    assert stats.spooled > 0
    assert stats.sent + stats.replayed == len(events)
    assert stats.failed == 0 and stats.spool_pending == 0
    assert {e.event_id for e in read_events(embedded_settings, expected=200)} == {e.event_id for e in events}


def thread_io(field: str) -> int:
    """A counter of the calling thread's I/O (Linux per-thread accounting): ``wchar`` bytes written,
    ``syscw`` write system calls."""
    io = Path(f"/proc/self/task/{threading.get_native_id()}/io").read_text()
    return int(next(line.split()[1] for line in io.splitlines() if line.startswith(f"{field}:")))


def silent_broker() -> socket.socket:
    """A listening socket that never answers: a Kafka client connecting to it waits (a hung broker)."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    return silent


def test_a_full_queue_never_makes_the_caller_write_to_disk(tmp_path: Path) -> None:
    """The caller's thread never writes the spool: the background thread spools what does not fit the queue.

    A broker that accepts connections and never answers holds the emitter thread in its first
    connection attempt, so the queue fills for sure; the kernel counts what each thread writes.
    """
    silent = silent_broker()
    settings = Settings(kafka=f"127.0.0.1:{silent.getsockname()[1]}", data_dir=tmp_path / "data")
    emitter = Emitter(settings, max_queue=2_000)
    events = interactions(3_500)
    written: list[int] = []

    def caller() -> None:
        emitter.emit(events[0])  # starts the thread, which then waits on the silent broker
        before = thread_io("wchar")
        for event in events[1:]:
            emitter.emit(event)
        written.append(thread_io("wchar") - before)

    training = threading.Thread(target=caller)
    training.start()
    training.join()
    assert written == [0]
    assert emitter.stats().queued > 2_000  # past max_queue, where emit used to spool each event itself
    silent.close()  # the broker goes away: the thread spools everything
    emitter.close(timeout=20)
    stats = emitter.stats()
    assert (stats.spooled, stats.failed, stats.queued) == (3_500, 0, 0)


def test_a_caller_that_outruns_the_thread_writes_the_spool_in_batches(tmp_path: Path) -> None:
    """Past twice max_queue the caller takes over the oldest events, with one write per batch_size of them."""
    silent = silent_broker()
    settings = Settings(kafka=f"127.0.0.1:{silent.getsockname()[1]}", data_dir=tmp_path / "data")
    emitter = Emitter(settings, max_queue=1_000, batch_size=500)
    events = interactions(10_000)
    writes: list[int] = []

    def caller() -> None:
        emitter.emit(events[0])  # the thread then waits on the silent broker
        before = thread_io("syscw")
        for event in events[1:]:
            emitter.emit(event)
        writes.append(thread_io("syscw") - before)

    training = threading.Thread(target=caller)
    training.start()
    training.join()
    assert 0 < writes[0] <= (10_000 - 2 * 1_000) // 500 + 2  # was one write per event past max_queue
    silent.close()
    emitter.close(timeout=20)
    stats = emitter.stats()
    assert (stats.spooled, stats.failed, stats.queued) == (10_000, 0, 0)


class RefusingTransport(Transport):
    """A bus that refuses every batch: the fault a full disk or a dead broker would cause."""

    async def start(self) -> None:
        pass

    async def send_batch(self, messages: list[Message]) -> list[Message]:
        return messages

    async def stop(self) -> None:
        pass


def test_undelivered_events_wait_in_the_spool_for_the_next_process(embedded_settings: Settings) -> None:
    # The refusing transport stands in for a bus that fails mid-run (not producible on a local file).
    events = interactions(50)
    emitter = Emitter(embedded_settings, transport=RefusingTransport(), close_timeout_s=1)
    for e in events:
        emitter.emit(e)
    emitter.close()
    assert emitter.stats().spool_pending == 50
    successor = Emitter(embedded_settings)
    successor.emit(Event("run-b", TrainStep(step=1)))
    successor.close()
    assert successor.stats().replayed == 50
    got = {e.event_id for e in read_events(embedded_settings, expected=51)}
    assert {e.event_id for e in events} <= got


def test_every_event_that_cannot_be_serialized_is_counted_and_the_first_named_by_its_field(
    embedded_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # A real serialization failure: orjson writes no set.
    bad = [Event("run-a", Interaction(prompt="p", metadata={"tags": {i}})) for i in range(4)]
    good = interactions(2)
    caplog.set_level(logging.WARNING, logger="trainwire.emitter")
    with Emitter(embedded_settings) as emitter:
        for e in [good[0], *bad[:3], good[1]]:
            emitter.emit(e)
        assert emitter.flush(10)
        stats = emitter.stats()
        assert (stats.sent, stats.failed, stats.failed_by_reason) == (2, 3, {"not serializable": 3})
        first, report = [r.getMessage() for r in caplog.records]  # one line for the first, then the count
        assert f"event {bad[0].event_id} (interaction) cannot be serialized" in first
        assert "payload.metadata: cannot be serialized: Type is not JSON serializable: set" in first
        assert report == "trainwire: 3 events failed since the last report (not serializable: 3); 3 in all"
        caplog.clear()
        assert emitter.flush(10)
        assert caplog.records == []  # nothing failed since
        emitter.emit(bad[3])
    assert [r.getMessage() for r in caplog.records] == [
        "trainwire: 1 events failed since the last report (not serializable: 1); 4 in all"
    ]
    assert emitter.stats().failed_by_reason == {"not serializable": 4}
    assert [e.event_id for e in read_events(embedded_settings, expected=2)] == [e.event_id for e in good]


class SizeLimitedTransport(LocalTransport):
    """The embedded log with a size limit, as Kafka has: larger messages are refused for good.

    A stand-in on purpose: the real embedded log takes any size, so a refusal cannot be produced
    on it; the real refusal by a Kafka broker is tested in test_bus_kafka.py.
    """

    limit = 10_000

    async def send_batch(self, messages: list[Message]) -> list[Message | Refused]:
        failed = await super().send_batch([m for m in messages if len(m.value) <= self.limit])
        return [Refused(m, "too large") for m in messages if len(m.value) > self.limit] + failed


def test_refused_events_are_rejected_with_the_reason_live_and_on_replay(embedded_settings: Settings) -> None:
    big = [Event("run-a", Interaction(prompt="big", completion="x" * 20_000)) for _ in range(2)]
    first = [Event("run-a", Interaction(prompt="p0")), big[0], Event("run-a", Interaction(prompt="p1"))]
    with Emitter(embedded_settings, transport=SizeLimitedTransport(embedded_settings.data_dir)) as emitter:
        for e in first:
            emitter.emit(e)
        assert emitter.flush(10)
        assert (emitter.stats().sent, emitter.stats().failed) == (2, 1)
    # Spooled while the bus was down, refused when the spool is replayed: rejected, and the replay goes on.
    second = [Event("run-a", Interaction(prompt="p2")), big[1], Event("run-a", Interaction(prompt="p3"))]
    down = Emitter(embedded_settings, transport=RefusingTransport(), close_timeout_s=1)
    for e in second:
        down.emit(e)
    down.close()
    successor = Emitter(embedded_settings, transport=SizeLimitedTransport(embedded_settings.data_dir))
    successor.emit(Event("run-a", Interaction(prompt="p4")))  # starts it: the spool is replayed first
    successor.close()
    stats = successor.stats()
    assert (stats.replayed, stats.sent, stats.failed, stats.spool_pending) == (2, 1, 1, 0)
    got = read_events(embedded_settings, expected=5)
    assert [e.payload.prompt for e in got] == ["p0", "p1", "p2", "p3", "p4"]
    lines = (embedded_settings.data_dir / "rejected" / "events.jsonl").read_bytes().splitlines()
    rejected = [orjson.loads(line) for line in lines]
    assert [r["reason"] for r in rejected] == ["too large", "too large"]
    assert [orjson.dumps(r["event"]) for r in rejected] == [encode(e) for e in big]


def test_records_larger_than_a_read_chunk_are_read_whole(embedded_settings: Settings) -> None:
    # 17 MB: larger than what the consumer (8 MB) and the spool replay (16 MB) read at a time.
    huge = Event("run-a", Interaction(prompt="huge", completion="y" * 17_000_000))
    events = [Event("run-a", Interaction(prompt="p0")), huge, Event("run-a", Interaction(prompt="p1"))]
    down = Emitter(embedded_settings, transport=RefusingTransport(), close_timeout_s=1)
    for e in events:
        down.emit(e)
    down.close()
    successor = Emitter(embedded_settings)
    events.append(Event("run-a", Interaction(prompt="p2")))  # starts it: the spool is replayed first
    successor.emit(events[-1])
    successor.close()
    assert (successor.stats().replayed, successor.stats().spool_pending) == (3, 0)
    got = read_events(embedded_settings, expected=4, timeout=10)
    assert [e.event_id for e in got] == [e.event_id for e in events]
    assert got[1].payload.completion == huge.payload.completion


def test_emit_after_close_is_spooled_not_lost(embedded_settings: Settings) -> None:
    emitter = Emitter(embedded_settings)
    emitter.close()
    emitter.emit(Event("r", TrainStep(step=1)))
    assert emitter.stats().spooled == 1


WRITER = """
import json, sys
from trainwire.bus import Emitter
from trainwire.config import Settings
from trainwire.events import Event, Interaction
emitter = Emitter(Settings(data_dir=sys.argv[1]))
ids = []
for i in range(int(sys.argv[2])):
    e = Event("two-proc", Interaction(prompt=f"p{i}", completion="c", reward=1.0))
    ids.append(e.event_id)
    emitter.emit(e)
json.dump(ids, open(sys.argv[3], "w"))
{ending}
"""


@pytest.mark.parametrize(
    "ending", ["", "raise SystemExit(3)", "raise RuntimeError('training crashed')", "raise KeyboardInterrupt"]
)
def test_writer_and_reader_in_two_processes(tmp_path: Path, ending: str) -> None:
    """A training script writes while a worker stores; the script's exit (clean or not) flushes."""
    data_dir = tmp_path / "data"
    worker = subprocess.Popen(
        [sys.executable, "-m", "trainwire.cli", "--data-dir", str(data_dir), "worker", "--until-idle", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    ids_file = tmp_path / "ids.json"
    writer = subprocess.run(
        [sys.executable, "-c", WRITER.replace("{ending}", ending), str(data_dir), "3000", str(ids_file)],
        capture_output=True,
        text=True,
    )
    assert writer.returncode in (0, 1, 3, 130, -2), writer.stderr  # -2/130: ended by Ctrl+C
    out, _ = worker.communicate(timeout=120)
    assert worker.returncode == 0, out
    ids = set(json.loads(ids_file.read_text()))
    with open_store(Settings(data_dir=data_dir)) as store:
        rows = store.query_rows("SELECT event_id FROM interactions FINAL WHERE run_id = 'two-proc'")
    assert {r["event_id"] for r in rows} == ids


def test_sql_while_the_worker_owns_chdb(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    settings = Settings(data_dir=data_dir)
    with Emitter(settings) as emitter:
        for e in interactions(120, run_id="live"):
            emitter.emit(e)
    worker = subprocess.Popen(
        [sys.executable, "-m", "trainwire.cli", "--data-dir", str(data_dir), "worker"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (data_dir / "clickhouse.owner.json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        answer = None
        while time.monotonic() < deadline:
            sql = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "trainwire.cli",
                    "--data-dir",
                    str(data_dir),
                    "sql",
                    "--format",
                    "json",
                    "SELECT count() AS n FROM interactions FINAL WHERE run_id = 'live'",
                ],
                capture_output=True,
                text=True,
            )
            if sql.returncode == 0 and json.loads(sql.stdout) == [{"n": 120}]:
                answer = sql.stdout
                break
            time.sleep(0.3)
        assert answer is not None, (sql.stdout, sql.stderr)
        table = subprocess.run(
            [
                sys.executable,
                "-m",
                "trainwire.cli",
                "--data-dir",
                str(data_dir),
                "sql",
                "SELECT run_id, count() AS n FROM interactions FINAL GROUP BY run_id",
            ],
            capture_output=True,
            text=True,
        )
        assert table.returncode == 0 and "live" in table.stdout and "120" in table.stdout
        bad = subprocess.run(
            [sys.executable, "-m", "trainwire.cli", "--data-dir", str(data_dir), "sql", "SELECT * FROM nope"],
            capture_output=True,
            text=True,
        )
        assert bad.returncode == 1
        assert bad.stderr.startswith("Error: ") and "Traceback" not in bad.stderr and "nope" in bad.stderr
    finally:
        worker.send_signal(signal.SIGINT)
        out, _ = worker.communicate(timeout=60)
    assert worker.returncode == 0, out
    assert "worker stopped: " in out and "0 dead letters" in out


def test_fork_child_emits_its_own_events(embedded_settings: Settings) -> None:
    emitter = Emitter(embedded_settings)
    emitter.emit(Event("parent", TrainStep(step=0)))
    emitter.flush(10)
    pid = os.fork()
    if pid == 0:  # child: a DataLoader worker, say
        try:
            emitter.emit(Event("child", TrainStep(step=1)))
            emitter.close()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    emitter.emit(Event("parent", TrainStep(step=2)))
    emitter.close()
    got = read_events(embedded_settings, expected=3)
    assert sorted((e.run_id, e.payload.step) for e in got) == [("child", 1), ("parent", 0), ("parent", 2)]
    assert {e.source.process for e in got if e.run_id == "child"} == {pid}


def test_store_pipeline_dead_letters_undecodable_records(embedded_settings: Settings) -> None:
    emitter = Emitter(embedded_settings)
    good = interactions(20)
    for e in good:
        emitter.emit(e)
    emitter.close()

    # A foreign producer writes garbage onto an event topic.
    async def garbage() -> None:
        transport = LocalTransport(embedded_settings.data_dir)
        await transport.start()
        await transport.send_batch([Message("trainwire.interactions", b"r", b'{"event_type": "interaction"}')])
        await transport.stop()

    asyncio.run(garbage())
    with open_store(embedded_settings) as store:
        store.migrate()
        pipeline = build_pipeline(embedded_settings, store)
        run_pipeline_until(pipeline, lambda: pipeline.records_in >= 21)
        assert store.query_rows("SELECT count() AS n FROM interactions FINAL") == [{"n": 20}]
    assert pipeline.core.dead_letters.count == 1

    async def dead() -> list:
        consumer = open_consumer(embedded_settings, ["trainwire.dead_letter"], "dlq-reader")
        await consumer.start()
        records = await consumer.getmany(timeout_ms=1000)
        await consumer.stop()
        return records

    (letter,) = asyncio.run(dead())
    assert letter.value == b'{"event_type": "interaction"}'
    assert letter.header("reason").decode().startswith("invalid event: trainwire.interactions[0]@")
    assert b"event_id: missing" in letter.header("reason")
