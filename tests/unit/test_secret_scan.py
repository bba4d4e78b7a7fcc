"""tests/fixtures/secret_watch.files_holding: the scan behind "no file holds the password"."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.fixtures.secret_watch import files_holding


def test_finds_a_file_written_during_the_run_and_skips_older_ones_and_skipped_trees(tmp_path: Path):
    secret = "s3cr3t-" + os.urandom(4).hex()
    (tmp_path / "deep" / "er").mkdir(parents=True)
    planted = tmp_path / "deep" / "er" / "conf"
    planted.write_text(f"password={secret}\n")
    (tmp_path / "other").write_text("nothing here")
    (tmp_path / "own").mkdir()
    (tmp_path / "own" / "server.conf").write_text(secret)
    (tmp_path / "link").symlink_to(planted)

    assert files_holding(secret, [tmp_path], skip=[tmp_path / "own"]) == [str(planted)]
    assert sorted(files_holding(secret.encode(), [tmp_path])) == sorted(
        [str(planted), str(tmp_path / "own" / "server.conf")]
    )
    # A file whose contents and metadata are older than `since` cannot hold a secret made later.
    assert files_holding(secret, [tmp_path], since=time.time() + 60) == []
    assert files_holding(secret, [tmp_path / "missing"]) == []
