"""A worker says each alert once per data directory (issue 15, item 14): ``trainwire worker`` after
``trainwire demo`` (another consumer group, so it reads everything again) does not print the
demo's alerts again, and still prints new ones. Real worker processes over one data directory.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

from trainwire.bus import Emitter
from trainwire.config import Settings
from trainwire.events import Event, TrainStep
from trainwire.store.clickhouse import open_store


def emit_steps(settings: Settings, steps: dict[int, dict[str, float]]) -> None:
    emitter = Emitter(settings)
    for step, numbers in steps.items():
        emitter.emit(Event(run_id="grpo-alerts", payload=TrainStep(step=step, **numbers)))
    emitter.close()


def trainwire(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "trainwire.cli", "--data-dir", str(data_dir), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    return done


def alert_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("ALERT ")]


def test_a_new_worker_group_does_not_print_old_alerts_again(embedded_settings: Settings):
    data_dir = embedded_settings.data_dir
    emit_steps(embedded_settings, {0: {"loss": 1.0}, 1: {"loss": math.nan}, 2: {"loss": 0.9}})
    first = trainwire(data_dir, "worker", "--group", "demo-run", "--until-idle", "1")
    [line] = alert_lines(first)
    assert line.startswith("ALERT [critical] nonfinite run=grpo-alerts")

    again = trainwire(data_dir, "worker", "--until-idle", "1")  # the default group: reads it all again
    assert alert_lines(again) == []
    with open_store(embedded_settings) as store:
        assert store.query_rows("SELECT count() AS n FROM alerts FINAL") == [{"n": 1}]  # stored once, said once

    emit_steps(embedded_settings, {100: {"loss": 0.8, "grad_norm": math.inf}, 101: {"loss": 0.7}})  # past the cooldown
    new = trainwire(data_dir, "worker", "--until-idle", "1")
    [line] = alert_lines(new)
    assert line.startswith("ALERT [critical] nonfinite run=grpo-alerts") and "grad_norm" in line
