"""Judged events per second against a judge with a fixed 200 ms latency, at concurrency 1, 8 and 32;
then group-relative judging against per-completion judging at that latency.

The judge is the scripted OpenAI-compatible server on loopback (every answer takes exactly
``--latency`` seconds), in a process of its own as a real judge server would be; the client is
trainwire's :class:`~trainwire.judge.client.Judge` (the real ``openai`` client over HTTP, no
cache). The ideal rate is concurrency / latency; the target is at least 80 % of it up to 32
calls in flight.

The second table judges ``--completions`` (1,000) completions in GRPO groups of ``--group-size``
(8) both ways at the same latency and concurrency (``--mode-concurrency``, 8): one request per
completion (``mode="single"``) and one request per group (``mode="group"``); it shows the
requests sent and the wall time, per 1,000 completions.

    python bench/bench_judge.py [--latency 0.2] [--rounds 10] [--concurrency 1 8 32]
                                [--completions 1000] [--group-size 8] [--mode-concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.connection
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from table import print_table

from trainwire.events import JudgeRequest
from trainwire.judge.client import Judge, JudgeConfig
from trainwire.judge.servers import Reply, ScriptedJudgeServer, group_answers, group_reply


async def judge_batch(judge: Judge, n: int, tag: str) -> tuple[float, int]:
    requests = [
        JudgeRequest(interaction_id=f"{tag}-{i}", prompt=f"question {i}", completion=f"answer {i}") for i in range(n)
    ]
    started = time.perf_counter()
    scores = await judge.judge_many(requests)
    return time.perf_counter() - started, sum(s.success for s in scores)


def _answer(body: dict[str, Any]) -> Reply | str:
    """A group request gets a score per answer, any other a single verdict."""
    if group_answers(body):
        return group_reply(body, lambda text: 4.0)
    return "Score: 4\nReasoning: fine."


def _serve(latency: float, conn: multiprocessing.connection.Connection) -> None:
    with ScriptedJudgeServer(_answer, latency_s=latency) as server:
        conn.send((server.base_url, server.model))
        conn.recv()  # until the parent is done


@contextmanager
def judge_server(latency: float) -> Iterator[tuple[str, str]]:
    """The scripted judge in a child process: ``(base_url, model)``."""
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.get_context("fork").Process(target=_serve, args=(latency, child), daemon=True)
    process.start()
    try:
        yield parent.recv()
    finally:
        parent.send("stop")
        process.join(10)


async def judge_groups(judge: Judge, completions: int, group_size: int) -> tuple[float, int]:
    """Judge ``completions`` completions in groups of ``group_size`` in the judge's mode: ``(seconds, scored)``."""
    requests = [
        JudgeRequest(interaction_id=f"g{i}", prompt=f"question {i // group_size}", completion=f"answer {i}")
        for i in range(completions)
    ]
    groups = [requests[start : start + group_size] for start in range(0, completions, group_size)]
    started = time.perf_counter()
    if judge.config.mode == "group":
        scores = [s for group in await asyncio.gather(*(judge.judge_group(g) for g in groups)) for s in group]
    else:
        scores = await judge.judge_many(requests)
    return time.perf_counter() - started, sum(s.success for s in scores)


def compare_modes(base_url: str, model: str, args: argparse.Namespace) -> None:
    """Group vs per-completion judging of the same completions at the same latency: requests and wall time."""
    rows = []
    for mode in ("single", "group"):
        config = JudgeConfig(base_url=base_url, model=model, concurrency=args.mode_concurrency, cache=False, mode=mode)
        judge = Judge(config)

        async def run(judge: Judge = judge) -> tuple[float, int]:
            await judge_groups(judge, args.mode_concurrency * args.group_size, args.group_size)  # warm-up
            calls = judge.stats.calls
            result = await judge_groups(judge, args.completions, args.group_size)
            judge.stats.calls -= calls
            await judge.aclose()
            return result

        elapsed, ok = asyncio.run(run())
        per_1000 = 1000 / args.completions
        rows.append([mode, args.completions, ok, round(judge.stats.calls * per_1000), round(elapsed * per_1000, 2)])
    print_table(
        f"group vs per-completion judging: {args.completions} completions in groups of {args.group_size}, "
        f"{args.latency * 1000:.0f} ms judge latency, concurrency {args.mode_concurrency}",
        ["mode", "completions", "scored", "requests per 1,000", "seconds per 1,000"],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per judge answer")
    parser.add_argument("--rounds", type=int, default=10, help="requests per concurrency slot")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--completions", type=int, default=1000, help="completions judged in the mode comparison")
    parser.add_argument("--group-size", type=int, default=8, help="completions per GRPO group (num_generations)")
    parser.add_argument("--mode-concurrency", type=int, default=8, help="judge calls in flight in the mode comparison")
    args = parser.parse_args()

    rows = []
    with judge_server(args.latency) as (base_url, model):
        for concurrency in args.concurrency:
            config = JudgeConfig(base_url=base_url, model=model, concurrency=concurrency, cache=False)
            judge = Judge(config)
            n = concurrency * args.rounds

            async def run(judge: Judge = judge, n: int = n, concurrency: int = concurrency) -> tuple[float, int]:
                await judge_batch(judge, concurrency, f"warm{concurrency}")  # open the connections
                result = await judge_batch(judge, n, f"c{concurrency}")
                await judge.aclose()
                return result

            elapsed, ok = asyncio.run(run())
            rate = n / elapsed
            ideal = concurrency / args.latency
            rows.append([concurrency, n, ok, round(elapsed, 2), rate, ideal, f"{rate / ideal:.0%}"])
        print_table(
            f"judge throughput, {args.latency * 1000:.0f} ms judge latency (target: >= 80 % of ideal)",
            ["concurrency", "requests", "scored", "seconds", "judged/s", "ideal/s", "of ideal"],
            rows,
        )
        compare_modes(base_url, model, args)


if __name__ == "__main__":
    main()
