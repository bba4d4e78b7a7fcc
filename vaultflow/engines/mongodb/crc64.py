"""CRC-64 exactly as mongodump and mongorestore compute it for an archive's namespaces.

mongo-tools hashes every document of a namespace with Go's `hash/crc64` and the ECMA table:
`crc64.New(crc64.MakeTable(crc64.ECMA))` (mongo-tools common/archive/multiplexer.go, MuxIn.Open;
demultiplexer.go, RegularCollectionReceiver.Open). Go's ECMA constant is the bit-reflected
ECMA-182 polynomial 0xC96C5795D7870F42; `update` inverts the register before and after the
bytes (Go src/hash/crc64/crc64.go), which makes this the CRC-64/XZ of the catalogues: check
value 0x995DC9BBDF1939FA for b"123456789", 0 for no bytes.

The arithmetic is fastcrc's (`fastcrc.crc64.xz`, Rust, tens of GB/s; its `initial` argument
continues a running CRC), so hashing never limits a dump's throughput.
"""

from __future__ import annotations

from fastcrc import crc64 as _fastcrc64

MASK = (1 << 64) - 1


def update(crc: int, data) -> int:
    """Go's `crc64.Update(crc, crc64.MakeTable(crc64.ECMA), data)`: the CRC of everything hashed
    so far (`crc`, 0 to start) extended by `data` (any bytes-like object). Returns 0..2**64-1."""
    if not len(data):
        return crc
    return _fastcrc64.xz(bytes(data) if isinstance(data, memoryview) else data, initial=crc)


def checksum(data) -> int:
    """The CRC-64 (Go ECMA) of `data` alone."""
    return update(0, data)


class Crc64:
    """A running CRC-64 (Go ECMA), like Go's `hash.Hash64` from `crc64.New`: `update(bytes)` as
    often as needed, `value` the unsigned 64-bit sum so far."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def update(self, data) -> None:
        self.value = update(self.value, data)


def to_int64(value: int) -> int:
    """An unsigned 64-bit CRC as the signed int64 BSON stores (mongo-tools archive.go writes the
    uint64's 8 little-endian bytes as an int64 element)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def from_int64(value: int) -> int:
    """The unsigned 64-bit CRC an int64 BSON element holds."""
    return value & MASK
