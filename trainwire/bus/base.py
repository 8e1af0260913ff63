"""What every bus has: messages, records, the framed file format, and the two roles.

A *transport* delivers batches of :class:`Message` (Kafka, or the embedded local log) and hands
back those it could not deliver: as they are when they may go through later (the bus is down), or
as :class:`Refused` when the bus will never take them (a message over its size limit).
A *consumer* reads :class:`Record` from topics as a member of a consumer group and commits
its position only when told to (after processing: at-least-once).

The embedded log and the producer's spool share one append-only file format: each record is
``[length u32][crc32 u32][body]`` with ``body = [timestamp_ms i64][topic][key][headers][value]``
(strings and byte fields prefixed by their length).

Writers append whole batches under an exclusive ``flock`` (:func:`append_frames`): a write that
fails part way (a full disk) is cut back to its last whole record, so the file holds no half
record. Readers scan under a shared lock (:func:`scan_frames`): a record cut short at the end of
the file while no writer holds the lock was torn (a writer killed mid-write, or a cut that failed
too), and bytes that hold no whole record are skipped to the next readable record and reported
as a :class:`Gap` with their offsets in the file, so nothing after them is held up.
"""

from __future__ import annotations

import os
import struct
import zlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from trainwire.errors import BusError


@dataclass(frozen=True, slots=True)
class Message:
    """One message to publish: topic, key, value and optional headers."""

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class Refused:
    """A message the bus will never take, however often it is sent (it is too large, say), and why."""

    message: Message
    reason: str


@dataclass(frozen=True, slots=True)
class Record:
    """One message as read back, with where it was read from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def location(self) -> str:
        """``topic[partition]@offset``, for error messages."""
        return f"{self.topic}[{self.partition}]@{self.offset}"

    def header(self, name: str) -> bytes | None:
        """The first header called ``name``, or None."""
        return next((v for k, v in self.headers if k == name), None)


class Transport(ABC):
    """Delivers message batches; used from the emitter's background event loop."""

    last_failure: str | None = None
    """Why the last :meth:`send_batch` handed messages back to try again later, for the log."""

    @abstractmethod
    async def start(self) -> None:
        """Connect. Raise :class:`BusError` when the bus cannot be reached."""

    @abstractmethod
    async def send_batch(self, messages: list[Message]) -> list[Message | Refused]:
        """Deliver ``messages``; return those not delivered, in order (empty on success).

        A message returned as it is may be delivered by a later call; one returned as
        :class:`Refused` never will be.
        """

    @abstractmethod
    async def stop(self) -> None:
        """Flush what is in flight and disconnect."""

    def sync(self) -> None:  # noqa: B027 - optional hook, most transports need nothing
        """Make what was delivered durable (fsync); a no-op where the bus itself is durable."""


class Consumer(ABC):
    """Reads topics as one member of a consumer group; commits only when told to."""

    @abstractmethod
    async def start(self) -> None:
        """Join the group; a new group starts from the earliest offset."""

    @abstractmethod
    async def getmany(self, timeout_ms: int = 1000, max_records: int = 10_000) -> list[Record]:
        """Up to ``max_records`` new records, waiting at most ``timeout_ms`` for the first."""

    @abstractmethod
    async def commit(self, held: Mapping[tuple[str, int], int] | None = None) -> None:
        """Commit the position after every record returned so far.

        ``held`` maps ``(topic, partition)`` to the offset of a record returned but not done with
        yet (the judge worker's open groups): there, that offset is committed instead, so the group
        restarted after a crash reads that record again.
        """

    @abstractmethod
    async def stop(self) -> None:
        """Leave the group (without committing)."""

    async def __aenter__(self) -> Consumer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


# --------------------------------------------------------------------------- framed files

_HEAD = struct.Struct(">II")  # length of body, crc32 of body
_TS = struct.Struct(">q")
_U16 = struct.Struct(">H")
_I32 = struct.Struct(">i")


def frame(message: Message, timestamp_ms: int) -> bytes:
    """Encode one message as a framed record."""
    topic = message.topic.encode()
    parts = [_TS.pack(timestamp_ms), _U16.pack(len(topic)), topic]
    if message.key is None:
        parts.append(_I32.pack(-1))
    else:
        parts += [_I32.pack(len(message.key)), message.key]
    parts.append(_U16.pack(len(message.headers)))
    for name, value in message.headers:
        raw = name.encode()
        parts += [_U16.pack(len(raw)), raw, _I32.pack(len(value)), value]
    parts.append(message.value)
    body = b"".join(parts)
    return _HEAD.pack(len(body), zlib.crc32(body)) + body


class WriteFailed(OSError):
    """A write of framed records failed; ``written`` of them are whole in the file, the rest are not."""

    def __init__(self, written: int, cause: OSError):
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.written = written


def append_frames(fd: int, frames: list[bytes]) -> None:
    """Append ``frames`` to the file open at ``fd`` (in append mode), whole records only.

    The caller holds the file's exclusive lock. A write that fails part way (a full disk, a file
    size limit) is cut back to the end of the last whole record and raises :class:`WriteFailed`,
    so the file never holds half a record and the caller knows which records to keep elsewhere.
    """
    start = os.fstat(fd).st_size
    data = memoryview(b"".join(frames))
    done = 0
    try:
        while done < len(data):
            done += os.write(fd, data[done:])
    except OSError as exc:
        written = kept = 0
        for one in frames:
            if kept + len(one) > done:
                break
            kept += len(one)
            written += 1
        if kept != done:
            os.ftruncate(fd, start + kept)  # if this fails too, readers skip the torn tail (a Gap)
        raise WriteFailed(written, exc) from exc


