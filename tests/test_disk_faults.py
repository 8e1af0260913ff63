"""A full disk and torn files, for real: a file size limit (RLIMIT_FSIZE) in a child process.

The embedded bus log and the spool must never keep half a record, a reader must read on past
one left by an older writer or a killed process, and every intact record must reach ClickHouse.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_pipeline_until

from trainwire.bus import Emitter, open_consumer
from trainwire.bus.base import Message, frame, read_records
from trainwire.bus.local import LocalTransport
from trainwire.bus.spool import messages_in, spool_dir
from trainwire.config import Settings
from trainwire.events import Event, Interaction
from trainwire.runtime import build_pipeline
from trainwire.store.clickhouse import open_store

LIMIT = 1 << 20
"""The file size limit of the full-disk writer: each file it writes stops growing at 1 MiB."""

FULL_DISK_WRITER = """
import base64, json, logging, os, resource, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), resource.RLIM_INFINITY))
logging.basicConfig(level=logging.WARNING, format="%(message)s")
from trainwire.bus import Emitter
from trainwire.config import Settings
from trainwire.events import Event, Interaction
emitter = Emitter(Settings(data_dir=sys.argv[1]))
ids = []
for i in range(int(sys.argv[3])):
    # random text: the spool compresses what it writes, and these 1000 bytes stay about 750
    completion = base64.b64encode(os.urandom(750)).decode()
    event = Event("full-disk", Interaction(prompt=f"p{i}", completion=completion, reward=i % 2, step=i // 500))
    ids.append(event.event_id)
    emitter.emit(event)
emitter.close()
stats = emitter.stats()
print(json.dumps({"ids": ids, "sent": stats.sent, "spooled": stats.spooled, "failed": stats.failed}))
"""

TEARING_WRITER = """
import os, resource, sys
from trainwire.bus.base import Message, frame, read_records
# Appends records the way a writer without the cut-back did: a file size limit stops the write of
# the second batch part way, the limit is lifted, and the third batch lands after the torn record.
path, topic, first, second, third = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
def batch(start, count):
    return b"".join(frame(Message(topic, b"k", b"%d" % i + b" " * 1500), 0) for i in range(start, start + count))
fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
os.write(fd, batch(0, first))
size = os.fstat(fd).st_size
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 1000, resource.RLIM_INFINITY))
try:
    os.write(fd, batch(first, second))  # stops at the limit, in the middle of a record
except OSError:
    pass
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
print(size)
os.write(fd, batch(first + second, third))
"""


def tear(path: Path, topic: str, first: int, second: int, third: int) -> int:
    """Write ``first`` records, a batch torn by a real file size limit, then ``third`` records.

    Returns the file offset of the torn record. The values are ``b"<n>"`` and 1500 spaces,
    numbered from 0: the torn record is the first of the second batch.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-c", TEARING_WRITER, str(path), topic, str(first), str(second), str(third)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


def stored_ids(settings: Settings, expected: int) -> set[str]:
    """Run the embedded worker until ``expected`` interactions are stored (or 60 s pass); their ids."""
    with open_store(settings) as store:
        store.migrate()
        pipeline = build_pipeline(settings, store)

        def stored() -> int:
            return store.query_rows("SELECT count() AS n FROM interactions FINAL")[0]["n"]

        run_pipeline_until(pipeline, lambda: stored() >= expected)
        rows = store.query_rows("SELECT event_id FROM interactions FINAL")
    return {r["event_id"] for r in rows}


