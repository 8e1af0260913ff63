"""The worker end to end on the embedded runtime: events in -> stats, alerts, dataset files and rows out."""

from __future__ import annotations

import asyncio
import gc
import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from conftest import ROOT

from trainwire.bus import Emitter, open_consumer
from trainwire.bus.admin import ensure_topics
from trainwire.bus.base import Consumer, Record
from trainwire.cli import main
from trainwire.config import Settings
from trainwire.events import Event, Interaction, TrainStep, encode
from trainwire.processors.dataset import DatasetConfig, DatasetFilter, TrainingExample
from trainwire.processors.health import HealthConfig
from trainwire.processors.stats import StatsConfig
from trainwire.runtime import WorkerOptions, build_core, build_pipeline, build_stages
from trainwire.runtime.pipeline import Pipeline, StageSet, WorkerCore
from trainwire.sinks.base import Sink
from trainwire.store.clickhouse import open_store
from trainwire.topics import event_topics

GROUPS, GENERATIONS = 4, 4


def reward_of(step: int, group: int, index: int) -> tuple[float, float]:
    """(accuracy, format) rewards; group 0 has the same reward everywhere (zero variance)."""
    if group == 0:
        return 1.0, 0.5
    return float((step + group + index) % 2), 0.25 * index


def training_events(steps: range) -> list[Event]:
    events: list[Event] = []
    for step in steps:
        for group in range(GROUPS):
            for index in range(GENERATIONS):
                acc, fmt = reward_of(step, group, index)
                events.append(
                    Event(
                        "grpo-run",
                        Interaction(
                            prompt=[{"role": "user", "content": f"step {step} question {group}"}],
                            completion=f"answer {step}-{group}-{index}",
                            reward=acc + fmt,
                            rewards={"accuracy": acc, "format": fmt},
                            step=step,
                            group_id=f"{step}:{group}",
                            group_index=index,
                            completion_tokens=10 + index,
                        ),
                    )
                )
        loss = math.nan if step == 5 else 1.0 / (step + 1)
        events.append(Event("grpo-run", TrainStep(step=step, loss=loss, grad_norm=1.0, learning_rate=1e-5)))
    return events


def options(tmp_path: Path) -> WorkerOptions:
    return WorkerOptions(
        stats=StatsConfig(step_window=4, time_window_s=3600, time_hop_s=600),
        health=HealthConfig(loss_horizon=0),
        dataset_output=tmp_path / "out" / "sft.jsonl",
        dataset_format="openai",
        dataset=DatasetConfig(min_reward=1.0, dedup_field="completion", split_ratio=(0.8, 0.1, 0.1)),
    )


def run_worker_once(settings: Settings, opts: WorkerOptions) -> None:
    with open_store(settings) as store:
        store.migrate()
        pipeline = build_pipeline(settings, store, opts)
        asyncio.run(pipeline.run(idle_exit_s=1.5))


def emit_all(settings: Settings, events: list[Event]) -> None:
    with Emitter(settings) as emitter:
        for e in events:
            emitter.emit(e)


def expected_total_mean(steps: range) -> float:
    values = [sum(reward_of(s, g, i)) for s in steps for g in range(GROUPS) for i in range(GENERATIONS)]
    return sum(values) / len(values)


