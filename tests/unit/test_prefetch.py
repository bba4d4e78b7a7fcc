"""vaultflow.prefetch: order, errors, the bound on reading ahead, and stopping early."""

from __future__ import annotations

import threading
import time

import pytest

from vaultflow.prefetch import prefetched


def test_items_arrive_in_order_from_another_thread():
    producers: set[str] = set()

    def source():
        for i in range(50):
            producers.add(threading.current_thread().name)
            yield i

    assert list(prefetched(source(), depth=3, name="reader-x")) == list(range(50))
    assert producers == {"reader-x"}


def test_an_error_of_the_source_comes_after_the_items_before_it():
    def source():
        yield 1
        yield 2
        raise LookupError("collection app.orders dropped while it was read")

    seen = []
    with pytest.raises(LookupError, match="app.orders"):
        for item in prefetched(source()):
            seen.append(item)
    assert seen == [1, 2]


def test_reads_at_most_depth_items_ahead_plus_the_one_in_hand():
    produced = []

    def source():
        for i in range(100):
            produced.append(i)
            yield i

    it = prefetched(source(), depth=2)
    assert next(it) == 0
    # the thread fills the queue (2) and then holds one more, waiting to put it
    deadline = time.monotonic() + 30
    while len(produced) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # time enough to overrun the bound, were it not there
    assert produced == [0, 1, 2, 3]
    it.close()


def test_leaving_early_stops_the_thread_and_closes_the_source():
    closed = threading.Event()

    def source():
        try:
            yield from range(10_000)
        finally:
            closed.set()

    before = {t.name for t in threading.enumerate()}
    for item in prefetched(source(), name="reader-early"):
        if item == 3:
            break
    assert closed.is_set()  # closed in the thread, before the loop's caller continues
    assert "reader-early" not in {t.name for t in threading.enumerate()} - before


def test_depth_below_one_is_refused():
    with pytest.raises(ValueError, match="depth"):
        next(prefetched(iter([1]), depth=0))
