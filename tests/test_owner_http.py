"""The chdb owner speaks ClickHouse's HTTP interface: clients nobody here wrote use it as a server.

clickhouse-connect's ordinary HTTP client (as a user or Grafana would use it, not trainwire's
wrapper) runs queries in the formats it reads, inserts, server-side parameters, compression both
ways, errors, the read-only user and concurrent clients against a real owner (chdb in this
process, serving on loopback). ClickHouse's official JDBC driver (fetched from Maven Central into
~/.cache/trainwire/jdbc) and curl use it too.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import clickhouse_connect
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from trainwire.cli import main
from trainwire.config import Settings
from trainwire.store import chdb_http, native_compression
from trainwire.store.chdb_http import CODECS, HttpUser
from trainwire.store.clickhouse import EmbeddedStore, OwnerEndpoint, open_store

ROWS = [(1, "one", 0.5), (2, "two", 1.5), (3, "three", None)]


@pytest.fixture(scope="module")
def owned_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A data directory this process owns, holding ``t`` (id, name, score) with ROWS, and a second database."""
    data_dir = tmp_path_factory.mktemp("owner-http")
    with open_store(Settings(data_dir=data_dir)) as store:
        assert isinstance(store, EmbeddedStore)
        store.command("CREATE TABLE t (id UInt32, name String, score Nullable(Float64)) ENGINE = MergeTree ORDER BY id")
        store.command("INSERT INTO t VALUES " + ", ".join(f"({i}, '{n}', {s or 'NULL'})" for i, n, s in ROWS))
        store.command("CREATE DATABASE other")
        store.command("CREATE TABLE other.t (id UInt32) ENGINE = MergeTree ORDER BY id")
        store.command("INSERT INTO other.t VALUES (7)")
        yield data_dir


@pytest.fixture(scope="module")
def owner(owned_dir: Path) -> OwnerEndpoint:
    """The endpoint of ``owned_dir``'s owner, from its owner file."""
    return OwnerEndpoint.read(owned_dir)


def client(owner: OwnerEndpoint, *, read_only: bool = False, **kwargs: object):
    """clickhouse-connect's HTTP client, logged in as the owner file says."""
    user = owner.read_only_user if read_only else owner.user
    kwargs.setdefault("database", "trainwire")
    return clickhouse_connect.get_client(
        host="127.0.0.1", port=owner.port, username=user.name, password=user.password, **kwargs
    )


def request(
    owner: OwnerEndpoint, method: str, target: str, body: bytes | None = None, read_only: bool = False, **headers: str
):
    """One raw HTTP request as the read-write (or read-only) user: (status, headers, body)."""
    user = owner.read_only_user if read_only else owner.user
    login = base64.b64encode(f"{user.name}:{user.password}".encode()).decode()
    connection = http.client.HTTPConnection("127.0.0.1", owner.port, timeout=30)
    connection.request(method, target, body=body, headers={"Authorization": f"Basic {login}", **headers})
    response = connection.getresponse()
    answer = (response.status, dict(response.getheaders()), response.read())
    connection.close()
    return answer


def test_queries_in_the_formats_clickhouse_connect_reads(owner: OwnerEndpoint) -> None:
    ch = client(owner)
    assert ch.server_version and ch.query("SELECT currentDatabase()").result_rows == [("trainwire",)]
    assert ch.query("SELECT id, name, score FROM t ORDER BY id").result_rows == ROWS  # Native
    table = ch.query_arrow("SELECT id, name, score FROM t ORDER BY id")  # Arrow
    assert table.column("name").to_pylist() == ["one", "two", "three"]
    frame = ch.query_df("SELECT id, score FROM t ORDER BY id")  # pandas, through Native
    assert frame["id"].tolist() == [1, 2, 3] and frame["score"].isna().tolist() == [False, False, True]
    assert ch.raw_query("SELECT id, name FROM t ORDER BY id FORMAT CSV") == b'1,"one"\n2,"two"\n3,"three"\n'
    lines = ch.raw_query("SELECT id, score FROM t ORDER BY id", fmt="JSONEachRow").splitlines()
    assert [json.loads(line) for line in lines] == [{"id": i, "score": s} for i, _, s in ROWS]
    assert ch.command("SELECT count() FROM t") == 3
    ch.close()


