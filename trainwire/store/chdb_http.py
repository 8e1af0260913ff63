"""ClickHouse's HTTP interface, answered by chdb: how other processes and tools reach the chdb owner.

The process that owns an embedded data directory (see :mod:`trainwire.store.clickhouse`) serves
this on loopback, so anything that speaks to a ClickHouse server over HTTP works against it:
clickhouse-connect (what trainwire's own second processes use), the JDBC driver (DBeaver),
Grafana's ClickHouse plugin, ``curl``. It is the subset of the interface those clients use:

- ``GET``/``POST /`` with the query in the ``query`` parameter, the body, or both (the parameter
  first, the body then holds an ``INSERT``'s data: ``INSERT INTO t FORMAT CSV`` + rows); a
  ``multipart/form-data`` body with ``query`` and ``param_*`` fields; ``/ping`` and ``/`` with no
  query answer ``Ok.``;
- ``database``, ``default_format`` (or ``X-ClickHouse-Database``/``X-ClickHouse-Format``),
  ``param_<name>`` for ``{name:Type}`` placeholders, ``query_id``; any other parameter is a setting;
- every format chdb reads and writes (Native, RowBinary, Arrow, Parquet, JSON..., CSV, TSV);
- request ``Content-Encoding`` gzip, deflate, zstd, lz4 (frames, as clickhouse-connect sends them),
  br when brotli is installed; the response compressed the same ways with
  ``enable_http_compression=1`` and an ``Accept-Encoding`` naming one; ClickHouse's own block
  compression with ``compress=1`` (the response, as the JDBC driver asks by default) and
  ``decompress=1`` (the body), see :mod:`trainwire.store.native_compression`;
- users by basic auth, ``X-ClickHouse-User``/``X-ClickHouse-Key`` or ``user``/``password``
  parameters; a read-only user runs with ``readonly=1`` (no DDL, no insert, no setting changed:
  refused with ``Code: 164 ... (READONLY)``), and ``GET`` runs with ``readonly=2`` as ClickHouse does;
- errors as ClickHouse sends them: the HTTP status of the error code, ``X-ClickHouse-Exception-Code``
  and a ``Code: N. DB::Exception: ...`` body; ``X-ClickHouse-Summary``, ``-Query-Id``, ``-Format``,
  ``-Timezone`` and ``-Server-Display-Name`` on success.

Concurrency: chdb keeps session state (``USE``, ``SET``, ``readonly``) per connection handle, and
opening a handle on the process's engine costs about a millisecond. So every request runs on a
handle of its own, opened for it and closed after it: its user's ``readonly``, database and settings
are set on that handle only, requests run in parallel (chdb releases the GIL) and cannot see each
other's state, and nothing has to be reset. (One shared handle serialized with a reset after each
request would make every client wait for the slowest query, and a reset that misses a setting
would leak it into the next request.)

Sessions: a request with a ``session_id`` (clickhouse-connect sends one per client) runs on its
session's handle instead, kept between that session's requests until ``session_timeout`` (60 s)
passes idle: its ``SET``, ``USE`` and temporary tables stay, one request at a time (else 373
SESSION_IS_LOCKED), and a request's own ``database`` and settings are put back after it, so they
hold for that query only, as in ClickHouse. A ``GET`` in a session is not made read-only (a
session's ``readonly`` could not be lowered again).
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import logging
import os
import re
import secrets
import socket
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from trainwire.store import native_compression

logger = logging.getLogger("trainwire.store")

IDLE_TIMEOUT_S = 30.0
"""How long the endpoint waits for a client that sends nothing before closing its connection."""

MAX_CONNECTIONS = 512
"""Client connections served at once (a thread each); one more is answered 503, ClickHouse's 202
TOO_MANY_SIMULTANEOUS_QUERIES, and closed, rather than start threads without end."""

HAND_OVER_PATH = "/trainwire/hand-over"
"""trainwire's one path of its own: a process waiting to own chdb asks the owner to hand it over."""


@dataclass(frozen=True)
class HttpUser:
    """A user of the endpoint: its name, its password, and whether it may only read."""

    name: str
    password: str = field(repr=False)
    read_only: bool = False

    @classmethod
    def new(cls, name: str, *, read_only: bool = False) -> HttpUser:
        """A user with a fresh random password."""
        return cls(name, secrets.token_urlsafe(24), read_only)


class ClickHouseHttpError(Exception):
    """An error to answer as ClickHouse does: its code, its name and the message."""

    def __init__(self, code: int, name: str, message: str):
        self.code = code
        self.name = name
        self.message = message
        super().__init__(f"Code: {code}. DB::Exception: {message}. ({name})")


_HTTP_STATUS_OF_CODE = {
    194: 401,  # REQUIRED_PASSWORD
    **dict.fromkeys((164, 192, 193, 497, 516), 403),  # READONLY, UNKNOWN_USER, WRONG_PASSWORD, ACCESS_DENIED, AUTH..
    **dict.fromkeys((60, 81, 46), 404),  # UNKNOWN_TABLE, UNKNOWN_DATABASE, UNKNOWN_FUNCTION
    48: 501,  # NOT_IMPLEMENTED
    243: 503,  # NOT_ENOUGH_SPACE: the client may try again later
    **dict.fromkeys((6, 26, 27, 36, 38, 41, 47, 53, 62, 72, 73, 115, 117, 373, 456, 457), 400),  # parse/bad input
}
"""The HTTP status ClickHouse answers an error code with (HTTPHandler's exceptionCodeToHTTPStatus); else 500."""

