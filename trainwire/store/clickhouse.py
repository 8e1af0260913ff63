"""The ClickHouse store: a ClickHouse server over HTTP, or chdb in-process, through clickhouse-connect.

:func:`open_store` picks the mode from :class:`~trainwire.config.Settings`:

- ``clickhouse`` set (``http(s)://user:password@host:port/database``): a server;
- otherwise chdb on ``{data_dir}/clickhouse``. chdb lets one process own a data directory, so
  the first process to open it becomes the *owner*: it holds ``{data_dir}/clickhouse.lock`` and
  serves ClickHouse's own HTTP interface on a loopback port (:mod:`trainwire.store.chdb_http`),
  written with its users' random passwords to ``{data_dir}/clickhouse.owner.json``
  (:class:`OwnerEndpoint`). A second process on the same data directory (``trainwire sql`` while a
  worker runs) gets an :class:`OwnerClientStore`: clickhouse-connect's HTTP client on that
  endpoint, as for a server; any other ClickHouse client (curl, JDBC, Grafana) can use it too
  (``trainwire db endpoint``). A long-running process gets a :class:`SharedStore` instead, which
  owns chdb whenever the owner goes away: a worker (``own_within_s``) when the owner keeps the data directory, a reader
  (:func:`open_reader`) always.

All modes offer the same methods. Query results come back as Arrow tables; inserts go in as
Arrow tables (``insert_arrow``), one per event type per batch, never row by row.
"""

from __future__ import annotations

import base64
import fcntl
import http.client
import json
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit

import pyarrow as pa

from trainwire.config import Settings, mask_secrets
from trainwire.errors import StoreError
from trainwire.events import Event
from trainwire.private_files import open_private, private_dir, replace_private
from trainwire.store.chdb_http import HAND_OVER_PATH, ChdbHttpServer, HttpUser
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
        self._call("command", f"CREATE DATABASE IF NOT EXISTS `{database}`")
        client.database = database

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call the client's ``method``, its failures as :class:`StoreError`."""
        from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

        with self._lock:
            try:
                return getattr(self._client, method)(*args, **kwargs)
            except OperationalError as exc:
                raise StoreError(f"{self.description}: {_first_line(exc)}", retriable=True) from exc
            except ClickHouseError as exc:
                raise StoreError(f"{self.description}: {_first_line(exc)}") from exc

    def query_arrow(self, sql: str, parameters: dict[str, Any] | None = None) -> pa.Table:
        return self._call("query_arrow", sql, parameters=parameters)

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        return self._call("command", sql, parameters=parameters)

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        self._call("insert_arrow", table, data)

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
    parts = urlsplit(url)
    database = parts.path.strip("/") or DEFAULT_DATABASE
    secure = parts.scheme == "https"
    user = HttpUser(unquote(parts.username or "default"), unquote(parts.password or ""))
    port = parts.port or (8443 if secure else 8123)
    client = _http_client(parts.hostname or "localhost", port, user, secure=secure, compress="lz4")
    return ClientStore(client, database, f"ClickHouse {parts.hostname}:{parts.port}/{database}")


def _http_client(host: str, port: int, user: HttpUser, *, secure: bool, compress: bool | str) -> Any:
    """clickhouse-connect's HTTP client on a ClickHouse server (or a chdb owner's endpoint).

    A refused login or an unreachable server is a :class:`StoreError` that says which (the second
    retriable).
    """
    import clickhouse_connect
    from clickhouse_connect.driver.exceptions import ClickHouseError

    try:
        return clickhouse_connect.get_client(
            host=host,
            port=port,
            username=user.name,
            password=user.password,
            secure=secure,
            compress=compress,
            autogenerate_session_id=False,  # a store keeps no state between statements
        )
    except (ClickHouseError, OSError) as exc:
        if _is_login_refused(exc):
            raise StoreError(
                f"ClickHouse at {host}:{port} refused the login of user {user.name!r}: "
                f"{_first_line(exc)} (check the user and password in TRAINWIRE_CLICKHOUSE or --clickhouse)"
            ) from exc
        raise StoreError(f"ClickHouse at {host}:{port} is unreachable: {_first_line(exc)}", retriable=True) from exc


