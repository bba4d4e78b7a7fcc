"""MirrorStore over real members: two local directories, or a local directory and SeaweedFS."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from vaultflow.errors import AuthenticationError, ConfigError, NotFoundError
from vaultflow.stores import LocalStore, MirrorStore, S3Store, Store, get_bytes, put_bytes
from vaultflow.stores.base import BytesReader
from vaultflow.testing.s3_server import S3Instance

MiB = 1 << 20


class GeneratedReader:
    """`total` bytes produced on demand and hashed as read; raises after `fail_after`."""

    def __init__(self, total: int, fail_after: int | None = None):
        self.total, self.fail_after, self.sent = total, fail_after, 0
        self.sha = hashlib.sha256()
        self._block = os.urandom(MiB + 3)

    def read(self, size: int = -1) -> bytes:
        if self.fail_after is not None and self.sent >= self.fail_after:
            raise RuntimeError("dump died mid-stream")
        n = min(size if size >= 0 else self.total, self.total - self.sent, MiB)
        offset = self.sent % len(self._block)
        chunk = (self._block[offset:] + self._block)[:n]
        self.sent += len(chunk)
        self.sha.update(chunk)
        return chunk


def digest(store: Store, key: str) -> str:
    sha = hashlib.sha256()
    with store.open(key) as f:
        while chunk := f.read(MiB):
            sha.update(chunk)
    return sha.hexdigest()


def files_under(root: Path) -> list[str]:
    """Every file, temp files included: what a failed put really left on disk."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def s3(s3_server: S3Instance, s3_bucket: str) -> S3Store:
    return S3Store(s3_server.client(), s3_bucket, prefix="mirror")


def test_local_local_roundtrip(tmp_path: Path) -> None:
    a, b = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    mirror = MirrorStore([a, b])
    assert isinstance(mirror, Store) and mirror.stores == (a, b)
    assert mirror.description == f"mirror(local:{tmp_path / 'a'}, local:{tmp_path / 'b'})"
    reader = GeneratedReader(5 * MiB + 11)
    assert mirror.put("db/full.dump", reader) == reader.total
    for store in (a, b, mirror):
        assert digest(store, "db/full.dump") == reader.sha.hexdigest()
    put_bytes(mirror, "db/manifest.json", b"{}")
    assert [i.key for i in mirror.list("db/")] == ["db/full.dump", "db/manifest.json"]
    info = mirror.stat("db/manifest.json")
    assert info is not None and info.size == 2
    mirror.delete("db/full.dump")
    assert a.stat("db/full.dump") is None and b.stat("db/full.dump") is None
    put_bytes(mirror, "empty", b"")
    assert get_bytes(a, "empty") == get_bytes(b, "empty") == b""


def test_local_s3_roundtrip_multipart(tmp_path: Path, s3: S3Store) -> None:
    local = LocalStore(tmp_path / "local")
    mirror = MirrorStore([local, s3])
    reader = GeneratedReader(40 * MiB + 1)  # three 16 MiB parts on S3
    assert mirror.put("db/big.dump", reader, size_hint=reader.total) == reader.total
    assert digest(local, "db/big.dump") == digest(s3, "db/big.dump") == reader.sha.hexdigest()
    assert [i.key for i in mirror.list("db/")] == ["db/big.dump"]
    mirror.delete("db/big.dump")
    assert local.stat("db/big.dump") is None and s3.stat("db/big.dump") is None


def test_member_failing_at_start_aborts_the_others(tmp_path: Path) -> None:
    good = LocalStore(tmp_path / "good")
    blocker = tmp_path / "afile"
    blocker.write_text("a file, so nothing can be created beneath it")
    bad = LocalStore(blocker / "repo")
    with pytest.raises(ConfigError) as err:
        MirrorStore([good, bad]).put("k", GeneratedReader(30 * MiB))
    assert bad.description in str(err.value) and good.description not in str(err.value)
    assert good.stat("k") is None and files_under(tmp_path / "good") == []


