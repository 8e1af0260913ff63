"""The log importers: seed 000 (GRPO logs, JSONL and JSON array) and seed 001 (LLM call logs)."""

from __future__ import annotations

import asyncio
import ctypes
import io
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import local_broker
from helpers import read_events as read_bus

from trainwire.analysis.queries import run_query
from trainwire.bus import Emitter, open_consumer
from trainwire.config import Settings
from trainwire.events import Event, decode
from trainwire.producers.importers import (
    ALREADY_IMPORTED,
    EXIT_SPOOLED,
    NO_PROMPT,
    _ArrayError,
    default_run_id,
    import_command,
    import_paths,
    iter_json_array,
)
from trainwire.store.clickhouse import open_store
from trainwire.topics import event_topics

ROOT = Path(__file__).resolve().parent.parent

GRPO_RECORDS = [
    {
        "timestamp": "2025-10-13T11:30:45.123456",
        "prompt": "Вопрос о электрической цепи: найдите ток",
        "completion": "Ответ модели: 2.5 А",
        "reward": 1.8,
        "metadata": {"correct_answer": "2.5", "accuracy_score": 0.9, "batch_idx": 0},
    },
    {
        "timestamp": "2025-10-13T11:30:46.500000",
        "prompt": [{"role": "user", "content": "Сколько будет 2+2?"}],
        "completion": "4",
        "reward": 2.0,
        "metadata": {"correct_answer": "4", "accuracy_score": 1.0, "batch_idx": 0},
        "step": 3,
    },
    {
        "timestamp": "2025-10-13T11:30:47.000000",
        "prompt": "Третий вопрос",
        "completion": "Не знаю",
        "reward": -0.5,
        "metadata": {"correct_answer": "7", "accuracy_score": 0.0, "batch_idx": 1},
    },
]

CALL_RECORDS = [
    {
        "success": True,
        "prompt": "提取以下文本的提纲",
        "response": {"answer": "一、引言\n二、方法", "usage": {"total_tokens": 42}},
        "model": "qwen-max",
        "task": "outline",
    },
    {
        "success": True,
        "prompt": "",
        "current_batch_content": "第二批内容：关于训练数据",
        "response": {"answer": "提纲二"},
    },
    {"success": False, "prompt": "第三个", "error": "rate limited"},
    {"success": True, "response": {"answer": "孤立的回答"}},
]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def read_events(settings: Settings, group: str) -> list[Event]:
    """Every event on the embedded bus, read by a fresh consumer group."""

    async def main() -> list[Event]:
        consumer = open_consumer(settings, event_topics(settings.topic_prefix), group)
        await consumer.start()
        out: list[Event] = []
        try:
            while True:
                records = await consumer.getmany(timeout_ms=300)
                if not records:
                    return out
                out.extend(decode(r.value, f"offset {r.offset}") for r in records)
        finally:
            await consumer.stop()

    return asyncio.run(main())


def store_new_events(settings: Settings) -> None:
    """Move what the bus holds beyond the store group's position into ClickHouse (what the sink will do)."""

    async def main() -> list[Event]:
        consumer = open_consumer(settings, event_topics(settings.topic_prefix), "test-store")
        await consumer.start()
        out: list[Event] = []
        try:
            while records := await consumer.getmany(timeout_ms=300):
                out.extend(decode(r.value) for r in records)
            await consumer.commit()
        finally:
            await consumer.stop()
        return out

    events = asyncio.run(main())
    with open_store(settings) as store:
        store.migrate()
        if events:
            store.insert_events(events)


def count_rows(settings: Settings, where: str = "1") -> int:
    with open_store(settings) as store:
        store.migrate()
        return store.query_rows(f"SELECT count() AS n FROM interactions FINAL WHERE {where}")[0]["n"]


