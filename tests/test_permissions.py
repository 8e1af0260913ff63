"""What trainwire creates under its data directory is private (0700 folders, 0600 files), whatever the umask."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from helpers import read_events

from trainwire.bus import Emitter
from trainwire.bus.base import Message, Refused
from trainwire.bus.rejected import RejectedEvents
from trainwire.config import Settings
from trainwire.events import Event, Interaction, TrainStep
from trainwire.processors.dataset import TrainingExample
from trainwire.sinks.dataset import DatasetSink
from trainwire.store.clickhouse import open_store


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def modes(root: Path, skip: str | None = None) -> dict[str, str]:
    """``{relative path: octal mode}`` of ``root`` and everything under it (not under ``root/skip``).

    Symbolic links (chdb's table folders) are left out: their own mode means nothing on Linux.
    """
    out = {".": oct(stat.S_IMODE(root.stat().st_mode))}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_symlink():
            continue
        if skip is None or relative.parts[0] != skip or relative == Path(skip):
            out[str(relative)] = oct(stat.S_IMODE(path.lstat().st_mode))
    return out


def not_private(found: dict[str, str], root: Path) -> dict[str, str]:
    return {name: mode for name, mode in found.items() if mode != ("0o700" if (root / name).is_dir() else "0o600")}


def events(n: int) -> list[Event]:
    return [Event("perm", Interaction(prompt=f"q{i}", completion="secret", reward=1.0, step=i)) for i in range(n)]


def test_library_creates_private_folders_and_files_under_umask_022(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    settings = Settings(data_dir=data_dir)
    with umask(0o022):
        with Emitter(settings) as emitter:
            for event in events(20):
                emitter.emit(event)
            emitter.emit(Event("perm", TrainStep(step=1)))
        read_events(settings, expected=21)  # a consumer group: its lock and committed offsets
        rejected = Message("trainwire.interactions", b"k", b'{"event_type": "interaction"}')
        RejectedEvents(data_dir).append(Refused(rejected, "too large"))
        sink = DatasetSink(data_dir / "datasets" / "train.jsonl")
        sink.add(TrainingExample(prompt="q", completion="a", split=None, key="", source_id="i1", run_id="perm"))
        sink.flush()
        sink.close()
        with open_store(settings) as store:  # the chdb owner: lock file, owner file, chdb's folder
            store.migrate()
            found = modes(data_dir, skip="clickhouse")
    for expected in ("bus/trainwire.interactions.log", "bus/_groups/test-reader.lock", "bus/_groups/test-reader.json"):
        assert expected in found
    assert {"rejected/events.jsonl", "clickhouse.lock", "clickhouse.owner.json", "clickhouse"} <= set(found)
    assert any(name.startswith("datasets/train") for name in found)
    assert not_private(found, data_dir) == {}


def test_the_command_keeps_chdb_data_private_too(tmp_path: Path) -> None:
    """The trainwire command sets umask 077: chdb's own files, which it creates itself, are 0600."""
    data_dir = tmp_path / "data"
    with umask(0o022), Emitter(Settings(data_dir=data_dir)) as emitter:
        for event in events(10):
            emitter.emit(event)
    worker = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainwire.cli",
            "--data-dir",
            str(data_dir),
            "worker",
            "--until-idle",
            "2",
            "--dataset",
            str(data_dir / "examples.jsonl"),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        preexec_fn=lambda: os.umask(0o022),
    )
    assert worker.returncode == 0, worker.stdout + worker.stderr
    found = modes(data_dir)
    assert any(name.startswith("clickhouse/") and not (data_dir / name).is_dir() for name in found)
    assert "examples.jsonl" in found
    assert not_private(found, data_dir) == {}


def test_worker_state_import_ledger_probe_list_and_judge_cache_are_private_under_umask_022(tmp_path: Path) -> None:
    """The files a library caller (not the command, whose umask is 077) makes beside the bus and the store."""
    from trainwire.judge.client import JudgeCache
    from trainwire.producers.importers import Ledger
    from trainwire.producers.probe import DoneList
    from trainwire.runtime.stages import StateStore

    data_dir = tmp_path / "data"
    with umask(0o022):
        data_dir.mkdir(mode=0o700)
        StateStore(data_dir / "state" / "group").save("stages", {"step": 1})
        Ledger(data_dir).add({"path": "a.jsonl", "size": 1, "complete": True})
        DoneList(data_dir / "probe" / "done.jsonl").add_many([("run", "model", "sample")])
        cache = JudgeCache(data_dir / "judge" / "cache.sqlite")
        cache.put("key", "Score: 5", 1.0)
    found = modes(data_dir)
    assert {"state/group/stages.json", "probe/done.jsonl", "judge/cache.sqlite"} <= found.keys()
    assert any(name.startswith("imports") or "ledger" in name for name in found), found
    assert not_private(found, data_dir) == {}
