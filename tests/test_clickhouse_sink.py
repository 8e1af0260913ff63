"""The ClickHouse sink in the embedded worker: offsets committed only after ClickHouse took the rows.

The faults are real, not mocked (one exception, the last test, says why):

- *ClickHouse down*: chdb is owned by another process (the embedded store's server-like mode) and
  the worker reaches it through an :class:`OwnerClientStore` (ClickHouse's HTTP interface); the
  owner is killed with SIGKILL and a new owner is started on the same data directory later.
- *A record ClickHouse refuses for good*: a CHECK constraint on ``interactions`` that one event
  violates, so ClickHouse itself refuses the insert.

The workers here store only (``monitor=False``): nothing they publish is read back, so every record
they read is one the test produced.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from trainwire.bus import Emitter, open_consumer
from trainwire.bus.base import Record
from trainwire.config import Settings
from trainwire.errors import StoreError
from trainwire.events import Event, Interaction, decode, encode
from trainwire.runtime import WorkerOptions, build_pipeline
from trainwire.sinks.base import SinkBackpressure
from trainwire.sinks.clickhouse import ClickHouseSink
from trainwire.store.clickhouse import EmbeddedStore, OwnerClientStore, Store, open_store
from trainwire.topics import DEAD_LETTER, event_topic, topic_name

GROUP = "sink-test"
OPTIONS = WorkerOptions(group=GROUP, monitor=False)
INTERACTIONS = event_topic("trainwire", "interaction")

OWNER = """
import sys, time
from trainwire.config import Settings
from trainwire.errors import StoreError
from trainwire.store.clickhouse import EmbeddedStore, open_store
store = open_store(Settings(data_dir=sys.argv[1]), own_within_s=60)
assert isinstance(store, EmbeddedStore), type(store)
store.migrate()
print("ready", flush=True)
time.sleep(3600)
"""


class Owners:
    """chdb owner processes on one data directory (a stand-alone ClickHouse that can be killed)."""

    def __init__(self, data_dir: Path, logs: Path):
        self.data_dir = data_dir
        self.logs = logs
        self.procs: list[subprocess.Popen] = []

    def start(self) -> subprocess.Popen:
        """Start an owner and return once it owns chdb and has migrated the schema."""
        log = self.logs / f"owner-{len(self.procs)}.log"
        with open(log, "w") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-c", OWNER, str(self.data_dir)], stdout=subprocess.PIPE, stderr=stderr, text=True
            )
        self.procs.append(proc)
        ready = proc.stdout.readline()  # "ready", or "" if it died
        assert ready.strip() == "ready", log.read_text()
        return proc

    def kill(self, proc: subprocess.Popen) -> None:
        """SIGKILL: no clean shutdown, its owner file stays behind."""
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                self.kill(proc)
            proc.stdout.close()


@pytest.fixture
def owners(tmp_path: Path) -> Iterator[Owners]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    owners = Owners(data_dir, tmp_path)
    try:
        yield owners
    finally:
        owners.kill_all()


def interactions(n: int, start: int = 0, run_id: str = "sink-run") -> list[Event]:
    return [
        Event(run_id, Interaction(prompt=f"q{i}", completion=f"a{i}", reward=(i % 10) / 10, step=i // 4))
        for i in range(start, start + n)
    ]


def emit_all(settings: Settings, events: list[Event]) -> None:
    with Emitter(settings) as emitter:
        for e in events:
            emitter.emit(e)


def log_end(settings: Settings, topic: str) -> int:
    """The offset after the last record of ``topic`` on the embedded bus (its log's size)."""
    path = settings.data_dir / "bus" / f"{topic}.log"
    return path.stat().st_size if path.exists() else 0


def committed(settings: Settings, topic: str, group: str = GROUP) -> int:
    """The offset ``group`` committed on ``topic`` (0: nothing committed)."""
    path = settings.data_dir / "bus" / "_groups" / f"{group}.json"
    return json.loads(path.read_text()).get(topic, 0) if path.exists() else 0


def stored_ids(store: Store) -> list[str]:
    return [r["event_id"] for r in store.query_rows("SELECT event_id FROM interactions FINAL ORDER BY event_id")]


def unavailable_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    messages = (
        r.getMessage() for r in caplog.records if r.name == "trainwire.pipeline" and r.levelno == logging.WARNING
    )
    return [m for m in messages if "ClickHouse unavailable" in m]


async def until(pipeline_task: asyncio.Task, done: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Wait until ``done()`` holds; fail if the pipeline ended first (it must never crash)."""
    deadline = time.monotonic() + timeout
    while not done():
        if pipeline_task.done():
            pipeline_task.result()  # raises what it crashed with
            pytest.fail(f"the pipeline stopped while waiting for {what}")
        if time.monotonic() >= deadline:
            pytest.fail(f"gave up waiting for {what}")
        await asyncio.sleep(0.05)


def test_owner_client_store_finds_the_new_owner_after_the_old_one_died(owners: Owners) -> None:
    first_owner = owners.start()
    store = open_store(Settings(data_dir=owners.data_dir))
    assert isinstance(store, OwnerClientStore)
    store.insert_events(interactions(3))
    owners.kill(first_owner)
    with pytest.raises(StoreError, match=rf"the process owning chdb \(pid {first_owner.pid}\) did not answer") as info:
        store.query_rows("SELECT count() AS n FROM interactions FINAL")
    assert info.value.retriable
    second_owner = owners.start()
    assert store.query_rows("SELECT count() AS n FROM interactions FINAL") == [{"n": 3}]
    assert store.owner_pid == second_owner.pid
    store.close()


def test_clickhouse_down_pauses_commits_nothing_then_stores_everything_once(
    owners: Owners, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trainwire.pipeline")
    settings = Settings(data_dir=owners.data_dir)
    first_owner = owners.start()
    store = open_store(settings)
    assert isinstance(store, OwnerClientStore) and store.owner_pid == first_owner.pid
    pipeline = build_pipeline(settings, store, OPTIONS)
    pipeline.core.max_backoff_s = 0.2  # retry quickly (the default waits up to 30 s between retries)

    before, during, while_paused = interactions(20), interactions(20, 20), interactions(20, 40)
    emit_all(settings, before)

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(pipeline.run(stop))
        await until(task, lambda: committed(settings, INTERACTIONS) == log_end(settings, INTERACTIONS), "first commit")
        assert pipeline.records_in == len(before)

        owners.kill(first_owner)  # ClickHouse goes away
        acknowledged = committed(settings, INTERACTIONS)
        await asyncio.to_thread(emit_all, settings, during)
        await until(task, lambda: len(unavailable_warnings(caplog)) >= 2, "the flush to fail twice")
        # The records read since (all of ``during`` or its first part, as the emitter's batches came)
        # are held, not committed: a restart of the group would read them again.
        held = pipeline.records_in
        assert len(before) < held <= len(before) + len(during)
        assert committed(settings, INTERACTIONS) == acknowledged < log_end(settings, INTERACTIONS)

        await asyncio.to_thread(emit_all, settings, while_paused)
        failures = len(unavailable_warnings(caplog))
        await until(task, lambda: len(unavailable_warnings(caplog)) >= failures + 2, "two more failed flushes")
        # Consumption is paused while the flush is retried: the new records are not read.
        assert pipeline.records_in == held
        assert committed(settings, INTERACTIONS) == acknowledged

        second_owner = await asyncio.to_thread(owners.start)  # ClickHouse is back, on another port
        await until(
            task,
            lambda: committed(settings, INTERACTIONS) == log_end(settings, INTERACTIONS),
            "everything to be committed after ClickHouse came back",
        )
        assert store.owner_pid == second_owner.pid  # found the new owner through its owner file
        stop.set()
        await task

    asyncio.run(scenario())

    warnings = unavailable_warnings(caplog)
    assert any(f"the process owning chdb (pid {first_owner.pid}) did not answer" in w for w in warnings)
    assert all(f"pid {first_owner.pid}" in w for w in warnings)  # every failure names the dead owner
    assert all("retrying in" in w and "without consuming" in w for w in warnings)
    assert pipeline.records_in == 60 and pipeline.core.dead_letters.count == 0
    produced = sorted(e.event_id for e in before + during + while_paused)
    assert stored_ids(store) == produced  # every event stored, once
    assert store.query_rows("SELECT count() AS n FROM interactions FINAL") == [{"n": len(produced)}]
    store.close()


@pytest.mark.parametrize("owner", ["this process", "another process"])
def test_a_record_clickhouse_refuses_becomes_a_dead_letter_and_the_rest_is_stored(
    owner: str, owners: Owners, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trainwire.dead_letter")
    settings = Settings(data_dir=owners.data_dir)
    if owner == "another process":
        owners.start()
    store = open_store(settings)
    assert isinstance(store, OwnerClientStore if owner == "another process" else EmbeddedStore)
    store.migrate()
    # ClickHouse itself refuses rows that break the constraint: a refusal no retry can cure.
    store.command("ALTER TABLE interactions ADD CONSTRAINT reward_sane CHECK ifNull(reward, 0) < 100")

    good = interactions(12)
    bad = Event("sink-run", Interaction(prompt="q-bad", completion="a-bad", reward=1000.0, step=1))
    produced = [*good[:7], bad, *good[7:]]
    emit_all(settings, produced)

    pipeline = build_pipeline(settings, store, OPTIONS)
    asyncio.run(pipeline.run(idle_exit_s=1.0))
    assert pipeline.records_in == len(produced)

    assert stored_ids(store) == sorted(e.event_id for e in good)
    assert store.query_rows("SELECT count() AS n FROM interactions WHERE reward >= 100") == [{"n": 0}]
    assert pipeline.core.dead_letters.count == 1
    assert committed(settings, INTERACTIONS) == log_end(settings, INTERACTIONS)

    async def read(topics: list[str], group: str) -> list:
        consumer = open_consumer(settings, topics, group)
        await consumer.start()
        try:
            return await consumer.getmany(timeout_ms=1000)
        finally:
            await consumer.stop()

    (letter,) = asyncio.run(read([topic_name(settings.topic_prefix, DEAD_LETTER)], "dlq-reader"))
    assert decode(letter.value).event_id == bad.event_id
    reason = letter.header("reason").decode()
    assert reason.startswith("refused by ClickHouse:"), reason
    assert "reward_sane" in reason and "VIOLATED_CONSTRAINT" in reason
    assert letter.header("source_topic").decode() == INTERACTIONS
    assert int(letter.header("source_offset")) < log_end(settings, INTERACTIONS)
    assert any("reward_sane" in r.getMessage() for r in caplog.records)  # and it was logged

    # Everything was committed: the same group reads nothing new, and nothing is stored twice.
    again = build_pipeline(settings, store, OPTIONS)
    asyncio.run(again.run(idle_exit_s=0.5))
    assert again.records_in == 0 and again.core.dead_letters.count == 0
    assert stored_ids(store) == sorted(e.event_id for e in good)
    store.close()


class _GoesDownOnce(Store):
    """The real embedded store, except that one chosen insert fails as if ClickHouse went down.

    A stand-in for the fault's timing only: ClickHouse going down between two inserts of the same
    flush (while the sink separates a refused record from the rest) cannot be arranged for real.
    """

    def __init__(self, store: Store, failing_call: int):
        self._store = store
        self._failing_call = failing_call
        self.calls = 0

    def insert_arrow(self, table: str, data: object) -> None:
        self.calls += 1
        if self.calls == self._failing_call:
            raise StoreError("ClickHouse went down", retriable=True)
        self._store.insert_arrow(table, data)  # type: ignore[arg-type]

    def query_arrow(self, sql: str, parameters: dict | None = None) -> object:
        return self._store.query_arrow(sql, parameters)

    def command(self, sql: str, parameters: dict | None = None) -> object:
        return self._store.command(sql, parameters)

    def close(self) -> None:
        self._store.close()


def test_clickhouse_down_while_separating_a_refused_record_stores_and_reports_each_once(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    with open_store(settings) as real:
        real.migrate()
        real.command("ALTER TABLE interactions ADD CONSTRAINT reward_sane CHECK ifNull(reward, 0) < 100")
        good = interactions(8)
        bad = Event("sink-run", Interaction(prompt="q-bad", completion="a-bad", reward=1000.0, step=1))
        batch = [*good[:5], bad, *good[5:]]
        # Call 1: the whole batch, refused. Call 2: its left half (5 good records), stored. Call 3: the
        # right half, which fails as if ClickHouse were down: the flush must be retried.
        store = _GoesDownOnce(real, failing_call=3)
        core = build_pipeline(settings, store, OPTIONS).core
        sink = next(s for s in core.sinks if isinstance(s, ClickHouseSink))  # beside the alert console
        for offset, event in enumerate(batch):
            sink.add(event, Record(INTERACTIONS, 0, offset, b"sink-run", encode(event), 0, ()))
        with pytest.raises(SinkBackpressure):
            sink.flush()
        sink.flush()  # ClickHouse is back

        assert stored_ids(real) == sorted(e.event_id for e in good)
        assert real.query_rows("SELECT count() AS n FROM interactions") == [{"n": len(good)}]  # none twice
        assert core.dead_letters.count == 1  # the refused record, reported once
        assert sink.rows_written == len(good)