@pytest.mark.parametrize(
    ("fmt", "read"),
    [
        ("Parquet", lambda body: pq.read_table(io.BytesIO(body)).column("name").to_pylist()),
        ("Arrow", lambda body: pa.ipc.open_file(body).read_all().column("name").to_pylist()),
        ("ArrowStream", lambda body: pa.ipc.open_stream(body).read_all().column("name").to_pylist()),
        ("JSON", lambda body: [row["name"] for row in json.loads(body)["data"]]),
        ("JSONCompact", lambda body: [row[1] for row in json.loads(body)["data"]]),
        ("CSVWithNames", lambda body: [line.split(",")[1].strip('"') for line in body.decode().splitlines()[1:]]),
        ("TSVWithNames", lambda body: [line.split("\t")[1] for line in body.decode().splitlines()[1:]]),
    ],
)
def test_other_output_formats_by_default_format(owner: OwnerEndpoint, fmt: str, read) -> None:
    status, headers, body = request(
        owner, "POST", f"/?database=trainwire&default_format={fmt}", b"SELECT id, name FROM t ORDER BY id"
    )
    assert status == 200, body
    assert headers["X-ClickHouse-Format"] == fmt
    assert read(body) == ["one", "two", "three"]


def test_server_side_parameters(owner: OwnerEndpoint) -> None:
    ch = client(owner)
    sql = "SELECT name FROM t WHERE id > {low:UInt32} AND name != {skip:String} ORDER BY id"
    assert ch.query(sql, parameters={"low": 1, "skip": "three"}).result_rows == [("two",)]
    status, _, body = request(owner, "GET", "/?query=SELECT+%7Bx%3AUInt32%7D+%2B+1&param_x=41")
    assert (status, body) == (200, b"42\n")
    ch.close()


@pytest.mark.parametrize("compress", [False, True, "lz4", "zstd", "gzip"])
def test_inserts_and_queries_with_and_without_compression(owner: OwnerEndpoint, compress: bool | str) -> None:
    table = f"ins_{str(compress).lower()}"
    ch = client(owner, compress=compress)
    ch.command(f"CREATE TABLE {table} (id UInt32, name String) ENGINE = MergeTree ORDER BY id")
    summary = ch.insert(table, [[1, "a"], [2, "b"]], column_names=["id", "name"])  # Native
    assert summary.written_rows == 2
    ch.insert_arrow(table, pa.table({"id": pa.array([3], pa.uint32()), "name": ["c"]}))  # Arrow
    ch.raw_insert(table, ["id", "name"], b'{"id": 4, "name": "d"}\n', fmt="JSONEachRow")
    ch.raw_insert(table, ["id", "name"], "5,e\n", fmt="CSV")
    expected = [(1, "a"), (2, "b"), (3, "c"), (4, "d"), (5, "e")]
    assert ch.query(f"SELECT id, name FROM {table} ORDER BY id").result_rows == expected
    assert ch.query_arrow(f"SELECT name FROM {table} ORDER BY id").column("name").to_pylist() == list("abcde")
    ch.close()


@pytest.mark.parametrize("encoding", sorted(CODECS))
def test_a_response_is_compressed_as_the_client_accepts(owner: OwnerEndpoint, encoding: str) -> None:
    query = b"SELECT name FROM t ORDER BY id FORMAT CSV"
    status, headers, body = request(
        owner, "POST", "/?enable_http_compression=1", query, **{"Accept-Encoding": f"{encoding}, identity"}
    )
    assert (status, headers["Content-Encoding"]) == (200, encoding)
    assert CODECS[encoding].decompress(body) == b'"one"\n"two"\n"three"\n'
    status, headers, body = request(
        owner, "POST", "/?enable_http_compression=0", query, **{"Accept-Encoding": encoding}
    )
    assert "Content-Encoding" not in headers and body == b'"one"\n"two"\n"three"\n'  # not asked for


