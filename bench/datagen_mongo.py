"""TPC-H rows as MongoDB documents: `tpchgen-cli` (PyPI, Rust) writes the tables, each row becomes one
document with typed fields (ints, doubles, dates, strings), loaded into two databases.

    data = load_tpch(client, work_dir, total_mb=500, log=print)

The dataset is split in two databases of about `total_mb / 2` each, TPC-H's parts 1 and 2 of one
scale factor (`tpchgen-cli --parts 2 --part N`): `tpch_a` (lineitem, orders, partsupp, customer,
part, supplier, nation, region) and `tpch_b` (the same but nation and region, which TPC-H puts in
part 1 only). The memory check backs up one database (half the data) and both (all of it).

Documents keep TPC-H's column names; `_id` is the primary key (`o_orderkey`, ...), a subdocument
for the composite keys of lineitem ({o, l}) and partsupp ({p, n}: the part's nth supplier row).
The size that counts is the BSON bytes of the documents (what dbStats calls dataSize).

Loading: raw BSON (RawBSONDocument) through unordered insert_many of LOAD_BATCH documents, one
thread and connection per collection, LOAD_THREADS at once. Measured on SecantusDB (2 cores,
busy): batches of 1,000, 5,000 and 20,000 and ordered or not load at the same ~16-18k docs/s
(~6 MB/s); RawBSONDocument ~20% faster than dicts; two connections on different collections
~25% faster than one, two on the same collection half as fast. The server (Python) is the
bottleneck, and slows as its oplog grows (one entry per document).
"""

from __future__ import annotations

import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import bson
from bson.raw_bson import RawBSONDocument

DATABASES = ("tpch_a", "tpch_b")
LOAD_BATCH = 2000  # documents per insert_many
LOAD_THREADS = 2
# BSON bytes of documents per unit of TPC-H scale factor with these field names (measured at
# SF 0.1: 291.8 MB; lineitem 77%, orders 13%, partsupp 7%); the scale is chosen with 3% to spare.
BSON_BYTES_PER_SF = 2.918e9
MARGIN = 1.03

# TPC-H columns: (name, type) with type i(nt), f(loat: DECIMAL as double), s(tring), d(ate)
COLUMNS: dict[str, list[tuple[str, str]]] = {
    "lineitem": [
        ("l_orderkey", "i"),
        ("l_partkey", "i"),
        ("l_suppkey", "i"),
        ("l_linenumber", "i"),
        ("l_quantity", "f"),
        ("l_extendedprice", "f"),
        ("l_discount", "f"),
        ("l_tax", "f"),
        ("l_returnflag", "s"),
        ("l_linestatus", "s"),
        ("l_shipdate", "d"),
        ("l_commitdate", "d"),
        ("l_receiptdate", "d"),
        ("l_shipinstruct", "s"),
        ("l_shipmode", "s"),
        ("l_comment", "s"),
    ],
    "orders": [
        ("o_orderkey", "i"),
        ("o_custkey", "i"),
        ("o_orderstatus", "s"),
        ("o_totalprice", "f"),
        ("o_orderdate", "d"),
        ("o_orderpriority", "s"),
        ("o_clerk", "s"),
        ("o_shippriority", "i"),
        ("o_comment", "s"),
    ],
    "partsupp": [
        ("ps_partkey", "i"),
        ("ps_suppkey", "i"),
        ("ps_availqty", "i"),
        ("ps_supplycost", "f"),
        ("ps_comment", "s"),
    ],
    "customer": [
        ("c_custkey", "i"),
        ("c_name", "s"),
        ("c_address", "s"),
        ("c_nationkey", "i"),
        ("c_phone", "s"),
        ("c_acctbal", "f"),
        ("c_mktsegment", "s"),
        ("c_comment", "s"),
    ],
    "part": [
        ("p_partkey", "i"),
        ("p_name", "s"),
        ("p_mfgr", "s"),
        ("p_brand", "s"),
        ("p_type", "s"),
        ("p_size", "i"),
        ("p_container", "s"),
        ("p_retailprice", "f"),
        ("p_comment", "s"),
    ],
    "supplier": [
        ("s_suppkey", "i"),
        ("s_name", "s"),
        ("s_address", "s"),
        ("s_nationkey", "i"),
        ("s_phone", "s"),
        ("s_acctbal", "f"),
        ("s_comment", "s"),
    ],
    "nation": [("n_nationkey", "i"), ("n_name", "s"), ("n_regionkey", "i"), ("n_comment", "s")],
    "region": [("r_regionkey", "i"), ("r_name", "s"), ("r_comment", "s")],
}
# _id of each collection: one column, or a composite {short name: column}; ORDINAL: the row's
# number among the consecutive rows with the same first key (at small scale factors TPC-H's
# supplier formula repeats a (partkey, suppkey) pair, so partsupp is keyed by the part's nth row)
ORDINAL = "#"
KEYS: dict[str, str | dict[str, str]] = {
    "lineitem": {"o": "l_orderkey", "l": "l_linenumber"},
    "orders": "o_orderkey",
    "partsupp": {"p": "ps_partkey", "n": ORDINAL},
    "customer": "c_custkey",
    "part": "p_partkey",
    "supplier": "s_suppkey",
    "nation": "n_nationkey",
    "region": "r_regionkey",
}


