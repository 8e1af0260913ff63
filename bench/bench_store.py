"""Rows/s into chdb through trainwire's store vs a raw clickhouse-connect ``insert_arrow`` (target >= 80 %).

All insert the same interaction rows into the same table (with its materialized view), in
batches of ``--batch`` rows, in the same run. Two raw baselines: ready-made Arrow tables (the
insert alone), and the same rows as plain dicts turned into Arrow by ``pa.Table.from_pylist``
(what a hand-written loader does).
trainwire's side starts from ``Event`` objects, so its time includes building the Arrow batch
(what the ClickHouse sink does).

    python bench/bench_store.py [--rows 1000000] [--batch 50000]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=50_000)
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
        client = store._client  # the same clickhouse-connect client, used raw

        def raw() -> None:
            for table in arrow_batches:
                store._call(client.insert_arrow, "interactions", table)

        def raw_from_rows() -> None:
            for rows in row_batches:
                store._call(client.insert_arrow, "interactions", pa.Table.from_pylist(rows, schema))

        def ours() -> None:
            for batch in batches:
                store.insert_events(batch)

        timings = {}
        counts = []
        for name, fn in (
            ("raw insert_arrow (prebuilt Arrow)", raw),
            ("raw Table.from_pylist(rows) + insert_arrow", raw_from_rows),
            ("trainwire store.insert_events", ours),
        ):
            store.command("TRUNCATE TABLE interactions")  # every inserter writes the same table (and its views)
            store.command("TRUNCATE TABLE reward_step_agg")
            t0 = time.perf_counter()
            fn()
            timings[name] = time.perf_counter() - t0
            counts.append(store.query_rows("SELECT count() AS n FROM interactions")[0]["n"])
        assert counts == [args.rows] * 3, counts
    raw_time = timings["raw insert_arrow (prebuilt Arrow)"]
    from_rows_time = timings["raw Table.from_pylist(rows) + insert_arrow"]
    rows = [(name, args.rows / t, f"{raw_time / t:.0%}", f"{from_rows_time / t:.0%}") for name, t in timings.items()]
    print_table(
        f"{args.rows:,} interaction rows into chdb, batches of {args.batch:,}",
        ["inserter", "rows/s", "vs prebuilt Arrow", "vs from_pylist"],
        rows,
    )


if __name__ == "__main__":
    main()