def test_seed000_jsonl_and_json_array(embedded_settings: Settings, tmp_path: Path):
    logs = tmp_path / "logs"
    write_jsonl(logs / "llm_logs_20251013_113045.jsonl", GRPO_RECORDS)
    (logs / "llm_logs_complete_20251013_113045.json").write_text(
        json.dumps(GRPO_RECORDS, ensure_ascii=False, indent=2), encoding="utf-8"
    )

    summary = import_paths([logs], embedded_settings)

    assert summary.files == 2
    assert summary.imported == 6
    assert summary.error_count == 0
    assert summary.runs == {"llm_logs_20251013_113045": 6}
    events = read_events(embedded_settings, "check")
    assert len(events) == 6
    by_prompt = {}
    for event in events:
        assert event.event_type == "interaction"
        assert event.source.library == "trainwire.import"
        by_prompt.setdefault(json.dumps(event.payload.prompt, ensure_ascii=False), []).append(event)
    first = by_prompt[json.dumps(GRPO_RECORDS[0]["prompt"], ensure_ascii=False)]
    # The streaming file and the complete file hold the same records: the same events.
    assert len(first) == 2 and first[0].event_id == first[1].event_id
    payload = first[0].payload
    assert payload.completion == "Ответ модели: 2.5 А"
    assert payload.reward == 1.8
    assert payload.metadata == {"correct_answer": "2.5", "accuracy_score": 0.9, "batch_idx": 0}
    expected_ts = datetime.fromisoformat("2025-10-13T11:30:45.123456").astimezone().astimezone(UTC)
    assert first[0].ts == expected_ts
    chat = by_prompt[json.dumps(GRPO_RECORDS[1]["prompt"], ensure_ascii=False)][0].payload
    assert chat.prompt == [{"role": "user", "content": "Сколько будет 2+2?"}]
    assert chat.step == 3

    store_new_events(embedded_settings)
    assert count_rows(embedded_settings, "run_id = 'llm_logs_20251013_113045'") == 3


def test_timezone_and_epoch_timestamps(embedded_settings: Settings, tmp_path: Path):
    path = write_jsonl(
        tmp_path / "llm_logs_x.jsonl",
        [
            {"timestamp": "2025-10-13T11:30:45", "prompt": "a", "completion": "b", "reward": 1},
            {"timestamp": 1760355045.5, "prompt": "c", "completion": "d", "reward": 0},
            {"timestamp": "yesterday", "prompt": "e", "completion": "f"},
            {"prompt": "g", "completion": "h"},
        ],
    )
    summary = import_paths([path], embedded_settings, timezone=UTC)
    assert summary.imported == 3
    events = {e.payload.prompt: e for e in read_events(embedded_settings, "check")}
    assert events["a"].ts == datetime(2025, 10, 13, 11, 30, 45, tzinfo=UTC)
    assert events["c"].ts == datetime.fromtimestamp(1760355045.5, UTC)
    # Unreadable: reported with its line like any bad field, not given the file's time in silence.
    assert "e" not in events
    assert summary.errors == [
        f"{path}:3: record.timestamp: not readable as a time: 'yesterday' (ISO-8601, or Unix seconds or milliseconds)"
    ]
    assert events["g"].ts == datetime.fromtimestamp(path.stat().st_mtime, UTC)  # no timestamp: the file's time