def test_worker_end_to_end_with_a_restart(embedded_settings: Settings, tmp_path: Path) -> None:
    first, second = training_events(range(0, 6)), training_events(range(6, 12))
    emit_all(embedded_settings, first)
    run_worker_once(embedded_settings, options(tmp_path))
    emit_all(embedded_settings, second)
    run_worker_once(embedded_settings, options(tmp_path))  # a new process: state comes from the data dir

    produced = first + second
    with open_store(embedded_settings) as store:
        counts = store.query_rows(
            "SELECT (SELECT count() FROM interactions FINAL) AS i, (SELECT count() FROM train_steps FINAL) AS t"
        )[0]
        assert counts == {"i": 12 * GROUPS * GENERATIONS, "t": 12}
        stored = {r["event_id"] for r in store.query_rows("SELECT event_id FROM interactions FINAL")}
        assert stored == {e.event_id for e in produced if e.event_type == "interaction"}

        windows = store.query_rows(
            "SELECT step_start, step_end, reward_fn, count, mean FROM reward_stats FINAL "
            "WHERE window = 'steps' ORDER BY step_start, reward_fn"
        )
        # steps 0-3 and 4-7 are closed (a later step arrived); 8-11 stays open for the next events.
        assert [(w["step_start"], w["reward_fn"], w["count"]) for w in windows] == [
            (s, fn, 4 * GROUPS * GENERATIONS) for s in (0, 4) for fn in ("accuracy", "format", "total")
        ]
        total = {w["step_start"]: w["mean"] for w in windows if w["reward_fn"] == "total"}
        assert math.isclose(total[0], expected_total_mean(range(0, 4)))
        assert math.isclose(total[4], expected_total_mean(range(4, 8)))  # spans the restart

        groups = store.query_rows(
            "SELECT step, groups, zero_variance_groups, zero_variance_share FROM group_stats FINAL ORDER BY step"
        )
        assert [g["step"] for g in groups] == list(range(11))
        assert all(
            (g["groups"], g["zero_variance_groups"], g["zero_variance_share"]) == (GROUPS, 1, 0.25) for g in groups
        )

        alerts = store.query_rows("SELECT rule, step, severity, message FROM alerts FINAL WHERE rule = 'nonfinite'")
        assert [(a["rule"], a["step"]) for a in alerts] == [("nonfinite", 5)]
        assert "loss" in alerts[0]["message"]

    kept = {
        f"answer {s}-{g}-{i}"
        for s in range(12)
        for g in range(GROUPS)
        for i in range(GENERATIONS)
        if sum(reward_of(s, g, i)) >= 1.0
    }
    written = []
    for split in ("train", "val", "test"):
        path = tmp_path / "out" / f"sft_{split}.jsonl"
        for line in path.read_text().splitlines():
            record = orjson.loads(line)
            assert [m["role"] for m in record["messages"]] == ["user", "assistant"]
            written.append(record["messages"][-1]["content"])
    assert sorted(written) == sorted(kept)  # every kept example once, across the restart


def test_worker_replays_nothing_twice_after_a_lost_commit(embedded_settings: Settings, tmp_path: Path) -> None:
    """A crash after the flush but before the commit: the records come again, nothing doubles."""
    emit_all(embedded_settings, training_events(range(0, 3)))
    run_worker_once(embedded_settings, options(tmp_path))
    offsets = embedded_settings.data_dir / "bus" / "_groups" / "trainwire-worker.json"
    json.loads(offsets.read_text())
    offsets.unlink()  # the group forgets its position: every record is delivered again
    run_worker_once(embedded_settings, options(tmp_path))
    emit_all(embedded_settings, training_events(range(3, 5)))  # closes the stats window of steps 0-3
    run_worker_once(embedded_settings, options(tmp_path))
    with open_store(embedded_settings) as store:
        assert store.query_rows("SELECT count() AS n FROM interactions FINAL") == [{"n": 5 * GROUPS * GENERATIONS}]
        assert store.query_rows("SELECT count() AS n FROM group_stats FINAL") == [{"n": 4}]
        # The replayed steps 0-2 were already in the restored state: the window counts them once.
        window = store.query_rows(
            "SELECT count, mean FROM reward_stats FINAL "
            "WHERE window = 'steps' AND step_start = 0 AND reward_fn = 'total'"
        )
        assert window[0]["count"] == 4 * GROUPS * GENERATIONS
        assert math.isclose(window[0]["mean"], expected_total_mean(range(0, 4)))
    lines = sum(len((tmp_path / "out" / f"sft_{s}.jsonl").read_text().splitlines()) for s in ("train", "val", "test"))
    assert lines == sum(
        1 for s in range(5) for g in range(GROUPS) for i in range(GENERATIONS) if sum(reward_of(s, g, i)) >= 1.0
    )


class Collected(Sink):
    """A sink that keeps what it is given.

    A recorder, not a stand-in for ClickHouse: this test compares what handle and handle_batch
    hand the sinks, which the real sink only turns into rows at its flush (not reached here).
    """

    def __init__(self) -> None:
        self.added: list[tuple[int, Event]] = []

    def add(self, event: Event, record: Record) -> None:
        self.added.append((record.offset, event))

    def flush(self) -> None:
        pass


