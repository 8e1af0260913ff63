"""Start-up time of ``trainwire --help`` against the bare interpreter (``python -c pass``), same run.

Both run as fresh processes taking turns, after one untimed run each (so byte code is compiled,
into a temporary ``PYTHONPYCACHEPREFIX``, and the files are in the page cache), ``--rounds``
times; the table gives the median wall time and the median CPU time (user + system of the child,
which moves less with the machine's load than wall time does) and each as a multiple of the
interpreter's.

    python bench/bench_cli.py [--rounds 21]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from table import print_table


def timed_run(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one run of ``args`` (its output discarded)."""
    started = time.perf_counter()
    child = subprocess.Popen(args, stdout=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(args)} failed with {os.waitstatus_to_exitcode(status)}")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args()
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "trainwire --help": [str(Path(sys.executable).with_name("trainwire")), "--help"],
    }
    cache = tempfile.TemporaryDirectory(prefix="bench-cli-pycache-")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"} | {"PYTHONPYCACHEPREFIX": cache.name}
    for command in commands.values():
        timed_run(command, env)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for _ in range(args.rounds):
        for name, command in commands.items():
            times[name].append(timed_run(command, env))
    cache.cleanup()
    load = os.getloadavg()
    wall = {name: statistics.median(w for w, _ in runs) * 1000 for name, runs in times.items()}
    cpu = {name: statistics.median(c for _, c in runs) * 1000 for name, runs in times.items()}
    base = "python -c pass"
    rows = [
        [
            name,
            round(wall[name], 1),
            f"{wall[name] / wall[base]:.1f}x",
            round(cpu[name], 1),
            f"{cpu[name] / cpu[base]:.1f}x",
        ]
        for name in commands
    ]
    print_table(
        f"Start-up, median of {args.rounds} runs (load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f})",
        ["command", "wall ms", "vs interpreter", "cpu ms", "vs interpreter"],
        rows,
    )


if __name__ == "__main__":
    main()