_ERROR = re.compile(r"Code: (?P<code>\d+)\. DB::Exception: (?:Code: \d+\. DB::Exception: )*(?P<message>.*)", re.S)
_ERROR_TAIL = re.compile(r"(?:\.? \(version [^)]*\))?\.? \((?P<name>[A-Z0-9_]+)\)\s*$")


def _engine_error(exc: BaseException) -> ClickHouseHttpError:
    """chdb's exception as ClickHouse's ``Code: N. DB::Exception: message. (NAME)``."""
    text = str(exc).strip()
    match = _ERROR.search(text)
    if not match:
        return ClickHouseHttpError(1001, "STD_EXCEPTION", text or type(exc).__name__)
    message = match["message"].strip()
    name = "UNKNOWN_EXCEPTION"
    while tail := _ERROR_TAIL.search(message):  # chdb repeats the name after its own version tail
        name = tail["name"]
        message = message[: tail.start()].rstrip()
    return ClickHouseHttpError(int(match["code"]), name, message)


# --------------------------------------------------------------------------- compression


@dataclass(frozen=True)
class Codec:
    """One HTTP ``Content-Encoding``: how to compress a response, and a decompressor for a body.

    ``new_decompressor()`` gives an object with ``decompress(data)``, ``eof`` and ``unused_data``
    (zlib's, lz4.frame's and zstd's), for one frame; a body may hold several back to back.
    """

    compress: Callable[[bytes], bytes]
    new_decompressor: Callable[[], Any]

    def decompress(self, body: bytes) -> bytes:
        """A whole compressed body back to its data."""
        return b"".join(self.decompress_stream([body]))

    def decompress_stream(self, pieces: Iterable[bytes]) -> Iterator[bytes]:
        """The data of a compressed body as its pieces arrive (frames back to back, as clickhouse-connect
        sends lz4: one per block); ValueError if it is not this codec's or is cut short."""
        decompressor, started = self.new_decompressor(), False
        for piece in pieces:
            while piece:
                if decompressor.eof:
                    decompressor = self.new_decompressor()
                started = True
                if data := decompressor.decompress(piece):
                    yield data
                piece = (decompressor.unused_data or b"") if decompressor.eof else b""
        if started and not decompressor.eof:
            raise ValueError("the compressed body is cut short")


class _BrotliDecompressor:
    """brotli's decompressor with the interface of the others (one stream, no data after it)."""

    def __init__(self) -> None:
        import brotli

        self._decompressor = brotli.Decompressor()
        self.unused_data = b""

    @property
    def eof(self) -> bool:
        return self._decompressor.is_finished()

    def decompress(self, data: bytes) -> bytes:
        return self._decompressor.process(data)


def _codecs() -> dict[str, Codec]:
    """``Content-Encoding`` name -> its :class:`Codec`, for each one installed here."""
    codecs = {
        "gzip": Codec(gzip.compress, lambda: zlib.decompressobj(16 + zlib.MAX_WBITS)),
        "deflate": Codec(zlib.compress, zlib.decompressobj),
    }
    try:
        import lz4.frame

        codecs["lz4"] = Codec(lz4.frame.compress, lz4.frame.LZ4FrameDecompressor)
    except ImportError:
        pass
    try:
        from backports import zstd
    except ImportError:
        try:
            from compression import zstd  # type: ignore[no-redef]  # Python 3.14+
        except ImportError:
            zstd = None  # type: ignore[assignment]
    if zstd is not None:
        codecs["zstd"] = Codec(zstd.compress, zstd.ZstdDecompressor)
    try:
        import brotli

        codecs["br"] = Codec(brotli.compress, _BrotliDecompressor)
    except ImportError:
        pass
    return codecs


CODECS = _codecs()
"""The compression methods the endpoint reads and writes, by ``Content-Encoding`` name."""


def _decoded_body(pieces: Iterable[bytes], encoding: str, block_compressed: bool) -> Iterable[bytes]:
    """A body's data as its pieces arrive, undoing its ``Content-Encoding`` and then ClickHouse's own
    block compression (``decompress=1``)."""
    encoding = encoding.strip().lower()
    if encoding not in ("", "identity"):
        if encoding not in CODECS:
            raise ClickHouseHttpError(36, "BAD_ARGUMENTS", f"Unknown HTTP Content-Encoding: {encoding}")
        pieces = _errors_as(CODECS[encoding].decompress_stream(pieces), 36, "BAD_ARGUMENTS", f" as {encoding}")
    if block_compressed:
        pieces = _errors_as(native_compression.decompress_stream(pieces), 271, "CANNOT_DECOMPRESS", "")
    return pieces


def _errors_as(pieces: Iterator[bytes], code: int, name: str, how: str) -> Iterator[bytes]:
    """The pieces a decompressor yields, its failure as ClickHouse's error ``code``."""
    try:
        yield from pieces
    except ClickHouseHttpError:
        raise
    except Exception as exc:  # each library raises its own error for a corrupt stream
        raise ClickHouseHttpError(code, name, f"Cannot decompress the request body{how}: {exc}") from exc


