"""ClickHouse's own block compression: what ``compress=1`` and ``decompress=1`` mean over HTTP.

ClickHouse's clients (the JDBC driver by default) may ask for the response in ClickHouse's
compressed format instead of an HTTP ``Content-Encoding``: a sequence of blocks, each

    checksum (16 bytes: CityHash128 v1.0.2 of the rest of the block, low then high 64 bits, LE)
    method   (1 byte: 0x82 LZ4, 0x02 none)
    size     (4 bytes LE: compressed size, these 9 header bytes included)
    original (4 bytes LE: the size of the data once decompressed)
    data

The checksum is CityHash v1.0.2 (an old version ClickHouse froze for this format), written out
here as its reference C++ does it; the tests check it against the blocks chdb writes itself. In
pure Python it hashes about 8 MB of compressed data a second: plenty for the pages a tool such as
DBeaver reads; a bulk export is faster with HTTP compression (``enable_http_compression=1``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

_MASK = (1 << 64) - 1
_K0 = 0xC3A5C85C97CB3127
_K1 = 0xB492B66FBE98F273
_K2 = 0x9AE16A3B2F90404F
_K3 = 0xC949D7C7509E6557
_KMUL = 0x9DDFEA08EB382D69

METHOD_NONE = 0x02
METHOD_LZ4 = 0x82
BLOCK_SIZE = 1 << 20
"""Uncompressed bytes per block (ClickHouse's max_compress_block_size)."""
_HEADER = struct.Struct("<BII")


class NativeCompressionError(ValueError):
    """A compressed body that is not ClickHouse's format, or whose checksum does not match."""


def _fetch64(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 8], "little")


def _fetch32(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 4], "little")


def _rotate(value: int, shift: int) -> int:
    return value if shift == 0 else ((value >> shift) | (value << (64 - shift))) & _MASK


def _shift_mix(value: int) -> int:
    return value ^ (value >> 47)


def _hash16(u: int, v: int) -> int:
    a = ((u ^ v) * _KMUL) & _MASK
    a ^= a >> 47
    b = ((v ^ a) * _KMUL) & _MASK
    b ^= b >> 47
    return (b * _KMUL) & _MASK


def _hash_0_to_16(data: bytes, at: int, length: int) -> int:
    if length > 8:
        a = _fetch64(data, at)
        b = _fetch64(data, at + length - 8)
        return _hash16(a, _rotate((b + length) & _MASK, length)) ^ b
    if length >= 4:
        a = _fetch32(data, at)
        return _hash16((length + (a << 3)) & _MASK, _fetch32(data, at + length - 4))
    if length > 0:
        y = (data[at] + (data[at + (length >> 1)] << 8)) & 0xFFFFFFFF
        z = (length + (data[at + length - 1] << 2)) & 0xFFFFFFFF
        return (_shift_mix(((y * _K2) ^ (z * _K3)) & _MASK) * _K2) & _MASK
    return _K2


def _weak_hash32(data: bytes, at: int, a: int, b: int) -> tuple[int, int]:
    w, x, y, z = (_fetch64(data, at + i) for i in (0, 8, 16, 24))
    a = (a + w) & _MASK
    b = _rotate((b + a + z) & _MASK, 21)
    c = a
    a = (a + x + y) & _MASK
    b = (b + _rotate(a, 44)) & _MASK
    return (a + z) & _MASK, (b + c) & _MASK


def _city_murmur(data: bytes, at: int, length: int, low: int, high: int) -> tuple[int, int]:
    a, b = low, high
    if length <= 16:
        a = (_shift_mix((a * _K1) & _MASK) * _K1) & _MASK
        c = (b * _K1 + _hash_0_to_16(data, at, length)) & _MASK
        d = _shift_mix((a + (_fetch64(data, at) if length >= 8 else c)) & _MASK)
    else:
        c = _hash16((_fetch64(data, at + length - 8) + _K1) & _MASK, a)
        d = _hash16((b + length) & _MASK, (c + _fetch64(data, at + length - 16)) & _MASK)
        a = (a + d) & _MASK
        remaining = length - 16
        while True:
            a ^= (_shift_mix((_fetch64(data, at) * _K1) & _MASK) * _K1) & _MASK
            a = (a * _K1) & _MASK
            b ^= a
            c ^= (_shift_mix((_fetch64(data, at + 8) * _K1) & _MASK) * _K1) & _MASK
            c = (c * _K1) & _MASK
            d ^= c
            at += 16
            remaining -= 16
            if remaining <= 0:
                break
    a = _hash16(a, c)
    b = _hash16(d, b)
    return a ^ b, _hash16(b, a)


