"""The faust-streaming runtime on the real broker: worker processes started and killed by the test.

Each worker is ``python -m trainwire worker --runtime faust`` with a chdb data dir of its own. A test
waits until the worker group has committed every record of the event topics (lag 0: commits
follow ClickHouse flushes), then stops the workers with SIGTERM and reads their stores.
"""

from __future__ import annotations

import asyncio
import math
import os
import pty
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from conftest import ROOT, local_broker

from trainwire.bus import Emitter
from trainwire.bus.admin import ensure_topics
from trainwire.config import Settings
from trainwire.events import Event, Interaction, TrainStep
from trainwire.store.clickhouse import open_store
from trainwire.topics import DEAD_LETTER, event_topics, topic_name

PARTITIONS = 4


def training_events(runs: int, steps: int, groups_per_step: int = 2, group_size: int = 4) -> list[Event]:
    """GRPO-like traffic: per run and step, groups of interactions with varied rewards, then a train step."""
    events: list[Event] = []
    for step in range(steps):
        for r in range(runs):
            run = f"run-{r}"
            for g in range(groups_per_step):
                for k in range(group_size):
                    events.append(
                        Event(
                            run,
                            Interaction(
                                prompt=f"{run} step {step} group {g}",
                                completion="x" * (10 + 7 * k),
                                reward=float((k + g + step) % 3),
                                step=step,
                                group_id=f"{run}-s{step}-g{g}",
                            ),
                        )
                    )
            events.append(Event(run, TrainStep(step=step, loss=1.0 / (step + 1), learning_rate=1e-5)))
    return events


def emit(settings: Settings, events: list[Event]) -> None:
    with Emitter(settings) as emitter:
        for e in events:
            emitter.emit(e)
        assert emitter.flush(60)
        assert emitter.stats().failed == 0


def start_worker(
    settings: Settings,
    data_dir: Path,
    group: str,
    *extra: str,
    env: dict[str, str] | None = None,
    stderr: int | None = None,
) -> subprocess.Popen:
    """``trainwire worker --runtime faust`` in a process of its own; ``env`` adds environment variables.

    Its output goes to ``{data_dir}.log``; its stderr goes to ``stderr`` (a file descriptor) when given.
    """
    cmd = [
        sys.executable,
        "-m",
        "trainwire",
        "--kafka",
        settings.kafka,
        "--data-dir",
        str(data_dir),
        "--topic-prefix",
        settings.topic_prefix,
        "worker",
        "--runtime",
        "faust",
        "--group",
        group,
        "--partitions",
        str(PARTITIONS),
        "--session-timeout",
        "6",
        "--flush-interval",
        "0.3",
        *extra,
    ]
    log = open(data_dir.parent / f"{data_dir.name}.log", "ab")  # noqa: SIM115 - closed with the process
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=stderr or subprocess.STDOUT, env=env)


def read_terminal() -> tuple[int, threading.Thread, bytearray]:
    """A pseudo-terminal for a process's stderr: its follower's descriptor, and a thread reading everything
    written to it (so the writer never blocks) into the bytearray until no process holds it."""
    leader, follower = pty.openpty()
    screen = bytearray()

    def read() -> None:
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: no process holds the terminal any more
                break
            if not chunk:
                break
            screen.extend(chunk)
        os.close(leader)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return follower, reader, screen


async def _lag(settings: Settings, group: str, partitions: int = PARTITIONS) -> int | None:
    """Records of the event topics not yet committed by ``group`` (None: the broker cannot say yet)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka)
    await admin.start()
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in event_topics(settings.topic_prefix) for p in range(partitions)]
        ends = await consumer.end_offsets(tps)
        try:
            committed = await admin.list_consumer_group_offsets(group)
        except KafkaError:  # the group coordinator is not up yet on a fresh broker
            return None
        return sum(end - (committed[tp].offset if tp in committed else 0) for tp, end in ends.items())
    finally:
        await consumer.stop()
        await admin.close()


async def _members(settings: Settings, group: str) -> int:
    """How many members ``group`` has, once it is stable (0 while it rebalances or is unknown)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka)
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups([group])
        (described,) = response.groups  # (error, group id, state, protocol type, protocol, members, ...)
        return len(described[5]) if described[2] == "Stable" else 0
    except KafkaError:
        return 0
    finally:
        await admin.close()