_LOGIN_REFUSED = re.compile(r"\bcode:? (?:516|192|193|194)\b|AUTHENTICATION_FAILED|REQUIRED_PASSWORD", re.IGNORECASE)
"""ClickHouse's errors for a refused login: 516 AUTHENTICATION_FAILED, 192 UNKNOWN_USER, 193 WRONG_PASSWORD,
194 REQUIRED_PASSWORD."""


def _is_login_refused(exc: BaseException) -> bool:
    """Whether a client error is ClickHouse refusing the user or password (not an unreachable server)."""
    return bool(_LOGIN_REFUSED.search(str(exc)))


_LOCK_FILE = "clickhouse.lock"
_OWNER_FILE = "clickhouse.owner.json"
_ENDPOINT_FILE = "clickhouse.endpoint.json"
"""The endpoint's port and users, kept after its owner exits so the next owner serves the same ones."""
_INSERTS_DIR = "clickhouse.inserts"
"""Where the owner's endpoint keeps an insert's data while chdb reads it (private, emptied after each)."""

READ_WRITE_USER = "trainwire"
READ_ONLY_USER = "trainwire_ro"


@dataclass(frozen=True)
class OwnerEndpoint:
    """Where and how to reach the owner of an embedded data directory: its owner file.

    The owner serves ClickHouse's HTTP interface (:mod:`trainwire.store.chdb_http`) on
    ``127.0.0.1:port`` to two users with random passwords: ``trainwire`` (reads and writes) and
    ``trainwire_ro`` (``readonly=1``, for dashboards). The file is ``0600``: only the data
    directory's owner can read the passwords. The port and users are made once per data directory
    (``clickhouse.endpoint.json``, also ``0600``): every later owner serves the same ones, on the
    same port unless another program took it, so a dashboard or DBeaver set up once keeps working.
    """

    pid: int
    port: int
    user: HttpUser
    read_only_user: HttpUser

    @property
    def url(self) -> str:
        """The endpoint's base URL (no credentials)."""
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def read(cls, data_dir: Path, name: str = _OWNER_FILE) -> OwnerEndpoint:
        """The owner file of ``data_dir`` (or another file ``name`` written by :meth:`write`);
        OSError, ValueError or KeyError if there is none readable."""
        owner = json.loads((data_dir / name).read_text())
        return cls(
            pid=int(owner["pid"]),
            port=int(owner["port"]),
            user=HttpUser(str(owner["user"]), str(owner["password"])),
            read_only_user=HttpUser(str(owner["read_only_user"]), str(owner["read_only_password"]), read_only=True),
        )

    def write(self, data_dir: Path, name: str = _OWNER_FILE) -> None:
        """Write the owner file (``0600``; or the file ``name``), replacing any left by an owner that died."""
        owner = {
            "pid": self.pid,
            "port": self.port,
            "user": self.user.name,
            "password": self.user.password,
            "read_only_user": self.read_only_user.name,
            "read_only_password": self.read_only_user.password,
        }
        replace_private(data_dir / name, json.dumps(owner).encode(), fsync=False)


def running_owner(data_dir: Path) -> OwnerEndpoint | None:
    """The endpoint of the process that owns ``data_dir``'s chdb now; None if no process does.

    An owner file left by an owner that was killed is not one: its process is gone, or its port
    does not answer ``/ping``.
    """
    try:
        endpoint = OwnerEndpoint.read(data_dir)
        os.kill(endpoint.pid, 0)  # raises if that process is gone
        with urllib.request.urlopen(endpoint.url + "/ping", timeout=5) as response:
            answered = response.read() == b"Ok.\n"
    except (OSError, ValueError, KeyError, http.client.HTTPException):
        return None
    return endpoint if answered else None


