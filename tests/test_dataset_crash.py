"""The fine-tuning files after real crashes: a worker process killed with SIGKILL, again and again.

The worker (``python -m trainwire worker --dataset ...`` on the embedded bus) is killed while it
writes, then started again; after the last run the files must hold every expected example once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from conftest import ROOT

from trainwire.bus import make_transport
from trainwire.bus.publisher import event_message
from trainwire.config import Settings
from trainwire.errors import TrainwireError
from trainwire.events import Event, Interaction
from trainwire.processors.dataset import DatasetConfig, DatasetFilter, TrainingExample
from trainwire.sinks.dataset import DatasetSink, split_paths, to_alpaca


def publish(settings: Settings, events: list[Event]) -> None:
    """Put ``events`` on the bus in one batch (serialized up front: no emitter thread in between)."""

    async def main() -> None:
        transport = make_transport(settings)
        await transport.start()
        try:
            assert await transport.send_batch([event_message(settings.topic_prefix, e) for e in events]) == []
        finally:
            await transport.stop()

    asyncio.run(main())


def dataset_worker(settings: Settings, output: Path, *extra: str) -> subprocess.Popen:
    """``trainwire worker`` writing only the fine-tuning files (no ClickHouse, no stats)."""
    cmd = [
        sys.executable,
        "-m",
        "trainwire",
        "--data-dir",
        str(settings.data_dir),
        "worker",
        "--no-store",
        "--no-monitor",
        "--dataset",
        str(output),
        "--split-ratio",
        "0.8,0.2",
        "--flush-interval",
        "0.2",
        *extra,
    ]
    log = open(output.parent / "worker.log", "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ})


def data_lines(paths: dict[str | None, Path]) -> dict[str, list[bytes]]:
    return {str(split): (path.read_bytes().splitlines() if path.exists() else []) for split, path in paths.items()}


def test_sigkilled_worker_writes_every_example_exactly_once(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    events = [
        Event(
            "run-1",
            Interaction(
                prompt=f"question {i % 45_000}",  # the last 5,000 repeat earlier prompts: duplicates
                completion=f"answer {i} " + "x" * (i % 50),
                reward=1.0,
                success=i % 13 != 0,
            ),
        )
        for i in range(50_000)
    ]
    publish(settings, events)
    config = DatasetConfig(split_ratio=(0.8, 0.2))
    expected: dict[str, Counter[bytes]] = {"train": Counter(), "val": Counter()}
    flt = DatasetFilter(config)
    for e in events:
        out = flt.check(e.payload, source_id=e.event_id)
        if isinstance(out, TrainingExample):
            expected[str(out.split)][orjson.dumps(to_alpaca(out.prompt, out.completion))] += 1
    total = sum(sum(c.values()) for c in expected.values())
    output = tmp_path / "out" / "sft.jsonl"
    output.parent.mkdir()
    paths = split_paths(output, config.splits)

    kills = 0
    for share in (0.1, 0.25, 0.4, 0.55, 0.7, 0.85):  # SIGKILL once the files hold this share of the lines
        worker = dataset_worker(settings, output)
        while sum(len(v) for v in data_lines(paths).values()) < share * total and worker.poll() is None:
            time.sleep(0.01)
        assert worker.poll() is None, "the worker stopped before it was killed"
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        kills += 1
    assert kills >= 5
    last = dataset_worker(settings, output, "--until-idle", "2")
    assert last.wait(120) == 0

    got = {split: Counter(lines) for split, lines in data_lines(paths).items()}
    for split in expected:
        missing = expected[split] - got[split]
        extra = got[split] - expected[split]
        assert not missing and not extra, f"{split}: {sum(missing.values())} lost, {sum(extra.values())} extra"


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 256 KiB tmpfs: a real full disk."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=True)


def test_after_a_write_the_full_disk_refused_no_flush_succeeds_and_the_replay_writes_it(small_disk: Path) -> None:
    examples = [TrainingExample(f"q{i}", "x" * 1000, None, f"k{i}", f"e{i}", "r") for i in range(210)]
    filler = small_disk / "filler"
    filler.write_bytes(b"f" * 64 * 1024)
    path = small_disk / "sft.jsonl"
    sink = DatasetSink(path, "alpaca")
    failed = []
    for example in examples:
        try:
            sink.add(example)
        except TrainwireError as exc:  # a worker dead-letters the record and goes on with the next ones
            assert "No space left on device" in str(exc) and str(path) in str(exc)
            failed.append(example.source_id)
            filler.unlink()  # and room comes back: the next examples are written
    assert len(failed) == 1
    with pytest.raises(TrainwireError, match="No space left"):
        sink.flush()  # the checkpoint fails: nothing is committed past the example that is not in the file
    with pytest.raises(TrainwireError, match="No space left"):
        sink.close()

    subprocess.run(["mount", "-o", "remount,size=1m", str(small_disk)], check=True)
    with DatasetSink(path, "alpaca") as replay:  # the worker's restart reads from the last commit again
        for example in examples:
            replay.add(example)
    got = [orjson.loads(line)["instruction"] for line in path.read_bytes().splitlines()]
    assert sorted(got) == sorted(e.prompt for e in examples)
