"""Read ahead of a consumer: an iterator driven by a thread of its own, a bounded number of
items in front of the one being processed.

    for batch in prefetched(server_batches(), depth=1, name="dump app.orders"):
        process(batch)      # while the next batch is already on its way

What it is for: a dump asks the server for the next batch only after it finished the last
one, so the server idles while vaultflow digests and compresses, and vaultflow idles while
the server reads. With the reading in a thread the two overlap (the thread waits on the socket
with the GIL released). Memory: `depth` items queued plus the one the thread is producing and
the one the consumer holds.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_END = object()
_POLL_S = 0.1


def prefetched(source: Iterable[T], *, depth: int = 1, name: str = "prefetch") -> Iterator[T]:
    """The items of `source`, in order, produced in a thread named `name` at most `depth` (>= 1)
    items ahead of the consumer. An exception raised by `source` is raised here, after the
    items produced before it. Leaving the loop early (break, an exception, close()) stops
    the thread after the item it is producing and closes `source` in that thread; the caller
    continues once the thread has ended, so nothing reads from `source` afterwards (a
    session or cursor it uses may be reused at once)."""
    if depth < 1:
        raise ValueError(f"depth must be at least 1, not {depth}")
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        iterator = iter(source)
        try:
            for item in iterator:
                if not put((item, None)):
                    return
            put((_END, None))
        except BaseException as exc:  # handed to the consumer, raised there
            put((_END, exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item, error = items.get()
            if item is _END:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join()