def test_handle_batch_is_handle_on_each_record_with_the_collector_paused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = "trainwire.interactions"
    records = [Record(topic, 0, i, e.key, encode(e), 0) for i, e in enumerate(training_events(range(6)))]
    records[7] = Record(topic, 0, 7, b"grpo-run", b"{not an event", 0)
    settings = Settings(data_dir=tmp_path)
    outcomes = []
    for batched in (False, True):
        built = build_core(settings, None, WorkerOptions())
        sink, published = Collected(), []
        core = WorkerCore([sink], built.publisher, built.dead_letters, settings.topic_prefix)
        # Recorded instead of published: the test compares what each way hands the publisher.
        monkeypatch.setattr(core.publisher, "add", published.append)
        stages = StageSet(build_stages(options(tmp_path), tmp_path / f"out-{batched}" / "sft.jsonl"))
        if batched:
            core.handle_batch(iter(records), stages)
        else:
            for record in records:
                core.handle(record, stages)
        stages.close()
        outcomes.append((core.records_in, core.dead_letters.count, sink.added, published, stages.snapshot()))
    assert outcomes[0] == outcomes[1]
    records_in, dead, added, published, _ = outcomes[1]
    assert (records_in, dead, len(added)) == (len(records), 1, len(records) - 1)
    assert any(m.topic == "trainwire.group_stats" for m in published)
    assert any(m.topic == "trainwire.dead_letter" for m in published)
    assert gc.isenabled()  # paused within the batch only
    gc.disable()
    try:
        core.handle_batch([], stages)
        assert not gc.isenabled()  # a caller's own pause is left as it was
    finally:
        gc.enable()


# --------------------------------------------------------------------------- the dataset options of `trainwire worker`

DATASET_ARGS = [
    "--dataset-format",
    "sharegpt",
    "--min-length",
    "4",
    "--max-length",
    "12",
    "--no-deduplicate",
    "--split-ratio",
    "0.5,0.5",
    "--seed",
    "7",
]
"""Every filter option away from its default, so each one shows in what the worker writes."""
DATASET_CONFIG = DatasetConfig(min_length=4, max_length=12, deduplicate=False, split_ratio=(0.5, 0.5), seed=7)


def dataset_events() -> list[Event]:
    """Interactions of every length around the limits, each prompt twice (dedup would drop the copies)."""
    return [
        Event("cli-run", Interaction(prompt=f"question {i}", completion="x" * (1 + i % 16), step=i))
        for i in range(48)
        for _copy in range(2)
    ]


def expected_splits(events: list[Event], config: DatasetConfig) -> dict[str, list[str]]:
    """What the filter keeps of ``events`` under ``config``: prompt per split, sorted."""
    flt = DatasetFilter(config)
    out: dict[str, list[str]] = {name: [] for name in config.splits}
    for e in events:
        kept = flt.check(e.payload)
        if isinstance(kept, TrainingExample):
            out[kept.split].append(kept.prompt)
    return {name: sorted(prompts) for name, prompts in out.items()}


def written_splits(files: dict[str, list[Path]]) -> dict[str, list[str]]:
    """The human turn of every sharegpt record in each split's files, sorted."""
    out = {}
    for name, paths in files.items():
        records = [orjson.loads(line) for path in paths for line in path.read_text().splitlines()]
        assert all([t["from"] for t in r["conversations"]] == ["human", "gpt"] for r in records)
        out[name] = sorted(r["conversations"][0]["value"] for r in records)
    return out


def test_dataset_filter_options_reach_the_sink_in_the_embedded_runtime(embedded_settings: Settings, tmp_path: Path):
    events = dataset_events()
    emit_all(embedded_settings, events)
    out = tmp_path / "out" / "sft.jsonl"
    args = ["--data-dir", str(embedded_settings.data_dir), "worker", "--until-idle", "1.5", "--no-monitor"]
    result = CliRunner().invoke(main, [*args, "--dataset", str(out), *DATASET_ARGS])
    assert result.exit_code == 0, result.output

    expected = expected_splits(events, DATASET_CONFIG)
    assert written_splits({name: [out.with_name(f"sft_{name}.jsonl")] for name in ("train", "val")}) == expected
    kept = [p for prompts in expected.values() for p in prompts]
    assert len(kept) == 2 * 9 * 3  # lengths 4..12 of 1..16, 3 prompts per length, both copies (no dedup)
    default_seed = DatasetConfig(min_length=4, max_length=12, deduplicate=False, split_ratio=(0.5, 0.5))
    assert expected != expected_splits(events, default_seed)  # --seed 7 made a difference


def test_dataset_options_need_a_dataset_and_bad_values_name_their_option(embedded_settings: Settings):
    runner = CliRunner()
    base = ["--data-dir", str(embedded_settings.data_dir), "worker", "--until-idle", "0.1", "--no-store"]
    result = runner.invoke(main, [*base, "--min-length", "5", "--no-deduplicate"])
    assert result.exit_code == 2
    assert "--min-length, --deduplicate/--no-deduplicate: only for the fine-tuning data; add --dataset FILE" in (
        " ".join(result.output.split())
    )
    result = runner.invoke(main, [*base, "--dataset", "x.jsonl", "--dedup-field", "answer"])
    assert result.exit_code == 2
    assert "Invalid value for --dedup-field" in result.output
    result = runner.invoke(main, [*base, "--dataset", "x.jsonl", "--min-length", "9", "--max-length", "3"])
    assert result.exit_code == 2
    assert "Invalid value for --min-length" in result.output


