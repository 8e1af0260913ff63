"""What every bus has: messages, records, the framed file format, and the two roles.

A *transport* delivers batches of :class:`Message` (Kafka, or the embedded local log) and hands
back those it could not deliver: as they are when they may go through later (the bus is down), or
as :class:`Refused` when the bus will never take them (a message over its size limit).
A *consumer* reads :class:`Record` from topics as a member of a consumer group and commits
its position only when told to (after processing: at-least-once).

The embedded log and the producer's spool share one append-only file format: each record is
``[length u32][crc32 u32][body]`` with ``body = [timestamp_ms i64][topic][key][headers][value]``
(strings and byte fields prefixed by their length). A record cut short (a writer mid-write)
is not read until it is complete; a record whose checksum does not match is reported with the
file and byte offset.
"""

from __future__ import annotations

import struct
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
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
    async def commit(self) -> None:
        """Commit the position after every record returned so far."""

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


def unframe(buf: bytes | memoryview, pos: int, where: Path) -> tuple[Message, int, int] | None:
    """Decode the record at ``pos``: ``(message, timestamp_ms, next_pos)``, or None if incomplete."""
    if len(buf) - pos < _HEAD.size:
        return None
    length, crc = _HEAD.unpack_from(buf, pos)
    start, end = pos + _HEAD.size, pos + _HEAD.size + length
    if end > len(buf):
        return None
    body = bytes(buf[start:end])
    if zlib.crc32(body) != crc:
        raise BusError(f"{where}: corrupt record at byte {pos} (checksum mismatch)")
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
