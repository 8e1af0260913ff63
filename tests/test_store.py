"""The ClickHouse store on chdb: migrations, schema agreement, Arrow inserts, dedup by event_id."""

from __future__ import annotations

import dataclasses
import http.client
import socket
import threading
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainwire.config import Settings
from trainwire.errors import StoreError
from trainwire.events import PAYLOAD_TYPES, Event, Interaction, TrainStep
from trainwire.store import chdb_http
from trainwire.store.chdb_http import HttpUser
from trainwire.store.clickhouse import EmbeddedStore, OwnerClientStore, OwnerEndpoint, open_store
from trainwire.store.migrations import available_migrations
from trainwire.store.schema import events_to_arrow, expected_columns


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
        assert out.stdout.strip() == 'OwnerClientStore [{"n": 1}]', out.stderr
        remote = OwnerClientStore.connect(embedded_settings.data_dir)
        remote.insert_events([Event("r", TrainStep(step=2))])
        assert store.query_rows("SELECT count() AS n FROM train_steps FINAL") == [{"n": 2}]
        with pytest.raises(StoreError, match=r"UNKNOWN_TABLE|Unknown table"):
            remote.query_rows("SELECT * FROM missing_table")
        remote.close()


def test_server_url_unreachable_is_a_clear_error(tmp_path) -> None:
    settings = Settings(clickhouse="http://default:secret@127.0.0.1:9/trainwire", data_dir=tmp_path)
    with pytest.raises(StoreError, match=r"ClickHouse at 127\.0\.0\.1:9 is unreachable") as info:
        open_store(settings)
    assert "secret" not in str(info.value)


def test_owner_answers_a_non_ascii_password_with_a_refused_login(embedded_settings: Settings) -> None:
    """A password that is not ASCII is compared as bytes: ClickHouse's 516, not a traceback and no answer."""
    with open_store(embedded_settings):
        connection = http.client.HTTPConnection("127.0.0.1", OwnerEndpoint.read(embedded_settings.data_dir).port)
        headers = {"X-ClickHouse-User": "trainwire", "X-ClickHouse-Key": "mot-de-passe-\u00e9t\u00e9"}
        connection.request("POST", "/", body=b"SELECT 1", headers=headers)
        response = connection.getresponse()
        assert (response.status, response.getheader("X-ClickHouse-Exception-Code")) == (403, "516")
        assert response.read().startswith(b"Code: 516. DB::Exception: trainwire: Authentication failed")