def _response_encoding(accept_encoding: str) -> str | None:
    """The first method of the client's ``Accept-Encoding`` that the endpoint can write."""
    for item in accept_encoding.split(","):
        name = item.split(";")[0].strip().lower()
        if name in CODECS:
            return name
    return None


# --------------------------------------------------------------------------- requests

_TRANSPORT_PARAMETERS = frozenset(
    {
        "query",
        "database",
        "default_format",
        "query_id",
        "session_id",
        "session_timeout",
        "session_check",
        "user",
        "password",
        "quota_key",
        "compress",
        "decompress",
        "buffer_size",
        "wait_end_of_query",
        "client_protocol_version",
        "role",
        "stacktrace",
    }
)
"""URL parameters that steer the HTTP interface itself; every other one (bar ``param_*``) is a setting."""

_SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_SETTING_VALUE = r"(?:'(?:[^'\\]|\\.|'')*'|[-+\w.]+)"
_CLOSING_SETTINGS = re.compile(
    rf"\bSETTINGS\s+(?P<items>\w+\s*=\s*{_SETTING_VALUE}(?:\s*,\s*\w+\s*=\s*{_SETTING_VALUE})*)"
    r"(?:\s+FORMAT\s+\w+)?\s*;?\s*\Z",
    re.I,
)
_SETTING_ITEM = re.compile(rf"(?P<name>\w+)\s*=\s*(?P<value>{_SETTING_VALUE})")


def _closing_settings(sql: str) -> dict[str, str]:
    """The settings of a ``SETTINGS`` clause that closes ``sql`` (before an optional ``FORMAT``), as
    name -> value (a string literal unquoted); {} when it has none."""
    match = _CLOSING_SETTINGS.search(sql)
    if match is None:
        return {}
    settings = {}
    for item in _SETTING_ITEM.finditer(match["items"]):
        value = item["value"]
        if value.startswith("'"):
            value = re.sub(r"\\(.)|''", lambda escaped: escaped[1] or "'", value[1:-1])
        settings[item["name"]] = value
    return settings


_LEADING_COMMENTS = rb"(?:\s+|--[^\n]*\n|/\*.*?\*/)*"
_INSERT_WITH_FORMAT = re.compile(
    rb"\A" + _LEADING_COMMENTS + rb"INSERT\s+INTO\s+(?P<target>.*?)"
    rb"(?:\s+SETTINGS\s+(?P<settings>.*?))?\s+FORMAT\s+(?P<format>\w+)",
    re.I | re.S,
)
"""``INSERT INTO target [SETTINGS ...] FORMAT name``, the data after it (the first FORMAT word ends it)."""

STATEMENT_SEARCH_BYTES = 1 << 20
"""How far into a body the statement's end is looked for; past it, the body is one SQL text (an INSERT's
data found there is cut out at the end)."""


def _data_start(text: bytes | bytearray, *, complete: bool) -> tuple[int, int] | None:
    """For ``INSERT ... FORMAT f`` + data: where its statement ends and its data starts in ``text``; None if
    ``text`` is not one, or (``complete`` False: more is to come) cannot be told yet."""
    insert = _INSERT_WITH_FORMAT.match(text)
    if insert is None:
        return None
    at = insert.end()  # where ClickHouse's parser starts an INSERT's data: blanks, then one line end
    while at < len(text) and text[at] in b" \t\f":
        at += 1
    at += text[at : at + 1] == b"\r"
    at += text[at : at + 1] == b"\n"
    if at >= len(text) and not complete:  # the format's name or the blanks may go on in the next piece
        return None
    return insert.end(), at


def _split_body(
    query: bytes, pieces: Iterable[bytes], temp_dir: Path, *, read_only: bool = False
) -> tuple[bytes, Path | None]:
    """The request's statement (the ``query`` parameter, then the body) and, for ``INSERT ... FORMAT``, a
    private file in ``temp_dir`` with its data, written as the pieces arrive: a large insert is never
    whole in memory. The caller deletes the file; a full disk is ClickHouse's NOT_ENOUGH_SPACE. A
    ``read_only`` user's insert is refused (READONLY) before any of its data is kept."""
    text, split, data, name = bytearray(query), None, None, None
    try:
        for piece in pieces:
            if data is not None:
                data.write(piece)
                continue
            if query and piece and len(text) == len(query):
                text += b"\n"
            searched = len(text) <= STATEMENT_SEARCH_BYTES
            text += piece
            if searched and (split := _data_start(text, complete=False)):
                data, name = _data_file(temp_dir, read_only)
                data.write(memoryview(text)[split[1] :])
                del text[split[0] :]
        if data is None and (split := _data_start(text, complete=True)):
            data, name = _data_file(temp_dir, read_only)
            data.write(memoryview(text)[split[1] :])
            del text[split[0] :]
        if data is not None:
            data.close()
    except OSError as exc:
        if name is not None:
            Path(name).unlink(missing_ok=True)
        raise ClickHouseHttpError(243, "NOT_ENOUGH_SPACE", f"Cannot buffer the INSERT's data: {exc}") from exc
    except BaseException:
        if name is not None:
            Path(name).unlink(missing_ok=True)
        raise
    finally:
        if data is not None:
            data.close()
    return bytes(text), None if name is None else Path(name)


