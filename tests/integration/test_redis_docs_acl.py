"""docs/redis.md's minimum ACL for remote mode works: the user is created from the doc's own
line (so the page cannot drift from what vaultflow needs) on a fresh redis-server, and a remote
full backup runs with it through the full-backup flow."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import pytest
from pydantic import SecretStr

from vaultflow.blocks import BackupRepository, RedisTarget
from vaultflow.errors import AuthenticationError
from vaultflow.flows.full_backup import full_backup

pytestmark = pytest.mark.usefixtures("prefect_api")

DOC = Path(__file__).resolve().parents[2] / "docs" / "redis.md"
PLACEHOLDER = ">long-random-password"


def documented_remote_acl() -> list[str]:
    """The rules of the one `user backup ...` line in a code block of docs/redis.md that is not
    the `+@all` one: ['on', '>long-random-password', 'resetchannels', '-@all', ...]."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", DOC.read_text(), flags=re.S | re.M)
    lines = [
        line.strip()
        for block in blocks
        for line in block.splitlines()
        if line.strip().startswith("user backup ") and "+@all" not in line
    ]
    assert len(lines) == 1, f"expected one minimum-ACL line in {DOC}, found {lines}"
    rules = lines[0].split()[2:]
    assert PLACEHOLDER in rules, f"the documented ACL has no {PLACEHOLDER} to replace: {lines[0]}"
    return rules


def create_user(server, rules: list[str]) -> str:
    password = secrets.token_urlsafe(18)
    rules = [f">{password}" if rule == PLACEHOLDER else rule for rule in rules]
    server.client().execute_command("ACL", "SETUSER", "backup", *rules)
    return password


def test_documented_remote_acl_takes_a_remote_full_backup(fresh_redis, tmp_path: Path):
    server = fresh_redis(name="docacl")
    server.client().mset({"user:1000": "Alice", "user:1001": "Bob"})
    rules = documented_remote_acl()
    assert "-@all" in rules, "the documented minimum must start from no commands, or it proves nothing"
    password = create_user(server, rules)
    target = RedisTarget(
        host=server.host, port=server.port, username="backup", password=SecretStr(password), target_name="docacl"
    )  # no data_dir: remote mode
    repository = BackupRepository(local_path=str(tmp_path / "repo"))
    result = full_backup(target=target, repository=repository)
    assert result["kind"] == "full" and result["objects"] >= 1
    [manifest] = repository.build().catalog("redis", "docacl").manifests
    assert manifest.id == result["backup_id"] and manifest.mode == "rdb"


def test_the_documented_acl_without_client_setname_is_refused(fresh_redis, tmp_path: Path):
    """The permission the old page lacked: without it the login fails at once (permanent), naming
    the command and where the ACL is documented."""
    server = fresh_redis(name="docacl-nosetname")
    rules = [rule for rule in documented_remote_acl() if rule != "+client|setname"]
    password = create_user(server, rules)
    target = RedisTarget(
        host=server.host, port=server.port, username="backup", password=SecretStr(password), target_name="docacl"
    )
    with pytest.raises(AuthenticationError, match=r"client\|setname.*docs/redis\.md"):
        full_backup(target=target, repository=BackupRepository(local_path=str(tmp_path / "repo")))
