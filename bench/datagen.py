"""Generate a benchmark database of a given size with server-side SQL only.

Four tables with realistic, partly compressible rows:

    users    names, emails, country/plan codes, a short bio (text, very compressible)
    orders   enum-like status/currency, numeric amounts, addresses (compressible)
    events   JSONB payloads with a random session id (moderately compressible)
    blobs    random bytea (sha256 output; in the dump it is hex: compresses ~2x at best)

Each table is created, filled with INSERT ... SELECT generate_series(...), given its
primary key and committed in ONE transaction, so with wal_level=minimal the bulk load
skips WAL. Two connections work in parallel (the machine has 2 cores). Row counts come
from a small pilot load that measures bytes per row (heap + toast + PK index).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import psycopg
from psycopg import sql

MiB = 1 << 20

FIRST = (
    "ARRAY['Alice','Bob','Carol','David','Emma','Farid','Grace','Hiro','Ines','Jonas',"
    "'Kofi','Lena','Mateo','Nina','Oscar','Priya','Quinn','Rosa','Sven','Tariq','Uma','Viktor']"
)
LAST = (
    "ARRAY['Smith','Garcia','Muller','Rossi','Kowalski','Nguyen','Okafor','Silva','Tanaka',"
    "'Novak','Jensen','Dubois','Haddad','Larsen','Moreau','Ivanova','Costa','Fischer']"
)
HOBBY = (
    "ARRAY['hiking','chess','baking','cycling','jazz','photography','gardening','climbing',"
    "'sailing','pottery','running','astronomy']"
)
STREET = (
    "ARRAY['Main St','Oak Avenue','Station Road','Harbour Lane','Mill Street','Park Road',"
    "'High Street','Church Lane','Elm Drive','Kings Way']"
)
CITY = "ARRAY['Lisbon','Berlin','Lyon','Austin','Osaka','Porto','Leeds','Turin','Krakow','Ghent']"

# name -> (share of the data, CREATE TABLE, SELECT producing the rows for ids lo..hi)
TABLES: dict[str, tuple[float, str, str]] = {
    "users": (
        0.10,
        """
        CREATE TABLE users (id bigint NOT NULL, name text, email text, country char(2),
            plan text, created_at timestamptz, bio text)""",
        f"""
        SELECT g, f || ' ' || l,
               lower(f) || '.' || lower(l) || g || '@' || (ARRAY['example.com','mail.test','corp.example'])[1 + g % 3],
               (ARRAY['PT','DE','FR','US','JP','GB','IT','PL','BE','NL'])[1 + (g * 7) % 10],
               (ARRAY['free','free','free','pro','team','enterprise'])[1 + (random() * 5)::int],
               timestamptz '2019-01-01' + g * interval '37 seconds',
               'Likes ' || (({HOBBY})[1 + (random() * 11)::int]) || ' and ' || (({HOBBY})[1 + (random() * 11)::int])
               || '. Member since ' || (2015 + g % 10) || '. Ref ' || left(md5(g::text), 12)
        FROM generate_series(LO_ID::bigint, HI_ID::bigint) g,
             LATERAL (SELECT ({FIRST})[1 + (random() * 21)::int] AS f,
                             ({LAST})[1 + (random() * 17)::int] AS l) n""",
    ),
    "orders": (
        0.30,
        """
        CREATE TABLE orders (id bigint NOT NULL, user_id bigint, status text, currency char(3),
            amount numeric(12,2), quantity int, created_at timestamptz, shipping_address text, note text)""",
        f"""
        SELECT g, 1 + (random() * 999999)::bigint,
               (ARRAY['pending','paid','shipped','delivered','cancelled','refunded'])[1 + (random() * 5)::int],
               (ARRAY['EUR','USD','GBP','JPY'])[1 + (random() * 3)::int],
               round((random() * 990 + 5)::numeric, 2), 1 + (random() * 9)::int,
               timestamptz '2023-01-01' + g * interval '11 seconds',
               (1 + (random() * 300)::int) || ' ' || ({STREET})[1 + (random() * 9)::int] || ', '
               || ({CITY})[1 + (random() * 9)::int],
               CASE WHEN random() < 0.3 THEN 'Please leave the parcel at the front desk. Order ' || g
                    WHEN random() < 0.5 THEN 'gift wrap: yes; invoice to company address'
                    ELSE '' END
        FROM generate_series(LO_ID::bigint, HI_ID::bigint) g""",
    ),
    "events": (
        0.35,
        """
        CREATE TABLE events (id bigint NOT NULL, user_id bigint, kind text, occurred_at timestamptz,
            payload jsonb)""",
        """
        SELECT g, 1 + (random() * 999999)::bigint,
               (ARRAY['page_view','click','add_to_cart','checkout','login','logout','search'])[1 + (random() * 6)::int],
               timestamptz '2024-06-01' + g * interval '250 milliseconds',
               jsonb_build_object(
                   'session', md5(g::text || 's'),
                   'path', '/products/' || (random() * 5000)::int,
                   'referrer', (ARRAY['google','newsletter','direct','partner'])[1 + (random() * 3)::int],
                   'ua', (ARRAY['Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0',
                                'Mozilla/5.0 (Macintosh) Safari/605.1.15',
                                'Mozilla/5.0 (Windows NT 10.0) Chrome/126.0'])[1 + (random() * 2)::int],
                   'duration_ms', (random() * 30000)::int,
                   'ab', jsonb_build_array('exp' || (g % 7), random() < 0.5))
        FROM generate_series(LO_ID::bigint, HI_ID::bigint) g""",
    ),
    "blobs": (
        0.25,
        """
        CREATE TABLE blobs (id bigint NOT NULL, owner_id bigint, sha text, content bytea)""",
        """
        SELECT g, 1 + (random() * 999999)::bigint, md5(random()::text),
               sha256(int8send(g)) || sha256(int8send(g + 1000000000000)) || sha256(int8send(g + 2000000000000))
               || sha256(int8send(g + 3000000000000)) || sha256(int8send(g + 4000000000000))
               || sha256(int8send(g + 5000000000000)) || sha256(int8send(g + 6000000000000))
               || sha256(int8send(g + 7000000000000)) || sha256(int8send(g - 1000000000000))
               || sha256(int8send(g - 2000000000000)) || sha256(int8send(g - 3000000000000))
               || sha256(int8send(g - 4000000000000))
        FROM generate_series(LO_ID::bigint, HI_ID::bigint) g""",
    ),
}

PILOT_ROWS = 20_000


@dataclass
class Generated:
    database: str
    size_bytes: int
    seconds: float
    rows: dict[str, int]


def _ids(select: str, lo: int, hi: int) -> str:
    return select.replace("LO_ID", str(int(lo))).replace("HI_ID", str(int(hi)))


def _load_table(conninfo: str, table: str, rows: int, start: int = 1) -> None:
    """CREATE + INSERT + PRIMARY KEY in one transaction (WAL-skipping under wal_level=minimal)."""
    _, create, select = TABLES[table]
    with psycopg.connect(conninfo) as conn:  # one transaction, committed on exit
        conn.execute(create)
        conn.execute(f"INSERT INTO {table} {_ids(select, start, start + rows - 1)}")
        conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (id)").format(sql.Identifier(table)))


def _parallel(jobs: list[tuple], workers: int = 2) -> None:
    """Run _load_table(*job) on `workers` connections; re-raise the first failure."""
    queue = list(jobs)
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work() -> None:
        while not errors:
            with lock:
                if not queue:
                    return
                job = queue.pop(0)
            try:
                _load_table(*job)
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def bytes_per_row(pg) -> dict[str, float]:
    """Pilot: load PILOT_ROWS per table into a scratch database and measure their size."""
    pg.execute("DROP DATABASE IF EXISTS bench_pilot")
    pg.execute("CREATE DATABASE bench_pilot")
    try:
        _parallel([(pg.conninfo("bench_pilot"), t, PILOT_ROWS) for t in TABLES])
        pg.execute("VACUUM (FREEZE, ANALYZE)", dbname="bench_pilot")
        return {
            t: pg.execute(f"SELECT pg_total_relation_size('{t}')", dbname="bench_pilot")[0][0] / PILOT_ROWS
            for t in TABLES
        }
    finally:
        pg.execute("DROP DATABASE IF EXISTS bench_pilot")


def database_size(pg, database: str) -> int:
    return pg.execute(f"SELECT pg_database_size('{database}')")[0][0]


def generate(pg, database: str, size_mb: float, per_row: dict[str, float], log=print) -> Generated:
    """Create `database` with at least `size_mb` MiB (pg_database_size), VACUUM FREEZE'd."""
    started = time.monotonic()
    pg.execute(f'DROP DATABASE IF EXISTS "{database}"')
    pg.execute(f'CREATE DATABASE "{database}"')
    base = database_size(pg, database)
    want = size_mb * MiB * 1.02 - base
    rows = {t: max(1000, int(want * share / per_row[t])) for t, (share, _, _) in TABLES.items()}
    # Biggest loads first so the two workers finish at about the same time.
    jobs = sorted(((pg.conninfo(database), t, n) for t, n in rows.items()), key=lambda job: -job[2] * per_row[job[1]])
    _parallel(jobs)
    # Hint bits and visibility map set now, so the first contender does not pay for them.
    pg.execute("VACUUM (FREEZE, ANALYZE)", dbname=database)
    size = database_size(pg, database)
    extra_round = 0
    while size < size_mb * MiB:  # estimate fell short: top up the events table
        extra_round += 1
        more = int((size_mb * MiB * 1.02 - size) / per_row["events"]) + 1000
        _, _, select = TABLES["events"]
        pg.execute(f"INSERT INTO events {_ids(select, rows['events'] + 1, rows['events'] + more)}", dbname=database)
        rows["events"] += more
        pg.execute("VACUUM (FREEZE, ANALYZE) events", dbname=database)
        size = database_size(pg, database)
        if extra_round > 5:
            raise RuntimeError(f"could not grow {database} to {size_mb} MiB (at {size / MiB:.0f})")
    seconds = time.monotonic() - started
    log(
        f"  {database}: {size / MiB:.0f} MiB in {seconds:.1f} s "
        f"({', '.join(f'{t} {n:,}' for t, n in rows.items())} rows)"
    )
    return Generated(database=database, size_bytes=size, seconds=seconds, rows=rows)