def test_the_step_of_a_record_from_its_common_spellings(embedded_settings: Settings, tmp_path: Path):
    """seed 000 writes metadata.step; step, global_step and training_step, at the top or in the
    metadata, become the interaction's step too, so imported GRPO logs get per-step plots."""
    records = [
        {"prompt": "a", "completion": "x", "metadata": {"step": 4, "batch_idx": 0}},
        {"prompt": "b", "completion": "x", "global_step": 5},
        {"prompt": "c", "completion": "x", "metadata": {"training_step": 6.0}},
        {"prompt": "d", "completion": "x", "step": 7, "metadata": {"step": 99}},  # the record's own first
        {"prompt": "e", "completion": "x"},
        {"prompt": "f", "completion": "x", "metadata": {"global_step": "three"}},
    ]
    path = write_jsonl(tmp_path / "llm_logs_20251013_113045.jsonl", records)
    result = CliRunner().invoke(import_command, [str(path), "--no-progress"], obj=embedded_settings)
    assert result.exit_code == 1
    assert f"{path}:6: record.metadata.global_step: expected a whole number of steps, got 'three'" in result.output
    steps = {e.payload.prompt: e.payload.step for e in read_events(embedded_settings, "check")}
    assert steps == {"a": 4, "b": 5, "c": 6, "d": 7, "e": None}
    store_new_events(embedded_settings)
    with open_store(embedded_settings) as store:
        rows = run_query(store, "reward_by_step", runs=["llm_logs_20251013_113045"]).to_pylist()
    assert [r["step"] for r in rows] == [4, 5, 6, 7]


def test_seed001_call_logs_with_prompt_fallback(embedded_settings: Settings, tmp_path: Path):
    logs = tmp_path / "llm_calls"
    write_jsonl(logs / "2025-01" / "calls_a.jsonl", CALL_RECORDS[:2])
    write_jsonl(logs / "2025-02" / "calls_b.jsonl", CALL_RECORDS[2:])
    (logs / "config.json").write_text('{"not": "a log"}')  # other .json files are not picked up

    summary = import_paths([logs], embedded_settings, run_id="outline-logs")

    assert summary.files == 2
    assert summary.imported == 3
    assert summary.kinds == {"llm_call": 3}
    assert summary.skipped == {NO_PROMPT: 1}
    events = {e.payload.completion: e.payload for e in read_events(embedded_settings, "check")}
    first = events["一、引言\n二、方法"]
    assert first.prompt == "提取以下文本的提纲"
    assert first.success is True
    assert first.model == "qwen-max"
    assert first.metadata == {"task": "outline", "response": {"usage": {"total_tokens": 42}}}
    fallback = events["提纲二"]
    assert fallback.prompt == "第二批内容：关于训练数据"
    assert fallback.metadata["prompt_source"] == "current_batch_content"
    assert "current_batch_content" not in fallback.metadata
    failed = events[""]
    assert failed.success is False
    assert failed.error == "rate limited"
    assert failed.prompt == "第三个"


def test_corrupt_line_is_reported_and_import_goes_on(embedded_settings: Settings, tmp_path: Path):
    path = tmp_path / "llm_logs_20251013_120000.jsonl"
    lines = [json.dumps(GRPO_RECORDS[0]), '{"prompt": "cut in the mid', json.dumps(GRPO_RECORDS[2]), "", "[1, 2]"]
    path.write_text("\n".join(lines) + "\n")
    bad_reward = tmp_path / "llm_logs_bad.jsonl"
    write_jsonl(bad_reward, [{"prompt": "p", "completion": "c", "reward": "high"}])

    summary = import_paths([path, bad_reward], embedded_settings)

    assert summary.imported == 2
    assert summary.error_count == 3
    assert summary.errors[0].startswith(f"{path}:2: record: not valid JSON")
    assert summary.errors[1].startswith(f"{path}:5: record: expected a JSON object")
    assert summary.errors[2] == f"{bad_reward}:1: record.reward: expected a number, got str 'high'"
    assert len(read_events(embedded_settings, "check")) == 2


def test_truncated_json_array_keeps_records_before_the_fault(embedded_settings: Settings, tmp_path: Path):
    text = json.dumps(GRPO_RECORDS, ensure_ascii=False, indent=2)
    path = tmp_path / "llm_logs_complete_20251013_130000.json"
    path.write_text(text[: text.rindex("{") + 20], encoding="utf-8")

    summary = import_paths([path], embedded_settings)

    assert summary.imported == 2
    assert summary.error_count == 1
    message = summary.errors[0]
    assert message.startswith(f"{path}:")
    assert "record 2" in message and "the rest of this file is not imported" in message


