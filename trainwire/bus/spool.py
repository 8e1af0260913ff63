"""The producer's files: the spool of messages the bus has not accepted yet, and the rejected events.

Each emitter owns one spool file (held with ``flock``) under ``{data_dir}/spool/{target}/``,
where ``target`` names the bus it delivers to. Messages are replayed in the order they were
spooled. A spool left behind by a process that died (its lock is free) is adopted by the next
emitter for the same bus, so its events are delivered then.

A write that fails part way (a full disk) is cut back to its last whole record. A spool that
cannot be read whole (torn by a process killed mid-write, damaged, unreadable) does not stop the
emitter: what can be read is replayed, the bytes that cannot are skipped, and a left-over spool
with any such bytes is renamed ``*.unreadable`` and named in a warning.

Events the bus refuses for good (too large for it) are not spooled, as they would be retried
forever, but kept in ``{data_dir}/rejected/events.jsonl`` with the reason (see
:class:`trainwire.bus.rejected.RejectedEvents`).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import IO

from trainwire.bus.base import Message, WriteFailed, append_frames, frame, read_records
from trainwire.private_files import open_private, private_dir

logger = logging.getLogger("trainwire.emitter")

UNREADABLE_SUFFIX = ".unreadable"
"""Added to the name of a spool that could not be read whole, kept aside for a person to look at."""


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
        with self._lock:
            try:
                append_frames(self._open().fileno(), frames)
            except WriteFailed as exc:
                self._pending += exc.written
                raise
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
            messages = [message for _, message, _ in scan.records]
            try:
                self._append_whole(messages)
            except OSError as exc:
                logger.warning("trainwire: cannot copy the left-over spool %s now, it stays for later: %s", path, exc)
                return 0
            if scan.gaps:
                gaps = ", ".join(f"bytes {g.start}-{g.end}" for g in scan.gaps)
                _set_aside(path, f"{gaps} hold no readable record; its {len(messages)} readable events are replayed")
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

        Bytes of the spool that hold no readable record are skipped with a warning; if the
        spool ends before the count of pending messages does, the rest is reported lost.
        """
        with self._lock:
            while self._file is not None and self._pending:
                scan = read_records(self._file, self._read_pos, 16 << 20, self.path, max_messages)
                for gap in scan.gaps:
                    logger.warning("trainwire: %s", gap.describe(self.path))
                if scan.records:
                    return [message for _, message, _ in scan.records], scan.end
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