def test_a_response_is_compressed_for_clickhouse_connect_without_the_url_setting(owner: OwnerEndpoint) -> None:
    """clickhouse-connect (compress=True, lz4, zstd, gzip) sends only Accept-Encoding when system.settings
    shows enable_http_compression on, as chdb 26.x's does (25.8's is off: it sends the URL setting then):
    the response is compressed as system.settings says."""
    _, _, shown = request(
        owner, "POST", "/", b"SELECT value FROM system.settings WHERE name = 'enable_http_compression'"
    )
    status, headers, body = request(owner, "POST", "/", b"SELECT 1", **{"Accept-Encoding": "zstd"})
    assert (status, headers.get("Content-Encoding") == "zstd") == (200, shown == b"1\n")
    assert (CODECS["zstd"].decompress(body) if shown == b"1\n" else body) == b"1\n"


def test_clickhouse_block_compression_both_ways(owner: OwnerEndpoint) -> None:
    """compress=1: the response in ClickHouse's own compressed blocks; decompress=1: the body in them."""
    status, _, body = request(owner, "POST", "/?compress=1", b"SELECT name FROM t ORDER BY id FORMAT CSV")
    assert status == 200 and native_compression.decompress(body) == b'"one"\n"two"\n"three"\n'
    request(owner, "POST", "/", b"CREATE TABLE blocks_in (x UInt64) ENGINE = MergeTree ORDER BY x")
    rows = b"".join(b"%d\n" % i for i in range(200_000))  # more than one block
    status, _, body = request(
        owner, "POST", "/?query=INSERT+INTO+blocks_in+FORMAT+TSV&decompress=1", native_compression.compress(rows)
    )
    assert status == 200, body
    _, _, body = request(owner, "POST", "/", b"SELECT count(), sum(x) FROM blocks_in")
    assert body == b"200000\t19999900000\n"
    corrupt = bytearray(native_compression.compress(b"1\n"))
    corrupt[0] ^= 1
    status, headers, body = request(
        owner, "POST", "/?query=INSERT+INTO+blocks_in+FORMAT+TSV&decompress=1", bytes(corrupt)
    )
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (500, "271") and b"checksum" in body


def test_an_insert_in_other_formats_with_a_compressed_body(owner: OwnerEndpoint) -> None:
    request(owner, "POST", "/", b"CREATE TABLE fmt_in (id UInt32, name String) ENGINE = MergeTree ORDER BY id")
    sink = io.BytesIO()
    pq.write_table(pa.table({"id": pa.array([1], pa.uint32()), "name": ["parquet"]}), sink)
    stream = io.BytesIO()
    arrow_rows = pa.table({"id": pa.array([5], pa.uint32()), "name": ["arrowstream"]})
    with pa.ipc.new_stream(stream, arrow_rows.schema) as writer:
        writer.write_table(arrow_rows)
    bodies = {
        "Parquet": sink.getvalue(),
        "TabSeparated": b"2\ttsv\n",
        "RowBinary": (3).to_bytes(4, "little") + bytes([9]) + b"rowbinary",
        "Native": None,
        "ArrowStream": stream.getvalue(),
    }
    for fmt, data in bodies.items():
        if data is None:  # Native as ClickHouse writes it: from a query of the same columns
            _, _, data = request(
                owner, "POST", "/?default_format=Native", b"SELECT toUInt32(4) AS id, 'native' AS name"
            )
        status, headers, body = request(
            owner,
            "POST",
            f"/?query=INSERT+INTO+fmt_in+FORMAT+{fmt}",
            gzip.compress(data),
            **{"Content-Encoding": "gzip"},
        )
        assert status == 200, body
        assert json.loads(headers["X-ClickHouse-Summary"])["written_rows"] == "1"
    _, _, body = request(owner, "POST", "/", b"SELECT name FROM fmt_in ORDER BY id FORMAT CSV")
    assert body == b'"parquet"\n"tsv"\n"rowbinary"\n"native"\n"arrowstream"\n'


