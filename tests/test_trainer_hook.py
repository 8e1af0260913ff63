"""The training-loop hook on real TRL GRPO and HF Trainer runs (CPU, a tiny locally built model)."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import math
import os
import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainingArguments,
)
from trl import GRPOConfig, GRPOTrainer

from trainwire.bus import Emitter, open_consumer
from trainwire.config import Settings
from trainwire.events import Event, Interaction, TrainStep, decode
from trainwire.judge.client import JudgeConfig
from trainwire.judge.reward import judge_reward_function
from trainwire.judge.servers import Reply, ScriptedJudgeServer, group_answers
from trainwire.producers.tiny import TINY_CORPUS, build_tiny_model
from trainwire.producers.trainer import (
    TrainwireCallback,
    _RolloutCollector,
    instrument_reward_funcs,
    instrument_trainer,
    train_step_from_logs,
)
from trainwire.topics import event_topics


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="module")
def tiny_reward_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised one-label sequence-classification model with the tiny tokenizer, saved locally."""
    path = tmp_path_factory.mktemp("reward") / "tiny-reward-model"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(tiny_model, num_labels=1))
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(path)
    return path


def read_events(settings: Settings) -> list[Event]:
    """Every event on the bus (the emitter was closed first, so everything is there)."""

    async def main() -> list[Event]:
        consumer = open_consumer(settings, event_topics(settings.topic_prefix), "reader")
        await consumer.start()
        out: list[Event] = []
        try:
            while True:
                records = await consumer.getmany(timeout_ms=300)
                if not records:
                    break
                out.extend(decode(r.value) for r in records)
        finally:
            await consumer.stop()
        return out

    return asyncio.run(main())


def math_dataset(n: int, chat: bool = False) -> Dataset:
    rows = []
    for i in range(n):
        question = f"Question: what is {i} + {i + 1}?"
        prompt = [{"role": "user", "content": question}] if chat else question
        rows.append({"prompt": prompt, "answer": str(2 * i + 1), "level": 1 + i % 5})
    return Dataset.from_list(rows)


def grpo_args(tmp_path: Path, **overrides) -> GRPOConfig:
    options = {
        "output_dir": str(tmp_path / "out"),
        "max_steps": 3,
        "per_device_train_batch_size": 4,
        "num_generations": 2,
        "max_completion_length": 6,
        "learning_rate": 1e-3,
        "use_cpu": True,
        "report_to": [],
        "bf16": False,
        "logging_steps": 1,
        "save_strategy": "no",
        "seed": 0,
        "disable_tqdm": True,
    }
    options.update(overrides)
    return GRPOConfig(**options)


class RewardLog:
    """Real reward functions (one sync, one async) that remember what they returned."""

    def __init__(self) -> None:
        self.returned: dict[str, list[tuple[str, float]]] = defaultdict(list)

    def funcs(self):
        log = self.returned

        def distinct_tokens(prompts, completions, completion_ids, **kwargs):
            values = [float(len(set(ids))) for ids in completion_ids]
            log["distinct_tokens"].extend(zip(map(_text, completions), values, strict=True))
            return values

        async def digit_bonus(prompts, completions, answer, **kwargs):
            await asyncio.sleep(0)
            texts = [_text(c) for c in completions]
            values = [float(sum(ch.isdigit() for ch in t) + (a in t)) for t, a in zip(texts, answer, strict=True)]
            log["digit_bonus"].extend(zip(map(_text, completions), values, strict=True))
            return values

        return [distinct_tokens, digit_bonus]


def _text(completion) -> str:
    return completion if isinstance(completion, str) else "".join(m["content"] for m in completion)


def split(events: list[Event]) -> tuple[list[Interaction], list[TrainStep]]:
    interactions = [e.payload for e in events if isinstance(e.payload, Interaction)]
    steps = [e.payload for e in events if isinstance(e.payload, TrainStep)]
    return interactions, steps


