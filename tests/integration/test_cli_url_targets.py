"""One-off targets from a connection URL (`vaultflow backup -t postgresql://user@host:port/db`):
the password from the environment or ~/.pgpass, refused in the URL; real servers, and the
password in no process's argv or environment, no output, log, artifact or repository file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.fixtures.secret_watch import SecretWatch, assert_runs_keep_secret
from vaultflow.cli import app
from vaultflow.errors import AuthenticationError, ConfigError
from vaultflow.repository import Repository
from vaultflow.stores import LocalStore

pytestmark = pytest.mark.usefixtures("prefect_api")
runner = CliRunner()
NO_PASSWORDS = {"VAULTFLOW_PASSWORD": None, "PGPASSWORD": None, "REDISCLI_AUTH": None, "CLICKHOUSE_PASSWORD": None}


def one_error(result, code: int) -> str:
    assert result.exit_code == code, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ") and "Traceback" not in result.output
    return line


@pytest.mark.logs_to_api
def test_postgres_url_with_password_from_the_environment_or_pgpass(pg_with_password, fresh_db, tmp_path: Path):
    pg, password = pg_with_password, pg_with_password.password
    db = fresh_db(pg)
    pg.execute("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 120) g", dbname=db)
    url = f"postgresql://{pg.user}@{pg.host}:{pg.port}/{db}?bin_dir={pg.client_bin_dir}"
    repo = tmp_path / "repo"
    no_pgpass = {**NO_PASSWORDS, "PGPASSFILE": str(tmp_path / "none")}

    leaked = f"postgresql://{pg.user}:{password}@{pg.host}:{pg.port}/{db}"
    refused = runner.invoke(app, ["backup", "-t", leaked, "--repo-path", str(repo)], env=no_pgpass)
    line = one_error(refused, 2)
    assert "carries a password" in line and "VAULTFLOW_PASSWORD" in line and "PGPASSWORD" in line
    assert password not in refused.output and not repo.exists()

    with SecretWatch(password) as watch:
        done = runner.invoke(
            app, ["backup", "-t", url, "--repo-path", str(repo)], env={**no_pgpass, "PGPASSWORD": password}
        )
        assert done.exit_code == 0, done.output
        # The passfile holds the session server's password on purpose: removed at once, so the
        # secret scans of other tests on this worker (files written during the run) do not find it.
        pgpass = tmp_path / "pgpass"
        pgpass.write_text(f"# comment\nother:1:*:*:wrong\n{pg.host}:{pg.port}:*:{pg.user}:{password}\n")
        try:
            pgpass.chmod(0o644)
            loose = runner.invoke(
                app, ["backup", "-t", url, "--repo-path", str(repo)], env={**NO_PASSWORDS, "PGPASSFILE": str(pgpass)}
            )
            assert "readable by group or others: chmod 0600" in one_error(loose, 2)
            pgpass.chmod(0o600)
            again = runner.invoke(
                app, ["backup", "-t", url, "--repo-path", str(repo)], env={**NO_PASSWORDS, "PGPASSFILE": str(pgpass)}
            )
            assert again.exit_code == 0, again.output
        finally:
            pgpass.unlink()
        restored = runner.invoke(
            app,
            ["restore", "-t", url, "--repo-path", str(repo), "--into", f"{db}_url"],
            env={**no_pgpass, "VAULTFLOW_PASSWORD": password},
        )
        assert restored.exit_code == 0, restored.output
    assert watch.leaks == [] and any("pg_dump" in " ".join(argv) for argv in watch.seen)
    assert pg.execute("SELECT count(*), sum(length(v)) FROM t", dbname=f"{db}_url") == [(120, 120 * 32)]
    pg.execute(f'DROP DATABASE "{db}_url" WITH (FORCE)')
    for result in (done, again, restored):
        assert password not in result.output
    name = f"{pg.host}-{pg.port}"  # the target's name in the repository: <host>-<port>
    assert len(Repository(LocalStore(repo)).catalog("postgres", name).manifests) == 2
    assert_runs_keep_secret(password, f"%{name}%", repo)

    nothing = runner.invoke(app, ["backup", "-t", url, "--repo-path", str(repo)], env=no_pgpass)
    line = one_error(nothing, 1)  # the server refused: the run failed, saying where a URL's password comes from
    assert "in the URL" in line and "VAULTFLOW_PASSWORD or PGPASSWORD" in line and "block" not in line, line

    missing = url.replace(f"/{db}?", "/vf_no_such_db?")
    gone = runner.invoke(
        app, ["backup", "-t", missing, "--repo-path", str(tmp_path / "gone")], env={**no_pgpass, "PGPASSWORD": password}
    )
    line = one_error(gone, 1)
    assert "vf_no_such_db" in line and "fix the database list in the URL's path" in line and "Target" not in line, line

    # verify, prune and upload take the target as `vaultflow list` prints it: no block needed.
    listed = runner.invoke(app, ["list", "--repo-path", str(repo)])
    assert listed.exit_code == 0 and f"postgres/{name}" in listed.stdout, listed.output
    verified = runner.invoke(app, ["verify", "--repo-path", str(repo), "-t", f"postgres/{name}"])
    assert verified.exit_code == 0 and "2 backups checked, 0 problems" in verified.stdout, verified.output
    pruned = runner.invoke(app, ["prune", "--repo-path", str(repo), "-t", f"postgres/{name}", "--dry-run"])
    assert pruned.exit_code == 0 and "kept 2" in pruned.stdout, pruned.output
    copied = runner.invoke(
        app, ["upload", "--repo-path", str(repo), "--to-path", str(tmp_path / "copy"), "-t", f"postgres/{name}"]
    )
    assert copied.exit_code == 0 and "copied 2 backups" in copied.stdout, copied.output
    for command in (["verify"], ["prune", "--dry-run"], ["upload", "--to-path", str(tmp_path / "none")]):
        unknown = runner.invoke(app, [*command, "--repo-path", str(repo), "-t", "postgres/no-such-target"])
        line = one_error(unknown, 2)
        assert "holds no target postgres/no-such-target" in line and "postgres-target/no-such-target" in line, line


def test_redis_and_mongodb_urls(redis_with_password, mongo_with_password, tmp_path: Path):
    redis, mongo = redis_with_password, mongo_with_password
    with redis.client() as conn:
        conn.set("url:key", "value")
    user = f"{redis.username}@" if redis.username else ""
    done = runner.invoke(
        app,
        ["backup", "-t", f"redis://{user}{redis.host}:{redis.port}", "--repo-path", str(tmp_path / "r")],
        env={**NO_PASSWORDS, "REDISCLI_AUTH": redis.password},
    )
    assert done.exit_code == 0, done.output
    assert re.match(r"backup \S+: ", done.stdout) and redis.password not in done.output
    db_path = runner.invoke(app, ["backup", "-t", f"redis://{redis.host}:{redis.port}/3", "--repo-path", "r"])
    assert "names no database" in one_error(db_path, 2)

    client = mongo.client()
    client["vf_url"].things.insert_many([{"_id": i} for i in range(30)])
    try:
        done = runner.invoke(
            app,
            [
                "backup",
                "-t",
                f"mongodb://{mongo.username}@{mongo.host}:{mongo.port}/vf_url?authSource=admin",
                "--repo-path",
                str(tmp_path / "m"),
            ],
            env={**NO_PASSWORDS, "VAULTFLOW_PASSWORD": mongo.password},
        )
        assert done.exit_code == 0, done.output
        [manifest] = Repository(LocalStore(tmp_path / "m")).catalog("mongodb", f"{mongo.host}-{mongo.port}").manifests
        assert mongo.password not in done.output and manifest.kind.value == "full"
    finally:
        client.drop_database("vf_url")
        client.close()


@pytest.mark.parametrize(
    "url, says",
    [
        ("mysql://db1/shop", "mysql:// is no target URL vaultflow knows (clickhouse://, mongodb://, postgres://"),
        ("postgresql://db1/shop?sslmod=require", "'sslmod' in the postgresql:// URL is no setting"),
        ("clickhouse://default@db1:8123/a?interface=ftp", "interface"),
    ],
)
def test_url_mistakes_are_usage_errors(url: str, says: str):
    assert says in one_error(runner.invoke(app, ["backup", "-t", url, "--repo-path", "r"]), 2)


def test_a_user_without_a_password_is_one_clear_error(mongo_with_password, redis_acl, tmp_path: Path):
    """A username and no password: MongoDB (SCRAM) says which password to set, from a URL and
    from a block (pymongo used to fail with 'IndexError: string index out of range'); a Redis ACL
    user may be `nopass`, so the server's refusal is the error, naming the user."""
    from vaultflow.blocks import MongoTarget, RedisTarget

    mongo, redis = mongo_with_password, redis_acl
    url = f"mongodb://{mongo.username}@{mongo.host}:{mongo.port}/db"
    line = one_error(runner.invoke(app, ["backup", "-t", url, "--repo-path", str(tmp_path / "m")], env=NO_PASSWORDS), 1)
    assert f"no password for MongoDB user {mongo.username!r}" in line and "VAULTFLOW_PASSWORD" in line, line
    assert "IndexError" not in line
    block = MongoTarget(host=mongo.host, port=mongo.port, username=mongo.username)
    with pytest.raises(ConfigError, match="no password for MongoDB user .*the MongoTarget's password"):
        block.engine().check()

    url = f"redis://{redis.username}@{redis.host}:{redis.port}"
    line = one_error(runner.invoke(app, ["backup", "-t", url, "--repo-path", str(tmp_path / "r")], env=NO_PASSWORDS), 1)
    assert redis.username in line and "check the user in the URL and the password in" in line, line
    assert "REDISCLI_AUTH" in line and "RedisTarget" not in line, line
    assert "IndexError" not in line and "Traceback" not in line
    with pytest.raises(AuthenticationError, match=f"{redis.username}.*check the username/password of the RedisTarget"):
        RedisTarget(host=redis.host, port=redis.port, username=redis.username).engine().check()
