"""S3Store against a real SeaweedFS server (no moto, no mocks)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from datetime import UTC

import pytest

from tests.fixtures.scratch import in_temp_roots
from tests.fixtures.secret_watch import RUN_STARTED
from vaultflow.errors import AuthenticationError, NotFoundError, StoreUnavailableError
from vaultflow.stores import S3Store, Store, get_bytes, put_bytes
from vaultflow.stores.base import BytesReader
from vaultflow.stores.s3 import MIN_PART_SIZE, part_size_for
from vaultflow.testing.s3_server import S3Instance
from vaultflow.testing.unprivileged import free_port

MiB = 1 << 20


class GeneratedReader:
    """`total` pseudo-random bytes made on demand (never held whole), hashed as read;
    raises after `fail_after` bytes when set, like a dump process dying mid-stream."""

    def __init__(self, total: int, fail_after: int | None = None):
        self.total, self.fail_after, self.sent = total, fail_after, 0
        self.sha = hashlib.sha256()
        self._block = os.urandom(MiB + 7)  # odd length so parts are not all identical

    def read(self, size: int = -1) -> bytes:
        if self.fail_after is not None and self.sent >= self.fail_after:
            raise RuntimeError("dump died mid-stream")
        n = min(size if size >= 0 else self.total, self.total - self.sent, 256 * 1024)
        offset = self.sent % len(self._block)
        chunk = (self._block[offset:] + self._block)[:n]
        self.sent += len(chunk)
        self.sha.update(chunk)
        return chunk


def sha256_of(stream_store: Store, key: str) -> str:
    sha = hashlib.sha256()
    with stream_store.open(key) as f:
        while chunk := f.read(MiB):
            sha.update(chunk)
    return sha.hexdigest()


def operations(store: S3Store) -> list[Callable[[], object]]:
    """put, open, list, stat: each must map the server's refusal to a vaultflow error."""
    return [
        lambda: put_bytes(store, "k", b"x"),
        lambda: store.open("k"),
        lambda: list(store.list("")),
        lambda: store.stat("k"),
    ]


@pytest.fixture
def store(s3_server: S3Instance, s3_bucket: str) -> S3Store:
    return S3Store(s3_server.client(), s3_bucket, prefix="repo/")


def test_is_a_store(store: S3Store, s3_bucket: str) -> None:
    assert isinstance(store, Store)
    assert store.description == f"s3://{s3_bucket}/repo"


def test_the_server_keeps_its_log_files_in_its_own_directory(s3_server: S3Instance) -> None:
    """SeaweedFS's glog writes weed.<host>.<user>.log.* and weed.INFO links into the temporary
    directory (Go's os.TempDir: TMPDIR, else /tmp) unless told otherwise: a test server must
    leave nothing in either. The server is up (this test's fixture
    started it or an earlier test did) and has logged its start-up."""
    started = RUN_STARTED - 1.0  # any weed log written there since this test run began
    assert s3_server.client().list_buckets()["ResponseMetadata"]["HTTPStatusCode"] == 200
    stray = [str(p) for p in in_temp_roots("weed*") if p.lstat().st_mtime >= started]
    assert stray == [], stray


def test_part_size_fits_10000_parts() -> None:
    assert part_size_for(None) == MIN_PART_SIZE == 16 * MiB
    assert part_size_for(1 << 30) == MIN_PART_SIZE
    for size in (200 << 30, 5 << 40):
        part = part_size_for(size)
        assert part % MiB == 0 and size / part <= 9_000


def test_roundtrip_and_stat(store: S3Store, s3_server: S3Instance, s3_bucket: str) -> None:
    data = os.urandom(3 * MiB + 17)
    assert store.put("pg/a.bin", BytesReader(data)) == len(data)
    assert sha256_of(store, "pg/a.bin") == hashlib.sha256(data).hexdigest()
    info = store.stat("pg/a.bin")
    assert info is not None and info.size == len(data) and info.key == "pg/a.bin"
    assert info.modified.tzinfo is not None
    # The prefix really is part of the object key in the bucket.
    assert s3_server.client().head_object(Bucket=s3_bucket, Key="repo/pg/a.bin")["ContentLength"] == len(data)
    put_bytes(store, "empty", b"")
    assert get_bytes(store, "empty") == b""


def test_multipart_streamed_upload(store: S3Store, s3_server: S3Instance, s3_bucket: str) -> None:
    reader = GeneratedReader(70 * MiB + 5)
    assert store.put("big.bin", reader) == reader.total
    head = s3_server.client().head_object(Bucket=s3_bucket, Key="repo/big.bin")
    parts = int(head["ETag"].strip('"').rsplit("-", 1)[1])
    assert parts == 5  # ceil(70 MiB / 16 MiB): a streamed multipart upload
    assert head["ContentLength"] == reader.total
    assert sha256_of(store, "big.bin") == reader.sha.hexdigest()


def test_reader_failure_leaves_no_object_and_no_multipart(
    store: S3Store, s3_server: S3Instance, s3_bucket: str
) -> None:
    reader = GeneratedReader(100 * MiB, fail_after=66 * MiB)
    with pytest.raises(RuntimeError, match="dump died"):
        store.put("broken.bin", reader)
    assert reader.sent > 64 * MiB  # the failure really happened after several parts
    assert store.stat("broken.bin") is None
    client = s3_server.client()
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    # Control: the server does list an upload that was left open.
    upload = client.create_multipart_upload(Bucket=s3_bucket, Key="open")
    assert [u["Key"] for u in client.list_multipart_uploads(Bucket=s3_bucket)["Uploads"]] == ["open"]
    client.abort_multipart_upload(Bucket=s3_bucket, Key="open", UploadId=upload["UploadId"])


