"""The producer's files: the spool of messages the bus has not accepted yet, and the rejected events.

Each emitter owns one spool file (held with ``flock``) under ``{data_dir}/spool/{target}/``,
where ``target`` names the bus it delivers to. Messages are replayed in the order they were
spooled. A spool left behind by a process that died (its lock is free) is adopted by the next
emitter for the same bus, so its events are delivered then.

Each write is stored compressed: its messages, framed as the embedded log frames them, go in
blocks of up to :data:`BLOCK_MESSAGES` compressed with zstd, each block one framed record whose
topic is :data:`BLOCK_TOPIC` (a spool of 1 KB events takes about a third of the space). Spools
written before, one record per message, are read as they are.

A write that fails part way (a full disk) is cut back to its last whole record (block). A spool that
cannot be read whole (torn by a process killed mid-write, damaged, unreadable) does not stop the
emitter: what can be read is replayed, the bytes that cannot are skipped, and a left-over spool
with any such bytes is renamed ``*.unreadable`` and named in a warning.

Events the bus refuses for good (too large for it) are not spooled, as they would be retried
forever, but kept in ``{data_dir}/rejected/events.jsonl`` with the reason (see
:class:`trainwire.bus.rejected.RejectedEvents`).
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import IO

from trainwire.bus.base import Message, WriteFailed, append_frames, frame, read_records, scan_frames
from trainwire.errors import BusError
from trainwire.private_files import open_private, private_dir

logger = logging.getLogger("trainwire.emitter")

UNREADABLE_SUFFIX = ".unreadable"
"""Added to the name of a spool that could not be read whole, kept aside for a person to look at."""

BLOCK_TOPIC = "\x00trainwire-spool-block"
"""Topic of a spool record that holds a compressed block of framed messages (no bus can have it)."""

BLOCK_MESSAGES = 256
"""Most messages per compressed block (256 KB of 1 KB events: zstd gains little from larger ones)."""

BLOCK_LEVEL = 3
"""zstd's compression level for the spool's blocks."""


def spool_dir(data_dir: Path, target: str) -> Path:
    """The spool folder for one bus target (``local`` or the Kafka bootstrap string)."""
    slug = "local" if target == "local" else "kafka-" + hashlib.sha1(target.encode()).hexdigest()[:12]
    return Path(data_dir) / "spool" / slug


class Spool:
    """Thread-safe append-only spool with an in-order replay cursor."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.path = self.directory / f"spool-{os.getpid()}-{uuid.uuid4().hex[:8]}.log"
        self._lock = threading.RLock()
        self._file: IO[bytes] | None = None
        self._read_pos = 0
        self._pending = 0

    @property
    def pending(self) -> int:
        """Messages spooled and not yet replayed."""
        return self._pending

    def _open(self) -> IO[bytes]:
        if self._file is None:
            private_dir(self.directory)
            handle = open_private(self.path, "a+b", buffering=0)  # held for the spool's life
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._file = handle
        return self._file

    def append(self, messages: list[Message]) -> None:
        """Write ``messages`` at the end of the spool (reaches the OS at once).

        Raises :class:`~trainwire.bus.base.WriteFailed` (an OSError) saying how many of them are
        in the spool (the first ``written``) when the write fails.
        """
        now = int(time.time() * 1000)
        self.append_frames([frame(m, now) for m in messages])

    def append_frames(self, frames: list[bytes]) -> None:
        """:meth:`append` for messages already framed (:func:`~trainwire.bus.base.frame`)."""
        if not frames:
            return
        now = int(time.time() * 1000)
        chunks = [frames[i : i + BLOCK_MESSAGES] for i in range(0, len(frames), BLOCK_MESSAGES)]
        blocks = [
            frame(Message(BLOCK_TOPIC, None, _zstd().compress(b"".join(chunk), BLOCK_LEVEL)), now) for chunk in chunks
        ]
        with self._lock:
            try:
                append_frames(self._open().fileno(), blocks)
            except WriteFailed as exc:
                written = sum(map(len, chunks[: exc.written]))
                self._pending += written
                raise WriteFailed(written, exc) from exc
            except OSError as exc:
                raise WriteFailed(0, exc) from exc
            self._pending += len(frames)

    def adopt_orphans(self) -> int:
        """Move spools left by dead processes into this one (in file order); return how many messages.

        Never raises: a spool that cannot be read whole is replayed as far as it can be read and
        then set aside (see the module docstring); one that cannot be copied now (a full disk)
        stays for a later process.
        """
        try:
            orphans = sorted(self.directory.glob("spool-*.log"), key=_mtime)
        except OSError as exc:
            logger.warning("trainwire: cannot list the spools in %s: %s", self.directory, exc)
            return 0
        adopted = 0
        for path in orphans:
            if path != self.path:
                adopted += self._adopt(path)
        return adopted

    def _adopt(self, path: Path) -> int:
        try:
            orphan = open(path, "rb")  # noqa: SIM115 - closed below, after the rename or unlink
        except OSError as exc:
            logger.warning("trainwire: cannot open the left-over spool %s: %s", path, exc)
            return 0
        with orphan:
            try:
                fcntl.flock(orphan, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # a live emitter owns it
            try:
                size = os.fstat(orphan.fileno()).st_size
                scan = read_records(orphan, 0, size, path, max_records=size)
            except OSError as exc:
                _set_aside(path, f"it cannot be read ({exc})")
                return 0
            messages: list[Message] = []
            damaged = [f"bytes {g.start}-{g.end} hold no readable record" for g in scan.gaps]
            for offset, record, _ in scan.records:
                try:
                    messages += messages_in(record, path, offset)
                except BusError as exc:
                    damaged.append(str(exc))
            try:
                self._append_whole(messages)
            except OSError as exc:
                logger.warning("trainwire: cannot copy the left-over spool %s now, it stays for later: %s", path, exc)
                return 0
            if damaged:
                _set_aside(path, f"{'; '.join(damaged)}; its {len(messages)} readable events are replayed")
            else:
                path.unlink(missing_ok=True)
        return len(messages)

    def _append_whole(self, messages: list[Message]) -> None:
        """:meth:`append` all of ``messages`` or none (the spool is cut back when the write fails)."""
        if not messages:
            return
        with self._lock:
            handle = self._open()
            size = os.fstat(handle.fileno()).st_size
            try:
                self.append(messages)
            except WriteFailed as exc:
                self._pending -= exc.written
                os.ftruncate(handle.fileno(), size)
                raise

    def peek(self, max_messages: int) -> tuple[list[Message], int]:
        """The next messages to replay and the cursor after them (pass it to :meth:`advance`).

        Whole blocks only: more than ``max_messages`` when the first block holds more. Bytes of
        the spool that hold no readable record are skipped with a warning; if the spool ends
        before the count of pending messages does, the rest is reported lost.
        """
        with self._lock:
            while self._file is not None and self._pending:
                scan = read_records(self._file, self._read_pos, 16 << 20, self.path, max_messages)
                for gap in scan.gaps:
                    logger.warning("trainwire: %s", gap.describe(self.path))
                messages: list[Message] = []
                for offset, record, _ in scan.records:
                    if messages and len(messages) >= max_messages:
                        return messages, offset
                    try:
                        messages += messages_in(record, self.path, offset)
                    except BusError as exc:
                        logger.warning("trainwire: %s; skipped", exc)
                if messages:
                    return messages, scan.end
                if scan.end >= os.fstat(self._file.fileno()).st_size:
                    logger.warning(
                        "trainwire: %d events counted in the spool %s cannot be read back and are lost",
                        self._pending,
                        self.path,
                    )
                    self._pending = 0
                    self._file.truncate(0)
                    self._read_pos = 0
                else:
                    self._read_pos = scan.end  # this chunk held only bad bytes
            return [], self._read_pos

    def advance(self, cursor: int, count: int) -> None:
        """Mark ``count`` messages up to ``cursor`` replayed; empty the file once all are."""
        with self._lock:
            self._read_pos = cursor
            self._pending -= count
            if self._pending == 0 and self._file is not None:
                self._file.truncate(0)
                self._read_pos = 0

    def sync(self) -> None:
        """fsync the spool file."""
        with self._lock:
            if self._file is not None:
                os.fsync(self._file.fileno())

    def close(self) -> None:
        """Close the file; remove it when empty (a non-empty spool stays for the next process)."""
        with self._lock:
            if self._file is None:
                return
            empty = self._pending == 0
            self._file.close()
            self._file = None
            if empty:
                self.path.unlink(missing_ok=True)

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's file handle (its lock stays the parent's)."""
        self._lock = threading.RLock()
        if self._file is not None:
            self._file.close()
        self._file = None
        self.path = self.directory / f"spool-{os.getpid()}-{uuid.uuid4().hex[:8]}.log"
        self._read_pos = self._pending = 0


def messages_in(record: Message, where: Path, offset: int) -> list[Message]:
    """The messages a spool record holds: those of its block, or the record itself (older spools).

    ``offset`` is the record's place in the spool ``where``, named in the :class:`BusError`
    raised for a block that cannot be decompressed or read whole.
    """
    if record.topic != BLOCK_TOPIC:
        return [record]
    zstd = _zstd()
    try:
        data = zstd.decompress(record.value)
    except zstd.ZstdError as exc:
        raise BusError(f"{where}: the block at byte {offset} cannot be decompressed ({exc})") from None
    scan = scan_frames(data, 0, where, at_eof=True, max_records=len(data))
    if scan.gaps:
        raise BusError(f"{where}: the block at byte {offset} holds damaged records")
    return [message for _, message, _ in scan.records]


@functools.cache
def _zstd() -> ModuleType:
    """The zstd module, imported when first used (it is not needed to start ``trainwire``)."""
    try:
        from compression import zstd  # Python 3.14+
    except ImportError:
        from backports import zstd
    return zstd


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _set_aside(path: Path, why: str) -> None:
    """Rename a left-over spool ``*.unreadable`` so no emitter trips on it again, and say so."""
    aside = path.with_name(path.name + UNREADABLE_SUFFIX)
    try:
        path.rename(aside)
    except OSError as exc:
        logger.warning("trainwire: the left-over spool %s is unreadable (%s); cannot set it aside: %s", path, why, exc)
        return
    logger.warning("trainwire: the left-over spool %s was set aside as %s: %s", path, aside, why)
