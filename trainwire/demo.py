"""The main job, end to end on one machine: ``trainwire demo``.

1. builds a tiny policy model and tokenizer locally (no model hub), and a dataset of arithmetic
   prompts whose reward — the share of digits in the answer — a tiny random model can learn
   within a few dozen GRPO steps, so the reward visibly rises during the run;
2. starts the worker (ClickHouse sink, reward and group stats, health alerts, the fine-tuning
   data sink) on the bus in a background thread;
3. starts an LLM judge: an OpenAI-compatible server on loopback serving a small local model,
   and the judge worker that samples interactions, asks it, and publishes judge scores;
4. runs TRL's ``GRPOTrainer`` on CPU with trainwire's hook;
5. waits for the workers to drain, then prints the analysis report and the paths of the plots,
   the dashboard and the datasets.

Everything goes through the same bus and store a real deployment uses: the embedded default, or
Kafka and a ClickHouse server with ``--kafka`` and ``--clickhouse``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import click

from trainwire.analysis.report import HIGH_QUALITY_THRESHOLD
from trainwire.bus import Emitter
from trainwire.config import Settings
from trainwire.processors.dataset import DatasetConfig, DatasetFilter
from trainwire.processors.health import HealthConfig
from trainwire.processors.stats import StatsConfig
from trainwire.runtime import WorkerOptions, build_pipeline
from trainwire.runtime.pipeline import Pipeline
from trainwire.runtime.stages import DatasetStage
from trainwire.ui.command import ui_options

if TYPE_CHECKING:
    from trainwire.store.clickhouse import Store

logger = logging.getLogger("trainwire.demo")


@dataclass(frozen=True)
class DemoConfig:
    """Size of the demo run."""

    steps: int = 30
    prompts_per_step: int = 2
    num_generations: int = 4
    max_completion_length: int = 8
    learning_rate: float = 3e-2
    judge_sample_rate: float = 0.25
    run_id: str = field(default_factory=lambda: f"demo-{time.strftime('%Y%m%d-%H%M%S')}")


def digit_share(completions: list[Any], **_: Any) -> list[float]:
    """Reward: the share of characters of the completion that are digits (0..1)."""
    texts = [_text(c) for c in completions]
    return [sum(ch.isdigit() for ch in t) / max(1, len(t)) for t in texts]


def exact_answer(completions: list[Any], answer: list[str], **_: Any) -> list[float]:
    """Reward: 1 when the completion contains the expected answer, else 0."""
    return [float(a in _text(c)) for c, a in zip(completions, answer, strict=True)]


DEMO_REWARDS = (digit_share, exact_answer)
"""The demo's reward functions; GRPO trains on their sum, the interaction's total reward."""


def measures(reward_fn: Callable[..., Any]) -> str:
    """What a reward function measures: its docstring's first line, after ``Reward:``."""
    line = (reward_fn.__doc__ or reward_fn.__name__).strip().splitlines()[0]
    return line.removeprefix("Reward:").strip().rstrip(".")


def _text(completion: Any) -> str:
    if isinstance(completion, list):  # conversational: [{"role": "assistant", "content": ...}]
        return "".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))
    return str(completion)


class _Runnable(Protocol):
    async def run(self, stop: asyncio.Event | None = None) -> None: ...


