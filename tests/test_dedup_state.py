"""A worker's state as the data set grows: the dataset's dedup keys saved once each, never in one value.

On Kafka the faust worker's state is a changelog topic whose messages Kafka caps at 1 MiB; on the
embedded bus it is a folder of files. In both, a checkpoint writes the snapshot (small, whatever
the data set) and the keys added since the last checkpoint, in segments of bounded size. A
snapshot that is large for other reasons (interactions waiting for their judge score) goes to the
changelog in parts.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import orjson
import pytest
from test_dataset_crash import publish
from test_faust_worker import start_worker, stop, wait_until_caught_up

from trainwire.bus.admin import ensure_topics
from trainwire.bus.base import Record
from trainwire.config import Settings
from trainwire.events import Event, Interaction, JudgeScore
from trainwire.processors.base import StateError
from trainwire.processors.dataset import DatasetConfig, DatasetProcessor
from trainwire.processors.stats import StatsConfig
from trainwire.runtime import WorkerOptions, build_pipeline
from trainwire.runtime.pipeline import KEY_SEGMENT_BYTES, STATE_NAME, StageSet
from trainwire.runtime.stages import DatasetStage, MonitorStage, StateStore

UNIQUE = 200_000
"""Unique prompts in one partition for the faust worker (about 50,000 made its state too big for one message)."""
EMBEDDED_UNIQUE = 60_000
"""Enough for the embedded worker: what is checked there is that its snapshot does not grow with the keys."""


def interactions(first: int, count: int, run: str = "run-1") -> list[Event]:
    """``count`` interactions with the prompts ``q{first}`` .. of one run (so of one partition)."""
    return [
        Event(run, Interaction(prompt=f"q{i}", completion=f"a{i}", reward=1.0)) for i in range(first, first + count)
    ]


def instructions(paths: list[Path]) -> list[str]:
    return [orjson.loads(line)["instruction"] for path in paths for line in path.read_bytes().splitlines()]


def test_the_snapshot_stays_small_and_keys_are_saved_once_in_bounded_segments(tmp_path: Path) -> None:
    state = StateStore(tmp_path / "state")
    stages = StageSet([DatasetStage(tmp_path / "sft.jsonl")])
    for event in interactions(0, 60_000):
        stages.stages[0].process(event)
    segments = stages.new_key_segments()
    assert sum(len(keys) for _, _, keys in segments) == 60_000
    assert [number for _, number, _ in segments] == list(range(len(segments)))
    assert all(len(orjson.dumps(keys)) <= KEY_SEGMENT_BYTES for _, _, keys in segments)
    assert len(segments) > 1
    for stage, number, keys in segments:
        state.append_key_segment(STATE_NAME, stage, number, keys)
    snapshot = stages.snapshot()
    assert len(json.dumps(snapshot)) < 2000  # was every key: about 1.1 MB for 60,000 keys
    state.save(STATE_NAME, snapshot)
    assert stages.new_key_segments() == []  # each key is saved once

    stages.stages[0].process(interactions(60_000, 1)[0])  # a checkpoint that saved its keys, then crashed
    ((stage, number, keys),) = stages.new_key_segments()
    state.append_key_segment(STATE_NAME, stage, number, keys)
    stages.close()

    restored = StageSet([DatasetStage(tmp_path / "sft.jsonl")])
    saved = state.load(STATE_NAME)
    restored.restore(saved, lambda stage, count: state.load_key_segments(STATE_NAME, stage, count))
    processor = restored.stages[0].processor
    assert len(processor.filter.seen) == 60_000  # not the key of the crashed checkpoint
    assert processor.process(interactions(59_999, 1)[0]) == []  # a duplicate
    assert len(processor.process(interactions(60_000, 1)[0])) == 1  # replayed: kept again
    ((_, number, _),) = restored.new_key_segments()
    assert number == len(segments)  # written over the segment the crashed checkpoint left
    restored.close()
    with pytest.raises(StateError, match=r"dataset\.keys has \d+ key segments; the snapshot includes 99"):
        state.load_key_segments(STATE_NAME, "dataset", 99)


def test_a_snapshot_saved_as_spaced_json_before_orjson_still_loads(tmp_path: Path) -> None:
    stages = StageSet([MonitorStage(StatsConfig(step_window=2)), DatasetStage(tmp_path / "sft.jsonl")])
    for i, event in enumerate(interactions(0, 40)):
        stages.process(Record("t", 0, i, None, b"", 0), event)
    snapshot = stages.snapshot()
    stages.close()
    state = StateStore(tmp_path / "state")
    state.save(STATE_NAME, snapshot)
    assert state.load(STATE_NAME) == snapshot
    (tmp_path / "state" / f"{STATE_NAME}.json").write_text(json.dumps(snapshot))  # as saved before
    assert state.load(STATE_NAME) == snapshot


def test_an_older_snapshot_with_the_keys_inside_loads_and_saves_them_apart() -> None:
    first = DatasetProcessor(DatasetConfig())
    first.run(interactions(0, 3), flush=False)
    older = first.snapshot()
    older["state"]["filter"]["seen"] = sorted(first.take_new_keys())  # as snapshots held them before
    second = DatasetProcessor(DatasetConfig())
    second.restore(older)
    assert second.process(interactions(2, 1)[0]) == []
    assert sorted(second.take_new_keys()) == older["state"]["filter"]["seen"]


def test_embedded_worker_keeps_its_keys_out_of_its_snapshot_and_dedups_after_a_restart(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    output = tmp_path / "out" / "sft.jsonl"
    options = WorkerOptions(store=False, monitor=False, dataset_output=output)
    publish(settings, interactions(0, EMBEDDED_UNIQUE))

    def run_until_idle() -> None:
        asyncio.run(build_pipeline(settings, None, options).run(idle_exit_s=0.5))

    run_until_idle()
    state_dir = settings.data_dir / "state" / options.group
    assert (state_dir / "stages.json").stat().st_size < 2000
    assert len(instructions([output])) == EMBEDDED_UNIQUE
    publish(settings, interactions(EMBEDDED_UNIQUE - 500, 1000))  # 500 seen before the restart, 500 new
    run_until_idle()
    got = instructions([output])
    assert len(got) == len(set(got)) == EMBEDDED_UNIQUE + 500


def test_faust_worker_dedups_200k_prompts_of_one_partition_across_a_restart(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    asyncio.run(ensure_topics(kafka_settings, 1))
    publish(kafka_settings, interactions(0, UNIQUE))
    data_dir, output = tmp_path / "w", tmp_path / "out" / "sft.jsonl"
    data_dir.mkdir()
    args = ("--no-store", "--no-monitor", "--dataset", str(output))
    worker = start_worker(kafka_settings, data_dir, "dedup", *args)
    wait_until_caught_up(kafka_settings, "dedup", [worker], partitions=1)
    stop(worker)
    files = [output.with_name("sft.p0.jsonl")]
    assert len(instructions(files)) == UNIQUE

    publish(kafka_settings, interactions(UNIQUE - 500, 1000))  # 500 seen before the restart, 500 new
    worker = start_worker(kafka_settings, data_dir, "dedup", *args)
    wait_until_caught_up(kafka_settings, "dedup", [worker], partitions=1)
    stop(worker)
    got = instructions(files)
    assert len(got) == len(set(got)) == UNIQUE + 500
    assert set(got) == {f"q{i}" for i in range(UNIQUE + 500)}


def test_faust_worker_keeps_a_snapshot_over_1_mib_across_a_restart(kafka_settings: Settings, tmp_path: Path) -> None:
    asyncio.run(ensure_topics(kafka_settings, 1))
    waiting = [  # interactions that wait for their judge score in the snapshot: about 1.6 MB of them
        Event("run-1", Interaction(prompt=f"q{i}", completion=f"{i} " + "x" * 1000, reward=1.0)) for i in range(1500)
    ]
    publish(kafka_settings, waiting)
    data_dir, output = tmp_path / "w", tmp_path / "out" / "sft.jsonl"
    data_dir.mkdir()
    args = ("--no-store", "--no-monitor", "--dataset", str(output), "--min-judge-score", "0.5")
    worker = start_worker(kafka_settings, data_dir, "judged", *args)
    wait_until_caught_up(kafka_settings, "judged", [worker], partitions=1)
    stop(worker)

    scores = [Event("run-1", JudgeScore(e.event_id, "judge", "v1", score=5, score_normalized=0.9)) for e in waiting]
    publish(kafka_settings, scores)
    worker = start_worker(kafka_settings, data_dir, "judged", *args)
    wait_until_caught_up(kafka_settings, "judged", [worker], partitions=1)
    stop(worker)
    assert sorted(instructions([output.with_name("sft.p0.jsonl")])) == sorted(f"q{i}" for i in range(1500))