def test_grpo_run_emits_one_complete_interaction_per_completion(tiny_model, embedded_settings, tmp_path):
    rewards = RewardLog()
    dataset = math_dataset(8)
    args = grpo_args(
        tmp_path,
        max_steps=4,
        per_device_train_batch_size=2,
        steps_per_generation=2,
        reward_weights=[1.0, 0.5],
    )
    trainer = GRPOTrainer(
        model=str(tiny_model),
        processing_class=AutoTokenizer.from_pretrained(tiny_model),
        reward_funcs=rewards.funcs(),
        args=args,
        train_dataset=dataset,
    )
    emitter = Emitter(embedded_settings)
    callback = instrument_trainer(trainer, run_id="grpo-test", emitter=emitter, log_token_stats=True)
    assert instrument_trainer(trainer) is callback  # idempotent
    assert [f.__name__ for f in trainer.reward_funcs] == ["distinct_tokens", "digit_bonus"]
    assert inspect.iscoroutinefunction(trainer.reward_funcs[1])
    trainer.train()
    emitter.close()

    events = read_events(embedded_settings)
    assert {e.run_id for e in events} == {"grpo-test"}
    assert {e.source.library for e in events} == {"trl"}
    interactions, steps = split(events)

    # two generation batches (every steps_per_generation=2 steps) of 2 prompts x 2 generations
    assert len(interactions) == 8
    assert sorted({i.step for i in interactions}) == [1, 3]

    # every reward function's value for the same completion, and the weighted total
    for name in ("distinct_tokens", "digit_bonus"):
        emitted = sorted((i.completion, i.rewards[name]) for i in interactions)
        assert emitted == sorted(rewards.returned[name])
    for i in interactions:
        assert set(i.rewards) == {"distinct_tokens", "digit_bonus"}
        assert i.reward == pytest.approx(i.rewards["distinct_tokens"] + 0.5 * i.rewards["digit_bonus"])
        assert i.completion_tokens is not None and 1 <= i.completion_tokens <= 6
        assert i.prompt_tokens is not None and i.prompt_tokens > 0
        assert i.model == str(tiny_model)

    # groups: one prompt, num_generations members indexed 0..G-1, named after the step
    groups: dict[str, list[Interaction]] = defaultdict(list)
    for i in interactions:
        groups[i.group_id].append(i)
    assert len(groups) == 4
    rows_by_prompt = {row["prompt"]: row for row in dataset}
    spread = 0
    for group_id, members in groups.items():
        assert group_id.split(":")[0] == str(members[0].step)
        assert sorted(m.group_index for m in members) == [0, 1]
        assert len({m.prompt for m in members}) == 1
        row = rows_by_prompt[members[0].prompt]
        for m in members:  # the dataset's extra columns travel in the metadata
            assert m.metadata["answer"] == row["answer"]
            assert m.metadata["level"] == row["level"]
        # advantages are TRL's: centred on the group, ordered like the totals
        low, high = sorted(members, key=lambda m: m.reward)
        assert low.advantage + high.advantage == pytest.approx(0.0, abs=1e-4)
        if high.reward > low.reward:
            assert high.advantage > 0 > low.advantage
            spread += 1
        else:
            assert high.advantage == pytest.approx(0.0, abs=1e-4)
    assert spread > 0  # the run did produce groups with different rewards

    # per-token logprobs and entropies from the loss computation, one per completion token
    for i in interactions:
        logprobs, entropies = i.metadata["token_logprobs"], i.metadata["token_entropies"]
        assert len(logprobs) == len(entropies) == i.completion_tokens
        assert all(lp <= 0.0 for lp in logprobs)
        assert all(h >= 0.0 for h in entropies)

    # a train_step per logging step with what the trainer logged
    by_step = defaultdict(list)
    for s in steps:
        by_step[s.step].append(s)
    assert sorted(by_step) == [1, 2, 3, 4]
    for step in (1, 2, 3, 4):
        logged = by_step[step][0]
        assert logged.loss is not None and math.isfinite(logged.loss)
        assert logged.learning_rate is not None and logged.grad_norm is not None and logged.epoch is not None
        assert "step_time" in logged.metrics and "entropy" in logged.metrics
    for step in (1, 3):  # the steps that generated: reward metrics match the interactions' totals
        logged = by_step[step][0]
        totals = [i.reward for i in interactions if i.step == step]
        assert logged.metrics["reward"] == pytest.approx(sum(totals) / len(totals), rel=1e-5)
        assert "rewards/distinct_tokens/mean" in logged.metrics
        assert "rewards/digit_bonus/mean" in logged.metrics
        assert "frac_reward_zero_std" in logged.metrics
        assert "completions/mean_length" in logged.metrics
    assert any("train_runtime" in s.metrics for s in steps)  # the end-of-training summary

    # TRL's own metrics keep the reward functions' names
    logged_keys = set().union(*trainer.state.log_history)
    assert {"rewards/distinct_tokens/mean", "rewards/digit_bonus/mean"} <= logged_keys


