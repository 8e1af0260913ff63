"""ClickHouse's own block compression (``compress=1``/``decompress=1``), checked against the engine itself.

Every block of a MergeTree column file is in that format, with its CityHash128 v1.0.2 checksum:
the blocks chdb writes are the reference the Python CityHash must agree with, byte for byte.
"""

from __future__ import annotations

import struct
from pathlib import Path

import chdb
import pytest

from trainwire.store.native_compression import NativeCompressionError, city_hash128, compress, decompress


def test_city_hash128_agrees_with_every_block_chdb_writes(tmp_path: Path) -> None:
    engine = chdb.connect(str(tmp_path / "chdb"))
    engine.query(
        "CREATE TABLE t (a UInt64, s String, z UInt8) ENGINE = MergeTree ORDER BY a"
        " SETTINGS min_bytes_for_wide_part = 0"
    )
    engine.query("INSERT INTO t SELECT number, repeat(toString(number), number % 50), 1 FROM numbers(100000)")
    engine.query("INSERT INTO t SELECT number, 'x', 2 FROM numbers(3)")  # small blocks: the short-input paths
    engine.close()
    sizes = set()
    for column_file in (tmp_path / "chdb").rglob("*.bin"):
        body = column_file.read_bytes()
        at = 0
        while at < len(body):
            (size,) = struct.unpack_from("<I", body, at + 17)
            low, high = city_hash128(body[at + 16 : at + 16 + size])
            assert low.to_bytes(8, "little") + high.to_bytes(8, "little") == body[at : at + 16], column_file
            sizes.add(size)
            at += 16 + size
        assert decompress(body)  # and the whole file decompresses with its checksums verified
    assert min(sizes) < 16 and any(16 < s < 128 for s in sizes) and max(sizes) > 4096  # every path of the hash


def test_compressed_blocks_round_trip_and_a_bad_checksum_is_refused() -> None:
    data = b"".join(b"%d,row\n" % i for i in range(150_000))  # two blocks
    assert decompress(compress(data)) == data
    corrupt = bytearray(compress(b"some data"))
    corrupt[-1] ^= 0xFF
    with pytest.raises(NativeCompressionError, match="checksum"):
        decompress(bytes(corrupt))
    with pytest.raises(NativeCompressionError, match="cut short"):
        decompress(compress(b"some data")[:20])