def test_list_prefix_and_pagination(s3_server: S3Instance, s3_bucket: str) -> None:
    store = S3Store(s3_server.client(), s3_bucket, prefix="p", list_page_size=3)
    keys = [f"b/{i:02d}" for i in range(8)] + ["a/1", "b-side", "c"]
    for key in keys:
        put_bytes(store, key, key.encode())
    put_bytes(S3Store(s3_server.client(), s3_bucket), "outside", b"not ours")
    pages = s3_server.client().list_objects_v2(Bucket=s3_bucket, Prefix="p/b/", MaxKeys=3)
    assert pages["IsTruncated"]  # so the listing below needs several pages
    assert [i.key for i in store.list("b/")] == [f"b/{i:02d}" for i in range(8)]
    assert [i.key for i in store.list("")] == sorted(keys)
    assert [i.key for i in store.list("b")] == ["b-side"] + [f"b/{i:02d}" for i in range(8)]
    assert [i.size for i in store.list("c")] == [1]
    assert list(store.list("zzz")) == []


def test_delete(store: S3Store) -> None:
    put_bytes(store, "gone", b"x")
    store.delete("gone")
    assert store.stat("gone") is None
    store.delete("gone")  # missing is not an error
    with pytest.raises(NotFoundError, match="'gone'"):
        store.open("gone")


def test_missing_bucket_names_bucket(s3_server: S3Instance) -> None:
    store = S3Store(s3_server.client(), "no-such-bucket-vf")
    for op in operations(store):
        with pytest.raises(NotFoundError) as err:
            op()
        assert "no-such-bucket-vf" in str(err.value) and s3_server.endpoint_url in str(err.value)


def test_wrong_credentials(s3_server: S3Instance, s3_bucket: str) -> None:
    secret = "definitely-wrong-secret-" + os.urandom(8).hex()
    bad = S3Store(s3_server.client(aws_secret_access_key=secret), s3_bucket)
    unknown = S3Store(s3_server.client(aws_access_key_id="NOSUCHKEY", aws_secret_access_key=secret), s3_bucket)
    for store in (bad, unknown):
        for op in operations(store):
            with pytest.raises(AuthenticationError) as err:
                op()
            assert secret not in str(err.value) and s3_server.secret_key not in str(err.value)
            assert "AwsCredentials" in str(err.value)


def test_unreachable_endpoint(s3_server: S3Instance) -> None:
    from botocore.config import Config

    client = s3_server.client(
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=1),
    )
    with pytest.raises(StoreUnavailableError, match="127.0.0.1"):
        S3Store(client, "bucket").stat("k")


def test_sweep_partial_aborts_stale_multipart_uploads(store: S3Store, s3_server: S3Instance, s3_bucket: str) -> None:
    from datetime import datetime, timedelta

    client = s3_server.client()
    client.create_multipart_upload(Bucket=s3_bucket, Key=f"{store.prefix}/a/killed" if store.prefix else "a/killed")
    assert store.sweep_partial("a/", datetime.now(UTC) - timedelta(hours=1)) == 0
    assert store.sweep_partial("a/", datetime.now(UTC) + timedelta(minutes=1)) == 1
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def test_connection_spec_carries_the_sessions_credentials(s3_server: S3Instance, s3_bucket: str) -> None:
    """Keys reach a wal-fetch process through public boto3 APIs only: a store made from a
    session hands on that session's credentials, and the spec builds a working store; a store
    made from a bare client (credentials unknown) hands on none, rather than guessing."""
    from vaultflow.stores import spec

    store = s3_server.store(s3_bucket, prefix="spec")
    described = store.connection_spec()
    assert (described["access_key_id"], described["secret_access_key"]) == (s3_server.access_key, s3_server.secret_key)
    assert described["endpoint"] == s3_server.endpoint_url and described["addressing_style"] == "path"
    put_bytes(store, "probe", b"through the session")
    rebuilt = spec.build(described)
    assert isinstance(rebuilt, S3Store) and get_bytes(rebuilt, "probe") == b"through the session"

    wrong = s3_server.store(s3_bucket, prefix="spec", secret_key="not-the-secret").connection_spec()
    assert wrong["secret_access_key"] == "not-the-secret"
    with pytest.raises(AuthenticationError):
        get_bytes(spec.build(wrong), "probe")

    bare = S3Store(s3_server.client(), s3_bucket, prefix="spec").connection_spec()
    assert bare["access_key_id"] is None and bare["secret_access_key"] is None and "verify" not in bare
    assert S3Store(s3_server.client(), s3_bucket, verify=False).connection_spec()["verify"] is False


def test_sessions_share_botocores_parsed_models_not_their_keys(
    s3_server: S3Instance, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """boto3_session: botocore's JSON (endpoint rules, the S3 model) is read once per process,
    not once per session; each session keeps its own keys (a wrong secret still fails while the
    right one works beside it)."""
    import botocore.loaders

    from vaultflow.stores import spec
    from vaultflow.stores.s3 import boto3_session

    boto3_session().client("s3", region_name=s3_server.region, endpoint_url=s3_server.endpoint_url)  # warm
    reads: list[str] = []
    load_file = botocore.loaders.JSONFileLoader.load_file
    monkeypatch.setattr(
        botocore.loaders.JSONFileLoader, "load_file", lambda self, path: reads.append(path) or load_file(self, path)
    )
    good = spec.build(s3_server.store(s3_bucket, prefix="shared").connection_spec())
    bad = spec.build(s3_server.store(s3_bucket, prefix="shared", secret_key="not-the-secret").connection_spec())
    put_bytes(good, "probe", b"one loader")
    assert get_bytes(good, "probe") == b"one loader"
    with pytest.raises(AuthenticationError):
        get_bytes(bad, "probe")
    assert reads == [], f"botocore read its JSON again: {reads}"
