"""Rows as people and programs read them: ``trainwire sql`` and ``trainwire query`` in every --format
(issue 15, item 10), on reward stats a real worker computed and stored."""

from __future__ import annotations

import csv
import io
import json

import pytest
from click.testing import CliRunner, Result

from trainwire.bus import Emitter
from trainwire.cli import main
from trainwire.config import Settings
from trainwire.events import Event, Interaction
from trainwire.output import MAX_CELL, render

STATS = "SELECT * FROM reward_stats FINAL ORDER BY window, reward_fn, window_start_us LIMIT 5"


@pytest.fixture
def stats_store(embedded_settings: Settings) -> Settings:
    """A store with reward stats: interactions over six steps, through a real worker (windows of 2 steps)."""
    emitter = Emitter(embedded_settings)
    for step in range(6):
        for i in range(4):
            rewards = {"accuracy": float(i % 2), "format": 0.5}
            reward = sum(rewards.values())
            payload = Interaction(prompt=f"q{i}", completion="a" * i, reward=reward, rewards=rewards, step=step)
            emitter.emit(Event(run_id="grpo-out", payload=payload))
    emitter.close()
    result = trainwire(embedded_settings, "worker", "--until-idle", "1", "--step-window", "2")
    assert result.exit_code == 0, result.output
    return embedded_settings


def trainwire(settings: Settings, *args: str, columns: int = 80) -> Result:
    return CliRunner().invoke(main, ["--data-dir", str(settings.data_dir), *args], env={"COLUMNS": str(columns)})


def test_sql_in_every_format(stats_store: Settings):
    as_json = trainwire(stats_store, "sql", STATS, "--format", "json")
    assert as_json.exit_code == 0, as_json.output
    rows = json.loads(as_json.stdout)
    assert len(rows) == 5 and {r["reward_fn"] for r in rows} <= {"accuracy", "format", "total"}
    columns = list(rows[0])
    assert len(columns) > 10  # far wider than 80 characters as a table

    narrow = trainwire(stats_store, "sql", STATS)  # the demo's suggestion, on an 80-column terminal or piped
    assert narrow.exit_code == 0, narrow.output
    lines = narrow.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert [line for line in lines if line.startswith("Row ")] == [f"Row {n}:" for n in range(1, 6)]
    assert lines[-1] == "(5 rows)"
    assert trainwire(stats_store, "sql", STATS, "--format", "vertical", columns=400).stdout == narrow.stdout
    demo = trainwire(stats_store, "sql", "SELECT * FROM reward_stats FINAL LIMIT 5")  # exactly as the demo says
    assert demo.exit_code == 0 and max(len(line) for line in demo.stdout.splitlines()) <= 80

    wide = trainwire(stats_store, "sql", STATS, columns=400).stdout.splitlines()
    assert wide[0].split() == columns and set(wide[1]) == {"-", " "} and len(wide) == 2 + 5 + 1

    as_csv = list(csv.DictReader(io.StringIO(trainwire(stats_store, "sql", STATS, "--format", "csv").stdout)))
    as_tsv = list(
        csv.DictReader(io.StringIO(trainwire(stats_store, "sql", STATS, "--format", "tsv").stdout), delimiter="\t")
    )
    jsonl = trainwire(stats_store, "sql", STATS, "--format", "jsonl").stdout.splitlines()
    assert [json.loads(line) for line in jsonl] == rows
    for parsed in (as_csv, as_tsv):
        assert [list(r) for r in parsed] == [columns] * 5
        assert [r["reward_fn"] for r in parsed] == [r["reward_fn"] for r in rows]
        assert [float(r["mean"]) for r in parsed] == [r["mean"] for r in rows]


def test_query_takes_the_same_formats(stats_store: Settings):
    args = ["query", "reward_summary", "-p", "runs=grpo-out"]
    rows = json.loads(trainwire(stats_store, *args, "--format", "json").stdout)
    jsonl = trainwire(stats_store, *args, "--format", "jsonl")
    assert jsonl.exit_code == 0 and [json.loads(line) for line in jsonl.stdout.splitlines()] == rows
    table = trainwire(stats_store, *args)
    assert table.exit_code == 0 and max(len(line) for line in table.stdout.splitlines()) <= 80


def test_long_values_are_cut_in_a_table_only():
    text = "word " * 30 + "\nsecond line"
    table = render(["id", "completion"], [[1, text], [22, None]], "table", width=80).splitlines()
    assert table[0] == "id  completion"
    assert table[2] == " 1  " + (text.replace("\n", "↵"))[: MAX_CELL - 1] + "…"  # numbers right-aligned
    assert table[3] == "22  NULL" and table[-1] == "(2 rows)"
    vertical = render(["id", "completion"], [[1, text]], "vertical", width=40)
    assert max(len(line) for line in vertical.splitlines()) <= 40
    assert "".join(vertical.split()).count("word") == 30 and "second line" in vertical  # whole, wrapped
    assert json.loads(render(["completion"], [[text]], "json")) == [{"completion": text}]
    assert next(csv.reader(io.StringIO(render(["completion"], [[text]], "tsv").split("\n", 1)[1]), delimiter="\t")) == [
        text
    ]


def test_every_clickhouse_type_prints_in_every_format(embedded_settings: Settings):
    query = "SELECT toDecimal64(1.5, 2) AS d, toUUID('49890690-b72b-40ad-a71d-3bd4976596c3') AS u, [1.5] AS a"
    for fmt in ("table", "vertical", "csv", "tsv", "json", "jsonl"):
        result = trainwire(embedded_settings, "sql", query, "--format", fmt)
        assert result.exit_code == 0, (fmt, result.output)
        assert "1.50" in result.stdout and "49890690-b72b-40ad-a71d-3bd4976596c3" in result.stdout, fmt
    assert json.loads(trainwire(embedded_settings, "sql", query, "--format", "json").stdout) == [
        {"d": "1.50", "u": "49890690-b72b-40ad-a71d-3bd4976596c3", "a": [1.5]}
    ]
