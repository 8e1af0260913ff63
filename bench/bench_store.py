"""Rows/s into chdb through trainwire's store vs a raw clickhouse-connect ``insert_arrow`` (target >= 80 %).

All insert the same interaction rows into the same table (with its materialized views), in
batches of ``--batch`` rows, in the same run. Two raw baselines: ready-made Arrow tables (the
insert alone), and the same rows as plain dicts turned into Arrow by ``pa.Table.from_pylist``
(what a hand-written loader does).
trainwire's side starts from ``Event`` objects, so its time includes building the Arrow batch
(what the ClickHouse sink does). The inserters take turns over ``--rounds`` rounds (each
starting from empty tables) and the best time of each is kept.

    python bench/bench_store.py [--rows 1000000] [--batch 50000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pyarrow as pa
from table import print_table

from trainwire.config import Settings
from trainwire.events import Event, Interaction
from trainwire.store.clickhouse import open_store
from trainwire.store.schema import events_to_arrow

RAW = "raw insert_arrow (prebuilt Arrow)"
FROM_ROWS = "raw Table.from_pylist(rows) + insert_arrow"
OURS = "trainwire store.insert_events"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    events = [
        Event(
            f"run-{i % 4}",
            Interaction(
                prompt=f"Question {i}: what is {i} + {i}?",
                completion=f"The answer is {2 * i}." + " reasoning" * 20,
                reward=float(i % 2),
                rewards={"accuracy": float(i % 2), "format": 1.0},
                step=i // 64,
                group_id=f"{i // 64}:{i % 8}",
                group_index=i % 8,
                completion_tokens=30,
                metadata={"level": i % 5},
            ),
        )
        for i in range(args.rows)
    ]
    batches = [events[i : i + args.batch] for i in range(0, len(events), args.batch)]
    arrow_batches = [events_to_arrow(Interaction, b) for b in batches]
    row_batches = [t.to_pylist() for t in arrow_batches]  # the same rows as plain dicts
    schema = arrow_batches[0].schema
    with tempfile.TemporaryDirectory() as tmp, open_store(Settings(data_dir=Path(tmp))) as store:
        store.migrate()

        def raw() -> None:
            for table in arrow_batches:
                store._call("insert_arrow", "interactions", table)

        def raw_from_rows() -> None:
            for rows in row_batches:
                store._call("insert_arrow", "interactions", pa.Table.from_pylist(rows, schema))

        def ours() -> None:
            for batch in batches:
                store.insert_events(batch)

        tables = [
            r["name"]
            for r in store.query_rows(
                "SELECT name FROM system.tables WHERE database = currentDatabase()"
                " AND engine LIKE '%MergeTree' AND name != 'schema_migrations'"
            )
        ]
        inserters = {RAW: raw, FROM_ROWS: raw_from_rows, OURS: ours}
        timings: dict[str, list[float]] = {name: [] for name in inserters}
        names = list(inserters)
        for round_ in range(args.rounds):
            for name in names[round_ % 3 :] + names[: round_ % 3]:  # no inserter always goes first
                for table in tables:  # every inserter starts from empty tables (interactions and its views')
                    store.command(f"TRUNCATE TABLE `{table}`")
                t0 = time.perf_counter()
                inserters[name]()
                timings[name].append(time.perf_counter() - t0)
                count = store.query_rows("SELECT count() AS n FROM interactions")[0]["n"]
                assert count == args.rows, (name, count)
    best = {name: min(times) for name, times in timings.items()}
    rows = [(name, args.rows / t, f"{best[RAW] / t:.0%}", f"{best[FROM_ROWS] / t:.0%}") for name, t in best.items()]
    print_table(
        f"{args.rows:,} interaction rows into chdb, batches of {args.batch:,} (best of {args.rounds})",
        ["inserter", "rows/s", "vs prebuilt Arrow", "vs from_pylist"],
        rows,
    )


if __name__ == "__main__":
    main()