def test_member_failing_mid_stream_aborts_the_others(tmp_path: Path, s3_server: S3Instance, s3_bucket: str) -> None:
    # S3 only learns the key is wrong at CreateMultipartUpload, after the first 16 MiB
    # part was read: the local member is mid-way through its temp file by then.
    local = LocalStore(tmp_path / "local")
    secret = "wrong-secret-" + os.urandom(6).hex()
    bad_s3 = S3Store(s3_server.client(aws_secret_access_key=secret), s3_bucket)
    reader = GeneratedReader(48 * MiB)
    with pytest.raises(AuthenticationError) as err:
        MirrorStore([local, bad_s3]).put("db/x", reader)
    assert bad_s3.description in str(err.value) and secret not in str(err.value)
    assert reader.sent < reader.total  # the source was abandoned, not drained
    assert local.stat("db/x") is None and files_under(tmp_path / "local") == []


def test_member_failing_at_commit_rolls_back_the_others(s3_server: S3Instance, tmp_path: Path) -> None:
    # A small object reaches S3 as one PutObject after the whole stream was read, so the
    # missing bucket is only discovered once the local member may already have committed.
    local = LocalStore(tmp_path / "local")
    missing = S3Store(s3_server.client(), "vf-missing-bucket")
    with pytest.raises(NotFoundError) as err:
        MirrorStore([local, missing]).put("db/x", BytesReader(b"payload"))
    assert "s3://vf-missing-bucket" in str(err.value) and "vf-missing-bucket" in str(err.value)
    assert local.stat("db/x") is None and files_under(tmp_path / "local") == []


def test_existing_object_on_a_member_is_not_deleted_by_rollback(s3_server: S3Instance, tmp_path: Path) -> None:
    local = LocalStore(tmp_path / "local")
    put_bytes(local, "k", b"old")
    missing = S3Store(s3_server.client(), "vf-missing-bucket")
    with pytest.raises(NotFoundError) as err:
        MirrorStore([local, missing]).put("k", BytesReader(b"new"))
    # Either the local put was aborted (old kept) or it had committed (new kept and said so).
    content = get_bytes(local, "k")
    assert content in (b"old", b"new")
    if content == b"new":
        assert f"remains on {local.description}" in str(err.value)


def test_source_failure_leaves_nothing_anywhere(tmp_path: Path, s3: S3Store, s3_server: S3Instance) -> None:
    local = LocalStore(tmp_path / "local")
    reader = GeneratedReader(60 * MiB, fail_after=35 * MiB)
    with pytest.raises(RuntimeError, match="dump died"):
        MirrorStore([local, s3]).put("db/broken", reader)
    assert local.stat("db/broken") is None and files_under(tmp_path / "local") == []
    assert s3.stat("db/broken") is None
    uploads = s3_server.client().list_multipart_uploads(Bucket=s3.bucket).get("Uploads", [])
    assert uploads == []


def test_open_stat_list_fall_back_to_the_next_member(s3_server: S3Instance, tmp_path: Path) -> None:
    first, second = LocalStore(tmp_path / "first"), LocalStore(tmp_path / "second")
    put_bytes(second, "only-here", b"from second")
    mirror = MirrorStore([first, second])
    assert get_bytes(mirror, "only-here") == b"from second"
    info = mirror.stat("only-here")
    assert info is not None and info.size == len(b"from second")
    with pytest.raises(NotFoundError) as err:
        mirror.open("nowhere")
    assert first.description in str(err.value) and second.description in str(err.value)
    assert mirror.stat("nowhere") is None
    # A member whose bucket is gone is skipped for listing and reading.
    broken = MirrorStore([S3Store(s3_server.client(), "vf-missing-bucket"), second])
    assert [i.key for i in broken.list("")] == ["only-here"]
    assert get_bytes(broken, "only-here") == b"from second"
