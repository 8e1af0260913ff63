"""The logits probe on two tiny locally built models."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result
from transformers import AutoModelForCausalLM, AutoTokenizer

from trainwire.bus import Emitter, open_consumer
from trainwire.cli import main
from trainwire.config import Settings
from trainwire.errors import ConfigError
from trainwire.events import Event, Logits, decode
from trainwire.producers.probe import (
    DEFAULT_WORDS,
    DoneList,
    ProbeModel,
    load_samples,
    probe_command,
    run_probe,
    target_tokens,
)
from trainwire.producers.tiny import build_tiny_model
from trainwire.topics import event_topics

SAMPLES = [
    {"query": "What is 2 + 2?", "answer": "Let me think. Wait, so it is 4.", "level": 1, "correct": True},
    {"query": "Solve x + 3 = 5.", "answer": "Hmm, x = 2. Therefore the answer is 2.", "level": 3, "correct": False},
    {"query": "How many legs does a spider have?", "answer": "8", "level": 2},
]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("probe-models")
    return {
        "base": build_tiny_model(root / "base", seed=0),
        "rl": build_tiny_model(root / "rl", seed=1, arch="qwen2"),
    }


def read_logits(settings: Settings, group: str) -> list[Event]:
    async def main() -> list[Event]:
        consumer = open_consumer(settings, event_topics(settings.topic_prefix), group)
        await consumer.start()
        out: list[Event] = []
        try:
            while records := await consumer.getmany(timeout_ms=300):
                out.extend(decode(r.value) for r in records)
        finally:
            await consumer.stop()
        return out

    return [e for e in asyncio.run(main()) if isinstance(e.payload, Logits)]


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_target_tokens_keep_the_single_token_forms(models):
    tokenizer = AutoTokenizer.from_pretrained(models["base"])
    targets = target_tokens(tokenizer)
    assert " wait" in targets and "Wait" in targets and " therefore" in targets
    for form, token_id in targets.items():
        assert tokenizer.encode(form, add_special_tokens=False) == [token_id]
    for word in DEFAULT_WORDS:
        for form in (word, f" {word}", word.capitalize(), f" {word.capitalize()}"):
            if form not in targets:
                assert len(tokenizer.encode(form, add_special_tokens=False)) != 1
    assert len(set(targets.values())) == len(targets)


def test_load_samples_names_file_and_line_of_bad_lines(tmp_path):
    path = write_jsonl(
        tmp_path / "data.jsonl",
        [
            json.dumps(SAMPLES[0]),
            "{not json",
            json.dumps({"query": "q", "answer": 3}),
            "",
            json.dumps({"query": "q", "answer": "a", "level": "hard"}),
            json.dumps({"query": "q", "answer": "a", "correct": "yes"}),
            json.dumps(["a list"]),
            json.dumps({"id": 17, "query": "q", "answer": "a", "level": "4"}),
        ],
    )
    with path.open("ab") as fh:
        fh.write(b'{"query": "q", "answer": "caf\xe9"}\n')  # Latin-1, not UTF-8
    samples, errors = load_samples(path)
    assert [s.query for s in samples] == ["What is 2 + 2?", "q"]
    assert samples[1].sample_id == "17" and samples[1].level == 4 and samples[1].correct is None
    assert [e.line for e in errors] == [2, 3, 5, 6, 7, 9]
    assert str(errors[5]) == f"{path}:9: not UTF-8 text (byte 30 of the line)"
    assert str(errors[0]).startswith(f"{path}:2: not valid JSON")
    assert str(errors[1]) == f"{path}:3: answer: must be a string, got int"
    assert "level" in str(errors[2]) and "correct" in str(errors[3])
    again, _ = load_samples(path)
    assert again[0].sample_id == samples[0].sample_id  # stable ids, so reruns can skip
    with pytest.raises(ConfigError, match=rf"^--data: {tmp_path}: cannot read: Is a directory$"):
        load_samples(tmp_path)


def test_probe_values_match_a_direct_forward_pass(models, embedded_settings, tmp_path):
    samples, _ = load_samples(write_jsonl(tmp_path / "d.jsonl", [json.dumps(s) for s in SAMPLES]))
    emitter = Emitter(embedded_settings)
    report = run_probe(
        [ProbeModel("base", str(models["base"]))],
        samples,
        run_id="probe-unit",
        emitter=emitter,
        words=["wait", "so"],
        batch_size=3,  # one padded batch of answers of different lengths
        device="cpu",
        chunk_rows=5,  # answer positions scored 5 at a time
    )
    emitter.close()
    events = read_logits(embedded_settings, "check")
    assert report.events == len(events)

    tokenizer = AutoTokenizer.from_pretrained(models["base"])
    model = AutoModelForCausalLM.from_pretrained(models["base"]).eval()
    targets = target_tokens(tokenizer, ["wait", "so"])
    assert set(report.targets["base"]) == set(targets)
    got = {(e.payload.sample_id, e.payload.position, e.payload.target_token): e.payload for e in events}
    expected_count = 0
    for sample in samples:
        prompt_ids = tokenizer.encode(sample.query)
        answer_ids = tokenizer.encode(sample.answer, add_special_tokens=False)
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([prompt_ids + answer_ids])).logits[0].float()
        for j in range(len(answer_ids)):
            row = logits[len(prompt_ids) + j - 1]
            probs = torch.softmax(row, dim=-1)
            for form, token_id in targets.items():
                payload = got[(sample.sample_id, j, form)]
                expected_count += 1
                assert payload.model == "base" and payload.token_id == token_id
                assert payload.logit == pytest.approx(row[token_id].item(), abs=1e-4)
                assert payload.probability == pytest.approx(probs[token_id].item(), rel=1e-3)
                assert payload.rank == int((row > row[token_id]).sum().item()) + 1
                assert (payload.level, payload.correct) == (sample.level, sample.correct)
    assert len(events) == expected_count


def test_probe_command_probes_every_model_and_skips_what_is_done(models, embedded_settings, tmp_path):
    data = write_jsonl(
        tmp_path / "tasks.jsonl",
        [json.dumps(SAMPLES[0]), "oops", json.dumps(SAMPLES[1]), json.dumps({"answer": "x"}), json.dumps(SAMPLES[2])],
    )
    args = ["logits", "--model", f"base={models['base']}", "--model", f"rl={models['rl']}", "--data", str(data)]
    args += ["--words", "wait,so", "--words", "therefore", "--batch-size", "2", "--run", "probe-cli"]
    runner = CliRunner()

    first = runner.invoke(probe_command, args, obj=embedded_settings)
    assert first.exit_code == 1, first.output  # bad lines: the others are probed, the status says so (as import)
    assert f"bad line: {data}:2: not valid JSON" in first.stderr
    assert f"bad line: {data}:4: query: missing" in first.stderr
    assert f"Error: 2 bad line(s) in {data} were not probed" in first.stderr
    assert "base: 3 samples probed, 0 already done" in first.stdout
    assert "rl: 3 samples probed, 0 already done" in first.stdout

    events = read_logits(embedded_settings, "first")
    payloads = [e.payload for e in events]
    assert {e.run_id for e in events} == {"probe-cli"}
    for name in ("base", "rl"):
        tokenizer = AutoTokenizer.from_pretrained(models[name])
        n_targets = len(target_tokens(tokenizer, ["wait", "so", "therefore"]))
        answer_tokens = sum(len(tokenizer.encode(s["answer"], add_special_tokens=False)) for s in SAMPLES)
        mine = [e.payload for e in events if e.payload.model == name]
        assert len(mine) == answer_tokens * n_targets
        assert all(0.0 < p.probability <= 1.0 and 1 <= p.rank <= 512 for p in mine)
        assert {p.level for p in mine} == {1, 2, 3}
        assert {p.correct for p in mine} == {True, False, None}
    logits = {name: {(p.sample_id, p.target_token): p.logit for p in payloads if p.model == name} for name in models}
    assert logits["base"] != logits["rl"]  # different models, different logits

    again = runner.invoke(probe_command, args, obj=embedded_settings)
    assert again.exit_code == 1, again.output
    assert "base: 0 samples probed, 3 already done" in again.stdout
    assert len(read_logits(embedded_settings, "second")) == len(events)
    assert len(DoneList.for_settings(embedded_settings).path.read_text().splitlines()) == 6


def test_probe_run_as_a_command_prints_no_library_progress_bar(models, embedded_settings, tmp_path):
    """In a process of its own, as a user runs it: transformers' own bars ("Loading weights") used to come
    between the bad line and trainwire's error on stderr, even piped."""
    data = write_jsonl(tmp_path / "tasks.jsonl", [json.dumps(SAMPLES[0]), "oops"])
    command = [sys.executable, "-m", "trainwire.cli", "--data-dir", str(embedded_settings.data_dir), "probe", "logits"]
    command += ["--model", f"base={models['base']}", "--data", str(data), "--words", "wait"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        f"bad line: {data}:2: not valid JSON: Expecting value (column 1)",
        f"Error: 1 bad line(s) in {data} were not probed (listed above)",
    ]
    assert "base: 1 samples probed, 0 already done" in done.stdout


def test_probe_checks_model_paths_before_anything_and_never_downloads(models, embedded_settings, tmp_path):
    data = write_jsonl(tmp_path / "tasks.jsonl", [json.dumps(SAMPLES[0])])
    (tmp_path / "empty").mkdir()

    def probe(spec: str) -> Result:
        args = ["--data-dir", str(embedded_settings.data_dir), "probe", "logits", "--model", spec, "--data", str(data)]
        return CliRunner().invoke(main, [*args, "--run", "paths"])

    assert probe(f"base={models['base']}").exit_code == 0
    done = DoneList.for_settings(embedded_settings).path.read_text()
    wrong = [
        ("base", tmp_path / "moved", "no such directory"),  # a name already done, with a wrong path
        (
            "fresh",
            "nowhere/no-such-model",
            "no such directory, and no model of that name in the local Hugging Face cache",
        ),
        ("fresh", data, "a file, not a model directory"),
        ("fresh", tmp_path / "empty", "a directory without a config.json"),
    ]
    for name, path, problem in wrong:
        result = probe(f"{name}={path}")
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith(f"Error: --model {name}: {path}: {problem}")
        assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.output
        assert "already done" not in result.stdout
    assert DoneList.for_settings(embedded_settings).path.read_text() == done