def test_instrumented_reward_funcs_with_chat_prompts(tiny_model, embedded_settings, tmp_path):
    rewards = RewardLog()
    emitter = Emitter(embedded_settings)
    funcs = instrument_reward_funcs(rewards.funcs(), run_id="chat-run", emitter=emitter, num_generations=2)
    assert [f.__name__ for f in funcs] == ["distinct_tokens", "digit_bonus"]
    assert not inspect.iscoroutinefunction(funcs[0]) and inspect.iscoroutinefunction(funcs[1])
    trainer = GRPOTrainer(
        model=str(tiny_model),
        processing_class=AutoTokenizer.from_pretrained(tiny_model),
        reward_funcs=funcs,
        args=grpo_args(tmp_path, max_steps=2),
        train_dataset=math_dataset(4, chat=True),
        callbacks=[TrainwireCallback(run_id="chat-run", emitter=emitter)],
    )
    trainer.train()
    emitter.close()

    interactions, steps = split(read_events(embedded_settings))
    assert len(interactions) == 2 * 4
    for i in interactions:
        assert isinstance(i.prompt, list) and i.prompt[0]["role"] == "user"
        assert i.prompt[0]["content"].startswith("Question:")
        assert set(i.rewards) == {"distinct_tokens", "digit_bonus"}
        assert i.reward == pytest.approx(i.rewards["distinct_tokens"] + i.rewards["digit_bonus"])
        assert i.advantage is None  # only the instrumented trainer knows TRL's advantages
        assert i.step in (1, 2) and i.group_id.startswith(f"{i.step}:")
        assert i.metadata["completion_messages"][0]["role"] == "assistant"
    groups = defaultdict(set)
    for i in interactions:
        groups[i.group_id].add(i.group_index)
    assert all(indices == {0, 1} for indices in groups.values()) and len(groups) == 4
    assert sorted(s.step for s in steps if s.loss is not None) == [1, 2]
    logged_keys = set().union(*trainer.state.log_history)
    assert {"rewards/distinct_tokens/mean", "rewards/digit_bonus/mean"} <= logged_keys