def test_owner_closes_an_idle_connection(embedded_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that connects and sends nothing, or stops mid-request, does not hold a server thread for good."""
    monkeypatch.setattr(chdb_http, "IDLE_TIMEOUT_S", 0.5)
    with open_store(embedded_settings):
        port = OwnerEndpoint.read(embedded_settings.data_dir).port
        idle = socket.create_connection(("127.0.0.1", port), timeout=10)
        stalled = socket.create_connection(("127.0.0.1", port), timeout=10)
        stalled.sendall(b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\nSELECT")
        assert idle.recv(100) == b""  # closed by the server (a timeout here would raise instead)
        assert stalled.recv(100) == b""
        idle.close()
        stalled.close()


def test_a_wrong_owner_password_is_a_refused_login_then_the_owner_file_is_read_again(
    embedded_settings: Settings,
) -> None:
    with open_store(embedded_settings) as store:
        endpoint = OwnerEndpoint.read(embedded_settings.data_dir)
        wrong = dataclasses.replace(endpoint, user=HttpUser(endpoint.user.name, "not-the-password"))
        remote = OwnerClientStore(embedded_settings.data_dir, wrong)
        with pytest.raises(StoreError, match="refused the login") as info:
            remote.query_rows("SELECT 1")
        assert info.value.retriable and "unreachable" not in str(info.value)
        assert remote.query_rows("SELECT 1 AS x") == [{"x": 1}]  # the owner file's password is read again
        assert isinstance(store, EmbeddedStore)
        remote.close()


class ClickHouseRefusingLogins(BaseHTTPRequestHandler):
    """Answers like a ClickHouse server (24.x) to a wrong password: HTTP 516 with its exception code.

    No ClickHouse server runs on this machine, so this stands in for one refusing the login.
    """

    def do_GET(self) -> None:
        self.do_POST()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = (
            b"Code: 516. DB::Exception: default: Authentication failed: password is incorrect, "
            b"or there is no user with such name. (AUTHENTICATION_FAILED) (version 24.8.4.13 (official build))\n"
        )
        self.send_response(516)
        self.send_header("X-ClickHouse-Exception-Code", "516")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_server_refusing_the_password_is_a_refused_login_not_unreachable(tmp_path) -> None:
    server = HTTPServer(("127.0.0.1", 0), ClickHouseRefusingLogins)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        settings = Settings(clickhouse=f"http://trainer:wrong-pw@127.0.0.1:{port}/db", data_dir=tmp_path)
        with pytest.raises(StoreError, match=f"ClickHouse at 127.0.0.1:{port} refused the login of user 'trainer'"):
            open_store(settings)
    finally:
        server.shutdown()


def test_an_owner_that_closed_answers_no_more_even_on_a_connection_kept_alive(embedded_settings: Settings) -> None:
    """Before: the closed owner's handler threads went on answering kept-alive connections on chdb,
    so a client wrote through it while another process owned the data directory."""
    store = open_store(embedded_settings)
    endpoint = OwnerEndpoint.read(embedded_settings.data_dir)
    login = {"X-ClickHouse-User": endpoint.user.name, "X-ClickHouse-Key": endpoint.user.password}
    connection = http.client.HTTPConnection("127.0.0.1", endpoint.port, timeout=10)
    connection.request("POST", "/", body=b"SELECT 1", headers=login)
    assert connection.getresponse().read() == b"1\n"
    store.close()
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        connection.request("POST", "/", body=b"SELECT 2", headers=login)
        connection.getresponse()
    connection.close()


OWNER_UNTIL_KILLED = """
import sys, time
from trainwire.config import Settings
from trainwire.store.clickhouse import open_store
store = open_store(Settings(data_dir=sys.argv[1]))
store.command("CREATE TABLE IF NOT EXISTS t (x UInt8) ENGINE = MergeTree ORDER BY x")
store.command("INSERT INTO t VALUES (1)")
print("ready", flush=True)
time.sleep(3600)
"""


def test_the_next_owner_serves_the_same_port_and_users_so_a_client_set_up_once_goes_on(
    embedded_settings: Settings,
) -> None:
    import signal
    import subprocess
    import sys

    import clickhouse_connect

    data_dir = embedded_settings.data_dir
    first = subprocess.Popen(
        [sys.executable, "-c", OWNER_UNTIL_KILLED, str(data_dir)], stdout=subprocess.PIPE, text=True
    )
    assert first.stdout.readline().strip() == "ready"
    endpoint = OwnerEndpoint.read(data_dir)
    user = endpoint.read_only_user
    dashboard = clickhouse_connect.get_client(
        host="127.0.0.1", port=endpoint.port, username=user.name, password=user.password, database="trainwire"
    )
    assert dashboard.command("SELECT count() FROM t") == 1
    first.send_signal(signal.SIGKILL)  # no clean exit: a new owner takes over the data directory
    first.wait()
    first.stdout.close()
    with open_store(embedded_settings) as store:
        assert isinstance(store, EmbeddedStore)
        assert (store.endpoint.port, store.endpoint.read_only_user) == (endpoint.port, user)
        store.command("INSERT INTO t VALUES (2)")
        assert dashboard.command("SELECT count() FROM t") == 2  # the same client, not set up again
    dashboard.close()
    with socket.socket() as taken:  # another program on that port: the next owner takes any free one
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past the closed connections' TIME_WAIT
        taken.bind(("127.0.0.1", endpoint.port))
        taken.listen()
        with open_store(embedded_settings) as store:
            assert store.endpoint.port != endpoint.port and store.endpoint.user == endpoint.user
            assert OwnerEndpoint.read(data_dir).port == store.endpoint.port


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.datetimes(
            min_value=datetime(1970, 1, 2),
            max_value=datetime(2200, 1, 1),
            timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_events_ts_column_holds_each_instant_in_utc_microseconds(times):
    events = [Event("r", Interaction(prompt="p", completion="c"), ts=ts) for ts in times]
    column = events_to_arrow(Interaction, events).column("ts")
    assert column.type == pa.timestamp("us", tz="UTC")
    assert column.to_pylist() == [ts.astimezone(UTC) for ts in times]
