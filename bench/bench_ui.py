"""The web UI on N interactions in chdb: seconds per API call (target <= 0.3 s on 1 M, <= 1 s on 10 M)
and the first paint of each view in headless chromium (target <= 1 s).

The store is filled as bench_analysis.py fills it (~50 runs, GRPO steps of 64 completions in groups
of 8, judge scores for one interaction in ten, train steps, logits), then ``OPTIMIZE FINAL``. The UI
serves it on loopback from this process (the store is the chdb owner, as under ``trainwire worker
--ui``); each data route is called over HTTP ``--repeat`` times with the parameters a page sends for
one run (median reported). First paint: the time from navigation start until the view has drawn
what it shows (its charts' SVG, or its table), in Debian's chromium driven by Playwright, median of
``--repeat`` loads after two warm-up loads (plotly.js and its compiled code in the browser's caches,
as on later visits); each view's first load is shown beside it (the first view's with empty caches).

    python bench/bench_ui.py [--rows 1000000] [--runs 50] [--repeat 5] [--data-dir DIR] [--no-paint]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from bench_analysis import _TABLES, generate
from table import print_table

from trainwire.config import Settings
from trainwire.store.clickhouse import Store, open_store
from trainwire.ui.server import UiServer
from trainwire.ui.views import VIEWS


def route_params(run: str, step: int, event_id: str, model: str) -> dict[tuple[str, str], dict[str, str]]:
    """What each page asks its routes for, on run ``run`` at ``step`` (the logits of ``model``)."""
    group = f"{step}:0"
    return {
        ("runs", "status"): {},
        ("runs", "overview"): {},
        ("runs", "latest"): {},
        ("run", "progress"): {"run": run},
        ("run", "reward_stats"): {"runs": run},
        ("run", "reward_by_step"): {"runs": run},
        ("run", "train_metrics"): {"runs": run},
        ("run", "group_stats"): {"runs": run},
        ("run", "judge_by_step"): {"runs": run},
        ("run", "alerts"): {"runs": run},
        ("groups", "steps"): {"runs": run},
        ("groups", "groups"): {"run": run, "step": str(step), "order": "group"},
        ("groups", "group"): {"run": run, "step": str(step), "group": group},
        ("samples", "search"): {"runs": run, "limit": "50"},
        ("samples", "record"): {"event_id": event_id, "run": run},
        ("judge", "agreement"): {"runs": run},
        ("judge", "by_step"): {"runs": run},
        ("judge", "agreement_by_step"): {"runs": run},
        ("judge", "confusion"): {"runs": run},
        ("judge", "disagreements"): {"runs": run},
        ("alerts", "feed"): {"limit": "1000"},
        ("alerts", "summary"): {},
        ("logits", "by_model"): {},
        ("logits", "by_level"): {"model": model},
        ("logits", "by_correctness"): {"model": model},
        ("logits", "by_position"): {"model": model, "bucket": "1"},
    }


def extra_calls(run: str, step: int) -> dict[str, tuple[str, str, dict[str, str | tuple[str, ...]]]]:
    """The heavier calls a visitor can make: every run at once, text searches.

    A text search over every run is made with another text at each repeat (a tuple: the i-th repeat
    takes its i-th text), as a visitor types new ones: ClickHouse's query condition cache would
    answer the same text again from the first search. The texts are found nowhere, in one
    interaction (its number), or in every interaction (the same words in other cases).
    """
    nowhere = tuple(f"blue sky {i}" for i in range(20))
    in_one = tuple(f"question {123_457 + 7_919 * i}:" for i in range(20))
    everywhere = tuple("reasoning step"[:i].upper() + "reasoning step"[i:] for i in range(14))
    return {
        "samples/search, every run": ("samples", "search", {"limit": "50"}),
        "samples/search, a text found nowhere, every run": ("samples", "search", {"text": nowhere, "limit": "50"}),
        "samples/search, a text in 1 interaction, every run": ("samples", "search", {"text": in_one, "limit": "50"}),
        "samples/search, a text in each one, every run": ("samples", "search", {"text": everywhere, "limit": "50"}),
        "groups/groups for a text": ("groups", "groups", {"run": run, "step": str(step), "search": "answer is 5"}),
        "judge/agreement, every run": ("judge", "agreement", {}),
        "run/reward_stats, every run": ("run", "reward_stats", {}),
    }


def _nth(params: dict[str, str | tuple[str, ...]], i: int) -> dict[str, str]:
    """The parameters of the i-th repeat: a tuple's i-th value (cycling), a string as it is."""
    return {k: v if isinstance(v, str) else v[i % len(v)] for k, v in params.items()}