def test_hf_trainer_gets_the_train_step_stream(tiny_model, embedded_settings, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    dataset = Dataset.from_dict({"text": list(TINY_CORPUS)}).map(
        lambda row: tokenizer(row["text"]), remove_columns=["text"]
    )
    emitter = Emitter(embedded_settings)
    args = TrainingArguments(
        output_dir=str(tmp_path / "sft"),
        max_steps=4,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        warmup_steps=2,
        logging_steps=1,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        callbacks=[TrainwireCallback(run_id="sft-test", emitter=emitter)],
    )
    trainer.train()
    emitter.close()

    events = read_events(embedded_settings)
    assert {e.source.library for e in events} == {"transformers"}
    interactions, steps = split(events)
    assert interactions == []
    per_step = [s for s in steps if s.loss is not None]
    assert [s.step for s in per_step] == [1, 2, 3, 4]
    for s in per_step:
        assert s.loss > 0 and math.isfinite(s.grad_norm)
        assert 0 < s.epoch <= 4
    # the learning rate warms up over two steps, then decays (seed 003)
    rates = [s.learning_rate for s in per_step]
    assert rates[0] < rates[1] and rates[2] > rates[3]
    summary = [s for s in steps if "train_runtime" in s.metrics]
    assert len(summary) == 1 and summary[0].step == 4
    assert not [k for s in steps for k in s.metrics if k.startswith("sampling_args/")]  # not a GRPO run


def test_train_step_from_logs_keeps_every_number():
    step = train_step_from_logs(
        {
            "loss": 1.5,
            "grad_norm": torch.tensor(2.0),
            "learning_rate": 1e-4,
            "epoch": 0.25,
            "kl": 0.01,
            "reward": float("nan"),
            "rewards/acc/mean": 1,
            "note": "text",
            "flag": True,
            "missing": None,
        },
        step=7,
    )
    assert (step.step, step.loss, step.grad_norm, step.learning_rate, step.epoch) == (7, 1.5, 2.0, 1e-4, 0.25)
    assert step.metrics["kl"] == 0.01 and step.metrics["rewards/acc/mean"] == 1.0
    assert math.isnan(step.metrics["reward"])
    assert set(step.metrics) == {"kl", "reward", "rewards/acc/mean"}


def test_wrappers_wait_for_every_function_and_never_break_the_call(embedded_settings):
    emitter = Emitter(embedded_settings)

    def first(prompts, completions, **kwargs):
        return [1.0 for _ in completions]

    def second(prompts, completions, **kwargs):
        return [None, 2.0]

    wrapped_first, wrapped_second = instrument_reward_funcs([first, second], run_id="unit", emitter=emitter)
    # a positional call is passed through untouched (nothing to record)
    assert wrapped_first(["p"], ["c"]) == [1.0]

    prompts, completions = ["p1", "p2"], ["c1", "c2"]
    columns = {"odd": [{1, 2}, object()], "answer": ["a", "b"]}
    assert wrapped_first(prompts=prompts, completions=completions, **columns) == [1.0, 1.0]
    assert emitter.stats().queued == 0  # the batch is not complete yet
    assert wrapped_second(prompts=prompts, completions=completions, **columns) == [None, 2.0]
    emitter.close()

    interactions, _ = split(read_events(embedded_settings))
    by_completion = {i.completion: i for i in interactions}
    assert set(by_completion) == {"c1", "c2"}
    assert by_completion["c1"].rewards == {"first": 1.0} and by_completion["c1"].reward == 1.0
    assert by_completion["c2"].rewards == {"first": 1.0, "second": 2.0} and by_completion["c2"].reward == 3.0
    assert by_completion["c1"].metadata["answer"] == "a"
    assert isinstance(by_completion["c1"].metadata["odd"], str)  # not JSON: kept as its text


class TrlRewards(TrainerCallback):
    """The per-completion values TRL computed for a reward function or model in each step (from its own logs)."""

    def __init__(self, trainer: GRPOTrainer, name: str) -> None:
        self.trainer, self.name = trainer, name
        self.values: list[tuple[int, str, float]] = []

    def on_step_end(self, args, state, control, **kwargs) -> None:
        logs = self.trainer._logs  # one generation batch per step here (the deques hold one batch)
        pairs = zip(logs["completion"], logs["rewards"][self.name], strict=True)
        self.values.extend((state.global_step, completion, value) for completion, value in pairs)


def test_reward_model_values_are_the_ones_trl_used(tiny_model, tiny_reward_model, embedded_settings, tmp_path):
    rewards = RewardLog()
    reward_model = AutoModelForSequenceClassification.from_pretrained(tiny_reward_model)
    forwards = []
    reward_model.register_forward_hook(lambda module, args, output: forwards.append(output.logits.shape[0]))
    trainer = GRPOTrainer(
        model=str(tiny_model),
        processing_class=AutoTokenizer.from_pretrained(tiny_model),
        reward_funcs=[rewards.funcs()[0], reward_model],
        reward_processing_classes=[None, AutoTokenizer.from_pretrained(tiny_reward_model)],
        args=grpo_args(tmp_path, max_steps=3, reward_weights=[1.0, 2.0]),
        train_dataset=math_dataset(6),
    )
    name = "tiny-reward-model"  # TRL names a reward model after its checkpoint
    assert trainer.reward_func_names == ["distinct_tokens", name]
    trl_used = TrlRewards(trainer, name)
    trainer.add_callback(trl_used)
    emitter = Emitter(embedded_settings)
    instrument_trainer(trainer, run_id="reward-model", emitter=emitter)
    assert isinstance(trainer.reward_funcs[1], torch.nn.Module)  # TRL still runs the model itself
    trainer.train()
    emitter.close()

    interactions, _ = split(read_events(embedded_settings))
    assert len(interactions) == 3 * 4
    for i in interactions:
        assert set(i.rewards) == {"distinct_tokens", name}
        assert i.reward == pytest.approx(i.rewards["distinct_tokens"] + 2.0 * i.rewards[name], rel=1e-6)
    emitted = sorted((i.step, i.completion, i.rewards[name]) for i in interactions)
    assert emitted == sorted(trl_used.values)  # exactly the float32 scores TRL turned into advantages
    assert len({value for _, _, value in emitted}) > 1
    assert forwards == [4, 4, 4]  # one forward pass per generation batch: TRL's own, none added
    for logged in trainer.state.log_history[:-1]:  # and the means TRL logged are the interactions' means
        scored = [i for i in interactions if i.step == logged["step"]]
        assert logged[f"rewards/{name}/mean"] == pytest.approx(sum(i.rewards[name] for i in scored) / 4, rel=1e-5)
        assert logged["reward"] == pytest.approx(sum(i.reward for i in scored) / 4, rel=1e-5)


class BrokenEmitter:
    """An emitter whose every call fails.

    A stand-in on purpose: the fault tested is a bug in telemetry code, which a real emitter
    cannot be made to have; the real emitter's own failure paths are tested in test_bus_*.
    """

    def __init__(self) -> None:
        self.calls = 0

    def emit(self, event: Event) -> None:
        self.calls += 1
        raise RuntimeError("the bus is on fire")

    def flush(self, timeout: float | None = None) -> bool:
        raise RuntimeError("the bus is on fire")


def test_telemetry_failures_never_stop_training(tiny_model, tiny_reward_model, tmp_path, monkeypatch, caplog):
    def fail(*args, **kwargs):  # a bug in the hook's own code: a fault that cannot be produced for real
        raise RuntimeError("telemetry bug")

    monkeypatch.setattr(_RolloutCollector, "record_models", fail)
    monkeypatch.setattr(_RolloutCollector, "take_token_stats", fail)
    rewards = RewardLog()
    trainer = GRPOTrainer(
        model=str(tiny_model),
        processing_class=AutoTokenizer.from_pretrained(tiny_model),
        reward_funcs=[*rewards.funcs(), AutoModelForSequenceClassification.from_pretrained(tiny_reward_model)],
        reward_processing_classes=[None, None, AutoTokenizer.from_pretrained(tiny_reward_model)],
        args=grpo_args(tmp_path, max_steps=2),
        train_dataset=math_dataset(4),
    )
    emitter = BrokenEmitter()
    instrument_trainer(trainer, run_id="broken", emitter=emitter, log_token_stats=True)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="trainwire.trainer"):
        trainer.train()

    assert trainer.state.global_step == 2
    assert emitter.calls > 0
    for expected in ("reward models' values", "token statistics", "hand events", "flushing"):
        assert expected in caplog.text
    logged_keys = set().union(*trainer.state.log_history)
    assert "rewards/tiny-reward-model/mean" in logged_keys


