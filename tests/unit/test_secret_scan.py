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


def test_the_process_sampler_finds_a_secret_in_the_argv_or_environment_of_a_process_not_started_by_popen():
    """The sampler alone (os.posix_spawn bypasses the Popen hook): a secret in a live process's
    argv or environment is a leak, named by pid; a clean child is seen and is no leak."""
    from tests.fixtures.secret_watch import SecretWatch

    secret = f"s3cret-{os.getpid()}-{time.monotonic_ns()}"
    clean = {k: v for k, v in os.environ.items() if secret not in v}
    with SecretWatch(secret) as watch:
        in_argv = os.posix_spawn("/bin/sh", ["sh", "-c", "sleep 2", secret], clean)
        in_environ = os.posix_spawn("/bin/sleep", ["sleep", "2"], {**clean, "TOKEN": secret})
        harmless = os.posix_spawn("/bin/sleep", ["sleep", "2"], clean)
        deadline = time.monotonic() + 10
        while len(watch.leaks) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    for pid in (in_argv, in_environ, harmless):
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    assert any(leak.startswith(f"argv of {in_argv}:") for leak in watch.leaks), watch.leaks
    assert any(leak.startswith(f"environ of {in_environ} ") for leak in watch.leaks), watch.leaks
    assert not any(str(harmless) in leak for leak in watch.leaks), watch.leaks
    assert {"sh", "sleep"} <= watch.tools
