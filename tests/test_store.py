"""The ClickHouse store on chdb: migrations, schema agreement, Arrow inserts, dedup by event_id."""

from __future__ import annotations

import pytest

from trainwire.config import Settings
from trainwire.errors import StoreError
from trainwire.events import PAYLOAD_TYPES, Event, Interaction, TrainStep
from trainwire.store.clickhouse import EmbeddedStore, RemoteStore, open_store
from trainwire.store.migrations import available_migrations
from trainwire.store.schema import expected_columns


def schema_snapshot(store) -> list[tuple]:
    return [
        tuple(r.values())
        for r in store.query_rows(
            "SELECT name, engine, create_table_query FROM system.tables"
            " WHERE database = currentDatabase() ORDER BY name"
        )
    ]


def test_migrations_applied_twice_change_nothing(embedded_settings: Settings) -> None:
    with open_store(embedded_settings) as store:
        applied = store.migrate()
        assert applied == [f"{m.version:04d}_{m.name}" for m in available_migrations()]
        before = schema_snapshot(store)
        rows_before = store.query_rows("SELECT version, name FROM schema_migrations FINAL ORDER BY version")
        assert store.migrate() == []
        assert schema_snapshot(store) == before
        assert store.query_rows("SELECT version, name FROM schema_migrations FINAL ORDER BY version") == rows_before
    with open_store(embedded_settings) as reopened:  # and after a restart
        assert reopened.migrate() == []


def test_tables_match_the_event_model(embedded_settings: Settings) -> None:
    with open_store(embedded_settings) as store:
        store.migrate()
        for payload_cls in PAYLOAD_TYPES.values():
            rows = store.query_rows(
                "SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = {t:String}"
                " AND default_kind != 'MATERIALIZED'",
                {"t": payload_cls.TOPIC},
            )
            assert {r["name"]: r["type"] for r in rows} == dict(expected_columns(payload_cls)), payload_cls.TOPIC
            engine = store.query_rows(
                "SELECT engine, sorting_key FROM system.tables"
                " WHERE database = currentDatabase() AND name = {t:String}",
                {"t": payload_cls.TOPIC},
            )[0]
            assert engine["engine"] == "ReplacingMergeTree"
            assert engine["sorting_key"].startswith("run_id") and engine["sorting_key"].endswith("event_id")


def test_duplicate_deliveries_collapse_with_final(embedded_settings: Settings) -> None:
    events = [Event("r", Interaction(prompt=[{"role": "user", "content": "hi"}], completion="yo", reward=0.5, step=1))]
    events += [Event("r", TrainStep(step=s, loss=1.0 / (s + 1))) for s in range(5)]
    with open_store(embedded_settings) as store:
        store.migrate()
        assert store.insert_events(events) == 6
        assert store.insert_events(events) == 6  # a redelivery, in a separate insert
        assert store.query_rows("SELECT count() AS n FROM train_steps FINAL") == [{"n": 5}]
        (row,) = store.query_rows("SELECT prompt, prompt_messages, completion, reward FROM interactions FINAL")
        assert row == {
            "prompt": "user: hi",
            "prompt_messages": '[{"role":"user","content":"hi"}]',
            "completion": "yo",
            "reward": 0.5,
        }


def test_second_process_is_routed_through_the_owner(embedded_settings: Settings) -> None:
    import subprocess
    import sys

    code = (
        "import sys, json\n"
        "from trainwire.config import Settings\n"
        "from trainwire.store.clickhouse import open_store\n"
        "s = open_store(Settings(data_dir=sys.argv[1]))\n"
        "print(type(s).__name__, json.dumps(s.query_rows('SELECT count() AS n FROM train_steps FINAL')))\n"
    )
    with open_store(embedded_settings) as store:
        assert isinstance(store, EmbeddedStore)
        store.migrate()
        store.insert_events([Event("r", TrainStep(step=1))])
        out = subprocess.run(
            [sys.executable, "-c", code, str(embedded_settings.data_dir)], capture_output=True, text=True
        )
        assert out.stdout.strip() == 'RemoteStore [{"n": 1}]', out.stderr
        remote = RemoteStore.connect(embedded_settings.data_dir)
        remote.insert_events([Event("r", TrainStep(step=2))])
        assert store.query_rows("SELECT count() AS n FROM train_steps FINAL") == [{"n": 2}]
        with pytest.raises(StoreError, match=r"UNKNOWN_TABLE|Unknown table"):
            remote.query_rows("SELECT * FROM missing_table")


def test_server_url_unreachable_is_a_clear_error(tmp_path) -> None:
    settings = Settings(clickhouse="http://default:secret@127.0.0.1:9/trainwire", data_dir=tmp_path)
    with pytest.raises(StoreError, match=r"ClickHouse at 127\.0\.0\.1:9 is unreachable") as info:
        open_store(settings)
    assert "secret" not in str(info.value)
