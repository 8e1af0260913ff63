"""The worker's output, byte for byte: digests of its rows and dataset files on seeded random streams.

A seeded stream of interactions (GRPO groups and API calls), train steps, judge requests and judge
scores, with fixed event ids, times and sources, goes through the worker: reward stats, group
stats, alerts, ClickHouse rows and fine-tuning files come out. Their sha256 is compared to the
digest the worker gave before the performance work of issue #18 (``GOLDEN``): an optimization
must not change a single byte. Only what the wall clock or the worker's host decides is left out
of the digest: ``inserted_at`` and the source host and process of the events the worker makes.

When a change to the output is intended, print the new digests with
``TRAINWIRE_PRINT_DIGESTS=1 pytest -q -s tests/test_digest.py`` and say why in the commit.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from test_faust_worker import PARTITIONS, start_worker, stop, wait_until_caught_up

from trainwire.bus import Emitter
from trainwire.bus.admin import ensure_topics
from trainwire.config import Settings
from trainwire.events import Event, Interaction, JudgeRequest, JudgeScore, Source, TrainStep
from trainwire.processors.dataset import DatasetConfig
from trainwire.processors.stats import StatsConfig
from trainwire.runtime import WorkerOptions, build_pipeline
from trainwire.store.clickhouse import Store, open_store

TABLES = (
    "interactions",
    "train_steps",
    "judge_requests",
    "judge_scores",
    "alerts",
    "reward_stats",
    "group_stats",
)
"""The tables the worker writes (the analysis tables are ClickHouse's aggregates of these)."""

WALL_CLOCK_COLUMNS = frozenset({"inserted_at", "source_host", "source_process"})
"""Columns set by the clock or the machine the worker runs on, not by the stream."""

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SOURCE = Source("trainer-0", 4242, "trainwire")
SEEDS = (1, 2, 3)

GOLDEN: dict[tuple[str, int], str] = {
    ("embedded", 1): "767acd72601e57ea1b0ec7b8a8d1f86d1a22823fac802683130c977a62fd77fd",
    ("embedded", 2): "a921640707dabe7ee2e0441cc0705c42f481bab21f7f6e3bc0220f3833f4d16c",
    ("embedded", 3): "c1cc192453bcbdac28c8b4ffbbe95d25aa23d4d5918880feebc8d1ec96958dcd",
    ("faust", 1): "776cc0ca27765b9a0b193faad109c41b0219f39ff94caaebb75afe87f6729b94",
}
"""(runtime, seed) -> sha256 of the rows and dataset files, computed on the code before #18's changes."""


def event_id(rng: random.Random) -> str:
    """A UUIDv7-shaped id from ``rng`` (the stream is the same at every run)."""
    value = rng.getrandbits(128) & ~(0xF << 76) | (0x7 << 76)
    value = value & ~(0b11 << 62) | (0b10 << 62)
    return str(uuid.UUID(int=value))


def random_stream(seed: int, judged: bool = True) -> list[Event]:
    """Two runs of GRPO steps (groups of interactions, a train step, judge requests and scores
    unless not ``judged``) and API calls, with random rewards, lengths and times, NaN losses,
    failed calls, duplicate completions and a redelivered event among them."""
    rng = random.Random(seed)
    events: list[Event] = []
    ts = START

    def add(run: str, payload) -> Event:
        nonlocal ts
        ts += timedelta(microseconds=rng.randint(1, 400_000))
        event = Event(run, payload, event_id=event_id(rng), ts=ts, source=SOURCE)
        events.append(event)
        return event

    for step in range(rng.randint(14, 18)):
        for run in (f"s{seed}-grpo-a", f"s{seed}-grpo-b"):
            step_events: list[Event] = []
            for group in range(rng.randint(2, 4)):
                for index in range(4):
                    accuracy = float(rng.random() < 0.4 + step / 40)
                    fmt = rng.choice((0.0, 0.25, 0.5, 1.0))
                    answer = rng.choice(("42", "forty-two", f"{step * group}", "x" * rng.randint(1, 60)))
                    step_events.append(
                        add(
                            run,
                            Interaction(
                                prompt=[{"role": "user", "content": f"{run} step {step} question {group}"}],
                                completion=f"answer: {answer}",
                                reward=accuracy + fmt,
                                rewards={"accuracy": accuracy, "format": fmt},
                                step=step,
                                group_id=f"{run}:{step}:{group}",
                                group_index=index,
                                completion_tokens=rng.randint(3, 90),
                                advantage=round(rng.uniform(-1, 1), 3),
                            ),
                        )
                    )
            for interaction in rng.sample(step_events, k=2) if judged else []:
                payload = interaction.payload
                add(run, JudgeRequest(interaction.event_id, payload.prompt, payload.completion, step=step))
                ok = rng.random() < 0.85
                score = float(rng.randint(1, 10)) if ok else None
                add(
                    run,
                    JudgeScore(
                        interaction.event_id,
                        judge_model="judge-7b",
                        template_version="v2",
                        success=ok,
                        score=score,
                        score_normalized=None if score is None else score / 10,
                        reasoning="fine" if ok else None,
                        error=None if ok else "unparsable verdict",
                        step=step,
                        reward=payload.reward,
                    ),
                )
            loss = float("nan") if rng.random() < 0.08 else round(1.5 / (step + 1) + rng.uniform(0, 0.2), 4)
            add(run, TrainStep(step=step, loss=loss, grad_norm=round(rng.uniform(0.1, 40), 3), learning_rate=1e-5))
        for _ in range(rng.randint(0, 5)):  # API calls through the OpenAI-compatible producer
            ok = rng.random() < 0.9
            add(
                f"s{seed}-api",
                Interaction(
                    prompt=[{"role": "user", "content": f"call {rng.randint(0, 9)}"}],
                    completion=f"reply {rng.randint(0, 3)}" if ok else "",
                    success=ok,
                    error=None if ok else "HTTP 503",
                    latency_ms=round(rng.uniform(5, 900), 2),
                    prompt_tokens=rng.randint(2, 30),
                    completion_tokens=rng.randint(1, 50) if ok else 0,
                    model="qwen-0.5b",
                ),
            )
    events.insert(rng.randrange(len(events)), events[rng.randrange(len(events))])  # redelivered
    return events


def worker_options(output: Path) -> WorkerOptions:
    """What ``trainwire worker --step-window 4 --time-window 60 --dataset OUTPUT/sft.jsonl --dataset-format openai
    --min-reward 1 --dedup-field completion --split-ratio 0.8,0.1,0.1`` runs."""
    return WorkerOptions(
        stats=StatsConfig(step_window=4, time_window_s=60, time_hop_s=12),
        dataset_output=output / "sft.jsonl",
        dataset_format="openai",
        dataset=DatasetConfig(min_reward=1.0, dedup_field="completion", split_ratio=(0.8, 0.1, 0.1)),
    )


def digest(store: Store, runs: str, output: Path) -> str:
    """sha256 over every table's rows of the runs whose id starts with ``runs`` (FINAL, sorted,
    tab-separated, wall-clock columns left out) and every dataset file under ``output`` (by name)."""
    sha = hashlib.sha256()
    for table in TABLES:
        columns = [
            row["name"]
            for row in store.query_rows(
                "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = {t:String} "
                "ORDER BY position",
                {"t": table},
            )
            if row["name"] not in WALL_CLOCK_COLUMNS
        ]
        listed = ", ".join(f"`{c}`" for c in columns)
        text = store.command(
            f"SELECT {listed} FROM {table} FINAL WHERE startsWith(run_id, {{runs:String}}) "
            "ORDER BY ALL FORMAT TabSeparatedWithNames",
            {"runs": runs},
        )
        if isinstance(text, list):  # clickhouse-connect splits a command's result at tabs
            text = "\t".join(text)
        sha.update(f"{table}\n{text}".encode())
    for path in sorted(p for p in output.rglob("*") if p.is_file()):
        sha.update(f"{path.relative_to(output)}\n".encode())
        sha.update(path.read_bytes())
    return sha.hexdigest()


def emit(settings: Settings, events: list[Event]) -> None:
    with Emitter(settings) as emitter:
        for event in events:
            emitter.emit(event)
        assert emitter.flush(60)


def printed(runtime: str, digests: dict[int, str]) -> dict[int, str]:
    """``digests``, printed as ``GOLDEN``'s lines when TRAINWIRE_PRINT_DIGESTS is set."""
    if os.environ.get("TRAINWIRE_PRINT_DIGESTS"):
        for seed, value in digests.items():
            print(f'    ("{runtime}", {seed}): "{value}",')
    return digests


def test_embedded_worker_output_is_unchanged(tmp_path: Path) -> None:
    """Each seed's stream on topics of its own, through a worker of its own, into one store."""
    digests: dict[int, str] = {}
    data_dir = tmp_path / "data"
    with open_store(Settings(data_dir=data_dir)) as store:
        store.migrate()
        for seed in SEEDS:
            settings = Settings(data_dir=data_dir, topic_prefix=f"seed{seed}")
            emit(settings, random_stream(seed))
            output = tmp_path / f"out{seed}"
            pipeline = build_pipeline(settings, store, worker_options(output))
            pipeline.max_batch = 97  # many checkpoints, each saving the state
            asyncio.run(pipeline.run(idle_exit_s=0.5))
            digests[seed] = digest(store, f"s{seed}-", output)
    assert printed("embedded", digests) == {seed: GOLDEN[("embedded", seed)] for seed in SEEDS}


def test_faust_worker_output_is_unchanged(kafka_settings: Settings, tmp_path: Path) -> None:
    """One seed through ``trainwire worker --runtime faust`` on the real broker (one dataset file per partition).

    Without judge scores: faust reads each topic on its own, so whether a group's stats count a
    score depends on which topic it read first (the embedded test covers them).
    """
    seed = 1
    asyncio.run(ensure_topics(kafka_settings, PARTITIONS))
    emit(kafka_settings, random_stream(seed, judged=False))
    data_dir, output = tmp_path / "worker", tmp_path / "out"
    worker = start_worker(
        kafka_settings,
        data_dir,
        "digest",
        *("--step-window", "4", "--time-window", "60", "--dataset", str(output / "sft.jsonl")),
        *("--dataset-format", "openai", "--min-reward", "1", "--dedup-field", "completion"),
        *("--split-ratio", "0.8,0.1,0.1"),
    )
    try:
        wait_until_caught_up(kafka_settings, "digest", [worker])
    finally:
        stop(worker)
    with open_store(Settings(data_dir=data_dir)) as store:
        digests = {seed: digest(store, f"s{seed}-", output)}
    assert printed("faust", digests) == {seed: GOLDEN[("faust", seed)]}