def _data_file(temp_dir: Path, read_only: bool) -> tuple[Any, str]:
    if read_only:
        raise ClickHouseHttpError(164, "READONLY", "Cannot execute query in readonly mode")
    descriptor, name = tempfile.mkstemp(prefix="insert-", dir=temp_dir)  # mkstemp: 0600
    return os.fdopen(descriptor, "wb"), name


_OUTPUT_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.I)

_CONTENT_TYPES = {
    "JSON": "application/json; charset=UTF-8",
    "JSONCompact": "application/json; charset=UTF-8",
    "JSONEachRow": "application/x-ndjson; charset=UTF-8",
    "CSV": "text/csv; charset=UTF-8; header=absent",
    "CSVWithNames": "text/csv; charset=UTF-8; header=present",
    "TabSeparated": "text/tab-separated-values; charset=UTF-8",
    "TSV": "text/tab-separated-values; charset=UTF-8",
    "TabSeparatedWithNames": "text/tab-separated-values; charset=UTF-8",
    "TSVWithNames": "text/tab-separated-values; charset=UTF-8",
    "Pretty": "text/plain; charset=UTF-8",
}


def _sql_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass
class _Request:
    """One query request, parsed: who sends what, with which settings."""

    user: HttpUser
    method: str
    text: bytes
    """The statement (the ``query`` parameter, a newline, the body), without an INSERT's data."""
    database: str | None
    """The ``database`` parameter (None: the session's current one, or the default)."""
    default_format: str
    parameters: dict[str, str]
    settings: dict[str, str]
    session_id: str | None = None
    session_timeout_s: float = 60.0
    session_check: bool = False
    insert_data: Path | None = None
    """The data of an ``INSERT ... FORMAT``, in a private file."""


@dataclass
class _Reply:
    status: int
    body: bytes
    headers: dict[str, str]


