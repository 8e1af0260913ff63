"""Seconds per standard analysis query on N interactions in chdb (target <= 1 s each at 10 M rows).

The rows are generated inside chdb (``INSERT ... SELECT FROM numbers(N)``): ~50 runs, GRPO steps
of 64 completions in groups of 8, a ``rewards`` map with two reward functions whose accuracy
improves over the steps, prompt and completion texts of varying length with token counts, judge
scores for one interaction in ten (carrying its step and rewards, as the judge worker writes them),
train steps, alerts and a logits probe table. Then each
standard query of :mod:`trainwire.analysis.queries` runs ``--repeat`` times (median reported),
and, for comparison, the "ad-hoc script" peer: the same numbers computed by pyarrow/pandas over
the columns fetched once (the fetch timed separately).

    python bench/bench_analysis.py [--rows 10000000] [--runs 50] [--repeat 3] [--data-dir DIR] [--compare DIR]
    python bench/bench_analysis.py --data-dir DIR --analyze --repeat 3 --no-peer

``--data-dir`` keeps the generated store between runs (generation is skipped when it already
holds the requested rows; generating 10 M rows takes about 90 s). ``--no-optimize`` leaves the
parts unmerged (a store whose background merges have not caught up; ``FINAL`` then merges at
query time). ``--compare DIR`` times another version of the queries (a folder of query files, e.g.
``trainwire/analysis/queries`` of an earlier checkout) on the same store, alternating with the
current ones run by run, and says whether each returns the same rows (floats up to 1e-9).
``--analyze`` times ``trainwire analyze`` on the store instead (target <= 10 s at 10 M rows): the
command in a process of its own (wall seconds and peak RSS, median of ``--repeat``), beside its
standard queries run alone in the same run, and then the report's phases timed in this process.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from table import print_table

from trainwire.analysis.queries import STANDARD_QUERIES, Query, get_query, parse_query, run_query
from trainwire.config import Settings
from trainwire.store.clickhouse import Store, open_store

_INTERACTIONS = """
INSERT INTO interactions
    (event_id, run_id, ts, schema_version, source_host, source_process, source_library, prompt, prompt_messages,
     completion, reward, rewards, success, error, latency_ms, prompt_tokens, completion_tokens, model, step,
     group_id, group_index, advantage, metadata)
SELECT
    concat('ev-', leftPad(toString(number), 10, '0')) AS event_id,
    concat('run-', leftPad(toString(number % {runs:UInt32}), 2, '0')) AS run_id,
    toDateTime64('2026-01-01 00:00:00', 6, 'UTC') + toIntervalMillisecond(intDiv(number, {runs:UInt32}) * 50)
        + toIntervalSecond((number % {runs:UInt32}) * 3600) AS ts,
    1, 'bench-host', 1, 'bench',
    concat('Question ', toString(number), ': ', repeat('why is the sky blue ', 1 + cityHash64(number, 1) % 12))
        AS prompt_text,
    '',
    concat('The answer is ', toString(number % 97), '. ', repeat('reasoning step ', 3 + cityHash64(number, 2) % 60))
        AS completion_text,
    accuracy + format AS total,
    map('accuracy', accuracy, 'format', format),
    cityHash64(number, 3) % 100 != 0,
    NULL,
    100 + cityHash64(number, 4) % 900,
    intDiv(length(prompt_text), 4),
    intDiv(length(completion_text), 4),
    'qwen-7b',
    intDiv(intDiv(number, {runs:UInt32}), 64) AS step_no,
    concat(toString(step_no), ':', toString(intDiv(intDiv(number, {runs:UInt32}) % 64, 8))),
    intDiv(number, {runs:UInt32}) % 8,
    accuracy - 0.5,
    '{}'
FROM
(
    SELECT
        number,
        toFloat64(cityHash64(number, 5) % 1000 < 200 + least(600, intDiv(intDiv(number, {runs:UInt32}), 64) / 5))
            AS accuracy,
        [0.0, 0.5, 1.0][1 + cityHash64(number, 6) % 3] AS format
    FROM numbers({rows:UInt64})
)
"""

_JUDGE = """
INSERT INTO judge_scores
    (event_id, run_id, ts, schema_version, source_host, source_process, source_library, interaction_id,
     judge_model, template_version, success, score, score_normalized, reasoning, raw_output, error, latency_ms, step,
     reward, rewards)
