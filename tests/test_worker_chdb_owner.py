"""A worker while another process owns the embedded chdb and keeps it (a notebook's ``open_store()``).

The owner is a real second process; the worker is ``python -m trainwire worker``. The worker
stores through the owner, names it, and owns chdb once the owner exits.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT
from test_dataset_crash import publish

from trainwire.config import Settings
from trainwire.events import Event, Interaction
from trainwire.store.clickhouse import OwnerClientStore, open_store

NOTEBOOK = """
import sys
from trainwire.config import Settings
from trainwire.store.clickhouse import EmbeddedStore, open_store
store = open_store(Settings(data_dir=sys.argv[1]))
assert isinstance(store, EmbeddedStore), type(store)
store.migrate()
print("ready", flush=True)
sys.stdin.read()  # until the test closes stdin: the notebook is shut
store.close()
"""


def interactions(first: int, count: int) -> list[Event]:
    return [
        Event("run-1", Interaction(prompt=f"q{i}", completion=f"a{i}", reward=1.0)) for i in range(first, first + count)
    ]


def stored_ids(store) -> list[str]:
    return sorted(r["event_id"] for r in store.query_rows("SELECT event_id FROM interactions FINAL"))


def owner_pid(settings: Settings) -> int | None:
    """The pid in the chdb owner file (None while there is none)."""
    try:
        return json.loads((settings.data_dir / "clickhouse.owner.json").read_text())["pid"]
    except (OSError, ValueError):
        return None


def wait_for(condition, what: str, worker: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert worker.poll() is None, f"the worker exited with {worker.returncode} while waiting for {what}"
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.2)


def test_worker_stores_through_an_owner_that_keeps_chdb_then_owns_it(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    before, after = interactions(0, 50), interactions(50, 50)
    publish(settings, before)
    notebook = subprocess.Popen(
        [sys.executable, "-c", NOTEBOOK, str(settings.data_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert notebook.stdout.readline().strip() == "ready"
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "trainwire", "--data-dir", str(settings.data_dir), "worker", "--no-monitor"],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ},
        )
    remote = open_store(settings)
    assert isinstance(remote, OwnerClientStore) and remote.owner_pid == notebook.pid
    wait_for(lambda: len(stored_ids(remote)) == len(before), "the events stored through the notebook", worker)
    remote.close()
    text = log.read_text()
    assert f"held by pid {notebook.pid} (" in text and "statements go through that process" in text

    notebook.stdin.close()  # the notebook is shut: the worker owns chdb from its next statement on
    assert notebook.wait(30) == 0
    publish(settings, after)
    wait_for(lambda: owner_pid(settings) == worker.pid, "the worker to own chdb", worker)
    with open_store(settings) as store:
        assert isinstance(store, OwnerClientStore)
        wait_for(lambda: len(stored_ids(store)) == len(before + after), "the later events stored", worker)
        assert stored_ids(store) == sorted(e.event_id for e in before + after)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 0, log.read_text()
