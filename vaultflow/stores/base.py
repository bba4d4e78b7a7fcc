"""The Store protocol: the five operations every backend offers.

Keys are '/'-separated relative paths ("postgres/prod/backups/<id>/manifest.json").
Payload goes in through `put(key, reader)`: the store pulls bytes from `reader.read(n)`
until it returns b"", so nothing is ever held whole in memory. A put is atomic: a reader
that raises leaves no object under `key` (partial data may remain under a temporary name
that `list` never shows).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, Protocol, runtime_checkable

CHUNK_SIZE = 1 << 20


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime  # timezone-aware UTC


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


@runtime_checkable
class Store(Protocol):
    """A flat key -> bytes store (local directory, S3 bucket, mirror of several)."""

    @property
    def description(self) -> str:
        """Where the store is, for messages and reports ('local:/srv/backups', 's3://bucket/prefix')."""
        ...

    def put(self, key: str, reader: Readable, size_hint: int | None = None) -> int:
        """Store everything `reader` yields under `key` atomically; returns the byte count.

        `size_hint` (expected bytes, if known) lets S3 choose a part size large enough that
        10,000 parts always suffice."""
        ...

    def open(self, key: str) -> BinaryIO:
        """A readable binary stream of the object; raises NotFoundError if it is missing."""
        ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every committed object whose key starts with `prefix`, in key order."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; a missing object is not an error."""
        ...

    def stat(self, key: str) -> ObjectInfo | None:
        """Size and modification time, or None when the object does not exist."""
        ...

    def sweep_partial(self, prefix: str, older_than: datetime) -> int:
        """Remove writes that never completed (a killed run's temp files or multipart
        uploads) under `prefix`, started before `older_than`. Returns how many."""
        ...


class BytesReader:
    """Adapts an in-memory bytes value (manifests, small files) to `Readable`."""

    def __init__(self, data: bytes):
        self._data = memoryview(data)
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = len(self._data) - self._pos
        chunk = self._data[self._pos : self._pos + size]
        self._pos += len(chunk)
        return bytes(chunk)


def put_bytes(store: Store, key: str, data: bytes) -> int:
    return store.put(key, BytesReader(data))


def get_bytes(store: Store, key: str) -> bytes:
    with store.open(key) as stream:
        return stream.read()
