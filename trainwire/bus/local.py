"""The embedded bus: a durable append-only log per topic under ``{data_dir}/bus``.

Used when no Kafka bootstrap server is configured. One process (a training script) may write
while another (a worker) reads, on the same machine::

    {data_dir}/bus/{topic}.log              framed records (see trainwire.bus.base), offset = byte position
    {data_dir}/bus/_groups/{group}.json     committed offsets of a consumer group
    {data_dir}/bus/_groups/{group}.lock     held by the group's one live consumer

Limits, compared with Kafka:

- one partition per topic, one machine (a local file system with working ``flock``);
- one live consumer per group (a second one is refused with a clear error), so workers do not
  scale out; use Kafka for that;
- no retention: the log grows until you delete the data directory;
- no size limit that matters: a record may hold up to 4 GiB (its length field), and one larger
  than a reader's chunk is read whole;
- a batch reaches the OS page cache at once (it survives a crash of the writing process) and is
  fsynced on ``flush()``/``close()`` of the emitter (it then survives a power cut too).

A write that fails (a full disk) is cut back to its last whole record and the rest of the batch
goes back to the emitter, which logs why and spools it. A reader skips bytes that hold no whole
record (a writer killed mid-write) with a warning naming the file and the byte offsets, and reads
on after them (see :func:`trainwire.bus.base.read_records`).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from trainwire.bus.base import (
    Consumer,
    Message,
    Record,
    Refused,
    Transport,
    WriteFailed,
    append_frames,
    frame,
    read_records,
)
from trainwire.errors import BusError
from trainwire.private_files import open_private, private_dir, replace_private

POLL_INTERVAL_S = 0.02

logger = logging.getLogger("trainwire.bus")


def log_dir(data_dir: Path) -> Path:
    """Where the embedded bus keeps its files."""
    return Path(data_dir) / "bus"


class LocalTransport(Transport):
    """Appends message batches to the per-topic log files (safe with several writing processes)."""

    def __init__(self, data_dir: Path):
        self.root = log_dir(data_dir)
        self._files: dict[str, IO[bytes]] = {}

    async def start(self) -> None:
        try:
            private_dir(self.root)
        except OSError as exc:
            raise BusError(f"cannot create the embedded bus at {self.root}: {exc}") from exc

    def _file(self, topic: str) -> IO[bytes]:
        handle = self._files.get(topic)
        if handle is None:
            handle = self._files[topic] = open_private(self.root / f"{topic}.log", "ab", buffering=0)
        return handle

    async def send_batch(self, messages: list[Message]) -> list[Message | Refused]:
        now = int(time.time() * 1000)
        by_topic: dict[str, list[Message]] = {}
        for message in messages:
            by_topic.setdefault(message.topic, []).append(message)
        failed: list[Message | Refused] = []
        for topic, batch in by_topic.items():
            try:
                handle = self._file(topic)
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    append_frames(handle.fileno(), [frame(m, now) for m in batch])
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
            except OSError as exc:
                written = exc.written if isinstance(exc, WriteFailed) else 0
                failed.extend(batch[written:])
                self.last_failure = f"cannot write {self.root / f'{topic}.log'}: {exc}"
        return failed

    def sync(self) -> None:
        for handle in self._files.values():
            os.fsync(handle.fileno())

    async def stop(self) -> None:
        self.sync()
        for handle in self._files.values():
            handle.close()
        self._files.clear()


class LocalConsumer(Consumer):
    """A consumer group member on the embedded log. New groups start from the beginning."""

    def __init__(self, data_dir: Path, topics: list[str], group: str):
        self.root = log_dir(data_dir)
        self.topics = list(topics)
        self.group = group
        self._groups = self.root / "_groups"
        self._lock: IO[bytes] | None = None
        self._positions: dict[str, int] = {}

    async def start(self) -> None:
        private_dir(self._groups)
        lock = open_private(self._groups / f"{self.group}.lock", "a+b")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise BusError(
                f"consumer group {self.group!r} already has a live consumer on {self.root}; "
                "the embedded bus allows one consumer per group (use Kafka to scale out)"
            ) from None
        self._lock = lock
        committed = self._read_committed()
        self._positions = {topic: committed.get(topic, 0) for topic in self.topics}

    def _offsets_path(self) -> Path:
        return self._groups / f"{self.group}.json"

    def _read_committed(self) -> dict[str, int]:
        path = self._offsets_path()
        if not path.exists():
            return {}
        try:
            return {str(k): int(v) for k, v in json.loads(path.read_text()).items()}
        except (ValueError, AttributeError) as exc:
            raise BusError(f"{path}: unreadable committed offsets ({exc}); delete it to restart the group") from None

    async def getmany(self, timeout_ms: int = 1000, max_records: int = 10_000) -> list[Record]:
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            records = self._read(max_records)
            if records or time.monotonic() >= deadline:
                return records
            await asyncio.sleep(POLL_INTERVAL_S)

    def _read(self, max_records: int) -> list[Record]:
        out: list[Record] = []
        for topic in self.topics:
            path = self.root / f"{topic}.log"
            if not path.exists():
                continue
            with open(path, "rb") as handle:
                fcntl.flock(handle, fcntl.LOCK_SH)  # no writer is mid-batch while this reads
                scan = read_records(handle, self._positions[topic], 8 << 20, path, max_records - len(out))
            for gap in scan.gaps:
                logger.warning("trainwire: %s", gap.describe(path))
            out.extend(Record(topic, 0, offset, m.key, m.value, ts, m.headers) for offset, m, ts in scan.records)
            self._positions[topic] = scan.end
            if len(out) >= max_records:
                break
        return out

    async def commit(self, held: Mapping[tuple[str, int], int] | None = None) -> None:
        replace_private(self._offsets_path(), json.dumps(self._committable(held or {})).encode(), fsync=False)

    def _committable(self, held: Mapping[tuple[str, int], int]) -> dict[str, int]:
        merged = self._read_committed()
        merged.update(self._positions)
        for (topic, _), offset in held.items():  # one partition per topic: the record's file offset
            merged[topic] = min(merged.get(topic, offset), offset)
        return merged

    async def stop(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None