def test_json_array_reader_streams_across_small_chunks():
    records = [{"i": i, "text": "x" * (i * 7), "nested": {"a": [1, 2, {"b": "]},["}]}} for i in range(50)]
    raw = json.dumps(records, indent=1).encode()
    got = list(iter_json_array(io.BytesIO(raw), chunk=13))
    assert [value for _, _, value in got] == records
    lines = [line for _, line, _ in got]
    assert lines[0] == 2 and lines == sorted(lines)
    assert list(iter_json_array(io.BytesIO(b"  [ ]  "))) == []
    with pytest.raises(_ArrayError) as info:
        list(iter_json_array(io.BytesIO(b'[{"a": 1},\n{"a": 2} {"a": 3}]'), chunk=4))
    assert info.value.line == 2 and info.value.index == 2


def test_reimport_adds_nothing_and_says_already_imported(embedded_settings: Settings, tmp_path: Path):
    path = write_jsonl(tmp_path / "llm_logs_20251013_140000.jsonl", GRPO_RECORDS)
    first = import_paths([path], embedded_settings)
    store_new_events(embedded_settings)
    assert first.imported == 3
    assert count_rows(embedded_settings) == 3

    second = import_paths([path], embedded_settings)
    store_new_events(embedded_settings)
    assert second.imported == 0
    assert second.skipped == {ALREADY_IMPORTED: 3}
    assert second.files_skipped == 1
    assert count_rows(embedded_settings) == 3

    # Forced: read again, same ids, still one row each in ClickHouse.
    forced = import_paths([path], embedded_settings, force=True)
    store_new_events(embedded_settings)
    assert forced.imported == 3
    assert count_rows(embedded_settings) == 3

    # A copy under another name is recognised by its content.
    copy = tmp_path / "copy" / path.name
    copy.parent.mkdir()
    copy.write_bytes(path.read_bytes())
    assert import_paths([copy], embedded_settings).skipped == {ALREADY_IMPORTED: 3}


def test_grown_jsonl_resumes_where_the_last_import_stopped(embedded_settings: Settings, tmp_path: Path):
    path = tmp_path / "llm_logs_20251013_150000.jsonl"
    half = json.dumps(GRPO_RECORDS[2])[:30]
    path.write_text(json.dumps(GRPO_RECORDS[0]) + "\n" + half)  # a run still writing its last line
    first = import_paths([path], embedded_settings)
    assert first.imported == 1
    assert first.error_count == 0
    assert first.notes["incomplete last line left for the next import"] == 1

    with open(path, "a") as handle:
        handle.write(json.dumps(GRPO_RECORDS[2])[30:] + "\n" + json.dumps(GRPO_RECORDS[1]) + "\n{broken\n")
    second = import_paths([path], embedded_settings)
    assert second.imported == 2
    assert second.skipped == {ALREADY_IMPORTED: 1}
    assert len(second.errors) == 1 and second.errors[0].startswith(f"{path}:4: record: not valid JSON")

    store_new_events(embedded_settings)
    assert count_rows(embedded_settings) == 3


def test_default_run_id_from_file_name():
    assert default_run_id(Path("llm_logs_20251013_113045.jsonl")) == "llm_logs_20251013_113045"
    assert default_run_id(Path("x/llm_logs_complete_20251013_113045.json")) == "llm_logs_20251013_113045"
    assert default_run_id(Path("calls 2025-01.jsonl")) == "calls_2025-01"