def test_an_insert_the_disk_has_no_room_for_is_refused_for_now_and_nothing_is_half_written(
    owned_dir: Path, owner: OwnerEndpoint
) -> None:
    """A real full disk: a 1 MB tmpfs where the endpoint keeps an insert's data while chdb reads it."""
    inserts = owned_dir / "clickhouse.inserts"
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(inserts)], check=True)
    try:
        ch = client(owner)
        ch.command("CREATE TABLE full_disk (x String) ENGINE = MergeTree ORDER BY x")
        rows = [[f"row-{i:07d}"] for i in range(200_000)]  # about 2.4 MB
        with pytest.raises(OperationalError, match="NOT_ENOUGH_SPACE"):  # 503: retriable, as a server's full disk
            ch.insert("full_disk", rows)
        assert list(inserts.iterdir()) == []  # the partial file is gone
        assert ch.command("SELECT count() FROM full_disk") == 0  # nothing half written
        ch.insert("full_disk", rows[:1000])  # what fits goes in
        assert ch.command("SELECT count() FROM full_disk") == 1000
        ch.close()
    finally:
        subprocess.run(["umount", str(inserts)], check=True)


LARGE_INSERT_ROWS = 1_000_000
"""About 48 MB of CSV: far more than the endpoint may hold in memory at once for one insert."""


def large_csv(path: Path) -> Path:
    with path.open("w") as out:
        for i in range(LARGE_INSERT_ROWS):
            out.write(f"{i},row-{i:09d}-{'x' * 30}\n")
    return path


@pytest.mark.parametrize("shape", ["query in the URL", "query before the data in the body", "gzip body"])
def test_a_large_insert_streams_to_chdb_without_holding_the_body_in_memory(
    owner: OwnerEndpoint, tmp_path: Path, shape: str
) -> None:
    """The body goes to chdb's input file as it arrives: the endpoint's Python memory peaks far below
    the body's size (it held the body whole three times over: read, joined to the query, sliced)."""
    table = "large_" + shape.replace(" ", "_")
    request(
        owner, "POST", "/", f"CREATE TABLE {table} (id UInt64, name String) ENGINE = MergeTree ORDER BY id".encode()
    )
    body = large_csv(tmp_path / "large.csv")
    url, headers = f"{owner.url}/?query=INSERT%20INTO%20{table}%20FORMAT%20CSV", []
    if shape == "query before the data in the body":
        with_query = tmp_path / "with_query.csv"
        with with_query.open("wb") as out, body.open("rb") as data:
            out.write(f"INSERT INTO {table} FORMAT CSV\n".encode())
            out.write(data.read())
        url, body = owner.url, with_query
    elif shape == "gzip body":
        subprocess.run(["gzip", "-k", "-1", str(body)], check=True)
        body, headers = body.with_suffix(".csv.gz"), ["-H", "Content-Encoding: gzip"]
    tracemalloc.start()  # this process is the owner: what its Python code allocates while curl sends
    try:
        inserted = curl(owner, url, *headers, "--data-binary", f"@{body}")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert inserted.returncode == 0, inserted.stdout + inserted.stderr
    assert peak < 16 * 2**20, f"the endpoint held {peak / 2**20:.0f} MB for a {body.stat().st_size / 2**20:.0f} MB body"
    _, _, counted = request(owner, "POST", "/", f"SELECT count(), max(id) FROM {table}".encode())
    assert counted == f"{LARGE_INSERT_ROWS}\t{LARGE_INSERT_ROWS - 1}\n".encode()


def test_an_insert_by_the_read_only_user_is_refused_before_its_data_is_kept(
    owned_dir: Path, owner: OwnerEndpoint
) -> None:
    """The read-only user's body is never written under the data directory: on a full disk (a real 1 MB
    tmpfs) its insert is still READONLY, not NOT_ENOUGH_SPACE."""
    inserts = owned_dir / "clickhouse.inserts"
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(inserts)], check=True)
    try:
        rows = b"".join(b"%d,name-%d,\\N\n" % (i, i) for i in range(200_000))  # about 3 MB
        status, headers, body = request(owner, "POST", "/?query=INSERT+INTO+t+FORMAT+CSV", rows, read_only=True)
        assert (status, headers["X-ClickHouse-Exception-Code"]) == (403, "164"), body
        assert list(inserts.iterdir()) == []
    finally:
        subprocess.run(["umount", str(inserts)], check=True)
    assert request(owner, "POST", "/", b"SELECT count() FROM t")[2] == b"3\n"