class RecordingEmitter:
    """Keeps what it is given, with no background thread.

    A stand-in on purpose: the test is about when the callback hands events over, which the real
    emitter does not expose (it sends them on at once); delivery itself is tested end to end above.
    """

    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def flush(self, timeout: float | None = None) -> bool:
        return True


def test_callback_hands_events_over_at_most_every_hand_over_every_s():
    sink = RecordingEmitter()
    callback = TrainwireCallback(run_id="held", emitter=sink, hand_over_every_s=3600)  # type: ignore[arg-type]
    control = TrainerControl()
    for step in (1, 2, 3):
        state = SimpleNamespace(global_step=step, is_world_process_zero=True)
        callback.on_step_end(None, state, control)
        callback.on_log(None, state, control, logs={"loss": float(step)})
        assert len(sink.events) == 1  # the first hand-over is due at once, the next only after an hour
    callback.on_train_end(None, state, control)
    assert [e.payload.loss for e in sink.events] == [1.0, 2.0, 3.0]  # the end of training hands over the rest


def test_events_held_by_a_run_that_crashes_are_delivered_at_exit(embedded_settings):
    script = textwrap.dedent(
        """
        from types import SimpleNamespace
        from transformers import TrainerControl
        from trainwire.producers.trainer import TrainwireCallback

        callback = TrainwireCallback(run_id="crashed", hand_over_every_s=3600)  # the process-wide emitter
        for step in (1, 2, 3):
            state = SimpleNamespace(global_step=step, is_world_process_zero=True)
            callback.on_log(None, state, TrainerControl(), logs={"loss": float(step)})
        raise RuntimeError("the training loop crashed")
        """
    )
    env = {**os.environ, "TRAINWIRE_DATA_DIR": str(embedded_settings.data_dir)}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert "the training loop crashed" in result.stderr

    _, steps = split(read_events(embedded_settings))
    assert [s.loss for s in steps] == [1.0, 2.0, 3.0]  # the two still held went out before the emitter closed