SELECT
    concat('js-', event_id), run_id, ts + toIntervalSecond(5), 1, 'bench-host', 1, 'bench', event_id,
    'judge-7b', 'v1', true, s, s / 10, 'ok', concat('Score: ', toString(s)), NULL, 900, step, reward, rewards
FROM
(
    SELECT
        event_id, run_id, ts, step, reward, rewards,
        least(10, greatest(1, round(reward * 4 + cityHash64(event_id) % 4))) AS s
    FROM interactions
    WHERE cityHash64(event_id) % 10 = 0
)
"""

_TRAIN = """
INSERT INTO train_steps
    (event_id, run_id, ts, schema_version, source_host, source_process, source_library, step, epoch, loss,
     grad_norm, learning_rate, metrics)
SELECT
    concat('ts-', toString(number)), concat('run-', leftPad(toString(number % {runs:UInt32}), 2, '0')),
    toDateTime64('2026-01-01 00:00:00', 6, 'UTC') + toIntervalSecond(intDiv(number, {runs:UInt32}) * 3),
    1, 'bench-host', 1, 'bench', intDiv(number, {runs:UInt32}) AS step_no, step_no / 1000,
    2.5 * exp(-step_no / 800) + 0.1, 1 + (cityHash64(number) % 100) / 100, 1e-5 * least(1, step_no / 100),
    map('kl', 0.01)
FROM numbers({train_rows:UInt64})
"""

_LOGITS = """
INSERT INTO logits
    (event_id, run_id, ts, schema_version, source_host, source_process, source_library, model, sample_id, position,
     target_token, logit, probability, rank, token_id, level, correct)
SELECT
    concat('lg-', toString(number)), 'probe', toDateTime64('2026-01-01 00:00:00', 6, 'UTC'), 1, 'bench-host', 1,
    'bench', ['baseline', 'sft', 'rl'][1 + number % 3], toString(intDiv(number, 30) % 2000), intDiv(number, 60000),
    ['wait', 'aha', 'check', 'think', 'hmm', 'let', 'actually', 'however', 'so', 'therefore']
        [1 + intDiv(number, 3) % 10],
    (cityHash64(number) % 2000) / 100 - 10 AS logit_value, 1 / (1 + exp(-logit_value)) / 10,
    cityHash64(number) % 5000, NULL,
    1 + intDiv(number, 30) % 2000 % 5, intDiv(number, 30) % 2000 % 3 != 0
