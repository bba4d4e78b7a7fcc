"""`python -m bench.mongo_writer`: a steady write load on a TPC-H database, in a process of its own
(so its Python does not share a GIL with the oplog shipper being measured).

Every TICK seconds a batch of `rate * TICK` operations: 40% inserts of new orders (o_orderkey from
10**9 up), 50% updates (`$inc` of a customer's c_acctbal with `$set` of its c_comment; `$set` of an
existing order's o_orderstatus), 10% deletes of orders this writer inserted. Each operation is
one oplog entry. Falls behind quietly when the server is slower than `rate` (the achieved rate is
reported). Prints one JSON line: operations by kind, seconds, and the achieved entries/s.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from datetime import datetime

from pymongo import MongoClient, UpdateOne

TICK = 0.1  # seconds between batches
FIRST_NEW_ORDER = 10**9
SAMPLE = 50_000  # existing customers and orders the updates pick from


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--database", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--rate", type=float, required=True, help="operations (oplog entries) per second")
    args = parser.parse_args()

    rng = random.Random(10)
    client: MongoClient = MongoClient(
        args.host, args.port, directConnection=True, connectTimeoutMS=120_000, serverSelectionTimeoutMS=120_000
    )
    db = client[args.database]
    # Existing keys to update (TPC-H order keys are sparse: an update of a missing one writes nothing).
    customers = [doc["_id"] for doc in db.customer.find({}, {"_id": 1}).limit(SAMPLE)]
    orders_ids = [doc["_id"] for doc in db.orders.find({}, {"_id": 1}).limit(SAMPLE)]
    counts = {"insert": 0, "update": 0, "delete": 0}
    next_order, oldest_own = FIRST_NEW_ORDER, FIRST_NEW_ORDER
    per_tick = max(10, round(args.rate * TICK))
    started = time.monotonic()
    deadline = started + args.seconds
    tick = started
    while time.monotonic() < deadline:
        inserts, updates = round(per_tick * 0.4), round(per_tick * 0.5)
        deletes = per_tick - inserts - updates
        orders = [
            {
                "_id": next_order + i,
                "o_orderkey": next_order + i,
                "o_custkey": rng.choice(customers),
                "o_orderstatus": "O",
                "o_totalprice": round(rng.uniform(1000, 400000), 2),
                "o_orderdate": datetime(2026, 11, 29),
                "o_orderpriority": "3-MEDIUM",
                "o_clerk": f"Clerk#{rng.randint(1, 1000):09d}",
                "o_shippriority": 0,
                "o_comment": "bench writer order " + "x" * rng.randint(10, 60),
            }
            for i in range(inserts)
        ]
        db.orders.insert_many(orders, ordered=False)
        next_order += inserts
        counts["insert"] += inserts
        half = updates // 2
        db.customer.bulk_write(
            [
                UpdateOne(
                    {"_id": rng.choice(customers)},
                    {"$inc": {"c_acctbal": 1.25}, "$set": {"c_comment": f"touched {rng.random():.6f}"}},
                )
                for _ in range(half)
            ],
            ordered=False,
        )
        db.orders.bulk_write(
            [
                UpdateOne({"_id": rng.choice(orders_ids)}, {"$set": {"o_orderstatus": rng.choice("FOP")}})
                for _ in range(updates - half)
            ],
            ordered=False,
        )
        counts["update"] += updates
        doomed = list(range(oldest_own, min(oldest_own + deletes, next_order)))
        if doomed:
            db.orders.delete_many({"_id": {"$in": doomed}})
            oldest_own += len(doomed)
            counts["delete"] += len(doomed)
        tick += TICK
        pause = tick - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    seconds = time.monotonic() - started
    client.close()
    total = sum(counts.values())
    print(
        json.dumps(
            {
                "ops": counts,
                "entries": total,
                "seconds": round(seconds, 2),
                "entries_per_second": round(total / seconds, 1),
                "target_rate": args.rate,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