class BackgroundWorker:
    """A worker (the pipeline, the judge worker) on its own thread and event loop, stopped on request."""

    def __init__(self, pipeline: _Runnable):
        self.pipeline = pipeline
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="trainwire-demo-worker", daemon=True)

    def start(self) -> BackgroundWorker:
        """Start the thread; returns once the pipeline's loop is running."""
        self._thread.start()
        self._ready.wait()
        return self

    def _main(self) -> None:
        async def run() -> None:
            self._stop = asyncio.Event()
            self._loop = asyncio.get_running_loop()
            self._ready.set()
            await self.pipeline.run(self._stop)

        try:
            asyncio.run(run())
        except BaseException as exc:  # reported by stop()
            self.error = exc
            self._ready.set()

    def drain(self, expected: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``expected()`` holds (the worker caught up), at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.error is None:
            if expected():
                return True
            time.sleep(0.25)
        return False

    def stop(self) -> None:
        """Checkpoint and stop; re-raise what the worker died of, if anything."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        if self.error is not None:
            raise self.error


def run_demo(
    settings: Settings,
    config: DemoConfig,
    output: Path,
    echo: Callable[[str], None] = click.echo,
    ui_port: int | None = None,
) -> dict:
    """Run the demo; return the paths it wrote and the report's numbers.

    With ``ui_port``, the web UI serves the store on 127.0.0.1 from the start (the run is watched
    as it trains) and, after the report, until Ctrl+C.
    """
    try:
        from datasets import Dataset
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from trl import GRPOConfig, GRPOTrainer

        from trainwire.producers.tiny import build_tiny_model
        from trainwire.producers.trainer import instrument_trainer
        from trainwire.producers.training_log import show_training_progress
    except ImportError as exc:
        from trainwire.errors import MissingExtraError

        raise MissingExtraError("train", "trainwire demo") from exc

    output.mkdir(parents=True, exist_ok=True)
    models = Path(settings.data_dir) / "demo-models"
    echo(f"[1/5] building a tiny policy model and tokenizer in {models / 'policy'}")
    policy_path = build_tiny_model(models / "policy", seed=0)
    tokenizer = AutoTokenizer.from_pretrained(policy_path)
    model = AutoModelForCausalLM.from_pretrained(policy_path)
    rows = [
        {"prompt": f"Question: what is {i} + {i + 1}? Answer:", "answer": str(2 * i + 1), "level": 1 + i % 5}
        for i in range(max(64, config.steps * config.prompts_per_step))
    ]

    from trainwire.store.clickhouse import open_store

    store = open_store(settings, own_within_s=30)
    store.migrate()
    ui = None
    if ui_port is not None:
        from trainwire.ui.command import start_ui

        ui = start_ui(store, ui_port)
        echo(f"web UI: {ui.url}run?run={config.run_id} (the run's charts fill in as it trains)")
    options = WorkerOptions(
        group=f"demo-{config.run_id}",
        stats=StatsConfig(step_window=5, time_window_s=60, time_hop_s=10),
        health=HealthConfig(loss_horizon=0),
        dataset_output=output / "datasets" / "sft.jsonl",
        dataset_format="openai",
        dataset=DatasetConfig(min_reward=HIGH_QUALITY_THRESHOLD, dedup_field="completion", split_ratio=(0.8, 0.1, 0.1)),
    )
    echo("[2/5] starting the worker: ClickHouse sink, reward/group stats, health alerts, dataset sink")
    pipeline = build_pipeline(settings, store, options)
    worker = BackgroundWorker(pipeline).start()
    judge = _start_judge(settings, config, models, echo)
    emitter = Emitter(settings)
    try:
        echo(f"[4/5] GRPO training on CPU: {config.steps} steps, run {config.run_id}")
        args = GRPOConfig(
            output_dir=str(Path(settings.data_dir) / "demo-trainer"),
            max_steps=config.steps,
            per_device_train_batch_size=config.prompts_per_step * config.num_generations,
            num_generations=config.num_generations,
            max_completion_length=config.max_completion_length,
            learning_rate=config.learning_rate,
            beta=0.0,
            use_cpu=True,
            report_to=[],
            bf16=False,
            logging_steps=1,
            save_strategy="no",
            seed=0,
            disable_tqdm=True,
        )
        trainer = GRPOTrainer(
            model=model,
            processing_class=tokenizer,
            reward_funcs=list(DEMO_REWARDS),
            args=args,
            train_dataset=Dataset.from_list(rows),
        )
        instrument_trainer(trainer, run_id=config.run_id, emitter=emitter)
        training = show_training_progress(trainer, output / "training_logs" / f"{config.run_id}.jsonl")
        trainer.train()
        emitter.flush(60)
        produced = config.steps * config.prompts_per_step * config.num_generations
        echo("[5/5] waiting for the workers to store everything")
        worker.drain(lambda: _count(store, "interactions", config.run_id) >= produced, timeout=120)
        if judge is not None:
            judge.drain(store, config.run_id, timeout=120)
    finally:
        emitter.close()
        if judge is not None:
            judge.stop()
        worker.stop()
    result = _report(store, config, output, echo, _dataset_filter(pipeline))
    echo(f"training logs: {training.path} ({training.logs_written} lines of TRL's metrics)")
    result["training_log"] = str(training.path)
    if ui is not None:
        echo(f"web UI: {ui.url}run?run={config.run_id} (serving until Ctrl+C)")
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
        ui.stop()
    store.close()
    return result


def _count(store: Store, table: str, run_id: str) -> int:
    rows = store.query_rows(f"SELECT count() AS n FROM {table} FINAL WHERE run_id = {{run:String}}", {"run": run_id})
    return int(rows[0]["n"])


# --------------------------------------------------------------------------- the judge


def judge_target(answer: str, reference: str) -> int:
    """The 1-5 grade the demo's judge is taught to give ``answer``: 5 with the reference, else by digits."""
    if reference and reference in answer:
        return 5
    return 1 + round(3 * sum(ch.isdigit() for ch in answer) / max(1, len(answer)))


JUDGE_CONTEXT_TOKENS = 80
"""The demo judge reads the last this many tokens of its prompt, in training and when served: the user
message (question, reference answer, answer to grade), not the template's instructions before it."""


def judge_examples(tokenizer: Any, count: int, seed: int) -> list[tuple[str, str, str, int]]:
    """``(question, answer, reference, grade)`` examples for the demo's judge, grades near uniform.

    Answers are made of the tokenizer's own tokens, digit tokens in the share a grade asks for:
    the text the demo's policy (same tokenizer) writes, from random tokens at the start of the run
    to strings of digits at the end. One in thirteen contains the reference answer (grade 5).
    """
    import random

    rng = random.Random(seed)
    vocab = range(tokenizer.vocab_size)
    digit_tokens = [t for t in vocab if tokenizer.decode([t]).strip().isdigit()]
    examples = []
    while len(examples) < count:
        i = rng.randrange(100)
        question, reference = f"Question: what is {i} + {i + 1}? Answer:", str(2 * i + 1)
        grade = rng.choices((1, 2, 3, 4, 5), weights=(3, 3, 3, 3, 1))[0]
        if grade == 5:
            answer = rng.choice((reference, f" {reference}", f"{reference} {reference}"))
        else:
            # the shares of digits judge_target rounds to this grade: 1 + round(3 * share) == grade
            share = rng.uniform(max(0.0, (grade - 1.5) / 3), min(1.0, (grade - 0.5) / 3))
            tokens = [
                rng.choice(digit_tokens) if rng.random() < share else rng.choice(vocab)
                for _ in range(rng.randrange(3, 9))
            ]
            answer = tokenizer.decode(tokens)
        examples.append((question, answer, reference, judge_target(answer, reference)))
    return examples


@dataclass(frozen=True)
class JudgeTraining:
    """How :func:`train_tiny_judge` trains: every value it depends on, none left to a library's default."""

    examples: int = 1024
    steps: int = 600
    batch_size: int = 16
    learning_rate: float = 3e-3
    warmup_steps: int = 60
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    weight_decay: float = 0.0


def train_tiny_judge(path: Path, seed: int = 1, training: JudgeTraining = JudgeTraining()) -> Path:
    """Build a tiny model and teach it, in seconds, to grade answers with ``Score: N`` as :func:`judge_target` does.

    It is served with vLLM-style ``guided_choice`` (``Score: 1`` .. ``Score: 5``), so every answer
    parses and the grade is the choice the model finds likeliest. The choices share every token but
    the grade's own, so training is a five-way classification of that token after the prompt's last
    :data:`JUDGE_CONTEXT_TOKENS` tokens: cross-entropy over the five grade tokens' logits, on
    :func:`judge_examples`, in shuffled batches, with a warmup then a cosine decay of the learning
    rate. Its scores then mostly agree with :func:`judge_target` on answers it never saw (a
    correlation of 0.75-0.9 over seeds and CPU kernels), so the judge's scores rise with the
    digit-share reward during the run. What it shows is the whole path on a CPU: a model served
    over the OpenAI API, the judge's prompt, parser, cache and worker.

    Everything random is seeded by ``seed`` (weights, examples, batch order), and the optimiser's
    settings are explicit (:class:`JudgeTraining`), so a library release cannot change the recipe.
    """
    import math

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainwire.judge.prompts import load_template
    from trainwire.producers.tiny import build_tiny_model

    marker = path / "judge-trained-v3"
    if marker.exists():
        return path
    build_tiny_model(path, seed=seed)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    prompt = load_template("default")
    choices = [tokenizer(f" Score: {g}", add_special_tokens=False)["input_ids"] for g in range(1, 6)]
    shared = next(n for n in range(len(choices[0])) if len({tuple(c[: n + 1]) for c in choices}) > 1)
    if any(len(c) != shared + 1 for c in choices):
        raise ValueError(f"the tiny tokenizer must spell each grade of ' Score: N' with one last token: {choices}")
    grade_tokens = torch.tensor([c[shared] for c in choices])
    contexts, labels = [], []
    for question, answer, reference, grade in judge_examples(tokenizer, training.examples, seed):
        ids = tokenizer.apply_chat_template(prompt.render(question, answer, reference), add_generation_prompt=True)
        if not isinstance(ids, list):
            ids = ids["input_ids"]
        contexts.append(ids[-JUDGE_CONTEXT_TOKENS:] + choices[0][:shared])
        labels.append(grade - 1)

    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=training.learning_rate,
        betas=training.adam_betas,
        eps=training.adam_eps,
        weight_decay=training.weight_decay,
    )

    def lr_factor(step: int) -> float:
        if step < training.warmup_steps:
            return (step + 1) / training.warmup_steps
        progress = (step - training.warmup_steps) / max(1, training.steps - training.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    shuffle = torch.Generator().manual_seed(seed)
    order: list[int] = []
    model.train()
    for _ in range(training.steps):
        if len(order) < training.batch_size:
            order += torch.randperm(len(contexts), generator=shuffle).tolist()
        batch, order = order[: training.batch_size], order[training.batch_size :]
        width = max(len(contexts[i]) for i in batch)
        input_ids = torch.full((len(batch), width), tokenizer.pad_token_id or 0)  # padded after: causal, unseen
        for row, i in enumerate(batch):
            input_ids[row, : len(contexts[i])] = torch.tensor(contexts[i])
        last = torch.tensor([len(contexts[i]) - 1 for i in batch])
        logits = model(input_ids=input_ids).logits[torch.arange(len(batch)), last][:, grade_tokens]
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor([labels[i] for i in batch]))
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    model.save_pretrained(path)
    marker.write_text("ok\n")
    return path