def _date(text: str) -> datetime:
    return datetime(int(text[:4]), int(text[5:7]), int(text[8:10]))


CONVERT: dict[str, Callable[[str], object]] = {"i": int, "f": float, "s": str, "d": _date}


def documents(table: str, path: Path) -> Iterator[RawBSONDocument]:
    """The rows of a TPC-H .tbl file (`|`-separated, trailing `|`) as raw BSON documents."""
    columns = [(name, CONVERT[kind]) for name, kind in COLUMNS[table]]
    key = KEYS[table]
    previous, ordinal = None, 0
    with open(path, encoding="utf-8") as rows:
        for line in rows:
            values = line.rstrip("\n").split("|")
            doc = {name: convert(value) for (name, convert), value in zip(columns, values, strict=False)}
            if isinstance(key, str):
                doc = {"_id": doc[key], **doc}
            else:
                ident = {k: doc[c] for k, c in key.items() if c != ORDINAL}
                first = next(iter(ident.values()))
                ordinal = ordinal + 1 if first == previous else 0
                previous = first
                doc = {"_id": {**ident, **{k: ordinal for k, c in key.items() if c == ORDINAL}}, **doc}
            yield RawBSONDocument(bson.encode(doc))


@dataclass
class Collection:
    database: str
    name: str
    documents: int = 0
    bson_bytes: int = 0
    seconds: float = 0.0


@dataclass
class Dataset:
    """What was loaded: per collection and in total, the scale factor, and how long it took."""

    scale_factor: float
    generate_seconds: float = 0.0
    load_seconds: float = 0.0
    collections: list[Collection] = field(default_factory=list)

    @property
    def bson_bytes(self) -> int:
        return sum(c.bson_bytes for c in self.collections)

    @property
    def documents(self) -> int:
        return sum(c.documents for c in self.collections)

    def database_bytes(self, database: str) -> int:
        return sum(c.bson_bytes for c in self.collections if c.database == database)

    def as_dict(self) -> dict:
        return {
            "generator": "tpchgen-cli",
            "scale_factor": self.scale_factor,
            "databases": list(DATABASES),
            "documents": self.documents,
            "bson_bytes": self.bson_bytes,
            "bson_mb": round(self.bson_bytes / 1e6, 1),
            "per_database_mb": {db: round(self.database_bytes(db) / 1e6, 1) for db in DATABASES},
            "generate_seconds": round(self.generate_seconds, 2),
            "load_seconds": round(self.load_seconds, 2),
            "load_mb_per_s": round(self.bson_bytes / 1e6 / self.load_seconds, 2) if self.load_seconds else None,
            "load_docs_per_s": round(self.documents / self.load_seconds) if self.load_seconds else None,
            "load_batch": LOAD_BATCH,
            "load_threads": LOAD_THREADS,
            "collections": [
                {
                    "ns": f"{c.database}.{c.name}",
                    "documents": c.documents,
                    "bson_mb": round(c.bson_bytes / 1e6, 1),
                    "seconds": round(c.seconds, 2),
                }
                for c in self.collections
            ],
        }