def test_columns_and_metrics_that_reward_functions_log_reach_the_events(tiny_model, embedded_settings, tmp_path):
    """TRL passes reward functions ``log_extra`` (a column) and ``log_metric`` (a scalar per batch)."""
    logged_columns: list[tuple[str, str]] = []  # (completion, the parsed answer it logged)
    logged_metrics: list[float] = []

    def answer_match(prompts, completions, answer, log_extra, log_metric, **kwargs):
        parsed = ["".join(ch for ch in _text(c) if ch.isdigit()) or "none" for c in completions]
        values = [float(p == a) for p, a in zip(parsed, answer, strict=True)]
        log_extra("parsed_answer", parsed)
        log_metric("parse_rate", sum(p != "none" for p in parsed) / len(parsed))
        logged_columns.extend(zip(map(_text, completions), parsed, strict=True))
        logged_metrics.append(sum(p != "none" for p in parsed) / len(parsed))
        return values

    trainer = GRPOTrainer(
        model=str(tiny_model),
        processing_class=AutoTokenizer.from_pretrained(tiny_model),
        reward_funcs=[answer_match, RewardLog().funcs()[0]],
        args=grpo_args(tmp_path, max_steps=3, top_p=0.9, top_k=5),
        train_dataset=math_dataset(6),
    )
    emitter = Emitter(embedded_settings)
    instrument_trainer(trainer, run_id="logged", emitter=emitter)
    trainer.train()
    emitter.close()

    interactions, steps = split(read_events(embedded_settings))
    assert len(interactions) == 3 * 4
    emitted = sorted((i.completion, i.metadata["parsed_answer"]) for i in interactions)
    assert emitted == sorted(logged_columns)  # each completion's own value, next to the dataset's columns
    assert all("answer" in i.metadata for i in interactions)
    per_step = {s.step: s for s in steps if s.loss is not None}
    assert sorted(per_step) == [1, 2, 3]
    for step, value in zip((1, 2, 3), logged_metrics, strict=True):  # one generation batch per step
        assert per_step[step].metrics["parse_rate"] == pytest.approx(value)
    for s in steps:  # the sampling parameters, with every step (min_p is not set)
        sampling = {k: v for k, v in s.metrics.items() if k.startswith("sampling_args/")}
        assert sampling == {
            "sampling_args/temperature": 1.0,
            "sampling_args/top_p": 0.9,
            "sampling_args/top_k": 5.0,
            "sampling_args/importance_sampling_correction": 0.0,  # no vLLM: TRL does not correct
        }


def test_group_judge_reward_function_scores_each_grpo_group_in_one_request(tiny_model, embedded_settings, tmp_path):
    """``judge_reward_function(mode="group")`` as a real GRPOTrainer's reward function: one judge request
    per prompt's ``num_generations`` completions, each completion's score where TRL expects it."""

    def reply(body: dict) -> Reply:  # the second answer of each group scores 5 of 5, the first 1
        answers = group_answers(body)
        return Reply(json.dumps([{"id": i, "score": 1 + 4 * n} for n, (i, _) in enumerate(answers)]))

    emitter = Emitter(embedded_settings)
    with ScriptedJudgeServer(reply) as server:
        config = JudgeConfig(base_url=server.base_url, model=server.model, max_retries=0)
        trainer = GRPOTrainer(
            model=str(tiny_model),
            processing_class=AutoTokenizer.from_pretrained(tiny_model),
            reward_funcs=[judge_reward_function(config, mode="group", cache_dir=tmp_path / "cache")],
            args=grpo_args(tmp_path, max_steps=2),
            train_dataset=math_dataset(4),
        )
        instrument_trainer(trainer, run_id="group-judged", emitter=emitter)
        trainer.train()
        requests = [group_answers(body) for body in server.requests]
    emitter.close()

    assert [len(answers) for answers in requests] == [2] * 4  # 2 steps x 4 completions in groups of 2
    interactions, _ = split(read_events(embedded_settings))
    assert len(interactions) == 8
    groups = defaultdict(list)
    for interaction in interactions:
        groups[interaction.group_id].append((interaction.group_index, interaction.rewards["judge_reward"]))
    assert sorted(sorted(group) for group in groups.values()) == [[(0, 0.0), (1, 1.0)]] * 4