def test_dataset_filter_options_reach_the_sink_in_the_faust_runtime(kafka_settings: Settings, tmp_path: Path):
    asyncio.run(ensure_topics(kafka_settings, 1))
    events = dataset_events()
    with Emitter(kafka_settings) as emitter:
        for e in events:
            emitter.emit(e)
        assert emitter.flush(60)
    out = tmp_path / "out" / "sft.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "trainwire",
        "--kafka",
        kafka_settings.kafka,
        "--data-dir",
        str(tmp_path / "data"),
        "--topic-prefix",
        kafka_settings.topic_prefix,
        "worker",
        "--runtime",
        "faust",
        "--partitions",
        "1",
        "--until-idle",
        "4",
        "--no-store",
        "--no-monitor",
        "--dataset",
        str(out),
        *DATASET_ARGS,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    # one file per partition and split: sft.p0_train.jsonl, sft.p0_val.jsonl
    files = {name: sorted(out.parent.glob(f"sft.p*_{name}.jsonl")) for name in ("train", "val")}
    assert all(files.values()), sorted(out.parent.iterdir())
    assert written_splits(files) == expected_splits(events, DATASET_CONFIG)


class GatedSink(Sink):
    """Keeps the offsets it flushes; its first flush waits until the runtime read records ahead,
    and its second fails as a crash would (a real flush failure is not backpressure: the worker
    stops without committing)."""

    def __init__(self, read_ahead: threading.Event) -> None:
        self.read_ahead = read_ahead
        self.pending: list[tuple[str, int]] = []
        self.flushed: list[tuple[str, int]] = []
        self.flushes = 0

    def add(self, event: Event, record: Record) -> None:
        self.pending.append((record.topic, record.offset))

    def flush(self) -> None:
        self.flushes += 1
        if self.flushes == 2:
            raise RuntimeError("the worker dies in its second flush")
        assert self.read_ahead.wait(20), "the runtime read nothing ahead during the flush"
        self.flushed, self.pending = self.flushed + self.pending, []


class SmallPolls:
    """The real embedded consumer, taking at most 100 records a poll and telling when the runtime
    polled without waiting (reading ahead during a flush) and got records."""

    def __init__(self, consumer: Consumer, read_ahead: threading.Event) -> None:
        self.consumer = consumer
        self.read_ahead = read_ahead

    async def getmany(self, timeout_ms: int = 1000, max_records: int = 10_000) -> list[Record]:
        records = await self.consumer.getmany(timeout_ms, min(max_records, 100))
        if timeout_ms == 0 and records:
            self.read_ahead.set()
        return records

    def __getattr__(self, name: str) -> object:
        return getattr(self.consumer, name)


def test_records_read_during_a_flush_are_not_committed_by_it(embedded_settings: Settings) -> None:
    emit_all(embedded_settings, training_events(range(12)))
    read_ahead = threading.Event()
    sink = GatedSink(read_ahead)
    built = build_core(embedded_settings, None, WorkerOptions())
    core = WorkerCore([sink], built.publisher, built.dead_letters, embedded_settings.topic_prefix)
    group = "read-ahead"
    consumer = open_consumer(embedded_settings, event_topics(embedded_settings.topic_prefix), group)
    pipeline = Pipeline(SmallPolls(consumer, read_ahead), core, max_batch=100)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="second flush"):
        asyncio.run(pipeline.run())
    assert len(sink.flushed) == 100  # the first poll; the next ones were read during its flush

    async def read_again() -> list[tuple[str, int]]:
        again = open_consumer(embedded_settings, event_topics(embedded_settings.topic_prefix), group)
        await again.start()
        try:
            return [(r.topic, r.offset) for r in await again.getmany(timeout_ms=500)]
        finally:
            await again.stop()

    everything = [(r.topic, r.offset) for r in asyncio.run(read_all(embedded_settings))]
    assert sorted(sink.flushed + asyncio.run(read_again())) == sorted(everything)  # none lost, none twice


async def read_all(settings: Settings) -> list[Record]:
    consumer = open_consumer(settings, event_topics(settings.topic_prefix), "everything")
    await consumer.start()
    try:
        return await consumer.getmany(timeout_ms=500)
    finally:
        await consumer.stop()