def _median_get(urls: list[str]) -> tuple[float, int]:
    times = []
    size = 0
    for url in urls:
        t0 = time.perf_counter()
        with urllib.request.urlopen(url, timeout=120) as response:
            size = len(response.read())
        times.append(time.perf_counter() - t0)
    return statistics.median(times), size


def _fill(store: Store, rows: int, runs: int) -> None:
    store.migrate()
    have = store.query_rows("SELECT count() AS n FROM interactions")[0]["n"]
    if have == rows:
        return
    for table in _TABLES:
        store.command(f"TRUNCATE TABLE IF EXISTS {table}")
    timings = generate(store, rows, runs)
    print("generated in " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    for table in _TABLES:
        store.command(f"OPTIMIZE TABLE {table} FINAL")


def _first_paints(base: str, run: str, step: int, event_id: str, repeat: int) -> list[tuple[str, float, float, str]]:
    from playwright.sync_api import sync_playwright

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from browser import launch_chromium  # the tests' headless Debian chromium (tests/browser.py)

    pages = {
        "runs": ("/runs", "tr[data-run]"),
        "run": (f"/run?run={run}", "#chart-reward .main-svg"),
        "groups": (f"/groups?run={run}&step={step}&group={step}:0", ".card.completion"),
        "samples": (f"/samples?run={run}&id={event_id}&rrun={run}", "#record"),
        "judge": (f"/judge?run={run}", "#chart-judge-grid .main-svg"),
        "alerts": (f"/alerts?run={run}", "main h1"),
        "logits": ("/logits", "#chart-logits-heatmap .main-svg"),
    }
    out = []
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        for name, (path, ready) in pages.items():
            times = []
            for _ in range(repeat + 2):
                page.goto(base + path)
                page.wait_for_selector(ready, timeout=60_000)
                times.append(page.evaluate("performance.now()") / 1000)
            # the first two loads fill the browser's caches: plotly.js, then V8's code cache for it
            seconds = statistics.median(times[2:])
            out.append((name, times[0], seconds, "ok" if seconds <= 1.0 else "SLOW"))
        browser.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--data-dir", type=Path, default=None, help="Keep the generated store here.")
    parser.add_argument("--no-paint", action="store_true", help="Skip the browser's first-paint timings.")
    args = parser.parse_args()
    target = 0.3 if args.rows <= 1_000_000 else 1.0
    with tempfile.TemporaryDirectory() as tmp, open_store(Settings(data_dir=args.data_dir or Path(tmp))) as store:
        _fill(store, args.rows, args.runs)
        run = "run-00"
        step = store.query_rows("SELECT intDiv(max(step), 2) AS s FROM interactions WHERE run_id = 'run-00'")[0]["s"]
        event_id = store.query_rows("SELECT any(event_id) AS e FROM interactions WHERE run_id = 'run-00'")[0]["e"]
        model = store.query_rows("SELECT min(model) AS m FROM logits")[0]["m"]
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        server = UiServer(store, port=port).start()
        base = f"http://127.0.0.1:{port}"
        try:
            calls = {f"{v}/{r}": (v, r, p) for (v, r), p in route_params(run, step, event_id, model).items()}
            assert {(v, r) for v, r, _ in calls.values()} == {(v.name, r.name) for v in VIEWS for r in v.routes}
            rows = []
            for label, (view, route, params) in {**calls, **extra_calls(run, step)}.items():
                api = f"{base}/api/{view}/{route}"
                urls = [f"{api}?{urllib.parse.urlencode(_nth(params, i))}" for i in range(args.repeat)]
                seconds, size = _median_get(urls)
                rows.append((label, f"{size / 1024:.1f}", seconds, "ok" if seconds <= target else "SLOW"))
            print_table(
                f"UI API calls on {args.rows:,} interactions, {args.runs} runs (chdb, median of {args.repeat})",
                ["call (one run unless said)", "KiB", "seconds", f"<= {target:g} s"],
                rows,
            )
            if not args.no_paint:
                paints = _first_paints(base, run, step, event_id, args.repeat)
                print_table(
                    f"UI first paint on {args.rows:,} interactions (headless chromium, median of {args.repeat})",
                    ["view", "first load s", "seconds", "<= 1 s"],
                    paints,
                )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
