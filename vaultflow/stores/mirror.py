"""MirrorStore: every object written to several stores in a single pass over the source.

The source (often a pg_dump pipe) can be read only once, so `put` fans it out: the calling
thread reads chunks and hands each one to a bounded queue per member, and one thread per
member runs that member's own `put` on a queue-backed reader. Memory stays bounded at
about members x QUEUE_CHUNKS x CHUNK_SIZE (plus whatever each member buffers itself).

Failure: when a member fails, the others' readers raise `MirrorAborted`, so each member's
own atomic put discards its partial data (LocalStore drops its temp file, S3 aborts the
multipart upload). A member can only have committed if it finished before another member
failed at its very end (e.g. CompleteMultipartUpload); such copies are deleted again unless
the key already existed there before this put (then the new bytes are left in place rather
than destroying the old version). Members that could not be cleaned up are named in the error.
"""

from __future__ import annotations

import builtins  # `list` is also a method of MirrorStore
import queue
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import BinaryIO

from vaultflow.errors import NotFoundError, StoreUnavailableError, VaultflowError
from vaultflow.stores.base import CHUNK_SIZE, ObjectInfo, Readable, Store

QUEUE_CHUNKS = 8
_POLL = 0.1  # seconds between checks of the abort flag while blocked on a queue
_EOF = b""


class MirrorAborted(Exception):
    """Raised inside a member's put when another member (or the source) failed."""


class _QueueReader:
    """A Readable fed by the producer; raises MirrorAborted once the put is abandoned."""

    def __init__(self, chunks: queue.Queue[bytes], abort: threading.Event):
        self._chunks, self._abort = chunks, abort
        self._pending = memoryview(b"")
        self._eof = False

    def _next_chunk(self) -> bytes:
        while True:
            if self._abort.is_set():
                raise MirrorAborted("mirror put abandoned because another member or the source failed")
            try:
                return self._chunks.get(timeout=_POLL)
            except queue.Empty:
                continue

    def read(self, size: int = -1) -> bytes:
        out: list[bytes] = []
        want = size if size is not None and size >= 0 else -1
        got = 0
        while (want < 0 or got < want) and not self._eof:
            if not self._pending:
                chunk = self._next_chunk()
                if not chunk:
                    self._eof = True
                    break
                self._pending = memoryview(chunk)
            take = len(self._pending) if want < 0 else min(want - got, len(self._pending))
            out.append(bytes(self._pending[:take]))
            self._pending = self._pending[take:]
            got += take
        return b"".join(out)