FROM numbers({logits_rows:UInt64})
"""


# What generate() fills: the tables it inserts into and the aggregates their views feed.
_TABLES = ("interactions", "judge_scores", "train_steps", "logits", "interaction_agg", "interaction_step_agg")


def generate(store: Store, rows: int, runs: int) -> dict[str, float]:
    """Fill the store with ``rows`` interactions and the related tables; seconds per table."""
    params = {"rows": rows, "runs": runs, "train_rows": max(runs, rows // 64), "logits_rows": min(rows, 600_000)}
    timings = {}
    for name, sql in (("interactions", _INTERACTIONS), ("judge_scores", _JUDGE), ("train_steps", _TRAIN)):
        t0 = time.perf_counter()
        store.command(sql, params if "{" in sql else None)  # no placeholders: no parameters (no client binding)
        timings[name] = time.perf_counter() - t0
    t0 = time.perf_counter()
    store.command(_LOGITS, params)
    timings["logits"] = time.perf_counter() - t0
    return timings


def _median_s(fn: Any, repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=None, help="Keep the generated store here.")
    parser.add_argument("--no-optimize", action="store_true", help="Leave the parts unmerged.")
    parser.add_argument("--no-peer", action="store_true", help="Skip the pyarrow/pandas comparison.")
    parser.add_argument("--compare", type=Path, default=None, help="Also time the query files in this folder.")
    parser.add_argument("--analyze", action="store_true", help="Time `trainwire analyze` instead of the queries.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or Path(tmp)
        with open_store(Settings(data_dir=data_dir)) as store:
            store.migrate()
            have = store.query_rows("SELECT count() AS n FROM interactions")[0]["n"]
            if have != args.rows:
                for table in _TABLES:
                    store.command(f"TRUNCATE TABLE IF EXISTS {table}")
                gen = generate(store, args.rows, args.runs)
                print("generated in " + ", ".join(f"{k} {v:.1f} s" for k, v in gen.items()))
                if not args.no_optimize:
                    t0 = time.perf_counter()
                    for table in _TABLES:
                        store.command(f"OPTIMIZE TABLE {table} FINAL")
                    print(f"OPTIMIZE FINAL in {time.perf_counter() - t0:.1f} s")
            if args.analyze:
                pass  # timed once this process has closed the store (a second process would go through its owner)
            elif args.compare:
                _compare(store, args.compare, args.repeat, args.rows)
            else:
                rows = []
                for name, params in STANDARD_QUERIES.items():
                    seconds, table = _median_s(lambda n=name, p=params: run_query(store, n, **p), args.repeat)
                    rows.append((name, table.num_rows, seconds, "ok" if seconds <= 1.0 else "SLOW"))
                print_table(
                    f"analysis queries on {args.rows:,} interactions (chdb, median of {args.repeat})",
                    ["query", "result rows", "seconds", "<= 1 s"],
                    rows,
                )
            if not args.no_peer:
                _peer(store, args.repeat)
        if args.analyze:
            _analyze(data_dir, args.repeat, args.rows)


def _compare(store: Store, folder: Path, repeat: int, n_rows: int) -> None:
    """Each standard query next to its version in ``folder``: median seconds, alternating run by run."""
    others = {p.stem: parse_query(p.read_text(encoding="utf-8"), str(p)) for p in sorted(folder.glob("*.sql"))}
    rows = []
    load_before = _load()
    for name, params in STANDARD_QUERIES.items():
        queries = {"this": get_query(name), "other": others.get(name)}
        if queries["other"] is None:
            continue
        times: dict[str, list[float]] = {"this": [], "other": []}
        results: dict[str, Any] = {}
        for i in range(repeat):
            for which in ("other", "this") if i % 2 == 0 else ("this", "other"):
                query: Query = queries[which]
                t0 = time.perf_counter()
                results[which] = store.query_arrow(query.sql, query.bind(params) or None)
                times[which].append(time.perf_counter() - t0)
        other_s, this_s = statistics.median(times["other"]), statistics.median(times["this"])
        same = _same_rows(results["other"].to_pylist(), results["this"].to_pylist())
        rows.append((name, results["this"].num_rows, other_s, this_s, f"{other_s / this_s:.1f}x", same))
    print_table(
        f"analysis queries on {n_rows:,} interactions (chdb, median of {repeat}, alternating), "
        f"load average {load_before} before, {_load()} after",
        ["query", "result rows", f"{folder} s", "these s", "speed-up", "same rows"],
        rows,
    )


def _analyze(data_dir: Path, repeat: int, n_rows: int) -> None:
    """``trainwire analyze`` in a process of its own, beside its queries alone; then its phases in this one."""
    from trainwire.analysis import report

    env = {**os.environ, "TRAINWIRE_DATA_DIR": str(data_dir)}
    load_before = _load()
    wall, peaks = [], []
    with tempfile.TemporaryDirectory() as out:
        for _ in range(repeat):
            child = "from trainwire.cli import main; main()"
            command = [sys.executable, "-c", child, "analyze", "--output", out]
            t0 = time.perf_counter()
            subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
            wall.append(time.perf_counter() - t0)
            peaks.append(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)  # the largest child so far
        phases: dict[str, list[float]] = {}

        def timed(name: str, fn: Any, *args: Any) -> Any:
            t0 = time.perf_counter()
            value = fn(*args)
            phases.setdefault(name, []).append(time.perf_counter() - t0)
            return value

        from trainwire.analysis.dashboard import write_dashboard
        from trainwire.analysis.plots import write_plots

        with open_store(Settings(data_dir=data_dir)) as store:
            for _ in range(repeat):
                results = timed("queries (collect)", report.collect, store)
                timed("write_results", report.write_results, results, Path(out))
                timed("write_samples", report.write_samples, results, Path(out))
                timed("write_plots", write_plots, results, Path(out))
                timed("write_dashboard", write_dashboard, results, Path(out))
        size = (Path(out) / "analysis_results.json").stat().st_size
    seconds = statistics.median(wall)
    queries = statistics.median(phases["queries (collect)"])
    print_table(
        f"trainwire analyze on {n_rows:,} interactions (median of {repeat}), load average {load_before} before, "
        f"{_load()} after; analysis_results.json {size / 2**20:.0f} MiB",
        ["run", "seconds", "peak MiB", "vs its queries alone", "<= 10 s"],
        [
            (
                "trainwire analyze (own process)",
                seconds,
                max(peaks),
                f"{seconds / queries:.2f}x",
                "ok" if seconds <= 10 else "SLOW",
            ),
            *(
                (f"  {name}", statistics.median(times), "", f"{statistics.median(times) / seconds:.0%} of analyze", "")
                for name, times in phases.items()
            ),
        ],
    )


def _load() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def _same_rows(a: list[dict], b: list[dict]) -> str:
    """'yes' when the rows are equal, floats up to a relative 1e-9 (parallel sums differ in the last bits)."""
    if len(a) != len(b):
        return f"no ({len(a)} vs {len(b)} rows)"
    for x, y in zip(a, b, strict=True):
        if x.keys() != y.keys():
            return "no (columns differ)"
        for k in x:
            u, v = x[k], y[k]
            if isinstance(u, float) and isinstance(v, float):
                if not (math.isclose(u, v, rel_tol=1e-9, abs_tol=1e-12) or (math.isnan(u) and math.isnan(v))):
                    return f"no ({k})"
            elif u != v:
                return f"no ({k})"
    return "yes"


def _peer(store: Store, repeat: int) -> None:
    """The same aggregations by an ad-hoc script: fetch the columns once, aggregate in pyarrow/pandas."""
    import pyarrow.compute as pc

    t0 = time.perf_counter()
    data = store.query_arrow("SELECT run_id, step, reward, completion_chars FROM interactions FINAL")
    fetch_s = time.perf_counter() - t0
    frame = data.to_pandas()

    def arrow_by_step() -> Any:
        return data.group_by(["run_id", "step"]).aggregate([("reward", "mean"), ("reward", "count")])

    def pandas_by_step() -> Any:
        return frame.groupby(["run_id", "step"])["reward"].agg(["mean", "count", "std", "min", "max"])

    def pandas_summary() -> Any:
        return frame.groupby("run_id")["reward"].quantile([0.1, 0.25, 0.5, 0.75, 0.9])

    def arrow_summary() -> Any:
        return pc.quantile(data["reward"], q=[0.1, 0.25, 0.5, 0.75, 0.9])

    rows: list[tuple[Any, ...]] = [("fetch 4 columns once (FINAL) into Arrow", data.num_rows, fetch_s)]
    for label, fn in (
        ("pyarrow group_by(run, step) mean+count", arrow_by_step),
        ("pandas groupby(run, step) mean/count/std/min/max", pandas_by_step),
        ("pandas groupby(run) quantiles", pandas_summary),
        ("pyarrow quantiles (all runs)", arrow_summary),
    ):
        seconds, result = _median_s(fn, repeat)
        rows.append((label, len(result), seconds))
    rows.append(
        ("SQL reward_by_step (same store)", None, _median_s(lambda: run_query(store, "reward_by_step"), repeat)[0])
    )
    rows.append(
        ("SQL reward_summary (same store)", None, _median_s(lambda: run_query(store, "reward_summary"), repeat)[0])
    )
    print_table(
        "ad-hoc peer: fetch once, aggregate in pyarrow / pandas",
        ["what", "rows", "seconds"],
        [(a, "" if b is None else b, c) for a, b, c in rows],
    )


if __name__ == "__main__":
    main()
