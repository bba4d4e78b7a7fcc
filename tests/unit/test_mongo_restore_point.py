"""pitr.RestorePoint.entries: the entries a restore replays, across overlapping sources."""

from __future__ import annotations

import bson
from bson import Timestamp

from vaultflow.engines.mongodb.pitr import RestorePoint


def entry(seconds: int, increment: int = 1, ns: str = "app.t") -> bytes:
    return bson.encode({"ts": Timestamp(seconds, increment), "op": "i", "ns": ns, "o": {"_id": seconds}})


def source(*entries: bytes):
    return lambda: iter(entries)


def replayed(point: RestorePoint) -> list[tuple[int, int, str]]:
    return [(d["ts"].time, d["ts"].inc, d["ns"]) for d in map(bson.decode, point.entries())]


def test_a_slice_that_begins_inside_the_range_before_it_adds_only_what_follows():
    # the full at 100; an incremental's range (100, 130]; slices cut by time: the first begins
    # at 120, inside the incremental's range, and a transaction of two entries shares 140.
    incremental = source(entry(110), entry(120), entry(130))
    slices = source(entry(120), entry(130), entry(140, 1), entry(140, 1, "app.u"), entry(150))
    point = RestorePoint(base=None, after=Timestamp(100, 1), sources=[("incr", incremental), ("slices", slices)])  # type: ignore[arg-type]
    assert replayed(point) == [
        (110, 1, "app.t"),
        (120, 1, "app.t"),
        (130, 1, "app.t"),
        (140, 1, "app.t"),
        (140, 1, "app.u"),
        (150, 1, "app.t"),
    ]


def test_entries_at_or_before_the_start_are_left_out_and_excluded_collections_too():
    slices = source(entry(90), entry(100), entry(101), entry(102, ns="app.skip"), entry(103))
    point = RestorePoint(
        base=None,  # type: ignore[arg-type]
        after=Timestamp(100, 1),
        sources=[("slices", slices)],
        excluded=lambda db, coll: coll == "skip",
    )
    assert replayed(point) == [(101, 1, "app.t"), (103, 1, "app.t")]


def test_an_excluded_entry_still_moves_the_floor_for_the_next_source():
    first = source(entry(101), entry(105, ns="app.skip"))
    second = source(entry(104), entry(105, ns="app.skip"), entry(106))
    point = RestorePoint(
        base=None,  # type: ignore[arg-type]
        after=Timestamp(100, 1),
        sources=[("a", first), ("b", second)],
        excluded=lambda db, coll: coll == "skip",
    )
    assert replayed(point) == [(101, 1, "app.t"), (106, 1, "app.t")]