class MirrorStore:
    def __init__(self, stores: Sequence[Store]):
        if not stores:
            raise ValueError("MirrorStore needs at least one member store")
        self._stores = tuple(stores)

    @property
    def stores(self) -> tuple[Store, ...]:
        return self._stores

    @property
    def description(self) -> str:
        return "mirror(" + ", ".join(s.description for s in self._stores) + ")"

    def put(self, key: str, reader: Readable, size_hint: int | None = None) -> int:
        abort = threading.Event()
        queues: list[queue.Queue[bytes]] = [queue.Queue(maxsize=QUEUE_CHUNKS) for _ in self._stores]
        results: list[int | BaseException | None] = [None] * len(self._stores)
        existed: list[bool] = [False] * len(self._stores)

        def member(i: int) -> None:
            store = self._stores[i]
            try:
                existed[i] = store.stat(key) is not None
                results[i] = store.put(key, _QueueReader(queues[i], abort), size_hint)
            except BaseException as exc:  # noqa: BLE001 - reported by the producer below
                results[i] = exc
                abort.set()

        threads = [
            threading.Thread(target=member, args=(i,), name=f"mirror-put-{i}", daemon=True)
            for i in range(len(self._stores))
        ]
        for t in threads:
            t.start()
        total = 0
        try:
            while not abort.is_set():
                chunk = reader.read(CHUNK_SIZE)
                self._hand_out(queues, threads, bytes(chunk) if chunk else _EOF, abort)
                if not chunk:
                    break
                total += len(chunk)
        except BaseException:
            abort.set()  # the source failed: members discard their partial data
            for t in threads:
                t.join()
            raise
        for t in threads:
            t.join()
        failed = [i for i, r in enumerate(results) if isinstance(r, BaseException) and not isinstance(r, MirrorAborted)]
        if not failed:
            for i, r in enumerate(results):
                if r != total:
                    raise StoreUnavailableError(
                        f"mirror member {self._stores[i].description} stored {r} of {total} bytes for {key!r}"
                    )
            return total
        raise self._failure(key, failed, results, existed)

    @staticmethod
    def _hand_out(
        queues: list[queue.Queue[bytes]], threads: list[threading.Thread], chunk: bytes, abort: threading.Event
    ) -> None:
        for q, consumer in zip(queues, threads, strict=True):
            # A member that returned without reading to EOF would never drain its queue;
            # skip it rather than block (its byte count then fails the check below).
            while not abort.is_set() and consumer.is_alive():
                try:
                    q.put(chunk, timeout=_POLL)
                    break
                except queue.Full:
                    continue

    def _failure(self, key: str, failed: list[int], results: list, existed: list[bool]) -> VaultflowError:
        first = results[failed[0]]
        names = ", ".join(self._stores[i].description for i in failed)
        msg = f"mirror put of {key!r} failed on {names}: {first}"
        leftovers = []
        for i, r in enumerate(results):
            if isinstance(r, int) and not existed[i]:
                try:
                    self._stores[i].delete(key)  # roll back a copy that committed
                except Exception:  # noqa: BLE001 - reported below instead
                    leftovers.append(self._stores[i].description)
            elif isinstance(r, int):
                leftovers.append(self._stores[i].description)
        if leftovers:
            msg += f"; the new object remains on {', '.join(leftovers)}"
        # Keep the member's error class (auth vs. transient decides retrying upstream).
        cls = type(first) if isinstance(first, VaultflowError) else StoreUnavailableError
        try:
            error: VaultflowError = cls(msg)
        except TypeError:
            error = VaultflowError(msg)
        error.__cause__ = first if isinstance(first, BaseException) else None
        return error

    def open(self, key: str) -> BinaryIO:
        misses: list[tuple[Store, Exception]] = []
        for store in self._stores:
            try:
                return store.open(key)
            except (NotFoundError, StoreUnavailableError) as exc:
                misses.append((store, exc))
        raise self._none_could(f"open {key!r}", misses)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        misses: list[tuple[Store, Exception]] = []
        for store in self._stores:
            try:
                # Materialise so a store failing mid-listing falls back instead of truncating.
                return iter(list(store.list(prefix)))
            except (NotFoundError, StoreUnavailableError) as exc:
                misses.append((store, exc))
        raise self._none_could(f"list {prefix!r}", misses)

    def delete(self, key: str) -> None:
        errors: list[tuple[Store, Exception]] = []
        for store in self._stores:
            try:
                store.delete(key)
            except Exception as exc:  # noqa: BLE001 - delete from the rest first
                errors.append((store, exc))
        if errors:
            detail = "; ".join(f"{s.description}: {e}" for s, e in errors)
            error = StoreUnavailableError(f"mirror delete of {key!r} failed on {detail}")
            raise error from errors[0][1]

    def stat(self, key: str) -> ObjectInfo | None:
        unavailable: list[str] = []
        for store in self._stores:
            try:
                info = store.stat(key)
            except StoreUnavailableError as exc:
                unavailable.append(f"{store.description}: {exc}")
                continue
            if info is not None:
                return info
        if len(unavailable) == len(self._stores):
            raise StoreUnavailableError("no mirror member reachable for stat: " + "; ".join(unavailable))
        return None

    @staticmethod
    def _none_could(what: str, misses: builtins.list[tuple[Store, Exception]]) -> VaultflowError:
        detail = "; ".join(f"{store.description}: {exc}" for store, exc in misses)
        cls = NotFoundError if all(isinstance(e, NotFoundError) for _, e in misses) else StoreUnavailableError
        return cls(f"no mirror member could {what}: {detail}")

    def sweep_partial(self, prefix: str, older_than: datetime) -> int:
        return sum(store.sweep_partial(prefix, older_than) for store in self._stores)