def _city128_with_seed(data: bytes, at: int, length: int, low: int, high: int) -> tuple[int, int]:
    if length < 128:
        return _city_murmur(data, at, length, low, high)
    x, y = low, high
    z = (length * _K1) & _MASK
    v0 = (_rotate(y ^ _K1, 49) * _K1 + _fetch64(data, at)) & _MASK
    v1 = (_rotate(v0, 42) * _K1 + _fetch64(data, at + 8)) & _MASK
    w0 = (_rotate((y + z) & _MASK, 35) * _K1 + x) & _MASK
    w1 = (_rotate((x + _fetch64(data, at + 88)) & _MASK, 53) * _K1) & _MASK
    while True:
        for _ in range(2):  # the reference unrolls two rounds of 64 bytes
            x = (_rotate((x + y + v0 + _fetch64(data, at + 16)) & _MASK, 37) * _K1) & _MASK
            y = (_rotate((y + v1 + _fetch64(data, at + 48)) & _MASK, 42) * _K1) & _MASK
            x ^= w1
            y ^= v0
            z = _rotate(z ^ w0, 33)
            v0, v1 = _weak_hash32(data, at, (v1 * _K1) & _MASK, (x + w0) & _MASK)
            w0, w1 = _weak_hash32(data, at + 32, (z + w1) & _MASK, y)
            z, x = x, z
            at += 64
        length -= 128
        if length < 128:
            break
    y = (y + _rotate(w0, 37) * _K0 + z) & _MASK
    x = (x + _rotate((v0 + z) & _MASK, 49) * _K0) & _MASK
    tail_done = 0
    while tail_done < length:
        tail_done += 32
        y = (_rotate((y - x) & _MASK, 42) * _K0 + v1) & _MASK
        w0 = (w0 + _fetch64(data, at + length - tail_done + 16)) & _MASK
        x = (_rotate(x, 49) * _K0 + w0) & _MASK
        w0 = (w0 + v0) & _MASK
        v0, v1 = _weak_hash32(data, at + length - tail_done, v0, v1)
    x = _hash16(x, v0)
    y = _hash16(y, w0)
    return (_hash16((x + v1) & _MASK, w1) + y) & _MASK, _hash16((x + w1) & _MASK, (y + v1) & _MASK)


def city_hash128(data: bytes) -> tuple[int, int]:
    """CityHash128 v1.0.2 of ``data``: (low 64 bits, high 64 bits)."""
    length = len(data)
    if length >= 16:
        return _city128_with_seed(data, 16, length - 16, _fetch64(data, 0) ^ _K3, _fetch64(data, 8))
    if length >= 8:
        low = _fetch64(data, 0) ^ ((length * _K0) & _MASK)
        return _city128_with_seed(b"", 0, 0, low, _fetch64(data, length - 8) ^ _K1)
    return _city128_with_seed(data, 0, length, _K0, _K1)


def _checksum(block: bytes) -> bytes:
    low, high = city_hash128(block)
    return low.to_bytes(8, "little") + high.to_bytes(8, "little")


def compress(data: bytes) -> bytes:
    """``data`` as ClickHouse's compressed blocks (LZ4), as a server answers ``compress=1``."""
    import lz4.block

    out = []
    for start in range(0, len(data), BLOCK_SIZE):
        chunk = data[start : start + BLOCK_SIZE]
        packed = lz4.block.compress(chunk, store_size=False)
        block = _HEADER.pack(METHOD_LZ4, _HEADER.size + len(packed), len(chunk)) + packed
        out.append(_checksum(block) + block)
    return b"".join(out)


MAX_BLOCK_SIZE = 1 << 30
"""The largest compressed block ClickHouse accepts (DBMS_MAX_COMPRESSED_SIZE)."""


def decompress(body: bytes) -> bytes:
    """ClickHouse's compressed blocks (LZ4 or none) back to the data; checksums verified."""
    return b"".join(decompress_stream([body]))


def decompress_stream(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """ClickHouse's compressed blocks back to the data block by block, as the pieces of the body arrive
    (only the block being read is held); checksums verified."""
    import lz4.block

    buffer, at = bytearray(), 0  # at: where the buffer starts in the body
    for piece in pieces:
        buffer += piece
        while len(buffer) >= 16 + _HEADER.size:
            method, size, original = _HEADER.unpack_from(buffer, 16)
            if not _HEADER.size <= size <= MAX_BLOCK_SIZE:
                raise NativeCompressionError(f"the compressed block at byte {at} claims an impossible size {size}")
            if len(buffer) < 16 + size:
                break
            block = bytes(buffer[16 : 16 + size])
            if _checksum(block) != buffer[:16]:
                raise NativeCompressionError(f"the checksum of the compressed block at byte {at} does not match")
            payload = block[_HEADER.size :]
            if method == METHOD_LZ4:
                yield lz4.block.decompress(payload, uncompressed_size=original)
            elif method == METHOD_NONE:
                yield payload
            else:
                raise NativeCompressionError(f"unknown compression method 0x{method:02x} at byte {at}")
            del buffer[: 16 + size]
            at += 16 + size
    if buffer:
        raise NativeCompressionError(f"a compressed block is cut short at byte {at}")
