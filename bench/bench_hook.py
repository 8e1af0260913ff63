"""Overhead of the trainwire GRPO hook, next to TRL's own completion logging and a JSONL logger.

Runs GRPO on CPU with a tiny locally built model, the same seed and data for every variant:

- ``baseline``: no logging at all;
- ``trainwire``: ``instrument_trainer`` (interactions + train_step events to the embedded bus);
- ``trainwire+tokens``: the same with per-token logprobs and entropies;
- ``trainwire every step``: the same as ``trainwire``, the events handed to the emitter at the end
  of every step instead of at most once a second (``hand_over_every_s=0``);
- ``trl log_completions``: TRL's ``log_completions=True`` (console table + parquet per step);
- ``jsonl (seed 000)``: a reward-function wrapper appending one ``json.dumps`` line per completion.

Every variant trains in a process of its own and they take turns step by step (lock-step, the
order rotated every step), so a load change on the shared machine hits every variant alike
instead of whichever ran in that second. A step's wall time runs from its turn to the start of
its next step (generation, rewards, the update, logging and every hook included); its CPU time is
the process's (all threads) over the measured steps divided by their number, so background work
(the emitter's thread) counts even when it runs while the process waits for its turn. That is
also why the CPU column is the one to read for the hook's cost: work that lands in the wait is
in no step's wall time. The table shows the median step times and, as ratios, the median over
rounds of each round's value over the baseline's in that round. A tiny model makes a step cheap,
so the hook's share here is far larger than with a real model.

    .venv/bin/python bench/bench_hook.py --steps 40 --rounds 4
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from table import print_table
from transformers import AutoTokenizer, TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from trainwire.bus import Emitter
from trainwire.config import Settings
from trainwire.producers.tiny import build_tiny_model
from trainwire.producers.trainer import TrainwireCallback, instrument_trainer

VARIANTS = (
    "baseline",
    "trainwire",
    "trainwire+tokens",
    "trainwire every step",
    "trl log_completions",
    "jsonl (seed 000)",
)


@dataclass
class VariantRun:
    """What one variant's run measured."""

    walls: list[float]
    """Wall seconds of each measured step."""
    cpu_per_step: float
    """Process CPU seconds (all threads) over the measured steps, per step."""
    records: int
    """Records the variant's logger wrote."""


class TurnClock(TrainerCallback):
    """Starts each step when the parent gives this variant its turn; times the steps after ``warmup``."""

    def __init__(self, conn: Connection, warmup: int) -> None:
        self.conn = conn
        self.warmup = warmup
        self.walls: list[float] = []
        self.cpu_per_step = 0.0
        self._steps = 0
        self._started: float | None = None
        self._cpu_started = 0.0

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._end_step()
        self._steps += 1
        if self._steps == self.warmup + 1:
            self._cpu_started = time.process_time()
        self.conn.send("ready")
        self.conn.recv()  # our turn
        self._started = time.perf_counter()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._end_step()
        self.cpu_per_step = (time.process_time() - self._cpu_started) / max(1, len(self.walls))

    def _end_step(self) -> None:
        if self._started is not None and self._steps > self.warmup:
            self.walls.append(time.perf_counter() - self._started)


def length_reward(prompts: list[Any], completions: list[Any], completion_ids: list[list[int]], **kwargs: Any):
    """Reward longer, more varied completions (a stand-in with a spread of values)."""
    return [len(set(ids)) / max(1, len(ids)) for ids in completion_ids]


async def answer_reward(prompts: list[Any], completions: list[str], answer: list[str], **kwargs: Any):
    """1 when the reference answer appears in the completion (async, like an LLM judge)."""
    return [1.0 if a in c else 0.0 for c, a in zip(completions, answer, strict=True)]