class DemoJudge:
    """The judge side of the demo: a model server on loopback and the judge worker on a thread."""

    def __init__(self, settings: Settings, config: DemoConfig, model_path: Path):
        from trainwire.judge import Judge, JudgeConfig, JudgeTrigger, TriggerConfig
        from trainwire.judge.servers import TransformersChatServer
        from trainwire.judge.worker import JudgeWorker

        self.server = TransformersChatServer(
            model_path, model="tiny-judge", max_new_tokens=40, max_input_tokens=JUDGE_CONTEXT_TOKENS
        ).start()
        judge = Judge(
            JudgeConfig(
                base_url=self.server.base_url, model="tiny-judge", concurrency=2, timeout_s=30, guided_choice=True
            ),
            cache_dir=Path(settings.data_dir) / "judge",
        )
        trigger = JudgeTrigger(TriggerConfig(sample_rate=config.judge_sample_rate, runs=(config.run_id,)))
        self.worker = JudgeWorker(settings, judge, trigger=trigger, group=f"demo-judge-{config.run_id}")
        self._thread: BackgroundWorker = BackgroundWorker(self.worker).start()

    def drain(self, store: Store, run_id: str, timeout: float) -> None:
        """Wait until every judge request of ``run_id`` has a score stored."""

        def caught_up() -> bool:
            requests = _count(store, "judge_requests", run_id)
            return requests > 0 and _count(store, "judge_scores", run_id) >= requests

        self._thread.drain(caught_up, timeout)

    def stop(self) -> None:
        """Stop the worker, then the model server."""
        try:
            self._thread.stop()
        finally:
            self.server.stop()


