"""Clock skew: a backup written by a worker whose clock runs 3 h fast, on real PostgreSQL.

How the skewed backup is made: a real logical backup is taken, then rewritten exactly as a
worker with a fast clock would have written it — its id, started_at and finished_at moved
3 h ahead, its objects copied under the new id, its manifest committed through the
repository (so the store stamps it with the real time, as S3 or a correctly-clocked file
server does) and the original removed. The engines take their times from the host clock,
which a test cannot set, so the rewrite is the honest way to get the bytes such a worker
stores.

Judged: retention (the prune flow) keeps the real backups it would keep without the skewed
one, and holds the skewed one; `latest` resolves to the newest real backup (restored and
checked by the oracle) and names the one it skipped, or refuses when only misdated ones
exist; `vaultflow list` and the verify flow report it with how far ahead and what to do.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.corpus.conftest import pg_engine
from tests.corpus.oracle import pg_differences, pg_state
from vaultflow.blocks import BackupRepository
from vaultflow.errors import RefusedError
from vaultflow.manifest import Manifest, new_backup_id, parse_backup_id
from vaultflow.repository import Repository
from vaultflow.retention import RetentionPolicy, plan

pytestmark = pytest.mark.usefixtures("prefect_api")
AHEAD = timedelta(hours=3)


def as_written_by_a_fast_clock(repo: Repository, real: Manifest, ahead: timedelta = AHEAD) -> Manifest:
    """The backup `real` as a worker whose clock runs `ahead` would have stored it."""
    moved = real.model_copy(
        update={
            "id": new_backup_id(real.kind, parse_backup_id(real.id)[0] + ahead),
            "started_at": real.started_at + ahead,
            "finished_at": real.finished_at + ahead,
        }
    )
    for obj in real.objects:
        with repo.store.open(repo.object_key(real, obj.key)) as source:
            repo.store.put(repo.object_key(moved, obj.key), source)
    repo.commit(moved)  # the store stamps the manifest with the real time
    repo.delete_backup(real)
    return moved


def add_rows(server, db: str, first: int, count: int) -> None:
    server.execute(
        f"INSERT INTO t SELECT g, md5(g::text) FROM generate_series({first}, {first + count - 1}) g", dbname=db
    )


def test_a_future_dated_backup_is_held_skipped_by_latest_and_reported(
    pg_server, fresh_db, corpus_ctx, tmp_path: Path, caplog
):
    db = fresh_db(pg_server)
    pg_server.execute("CREATE TABLE t (id int PRIMARY KEY, v text)", dbname=db)
    engine = pg_engine(pg_server, [db], name=f"skew{pg_server.version}")
    repo = corpus_ctx.repository
    add_rows(pg_server, db, 1, 100)
    b1 = engine.full_backup(corpus_ctx)
    add_rows(pg_server, db, 101, 100)
    b2 = engine.full_backup(corpus_ctx)
    state_b2 = pg_state(pg_server, db)
    add_rows(pg_server, db, 201, 100)
    skewed = as_written_by_a_fast_clock(repo, engine.full_backup(corpus_ctx))
    assert skewed.id > b2.id  # its id sorts after the real backups: the trap

    catalog = repo.catalog("postgres", engine.config.name)
    assert [m.id for m in catalog.manifests] == [b1.id, b2.id, skewed.id]
    # Judged by the store's clock, and also when this worker shares the fast clock.
    for now in (datetime.now(UTC), datetime.now(UTC) + AHEAD):
        problems = catalog.clock_problems(now)
        assert list(problems) == [skewed.id]
        assert (
            problems[skewed.id].startswith("future-dated")
            and "3h after the store wrote its manifest" in problems[skewed.id]
            and "fix that worker's clock" in problems[skewed.id]
        )

    # latest: the newest real backup, the skipped one named; the oracle checks what comes back.
    said: list[str] = []
    latest = catalog.resolve("latest", log=said.append)
    assert latest.id == b2.id
    assert len(said) == 1 and skewed.id in said[0] and "newest backup whose time can be trusted" in said[0]
    with caplog.at_level(logging.WARNING, logger="vaultflow"):
        assert catalog.resolve("latest").id == b2.id  # default channel: the 'vaultflow' logger
    assert skewed.id in caplog.text
    restored = engine.restore(corpus_ctx, latest, into=f"{db}_latest")
    try:
        assert restored.backup_id == b2.id
        assert pg_differences(state_b2, pg_state(pg_server, f"{db}_latest")) == []
    finally:
        pg_server.execute(f'DROP DATABASE IF EXISTS "{db}_latest" WITH (FORCE)')

    # list (through the CLI) and verify (the flow) report it.
    from vaultflow.cli import app
    from vaultflow.flows.verify import verify

    repo_dir = str(tmp_path / "repo")
    listing = CliRunner().invoke(app, ["list", "--repo-path", repo_dir])
    assert listing.exit_code == 0, listing.output
    [row] = [line for line in listing.output.splitlines() if line.split()[1:2] == [skewed.id]]
    assert row.split()[-1] == "future-dated"
    assert f"warning: postgres/{engine.config.name} {skewed.id}: future-dated" in listing.output
    checked = verify(repository=BackupRepository(local_path=repo_dir), deep=True)
    assert checked["problems"] == []  # intact: reported, not failed
    assert list(checked["clock_problems"]) == [skewed.id] and "3h" in checked["clock_problems"][skewed.id]

    # prune with the policy: the skewed backup takes no slot and deletes nothing real.
    policy = dict(keep_last=None, keep_daily=7, keep_weekly=4, keep_monthly=None)
    now = datetime.now(UTC)
    without = plan([r for r in catalog.refs() if r.id != skewed.id], RetentionPolicy(**policy), now)
    from vaultflow.flows.prune import prune

    pruned = prune(repository=BackupRepository(local_path=repo_dir, **policy))
    assert sorted(pruned["kept"]) == sorted([b2.id, skewed.id])
    assert pruned["deleted"] == [b1.id] and not without[b1.id].keep  # b1: same day as b2, as without it
    assert list(pruned["clock_problems"]) == [skewed.id]
    after = repo.catalog("postgres", engine.config.name)
    decisions = plan(after.refs(), RetentionPolicy(**policy), now)
    assert decisions[b2.id].reasons[0] == "newest restorable backup"
    assert any(r.startswith("daily ") for r in decisions[b2.id].reasons)
    assert any(r.startswith("weekly ") for r in decisions[b2.id].reasons)
    assert decisions[skewed.id].reasons[0].startswith("held out of retention (takes no slot): future-dated")
    # A worker whose clock runs 3 h slow sees the real backup in the future: it keeps it too.
    slow = plan(after.refs(), RetentionPolicy(keep_last=1), now - AHEAD)
    assert slow[b2.id].keep and "the store agrees with the backup" in slow[b2.id].reasons[0]


def test_latest_refuses_when_every_backup_is_future_dated_and_the_id_still_restores(pg_server, fresh_db, corpus_ctx):
    db = fresh_db(pg_server)
    pg_server.execute("CREATE TABLE t (id int PRIMARY KEY, v text)", dbname=db)
    add_rows(pg_server, db, 1, 50)
    engine = pg_engine(pg_server, [db], name=f"skewonly{pg_server.version}")
    source = pg_state(pg_server, db)
    skewed = as_written_by_a_fast_clock(corpus_ctx.repository, engine.full_backup(corpus_ctx))
    catalog = corpus_ctx.repository.catalog("postgres", engine.config.name)
    with pytest.raises(RefusedError) as refused:
        catalog.resolve("latest")
    message = str(refused.value)
    assert f"every backup of postgres/{engine.config.name} has a clock problem" in message
    assert skewed.id in message and "--backup ID" in message and "fix the clock" in message
    restored = engine.restore(corpus_ctx, catalog.resolve(skewed.id), into=f"{db}_byid")
    try:
        assert restored.backup_id == skewed.id
        assert pg_differences(source, pg_state(pg_server, f"{db}_byid")) == []
    finally:
        pg_server.execute(f'DROP DATABASE IF EXISTS "{db}_byid" WITH (FORCE)')


def test_the_s3_servers_clock_exposes_a_fast_worker_even_to_a_worker_with_the_same_clock(
    pg18, fresh_db, s3_server, s3_bucket
):
    from vaultflow.engines.base import BackupContext
    from vaultflow.stores import S3Store

    db = fresh_db(pg18)
    pg18.execute("CREATE TABLE t (id int PRIMARY KEY, v text)", dbname=db)
    add_rows(pg18, db, 1, 20)
    ctx = BackupContext(
        repository=Repository(S3Store(s3_server.client(), s3_bucket, prefix="skew")), log=lambda _: None
    )
    engine = pg_engine(pg18, [db], name="skews3")
    real = engine.full_backup(ctx)
    skewed = as_written_by_a_fast_clock(ctx.repository, engine.full_backup(ctx))
    catalog = ctx.repository.catalog("postgres", "skews3")
    assert set(catalog.stored_at) == {real.id, skewed.id}  # LastModified, set by the S3 server
    fast_now = datetime.now(UTC) + AHEAD  # this worker shares the fast clock
    problems = catalog.clock_problems(fast_now)
    assert list(problems) == [skewed.id] and "3h after the store wrote its manifest" in problems[skewed.id]
    assert catalog.latest(now=fast_now).id == real.id
    decisions = plan(catalog.refs(), RetentionPolicy(keep_last=1), fast_now)
    assert decisions[real.id].reasons == ("newest restorable backup", "last 1")
    assert decisions[skewed.id].keep and decisions[skewed.id].reasons[0].startswith("held out of retention")