def wait_for_members(settings: Settings, group: str, count: int, timeout: float = 60) -> None:
    """Wait until ``group`` is stable with ``count`` members (each then holds some partitions)."""
    deadline = time.monotonic() + timeout
    while asyncio.run(_members(settings, f"{settings.topic_prefix}.{group}")) != count:
        assert time.monotonic() < deadline, f"group {group} never settled with {count} members"
        time.sleep(0.5)


def wait_until_caught_up(
    settings: Settings, group: str, workers: list[subprocess.Popen], timeout: float = 150, partitions: int = PARTITIONS
) -> None:
    """Wait until ``group`` committed everything (and it stays so across two polls: outputs come back in)."""
    deadline = time.monotonic() + timeout
    zero_polls = 0
    while time.monotonic() < deadline:
        for w in workers:
            assert w.poll() is None, f"worker exited with {w.returncode}"
        lag = asyncio.run(_lag(settings, f"{settings.topic_prefix}.{group}", partitions))
        zero_polls = zero_polls + 1 if lag == 0 else 0
        if zero_polls >= 3:
            return
        time.sleep(0.5)
    raise AssertionError(f"group {group} did not catch up (lag {lag})")


def stop(worker: subprocess.Popen) -> None:
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 0


def stored(data_dir: Path, sql: str) -> list[dict]:
    with open_store(Settings(data_dir=data_dir)) as store:
        return store.query_rows(sql)


def event_ids(data_dir: Path) -> tuple[set[str], int]:
    """The ids of the interactions and train steps stored under ``data_dir``, and the FINAL row count."""
    sql = "SELECT event_id FROM interactions FINAL UNION ALL SELECT event_id FROM train_steps FINAL"
    rows = stored(data_dir, sql)
    return {r["event_id"] for r in rows}, len(rows)


