"""Overhead of the trainwire GRPO hook, next to TRL's own completion logging and a JSONL logger.

Runs GRPO on CPU with a tiny locally built model, the same seed and data for every variant, in
one process, round-robin over several rounds (so drifts of the machine hit every variant alike):

- ``baseline``: no logging at all;
- ``trainwire``: ``instrument_trainer`` (interactions + train_step events to the embedded bus);
- ``trainwire+tokens``: the same with per-token logprobs and entropies;
- ``trl log_completions``: TRL's ``log_completions=True`` (console table + parquet per step);
- ``jsonl (seed 000)``: a reward-function wrapper appending one ``json.dumps`` line per completion.

The time of a step is measured between two ``on_step_begin`` callbacks (generation, rewards,
the update, logging and every hook included), as wall time and as the process's CPU time (all
its threads, so the emitter's background work counts). The table shows the medians over the
steps of every round after a warm-up, and their ratios to the baseline. A tiny model makes a
step cheap, so the hook's share here is far larger than with a real model; on a shared machine
the wall time drifts by several percent between runs, the CPU time less.

    .venv/bin/python bench/bench_hook.py --steps 40 --rounds 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import AutoTokenizer, TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from trainwire.bus import Emitter
from trainwire.config import Settings
from trainwire.producers.tiny import build_tiny_model
from trainwire.producers.trainer import instrument_trainer

VARIANTS = ("baseline", "trainwire", "trainwire+tokens", "trl log_completions", "jsonl (seed 000)")


class StepClock(TrainerCallback):
    """Wall time and process CPU time (all threads, the emitter's included) between consecutive step starts."""

    def __init__(self) -> None:
        self.starts: list[tuple[float, float]] = []

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.starts.append((time.perf_counter(), time.process_time()))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.starts.append((time.perf_counter(), time.process_time()))

    def step_times(self, warmup: int) -> list[tuple[float, float]]:
        pairs = zip(self.starts, self.starts[1:], strict=False)
        return [(b[0] - a[0], b[1] - a[1]) for a, b in pairs][warmup:]


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


def run_variant(
    variant: str, model_dir: Path, work: Path, args: argparse.Namespace
) -> tuple[list[tuple[float, float]], int]:
    """Train one variant; return its (wall, cpu) step times in seconds and the number of records it wrote."""
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
    clock = StepClock()
    trainer.add_callback(clock)
    emitter = None
    if variant.startswith("trainwire"):
        emitter = Emitter(Settings(data_dir=out / "data"))
        instrument_trainer(trainer, run_id=variant, emitter=emitter, log_token_stats=variant.endswith("tokens"))
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
    return clock.step_times(args.warmup), records


def main() -> None:
    """Run every variant round-robin and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="first steps left out of the timing")
    parser.add_argument("--rounds", type=int, default=3, help="runs of every variant")
    parser.add_argument("--batch", type=int, default=8, help="per-device batch size (completions per step)")
    parser.add_argument("--num-generations", type=int, default=4)
    parser.add_argument("--max-completion-length", type=int, default=16)
    parser.add_argument("--model", type=Path, help="model directory (default: a tiny one built here)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (fewer = steadier timings)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="trainwire-bench-") as tmp:
        work = Path(tmp)
        model_dir = args.model or build_tiny_model(work / "tiny", seed=0)
        wall: dict[str, list[float]] = {v: [] for v in VARIANTS}
        cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
        records: dict[str, int] = {}
        for round_no in range(args.rounds):
            for variant in VARIANTS:
                steps, written = run_variant(variant, model_dir, work / f"round{round_no}", args)
                wall[variant] += [w for w, _ in steps]
                cpu[variant] += [c for _, c in steps]
                records[variant] = written
                median = statistics.median(w for w, _ in steps)
                print(f"round {round_no + 1}/{args.rounds} {variant:<22} {median * 1000:8.2f} ms/step", flush=True)

    base_wall, base_cpu = statistics.median(wall["baseline"]), statistics.median(cpu["baseline"])
    print()
    print(f"GRPO step time, median over {args.rounds} rounds x {args.steps - args.warmup} steps per variant")
    print(f"(batch {args.batch}, {args.num_generations} generations, {args.max_completion_length} completion tokens)")
    header = f"{'variant':<22} {'wall ms':>8} {'ratio':>7} {'cpu ms':>8} {'ratio':>7} {'records/run':>12}"
    print(header)
    print("-" * len(header))
    for variant in VARIANTS:
        w, c = statistics.median(wall[variant]), statistics.median(cpu[variant])
        print(
            f"{variant:<22} {w * 1000:8.2f} {w / base_wall:7.3f} {c * 1000:8.2f} {c / base_cpu:7.3f}"
            f" {records.get(variant, 0):12d}"
        )
    overhead = statistics.median(wall["trainwire"]) / base_wall - 1
    cpu_overhead = statistics.median(cpu["trainwire"]) / base_cpu - 1
    print(f"\ntrainwire hook overhead: {overhead * 100:+.1f}% wall, {cpu_overhead * 100:+.1f}% CPU (target <= 2%)")


if __name__ == "__main__":
    main()
