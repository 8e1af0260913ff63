"""The ``trainwire`` command as a whole: --version and one error convention (issue 15, item 14).

That library log lines do not come before trainwire's error is checked in a fresh process by
test_judge_cli (MLflow logs its database setup and failed scorers unless told not to).
"""

from __future__ import annotations

import json
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
    commands = [
        ["sql", "SELECT * FROM nope"],  # the store refuses it
        ["query", "no_such_query"],
        ["export"],  # nothing stored
        ["analyze", "--output", str(tmp_path / "report")],  # nothing stored: as export
        ["probe", "logits", "--model", f"m={tmp_path / 'no-model'}", "--data", str(data)],
        ["judge", "log", "no-such-run", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
        ["import", str(tmp_path / "missing.jsonl")],  # click's own usage error
    ]
    stderr = {}
    for args in commands:
        result = CliRunner().invoke(main, ["--data-dir", str(tmp_path / "data"), *args])
        assert result.exit_code in (1, 2), (args, result.output)
        assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
        errors = [line for line in result.stderr.splitlines() if line.lower().startswith("error")]
        assert len(errors) == 1 and errors[0].startswith("Error: "), (args, result.stderr)
        if args[0] != "import":  # a usage error comes after click's usage lines; every other is the only line
            assert result.exit_code == 1 and result.stderr.startswith("Error: "), (args, result.stderr)
        stderr[args[0]] = result.stderr
    assert stderr["analyze"].startswith("Error: No events for any run in the store: nothing to analyze.")
    assert stderr["export"].startswith("Error: No interactions for any run in the store: nothing to export.")


def test_gitignore_covers_what_the_commands_write():
    """analyze writes analysis_output/, export training_data/ by default, in the current directory."""
    ignored = (Path(__file__).resolve().parent.parent / ".gitignore").read_text().splitlines()
    assert "analysis_output/" in ignored and "training_data/" in ignored
