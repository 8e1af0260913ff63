"""Judged events per second against a judge with a fixed 200 ms latency, at concurrency 1, 8 and 32.

The judge is the scripted OpenAI-compatible server on loopback (every answer takes exactly
``--latency`` seconds), in a process of its own as a real judge server would be; the client is
trainwire's :class:`~trainwire.judge.client.Judge` (the real ``openai`` client over HTTP, no
cache). The ideal rate is concurrency / latency; the target is at least 80 % of it up to 32
calls in flight.

    python bench/bench_judge.py [--latency 0.2] [--rounds 10] [--concurrency 1 8 32]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.connection
import time
from collections.abc import Iterator
from contextlib import contextmanager

from table import print_table

from trainwire.events import JudgeRequest
from trainwire.judge.client import Judge, JudgeConfig
from trainwire.judge.servers import ScriptedJudgeServer


async def judge_batch(judge: Judge, n: int, tag: str) -> tuple[float, int]:
    requests = [
        JudgeRequest(interaction_id=f"{tag}-{i}", prompt=f"question {i}", completion=f"answer {i}") for i in range(n)
    ]
    started = time.perf_counter()
    scores = await judge.judge_many(requests)
    return time.perf_counter() - started, sum(s.success for s in scores)


def _serve(latency: float, conn: multiprocessing.connection.Connection) -> None:
    with ScriptedJudgeServer(default="Score: 4\nReasoning: fine.", latency_s=latency) as server:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per judge answer")
    parser.add_argument("--rounds", type=int, default=10, help="requests per concurrency slot")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
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


if __name__ == "__main__":
    main()