@pytest.mark.parametrize("events", [1000, 2000])
def test_full_disk_keeps_every_intact_record_and_the_next_process_delivers_the_spool(
    tmp_path: Path, events: int
) -> None:
    """1000 events of 1.5 KB: the log fills at 1 MiB and the spool takes the rest; 2000: the spool fills too."""
    data_dir = tmp_path / "data"
    child = subprocess.run(
        [sys.executable, "-c", FULL_DISK_WRITER, str(data_dir), str(LIMIT), str(events)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr
    result = json.loads(child.stdout)
    assert 0 < result["sent"] < events and result["spooled"] > 0
    assert result["sent"] + result["spooled"] + result["failed"] == events
    # the failed write is logged, with the file and the reason
    assert "the bus did not take" in child.stderr and "trainwire.interactions.log" in child.stderr
    assert "File too large" in child.stderr
    if result["failed"]:
        assert "events lost" in child.stderr

    settings = Settings(data_dir=data_dir)
    later = Event("full-disk", Interaction(prompt="later", completion="c", reward=1.0))
    with Emitter(settings) as next_process:  # its thread adopts the spool left behind and replays it
        next_process.emit(later)
        assert next_process.flush(30)
        assert next_process.stats().replayed == result["spooled"]
    delivered = result["sent"] + result["spooled"]
    ids = stored_ids(settings, delivered + 1)
    assert len(ids) == delivered + 1
    assert ids <= {*result["ids"], later.event_id}
    if not result["failed"]:
        assert ids == {*result["ids"], later.event_id}


def test_reader_reads_on_past_a_torn_record_and_names_its_offset_in_the_file(
    embedded_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    topic = "trainwire.interactions"
    log = embedded_settings.data_dir / "bus" / f"{topic}.log"

    async def read(group: str) -> list[bytes]:
        consumer = open_consumer(embedded_settings, [topic], group)
        await consumer.start()
        try:
            records = await consumer.getmany(timeout_ms=500)
            await consumer.commit()
        finally:
            await consumer.stop()
        return [r.value.split()[0] for r in records]

    async def append(start: int, count: int) -> None:
        transport = LocalTransport(embedded_settings.data_dir)
        await transport.start()
        await transport.send_batch([Message(topic, b"k", b"%d " % i) for i in range(start, start + count)])
        await transport.stop()

    asyncio.run(append(0, 5))
    assert asyncio.run(read("g")) == [b"%d" % i for i in range(5)]  # the group's position is past byte 0
    torn_at = tear(log, topic, 3, 4, 6)  # records 0-2 (values padded), a torn batch, records 7-12
    asyncio.run(append(100, 2))
    with caplog.at_level(logging.WARNING, logger="trainwire.bus"):
        got = asyncio.run(read("g"))
    assert got == [b"%d" % i for i in [0, 1, 2, 7, 8, 9, 10, 11, 12, 100, 101]]
    (warning,) = [r.getMessage() for r in caplog.records if "hold no readable record" in r.getMessage()]
    assert f"{log}: bytes {torn_at}-" in warning  # the offset in the file, not in the chunk read


def test_a_torn_tail_is_skipped_and_later_records_are_read(embedded_settings: Settings) -> None:
    """A writer killed mid-write leaves half a record at the end; the next writer appends after it."""
    topic = "trainwire.interactions"
    log = embedded_settings.data_dir / "bus" / f"{topic}.log"
    tear(log, topic, 2, 3, 0)

    async def main() -> list[bytes]:
        transport = LocalTransport(embedded_settings.data_dir)
        await transport.start()
        await transport.send_batch([Message(topic, b"k", b"after")])
        await transport.stop()
        consumer = open_consumer(embedded_settings, [topic], "g")
        await consumer.start()
        records = await consumer.getmany(timeout_ms=500)
        await consumer.stop()
        return [r.value.split()[0] for r in records]

    assert asyncio.run(main()) == [b"0", b"1", b"after"]


def test_a_torn_leftover_spool_is_replayed_set_aside_and_the_emitter_lives(
    embedded_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: adopting a damaged spool raised in the emitter thread, and the next process sent 0 of 1,000."""
    directory = spool_dir(embedded_settings.data_dir, "local")
    torn = directory / "spool-1-aaaaaaaa.log"
    tear(torn, "trainwire.interactions", 40, 10, 30)  # 40 records, a torn one, 30 more
    garbage = directory / "spool-2-bbbbbbbb.log"
    garbage.write_bytes(b"\x00\x00\x10\x00not a spool at all" * 100)
    good = directory / "spool-3-cccccccc.log"
    good.write_bytes(b"".join(frame(Message("trainwire.interactions", b"k", b"good%d " % i), 0) for i in range(5)))

    events = [Event("next", Interaction(prompt=f"p{i}", completion="c", reward=1.0)) for i in range(1000)]
    with caplog.at_level(logging.WARNING, logger="trainwire.emitter"), Emitter(embedded_settings) as emitter:
        for event in events:
            emitter.emit(event)
        assert emitter.flush(30)
        stats = emitter.stats()
    assert (stats.sent, stats.replayed, stats.failed) == (1000, 40 + 30 + 5, 0)
    assert not torn.exists() and not garbage.exists() and not good.exists()
    assert torn.with_name(torn.name + ".unreadable").exists()
    assert garbage.with_name(garbage.name + ".unreadable").exists()
    warnings = "\n".join(r.getMessage() for r in caplog.records)
    assert f"{torn} was set aside as {torn}.unreadable" in warnings
    assert f"{garbage} was set aside as {garbage}.unreadable" in warnings

    async def values() -> list[bytes]:
        consumer = open_consumer(embedded_settings, ["trainwire.interactions"], "check")
        await consumer.start()
        records = await consumer.getmany(timeout_ms=500, max_records=100_000)
        await consumer.stop()
        return [r.value for r in records]

    got = asyncio.run(values())
    assert len(got) == 1075
    replayed = sorted(v.split()[0] for v in got if not v.startswith(b"{"))
    assert replayed == sorted([b"%d" % i for i in [*range(40), *range(50, 80)]] + [b"good%d" % i for i in range(5)])


def test_the_spool_survives_a_full_disk_of_its_own(tmp_path: Path) -> None:
    """The bus log cannot be written and the disk fills: the spool keeps whole records, all delivered later.

    The log's path is a directory, which even root cannot open for writing: each batch fails, is
    logged, and goes to the spool, which stops growing at the file size limit.
    """
    data_dir = tmp_path / "data"
    log = data_dir / "bus" / "trainwire.interactions.log"
    log.mkdir(parents=True)
    child = subprocess.run(
        [sys.executable, "-c", FULL_DISK_WRITER, str(data_dir), str(LIMIT), "2000"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr
    result = json.loads(child.stdout)
    assert result["sent"] == 0 and 0 < result["spooled"] < 2000
    assert result["spooled"] + result["failed"] == 2000
    assert f"cannot write {log}: [Errno 21] Is a directory" in child.stderr
    assert "events lost" in child.stderr

    (spool,) = spool_dir(data_dir, "local").glob("spool-*.log")
    with open(spool, "rb") as handle:
        scan = read_records(handle, 0, 1 << 24, spool, 10_000)
    spooled = [m for offset, record, _ in scan.records for m in messages_in(record, spool, offset)]
    assert (len(spooled), scan.gaps) == (result["spooled"], [])
    assert scan.end == spool.stat().st_size  # nothing after the last whole record

    log.rmdir()  # the bus can be written again
    settings = Settings(data_dir=data_dir)
    later = Event("full-disk", Interaction(prompt="later", completion="c", reward=1.0))
    with Emitter(settings) as next_process:
        next_process.emit(later)
        assert next_process.flush(30)
        assert next_process.stats().replayed == result["spooled"]
    ids = stored_ids(settings, result["spooled"] + 1)
    assert len(ids) == result["spooled"] + 1 and ids <= {*result["ids"], later.event_id}