def test_errors_as_clickhouse_sends_them(owner: OwnerEndpoint) -> None:
    ch = client(owner)
    with pytest.raises(DatabaseError) as syntax:
        ch.query("SELEC 1")
    assert syntax.value.code == 62 and "SYNTAX_ERROR" in str(syntax.value)
    with pytest.raises(DatabaseError) as unknown:
        ch.query("SELECT * FROM no_such_table")
    assert unknown.value.code == 60
    status, headers, body = request(owner, "POST", "/?query_id=q-1", b"SELECT * FROM no_such_table")
    assert (status, headers["X-ClickHouse-Exception-Code"], headers["X-ClickHouse-Query-Id"]) == (404, "60", "q-1")
    assert body.startswith(b"Code: 60. DB::Exception: ") and b"(UNKNOWN_TABLE) (version " in body
    ch.close()


def test_the_read_only_user_reads_and_is_refused_ddl_inserts_and_settings(owner: OwnerEndpoint) -> None:
    ro = client(owner, read_only=True)
    assert ro.query("SELECT count() FROM t").result_rows == [(3,)]
    for statement in ("DROP TABLE t", "CREATE TABLE u (x Int8) ENGINE = Memory", "INSERT INTO t (id) VALUES (9)"):
        with pytest.raises(DatabaseError) as refused:
            ro.command(statement)
        assert refused.value.code == 164 and "READONLY" in str(refused.value)
    with pytest.raises(DatabaseError) as refused:
        ro.insert("t", [[9, "nine", None]])
    assert refused.value.code == 164
    for statement in ("SET readonly = 0", "SET max_threads = 1"):  # no SET statement, as in ClickHouse's readonly=1
        with pytest.raises(DatabaseError) as refused:
            ro.command(statement)
        assert refused.value.code == 164
    # no table function: a read-only user cannot read the owner's files or reach a URL through it
    for function in ("file('/etc/passwd', 'LineAsString')", f"url('{owner.url}/ping', 'LineAsString')"):
        status, headers, body = request(owner, "POST", "/", f"SELECT * FROM {function}".encode(), read_only=True)
        assert (status, headers["X-ClickHouse-Exception-Code"]) == (403, "164"), body
    ro.close()
    assert client(owner).query("SELECT count() FROM t").result_rows == [(3,)]  # nothing changed


def test_the_read_only_user_may_change_query_settings_as_dashboards_do(owner: OwnerEndpoint) -> None:
    """Grafana's plugin sends max_execution_time on the URL and the SQL library's joins close with
    SETTINGS join_use_nulls = 1: both work for the read-only user (ClickHouse's
    changeable_in_readonly), in a session too; the settings hold for that request only."""
    joined = b"SELECT count() FROM t AS a LEFT JOIN t AS b ON a.id = b.id + 100 WHERE b.id IS NULL"
    for target in ("/?max_execution_time=30&max_threads=1", "/?session_id=ro-1&max_execution_time=30"):
        status, _, body = request(owner, "POST", target, joined + b" SETTINGS join_use_nulls = 1", read_only=True)
        assert (status, body) == (200, b"3\n")
    status, _, body = request(
        owner,
        "POST",
        "/?max_execution_time=7",
        b"SELECT getSetting('max_execution_time'), getSetting('readonly')"
        b" SETTINGS max_threads = 2, log_comment = 'a ''quoted'' comment' FORMAT TSV",
        read_only=True,
    )
    assert (status, body) == (200, b"7\t1\n")
    status, _, body = request(owner, "POST", "/", b"SELECT getSetting('max_execution_time')", read_only=True)
    assert (status, body) == (200, b"0\n")  # the next request starts from the defaults
    status, headers, _ = request(owner, "POST", "/?readonly=0", b"DROP TABLE t", read_only=True)
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (403, "164")  # readonly itself is not theirs to change


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (b"GARBAGE\r\n\r\n", None, "36"),  # a request line http.server cannot read: no status line to send
        (b"GET / HTTP/9.9\r\n\r\n", None, "36"),
        (b"PUT / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 501, "48"),
        (b"POST / HTTP/1.1\r\nContent-Length: 5\r\nX-" + b"h" * 70_000 + b": 1\r\n\r\nSELEC", 431, "36"),
    ],
)
def test_a_request_http_cannot_parse_gets_a_clickhouse_error(
    owner: OwnerEndpoint, raw: bytes, status: int | None, code: str
) -> None:
    """Not Python's HTML error page: ClickHouse's ``Code: N. DB::Exception`` text (and its header when the
    request line could be read), then the connection closes."""
    with socket.create_connection(("127.0.0.1", owner.port), timeout=30) as connection:
        connection.sendall(raw)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    if status is None:
        assert answer.startswith(f"Code: {code}. DB::Exception: ".encode()), answer
        return
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()) or head.startswith(f"HTTP/1.0 {status} ".encode()), head
    assert f"X-ClickHouse-Exception-Code: {code}".encode() in head
    assert body.startswith(f"Code: {code}. DB::Exception: ".encode())