def _identifier(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


@dataclass
class _Session:
    """A ClickHouse HTTP session: a chdb handle kept between requests with the same ``session_id``."""

    handle: Any
    """chdb's connection handle (None while it opens)."""
    expires: float = 0.0
    busy: bool = True
    consistent: bool = True
    """False while a request's database and settings are on the handle, not the session's own."""


class _Sessions:
    """The open sessions, by user and ``session_id``; one request at a time in each (as ClickHouse)."""

    MAX_TIMEOUT_S = 3600.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[tuple[str, str], _Session] = {}

    @contextlib.contextmanager
    def take(self, request: _Request, open_handle: Callable[[], Any]) -> Iterator[_Session]:
        """The request's session, busy while the caller uses it (a new one unless ``session_check``)."""
        key = (request.user.name, str(request.session_id))
        self._close_expired()
        with self._lock:
            session = self._open.get(key)
            if session is not None and session.busy:
                raise ClickHouseHttpError(
                    373, "SESSION_IS_LOCKED", f"Session {request.session_id} is locked by a concurrent client"
                )
            if session is None and request.session_check:
                raise ClickHouseHttpError(372, "SESSION_NOT_FOUND", f"Session {request.session_id} not found")
            opening = session is None
            if session is None:  # held (busy) while its handle opens, so a second request waits its turn
                session = self._open[key] = _Session(handle=None)
            session.busy = True
        if opening:
            try:
                session.handle = open_handle()
            except BaseException:
                with self._lock:
                    del self._open[key]
                raise
        try:
            yield session
        finally:
            timeout = min(max(request.session_timeout_s, 0.0), self.MAX_TIMEOUT_S)
            with self._lock:
                session.busy = False
                session.expires = time.monotonic() + timeout
                if not session.consistent:  # its state is unknown: closed rather than reused
                    del self._open[key]
            if not session.consistent:
                session.handle.close()

    def _close_expired(self) -> None:
        now = time.monotonic()
        with self._lock:
            expired = [key for key, s in self._open.items() if not s.busy and s.expires <= now]
            handles = [self._open.pop(key).handle for key in expired]
        for handle in handles:
            handle.close()

    def close(self) -> None:
        """Close every session (no request runs any more)."""
        with self._lock:
            handles = [session.handle for session in self._open.values() if session.handle is not None]
            self._open.clear()
        for handle in handles:
            handle.close()


class ChdbHttpServer:
    """ClickHouse's HTTP interface on a loopback port, answered by this process's chdb engine.

    ``chdb_path`` is the engine's data path (this process must already have chdb open on it);
    ``users`` may log in; ``database`` is their default database; ``temp_dir`` (private) holds an
    insert's data while chdb reads it; ``port`` is the port to serve on if it is free (0 or taken:
    any free port); ``on_hand_over`` is called on a thread of its own when a
    process waiting to own chdb asks for it (None: refuse, the owner keeps it).
    """

    def __init__(
        self,
        chdb_path: Path,
        users: Sequence[HttpUser],
        *,
        database: str,
        temp_dir: Path,
        port: int = 0,
        on_hand_over: Callable[[], None] | None = None,
    ):
        import chdb

        self._connect = lambda: chdb.connect(str(chdb_path))
        self.users = {user.name: user for user in users}
        self.database = database
        self.temp_dir = temp_dir
        self.on_hand_over = on_hand_over
        probe = self._connect()
        try:
            version, self.timezone, compression = (
                probe.query(
                    "SELECT version(), timezone(), value FROM system.settings WHERE name = 'enable_http_compression'",
                    "TSV",
                )
                .bytes()
                .decode()
                .split()
            )
        finally:
            probe.close()
        self.version = version
        self.http_compression = compression == "1"
        """``enable_http_compression`` where a request does not set it: the engine's, as ``system.settings``
        shows it (clickhouse-connect sends only ``Accept-Encoding`` when that says it is on)."""
        self.display_name = socket.gethostname()
        self._state = threading.Condition()
        """Guards the three below; notified when a request leaves chdb."""
        self._closed = False
        self._running = 0
        """Requests running on chdb now."""
        self._connections: set[socket.socket] = set()
        """Open client connections (kept alive between requests)."""
        self._sessions = _Sessions()
        try:
            self._server = _Server(("127.0.0.1", port), _Handler)
        except OSError:  # the port asked for is taken (by another program): any free one
            self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.endpoint = self
        threading.Thread(target=self._server.serve_forever, name="trainwire-chdb-http", daemon=True).start()

    @property
    def port(self) -> int:
        """The loopback port it answers on."""
        return self._server.server_address[1]

    def close(self) -> None:
        """Stop answering, and return once no request runs on chdb any more.

        Connections kept alive are cut too: after this the process may give up chdb, and no
        client may reach it through this process again.
        """
        self._server.shutdown()
        with self._state:
            self._closed = True
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
            self._state.wait_for(lambda: self._running == 0)
        self._sessions.close()
        self._server.server_close()

    def track(self, connection: socket.socket, *, opened: bool) -> None:
        """Note a client connection opened or closed (cut by :meth:`close`)."""
        with self._state:
            if not opened:
                self._connections.discard(connection)
            elif self._closed:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
            else:
                self._connections.add(connection)

    @contextlib.contextmanager
    def running(self) -> Iterator[bool]:
        """Around a request's work on chdb: False once closed (then the request must not run)."""
        with self._state:
            if self._closed:
                yield False
                return
            self._running += 1
        try:
            yield True
        finally:
            with self._state:
                self._running -= 1
                self._state.notify_all()

    # ----------------------------------------------------------------- authentication

    def authenticate(self, name: str, password: bytes) -> HttpUser:
        """The user ``name`` if ``password`` is its password; ClickHouse's 516 or 194 otherwise."""
        user = self.users.get(name)
        expected = user.password.encode() if user else secrets.token_bytes(16)
        if user is None or not secrets.compare_digest(password, expected):
            if not password and name == "default":
                raise ClickHouseHttpError(194, "REQUIRED_PASSWORD", "default: Authentication failed: password required")
            raise ClickHouseHttpError(
                516,
                "AUTHENTICATION_FAILED",
                f"{name}: Authentication failed: password is incorrect, or there is no user with such name",
            )
        return user

    # ----------------------------------------------------------------- execution

    def execute(self, request: _Request) -> _Reply:
        """Run one request on its chdb handle; ClickHouseHttpError if chdb refuses it.

        Without a session the handle is opened for the request and closed after it. In a session
        it is the session's, and the request's database and settings are put back afterwards (in
        ClickHouse they hold for the one query; ``SET`` and ``USE`` statements stay).
        """
        if request.session_id is None or request.user.read_only:
            handle = self._open_request_handle(request)
            try:
                insert, result, fmt = self._statement(handle, request)
            finally:
                handle.close()
        else:
            with self._sessions.take(request, self._open_session_handle) as session:
                insert, result, fmt = self._in_session(session, request)
        body = result.bytes() or b""
        read_rows, read_bytes = _statistic(result, "rows_read"), _statistic(result, "bytes_read")
        summary = {
            "read_rows": str(read_rows),
            "read_bytes": str(read_bytes),
            # chdb counts an INSERT FROM INFILE's rows as read (and older chdb has no written counts)
            "written_rows": str(_statistic(result, "rows_written") or (read_rows if insert else 0)),
            "written_bytes": str(_statistic(result, "bytes_written") or (read_bytes if insert else 0)),
            "total_rows_to_read": str(read_rows),
            "result_rows": "0" if insert else str(read_rows),
            "result_bytes": str(len(body)),
            "elapsed_ns": str(int(_statistic(result, "elapsed") * 1e9)),
        }
        headers = {"X-ClickHouse-Summary": json.dumps(summary, separators=(",", ":"))}
        if fmt:
            headers["X-ClickHouse-Format"] = fmt
            headers["Content-Type"] = _CONTENT_TYPES.get(fmt, "application/octet-stream")
        else:
            headers["Content-Type"] = "text/plain; charset=UTF-8"
        return _Reply(200, body, headers)

    def _open_request_handle(self, request: _Request) -> Any:
        """A fresh chdb handle for one request: its database and settings, then its user's rights.

        The read-only user runs with ``readonly=1`` (no DDL, no INSERT, no table function such as
        ``file()`` or ``url()``) but may change query settings, as ClickHouse's
        ``changeable_in_readonly`` constraint allows: dashboards need it (Grafana's plugin sets
        ``max_execution_time``; the SQL library's joins end in ``SETTINGS join_use_nulls = 1``). So
        its settings, from the URL and from a ``SETTINGS`` clause closing the query, are set on the
        handle before ``readonly`` (a setting already at its value passes the check). A ``GET`` of
        the read-write user runs with ``readonly=2``, as ClickHouse does.
        """
        handle = self._connect()
        try:
            self._run(handle, f"USE {_identifier(request.database or self.database)}")
            if request.user.read_only:
                query = "" if request.insert_data else request.text.decode(errors="replace")
                settings = {**request.settings, **_closing_settings(query)}
                self._set(handle, {name: value for name, value in settings.items() if name != "readonly"})
                self._run(handle, "SET readonly = 1")
            else:
                if request.method == "GET":
                    self._run(handle, "SET readonly = 2")
                self._set(handle, request.settings)
        except BaseException:
            handle.close()
            raise
        return handle

    def _open_session_handle(self) -> Any:
        """A session's handle (the read-write user's: the read-only user's requests keep no session,
        as a session could hold nothing for it: ``SET`` and temporary tables are refused to it)."""
        handle = self._connect()
        try:
            self._run(handle, f"USE {_identifier(self.database)}")
        except BaseException:
            handle.close()
            raise
        return handle

    def _set(self, handle: Any, settings: dict[str, str]) -> None:
        for name, value in settings.items():
            if not _SETTING_NAME.fullmatch(name):
                raise ClickHouseHttpError(115, "UNKNOWN_SETTING", f"Unknown setting '{name}'")
            self._run(handle, f"SET {name} = {_sql_string(value)}")

    def _in_session(self, session: _Session, request: _Request) -> tuple[bool, Any, str | None]:
        """Run the statement on a session's handle with the request's database and settings, then put
        the session's own back (if that fails, the session is closed: its state is unknown)."""
        handle = session.handle
        database = self._run(handle, "SELECT currentDatabase()", "TSV").bytes().decode().strip()
        names = ", ".join(_sql_string(name) for name in request.settings if _SETTING_NAME.fullmatch(name))
        previous: dict[str, str] = {}  # the session's values of the settings it had changed itself
        if names:
            rows = self._run(
                handle, f"SELECT name, value, changed FROM system.settings WHERE name IN ({names})", "JSONEachRow"
            )
            previous = {
                row["name"]: row["value"] for row in map(json.loads, rows.bytes().splitlines()) if row["changed"]
            }
        applied: list[str] = []
        session.consistent = False
        try:
            if request.database:
                self._run(handle, f"USE {_identifier(request.database)}")
            for name, value in request.settings.items():
                self._set(handle, {name: value})
                applied.append(name)
            return self._statement(handle, request)
        finally:
            with contextlib.suppress(ClickHouseHttpError):  # else the session stays inconsistent: closed
                for name in applied:
                    self._run(handle, f"SET {name} = {_sql_string(previous[name]) if name in previous else 'DEFAULT'}")
                if request.database:
                    self._run(handle, f"USE {_identifier(database)}")
                session.consistent = True

    def _statement(self, handle: Any, request: _Request) -> tuple[bool, Any, str | None]:
        """Run the request's statement: (whether it is an INSERT with data, chdb's result, its output format)."""
        if request.insert_data is not None:
            return True, self._insert(handle, request, request.insert_data), None
        sql = self._text(request.text)
        if not sql.strip():
            raise ClickHouseHttpError(62, "SYNTAX_ERROR", "Empty query")
        stated = _OUTPUT_FORMAT.search(sql)
        fmt = stated.group(1) if stated else request.default_format
        return False, self._run(handle, sql, fmt, request.parameters), fmt

    def _insert(self, handle: Any, request: _Request, data: Path) -> Any:
        """``INSERT ... FORMAT f`` with its data in a file: chdb reads the file."""
        insert = _INSERT_WITH_FORMAT.match(request.text)
        assert insert is not None  # the body was split at this statement's end
        settings = f" SETTINGS {self._text(insert['settings'])}" if insert["settings"] else ""
        sql = (
            f"INSERT INTO {self._text(insert['target'])} FROM INFILE {_sql_string(str(data))}{settings}"
            f" FORMAT {self._text(insert['format'])}"
        )
        return self._run(handle, sql, "TabSeparated", request.parameters)

    @staticmethod
    def _text(sql: bytes) -> str:
        try:
            return sql.decode()
        except UnicodeDecodeError as exc:
            raise ClickHouseHttpError(62, "SYNTAX_ERROR", f"The query is not valid UTF-8: {exc}") from exc

    @staticmethod
    def _run(handle: Any, sql: str, fmt: str = "TabSeparated", parameters: dict[str, str] | None = None) -> Any:
        try:
            return handle.query(sql, fmt, params=parameters or {})
        except Exception as exc:  # chdb raises its own errors with ClickHouse's code in the text
            raise _engine_error(exc) from exc


class _RawBody:
    """A request's body as it comes off the connection (``Content-Length`` or chunked), piece by piece."""

    PIECE_BYTES = 1 << 18
    """The most read at once (what a piece of a compressed body may grow to stays small too)."""

    def __init__(self, stream: Any, headers: Any):
        self._stream = stream
        self._headers = headers
        self._pieces = self._read()
        self.complete = False
        """True once the whole body was read (the connection is at the next request)."""

    def __iter__(self) -> Iterator[bytes]:
        return self._pieces

    def discard_rest(self) -> bool:
        """Read what is left and drop it; False if the body is malformed (OSError if the client went away)."""
        try:
            for _ in self._pieces:
                pass
        except ClickHouseHttpError:
            return False
        return self.complete

    def _read(self) -> Iterator[bytes]:
        if "chunked" in self._headers.get("Transfer-Encoding", "").lower():
            while size := self._chunk_size():
                yield from self._exactly(size)
                self._stream.readline(3)  # the CRLF after the chunk
            while self._stream.readline(65537).strip():  # trailers, up to the blank line
                pass
        else:
            try:
                length = int(self._headers.get("Content-Length", 0))
            except ValueError:
                raise ClickHouseHttpError(27, "CANNOT_PARSE_INPUT", "Malformed Content-Length") from None
            if length < 0:
                raise ClickHouseHttpError(27, "CANNOT_PARSE_INPUT", "Malformed Content-Length")
            yield from self._exactly(length)
        self.complete = True

    def _chunk_size(self) -> int:
        line = self._stream.readline(65537)
        try:
            size = int(line.split(b";")[0].strip(), 16)
        except ValueError:
            size = -1
        if size < 0:
            raise ClickHouseHttpError(27, "CANNOT_PARSE_INPUT", "Malformed chunked request body")
        return size

    def _exactly(self, size: int) -> Iterator[bytes]:
        while size > 0:
            piece = self._stream.read(min(size, self.PIECE_BYTES))
            if not piece:
                raise OSError("the client went away mid-request")
            size -= len(piece)
            yield piece


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    endpoint: ChdbHttpServer

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]):
        self._served = threading.Semaphore(MAX_CONNECTIONS)
        """One slot per connection with a thread of its own."""
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._served.acquire(blocking=False):
            message = (
                f"Code: 202. DB::Exception: Too many connections (more than {MAX_CONNECTIONS})."
                " (TOO_MANY_SIMULTANEOUS_QUERIES)\n"
            )
            head = (
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=UTF-8\r\n"
                f"X-ClickHouse-Exception-Code: 202\r\nConnection: close\r\nContent-Length: {len(message)}\r\n\r\n"
            )
            with contextlib.suppress(OSError):
                request.sendall((head + message).encode())
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started: the slot is free again
            self._served.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._served.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):  # a client that went away: nothing to answer
            return
        logger.exception("trainwire: the chdb owner's endpoint failed on a connection from %s", client_address)


