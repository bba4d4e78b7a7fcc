"""S3Store: objects in an S3 (or S3-compatible) bucket under an optional prefix, via boto3.

Uploads stream: s3transfer pulls fixed-size parts from the reader, so memory stays near
(parts in flight) x (part size) whatever the object size. A failed upload is aborted by
s3transfer (AbortMultipartUpload), so a failed put leaves neither object nor parts.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Iterator
from datetime import datetime
from typing import Any, BinaryIO

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    ParamValidationError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from vaultflow.errors import AuthenticationError, ConfigError, NotFoundError, StoreUnavailableError, VaultflowError
from vaultflow.stores.base import ObjectInfo, Readable

MiB = 1 << 20
MIN_PART_SIZE = 16 * MiB
MAX_PARTS = 10_000
# Parts are sized for 9,000 so a size_hint that underestimates by up to ~10% still fits.
PLANNED_PARTS = 9_000
# Without a size hint: 10,000 x 16 MiB = 156.25 GiB is the largest object a put accepts.
MAX_UNHINTED_SIZE = MAX_PARTS * MIN_PART_SIZE

_AUTH_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "InvalidToken",
    "ExpiredToken",
    "InvalidClientTokenId",
    "AuthorizationHeaderMalformed",
    "403",
}
_TRANSIENT_CODES = {
    "SlowDown",
    "RequestTimeout",
    "ServiceUnavailable",
    "InternalError",
    "Throttling",
    "500",
    "502",
    "503",
    "504",
}


def _code(exc: Exception) -> str:
    return str(exc.response.get("Error", {}).get("Code", "")) if isinstance(exc, ClientError) else ""


def part_size_for(size_hint: int | None, minimum: int = MIN_PART_SIZE) -> int:
    """Part size (a whole number of MiB, at least `minimum`) that needs <= 9,000 parts."""
    if not size_hint:
        return minimum
    needed = math.ceil(size_hint / PLANNED_PARTS)
    return max(minimum, math.ceil(needed / MiB) * MiB)


class _FullReads:
    """Adapts a Readable for s3transfer, which needs read(n) to return exactly n bytes
    until EOF: a short read would become an undersized middle part (rejected by S3), and
    a short first read would make it buffer the whole rest in memory for one PutObject."""

    def __init__(self, reader: Readable, limit: int, where: str):
        self._reader, self._limit, self._where = reader, limit, where
        self.total = 0
        self._eof = False

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            parts = []
            while chunk := self.read(MIN_PART_SIZE):
                parts.append(chunk)
            return b"".join(parts)
        buf = bytearray()
        while len(buf) < size and not self._eof:
            chunk = self._reader.read(size - len(buf))
            if not chunk:
                self._eof = True
            buf += chunk
        self.total += len(buf)
        if self.total > self._limit:
            raise ConfigError(
                f"upload to {self._where} exceeds {self._limit} bytes, the most "
                f"{MAX_PARTS} parts can hold at this part size; pass a larger size_hint"
            )
        return bytes(buf)


class _Body(io.RawIOBase):
    """get_object's StreamingBody as a context-managed stream whose network errors are
    StoreUnavailableError, like every other failure of this store."""

    def __init__(self, body: Any, where: str):
        super().__init__()
        self._body, self._where = body, where

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        try:
            return self._body.read(None if size is None or size < 0 else size)
        except (BotoCoreError, OSError) as exc:
            raise StoreUnavailableError(f"reading {self._where} failed mid-stream: {exc}") from exc

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


@functools.cache
def _data_loader() -> Any:
    """The process's one botocore data loader (it caches every JSON file it parses)."""
    import botocore.loaders

    return botocore.loaders.create_loader()


def boto3_session(**kwargs: Any) -> Any:
    """A boto3 Session (`kwargs` as boto3.session.Session takes them: keys, region, profile)
    sharing one botocore data loader with every other session this function made in the
    process. botocore parses its endpoint rules and the S3 service model (JSON files, about
    120 ms of CPU) once per loader, so a new session per store or per test no longer pays for
    them again. Uses botocore's public Session.register_component and loaders.create_loader."""
    import boto3
    import botocore.session

    core = botocore.session.get_session()
    core.register_component("data_loader", _data_loader())
    return boto3.session.Session(botocore_session=core, **kwargs)