def _start_judge(settings: Settings, config: DemoConfig, models: Path, echo: Callable[[str], None]) -> DemoJudge:
    echo(f"[3/5] teaching a tiny local judge model its output format, serving it on loopback ({models / 'judge'})")
    return DemoJudge(settings, config, train_tiny_judge(models / "judge"))


# --------------------------------------------------------------------------- the report


def _dataset_filter(pipeline: Pipeline) -> DatasetFilter:
    """The worker's fine-tuning data filter, with its counts of the interactions kept and dropped."""
    (stage,) = [s for s in pipeline.stages.stages if isinstance(s, DatasetStage)]
    return stage.processor.filter


def _report(
    store: Store, config: DemoConfig, output: Path, echo: Callable[[str], None], dataset: DatasetFilter
) -> dict[str, Any]:
    from trainwire.analysis.queries import run_query
    from trainwire.analysis.report import analyze

    report = analyze(store, output / "analysis", [config.run_id])
    rewards = {}  # reward function -> (mean over the first 5 steps, over the last 5)
    for name in [fn.__name__ for fn in DEMO_REWARDS] + ["total"]:
        steps = run_query(store, "reward_by_step", runs=[config.run_id], reward_fn=name).to_pylist()
        rewards[name] = (_mean_reward(steps[:5]), _mean_reward(steps[-5:]))
    judged = store.query_rows(
        "SELECT countIf(success) AS scored, countIf(NOT success) AS failed FROM judge_scores FINAL "
        "WHERE run_id = {run:String}",
        {"run": config.run_id},
    )[0]
    alerts = store.query_rows(
        "SELECT rule, count() AS n FROM alerts FINAL WHERE run_id = {run:String} GROUP BY rule ORDER BY rule",
        {"run": config.run_id},
    )
    datasets = sorted((output / "datasets").glob("sft_*.jsonl"))
    echo("")
    echo(f"run {config.run_id}: mean reward over the first 5 steps -> over the last 5, per reward function:")
    described = {fn.__name__: measures(fn) for fn in DEMO_REWARDS}
    described["total"] = "what GRPO trains on: the sum of " + " and ".join(described)
    for name, (first, last) in rewards.items():
        echo(f"  {name:<13} {first:.3f} -> {last:.3f}  {described[name]}")
    echo(f"judge: {judged['scored']} completions scored, {judged['failed']} failed judgements")
    echo("alerts: " + (", ".join(f"{a['rule']} x{a['n']}" for a in alerts) or "none"))
    echo("plots and dashboard:")
    for path in report.files:
        echo(f"  {path}")
    dropped = ", ".join(f"{reason} {n}" for reason, n in sorted(dataset.dropped.items()) if n)
    echo(
        f"fine-tuning data (the high-quality answers, reward >= {HIGH_QUALITY_THRESHOLD:g}): "
        f"kept {dataset.kept} interactions; dropped {dropped or 'none'}"
    )
    for path in datasets:
        echo(f"  {path} ({sum(1 for _ in path.open())} examples)")
    echo(f'explore: trainwire --data-dir {store_dir_hint(store)} sql "SELECT * FROM reward_stats FINAL LIMIT 5"')
    return {
        "run_id": config.run_id,
        "reward_first": rewards["total"][0],
        "reward_last": rewards["total"][1],
        "rewards": rewards,
        "dataset_dropped": dict(dataset.dropped),
        "judge": judged,
        "alerts": {a["rule"]: a["n"] for a in alerts},
        "files": [str(p) for p in report.files],
        "datasets": [str(p) for p in datasets],
    }