def _statistic(result: Any, name: str) -> float:
    """One of a chdb result's statistics (``rows_read``, ``elapsed``...); 0 where this chdb has none."""
    method = getattr(result, name, None)
    return method() if method is not None else 0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as ClickHouse's clients expect
    server_version = "trainwire-chdb"

    server: _Server

    @property
    def endpoint(self) -> ChdbHttpServer:
        return self.server.endpoint

    def setup(self) -> None:
        self.timeout = IDLE_TIMEOUT_S  # an idle or stalled connection gives its thread back
        super().setup()
        self.endpoint.track(self.connection, opened=True)

    def finish(self) -> None:
        self.endpoint.track(self.connection, opened=False)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """A request http.server cannot parse (request line, version, method, headers), answered as
        ClickHouse answers an error instead of an HTML page; the connection closes after it."""
        self.close_connection = True
        if code == 501:
            error = ClickHouseHttpError(48, "NOT_IMPLEMENTED", message or "Not implemented")
        else:
            error = ClickHouseHttpError(36, "BAD_ARGUMENTS", message or "Bad request")
        self._reply_error(error, str(uuid.uuid4()), status=code)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        url = urlsplit(self.path)
        parameters = dict(parse_qsl(url.query, keep_blank_values=True))
        query_id = parameters.get("query_id") or str(uuid.uuid4())
        body = _RawBody(self.rfile, self.headers)
        insert_data: Path | None = None
        try:
            if url.path == "/ping" or (
                url.path == "/" and self.command in ("GET", "HEAD") and "query" not in parameters
            ):
                if self._finish_body(body):
                    self._reply(_Reply(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"}))
                return
            if url.path not in ("/", HAND_OVER_PATH):
                raise ClickHouseHttpError(48, "NOT_IMPLEMENTED", f"There is no handle {url.path}: use / or /ping")
            user = self.endpoint.authenticate(*self._credentials(parameters))  # before the body is kept anywhere
            if url.path == HAND_OVER_PATH:
                if self._finish_body(body):
                    self._hand_over(user)
                return
            pieces = _decoded_body(body, self.headers.get("Content-Encoding", ""), parameters.get("decompress") == "1")
            if self._is_form():
                self._form_fields(b"".join(pieces), parameters)
                pieces = ()
            query = parameters.get("query", "").encode()
            text, insert_data = _split_body(query, pieces, self.endpoint.temp_dir, read_only=user.read_only)
            with self.endpoint.running() as open_:
                if not open_:  # this process is giving chdb up: the client finds the next owner
                    self.close_connection = True
                    return
                reply = self.endpoint.execute(self._request(user, parameters, text, insert_data))
        except OSError:  # the client stalled past the timeout or went away mid-request
            self.close_connection = True
            return
        except ClickHouseHttpError as exc:
            if self._finish_body(body):
                self._reply_error(exc, query_id)
            return
        except Exception as exc:  # a bug here: answered as ClickHouse answers its own, and logged
            logger.exception("trainwire: the chdb owner's endpoint failed on a request")
            if self._finish_body(body):
                self._reply_error(ClickHouseHttpError(1001, "STD_EXCEPTION", f"{type(exc).__name__}: {exc}"), query_id)
            return
        finally:
            if insert_data is not None:
                insert_data.unlink(missing_ok=True)
        reply.headers["X-ClickHouse-Query-Id"] = query_id
        if parameters.get("compress") == "1" and reply.body:  # ClickHouse's own block compression
            reply.body = native_compression.compress(reply.body)
        accept = self.headers.get("Accept-Encoding", "")
        compressed = parameters.get("enable_http_compression", "1" if self.endpoint.http_compression else "0") == "1"
        encoding = _response_encoding(accept) if compressed else None
        if encoding and reply.body:
            reply.body = CODECS[encoding].compress(reply.body)
            reply.headers["Content-Encoding"] = encoding
        self._reply(reply)

    def _finish_body(self, body: _RawBody) -> bool:
        """Read past what is left of the body (unanswered, it would be read as the next request); if the
        body is malformed the connection closes after the reply. False: the client is gone, answer nothing."""
        try:
            if not body.discard_rest():
                self.close_connection = True
        except OSError:
            self.close_connection = True
            return False
        return True

    def _request(self, user: HttpUser, parameters: dict[str, str], text: bytes, insert_data: Path | None) -> _Request:
        try:
            timeout = float(parameters.get("session_timeout", 60))
        except ValueError:
            raise ClickHouseHttpError(
                36, "BAD_ARGUMENTS", f"Invalid session timeout: {parameters['session_timeout']!r}"
            ) from None
        return _Request(
            user=user,
            method=self.command,
            text=text,
            database=parameters.get("database") or self.headers.get("X-ClickHouse-Database"),
            default_format=parameters.get("default_format") or self.headers.get("X-ClickHouse-Format", "TabSeparated"),
            parameters={k[len("param_") :]: v for k, v in parameters.items() if k.startswith("param_")},
            settings={
                k: v for k, v in parameters.items() if k not in _TRANSPORT_PARAMETERS and not k.startswith("param_")
            },
            session_id=parameters.get("session_id") or None,
            session_timeout_s=timeout,
            session_check=parameters.get("session_check") == "1",
            insert_data=insert_data,
        )

    def _credentials(self, parameters: dict[str, str]) -> tuple[str, bytes]:
        authorization = self.headers.get("Authorization", "")
        if authorization.lower().startswith("basic "):
            try:
                name, _, password = base64.b64decode(authorization[6:].strip(), validate=True).partition(b":")
            except ValueError:
                raise ClickHouseHttpError(516, "AUTHENTICATION_FAILED", "Malformed basic authorization") from None
            return name.decode(errors="replace"), password
        if "X-ClickHouse-User" in self.headers:  # header values arrive latin-1 decoded: back to their bytes
            password = self.headers.get("X-ClickHouse-Key", "").encode("latin-1", errors="replace")
            return self.headers["X-ClickHouse-User"], password
        return parameters.get("user", "default"), parameters.get("password", "").encode()

    def _is_form(self) -> bool:
        return self.headers.get("Content-Type", "").lower().startswith("multipart/form-data")

    def _form_fields(self, body: bytes, parameters: dict[str, str]) -> None:
        """A ``multipart/form-data`` body's ``query`` and ``param_*`` fields moved to ``parameters``."""
        content_type = self.headers.get("Content-Type", "")
        message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if part.get_filename() is not None:
                raise ClickHouseHttpError(48, "NOT_IMPLEMENTED", f"External data ({name}) is not supported here")
            parameters[str(name)] = part.get_payload(decode=True).decode()

    def _hand_over(self, user: HttpUser) -> None:
        if user.read_only:
            raise ClickHouseHttpError(164, "READONLY", f"{user.name}: Cannot hand over chdb in readonly mode")
        if self.endpoint.on_hand_over is None:
            self._reply(_Reply(409, b"this owner keeps the data directory\n", {"Content-Type": "text/plain"}))
            return
        self._reply(_Reply(202, b"Ok.\n", {"Content-Type": "text/plain"}))
        threading.Thread(target=self.endpoint.on_hand_over, name="trainwire-chdb-hand-over").start()

    def _reply_error(self, error: ClickHouseHttpError, query_id: str, status: int | None = None) -> None:
        """``error`` as ClickHouse sends it, with the HTTP status of its code (unless ``status`` is given)."""
        body = f"Code: {error.code}. DB::Exception: {error.message}. ({error.name}) (version {self.endpoint.version})\n"
        headers = {
            "Content-Type": "text/plain; charset=UTF-8",
            "X-ClickHouse-Exception-Code": str(error.code),
            "X-ClickHouse-Query-Id": query_id,
        }
        if self.close_connection:
            headers["Connection"] = "close"
        self._reply(_Reply(status or _HTTP_STATUS_OF_CODE.get(error.code, 500), body.encode(), headers))

    def _reply(self, reply: _Reply) -> None:
        self.send_response(reply.status)
        headers = {
            "X-ClickHouse-Server-Display-Name": self.endpoint.display_name,
            "X-ClickHouse-Timezone": self.endpoint.timezone,
            **reply.headers,
            "Content-Length": str(len(reply.body)),
        }
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)