class S3Store:
    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str = "",
        *,
        checksum_algorithm: str | None = "CRC32",
        max_concurrency: int = 4,
        list_page_size: int = 1000,
        min_part_size: int = MIN_PART_SIZE,
        credentials: Any = None,
        verify: bool | str | None = None,
    ):
        """`checksum_algorithm` asks S3 to verify each part in transit. CRC32 by default: the
        object's sha256 is computed by vaultflow anyway, and a second SHA256 per part cost
        ~45% of the upload time in `make bench` (SeaweedFS 4.48 accepts CRC32 and SHA256;
        pass None for endpoints that reject the header). `list_page_size` exists so tests
        can force pagination without creating 1,000 objects, `min_part_size` (S3 allows 5 MiB)
        so they can make multipart uploads without writing 16 MiB objects.

        `credentials` and `verify` are what connection_spec hands to other processes (a
        restore_command's wal-fetch): the credentials `client` was made with, as
        `boto3.Session.get_credentials()` returns them (refreshable ones are frozen when the
        spec is written), and its TLS setting (False, or a CA bundle path). Without
        `credentials` the spec carries no keys and the other process resolves its own
        (environment, profile, instance role). `from_session` fills both."""
        self.client = client
        self.credentials = credentials
        self.verify = verify if verify is None or isinstance(verify, bool) else str(verify)  # JSON-able
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.checksum_algorithm = checksum_algorithm
        self.max_concurrency = max_concurrency
        self.list_page_size = list_page_size
        self.min_part_size = min_part_size

    @property
    def description(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    @property
    def endpoint(self) -> str:
        return str(self.client.meta.endpoint_url)

    def __repr__(self) -> str:
        return f"S3Store({self.description!r}, endpoint={self.endpoint!r})"

    @classmethod
    def from_session(
        cls,
        session: Any,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        verify: bool | str | None = None,
        config: Any = None,
        **store_kw: Any,
    ) -> S3Store:
        """The store of `bucket` through an S3 client of the boto3 `session`, keeping the
        session's credentials (`session.get_credentials()`: explicit keys, profile or role) for
        connection_spec. `endpoint_url`, `region_name`, `verify` and `config` (a botocore
        Config) go to `session.client("s3", ...)`; `store_kw` to S3Store."""
        client = session.client("s3", endpoint_url=endpoint_url, region_name=region_name, verify=verify, config=config)
        return cls(client, bucket, prefix, credentials=session.get_credentials(), verify=verify, **store_kw)

    def connection_spec(self) -> dict:
        """Everything another process needs to reach this bucket (vaultflow.stores.spec),
        INCLUDING the secret key: write it only to a private file (spec.spec_file).
        Keys are those of `credentials` (see __init__), frozen now; none without them."""
        frozen = self.credentials.get_frozen_credentials() if self.credentials is not None else None
        config = self.client.meta.config
        spec: dict = {
            "kind": "s3",
            "bucket": self.bucket,
            "prefix": self.prefix,
            "endpoint": self.endpoint,
            "region": self.client.meta.region_name,
            "addressing_style": (config.s3 or {}).get("addressing_style"),
            "access_key_id": frozen.access_key if frozen else None,
            "secret_access_key": frozen.secret_key if frozen else None,
            "session_token": frozen.token if frozen else None,
        }
        if self.verify is not None:
            spec["verify"] = self.verify
        return spec

    @classmethod
    def from_connection_spec(cls, spec: dict) -> S3Store:
        """The store of a connection_spec, with timeouts and few retries: a restore_command must
        fail (and name the bucket) rather than hang on an unreachable endpoint."""
        from botocore.config import Config

        if not spec.get("bucket"):
            raise ConfigError("repository spec: an s3 store needs 'bucket'")
        config = Config(
            connect_timeout=10,
            read_timeout=60,
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": spec["addressing_style"]} if spec.get("addressing_style") else None,
        )
        session = boto3_session(
            aws_access_key_id=spec.get("access_key_id") or None,
            aws_secret_access_key=spec.get("secret_access_key") or None,
            aws_session_token=spec.get("session_token") or None,
        )
        return cls.from_session(
            session,
            spec["bucket"],
            spec.get("prefix") or "",
            endpoint_url=spec.get("endpoint") or None,
            region_name=spec.get("region") or None,
            verify=spec.get("verify", None),
            config=config,
        )

    def _key(self, key: str) -> str:
        if not key or key.startswith("/"):
            raise ValueError(f"invalid store key {key!r}: need a relative '/'-separated path")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _error(self, exc: Exception, key: str | None = None) -> VaultflowError:
        """A vaultflow error naming bucket/key/endpoint and the fix (never credentials)."""
        where = f"s3://{self.bucket}/{self._key(key)}" if key else self.description
        if isinstance(exc, NoCredentialsError):
            return ConfigError(f"no AWS credentials for {self.endpoint}; configure the AwsCredentials block")
        if isinstance(exc, (BotoConnectionError, HTTPClientError, IncompleteReadError)):
            # connection refused, connect/read timeouts, streams cut mid-response
            return StoreUnavailableError(f"S3 endpoint {self.endpoint} unreachable for {where}: {exc}")
        if isinstance(exc, ParamValidationError):  # e.g. an invalid bucket name
            return ConfigError(f"invalid S3 request for {where}: {exc}; check the bucket name and prefix")
        if not isinstance(exc, ClientError):
            return VaultflowError(f"S3 operation on {where} at {self.endpoint} failed: {exc}")
        err = exc.response.get("Error", {})
        code = _code(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket":
            return NotFoundError(
                f"bucket {self.bucket!r} does not exist at {self.endpoint}; "
                "create it or fix the BackupRepository's bucket name"
            )
        if code in _AUTH_CODES or status == 403:
            return AuthenticationError(
                f"{self.endpoint} refused the credentials for {where} ({code or status}); "
                "check the AwsCredentials block (access key id and secret key) and its permissions"
            )
        if code in ("NoSuchKey", "404", "NotFound") or status == 404:
            return NotFoundError(f"object {key!r} not found in {self.description} at {self.endpoint}")
        if code in _TRANSIENT_CODES or (status or 0) >= 500:
            return StoreUnavailableError(f"S3 endpoint {self.endpoint} failed on {where} ({code}); retry later")
        return VaultflowError(
            f"S3 refused an operation on {where} at {self.endpoint} ({code}: {err.get('Message', '')})"
        )

    def put(self, key: str, reader: Readable, size_hint: int | None = None) -> int:
        full_key = self._key(key)
        part = part_size_for(size_hint, self.min_part_size)
        config = TransferConfig(
            multipart_threshold=part,
            multipart_chunksize=part,
            max_concurrency=self.max_concurrency,
            use_threads=True,
        )
        # s3transfer reads ahead up to this many parts (default 10): tie it to concurrency
        # so memory stays ~ (max_concurrency + 1) x part size.
        config.max_in_memory_upload_chunks = self.max_concurrency
        source = _FullReads(reader, MAX_PARTS * part, f"s3://{self.bucket}/{full_key}")
        extra = {"ChecksumAlgorithm": self.checksum_algorithm} if self.checksum_algorithm else {}
        try:
            self.client.upload_fileobj(source, self.bucket, full_key, ExtraArgs=extra, Config=config)
        except (ClientError, BotoCoreError) as exc:  # upload_fileobj raises these unwrapped
            raise self._error(exc, key) from exc
        return source.total  # anything else (the reader's own error) propagates as is

    def open(self, key: str) -> BinaryIO:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, key) from exc
        return _Body(response["Body"], f"s3://{self.bucket}/{self._key(key)}")  # type: ignore[return-value]

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        full_prefix = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket,
            Prefix=full_prefix,
            PaginationConfig={"PageSize": self.list_page_size},
        )
        found: list[ObjectInfo] = []
        try:
            for page in pages:
                for obj in page.get("Contents", []):
                    if obj["Key"].endswith("/"):  # directory markers some servers return
                        continue
                    found.append(ObjectInfo(key=obj["Key"][strip:], size=obj["Size"], modified=obj["LastModified"]))
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc) from exc
        # AWS returns keys in byte order, but SeaweedFS walks its directory tree ("b/..."
        # before "b-side"), so sort to keep the protocol's key-order promise everywhere.
        found.sort(key=lambda info: info.key)
        return iter(found)

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            # S3 answers 204 for a missing key; some compatible servers say NoSuchKey.
            if _code(exc) != "NoSuchKey":
                raise self._error(exc, key) from exc
        except BotoCoreError as exc:
            raise self._error(exc, key) from exc

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as exc:
            error = self._error(exc, key)
            if not isinstance(error, NotFoundError):
                raise error from exc
            # HEAD has no error body, so a missing bucket also looks like a plain 404:
            # ask once more so "bucket missing" is not reported as "object missing".
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except (ClientError, BotoCoreError) as bucket_exc:
                if _code(bucket_exc) in ("404", "NoSuchBucket"):
                    bucket_exc = ClientError({"Error": {"Code": "NoSuchBucket"}}, "HeadBucket")
                raise self._error(bucket_exc) from exc
            return None
        return ObjectInfo(key=key, size=head["ContentLength"], modified=head["LastModified"])

    def sweep_partial(self, prefix: str, older_than: datetime) -> int:
        """Abort multipart uploads a killed run left open (they hold storage until aborted)."""
        full_prefix = f"{self.prefix}/{prefix}" if self.prefix else prefix
        aborted = 0
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=full_prefix)
            for page in pages:
                for upload in page.get("Uploads", []):
                    if upload["Initiated"] < older_than:
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                        aborted += 1
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc) from exc
        return aborted