def test_one_worker_stores_events_stats_alerts_and_dead_letters(kafka_settings: Settings, tmp_path: Path) -> None:
    asyncio.run(ensure_topics(kafka_settings, PARTITIONS))
    events = training_events(runs=3, steps=25)
    events.append(Event("run-1", TrainStep(step=25, loss=math.nan, learning_rate=1e-5)))
    emit(kafka_settings, events)

    async def send_garbage() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_settings.kafka)
        await producer.start()
        await producer.send_and_wait(topic_name(kafka_settings.topic_prefix, "interactions"), b"{not json", key=b"r")
        await producer.stop()

    asyncio.run(send_garbage())

    data_dir = tmp_path / "w1"
    dataset = tmp_path / "out" / "sft.jsonl"
    web_port = local_broker.free_port()
    terminal, reader, screen = read_terminal()
    worker = start_worker(
        kafka_settings,
        data_dir,
        "one",
        "--dataset",
        str(dataset),
        "--min-reward",
        "2",
        "--dedup-field",
        "prompt+completion",
        "--web-port",
        str(web_port),
        env={"COLUMNS": "160"},  # the progress line on one line of the terminal
        stderr=terminal,
    )
    os.close(terminal)
    try:
        wait_until_caught_up(kafka_settings, "one", [worker])
        with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/", timeout=10) as page:  # faust's web server
            assert page.status == 200
    finally:
        stop(worker)
        reader.join(60)

    # On a terminal the faust runtime shows the progress line too; its last count is the summary's, on stdout.
    # The worker consumes the events, the garbage record, and what it published itself but the dead letter.
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.decode(errors="replace"))
    frames = re.findall(r"worker .*?(\d+) consumed \(\d+/s\) · (\d+) stored \(\d+/s\)", shown)
    summary = (data_dir.parent / f"{data_dir.name}.log").read_text().splitlines()[-1]
    counts = re.fullmatch(
        r"worker stopped: (\d+) records consumed, (\d+) stored, (\d+) published, 1 dead letters .*", summary
    )
    assert counts, summary
    consumed, stored_, published = (int(n) for n in counts.groups())
    assert consumed == len(events) + 1 + published - 1 and stored_ == consumed - 1, summary
    assert frames and frames[-1] == (str(consumed), str(stored_)), shown

    ids, rows = event_ids(data_dir)
    assert ids == {e.event_id for e in events}
    assert rows == len(events)
    reward_stats = stored(
        data_dir, "SELECT run_id, count() AS n FROM reward_stats FINAL GROUP BY run_id ORDER BY run_id"
    )
    assert [r["run_id"] for r in reward_stats] == ["run-0", "run-1", "run-2"]
    group_stats = stored(data_dir, "SELECT run_id, step FROM group_stats FINAL")
    # Every step closed by a later step's interactions has its group stats (steps 0..23 of each run).
    assert {(r["run_id"], r["step"]) for r in group_stats} >= {(f"run-{r}", s) for r in range(3) for s in range(24)}
    alerts = stored(data_dir, "SELECT run_id, rule, severity FROM alerts FINAL")
    assert {"run_id": "run-1", "rule": "nonfinite", "severity": "critical"} in alerts

    async def dead_letters() -> list:
        consumer = AIOKafkaConsumer(
            topic_name(kafka_settings.topic_prefix, DEAD_LETTER),
            bootstrap_servers=kafka_settings.kafka,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            batches = await consumer.getmany(timeout_ms=5000)
            return [r for records in batches.values() for r in records]
        finally:
            await consumer.stop()

    # The training-data sink: one file per partition, every interaction with reward >= 2 once.
    written = [orjson.loads(line) for path in dataset.parent.glob("sft.p*.jsonl") for line in path.open()]
    kept = [e.payload for e in events if isinstance(e.payload, Interaction) and e.payload.reward >= 2]
    assert sorted(r["instruction"] for r in written) == sorted(p.prompt for p in kept)
    assert sorted(r["output"] for r in written) == sorted(p.completion for p in kept)

    letters = asyncio.run(dead_letters())
    assert len(letters) == 1
    assert letters[0].value == b"{not json"
    reason = dict(letters[0].headers)["reason"].decode()
    assert reason.startswith("invalid event:")


def test_two_workers_share_partitions_and_survive_sigkill(kafka_settings: Settings, tmp_path: Path) -> None:
    asyncio.run(ensure_topics(kafka_settings, PARTITIONS))
    first = training_events(runs=8, steps=15)
    emit(kafka_settings, first)
    dir_a, dir_b = tmp_path / "a", tmp_path / "b"
    a = start_worker(kafka_settings, dir_a, "pair")
    b = start_worker(kafka_settings, dir_b, "pair")
    second = [e for e in training_events(runs=8, steps=30) if e.payload.step >= 15]
    third = [e for e in training_events(runs=8, steps=40) if e.payload.step >= 30]
    try:
        # Wait until the group committed part of the first batch, then keep producing while A dies.
        deadline = time.monotonic() + 150
        total = len(first)
        while True:
            lag = asyncio.run(_lag(kafka_settings, f"{kafka_settings.topic_prefix}.pair"))
            if lag is not None and lag < total:
                break
            assert time.monotonic() < deadline, "the workers never committed"
            time.sleep(0.2)
        producer = threading.Thread(target=emit, args=(kafka_settings, second))
        producer.start()
        a.send_signal(signal.SIGKILL)
        a.wait(30)
        producer.join(60)
        a = start_worker(kafka_settings, dir_a, "pair")
        # Once both share the partitions, more traffic: a worker this fast may have taken all of the
        # earlier events alone while the other was starting or dead.
        wait_for_members(kafka_settings, "pair", 2)
        emit(kafka_settings, third)
        wait_until_caught_up(kafka_settings, "pair", [a, b])
    finally:
        for w in (a, b):
            if w.poll() is None:
                stop(w)

    produced = {e.event_id for e in first + second + third}
    ids_a, rows_a = event_ids(dir_a)
    ids_b, rows_b = event_ids(dir_b)
    missing = [
        (e.run_id, e.event_type, e.payload.step) for e in first + second + third if e.event_id not in ids_a | ids_b
    ]
    assert not missing
    assert ids_a | ids_b == produced
    assert (rows_a, rows_b) == (len(ids_a), len(ids_b))  # FINAL: no event twice within one store
    assert ids_a and ids_b  # both workers took a share
    runs_with_stats = {
        r["run_id"] for d in (dir_a, dir_b) for r in stored(d, "SELECT DISTINCT run_id FROM reward_stats FINAL")
    }
    assert runs_with_stats == {f"run-{r}" for r in range(8)}
