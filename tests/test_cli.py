"""The ``trainwire`` command as a whole: --version and one error convention (issue 15, item 14).

That library log lines do not come before trainwire's error is checked here with Kafka down, and
in test_judge_cli with MLflow (which logs its database setup and failed scorers unless told not to).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from click.testing import CliRunner

from trainwire.cli import main


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and result.output == f"trainwire {version('trainwire')}\n"


def test_errors_start_the_same_way_in_every_command(tmp_path: Path):
    data = tmp_path / "tasks.jsonl"
    data.write_text(json.dumps({"query": "q", "answer": "a"}) + "\n")
    calls = tmp_path / "calls"
    calls.mkdir()
    (calls / "log.jsonl").write_text("not json\n")
    commands = [
        ["sql", "SELECT * FROM nope"],  # the store refuses it
        ["query", "no_such_query"],
        ["export"],  # nothing stored
        ["analyze", "--output", str(tmp_path / "report")],  # nothing stored: as export
        ["probe", "logits", "--model", f"m={tmp_path / 'no-model'}", "--data", str(data)],
        ["judge", "log", "no-such-run", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
        ["import", str(tmp_path / "missing.jsonl")],  # click's own usage error
        ["import", str(calls)],  # a corrupt line: the summary lists it, then the one error line
    ]
    stderr = {}
    for args in commands:
        result = CliRunner().invoke(main, ["--data-dir", str(tmp_path / "data"), *args])
        assert result.exit_code in (1, 2), (args, result.output)
        assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
        errors = [line for line in result.stderr.splitlines() if line.lower().startswith("error")]
        assert len(errors) == 1 and errors[0].startswith("Error: "), (args, result.stderr)
        if args[1:] != [str(tmp_path / "missing.jsonl")]:  # a usage error comes after click's usage lines
            assert result.exit_code == 1 and result.stderr.startswith("Error: "), (args, result.stderr)
        stderr[" ".join(args[:2])] = result.stderr
    assert stderr[f"import {calls}"] == "Error: 1 record(s) could not be imported (listed above)\n"
    assert stderr["analyze --output"].startswith("Error: No events for any run in the store: nothing to analyze.")
    assert stderr["export"].startswith("Error: No interactions for any run in the store: nothing to export.")


def test_gitignore_covers_what_the_commands_write():
    """analyze writes analysis_output/, export training_data/ by default, in the current directory."""
    ignored = (Path(__file__).resolve().parent.parent / ".gitignore").read_text().splitlines()
    assert "analysis_output/" in ignored and "training_data/" in ignored


def test_library_log_lines_do_not_come_before_the_error(tmp_path: Path):
    """Kafka down: aiokafka logs each failed connection at ERROR; trainwire's own error is the only line."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{sock.getsockname()[1]}"
    command = [
        sys.executable,
        "-m",
        "trainwire.cli",
        "--kafka",
        closed,
        "--data-dir",
        str(tmp_path),
        "topics",
        "create",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"Error: Kafka at {closed} is unreachable: [Errno 111] Connect call failed "
        f"('127.0.0.1', {closed.rsplit(':', 1)[1]})"
    ]