@dataclass(frozen=True, slots=True)
class Gap:
    """Bytes of a framed file that hold no readable record (a torn or corrupt write), as file offsets."""

    start: int
    end: int

    def describe(self, where: Path) -> str:
        """A log line naming the file and the bytes skipped."""
        return (
            f"{where}: bytes {self.start}-{self.end} hold no readable record (a torn or corrupt write); "
            f"skipped, reading on at byte {self.end}"
        )


@dataclass(slots=True)
class Scan:
    """What :func:`read_records` found: records ``(offset, message, timestamp_ms)``, gaps, and where it stopped."""

    records: list[tuple[int, Message, int]] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    end: int = 0
    """The file offset after the last record or gap read: where the next read starts."""


def read_records(handle: IO[bytes], pos: int, size: int, where: Path, max_records: int) -> Scan:
    """Up to ``max_records`` records of the framed file ``handle`` from byte ``pos``, skipping gaps.

    The caller holds the file's lock (shared, or the only writer's), so no writer is mid-write:
    a record cut short at the end of the file is torn, and skipped as a :class:`Gap`. About
    ``size`` bytes are read; more when a record is larger, or when bad bytes reach past them.
    """
    file_size = os.fstat(handle.fileno()).st_size
    data = read_frames(handle, pos, size)
    scan = scan_frames(data, pos, where, at_eof=pos + len(data) >= file_size, max_records=max_records)
    if max_records > 0 and scan.end == pos < file_size:  # stuck on bad bytes the chunk does not get past
        handle.seek(pos)
        scan = scan_frames(handle.read(), pos, where, at_eof=True, max_records=max_records)
    return scan


def scan_frames(buf: bytes, origin: int, where: Path, *, at_eof: bool, max_records: int) -> Scan:
    """Decode the records in ``buf`` (read from byte ``origin`` of ``where``), skipping bad bytes.

    With ``at_eof`` the buffer runs to the end of the file and no writer is mid-write, so an
    incomplete record is torn; otherwise the scan stops at one (the rest is in the next read).
    """
    scan = Scan(end=origin)
    pos = 0
    while pos < len(buf) and len(scan.records) < max_records:
        try:
            decoded = unframe(buf, pos, where, origin)
        except BusError:
            decoded = None
        else:
            if decoded is None and not at_eof:
                break
        if decoded is None:  # corrupt, or torn at the end of the file
            resume = _next_whole_record(buf, pos + 1)
            if resume is None and not at_eof:
                break
            resume = len(buf) if resume is None else resume
            scan.gaps.append(Gap(origin + pos, origin + resume))
            pos = resume
        else:
            message, ts, nxt = decoded
            scan.records.append((origin + pos, message, ts))
            pos = nxt
        scan.end = origin + pos
    return scan


_MIN_BODY = _TS.size + _U16.size + _I32.size + _U16.size  # timestamp, empty topic, no key, no headers


def _next_whole_record(buf: bytes, start: int) -> int | None:
    """The first position from ``start`` where a whole record with a matching checksum begins."""
    view = memoryview(buf)
    for pos in range(start, len(buf) - _HEAD.size - _MIN_BODY + 1):
        length, crc = _HEAD.unpack_from(buf, pos)
        end = pos + _HEAD.size + length
        if length >= _MIN_BODY and end <= len(buf) and zlib.crc32(view[pos + _HEAD.size : end]) == crc:
            return pos
    return None


def read_frames(handle: IO[bytes], pos: int, size: int) -> bytes:
    """About ``size`` bytes of framed records from ``pos``: more when the first record is larger.

    Readers take the file a chunk at a time; a record larger than the chunk is read whole, as
    it could never be decoded from the chunk alone (the reader would be stuck there for good).
    """
    handle.seek(pos)
    data = handle.read(size)
    if len(data) >= _HEAD.size:
        length, _ = _HEAD.unpack_from(data, 0)
        missing = _HEAD.size + length - len(data)
        if missing > 0:
            data += handle.read(missing)
    return data


def unframe(buf: bytes | memoryview, pos: int, where: Path, origin: int = 0) -> tuple[Message, int, int] | None:
    """Decode the record at ``pos``: ``(message, timestamp_ms, next_pos)``, or None if incomplete.

    ``origin`` is the file offset of ``buf[0]``: a corrupt record is reported at its offset in
    the file, with :class:`BusError`.
    """
    if len(buf) - pos < _HEAD.size:
        return None
    length, crc = _HEAD.unpack_from(buf, pos)
    start, end = pos + _HEAD.size, pos + _HEAD.size + length
    if end > len(buf):
        return None
    body = bytes(buf[start:end])
    if zlib.crc32(body) != crc:
        raise BusError(f"{where}: corrupt record at byte {origin + pos} (checksum mismatch)")
    try:
        return _decode_body(body, end)
    except (struct.error, UnicodeDecodeError) as exc:
        raise BusError(f"{where}: corrupt record at byte {origin + pos} ({exc})") from None


def _decode_body(body: bytes, end: int) -> tuple[Message, int, int]:
    (ts,) = _TS.unpack_from(body, 0)
    i = _TS.size
    (n,) = _U16.unpack_from(body, i)
    topic = body[i + 2 : i + 2 + n].decode()
    i += 2 + n
    (n,) = _I32.unpack_from(body, i)
    i += 4
    key = None if n < 0 else body[i : i + n]
    i += max(n, 0)
    (count,) = _U16.unpack_from(body, i)
    i += 2
    headers = []
    for _ in range(count):
        (n,) = _U16.unpack_from(body, i)
        name = body[i + 2 : i + 2 + n].decode()
        i += 2 + n
        (n,) = _I32.unpack_from(body, i)
        headers.append((name, body[i + 4 : i + 4 + n]))
        i += 4 + n
    return Message(topic, key, body[i:], tuple(headers)), ts, end