def _mean_reward(rows: list[dict[str, Any]]) -> float:
    values = [r["mean"] for r in rows if r["mean"] is not None]
    return sum(values) / len(values) if values else float("nan")


def store_dir_hint(store: Store) -> str:
    """The ``--data-dir`` to pass to later commands to see the same embedded store."""
    return str(getattr(store, "data_dir", "<data dir>"))


@click.command("demo")
@click.option("--steps", type=click.IntRange(min=2), default=30, show_default=True, help="GRPO steps.")
@click.option("--output", type=click.Path(path_type=Path), default=Path("trainwire-demo"), show_default=True)
@click.option("--judge-sample-rate", type=click.FloatRange(0, 1), default=0.25, show_default=True)
@ui_options
@click.pass_obj
def demo_command(
    settings: Settings, steps: int, output: Path, judge_sample_rate: float, serve_ui: bool, ui_port: int
) -> None:
    """Run the whole pipeline on this machine: a short GRPO training of a tiny local model with the hook,
    the workers (stats, alerts, fine-tuning data, ClickHouse), a local LLM judge, and the analysis report.

    No server and no network: the embedded bus and chdb under --data-dir. With --kafka and
    --clickhouse it uses those servers instead. With --ui the web UI shows the run as it trains,
    and keeps serving after the report until Ctrl+C.
    """
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for noisy in ("aiokafka", "httpx", "transformers", "trl", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    started = time.monotonic()
    config = DemoConfig(steps=steps, judge_sample_rate=judge_sample_rate)
    run_demo(settings, config, output, ui_port=ui_port if serve_ui else None)
    click.echo(f"demo finished in {time.monotonic() - started:.0f}s")
