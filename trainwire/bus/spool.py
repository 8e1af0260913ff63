"""The producer's files: the spool of messages the bus has not accepted yet, and the rejected events.

Each emitter owns one spool file (held with ``flock``) under ``{data_dir}/spool/{target}/``,
where ``target`` names the bus it delivers to. Messages are replayed in the order they were
spooled. A spool left behind by a process that died (its lock is free) is adopted by the next
emitter for the same bus, so its events are delivered then.

Events the bus refuses for good (too large for it) are not spooled, as they would be retried
forever, but kept in ``{data_dir}/rejected/events.jsonl`` with the reason (see
:class:`trainwire.bus.rejected.RejectedEvents`).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
import time
import uuid
from pathlib import Path
from typing import IO

from trainwire.bus.base import Message, frame, read_frames, unframe


def spool_dir(data_dir: Path, target: str) -> Path:
    """The spool folder for one bus target (``local`` or the Kafka bootstrap string)."""
    slug = "local" if target == "local" else "kafka-" + hashlib.sha1(target.encode()).hexdigest()[:12]
    return Path(data_dir) / "spool" / slug


class Spool:
    """Thread-safe append-only spool with an in-order replay cursor."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.path = self.directory / f"spool-{os.getpid()}-{uuid.uuid4().hex[:8]}.log"
        self._lock = threading.Lock()
        self._file: IO[bytes] | None = None
        self._read_pos = 0
        self._pending = 0

    @property
    def pending(self) -> int:
        """Messages spooled and not yet replayed."""
        return self._pending

    def _open(self) -> IO[bytes]:
        if self._file is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a+b")  # noqa: SIM115 - held for the spool's life
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._file = handle
        return self._file

    def append(self, messages: list[Message]) -> None:
        """Write ``messages`` at the end of the spool (reaches the OS at once). Raises OSError."""
        if not messages:
            return
        now = int(time.time() * 1000)
        data = b"".join(frame(m, now) for m in messages)
        with self._lock:
            handle = self._open()
            handle.seek(0, os.SEEK_END)
            handle.write(data)
            handle.flush()
            self._pending += len(messages)

    def adopt_orphans(self) -> int:
        """Move spools left by dead processes into this one (in file order); return how many messages."""
        if not self.directory.exists():
            return 0
        adopted = 0
        for path in sorted(self.directory.glob("spool-*.log"), key=lambda p: p.stat().st_mtime):
            if path == self.path:
                continue
            with open(path, "rb") as orphan:
                try:
                    fcntl.flock(orphan, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live emitter owns it
                messages = _read_all(orphan.read(), path)
                self.append(messages)
                path.unlink()
                adopted += len(messages)
        return adopted

    def peek(self, max_messages: int) -> tuple[list[Message], int]:
        """The next messages to replay and the cursor after them (pass it to :meth:`advance`)."""
        with self._lock:
            if self._file is None or self._pending == 0:
                return [], self._read_pos
            data = read_frames(self._file, self._read_pos, 16 << 20)
        out: list[Message] = []
        pos = 0
        while len(out) < max_messages:
            decoded = unframe(data, pos, self.path)
            if decoded is None:
                break
            out.append(decoded[0])
            pos = decoded[2]
        return out, self._read_pos + pos

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
        self._lock = threading.Lock()
        if self._file is not None:
            self._file.close()
        self._file = None
        self.path = self.directory / f"spool-{os.getpid()}-{uuid.uuid4().hex[:8]}.log"
        self._read_pos = self._pending = 0


def _read_all(data: bytes, where: Path) -> list[Message]:
    out: list[Message] = []
    pos = 0
    while (decoded := unframe(data, pos, where)) is not None:
        out.append(decoded[0])
        pos = decoded[2]
    return out