def test_import_command(embedded_settings: Settings, tmp_path: Path):
    logs = tmp_path / "logs"
    write_jsonl(logs / "llm_logs_20251013_113045.jsonl", GRPO_RECORDS)
    write_jsonl(logs / "calls" / "a.jsonl", CALL_RECORDS)
    runner = CliRunner()

    result = runner.invoke(import_command, [str(logs), "--run", "cli-run", "--no-progress"], obj=embedded_settings)
    assert result.exit_code == 0, result.output
    assert "imported 6 records from 2 file(s)" in result.output
    assert "runs: cli-run (6)" in result.output
    assert f"{NO_PROMPT}: 1" in result.output
    assert result.output.splitlines()[-1] == (
        "next: these events are on the bus; a worker stores them in ClickHouse for trainwire analyze, sql and "
        "export: run `trainwire worker --until-idle 10` (unless a worker is running already)"
    )

    again = runner.invoke(import_command, [str(logs), "--run", "cli-run"], obj=embedded_settings)
    assert again.exit_code == 0, again.output
    assert "imported 0 records" in again.output
    assert f"{ALREADY_IMPORTED}: 6" in again.output
    assert again.output.splitlines()[-1] == (
        "note: an earlier import published these events to the bus; if trainwire analyze finds none, "
        "no worker has stored them yet: run `trainwire worker --until-idle 10`"
    )

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok", "completion": "fine"}\nnot json\n')
    failed = runner.invoke(import_command, [str(bad)], obj=embedded_settings)
    assert failed.exit_code == 1
    assert f"{bad}:2: record: not valid JSON" in failed.output
    assert "Traceback" not in failed.output

    missing = runner.invoke(import_command, [str(tmp_path / "nope.jsonl")], obj=embedded_settings)
    assert missing.exit_code == 2
    assert "does not exist" in missing.output

    zone = runner.invoke(import_command, [str(bad), "--timezone", "Mars/Olympus"], obj=embedded_settings)
    assert zone.exit_code == 2
    assert "is not a time zone" in zone.output

    store_new_events(embedded_settings)
    assert count_rows(embedded_settings, "run_id = 'cli-run'") == 6


def test_import_with_the_bus_down_says_the_events_are_spooled_and_exits_3(tmp_path: Path):
    """A real unreachable Kafka (a closed port) and the real spool: the import says where the events
    are and exits 3 (not "on the bus" and 0); run again once the broker is up, it publishes them."""
    port = local_broker.free_port()
    settings = Settings(kafka=f"127.0.0.1:{port}", data_dir=tmp_path / "data", topic_prefix="spooled")
    path = write_jsonl(tmp_path / "llm_logs_20251013_113045.jsonl", GRPO_RECORDS)
    runner = CliRunner()
    result = runner.invoke(import_command, [str(path), "--no-progress"], obj=settings)
    assert result.exit_code == EXIT_SPOOLED == 3, result.output
    assert "imported 3 records" in result.output and "on the bus;" not in result.output
    (spool,) = (settings.data_dir / "spool").rglob("spool-*.log")
    assert f"spooled: 3 events are not on the bus (it was unreachable) but in {spool}, until the bus is back" in (
        result.output
    )
    assert "next: when the bus is back, run this import again: it publishes the spooled events" in result.output
    with local_broker.LocalBroker(port=port):
        again = runner.invoke(import_command, [str(path), "--no-progress"], obj=settings)
        assert again.exit_code == 0, again.output
        assert "published 3 events an earlier import had spooled" in again.output
        assert f"{ALREADY_IMPORTED}: 3" in again.output
        got = read_bus(settings, expected=3)
    assert sorted(e.payload.completion for e in got) == sorted(r["completion"] for r in GRPO_RECORDS)


def test_import_through_a_shared_emitter(embedded_settings: Settings, tmp_path: Path):
    path = write_jsonl(tmp_path / "llm_logs_20251013_160000.jsonl", GRPO_RECORDS)
    emitter = Emitter(embedded_settings)
    try:
        summary = import_paths([path], embedded_settings, emitter=emitter)
        assert not emitter.closed  # a caller's emitter is flushed, not closed
        assert summary.imported == 3
    finally:
        emitter.close()
    deadline = time.monotonic() + 10
    events: list[Event] = []
    while len(events) < 3 and time.monotonic() < deadline:
        events = read_events(embedded_settings, "check")
    assert len(events) == 3