def endpoint_instructions(endpoint: OwnerEndpoint) -> str:
    """How to reach ``endpoint`` from other ClickHouse clients: URL, users, and examples to paste."""
    user, read_only = endpoint.user, endpoint.read_only_user
    host, port, database = "127.0.0.1", endpoint.port, DEFAULT_DATABASE
    return f"""ClickHouse HTTP interface of the process owning chdb (pid {endpoint.pid}):
  URL        {endpoint.url}   database {database}
  read-write user {user.name}  password {user.password}
  read-only  user {read_only.name}  password {read_only.password}   (dashboards: no DDL, no inserts)

curl:
  curl -u '{read_only.name}:{read_only.password}' '{endpoint.url}/?default_format=PrettyCompact' \\
    --data-binary 'SELECT run_id, count() FROM interactions FINAL GROUP BY run_id'

clickhouse-connect (Python):
  clickhouse_connect.get_client(host="{host}", port={port}, username="{read_only.name}",
                                password="{read_only.password}", database="{database}")

JDBC (DBeaver and other tools, ClickHouse's driver):
  jdbc:clickhouse://{host}:{port}/{database}   user {read_only.name}, password {read_only.password}

The next owner of this data directory serves the same port and passwords (unless another program
took the port: then run this again)."""


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
                return OwnerClientStore.connect(data_dir)
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
        endpoint = OwnerEndpoint.read(data_dir)
        login = base64.b64encode(f"{endpoint.user.name}:{endpoint.user.password}".encode()).decode()
        request = urllib.request.Request(
            endpoint.url + HAND_OVER_PATH, data=b"", method="POST", headers={"Authorization": f"Basic {login}"}
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
        holder = _describe_process(OwnerEndpoint.read(data_dir).pid)
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
    """chdb owned by this process, also serving ClickHouse's HTTP interface to other processes.

    chdb keeps session state (the current database) per thread, so this process's own calls run
    on one dedicated thread, whichever thread makes them; the endpoint's requests run on handles
    of their own (see :mod:`trainwire.store.chdb_http`).
    """

    def __init__(self, data_dir: Path, lock: IO[bytes], on_hand_over: Callable[[], None] | None = None):
        self._chdb_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trainwire-chdb")
        path = data_dir / "clickhouse"
        try:
            client = self._chdb_thread.submit(_chdb_client, path).result()
        except Exception as exc:
            self._chdb_thread.shutdown()
            raise StoreError(f"cannot open chdb at {path}: {_first_line(exc)}") from exc
        super().__init__(client, DEFAULT_DATABASE, f"chdb {path}")
        self.data_dir = data_dir
        self._lock_file = lock
        try:  # the port and users of the previous owner, so that clients set up for it go on working
            last = OwnerEndpoint.read(data_dir, _ENDPOINT_FILE)
            user, read_only_user, port = last.user, last.read_only_user, last.port
        except (OSError, ValueError, KeyError):
            user, read_only_user, port = HttpUser.new(READ_WRITE_USER), HttpUser.new(READ_ONLY_USER, read_only=True), 0
        self._server = ChdbHttpServer(
            path,
            [user, read_only_user],
            database=DEFAULT_DATABASE,
            temp_dir=private_dir(data_dir / _INSERTS_DIR),
            port=port,
            on_hand_over=on_hand_over,
        )
        self.endpoint = OwnerEndpoint(os.getpid(), self._server.port, user, read_only_user)
        """Where other processes and tools reach this owner (also in the owner file)."""
        self.endpoint.write(data_dir, _ENDPOINT_FILE)
        self.endpoint.write(data_dir)

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._chdb_thread.submit(super()._call, method, *args, **kwargs).result()

    def close(self) -> None:
        if self._lock_file.closed:
            return
        self._server.close()
        (self.data_dir / _OWNER_FILE).unlink(missing_ok=True)
        self._chdb_thread.submit(self._client.close).result()
        self._chdb_thread.shutdown()
        fcntl.flock(self._lock_file, fcntl.LOCK_UN)
        self._lock_file.close()


def _chdb_client(path: Path) -> Any:
    """A chdb session on ``path``."""
    import clickhouse_connect

    return clickhouse_connect.get_client(interface="chdb", path=str(path))


class OwnerClientStore(Store):
    """A second process's store: clickhouse-connect's HTTP client on the chdb owner's endpoint.

    The endpoint and its password come from the owner file. After a connection failure or a
    refused login (the owner died, or a new owner answers at that port), the next call reads the
    owner file again, so a new owner of the same data directory is found without reconnecting by
    hand.
    """

    def __init__(self, data_dir: Path, endpoint: OwnerEndpoint):
        self.data_dir = data_dir
        self.database = DEFAULT_DATABASE
        self.endpoint = endpoint
        self._lock = threading.RLock()
        self._store: ClientStore | None = None
        """The client of the current owner; None until the first call and after a failure."""
        self._stale = False
        """True after a failure: read the owner file again before the next call."""

    @property
    def owner_pid(self) -> int:
        """The pid of the owner this store talks to (or last talked to)."""
        return self.endpoint.pid

    @classmethod
    def connect(cls, data_dir: Path, wait_s: float = 10.0) -> OwnerClientStore:
        """Find the owner of ``data_dir``'s chdb (waiting for it to finish starting)."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return cls(data_dir, OwnerEndpoint.read(data_dir))
            except (OSError, ValueError, KeyError):
                if time.monotonic() >= deadline:
                    raise StoreError(
                        f"chdb at {data_dir / 'clickhouse'} is owned by another process that does not answer "
                        f"(no readable {data_dir / _OWNER_FILE}); stop that process or use another data directory"
                    ) from None
                time.sleep(0.1)

    def _client_store(self) -> ClientStore:
        if self._store is not None:
            return self._store
        if self._stale:
            try:
                self.endpoint = OwnerEndpoint.read(self.data_dir)
            except (OSError, ValueError, KeyError):
                raise StoreError(
                    f"no process answers for chdb at {self.data_dir / 'clickhouse'} (the owner, pid {self.owner_pid}, "
                    f"is gone and {self.data_dir / _OWNER_FILE} is not readable)",
                    retriable=True,
                ) from None
            self._stale = False
        client = _http_client("127.0.0.1", self.endpoint.port, self.endpoint.user, secure=False, compress=False)
        self._store = ClientStore(client, DEFAULT_DATABASE, f"chdb owner {self.endpoint.url}")
        return self._store

    def _call(self, method: str, *args: Any) -> Any:
        with self._lock:
            try:
                return getattr(self._client_store(), method)(*args)
            except StoreError as exc:
                refused = _is_login_refused(exc)
                if not (exc.retriable or refused):
                    raise
                self._stale = True
                store, self._store = self._store, None
                if store is not None:
                    store.close()
                what = "refused the login" if refused else "did not answer"
                raise StoreError(
                    f"the process owning chdb (pid {self.owner_pid}) {what}: {exc}", retriable=True
                ) from exc.__cause__

    def query_arrow(self, sql: str, parameters: dict[str, Any] | None = None) -> pa.Table:
        return self._call("query_arrow", sql, parameters)

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        return self._call("command", sql, parameters)

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        self._call("insert_arrow", table, data)

    def close(self) -> None:
        with self._lock:
            store, self._store = self._store, None
        if store is not None:
            store.close()


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
                    self._current = OwnerClientStore.connect(self.data_dir, wait_s=self._NEW_OWNER_WAIT_S)
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
                gone = isinstance(store, OwnerClientStore) and isinstance(exc, StoreError) and exc.retriable
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