def test_a_get_may_not_write(owner: OwnerEndpoint) -> None:
    status, headers, _ = request(owner, "GET", "/?query=CREATE+TABLE+by_get+(x+Int8)+ENGINE+%3D+Memory")
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (403, "164")


def test_a_wrong_password_or_none_is_refused(owner: OwnerEndpoint) -> None:
    with pytest.raises(DatabaseError) as refused:
        clickhouse_connect.get_client(host="127.0.0.1", port=owner.port, username="trainwire", password="wrong")
    assert refused.value.code == 516 and "AUTHENTICATION_FAILED" in str(refused.value)
    connection = http.client.HTTPConnection("127.0.0.1", owner.port, timeout=30)
    connection.request("POST", "/", body=b"SELECT 1")
    response = connection.getresponse()
    assert (response.status, response.getheader("X-ClickHouse-Exception-Code")) == (401, "194")
    assert response.read().startswith(b"Code: 194. DB::Exception: default: Authentication failed")


def test_a_session_keeps_its_set_and_temporary_tables_and_a_query_setting_holds_for_its_query(
    owner: OwnerEndpoint,
) -> None:
    ch, other = client(owner), client(owner)  # clickhouse-connect gives each client a session
    default = other.command("SELECT getSetting('max_threads')")
    ch.command("SET max_threads = 3")
    ch.command("CREATE TEMPORARY TABLE scratch (x UInt8)")
    ch.command("INSERT INTO scratch VALUES (1), (2)")
    assert ch.query("SELECT sum(x), getSetting('max_threads') FROM scratch").result_rows == [(3, 3)]
    assert ch.command("SELECT getSetting('max_block_size')", settings={"max_block_size": 777}) == 777
    assert ch.command("SELECT getSetting('max_block_size')") != 777  # the query's own setting is gone
    assert ch.command("SELECT getSetting('max_threads')") == 3  # the session's SET stays
    assert other.command("SELECT getSetting('max_threads')") == default
    with pytest.raises(DatabaseError) as unknown:
        other.query("SELECT * FROM scratch")
    assert unknown.value.code == 60
    ch.close()
    other.close()


def test_one_request_at_a_time_in_a_session(owner: OwnerEndpoint) -> None:
    slow = threading.Thread(target=request, args=(owner, "POST", "/?session_id=s1", b"SELECT sleep(3) AS slow_s1"))
    slow.start()
    watch = client(owner)
    running = "SELECT count() FROM system.processes WHERE query LIKE '%AS slow_s1' AND query NOT LIKE '%processes%'"
    while not watch.command(running):
        pass  # until the slow query runs
    status, headers, body = request(owner, "POST", "/?session_id=s1", b"SELECT 1")
    slow.join()
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (400, "373") and b"SESSION_IS_LOCKED" in body
    assert request(owner, "POST", "/?session_id=s1", b"SELECT 1")[2] == b"1\n"  # free again
    status, headers, _ = request(owner, "POST", "/?session_id=never-opened&session_check=1", b"SELECT 1")
    assert headers["X-ClickHouse-Exception-Code"] == "372"
    watch.close()


