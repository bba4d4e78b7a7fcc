"""The pure parts of the oplog archive: reading an entry's facts from raw BSON, which entries a
selection of databases includes, oplog-only archives, and cutting a stream of entries into named
slices whose records say where each continues from."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime

import bson
import pytest
from bson import Binary, Code, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp

from vaultflow.engines.mongodb.archive import ArchiveWriter
from vaultflow.engines.mongodb.oplog import (
    OplogEntry,
    Selection,
    entry_facts,
    read_oplog_archive,
    write_oplog_archive,
)
from vaultflow.engines.mongodb.oplog_slices import (
    NOT_ARCHIVED,
    ROLLED_OVER,
    Position,
    SliceCut,
    SliceRecord,
    break_before,
    first_after,
    head_gap,
    slice_name,
)
from vaultflow.errors import IntegrityError
from vaultflow.logarchive import Gap


def entry(ns: str, ts: Timestamp, op: str = "i", **fields) -> dict:
    return {"op": op, "ns": ns, "o": fields.pop("o", {"_id": 1}), "ts": ts, "wall": datetime(2026, 1, 1, tzinfo=UTC)}


def raw(doc: dict) -> bytes:
    return bson.encode(doc)


def oplog_entry(ns: str, ts: Timestamp, selection: Selection, size: int = 0, op: str = "i") -> OplogEntry:
    data = raw({**entry(ns, ts, op), "pad": "x" * size})
    facts = entry_facts(data)
    return OplogEntry(data, facts, selection.includes(facts, data))


def test_entry_facts_reads_ts_op_ns_wall_past_every_bson_type():
    doc = {
        "op": "u",
        "ns": "app.orders",
        "ui": Binary(uuid.uuid4().bytes, 4),
        "o": {"$v": 2, "diff": {"u": {"x": [1, 2, {"y": "z"}]}}},
        "o2": {"_id": ObjectId()},
        "regex": Regex("a.*b", "i"),
        "code": Code("f()", {"a": 1}),
        "plain_code": Code("g()"),
        "dec": Decimal128("1.5"),
        "min": MinKey(),
        "max": MaxKey(),
        "none": None,
        "flag": True,
        "real": 1.5,
        "long": Int64(3),
        "int": 4,
        "ts": Timestamp(1764400000, 7),
        "wall": datetime(2026, 1, 1, 0, 0, 1, 500000, tzinfo=UTC),
        "t": Int64(1),
    }
    facts = entry_facts(raw(doc))
    assert facts.ts == Timestamp(1764400000, 7) and (facts.op, facts.ns) == ("u", "app.orders")
    assert facts.wall_ms == int(datetime(2026, 1, 1, 0, 0, 1, 500000, tzinfo=UTC).timestamp() * 1000)
    with pytest.raises(IntegrityError, match="no ts"):
        entry_facts(raw({"op": "n", "ns": ""}))
    with pytest.raises(IntegrityError, match="not a readable BSON"):
        entry_facts(raw(doc)[:-20] + b"\x00")


@pytest.mark.parametrize(
    ("ns", "o", "app_only", "every_user_db"),
    [
        ("app.orders", {"_id": 1}, True, True),
        ("app.$cmd", {"create": "x"}, True, True),
        ("other.orders", {"_id": 1}, False, True),
        ("", {"msg": "periodic noop"}, False, False),
        ("config.system.sessions", {"_id": 1}, False, False),
        ("admin.system.users", {"_id": 1}, False, False),
        ("local.oplog.rs", {"_id": 1}, False, False),
        ("admin.$cmd", {"applyOps": [{"op": "i", "ns": "app.orders", "o": {"_id": 1}}]}, True, True),
        ("admin.$cmd", {"applyOps": [{"op": "i", "ns": "other.x", "o": {"_id": 1}}]}, False, True),
        ("admin.$cmd", {"applyOps": [{"op": "i", "ns": "config.x", "o": {"_id": 1}}]}, False, False),
        ("admin.$cmd", {"commitTransaction": 1, "commitTimestamp": Timestamp(1, 1)}, True, True),
        ("other.$cmd", {"renameCollection": "other.a", "to": "app.b"}, True, True),
        ("other.$cmd", {"renameCollection": "other.a", "to": "other.b"}, False, True),
    ],
)
def test_a_selection_includes_its_databases_commands_and_transactions(ns, o, app_only, every_user_db):
    data = raw({"op": "c" if "$cmd" in ns else "i", "ns": ns, "o": o, "ts": Timestamp(5, 1)})
    facts = entry_facts(data)
    assert Selection(["app"]).includes(facts, data) is app_only
    assert Selection(None).includes(facts, data) is every_user_db


def test_oplog_archive_round_trip_declares_only_the_oplog():
    entries = [raw(entry("app.orders", Timestamp(10, i))) for i in range(1, 4)]
    buffer = io.BytesIO()
    written = write_oplog_archive(buffer, entries, "8.2.11")
    assert written == len(buffer.getvalue())
    assert list(read_oplog_archive(io.BytesIO(buffer.getvalue()))) == entries
    empty = io.BytesIO()
    write_oplog_archive(empty, [], "8.2.11")
    assert list(read_oplog_archive(io.BytesIO(empty.getvalue()))) == []

    other = io.BytesIO()
    writer = ArchiveWriter(other, server_version="8.2.11", tool_version="t")
    writer.add_collection("app", "orders", "")
    writer.begin()
    writer.end_collection("app", "orders")
    writer.close()
    with pytest.raises(IntegrityError, match="is not an oplog archive"):
        list(read_oplog_archive(io.BytesIO(other.getvalue()), "slice x"))
    damaged = bytearray(buffer.getvalue())
    damaged[-30] ^= 0xFF  # inside the last entry: the CRC at the EOF header fails
    with pytest.raises(IntegrityError, match="slice y"):
        list(read_oplog_archive(io.BytesIO(bytes(damaged)), "slice y"))


def test_slice_names_sort_in_log_order():
    names = [
        slice_name(Timestamp(999, 5)),
        slice_name(Timestamp(1000, 2)),
        slice_name(Timestamp(1000, 2), 3),
        slice_name(Timestamp(1000, 2), 12),
        slice_name(Timestamp(1000, 10)),
        slice_name(Timestamp(1000, 4_000_000_000)),
        slice_name(Timestamp(1001, 1)),
    ]
    assert sorted(names) == names and len(set(names)) == len(names)
    assert names[1] == "0000001000-0000000002" and names[2] == "0000001000-0000000002-00000003"


def cut_all(entries, seconds: int, limit: int, after: Position | None = None) -> list[SliceCut]:
    """What OplogArchive.ship does with a read: cut before an entry when full or past the
    window; the rest is the unfinished tail (returned last)."""
    cut, done = SliceCut(after, None, seconds, limit), []
    for item in entries:
        if cut.started and (cut.full or cut.window_over(item.ts.time)):
            cut.close(at_boundary=item.ts != cut.end.ts)
            done.append(cut)
            cut = cut.following()
        cut.add(item)
    return [*done, cut]


def test_cuts_by_size_keep_positions_inside_a_shared_ts_and_name_the_rest():
    app = Selection(["app"])
    txn = Timestamp(100, 7)
    stream = [
        oplog_entry("", Timestamp(100, 1), app, op="n"),
        oplog_entry("app.a", Timestamp(100, 2), app, 200),
        *[oplog_entry(ns, txn, app, 200) for ns in ("app.a", "other.b", "app.a", "app.a", "app.a")],
        oplog_entry("other.b", Timestamp(100, 9), app, 200),
        oplog_entry("app.a", Timestamp(100, 10), app, 200),
        oplog_entry("app.a", Timestamp(100, 11), app, 200),
    ]
    one = len(stream[1].raw)
    first, second, third, tail = cut_all(stream, seconds=60, limit=2 * one)
    assert first.name == slice_name(Timestamp(100, 2)), "named by its first included entry, not the noop"
    assert [len(c.entries) for c in (first, second, third, tail)] == [2, 2, 2, 1]
    assert first.end == Position(txn, 1), "cut inside the transaction: one of its entries is stored"
    assert second.after == Position(txn, 1) and second.name == slice_name(txn, 1)
    assert second.end == Position(txn, 3) and third.name == slice_name(txn, 3)
    assert third.end == Position(Timestamp(100, 10), 0), "cut before an entry of another ts: a boundary"
    assert tail.after == third.end and tail.name == slice_name(Timestamp(100, 11))


def test_cuts_by_time_span_at_most_the_window_and_an_empty_window_still_moves_the_position():
    app = Selection(["app"])
    stream = [
        oplog_entry("app.a", Timestamp(100, 1), app),
        oplog_entry("app.a", Timestamp(105, 1), app),
        oplog_entry("other.b", Timestamp(110, 1), app),  # a window with nothing of app's
        oplog_entry("other.b", Timestamp(111, 1), app),
        oplog_entry("app.a", Timestamp(121, 1), app),
    ]
    first, empty, tail = cut_all(stream, seconds=10, limit=1 << 20)
    assert [len(c.entries) for c in (first, empty, tail)] == [2, 0, 1]
    assert first.end == Position(Timestamp(105, 1)) and empty.after == first.end
    assert empty.name == slice_name(Timestamp(110, 1)) and empty.end == Position(Timestamp(111, 1))
    assert tail.window_over(131) and not tail.window_over(130.9)


def record(name: str, after: Position | None, end: Position, start: Timestamp, rolled: Position | None = None):
    return SliceRecord(
        name, after, rolled, start, end, 1, start, end.ts, None, None, None, "set", "8.2.11", 1, 1, "s", "r", "now"
    )


def test_records_round_trip_and_gaps_are_named_with_their_reason():
    a = record("a", None, Position(Timestamp(10, 1)), Timestamp(5, 1))
    b = record("b", a.end, Position(Timestamp(20, 3), 2), Timestamp(11, 1))
    parsed = SliceRecord.parse(b.encode(), "b", "key")
    assert parsed == b
    with pytest.raises(IntegrityError, match="names slice 'b', not 'c'"):
        SliceRecord.parse(b.encode(), "c", "key")
    with pytest.raises(IntegrityError, match="unreadable"):
        SliceRecord.parse(b"{}", "b", "key")

    assert break_before(a, b) is None
    lost = record("d", Position(Timestamp(30, 1)), Position(Timestamp(40, 1)), Timestamp(31, 1))
    assert break_before(b, lost) == Gap("20:3", "30:1", NOT_ARCHIVED)
    rolled = record("e", None, Position(Timestamp(50, 1)), Timestamp(45, 1), rolled=b.end)
    assert break_before(b, rolled) == Gap("20:3", "45:1", ROLLED_OVER)

    records = [a, b, lost]
    assert first_after(records, Timestamp(10, 1)) == 1 and first_after(records, Timestamp(9, 9)) == 0
    assert first_after(records, Timestamp(40, 1)) is None
    assert head_gap(Timestamp(7, 1), a) is None, "read from the oplog's oldest entry, at 5:1"
    assert head_gap(Timestamp(3, 1), a) == Gap("3:1", "5:1", NOT_ARCHIVED)
    assert head_gap(Timestamp(25, 1), lost) == Gap("25:1", "30:1", NOT_ARCHIVED)