def jsonl_logged(func: Any, path: Path) -> Any:
    """The seed-000 logger: each completion appended as one JSON line with timestamp, prompt, completion, reward."""
    fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the whole run, like the original

    def reward_function(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
        rewards = func(prompts=prompts, completions=completions, **kwargs)
        for i, (prompt, completion, reward) in enumerate(zip(prompts, completions, rewards, strict=True)):
            record = {
                "timestamp": datetime.now().isoformat(),
                "prompt": prompt,
                "completion": completion,
                "reward": reward,
                "metadata": {"correct_answer": kwargs["answer"][i], "batch_idx": i},
            }
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            fh.flush()
        return rewards

    reward_function.__name__ = func.__name__
    return reward_function


def run_variant(variant: str, model_dir: Path, work: Path, args: argparse.Namespace, conn: Connection) -> None:
    """Train one variant, taking turns through ``conn``; send back its :class:`VariantRun` at the end."""
    torch.set_num_threads(args.threads)
    dataset = Dataset.from_list(
        [{"prompt": f"Question: what is {i} + {i + 1}? Answer:", "answer": str(2 * i + 1)} for i in range(64)]
    )
    out = work / variant.replace(" ", "_").replace("(", "").replace(")", "")
    config = GRPOConfig(
        output_dir=str(out),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        num_generations=args.num_generations,
        max_completion_length=args.max_completion_length,
        learning_rate=1e-4,
        use_cpu=True,
        report_to=[],
        bf16=False,
        logging_steps=1,
        save_strategy="no",
        seed=0,
        disable_tqdm=True,
        log_completions=variant == "trl log_completions",
    )
    funcs: list[Any] = [length_reward, answer_reward]
    if variant == "jsonl (seed 000)":
        out.mkdir(parents=True, exist_ok=True)
        funcs[0] = jsonl_logged(length_reward, out / "llm_logs.jsonl")
    trainer = GRPOTrainer(
        model=str(model_dir),
        processing_class=AutoTokenizer.from_pretrained(model_dir),
        reward_funcs=funcs,
        args=config,
        train_dataset=dataset,
    )
    clock = TurnClock(conn, args.warmup)
    trainer.add_callback(clock)
    emitter = None
    if variant.startswith("trainwire"):
        emitter = Emitter(Settings(data_dir=out / "data"))
        options = {"hand_over_every_s": 0.0} if variant.endswith("every step") else {}
        trainer.add_callback(TrainwireCallback(run_id=variant, emitter=emitter, **options))
        instrument_trainer(trainer, log_token_stats=variant.endswith("tokens"))  # reuses the callback
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        trainer.train()
    records = 0
    if emitter is not None:
        emitter.close()
        stats = emitter.stats()
        records = stats.sent + stats.spooled
    elif variant == "jsonl (seed 000)":
        records = len((out / "llm_logs.jsonl").read_text(encoding="utf-8").splitlines())
    elif variant == "trl log_completions":
        records = len(list((out / "completions").glob("*.parquet")))
    conn.send(VariantRun(clock.walls, clock.cpu_per_step, records))


def run_round(round_no: int, model_dir: Path, work: Path, args: argparse.Namespace) -> dict[str, VariantRun]:
    """Train every variant in a process of its own, step by step in turns; return what each measured."""
    spawn = multiprocessing.get_context("spawn")
    conns = {}
    processes = []
    for variant in VARIANTS:
        conn, child_conn = spawn.Pipe()
        process = spawn.Process(target=run_variant, args=(variant, model_dir, work, args, child_conn))
        process.start()
        conns[variant] = conn
        processes.append(process)
    for conn in conns.values():
        conn.recv()  # ready for its first step
    last: dict[str, Any] = {}
    for step in range(args.steps):
        shift = (round_no + step) % len(VARIANTS)  # rotate the order so no variant always follows the same one
        for variant in VARIANTS[shift:] + VARIANTS[:shift]:
            conns[variant].send("go")
            last[variant] = conns[variant].recv()  # ready for the next step; after the last one, its VariantRun
    for process in processes:
        process.join()
    return last


def main() -> None:
    """Run every round and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="first steps left out of the timing")
    parser.add_argument("--rounds", type=int, default=4, help="runs of every variant")
    parser.add_argument("--batch", type=int, default=8, help="per-device batch size (completions per step)")
    parser.add_argument("--num-generations", type=int, default=4)
    parser.add_argument("--max-completion-length", type=int, default=16)
    parser.add_argument("--model", type=Path, help="model directory (default: a tiny one built here)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (fewer = steadier timings)")
    args = parser.parse_args()

    runs: dict[str, list[VariantRun]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="trainwire-bench-") as tmp:
        work = Path(tmp)
        model_dir = args.model or build_tiny_model(work / "tiny", seed=0)
        for round_no in range(args.rounds):
            for variant, run in run_round(round_no, model_dir, work / f"round{round_no}", args).items():
                runs[variant].append(run)
            for variant in VARIANTS:
                run = runs[variant][-1]
                wall_ms, cpu_ms = statistics.median(run.walls) * 1000, run.cpu_per_step * 1000
                print(f"round {round_no + 1}/{args.rounds} {variant:<22} {wall_ms:8.2f} ms wall {cpu_ms:8.2f} ms cpu")

    ratios = {v: _round_ratios(runs[v], runs["baseline"]) for v in VARIANTS}
    rows = []
    for variant in VARIANTS:
        wall = statistics.median(w for run in runs[variant] for w in run.walls)
        cpu = statistics.median(run.cpu_per_step for run in runs[variant])
        wall_ratio, cpu_ratio = (statistics.median(r) for r in zip(*ratios[variant], strict=True))
        records = runs[variant][-1].records
        rows.append((variant, wall * 1000, f"{wall_ratio:.3f}", cpu * 1000, f"{cpu_ratio:.3f}", records))
    print_table(
        f"GRPO step time, {args.rounds} rounds x {args.steps - args.warmup} steps per variant, in lock-step "
        f"(batch {args.batch}, {args.num_generations} generations, {args.max_completion_length} completion tokens)",
        ["variant", "wall ms", "ratio", "cpu ms", "ratio", "records/run"],
        rows,
    )
    wall_over, cpu_over = ((statistics.median(r) - 1) * 100 for r in zip(*ratios["trainwire"], strict=True))
    per_round = ", ".join(f"{w:.3f}/{c:.3f}" for w, c in ratios["trainwire"])
    print(f"\ntrainwire per round (wall/cpu ratio to that round's baseline): {per_round}")
    print(f"trainwire hook overhead: {wall_over:+.1f}% wall, {cpu_over:+.1f}% CPU (target <= 2%)")


def _round_ratios(variant: list[VariantRun], baseline: list[VariantRun]) -> list[tuple[float, float]]:
    """Per round, the variant's median wall and CPU per step over the baseline's of the same round."""
    return [
        (statistics.median(v.walls) / statistics.median(b.walls), v.cpu_per_step / b.cpu_per_step)
        for v, b in zip(variant, baseline, strict=True)
    ]


if __name__ == "__main__":
    main()
