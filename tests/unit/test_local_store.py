"""LocalStore against the real filesystem: atomicity, permissions, listing, errors."""

from __future__ import annotations

import hashlib
import os
import stat
from datetime import UTC
from pathlib import Path

import pytest

from vaultflow.errors import ConfigError, NotFoundError
from vaultflow.stores import LocalStore, Store, get_bytes, put_bytes
from vaultflow.stores.base import CHUNK_SIZE, BytesReader


class FailingReader:
    """Yields `good` bytes, then raises like a pg_dump pipe that died."""

    def __init__(self, good: int):
        self.left = good

    def read(self, size: int = -1) -> bytes:
        if self.left <= 0:
            raise OSError("source died mid-stream")
        n = min(size, self.left)
        self.left -= n
        return b"x" * n


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_is_a_store(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "repo")
    assert isinstance(store, Store)
    assert store.description == f"local:{tmp_path / 'repo'}"


def test_roundtrip_multi_chunk_creates_missing_root(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "does" / "not" / "exist")
    data = os.urandom(3 * CHUNK_SIZE + 123)
    assert store.put("a/b/c.bin", BytesReader(data)) == len(data)
    with store.open("a/b/c.bin") as f:
        assert hashlib.sha256(f.read()).digest() == hashlib.sha256(data).digest()
    info = store.stat("a/b/c.bin")
    assert info is not None and info.size == len(data) and info.key == "a/b/c.bin"
    assert info.modified.tzinfo is UTC


def test_overwrite_replaces_content(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    put_bytes(store, "k", b"old")
    put_bytes(store, "k", b"new")
    assert get_bytes(store, "k") == b"new"


def test_permissions_files_0600_dirs_0700(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    store = LocalStore(root)
    put_bytes(store, "pg/prod/x.dump", b"secret rows")
    assert mode(root / "pg/prod/x.dump") == 0o600
    for d in (root, root / "pg", root / "pg/prod"):
        assert mode(d) == 0o700, d


def test_reader_failure_leaves_no_file_and_no_temp(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    with pytest.raises(OSError, match="source died"):
        store.put("dir/obj", FailingReader(2 * CHUNK_SIZE + 5))
    assert store.stat("dir/obj") is None
    assert list(store.list("")) == []
    assert list(tmp_path.iterdir()) == []  # temp file removed, and the directory the put made


def test_failed_overwrite_keeps_previous_version(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    put_bytes(store, "k", b"good")
    with pytest.raises(OSError):
        store.put("k", FailingReader(10))
    assert get_bytes(store, "k") == b"good"


def test_list_sorted_prefix_and_skips_temp_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    for key in ["b/2", "a/1", "a/10", "a-x", "a/sub/3", "c"]:
        put_bytes(store, key, key.encode())
    # What an interrupted put (crash before cleanup) would leave behind.
    (tmp_path / "a" / ".tmp-1-abcd").write_bytes(b"partial")
    (tmp_path / ".tmp-c-zz").write_bytes(b"partial")
    assert [i.key for i in store.list("")] == ["a-x", "a/1", "a/10", "a/sub/3", "b/2", "c"]
    assert [i.key for i in store.list("a/")] == ["a/1", "a/10", "a/sub/3"]
    assert [i.key for i in store.list("a/1")] == ["a/1", "a/10"]
    assert [i.key for i in store.list("a")] == ["a-x", "a/1", "a/10", "a/sub/3"]
    assert list(store.list("nope/")) == []
    assert [i.size for i in store.list("c")] == [1]


def test_list_on_missing_root_is_empty(tmp_path: Path) -> None:
    assert list(LocalStore(tmp_path / "missing").list("")) == []


def test_open_missing_names_key_and_store(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    with pytest.raises(NotFoundError) as err:
        store.open("x/y")
    assert "'x/y'" in str(err.value) and str(tmp_path) in str(err.value)
    assert store.stat("x/y") is None


def test_delete_prunes_empty_dirs_and_ignores_missing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    put_bytes(store, "a/b/c/obj", b"1")
    put_bytes(store, "a/keep", b"2")
    store.delete("a/b/c/obj")
    assert not (tmp_path / "a" / "b").exists()
    assert (tmp_path / "a" / "keep").exists() and tmp_path.exists()
    store.delete("a/b/c/obj")  # missing: no error
    store.delete("a/keep")
    assert list(tmp_path.iterdir()) == []  # root itself is kept


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./a", ".tmp-x", "d/.tmp-y"])
def test_rejects_bad_keys(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError):
        put_bytes(LocalStore(tmp_path), key, b"")


def test_root_under_a_regular_file_is_config_error(tmp_path: Path) -> None:
    # chmod cannot stop root; a path through a regular file fails for everyone.
    blocker = tmp_path / "afile"
    blocker.write_text("not a directory")
    root = blocker / "sub"
    with pytest.raises(ConfigError) as err:
        put_bytes(LocalStore(root), "k", b"data")
    assert str(blocker) in str(err.value)
    # what to fix: a file in the path, not permissions (no chmod makes a file a directory)
    assert "is a file, not a directory" in str(err.value) and "permission" not in str(err.value)


def test_puts_survive_deletes_pruning_their_fresh_directories(tmp_path: Path) -> None:
    """Lock files come and go under one directory from many processes: a delete prunes the
    directory chain the moment it is empty, possibly between a put's mkdirs. Every put lands."""
    import threading

    store = LocalStore(tmp_path)
    stop = threading.Event()
    failures: list[BaseException] = []

    def churn(name: str) -> None:
        n = 0
        try:
            while not stop.is_set():
                key = f"postgres/t/locks/{name}-{n}.json"
                put_bytes(store, key, b"{}")
                assert get_bytes(store, key) == b"{}"
                store.delete(key)  # the directory chain goes with the last file
                n += 1
        except BaseException as exc:  # reported below: the assertion names it
            failures.append(exc)

    threads = [threading.Thread(target=churn, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    threading.Event().wait(3.0)
    stop.set()
    for thread in threads:
        thread.join()
    assert failures == []
    assert list(tmp_path.iterdir()) == []
