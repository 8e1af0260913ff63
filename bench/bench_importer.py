"""Benchmark: the log importer against a plain ``json.loads`` loop over the same file.

Generates a seed-000 style ``llm_logs_*.jsonl`` of the given size in a temporary directory, then
runs, each in a fresh subprocess so its peak memory is its own:

- ``baseline``: read the file line by line and ``json.loads`` each line (nothing else);
- ``importer``: ``trainwire.producers.importers.import_paths`` onto the embedded bus (parse,
  validate, build events with deterministic ids, publish, fsync, record the ledger);
- ``reimport``: the same import again (every line is already imported: only the file is hashed).

and prints records/s, MB/s, peak RSS and the ratio to the baseline::

    .venv/bin/python bench/bench_importer.py            # 1 GB
    .venv/bin/python bench/bench_importer.py --size 200M --keep
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_PROMPTS = [
    "Вопрос о электрической цепи: резистор {r} Ом подключён к источнику {v} В. Найдите ток.",
    "Задача: поезд идёт {v} км/ч в течение {r} часов. Какое расстояние он пройдёт?",
    "Solve step by step: what is {r} * {v}? Put the final answer in \\boxed{{}}.",
]


def parse_size(text: str) -> int:
    """``1G``, ``200M``, ``64K`` or a number of bytes."""
    text = text.strip().upper().removesuffix("B")
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    number = text[:-1] if scale != 1 else text
    return int(float(number) * scale)


def generate(path: Path, size: int, seed: int = 0) -> int:
    """Write seed-000 records to ``path`` until it holds ``size`` bytes; returns the record count."""
    rng = random.Random(seed)
    written = count = 0
    t0 = 1760355045.0
    with open(path, "w", encoding="utf-8") as handle:
        while written < size:
            r, v = rng.randint(1, 100), rng.randint(1, 240)
            record = {
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t0 + count * 0.05))
                + f".{rng.randint(0, 999999):06d}",
                "prompt": rng.choice(_PROMPTS).format(r=r, v=v) + " " + "Подумай внимательно. " * rng.randint(5, 30),
                "completion": f"<think>{'Рассуждение шаг за шагом. ' * rng.randint(5, 40)}</think> Ответ: {v / r:.3f}",
                "reward": round(rng.uniform(-1, 2), 3),
                "metadata": {"correct_answer": f"{v / r:.3f}", "accuracy_score": rng.random(), "batch_idx": count // 8},
            }
            line = json.dumps(record, ensure_ascii=False) + "\n"
            handle.write(line)
            written += len(line.encode())
            count += 1
    return count


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def phase_baseline(path: Path) -> dict:
    start = time.perf_counter()
    records = 0
    with open(path, "rb") as handle:
        for line in handle:
            json.loads(line)
            records += 1
    return {"records": records, "seconds": time.perf_counter() - start}


def phase_importer(path: Path, data_dir: Path) -> dict:
    from trainwire.config import Settings
    from trainwire.producers.importers import import_paths

    start = time.perf_counter()
    summary = import_paths([path], Settings(data_dir=data_dir), progress=False)
    seconds = time.perf_counter() - start
    if summary.error_count:
        raise SystemExit(f"import errors: {summary.errors[:3]}")
    return {
        "records": summary.imported + sum(summary.skipped.values()),
        "imported": summary.imported,
        "seconds": seconds,
    }


def run_phase(name: str, path: Path, data_dir: Path) -> dict:
    """Run one phase in a fresh interpreter and return its measurements."""
    out = subprocess.run(
        [sys.executable, __file__, "--phase", name, "--file", str(path), "--data-dir", str(data_dir)],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1G", help="size of the generated file (default 1G; e.g. 200M)")
    parser.add_argument("--dir", type=Path, default=None, help="where to generate (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the generated file and data dir")
    parser.add_argument("--phase", choices=["baseline", "importer"], help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.phase:
        result = phase_baseline(args.file) if args.phase == "baseline" else phase_importer(args.file, args.data_dir)
        result["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(result))
        return

    size = parse_size(args.size)
    workdir = Path(tempfile.mkdtemp(prefix="trainwire-bench-", dir=args.dir))
    try:
        path = workdir / "llm_logs_20251013_113045.jsonl"
        t0 = time.perf_counter()
        records = generate(path, size)
        file_mb = path.stat().st_size / (1 << 20)
        print(f"generated {records:,} records, {file_mb:,.0f} MiB in {time.perf_counter() - t0:.1f}s: {path}")
        data_dir = workdir / "data"
        results = {
            "baseline (json.loads per line)": run_phase("baseline", path, data_dir),
            "importer": run_phase("importer", path, data_dir),
            "re-import (already imported)": run_phase("importer", path, data_dir),
        }
        bus_mb = sum(f.stat().st_size for f in (data_dir / "bus").glob("*.log")) / (1 << 20)
        baseline = results["baseline (json.loads per line)"]
        base_rate = baseline["records"] / baseline["seconds"]
        columns = [("phase", 32), ("records", 12), ("seconds", 10), ("records/s", 12), ("MiB/s", 9)]
        columns += [("peak RSS MiB", 14), ("vs baseline", 13)]
        header = "".join(f"{n:<{w}}" if i == 0 else f"{n:>{w}}" for i, (n, w) in enumerate(columns))
        print()
        print(header)
        print("-" * len(header))
        for name, r in results.items():
            rate = r["records"] / r["seconds"]
            print(
                f"{name:<32}{r['records']:>12,}{r['seconds']:>10.2f}{rate:>12,.0f}{file_mb / r['seconds']:>9.1f}"
                f"{r['peak_rss_mb']:>14.0f}{rate / base_rate:>12.2f}x"
            )
        print(
            f"\nfile {file_mb:,.0f} MiB; events on the embedded bus {bus_mb:,.0f} MiB; python {sys.version.split()[0]}"
        )
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
