"""The ClickHouse store: a ClickHouse server over HTTP, or chdb in-process, through clickhouse-connect.

:func:`open_store` picks the mode from :class:`~trainwire.config.Settings`:

- ``clickhouse`` set (``http(s)://user:password@host:port/database``): a server;
- otherwise chdb on ``{data_dir}/clickhouse``. chdb lets one process own a data directory, so
  the first process to open it becomes the *owner*: it holds ``{data_dir}/clickhouse.lock`` and
  serves queries for other processes on a loopback port (written, with a secret token, to
  ``{data_dir}/clickhouse.owner.json``). A second process on the same data directory (``trainwire
  sql`` while a worker runs) gets a :class:`RemoteStore` that sends its statements to the owner.
  A long-running process gets a :class:`SharedStore` instead, which owns chdb whenever the owner
  goes away: a worker (``own_within_s``) when the owner keeps the data directory, a reader
  (:func:`open_reader`) always.

All modes offer the same methods. Query results come back as Arrow tables; inserts go in as
Arrow tables (``insert_arrow``), one per event type per batch, never row by row.
"""

from __future__ import annotations

import fcntl
import http.client
import json
import logging
import os
import re
import secrets
import threading
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit

import pyarrow as pa

from trainwire.config import Settings, mask_secrets
from trainwire.errors import StoreError
from trainwire.events import Event
from trainwire.private_files import open_private, private_dir, replace_private
from trainwire.store.schema import events_to_arrow

logger = logging.getLogger("trainwire.store")

DEFAULT_DATABASE = "trainwire"

NOT_STORED_HINT = (
    "Events published by `trainwire import` or a training run are on the bus until a worker stores them:"
    " run `trainwire worker --until-idle 10` (with the same --kafka/--data-dir)"
)
"""What to tell a user who finds no events in the store (a reader adds what to do afterwards)."""