def test_import_then_worker_then_export_as_the_hints_say(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The whole path through the real command: import -> (export finds nothing) -> worker -> export."""
    from trainwire.cli import main

    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "calls" / "a.jsonl", CALL_RECORDS)
    data = tmp_path / "my data"
    runner = CliRunner()

    imported = runner.invoke(main, ["--data-dir", str(data), "import", "calls", "--no-progress"])
    assert imported.exit_code == 0, imported.output
    hint = imported.output.splitlines()[-1]
    assert hint.startswith("next: these events are on the bus")
    # the global options given are repeated (quoted for the shell) in the command to run next
    assert f"`trainwire --data-dir '{data}' worker --until-idle 10`" in hint

    before = runner.invoke(main, ["--data-dir", str(data), "export", "--output", "sft.jsonl"])
    assert before.exit_code == 1
    assert "No interactions for any run in the store" in before.output and "trainwire worker" in before.output

    worker = runner.invoke(main, ["--data-dir", str(data), "worker", "--until-idle", "1.5", "--no-monitor"])
    assert worker.exit_code == 0, worker.output
    after = runner.invoke(main, ["--data-dir", str(data), "export", "--output", "sft.jsonl", "--no-shuffle"])
    assert after.exit_code == 0, after.output
    assert after.output.splitlines()[0] == "read 3 interactions: kept 2, dropped 1"
    answers = sorted(json.loads(line)["output"] for line in (tmp_path / "sft.jsonl").read_text().splitlines())
    assert answers == ["一、引言\n二、方法", "提纲二"]


def test_import_hint_hides_a_clickhouse_password(tmp_path: Path):
    from trainwire.cli import main

    path = write_jsonl(tmp_path / "llm_logs_20251013_170000.jsonl", GRPO_RECORDS)
    args = ["--data-dir", str(tmp_path / "d"), "--clickhouse", "http://ml:s3cret@ch.local:8123/db", "--topic-prefix"]
    result = CliRunner().invoke(main, [*args, "tw2", "import", str(path), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "s3cret" not in result.output
    assert (
        f"`trainwire --clickhouse 'http://ml:***@ch.local:8123/db' --data-dir {tmp_path / 'd'} --topic-prefix tw2 "
        "worker --until-idle 10`"
    ) in result.output


ODD_LINES: list[tuple[bytes, str]] = [
    # (a line, what its error says after "file:line: ")
    (b'{"prompt": "p", "completion": "c", "reward": 1' + b"7" * 399 + b"}", "record.reward: int 1777"),
    (b'{"prompt": "p", "completion": "c", "timestamp": "0001-01-01T00:00:00"}', "record.timestamp: "),
    (b'{"prompt": "p", "completion": "c", "timestamp": "9999-12-31T23:59:59"}', "record.timestamp: "),
    (b'{"prompt": "p", "completion": "c", "timestamp": "0001-01-01T00:00:00+01:00"}', "record.timestamp: "),
    (b'{"prompt": "p", "completion": "c", "timestamp": "9999-12-31T23:59:59-01:00"}', "record.timestamp: "),
    (b'{"prompt": "p", "completion": "c", "timestamp": 1e300}', "record.timestamp: 1e+300 seconds since 1970"),
    (
        b'{"prompt": "p", "completion": "c", "ts": 1' + b"0" * 400 + b"}",
        "record.ts: 100000000000000000000000... seconds since 1970",
    ),
    (b"[" * 100_000, "record: not valid JSON: nested too deeply to read"),
    (b'{"prompt": "p\xed\xa0\x80", "completion": "c"}', "record: not valid JSON: 'utf-8' codec can't decode"),
    (b'{"success": true, "prompt": "p", "response": {"answer": "a\xed\xb2\x80"}}', "record: not valid JSON: 'utf-8'"),
    (b'{"prompt": "p", "completion": "c\\ud800"}', "record.completion: cannot be serialized: str is not valid UTF-8"),
    (
        b'{"prompt": "p", "completion": "c", "step": 1, "metadata": ' + b'{"a": ' * 300 + b"1" + b"}" * 301,
        "record.metadata: nested more than 252 levels deep",
    ),
]


def test_odd_records_are_each_reported_with_file_and_line_and_the_rest_imports(
    embedded_settings: Settings, tmp_path: Path
) -> None:
    good = [json.dumps({**r, "timestamp": r["timestamp"] + "+00:00"}).encode() for r in GRPO_RECORDS]
    lines = [good[0], *(line for line, _ in ODD_LINES), good[1], good[2]]
    odd = tmp_path / "llm_logs_odd.jsonl"
    odd.write_bytes(b"\n".join(lines) + b"\n")
    after = write_jsonl(tmp_path / "llm_logs_after.jsonl", [{**GRPO_RECORDS[0], "prompt": "the next file"}])

    summary = import_paths([odd, after], embedded_settings)

    assert summary.imported == 4  # the good lines, before and after the odd ones, and the next file
    assert summary.error_count == len(ODD_LINES)
    for (line, expected), error in zip(ODD_LINES, summary.errors, strict=True):
        assert error.startswith(f"{odd}:{lines.index(line) + 1}: {expected}"), error
    assert sum("is outside the times trainwire stores" in e for e in summary.errors) == 6
    events = read_events(embedded_settings, "check")
    assert sorted(e.payload.prompt for e in events if isinstance(e.payload.prompt, str)) == sorted(
        [GRPO_RECORDS[0]["prompt"], GRPO_RECORDS[2]["prompt"], "the next file"]
    )
    # The ledger has both files: importing again adds nothing, and stops at no line.
    again = import_paths([odd, after], embedded_settings)
    assert (again.imported, again.error_count, again.files_skipped) == (0, 0, 2)


def test_odd_records_in_a_json_array_are_each_reported_and_the_rest_imports(
    embedded_settings: Settings, tmp_path: Path
) -> None:
    # A JSON array cannot go on past text it cannot parse; records it parses but cannot import can.
    readable = [line for line, _ in ODD_LINES if b"[[[" not in line and b"\xed" not in line]
    path = tmp_path / "llm_logs_complete_odd.json"
    path.write_bytes(b"[\n" + b",\n".join([*readable, json.dumps(GRPO_RECORDS[2]).encode()]) + b"\n]\n")

    summary = import_paths([path], embedded_settings)

    assert summary.imported == 1
    assert summary.error_count == len(readable)
    assert [e.split(": ")[0] for e in summary.errors] == [f"{path}:{i + 2}" for i in range(len(readable))]


def test_an_unreadable_subdirectory_is_reported_like_an_unreadable_file(tmp_path: Path) -> None:
    logs = tmp_path / "call_logs"
    write_jsonl(logs / "a.jsonl", CALL_RECORDS[:1])
    write_jsonl(logs / "closed" / "b.jsonl", CALL_RECORDS[2:3])
    write_jsonl(logs / "z" / "c.jsonl", CALL_RECORDS[1:2])
    (logs / "closed").chmod(0)
    data_dir = tmp_path / "data"

    def without_root_override() -> None:
        # The test runs as root, who reads any directory: the import's process drops the two capabilities
        # that let it (from the bounding set, so the exec'd program has them not), for a real EACCES.
        libc = ctypes.CDLL(None, use_errno=True)
        for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
            libc.prctl(24, capability, 0, 0, 0)  # PR_CAPBSET_DROP; refused (and not needed) for other users

    try:
        done = subprocess.run(
            [sys.executable, "-m", "trainwire", "--data-dir", str(data_dir), "import", "--no-progress", str(logs)],
            capture_output=True,
            text=True,
            preexec_fn=without_root_override,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            timeout=120,
        )
    finally:
        (logs / "closed").chmod(0o755)
    assert done.returncode == 1, done.stderr
    assert "imported 2 records from 2 file(s)" in done.stdout
    assert f"  {logs / 'closed'}: cannot read: Permission denied" in done.stdout
