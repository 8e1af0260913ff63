"""The judge commands through the real ``trainwire`` command when judgements fail (issue 15, item 8).

A judge that is not there (a closed loopback port) is said at once, with its URL, before MLflow
or a worker starts; a judge that answers HTTP 500 or garbage (the scripted loopback server) gets
its failures counted by kind. Every judge command exits 1 when nothing got a score, 0 with a
warning line when some did.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from trainwire.bus import Emitter
from trainwire.cli import main
from trainwire.config import Settings
from trainwire.events import Event, Interaction
from trainwire.judge.client import Judge, JudgeConfig
from trainwire.judge.servers import Reply, ScriptedJudgeServer
from trainwire.runtime import WorkerOptions, build_pipeline
from trainwire.store.clickhouse import open_store

CSV = "inputs,predictions\nq1,a1\nq2,a2\nq3,a3\nq4,a4\n"


def closed_port_url() -> str:
    """The URL of a loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def trainwire(settings: Settings, *args: str) -> Result:
    return CliRunner().invoke(main, ["--data-dir", str(settings.data_dir), *args])


def by_answer(replies: dict[str, Reply | str]) -> Any:
    """A script answering each request by the last word of its prompt (the row's prediction)."""
    return lambda body: replies[body["messages"][-1]["content"].rsplit(None, 1)[-1]]


def emit_interactions(settings: Settings, run_id: str, completions: list[str]) -> None:
    emitter = Emitter(settings)
    for completion in completions:
        emitter.emit(Event(run_id=run_id, payload=Interaction(prompt="question", completion=completion, step=1)))
    emitter.close()


def test_no_judge_listening_is_one_error_with_the_url(embedded_settings: Settings, tmp_path: Path):
    data = tmp_path / "data.csv"
    data.write_text(CSV)
    url = closed_port_url()
    emit_interactions(embedded_settings, "r", ["a"])
    for args in (["eval", str(data)], ["run", "--until-idle", "1"]):
        result = trainwire(embedded_settings, "judge", *args, "--url", url)
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith("Error: ") and "Traceback" not in result.output
        assert f"connection refused: nothing listens at {url}" in result.stderr
    assert not (embedded_settings.data_dir / "mlflow.db").exists()  # said before MLflow started


def test_a_refused_connection_is_not_retried():
    judge = Judge(JudgeConfig(base_url=closed_port_url(), max_retries=4))
    score = asyncio.run(judge.grade("q", "a"))
    assert not score.success and score.error.startswith("connection refused: nothing listens at http://127.0.0.1:")
    assert (judge.stats.calls, judge.stats.retries, judge.stats.errors) == (1, 0, {"connection refused": 1})


def test_judge_eval_counts_failures_by_kind(embedded_settings: Settings, tmp_path: Path):
    """A fresh process, as a user runs it: trainwire's error is the only line on stderr (no MLflow log
    lines, progress bar or banner before it)."""
    data = tmp_path / "data.csv"
    data.write_text(CSV)
    replies = {"a1": Reply(status=500), "a2": Reply(status=500), "a3": "no verdict here", "a4": Reply(status=503)}
    with ScriptedJudgeServer(by_answer(replies)) as server:
        url = server.base_url
        command = [sys.executable, "-m", "trainwire.cli", "--data-dir", str(embedded_settings.data_dir), "judge"]
        command += ["eval", str(data), "--url", url, "--retries", "0", "--tracking-uri", f"sqlite:///{tmp_path}/m.db"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        f"Error: 4 of 4 judgements failed (judge at {url}): HTTP 500: 2, HTTP 503: 1, unparseable: 1"
    ]
    assert done.stdout.startswith("judged 4 rows: 0 scored, 4 failed, mean score n/a; MLflow run ")


def test_judge_run_and_log_exit_1_when_nothing_scored_and_warn_when_some_failed(
    embedded_settings: Settings, tmp_path: Path
):
    settings = embedded_settings
    replies = {"x": Reply(status=500), "y": "garbage", "z": "garbage", "good": "Score: 5", "bad": Reply(status=500)}
    with ScriptedJudgeServer(by_answer(replies)) as server:
        url = server.base_url
        run = ["judge", "run", "--url", url, "--retries", "0", "--until-idle", "1.5"]
        emit_interactions(settings, "down", ["x", "y", "z"])
        nothing = trainwire(settings, *run)
        emit_interactions(settings, "half", ["good", "bad"])
        some = trainwire(settings, *run)
    assert nothing.exit_code == 1, nothing.output
    assert "3 requests, 3 scores (3 failed)" in nothing.stdout
    assert f"Error: 3 of 3 judgements failed (judge at {url}): unparseable: 2, HTTP 500: 1" in nothing.stderr
    assert some.exit_code == 0, some.output
    assert f"warning: 1 of 2 judgements failed (judge at {url}): HTTP 500: 1" in some.stderr

    with open_store(settings) as store:  # the scores, failed ones included, stored
        store.migrate()
        asyncio.run(build_pipeline(settings, store, WorkerOptions(group="s", monitor=False)).run(idle_exit_s=1.0))
    log = ["judge", "log", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    result = trainwire(settings, *log, "down")
    assert result.exit_code == 1, result.output
    assert "logged the 3 judgements of down (0 scored)" in result.stdout
    assert "Error: 3 of 3 judgements failed: unparseable: 2, HTTP 500: 1" in result.stderr
    result = trainwire(settings, *log, "half")
    assert result.exit_code == 0, result.output
    assert "warning: 1 of 2 judgements failed: HTTP 500: 1" in result.stderr
    result = trainwire(settings, *log, "never-judged")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.startswith("Error: run_id: 'never-judged' has no judge scores in the store")