class Store(ABC):
    """Statements, queries and Arrow inserts against one ClickHouse database."""

    database: str

    @abstractmethod
    def query_arrow(self, sql: str, parameters: dict[str, Any] | None = None) -> pa.Table:
        """Run a query; the result as an Arrow table."""

    @abstractmethod
    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        """Run a statement (DDL, ``INSERT ... SELECT``, a scalar ``SELECT``) and return its summary."""

    @abstractmethod
    def insert_arrow(self, table: str, data: pa.Table) -> None:
        """Insert an Arrow table into ``table`` in one statement."""

    def close(self) -> None:  # noqa: B027 - nothing to release by default
        """Release the connection (and, for the chdb owner, the data directory)."""

    def query_rows(self, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a query; the result as a list of dicts."""
        return self.query_arrow(sql, parameters).to_pylist()

    def insert_events(self, events: Iterable[Event]) -> int:
        """Insert events, one Arrow batch per event type; returns how many rows were written."""
        by_type: dict[type, list[Event]] = {}
        for event in events:
            by_type.setdefault(type(event.payload), []).append(event)
        for payload_cls, batch in by_type.items():
            self.insert_arrow(payload_cls.TOPIC, events_to_arrow(payload_cls, batch))
        return sum(len(batch) for batch in by_type.values())

    def migrate(self) -> list[str]:
        """Apply the schema migrations not applied yet; returns the names applied now."""
        from trainwire.store.migrations import apply_migrations

        return apply_migrations(self)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ClientStore(Store):
    """A clickhouse-connect client (HTTP or chdb), serialized by a lock so threads may share it."""

    def __init__(self, client: Any, database: str, description: str):
        self._client = client
        self.database = database
        self.description = description
        self._lock = threading.RLock()
        self._call(client.command, f"CREATE DATABASE IF NOT EXISTS `{database}`")
        self._call(setattr, client, "database", database)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

        with self._lock:
            try:
                return fn(*args, **kwargs)
            except OperationalError as exc:
                raise StoreError(f"{self.description}: {_first_line(exc)}", retriable=True) from exc
            except ClickHouseError as exc:
                raise StoreError(f"{self.description}: {_first_line(exc)}") from exc

    def query_arrow(self, sql: str, parameters: dict[str, Any] | None = None) -> pa.Table:
        return self._call(self._client.query_arrow, sql, parameters=parameters)

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        return self._call(self._client.command, sql, parameters=parameters)

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        self._call(self._client.insert_arrow, table, data)

    def close(self) -> None:
        with self._lock:
            self._client.close()


def _first_line(exc: BaseException) -> str:
    """The first line of a foreign error's message, credentials masked, for a :class:`StoreError`."""
    text = mask_secrets(str(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --------------------------------------------------------------------------- opening


def open_store(settings: Settings | None = None, *, own_within_s: float | None = None) -> Store:
    """The store ``settings`` point at: a server, the chdb owner, or a client of the owner.

    A long-running process (a worker) passes ``own_within_s`` to wait that long to become the
    owner of the embedded chdb; an owner that is a reader hands it over when asked. An owner that
    keeps it (a notebook's ``open_store()``, a long ``trainwire analyze``) is named in a warning,
    and the statements go through it until it exits, when this process becomes the owner (a
    :class:`SharedStore`).
    """
    settings = settings or Settings.from_env()
    if settings.clickhouse:
        return _open_server(settings.clickhouse)
    return _open_embedded(Path(settings.data_dir), own_within_s)


def _open_server(url: str) -> Store:
    import clickhouse_connect
    from clickhouse_connect.driver.exceptions import ClickHouseError

    parts = urlsplit(url)
    database = parts.path.strip("/") or DEFAULT_DATABASE
    secure = parts.scheme == "https"
    try:
        client = clickhouse_connect.get_client(
            host=parts.hostname or "localhost",
            port=parts.port or (8443 if secure else 8123),
            username=unquote(parts.username or "default"),
            password=unquote(parts.password or ""),
            secure=secure,
            compress="lz4",
        )
    except (ClickHouseError, OSError) as exc:
        where = f"{parts.hostname}:{parts.port}"
        if _is_login_refused(exc):
            raise StoreError(
                f"ClickHouse at {where} refused the login of user {unquote(parts.username or 'default')!r}: "
                f"{_first_line(exc)} (check the user and password in TRAINWIRE_CLICKHOUSE or --clickhouse)"
            ) from exc
        raise StoreError(f"ClickHouse at {where} is unreachable: {_first_line(exc)}") from exc
    return ClientStore(client, database, f"ClickHouse {parts.hostname}:{parts.port}/{database}")


_LOGIN_REFUSED = re.compile(r"\bcode:? (?:516|192|193|194)\b|AUTHENTICATION_FAILED|REQUIRED_PASSWORD", re.IGNORECASE)
"""ClickHouse's errors for a refused login: 516 AUTHENTICATION_FAILED, 192 UNKNOWN_USER, 193 WRONG_PASSWORD,
194 REQUIRED_PASSWORD."""


def _is_login_refused(exc: BaseException) -> bool:
    """Whether a client error is ClickHouse refusing the user or password (not an unreachable server)."""
    return bool(_LOGIN_REFUSED.search(str(exc)))


_LOCK_FILE = "clickhouse.lock"
_OWNER_FILE = "clickhouse.owner.json"
_TOKEN_HEADER = "X-Trainwire-Token"


def _open_embedded(data_dir: Path, own_within_s: float | None, on_hand_over: Callable[[], None] | None = None) -> Store:
    private_dir(data_dir / "clickhouse")  # chdb's own files are out of other users' reach in it
    lock = open_private(data_dir / _LOCK_FILE, "a+b")  # held while this process owns chdb
    deadline = time.monotonic() + (own_within_s or 0.0)
    hands_over: bool | None = None  # the owner's answer to a hand-over request (None: not asked yet)
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if own_within_s is None:
                lock.close()
                return RemoteStore.connect(data_dir)
            if hands_over is None:
                hands_over = _ask_owner_to_hand_over(data_dir)
            if hands_over is False or time.monotonic() >= deadline:
                lock.close()
                return _borrow(data_dir)
            time.sleep(0.1)
    try:
        return EmbeddedStore(data_dir, lock, on_hand_over)
    except Exception:
        lock.close()
        raise


def _ask_owner_to_hand_over(data_dir: Path) -> bool | None:
    """Ask the owner of ``data_dir``'s chdb to hand it over (only a reader's :class:`SharedStore` agrees).

    True: it agreed; False: it keeps the data directory; None: no owner could be asked yet.
    """
    try:
        port, token, _pid = RemoteStore._read_owner(data_dir / _OWNER_FILE)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/hand-over", data=b"{}", method="POST", headers={_TOKEN_HEADER: token}
        )
        with urllib.request.urlopen(request, timeout=5):
            pass
    except urllib.error.HTTPError as exc:
        return False if exc.code == 409 else None
    except (OSError, ValueError, KeyError, http.client.HTTPException):
        return None
    return True


def _borrow(data_dir: Path) -> SharedStore:
    """A worker's store while another process keeps ``data_dir``'s chdb: through it, then its own."""
    try:
        holder = _describe_process(RemoteStore._read_owner(data_dir / _OWNER_FILE)[2])
    except (OSError, ValueError, KeyError):
        holder = "another process"
    logger.warning(
        "trainwire: chdb at %s is held by %s, which keeps it: statements go through that process, "
        "and this one owns chdb once it exits",
        data_dir / "clickhouse",
        holder,
    )
    return SharedStore(data_dir, hands_over=False)


def _describe_process(pid: int) -> str:
    """``pid N (its command line)`` as far as /proc tells."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return f"pid {pid}"
    return f"pid {pid} ({command[:200]})" if command else f"pid {pid}"


class EmbeddedStore(ClientStore):
    """chdb owned by this process, also serving other processes' statements on loopback.

    chdb keeps session state (the current database) per thread, so every call runs on one
    dedicated thread, whichever thread makes it.
    """

    def __init__(self, data_dir: Path, lock: IO[bytes], on_hand_over: Callable[[], None] | None = None):
        self._on_hand_over = on_hand_over
        """Called (on a thread of its own) when a process waiting to own chdb asks for it; None: refuse."""
        self._chdb_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trainwire-chdb")
        path = data_dir / "clickhouse"
        try:
            client = self._chdb_thread.submit(_chdb_client, path).result()
        except Exception as exc:
            self._chdb_thread.shutdown()
            raise StoreError(f"cannot open chdb at {path}: {_first_line(exc)}") from exc
        super().__init__(client, DEFAULT_DATABASE, f"chdb {path}")
        self._read_only_client = self._call(_chdb_client, path, read_only=True)
        """A second chdb session, in ClickHouse's ``readonly=2`` mode, for the owner's ``/query``."""
        self.data_dir = data_dir
        self._lock_file = lock
        self._token = secrets.token_hex(16)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="trainwire-chdb-owner", daemon=True).start()
        owner = {"pid": os.getpid(), "port": self._server.server_address[1], "token": self._token}
        replace_private(data_dir / _OWNER_FILE, json.dumps(owner).encode(), fsync=False)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return self._chdb_thread.submit(super()._call, fn, *args, **kwargs).result()

    def query_arrow_read_only(self, sql: str, parameters: dict[str, Any] | None = None) -> pa.Table:
        """:meth:`query_arrow` for a query that may neither write nor change the schema.

        It runs in a chdb session of its own in ClickHouse's ``readonly=2`` mode (reads and
        settings only), which refuses anything else naming READONLY, and cannot be left.
        """
        return self._call(self._read_only_client.query_arrow, sql, parameters=parameters)

    def close(self) -> None:
        if self._lock_file.closed:
            return
        self._server.shutdown()
        self._server.server_close()
        (self.data_dir / _OWNER_FILE).unlink(missing_ok=True)
        self._chdb_thread.submit(self._read_only_client.close).result()
        self._chdb_thread.submit(self._client.close).result()
        self._chdb_thread.shutdown()
        fcntl.flock(self._lock_file, fcntl.LOCK_UN)
        self._lock_file.close()


def _chdb_client(path: Path, read_only: bool = False) -> Any:
    """A chdb session on ``path``; with ``read_only``, in ``readonly=2`` mode on trainwire's database."""
    import clickhouse_connect

    client = clickhouse_connect.get_client(interface="chdb", path=str(path))
    if read_only:
        client.database = DEFAULT_DATABASE
        client.command("SET readonly = 2")
    return client


OWNER_IDLE_TIMEOUT_S = 30.0
"""How long the owner's endpoint waits for a client that sends nothing before closing its connection."""


def _handler_for(store: EmbeddedStore) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = OWNER_IDLE_TIMEOUT_S  # an idle or stalled connection gives its thread back

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            token = self.headers.get(_TOKEN_HEADER, "").encode("utf-8", "surrogatepass")
            if not secrets.compare_digest(token, store._token.encode()):
                self._reply(403, b'{"error": "bad token"}', "application/json")
                return
            try:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            except ValueError:
                self._reply(400, b'{"error": "bad Content-Length"}', "application/json")
                return
            except OSError:  # the client stalled past the timeout or went away mid-request
                self.close_connection = True
                return
            if self.path == "/hand-over":
                if store._on_hand_over is None:
                    self._reply(409, b'{"error": "this owner keeps the data directory"}', "application/json")
                else:
                    self._reply(202, b"{}", "application/json")
                    threading.Thread(target=store._on_hand_over, name="trainwire-chdb-hand-over").start()
                return
            try:
                if self.path == "/insert":
                    table = self.headers["X-Trainwire-Table"]
                    store.insert_arrow(table, pa.ipc.open_stream(body).read_all())
                    self._reply(200, b"{}", "application/json")
                    return
                request = json.loads(body)
                if self.path == "/query":
                    result = store.query_arrow_read_only(request["sql"], request.get("parameters"))
                    sink = pa.BufferOutputStream()
                    with pa.ipc.new_stream(sink, result.schema) as writer:
                        writer.write_table(result)
                    self._reply(200, sink.getvalue().to_pybytes(), "application/vnd.apache.arrow.stream")
                elif self.path == "/command":
                    result = store.command(request["sql"], request.get("parameters"))
                    self._reply(200, json.dumps({"result": _jsonable(result)}).encode(), "application/json")
                else:
                    self._reply(404, b'{"error": "no such endpoint"}', "application/json")
            except StoreError as exc:  # 503: chdb failed for now, the caller retries; 400: refused for good
                self._reply(503 if exc.retriable else 400, json.dumps({"error": str(exc)}).encode(), "application/json")
            except (ValueError, KeyError, TypeError, pa.ArrowException) as exc:
                self._reply(400, json.dumps({"error": str(exc)}).encode(), "application/json")

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)