def test_connections_past_the_limit_are_refused_as_clickhouse_does_and_served_again_once_one_closes(
    owned_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each connection holds a thread: past MAX_CONNECTIONS a client gets 503 / 202 at once, not a new thread."""
    monkeypatch.setattr(chdb_http, "MAX_CONNECTIONS", 2)
    server = chdb_http.ChdbHttpServer(  # a second endpoint on this process's chdb, with the limit at 2
        owned_dir / "clickhouse", [HttpUser("trainwire", "pw")], database="trainwire", temp_dir=tmp_path
    )

    def ping(connection: http.client.HTTPConnection) -> tuple[int, str | None, bytes]:
        connection.request("GET", "/ping")
        response = connection.getresponse()
        return response.status, response.getheader("X-ClickHouse-Exception-Code"), response.read()

    try:
        kept = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=30) for _ in range(2)]
        assert [ping(connection)[0] for connection in kept] == [200, 200]  # both kept alive, each on a thread
        status, code, body = ping(http.client.HTTPConnection("127.0.0.1", server.port, timeout=30))
        assert (status, code) == (503, "202") and b"TOO_MANY_SIMULTANEOUS_QUERIES" in body
        kept.pop().close()
        for _ in range(200):  # until the server has seen the close and freed the connection's thread
            if ping(http.client.HTTPConnection("127.0.0.1", server.port, timeout=30))[0] == 200:
                break
            time.sleep(0.05)
        else:
            pytest.fail("a connection closed by its client never freed its place")
        kept.pop().close()
    finally:
        server.close()


def test_a_kept_alive_connection_serves_request_after_request_errors_included(owner: OwnerEndpoint) -> None:
    """HTTP keep-alive as clients pool connections: a refused login (its body never read), a failed query and
    an insert leave the connection ready for the next request."""
    good = "Basic " + base64.b64encode(f"{owner.user.name}:{owner.user.password}".encode()).decode()
    bad = "Basic " + base64.b64encode(f"{owner.user.name}:wrong".encode()).decode()
    request(owner, "POST", "/", b"CREATE TABLE kept_alive (id UInt32, name String) ENGINE = MergeTree ORDER BY id")
    connection = http.client.HTTPConnection("127.0.0.1", owner.port, timeout=30)
    answers = []
    for login, target, body in [
        (bad, "/", b"SELECT 1" * 10_000),
        (good, "/", b"SELECT * FROM no_such_table"),
        (good, "/?query=INSERT+INTO+kept_alive+FORMAT+CSV", b"4,four\n"),
        (good, "/", b"SELECT count() FROM kept_alive"),
    ]:
        connection.request("POST", target, body=body, headers={"Authorization": login})
        response = connection.getresponse()
        answers.append((response.status, response.read()[:9]))
    assert answers == [(403, b"Code: 516"), (404, b"Code: 60."), (200, b""), (200, b"1\n")]
    connection.close()


def test_ping_and_root_answer_ok_without_login(owner: OwnerEndpoint) -> None:
    for target in ("/ping", "/"):
        connection = http.client.HTTPConnection("127.0.0.1", owner.port, timeout=30)
        connection.request("GET", target)
        response = connection.getresponse()
        assert (response.status, response.read()) == (200, b"Ok.\n")


@pytest.mark.parametrize("sessions", [True, False])
def test_concurrent_clients_with_different_settings_and_databases_keep_their_own(
    owner: OwnerEndpoint, sessions: bool
) -> None:
    """Each request (or session) runs on a chdb handle of its own: a setting or database never leaks."""
    failures: list[str] = []
    start = threading.Barrier(6)

    def work(index: int) -> None:
        database = "other" if index % 2 else "trainwire"
        settings = {"max_block_size": 1000 + index}
        ch = client(owner, database=database, settings=settings, autogenerate_session_id=sessions)
        expected = (database, 1000 + index, 1 if database == "other" else 3)
        start.wait()
        for _ in range(25):
            row = ch.query("SELECT currentDatabase(), getSetting('max_block_size'), (SELECT count() FROM t)")
            if row.result_rows[0] != expected:
                failures.append(f"client {index}: {row.result_rows[0]} != {expected}")
        ch.close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


# --------------------------------------------------------------------------- clients nobody here wrote

JDBC_POM = Path(__file__).parent / "jdbc" / "pom.xml"
JDBC_PROGRAM = Path(__file__).parent / "jdbc" / "QueryOwner.java"
JDBC_CACHE = Path.home() / ".cache" / "trainwire" / "jdbc"


def jdbc_driver() -> Path:
    """ClickHouse's official JDBC driver and its dependencies from Maven Central, fetched once into the cache."""
    libs = JDBC_CACHE / "libs"
    marker = libs / ".complete"
    if not marker.exists():
        libs.mkdir(parents=True, exist_ok=True)
        fetch = ["mvn", "-q", "-B", "-f", str(JDBC_POM), "dependency:copy-dependencies", f"-DoutputDirectory={libs}"]
        subprocess.run([*fetch, "-DincludeScope=runtime"], check=True, timeout=600)
        marker.write_text("ok\n")
    return libs


def test_the_official_jdbc_driver_reads_rows(owner: OwnerEndpoint) -> None:
    """What DBeaver and other JDBC tools use, with the driver's defaults (it asks for the response in
    ClickHouse's own block compression, compress=1)."""
    url = f"jdbc:clickhouse://127.0.0.1:{owner.port}/trainwire"
    user = owner.read_only_user
    query = "SELECT id, name, score FROM t ORDER BY id"
    result = subprocess.run(
        ["java", "-cp", f"{jdbc_driver()}/*", str(JDBC_PROGRAM), url, user.name, user.password, query],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines() == ["1\tone\t0.5", "2\ttwo\t1.5", "3\tthree\t\\N"]


def curl(owner: OwnerEndpoint, *args: str, read_only: bool = False) -> subprocess.CompletedProcess[str]:
    user = owner.read_only_user if read_only else owner.user
    return subprocess.run(
        ["curl", "-sS", "--fail-with-body", "-u", f"{user.name}:{user.password}", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_curl_pings_queries_and_inserts(owner: OwnerEndpoint) -> None:
    assert curl(owner, f"{owner.url}/ping").stdout == "Ok.\n"
    query = curl(
        owner, f"{owner.url}/?default_format=JSONEachRow", "--data-binary", "SELECT id, name FROM t ORDER BY id"
    )
    assert [json.loads(line) for line in query.stdout.splitlines()] == [{"id": i, "name": n} for i, n, _ in ROWS]
    curl(owner, owner.url, "--data-binary", "CREATE TABLE by_curl (id UInt32, name String) ENGINE = Memory")
    inserted = curl(owner, f"{owner.url}/?query=INSERT%20INTO%20by_curl%20FORMAT%20CSV", "--data-binary", "1,a\n2,b\n")
    assert inserted.returncode == 0, inserted.stdout + inserted.stderr
    count = curl(owner, f"{owner.url}/?query=SELECT%20count()%20FROM%20by_curl", read_only=True)
    assert count.stdout == "2\n"
    refused = curl(owner, owner.url, "--data-binary", "DROP TABLE by_curl", read_only=True)
    assert refused.returncode == 22 and refused.stdout.startswith("Code: 164. DB::Exception:")  # 22: HTTP error


def trainwire_db_endpoint(data_dir: Path) -> Result:
    return CliRunner().invoke(main, ["--data-dir", str(data_dir), "db", "endpoint"])


def test_db_endpoint_prints_the_url_users_and_examples(owned_dir: Path, owner: OwnerEndpoint) -> None:
    result = trainwire_db_endpoint(owned_dir)
    assert result.exit_code == 0, result.output
    assert f"pid {os.getpid()}" in result.stdout and f"URL        {owner.url}" in result.stdout
    assert f"read-write user trainwire  password {owner.user.password}" in result.stdout
    assert f"read-only  user trainwire_ro  password {owner.read_only_user.password}" in result.stdout
    assert f"jdbc:clickhouse://127.0.0.1:{owner.port}/trainwire " in result.stdout  # as the JDBC test uses
    assert f"curl -u 'trainwire_ro:{owner.read_only_user.password}' '{owner.url}/" in result.stdout


def test_db_endpoint_without_an_owner_says_so(tmp_path: Path) -> None:
    result = trainwire_db_endpoint(tmp_path / "nobody")
    assert result.exit_code == 1 and "Error: no process owns the chdb data in" in result.stderr
    dead = subprocess.Popen([sys.executable, "-c", "pass"])  # an owner file left by a process that died
    dead.wait()
    stale = OwnerEndpoint(dead.pid, 9, HttpUser("trainwire", "pw"), HttpUser("trainwire_ro", "pw", read_only=True))
    stale.write(tmp_path)
    result = trainwire_db_endpoint(tmp_path)
    assert result.exit_code == 1 and "no process owns the chdb data in" in result.stderr
