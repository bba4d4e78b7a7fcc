"""The thread pool that streams a native backup's files (staging.in_threads), without a server."""

from __future__ import annotations

import threading

import pytest

from vaultflow.engines.clickhouse import staging
from vaultflow.errors import IntegrityError


def test_results_keep_the_jobs_order_and_done_runs_in_the_calling_thread():
    assert staging.FILE_THREADS >= 2
    started: list[int] = []
    lock = threading.Lock()

    def job(i: int):
        def run() -> int:
            with lock:
                started.append(i)
            return i * 10

        return run

    calls: list[tuple[int, int, str]] = []
    results = staging.in_threads(
        [job(i) for i in range(6)],
        [1, 50, 3, 40, 2, 30],
        lambda i, r: calls.append((i, r, threading.current_thread().name)),
    )
    assert results == [0, 10, 20, 30, 40, 50]
    assert sorted(calls) == [(i, i * 10, threading.current_thread().name) for i in range(6)]
    assert sorted(started) == list(range(6))


def test_the_heaviest_jobs_start_first(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(staging, "FILE_THREADS", 1)  # one thread: the start order is the queue's
    started: list[int] = []
    staging.in_threads([lambda i=i: started.append(i) for i in range(6)], [1, 50, 3, 40, 2, 30], lambda i, r: None)
    assert started == [1, 3, 5, 2, 4, 0]


def test_the_first_error_is_raised_and_jobs_not_started_never_run(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(staging, "FILE_THREADS", 1)
    ran: list[str] = []

    def fails() -> None:
        ran.append("heavy")
        raise IntegrityError("data.bin: ClickHouse checksum differs")

    def light() -> None:
        ran.append("light")

    with pytest.raises(IntegrityError, match="data.bin"):
        staging.in_threads([light, fails, light], [1, 100, 1], lambda i, r: None)
    assert ran == ["heavy"], "the pool stopped before the lighter jobs started"