class RemoteStore(Store):
    """Sends statements to the process that owns an embedded chdb data directory.

    The owner's port and token come from its owner file. After a connection failure (the owner
    died, or another process now answers at that port), the next call reads the owner file
    again, so a new owner of the same data directory is found without reconnecting by hand.
    """

    def __init__(self, data_dir: Path, port: int, token: str, owner_pid: int):
        self.data_dir = data_dir
        self.database = DEFAULT_DATABASE
        self._use_owner(port, token, owner_pid)
        self._stale = False
        """True after a connection failure: read the owner file again before the next call."""

    def _use_owner(self, port: int, token: str, owner_pid: int) -> None:
        self.owner_pid = owner_pid
        self._url = f"http://127.0.0.1:{port}"
        self._token = token

    @staticmethod
    def _read_owner(path: Path) -> tuple[int, str, int]:
        """(port, token, pid) from an owner file; OSError, ValueError or KeyError if unreadable."""
        owner = json.loads(path.read_text())
        return int(owner["port"]), str(owner["token"]), int(owner["pid"])

    @classmethod
    def connect(cls, data_dir: Path, wait_s: float = 10.0) -> RemoteStore:
        """Find the owner of ``data_dir``'s chdb (waiting for it to finish starting)."""
        path = data_dir / _OWNER_FILE
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return cls(data_dir, *cls._read_owner(path))
            except (OSError, ValueError, KeyError):
                if time.monotonic() >= deadline:
                    raise StoreError(
                        f"chdb at {data_dir / 'clickhouse'} is owned by another process that does not answer "
                        f"(no readable {path}); stop that process or use another data directory"
                    ) from None
                time.sleep(0.1)

    def _refresh_owner(self) -> None:
        """Read the owner file again (after a connection failure: the owner may have been replaced)."""
        path = self.data_dir / _OWNER_FILE
        try:
            self._use_owner(*self._read_owner(path))
        except (OSError, ValueError, KeyError):
            raise StoreError(
                f"no process answers for chdb at {self.data_dir / 'clickhouse'} (the owner, pid {self.owner_pid}, "
                f"is gone and {path} is not readable)",
                retriable=True,
            ) from None
        self._stale = False

    def _post(self, endpoint: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
        if self._stale:
            self._refresh_owner()
        request = urllib.request.Request(
            self._url + endpoint, data=body, method="POST", headers={_TOKEN_HEADER: self._token, **(headers or {})}
        )
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 403:  # the token is not the one this process answers to: a new owner, say
                self._stale = True
                raise StoreError(
                    f"the process at {self._url} refused the login (the token of {self.data_dir / _OWNER_FILE}, "
                    f"pid {self.owner_pid}): it is not, or no longer, the owner of chdb",
                    retriable=True,
                ) from None
            try:
                message = json.loads(exc.read()).get("error", str(exc))
            except ValueError:
                message = str(exc)
            raise StoreError(message, retriable=exc.code == 503) from None
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, or cut off mid-reply
            self._stale = True
            raise StoreError(
                f"the process owning chdb (pid {self.owner_pid}) did not answer: {exc}", retriable=True
            ) from exc

    def query_arrow(self, sql: str, parameters: dict[str, Any] | None = None) -> pa.Table:
        body = self._post("/query", json.dumps({"sql": sql, "parameters": parameters}, default=str).encode())
        return pa.ipc.open_stream(body).read_all()

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        body = self._post("/command", json.dumps({"sql": sql, "parameters": parameters}, default=str).encode())
        return json.loads(body)["result"]

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, data.schema) as writer:
            writer.write_table(data)
        self._post("/insert", sink.getvalue().to_pybytes(), {"X-Trainwire-Table": table})


