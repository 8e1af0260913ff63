"""The spool's file format: written in compressed blocks, and spools of the format before still replayed."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from trainwire.bus import Emitter, open_consumer
from trainwire.bus.base import Message, frame, read_records
from trainwire.bus.spool import BLOCK_TOPIC, Spool, messages_in, spool_dir
from trainwire.config import Settings

TOPIC = "trainwire.interactions"


def numbered(count: int, start: int = 0) -> list[Message]:
    """1 KB messages of JSON-like text, numbered in their first word."""
    return [
        Message(TOPIC, b"run-%d" % (i % 3), b"%d " % i + b'{"completion": "the answer is %d", "reward": 1.0} ' % i * 20)
        for i in range(start, start + count)
    ]


def replayed_values(settings: Settings) -> list[bytes]:
    """What an emitter that adopts the spools left in ``settings``' data directory delivers, in order."""
    with Emitter(settings) as emitter:
        emitter.start()  # adopts and replays the spools; closing waits until they are delivered

    async def read() -> list[bytes]:
        consumer = open_consumer(settings, [TOPIC], "check")
        await consumer.start()
        records = await consumer.getmany(timeout_ms=500, max_records=100_000)
        await consumer.stop()
        return [r.value for r in records]

    return asyncio.run(read())


def test_the_spool_is_written_in_compressed_blocks_and_replays_in_order(embedded_settings: Settings) -> None:
    """Before: one uncompressed record per message (1.1 MB for these 1,000 messages)."""
    messages = numbered(1000)
    spool = Spool(spool_dir(embedded_settings.data_dir, "local"))
    spool.append(messages[:600])
    spool.append_frames([frame(m, 0) for m in messages[600:]])
    assert spool.pending == 1000

    raw_size = sum(len(frame(m, 0)) for m in messages)
    assert spool.path.stat().st_size < raw_size / 5
    with open(spool.path, "rb") as handle:
        scan = read_records(handle, 0, 1 << 24, spool.path, 10_000)
    assert scan.gaps == [] and {record.topic for _, record, _ in scan.records} == {BLOCK_TOPIC}
    assert len(scan.records) == 3 + 2  # 600 and 400 messages, in blocks of up to 256
    assert [len(messages_in(record, spool.path, at)) for at, record, _ in scan.records] == [256, 256, 88, 256, 144]

    spool.close()  # not empty: it stays for the next process, which delivers it
    assert replayed_values(embedded_settings) == [m.value for m in messages]
    assert list(spool.directory.iterdir()) == []


def test_a_spool_of_the_format_before_still_replays(embedded_settings: Settings) -> None:
    """A spool left by an older trainwire, one uncompressed record per message, is delivered whole and in order."""
    messages = numbered(700)
    directory = spool_dir(embedded_settings.data_dir, "local")
    directory.mkdir(parents=True)
    (directory / "spool-1-aaaaaaaa.log").write_bytes(b"".join(frame(m, 0) for m in messages))

    assert replayed_values(embedded_settings) == [m.value for m in messages]
    assert list(directory.iterdir()) == []


def test_a_left_over_spool_mixing_both_formats_replays_in_order(embedded_settings: Settings) -> None:
    """Records of the format before, then blocks a newer trainwire appended to the same file."""
    old, new = numbered(300), numbered(300, start=300)
    directory = spool_dir(embedded_settings.data_dir, "local")
    spool = Spool(directory)
    spool.path.parent.mkdir(parents=True)
    spool.path.write_bytes(b"".join(frame(m, 0) for m in old))
    spool.append(new)
    spool.close()

    assert replayed_values(embedded_settings) == [m.value for m in old + new]


def test_replay_takes_whole_blocks_in_order(tmp_path: Path) -> None:
    """The emitter replays ``batch_size`` messages at a time: it gets whole blocks, never a block split."""
    messages = numbered(1000)
    spool = Spool(tmp_path)
    spool.append(messages)
    batches = []
    while spool.pending:
        batch, cursor = spool.peek(300)
        spool.advance(cursor, len(batch))
        batches.append(batch)
    assert [len(b) for b in batches] == [512, 256 + 232]
    assert [m for b in batches for m in b] == messages
    assert spool.path.stat().st_size == 0
    spool.close()


def test_a_block_that_cannot_be_decompressed_is_named_and_the_rest_replays(
    embedded_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A whole record (its checksum holds) whose block is not zstd: named by its byte offset, the spool set aside."""
    before, after = numbered(10), numbered(10, start=10)
    spool, later = Spool(spool_dir(embedded_settings.data_dir, "local")), Spool(embedded_settings.data_dir / "other")
    spool.append(before)
    later.append(after)
    spool.close()
    later.close()
    bad_at = spool.path.stat().st_size
    with open(spool.path, "ab") as handle:
        handle.write(frame(Message(BLOCK_TOPIC, None, b"not zstd at all"), 0))
        handle.write(later.path.read_bytes())

    with caplog.at_level(logging.WARNING, logger="trainwire.emitter"):
        assert replayed_values(embedded_settings) == [m.value for m in before + after]
    warnings = "\n".join(r.getMessage() for r in caplog.records)
    assert f"{spool.path}: the block at byte {bad_at} cannot be decompressed" in warnings
    assert spool.path.with_name(spool.path.name + ".unreadable").exists()
