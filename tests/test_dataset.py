"""The training-data path: filter reasons, dedup across restarts, stable splits, the three formats, the sink, export."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from trainwire.errors import ConfigError, TrainwireError
from trainwire.events import Event, Interaction, JudgeScore
from trainwire.processors.dataset import (
    DatasetConfig,
    DatasetFilter,
    DatasetProcessor,
    TrainingExample,
    parse_split_ratio,
    split_sizes,
)
from trainwire.sinks.dataset import (
    DatasetSink,
    default_output,
    export_command,
    split_paths,
    to_alpaca,
    to_openai,
    to_sharegpt,
)
from trainwire.store.clickhouse import open_store

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

CHAT = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "2+2?"},
]


def ix(prompt="q1", completion="good", reward: float | None = 1.0, success: bool = True, **fields) -> Interaction:
    return Interaction(prompt=prompt, completion=completion, reward=reward, success=success, **fields)


def event(payload, eid: str, t: float = 0.0, run: str = "run-1") -> Event:
    return Event(run_id=run, payload=payload, event_id=eid, ts=T0 + timedelta(seconds=t))


def score(interaction_id: str, value: float | None, t: float = 0.0, success: bool = True, run: str = "run-1") -> Event:
    payload = JudgeScore(
        interaction_id=interaction_id,
        judge_model="judge",
        template_version="v1",
        success=success,
        score=None if value is None else value * 10,
        score_normalized=value,
    )
    return Event(run_id=run, payload=payload, ts=T0 + timedelta(seconds=t))


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --------------------------------------------------------------------------- the filter


def test_filter_reasons_in_order():
    flt = DatasetFilter(DatasetConfig(min_reward=0.5, min_length=3, max_length=10))
    cases = [
        (ix(success=False), "failed"),
        (ix(prompt="   "), "empty_prompt"),
        (ix(prompt=[{"role": "system", "content": "only a system message"}]), "empty_prompt"),
        (ix(completion=" \n"), "empty_completion"),
        (ix(reward=None), "no_reward"),
        (ix(reward=0.4), "low_reward"),
        (ix(completion="ab"), "too_short"),
        (ix(completion="x" * 11), "too_long"),
        (ix(completion="4\ufffd2", reward=0.4), "low_reward"),  # counted where it would be dropped anyway
        (ix(completion="4\ufffd2"), "replacement_character"),  # a tiny model's token decoded from half a character
        (ix(prompt=[{"role": "user", "content": "q\ufffd"}]), "replacement_character"),
        (ix(prompt="q1", completion="abc", reward=0.5), None),
        (ix(prompt=" q1 ", completion="other"), "duplicate"),
        (ix(prompt=[{"role": "user", "content": "q1"}], completion="x" * 10), None),
    ]
    for interaction, expected in cases:
        out = flt.check(interaction, source_id="id")
        if expected is None:
            assert isinstance(out, TrainingExample), interaction
        else:
            assert out == expected, interaction
    assert flt.kept == 2
    assert dict(flt.dropped) == {
        "failed": 1,
        "empty_prompt": 2,
        "empty_completion": 1,
        "no_reward": 1,
        "low_reward": 2,
        "replacement_character": 2,
        "too_short": 1,
        "too_long": 1,
        "duplicate": 1,
    }


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("prompt", ["keep", "duplicate", "keep", "duplicate"]),
        ("completion", ["keep", "keep", "duplicate", "duplicate"]),
        ("prompt+completion", ["keep", "keep", "keep", "duplicate"]),
    ],
)
def test_dedup_fields(field: str, expected: list[str]):
    flt = DatasetFilter(DatasetConfig(dedup_field=field))
    stream = [ix("p1", "c1"), ix("p1", "c2"), ix("p2", "c1"), ix("p1", "c1")]
    got = ["keep" if isinstance(o, TrainingExample) else o for o in (flt.check(i) for i in stream)]
    assert got == expected


def test_dedup_by_an_interaction_field_or_a_metadata_key():
    stream = [
        ix("p1", "c1", model="qwen", metadata={"task": "outline", "src": {"file": "a"}}),
        ix("p2", "c2", model=" qwen ", metadata={"task": "outline", "src": {"file": "b"}}),
        ix("p3", "c3", metadata={"task": "summary", "src": {"file": "a"}}),
        ix("p4", "c4", model="", metadata={"task": "  ", "src": "flat"}),
        ix("p5", "c5", model="llama", metadata={"task": 7}),
        ix("p6", "c6", model="llama", metadata={"task": 7}),
    ]
    expected = {
        "model": ["keep", "duplicate", "keep", "keep", "keep", "duplicate"],
        "metadata.task": ["keep", "duplicate", "keep", "keep", "keep", "duplicate"],
        "metadata.src.file": ["keep", "keep", "duplicate", "keep", "keep", "keep"],
    }
    for field, outcomes in expected.items():
        flt = DatasetFilter(DatasetConfig(dedup_field=field))
        got = [flt.check(i, source_id=str(n)) for n, i in enumerate(stream)]
        assert ["keep" if isinstance(o, TrainingExample) else o for o in got] == outcomes, field
        kept_without_value = [o.source_id for o in got if isinstance(o, TrainingExample) and not o.key]
        assert flt.no_dedup_value == len(kept_without_value), field
    # no value (missing, null, blank) is never a duplicate: p3 and p4 have no model
    flt = DatasetFilter(DatasetConfig(dedup_field="model"))
    assert [isinstance(flt.check(i), TrainingExample) for i in (stream[2], stream[3], stream[2])] == [True] * 3
    assert flt.no_dedup_value == 3 and flt.seen == set()


def test_split_follows_the_prompt_when_dedup_is_not_by_content():
    ratio = (0.5, 0.5)
    prompts = [f"question {i}" for i in range(200)]
    by_prompt = DatasetFilter(DatasetConfig(split_ratio=ratio, deduplicate=False))
    by_model = DatasetFilter(DatasetConfig(split_ratio=ratio, dedup_field="model", deduplicate=False))
    expected = [by_prompt.check(ix(p, "a")).split for p in prompts]
    # every example has the same model: were the split hashed on it, all would land in one split
    assert [by_model.check(ix(p, "a", model="qwen")).split for p in prompts] == expected
    assert set(expected) == {"train", "val"}


def test_no_dedup_value_survives_a_restart_and_old_snapshots_load():
    config = DatasetConfig(dedup_field="metadata.task")
    first = DatasetProcessor(config)
    first.process(event(ix("q1", "a", metadata={"task": "t"}), "e1"))
    first.process(event(ix("q2", "b"), "e2"))
    snapshot = json.loads(json.dumps(first.snapshot()))
    second = DatasetProcessor(config)
    second.restore(snapshot)
    second.load_keys(first.take_new_keys())
    assert second.filter.no_dedup_value == 1
    assert second.process(event(ix("q3", "c", metadata={"task": "t"}), "e3")) == []  # a duplicate of e1
    del snapshot["state"]["filter"]["no_dedup_value"]  # as a snapshot written before the counter existed
    third = DatasetProcessor(config)
    third.restore(snapshot)
    assert third.filter.no_dedup_value == 0 and third.filter.kept == 2


def test_no_dedup_and_limit():
    flt = DatasetFilter(DatasetConfig(deduplicate=False, limit=2))
    got = [flt.check(ix("same", "same")) for _ in range(3)]
    assert [isinstance(o, TrainingExample) for o in got] == [True, True, False]
    assert got[2] == "limit"
    assert flt.seen == set()


def test_config_validation_names_the_option():
    with pytest.raises(ConfigError, match="split_ratio"):
        DatasetConfig(split_ratio=(0.5, 0.2))
    with pytest.raises(ConfigError, match=r"dedup_field.*the completion"):
        DatasetConfig(dedup_field="answer")
    with pytest.raises(ConfigError, match=r"dedup_field.*'nope' is not a field of an interaction.*metadata\.KEY"):
        DatasetConfig(dedup_field="nope")
    for bad in ("metadata", "metadata.", "metadata.a..b", "rewards", "prompt_messages"):
        with pytest.raises(ConfigError, match="dedup_field"):
            DatasetConfig(dedup_field=bad)
    for good in ("model", "step", "group_id", "metadata.task", "metadata.a.b"):
        assert DatasetConfig(dedup_field=good).dedup_field == good
    with pytest.raises(ConfigError, match="min_length"):
        DatasetConfig(min_length=10, max_length=5)
    with pytest.raises(ConfigError, match="split_ratio"):
        parse_split_ratio("0.8;0.2")
    assert parse_split_ratio("0.8,0.1,0.1") == (0.8, 0.1, 0.1)


# --------------------------------------------------------------------------- streaming: judge scores, restarts


def test_processor_waits_for_judge_scores_in_either_order():
    proc = DatasetProcessor(DatasetConfig(min_judge_score=0.5))
    out = []
    out += proc.process(event(ix("qa", "answer a"), "a"))
    out += proc.process(score("b", 0.9))  # the score comes before its interaction
    out += proc.process(event(ix("qb", "answer b"), "b"))
    out += proc.process(event(ix("qc", "answer c"), "c"))
    out += proc.process(event(ix("qf", "answer f", success=False), "f"))
    out += proc.process(score("a", None, success=False))  # a failed judgement is not a score
    out += proc.process(score("a", 0.7))
    out += proc.process(score("c", 0.2))
    out += proc.process(event(ix("qd", "answer d"), "d"))
    out += proc.flush()
    assert [(e.source_id, e.judge_score) for e in out] == [("b", 0.9), ("a", 0.7)]
    assert proc.filter.kept == 2
    assert dict(proc.filter.dropped) == {"failed": 1, "low_judge_score": 1, "no_judge_score": 1}


def test_dedup_and_pending_survive_a_restart():
    config = DatasetConfig(min_judge_score=0.5)
    first = DatasetProcessor(config)
    assert first.process(event(ix("q1", "one"), "e1")) == []
    kept = first.process(score("e1", 0.8))
    assert [e.source_id for e in kept] == ["e1"]
    first.process(event(ix("q2", "two"), "e2"))  # waits for its score across the restart
    snapshot = json.loads(json.dumps(first.snapshot(), allow_nan=False))

    second = DatasetProcessor(config)
    second.restore(snapshot)
    second.load_keys(first.take_new_keys())  # the dedup keys are saved apart from the snapshot
    assert second.process(event(ix(" q1", "one again"), "e3")) == []
    assert second.process(score("e3", 0.9)) == []  # a duplicate of e1's prompt
    assert [e.source_id for e in second.process(score("e2", 0.6))] == ["e2"]
    assert second.filter.kept == 2
    assert dict(second.filter.dropped) == {"duplicate": 1}


def test_split_is_stable_across_replays_and_follows_the_ratios():
    config = DatasetConfig(split_ratio=(0.8, 0.1, 0.1), deduplicate=False)
    prompts = [f"question {i}" for i in range(2000)]
    first = [DatasetFilter(config).check(ix(p, "a")).split for p in prompts]
    replay = DatasetFilter(config)
    assert [replay.check(ix(p, "another answer")).split for p in prompts] == first
    counts = Counter(first)
    assert set(counts) == {"train", "val", "test"}
    assert abs(counts["train"] - 1600) < 80 and abs(counts["val"] - 200) < 60 and abs(counts["test"] - 200) < 60
    assert dict(replay.per_split) == dict(counts)
    reseeded = DatasetFilter(DatasetConfig(split_ratio=(0.8, 0.1, 0.1), seed=7))
    assert [reseeded.check(ix(p, "a")).split for p in prompts] != first
    assert DatasetFilter(DatasetConfig()).check(ix()).split is None
    assert DatasetConfig(split_ratio=(0.9, 0.1)).splits == ("train", "val")


# --------------------------------------------------------------------------- formats and the sink


def test_the_three_formats_for_a_chat_prompt():
    assert to_alpaca(CHAT, "4") == {
        "instruction": "2+2?",
        "input": "system: You are terse.\nuser: Hi\nassistant: Hello.",
        "output": "4",
    }
    assert to_sharegpt(CHAT, "4") == {
        "conversations": [
            {"from": "system", "value": "You are terse."},
            {"from": "human", "value": "Hi"},
            {"from": "gpt", "value": "Hello."},
            {"from": "human", "value": "2+2?"},
            {"from": "gpt", "value": "4"},
        ]
    }
    assert to_openai(CHAT, "4") == {"messages": [*CHAT, {"role": "assistant", "content": "4"}]}


def test_the_three_formats_for_a_text_prompt():
    assert to_alpaca("Say hi", "hi") == {"instruction": "Say hi", "input": "", "output": "hi"}
    assert to_sharegpt("Say hi", "hi") == {
        "conversations": [{"from": "human", "value": "Say hi"}, {"from": "gpt", "value": "hi"}]
    }
    assert to_openai("Say hi", "hi") == {
        "messages": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "hi"}]
    }
    single_user = [{"role": "user", "content": [{"type": "text", "text": "Look"}, {"type": "text", "text": "here"}]}]
    assert to_alpaca(single_user, "ok") == {"instruction": "Look here", "input": "", "output": "ok"}


def example(source_id: str, prompt="把这句话翻译成英文：你好", completion="Hello", split=None) -> TrainingExample:
    return TrainingExample(prompt=prompt, completion=completion, split=split, key="k", source_id=source_id, run_id="r")


def test_sink_writes_utf8_jsonl_and_survives_a_torn_line_and_a_replay(tmp_path: Path):
    path = tmp_path / "out" / "data.jsonl"
    with DatasetSink(path, "alpaca") as sink:
        assert sink.add(example("e1"))
        assert sink.add(example("e2", "Say hi", "hi"))
        sink.flush()
    first = path.read_bytes()
    assert first.decode("utf-8").splitlines()[0] == (
        '{"instruction":"把这句话翻译成英文：你好","input":"","output":"Hello"}'
    )
    with open(path, "ab") as handle:  # a crash in the middle of a line
        handle.write(b'{"instruction":"half')

    with DatasetSink(path, "alpaca") as sink:
        assert not sink.add(example("e2", "Say hi", "hi"))  # replayed after the crash: written already
        assert sink.add(example("e3", "Count", "1 2 3"))
        assert sink.skipped == 1
    assert [r["instruction"] for r in lines(path)] == ["把这句话翻译成英文：你好", "Say hi", "Count"]
    ids = [line.split("\t")[0] for line in path.with_name("data.jsonl.ids").read_text().splitlines()]
    assert ids == ["", "e1", "e2", "e3"]  # '': where the file started


def test_sink_reads_an_ids_file_of_an_older_version_and_names_a_corrupt_one(tmp_path: Path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"instruction":"old"}\n')
    path.with_name("data.jsonl.ids").write_text("e1\n")  # ids only, as written before line ends were kept
    with DatasetSink(path, "alpaca") as sink:
        assert not sink.add(example("e1"))
        assert sink.add(example("e2", "new"))
    assert [r["instruction"] for r in lines(path)] == ["old", "new"]
    with DatasetSink(path, "alpaca") as sink:  # the older lines are not cut: no line end is known for them
        assert not sink.add(example("e2", "new"))
    assert [r["instruction"] for r in lines(path)] == ["old", "new"]
    path.with_name("data.jsonl.ids").write_text("e1\ttrain\tnot-a-number\n")
    with pytest.raises(TrainwireError, match=r"data\.jsonl\.ids, line 1: .*not 'id<TAB>split<TAB>end'"):
        DatasetSink(path, "alpaca")


def test_sink_writes_one_file_per_split(tmp_path: Path):
    path = tmp_path / "data.jsonl"
    assert split_paths(path, ("train", "val")) == {
        "train": tmp_path / "data_train.jsonl",
        "val": tmp_path / "data_val.jsonl",
    }
    with DatasetSink(path, "openai", ("train", "val", "test")) as sink:
        sink.add(example("a", "A", "a", split="train"))
        sink.add(example("b", "B", "b", split="test"))
        sink.add(example("c", "C", "c", split="train"))
        with pytest.raises(ConfigError, match="split"):
            sink.add(example("d", split=None))
    assert [r["messages"][0]["content"] for r in lines(tmp_path / "data_train.jsonl")] == ["A", "C"]
    assert (tmp_path / "data_val.jsonl").read_text() == ""
    assert lines(tmp_path / "data_test.jsonl") == [
        {"messages": [{"role": "user", "content": "B"}, {"role": "assistant", "content": "b"}]}
    ]


# --------------------------------------------------------------------------- trainwire export


@pytest.fixture
def stored(embedded_settings):
    """Interactions and judge scores in the embedded store."""
    chat = [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Capital of France?"}]
    events = [
        event(ix("What is 2+2?", "4", reward=1.0), "i1", t=1, run="r1"),
        event(ix("What is 2+2?", "four", reward=1.0), "i2", t=2, run="r1"),
        event(ix("Why?", "because", success=False), "i3", t=3, run="r1"),
        event(ix("Empty?", ""), "i4", t=4, run="r1"),
        event(ix(chat, "Paris", reward=0.2), "i5", t=5, run="r1"),
        event(ix("Name a color", "blue", reward=None), "i6", t=6, run="r2"),
        score("i1", 0.9, t=10, run="r1"),
        score("i5", 0.8, t=10, run="r1"),
        score("i5", 0.3, t=11, run="r1"),  # the latest score counts
        score("i6", None, t=12, success=False, run="r2"),
    ]
    with open_store(embedded_settings) as store:
        store.migrate()
        store.insert_events(events)
    return embedded_settings


def export(settings, *args: str):
    result = CliRunner().invoke(export_command, list(args), obj=settings)
    return result


ALPACA_1 = {"instruction": "What is 2+2?", "input": "", "output": "4"}
ALPACA_5 = {"instruction": "Capital of France?", "input": "system: Answer in one word.", "output": "Paris"}
ALPACA_6 = {"instruction": "Name a color", "input": "", "output": "blue"}


def test_export_defaults_keep_successful_deduplicated_in_time_order(stored, tmp_path: Path):
    out = tmp_path / "train.jsonl"
    result = export(stored, "--format", "alpaca", "--output", str(out), "--no-shuffle")
    assert result.exit_code == 0, result.output
    assert lines(out) == [ALPACA_1, ALPACA_5, ALPACA_6]
    assert result.output.splitlines() == [
        "read 6 interactions: kept 3, dropped 3",
        "  dropped failed: 1",
        "  dropped empty_completion: 1",
        "  dropped duplicate: 1",
        f"  all: 3 -> {out}",
    ]


def test_export_run_reward_and_judge_filters(stored, tmp_path: Path):
    out = tmp_path / "r1.jsonl"
    result = export(stored, "--output", str(out), "--run", "r1", "--min-reward", "0.5")
    assert result.exit_code == 0, result.output
    assert lines(out) == [ALPACA_1]
    assert result.output.splitlines()[0] == "read 5 interactions: kept 1, dropped 4"
    assert "  dropped low_reward: 1" in result.output.splitlines()

    out = tmp_path / "judged.jsonl"
    result = export(stored, "--format", "openai", "--output", str(out), "--min-judge-score", "0.5")
    assert result.exit_code == 0, result.output
    assert lines(out) == [
        {"messages": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}]}
    ]
    # i2 ("four") and i6 have no judge score; the judge check comes before dedup
    assert result.output.splitlines() == [
        "read 6 interactions: kept 1, dropped 5",
        "  dropped failed: 1",
        "  dropped empty_completion: 1",
        "  dropped no_judge_score: 2",
        "  dropped low_judge_score: 1",
        f"  all: 1 -> {out}",
    ]


def test_export_length_limits_and_dedup_field(stored, tmp_path: Path):
    out = tmp_path / "x.jsonl"
    result = export(stored, "--output", str(out), "--no-shuffle", "--min-length", "2", "--max-length", "4")
    assert result.exit_code == 0, result.output
    # "4" is too short, "four" (now not a duplicate of a kept record) and "blue" fit, "Paris" is too long
    assert [r["output"] for r in lines(out)] == ["four", "blue"]
    result = export(stored, "--output", str(out), "--no-shuffle", "--no-deduplicate")
    assert [r["output"] for r in lines(out)] == ["4", "four", "Paris", "blue"]
    result = export(stored, "--output", str(out), "--no-shuffle", "--dedup-field", "completion")
    assert [r["output"] for r in lines(out)] == ["4", "four", "Paris", "blue"]


def test_export_splits_into_one_file_per_split(stored, tmp_path: Path):
    out = tmp_path / "data.jsonl"
    result = export(stored, "--format", "sharegpt", "--output", str(out), "--split-ratio", "0.5,0.3,0.2")
    assert result.exit_code == 0, result.output
    files = {name: tmp_path / f"data_{name}.jsonl" for name in ("train", "val", "test")}
    written = {name: lines(path) for name, path in files.items()}
    assert sum(len(v) for v in written.values()) == 3
    firsts = sorted(r["conversations"][-2]["value"] for v in written.values() for r in v)
    assert firsts == ["Capital of France?", "Name a color", "What is 2+2?"]
    for name, path in files.items():
        assert f"  {name}: {len(written[name])} -> {path}" in result.output.splitlines()
    # the same split on every export (the split hangs on the prompt, not on the order)
    again = export(stored, "--format", "sharegpt", "--output", str(out), "--split-ratio", "0.5,0.3,0.2", "--seed", "42")
    assert again.exit_code == 0
    assert {name: lines(path) for name, path in files.items()} == written


def test_export_limit_with_and_without_shuffle(stored, tmp_path: Path):
    out = tmp_path / "limited.jsonl"
    result = export(stored, "--output", str(out), "--limit", "2", "--no-shuffle")
    assert result.exit_code == 0, result.output
    assert lines(out) == [ALPACA_1, ALPACA_5]
    assert "  dropped limit: 1" in result.output.splitlines()
    shuffled = []
    for _ in range(2):
        assert export(stored, "--output", str(out), "--limit", "2", "--seed", "3").exit_code == 0
        shuffled.append(lines(out))
    assert shuffled[0] == shuffled[1]
    assert len(shuffled[0]) == 2 and all(r in (ALPACA_1, ALPACA_5, ALPACA_6) for r in shuffled[0])


def test_split_sizes_share_exactly_and_leave_no_split_empty_when_they_can():
    assert split_sizes(31, (0.8, 0.1, 0.1)) == [25, 3, 3]  # the hash alone gave 30/0/1
    assert split_sizes(3, (0.8, 0.1, 0.1)) == [1, 1, 1]
    assert split_sizes(2, (0.8, 0.1, 0.1)) == [2, 0, 0]  # too few for three splits
    assert split_sizes(10, (0.5, 0.5)) == [5, 5] and split_sizes(7, (1.0, 0.0)) == [7, 0]
    assert split_sizes(0, (0.8, 0.2)) == [0, 0]


def test_export_cuts_the_splits_exactly_and_warns_when_a_split_is_empty(embedded_settings, tmp_path: Path):
    events = [event(ix(f"What is {i} + {i}?", str(2 * i)), f"i{i:02d}", t=i) for i in range(31)]
    with open_store(embedded_settings) as store:
        store.migrate()
        store.insert_events(events)
    out = tmp_path / "data.jsonl"
    result = export(embedded_settings, "--output", str(out), "--split-ratio", "0.8,0.1,0.1", "--seed", "42")
    assert result.exit_code == 0, result.output
    files = {name: tmp_path / f"data_{name}.jsonl" for name in ("train", "val", "test")}
    assert {name: len(lines(path)) for name, path in files.items()} == {"train": 25, "val": 3, "test": 3}
    for name, count in (("train", 25), ("val", 3), ("test", 3)):
        assert f"  {name}: {count} -> {files[name]}" in result.stdout.splitlines()
    assert result.stderr == ""
    again = export(embedded_settings, "--output", str(out), "--split-ratio", "0.8,0.1,0.1", "--seed", "42")
    assert again.exit_code == 0 and again.stdout == result.stdout  # the same files on every export

    result = export(embedded_settings, "--output", str(out), "--split-ratio", "0.8,0.1,0.1", "--limit", "2")
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "warning: the train split got 2 of 2 examples (100%), far from its share 0.8: too few examples for "
        "--split-ratio 0.8,0.1,0.1",
        "warning: the val split is empty: 2 examples are too few for --split-ratio 0.8,0.1,0.1",
        "warning: the test split is empty: 2 examples are too few for --split-ratio 0.8,0.1,0.1",
    ]
    result = export(embedded_settings, "--output", str(out), "--split-ratio", "0.8,0.1,0.1", "--limit", "3")
    assert "warning: the train split got 1 of 3 examples (33%), far from its share 0.8" in result.stderr


def test_export_rejects_a_bad_split_ratio(stored, tmp_path: Path):
    result = export(stored, "--output", str(tmp_path / "x.jsonl"), "--split-ratio", "0.5,0.2")
    assert result.exit_code == 2
    assert "--split-ratio" in result.output and "sum to 1" in result.output


def test_export_without_output_writes_a_timestamped_file(
    stored, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert default_output("sharegpt", datetime(2026, 3, 1, 9, 5, 7)) == Path(
        "training_data/sharegpt_20260301_090507.jsonl"
    )
    monkeypatch.chdir(tmp_path)
    result = export(stored, "--format", "sharegpt", "--no-shuffle")
    assert result.exit_code == 0, result.output
    (written,) = (tmp_path / "training_data").iterdir()
    assert len(written.name) == len("sharegpt_20260301_090507.jsonl")
    assert written.name.startswith("sharegpt_20") and written.suffix == ".jsonl"
    datetime.strptime(written.stem.removeprefix("sharegpt_"), "%Y%m%d_%H%M%S")
    relative = Path("training_data") / written.name
    assert result.output.splitlines()[0] == f"output (no --output given): {relative}"
    assert f"  all: 3 -> {relative}" in result.output.splitlines()
    assert len(lines(written)) == 3


def test_export_of_an_empty_store_says_a_worker_stores_the_events(
    embedded_settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = export(embedded_settings)  # nothing stored yet: not even the tables exist
    assert result.exit_code == 1
    assert "No interactions for any run in the store: nothing to export." in result.output
    assert "a worker stores them: run `trainwire worker --until-idle 10`" in result.output
    assert not (tmp_path / "training_data").exists()  # nothing written
    result = export(embedded_settings, "--run", "r9", "--output", str(tmp_path / "x.jsonl"))
    assert result.exit_code == 1
    assert "No interactions for run r9" in result.output and "SELECT DISTINCT run_id" in result.output
    assert not (tmp_path / "x.jsonl").exists()


@pytest.fixture
def stored_with_metadata(embedded_settings):
    """Interactions with models and metadata, as imported seed-001 call logs have."""
    events = [
        event(ix("Outline A", "one", model="qwen", metadata={"task": "outline", "src": {"file": "a"}}), "m1", t=1),
        event(ix("Outline B", "two", model="qwen", metadata={"task": "outline", "src": {"file": "b"}}), "m2", t=2),
        event(ix("Summary C", "three", metadata={"task": "summary", "src": {"file": "a"}}), "m3", t=3),
        event(ix("Free D", "four", model="llama"), "m4", t=4),
    ]
    with open_store(embedded_settings) as store:
        store.migrate()
        store.insert_events(events)
    return embedded_settings


def test_export_dedups_by_any_field_of_the_record(stored_with_metadata, tmp_path: Path):
    out = tmp_path / "x.jsonl"
    cases = {
        "metadata.task": (["one", "three", "four"], 1),  # D has no task: kept without dedup
        "metadata.src.file": (["one", "two", "four"], 1),
        "model": (["one", "three", "four"], 1),  # C has no model
        "completion": (["one", "two", "three", "four"], 0),
    }
    for field, (outputs, without_value) in cases.items():
        result = export(stored_with_metadata, "--output", str(out), "--no-shuffle", "--dedup-field", field)
        assert result.exit_code == 0, result.output
        assert [r["output"] for r in lines(out)] == outputs, field
        note = f"  kept without dedup (no {field}): {without_value}"
        assert (note in result.output.splitlines()) == bool(without_value), result.output


def test_export_rejects_an_unknown_dedup_field_before_writing(stored_with_metadata, tmp_path: Path):
    out = tmp_path / "x.jsonl"
    result = export(stored_with_metadata, "--output", str(out), "--dedup-field", "metadata.nope")
    assert result.exit_code == 2
    assert "--dedup-field" in result.output
    assert "no interaction in the store has a value for metadata.nope (metadata keys found: src, task)" in (
        " ".join(result.output.split())
    )
    assert not out.exists()
    result = export(stored_with_metadata, "--output", str(out), "--dedup-field", "answer")
    assert result.exit_code == 2
    assert "the completion" in result.output
    # with dedup off the field is not used: no error
    result = export(stored_with_metadata, "--output", str(out), "--dedup-field", "metadata.nope", "--no-deduplicate")
    assert result.exit_code == 0, result.output
    assert len(lines(out)) == 4


def test_worker_and_export_share_the_filter_options():
    from trainwire.cli import main

    def options(command) -> dict[str, tuple]:
        return {
            opt: (type(p.type).__name__, p.default, p.is_flag)
            for p in command.params
            for opt in (*p.opts, *p.secondary_opts)
        }

    worker, exporter = options(main.commands["worker"]), options(export_command)
    shared = {
        "--min-reward",
        "--min-judge-score",
        "--min-length",
        "--max-length",
        "--deduplicate",
        "--no-deduplicate",
        "--dedup-field",
        "--split-ratio",
        "--seed",
    }
    assert {o: worker[o] for o in shared} == {o: exporter[o] for o in shared}
    assert "--limit" not in worker and "--shuffle" not in worker  # export only: a stream has no end
    assert all(p.help for p in main.commands["worker"].params if p.name != "help")
    assert all(p.help for p in export_command.params if p.name != "help")