# --------------------------------------------------------------------------- readers


def open_reader(settings: Settings | None = None) -> Store:
    """The store for a long-running reader (the web UI) that must never keep a worker from storing.

    A server: the same as :func:`open_store`. The embedded chdb: a :class:`SharedStore` that hands
    it over.
    """
    settings = settings or Settings.from_env()
    if settings.clickhouse:
        return _open_server(settings.clickhouse)
    return SharedStore(Path(settings.data_dir), hands_over=True)


class SharedStore(Store):
    """The embedded chdb for a long-running process: through its owner, or owning it when there is none.

    With no owner, this process becomes the owner (serving other processes as any owner does).
    When the owner it goes through goes away, the next call owns the data directory (or finds
    whoever does). With ``hands_over`` (a reader: the web UI), it hands the data directory over as
    soon as a process waiting to own it (a worker) asks: it closes chdb, then reads through the
    new owner. A call that meets a hand-over or the owner's exit midway is made again once, on
    the store that took over.
    """

    _NEW_OWNER_WAIT_S = 30.0
    """After handing over: how long to wait for the new owner to answer before owning again."""

    def __init__(self, data_dir: Path, *, hands_over: bool):
        self.data_dir = data_dir
        self.database = DEFAULT_DATABASE
        self.hands_over = hands_over
        self._lock = threading.Lock()
        self._current: Store | None = None
        self._handed_over = False
        self._closed = False

    def _store(self) -> Store:
        with self._lock:
            if self._closed:
                raise StoreError(f"the store of chdb at {self.data_dir / 'clickhouse'} is closed")
            if self._current is None:
                if self._handed_over:  # wait for the process that asked, instead of taking it back
                    self._handed_over = False
                    self._current = RemoteStore.connect(self.data_dir, wait_s=self._NEW_OWNER_WAIT_S)
                else:
                    self._current = _open_embedded(self.data_dir, None, self._hand_over if self.hands_over else None)
            return self._current

    def _hand_over(self) -> None:
        with self._lock:
            store, self._current = self._current, None
            self._handed_over = isinstance(store, EmbeddedStore)
        if store is not None:
            store.close()

    def _call(self, method: str, *args: Any) -> Any:
        store = self._store()
        try:
            return getattr(store, method)(*args)
        except (StoreError, RuntimeError) as exc:  # RuntimeError: chdb closed by a hand-over midway
            with self._lock:
                replaced = self._current is not store
                gone = isinstance(store, RemoteStore) and isinstance(exc, StoreError) and exc.retriable
                if gone and not replaced:  # the owner went away: own it, or find the next owner
                    self._current = None
            if not (replaced or gone):
                raise
        return getattr(self._store(), method)(*args)

    @property
    def owns(self) -> bool:
        """True while this process owns the data directory."""
        return isinstance(self._current, EmbeddedStore)

    def query_arrow(self, sql: str, parameters: dict[str, Any] | None = None) -> pa.Table:
        return self._call("query_arrow", sql, parameters)

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        return self._call("command", sql, parameters)

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        self._call("insert_arrow", table, data)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            store, self._current = self._current, None
        if store is not None:
            store.close()