def generate(scale_factor: float, out: Path) -> dict[str, list[tuple[str, Path]]]:
    """tpchgen-cli writes parts 1 and 2 of `scale_factor` under `out`; per database, its
    (table, .tbl file) pairs, largest tables first."""
    cli = shutil.which("tpchgen-cli") or str(Path(__import__("sys").executable).with_name("tpchgen-cli"))
    files: dict[str, list[tuple[str, Path]]] = {}
    for part, database in enumerate(DATABASES, start=1):
        subprocess.run(
            [cli, "-s", str(scale_factor), "--parts", "2", "--part", str(part), "-o", str(out)],
            check=True,
            capture_output=True,
        )
        found = [(table, out / table / f"{table}.{part}.tbl") for table in COLUMNS]
        files[database] = sorted(
            [(t, p) for t, p in found if p.exists()], key=lambda tp: tp[1].stat().st_size, reverse=True
        )
    return files


def load_tpch(server, work: Path, total_mb: float, log: Callable[[str], None]) -> Dataset:
    """Generate TPC-H at the scale that gives about `total_mb` MB of BSON and load it into
    `server` (a vaultflow.testing.mongo_server.MongoProcess) as DATABASES. Returns the Dataset."""
    scale = round(total_mb * 1e6 * MARGIN / BSON_BYTES_PER_SF, 4)
    data = Dataset(scale_factor=scale)
    t0 = time.monotonic()
    files = generate(scale, work / "tpch")
    data.generate_seconds = time.monotonic() - t0
    log(f"  tpchgen-cli -s {scale} (2 parts): {data.generate_seconds:.1f} s")
    jobs: queue.Queue[tuple[str, str, Path]] = queue.Queue()
    # Interleave the databases, largest tables first, so both threads stay busy to the end.
    for pairs in zip(*(files[db] for db in DATABASES), strict=False):
        for db, (table, path) in zip(DATABASES, pairs, strict=False):
            jobs.put((db, table, path))
    for db in DATABASES:
        for table, path in files[db][len(files[DATABASES[1]]) :]:
            jobs.put((db, table, path))
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        with server.client(connectTimeoutMS=120_000, serverSelectionTimeoutMS=120_000) as client:
            while not errors:
                try:
                    db, table, path = jobs.get_nowait()
                except queue.Empty:
                    return
                started = time.monotonic()
                coll = Collection(db, table)
                try:
                    target = client[db][table]
                    batch: list[RawBSONDocument] = []
                    for doc in documents(table, path):
                        batch.append(doc)
                        coll.bson_bytes += len(doc.raw)
                        if len(batch) >= LOAD_BATCH:
                            target.insert_many(batch, ordered=False)
                            coll.documents += len(batch)
                            batch = []
                    if batch:
                        target.insert_many(batch, ordered=False)
                        coll.documents += len(batch)
                except BaseException as exc:  # noqa: BLE001 - re-raised by the caller
                    errors.append(exc)
                    return
                coll.seconds = time.monotonic() - started
                with lock:
                    data.collections.append(coll)
                log(
                    f"  loaded {db}.{table}: {coll.documents} documents, {coll.bson_bytes / 1e6:.1f} MB in "
                    f"{coll.seconds:.1f} s ({coll.bson_bytes / 1e6 / coll.seconds:.1f} MB/s)"
                )

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, name=f"load-{i}") for i in range(LOAD_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    data.load_seconds = time.monotonic() - t0
    if errors:
        raise errors[0]
    shutil.rmtree(work / "tpch", ignore_errors=True)
    data.collections.sort(key=lambda c: (c.database, -c.bson_bytes))
    return data
