"""A misbehaving server on 127.0.0.1, end to end through the CLI: every test updates a pack
that is installed already, and checks the exit code and the final state of the data dir
(the new version complete, or the old one intact with at most a resumable partial file).

Engine-level details of the same faults (headers sent, bytes resumed) are in test_http.py.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys

import pytest

from conftest import REPO, download_step, fast_settings, files_under, gets, payload, sha256
from support.localserver import Fault

STAGING = ".devops-cp-staging"
SIZE = 1_000_000


class Update:
    """Pack `db` at v1 (installed), its recipe now pointing at v2 on the server."""

    def __init__(self, cli, server, write_recipe, env, *, etag="auto"):
        self.cli, self.server, self.env = cli, server, env
        self.v1, self.v2 = payload(200_000, seed=1), payload(SIZE, seed=2)
        self.path = "/db-v2.bin"
        self._write_recipe = write_recipe
        url = server.add("/db-v1.bin", self.v1)
        write_recipe("db", [download_step(url, "db/db.bin", self.v1)])
        assert cli("install", "db").exit_code == 0
        self.url = server.add(self.path, self.v2, etag=etag, last_modified=None if etag is None else "auto")
        self.point_at(self.v2)

    def point_at(self, data: bytes, **step) -> None:
        self._write_recipe("db", [download_step(self.url, "db/db.bin", data, **step)])

    @property
    def data_dir(self):
        return self.env.sample_dir()

    def install(self, retries: int = 3, **settings):
        return self.cli("install", "db", "--progress", "none", settings=fast_settings(retries=retries, **settings))

    def partial_size(self) -> int:
        return sum(p.stat().st_size for p in (self.data_dir / STAGING / "partial").glob("*.part"))

    def assert_old_intact(self) -> None:
        """v1 in place and recorded; nothing else visible but a resumable partial download."""
        assert (self.data_dir / "db" / "db.bin").read_bytes() == self.v1
        assert self.env.record("db")["files"][0]["sha256"] == sha256(self.v1)
        for rel in files_under(self.data_dir):
            assert rel == "db/db.bin" or (rel.startswith(f"{STAGING}/partial/") and rel.endswith((".part", ".part.json"))), rel

    def assert_new_installed(self, data: bytes | None = None) -> None:
        data = self.v2 if data is None else data
        assert (self.data_dir / "db" / "db.bin").read_bytes() == data
        assert self.env.record("db")["files"][0]["sha256"] == sha256(data)
        assert files_under(self.data_dir) == ["db/db.bin"]  # no partial, no staging dir

    def v2_gets(self) -> list:
        return gets(self.server, self.path)


@pytest.fixture
def update(cli, local_server, write_recipe, isolated_env) -> Update:
    return Update(cli, local_server, write_recipe, isolated_env)


# --- dropped connections ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_drops_at_random_offsets_resume_within_one_run(seed, update, local_server):
    offset = random.Random(seed).randrange(1, SIZE // 4)
    local_server.set_fault(update.path, Fault(drop_after=offset, drop_times=3))
    result = update.install(retries=5)
    assert result.exit_code == 0, result.stderr
    update.assert_new_installed()
    ranges = [r.range for r in update.v2_gets()]
    assert ranges[0] is None and all(r is not None and r.startswith("bytes=") for r in ranges[1:]) and len(ranges) == 4
    assert local_server.bytes_sent(update.path) == SIZE  # every byte sent once: resumed, never restarted


def test_drops_at_random_offsets_across_runs_then_a_rerun_completes(update, local_server):
    """Each run gives up after one attempt (exit 6) and keeps what it got; the next one resumes."""
    rng = random.Random(42)
    kept = 0
    for _ in range(4):
        local_server.set_fault(update.path, Fault(drop_after=rng.randrange(1, SIZE // 5)))
        result = update.install(retries=0)
        assert result.exit_code == 6, result.stderr
        assert "partial file is kept" in result.stderr
        update.assert_old_intact()
        assert update.partial_size() > kept
        kept = update.partial_size()
    local_server.set_fault(update.path, None)
    result = update.install()
    assert result.exit_code == 0, result.stderr
    update.assert_new_installed()
    assert update.v2_gets()[-1].range == f"bytes={kept}-"
    assert local_server.bytes_sent(update.path) == SIZE


# --- slow bodies and deadlines ----------------------------------------------------------------------


def test_a_trickle_of_one_byte_a_second_is_ended_by_the_deadline_and_stays_resumable(update, local_server):
    local_server.set_fault(update.path, Fault(drop_after=300_000))  # a first run got 300 kB before the line broke
    assert update.install(retries=0).exit_code == 6
    local_server.set_fault(update.path, Fault(trickle_bps=1))
    result = update.install(deadline=1.5)
    assert result.exit_code == 6, result.stderr
    assert "ran past its deadline" in result.stderr and "partial file is kept" in result.stderr
    update.assert_old_intact()
    kept = update.partial_size()
    assert kept > 300_000  # the trickled bytes were kept too

    local_server.set_fault(update.path, None)
    result = update.install()
    assert result.exit_code == 0, result.stderr
    update.assert_new_installed()
    assert update.v2_gets()[-1].range == f"bytes={kept}-"


def test_a_retry_after_longer_than_the_deadline_is_not_waited_out(update, local_server):
    """The deadline is for the whole file: a 'come back in 2 minutes' with 1 s left ends the run now."""
    slept = []
    local_server.set_fault(update.path, Fault(statuses=[429] * 10, retry_after=120))
    result = update.install(retries=5, deadline=1.0, sleep=slept.append)
    assert result.exit_code == 6, result.stderr
    assert "deadline" in result.stderr
    assert slept == []  # did not sleep 120 s (or 5 x 120 s) past its deadline
    update.assert_old_intact()


# --- lying headers --------------------------------------------------------------------------------------


def test_a_content_length_shorter_than_the_body_is_refused_by_the_checksum(update, local_server):
    local_server.set_fault(update.path, Fault(wrong_length=SIZE - 1000))
    result = update.install()
    assert result.exit_code == 3, result.stderr
    assert "checksum mismatch" in result.stderr
    assert len(update.v2_gets()) == 2  # downloaded once more, as the seed does, then refused
    update.assert_old_intact()
    assert update.partial_size() == 0  # a body that failed its checksum is not kept


def test_a_content_length_longer_than_the_body_ends_correct(update, local_server):
    """The connection closes early; the resume asks past the end (416) and the file checks out."""
    local_server.set_fault(update.path, Fault(wrong_length=SIZE + 1000))
    result = update.install()
    assert result.exit_code == 0, result.stderr
    update.assert_new_installed()


def test_a_body_longer_than_the_exact_size_is_refused_and_not_kept(update, local_server):
    update.point_at(update.v2, size_exact=True)
    local_server.set_fault(update.path, Fault(extra_body=b"x" * 5000, wrong_length=SIZE + 5000))
    result = update.install()
    assert result.exit_code == 3, result.stderr
    assert "longer than" in result.stderr
    update.assert_old_intact()
    assert update.partial_size() == 0


def test_a_content_range_at_the_wrong_offset_restarts_from_zero(update, local_server):
    local_server.set_fault(update.path, Fault(drop_after=400_000))
    assert update.install(retries=0).exit_code == 6
    local_server.set_fault(update.path, Fault(range_shift=1000))
    result = update.install()
    assert result.exit_code == 0, result.stderr
    update.assert_new_installed()
    statuses = [(r.range is not None, r.status) for r in update.v2_gets()]
    assert statuses[-2:] == [(True, 206), (False, 200)]  # the shifted 206 was refused, the restart took 200


# --- 416 -----------------------------------------------------------------------------------------------------


def test_416_for_a_partial_longer_than_the_new_file_restarts(cli, local_server, write_recipe, isolated_env):
    """The file got shorter on the server (no validator to tell): the partial is past its end."""
    update = Update(cli, local_server, write_recipe, isolated_env, etag=None)
    local_server.set_fault(update.path, Fault(drop_after=800_000))
    assert update.install(retries=0).exit_code == 6
    local_server.set_fault(update.path, None)
    shorter = payload(500_000, seed=3)
    local_server.replace(update.path, shorter)
    update.point_at(shorter)
    result = update.install()
    assert result.exit_code == 0, result.stderr
    update.assert_new_installed(shorter)
    assert [r.status for r in update.v2_gets()][-2:] == [416, 200]


def test_416_for_a_partial_that_was_already_complete_installs_it(update, local_server):
    """Killed right after the last byte landed: the re-run asks for the rest, gets 416, checks the file, done."""
    child = subprocess.run(
        [sys.executable, str(REPO / "tests" / "crash_driver.py"), f"bytes:{SIZE}", "data", "install", "db", "--progress", "none"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert update.partial_size() == SIZE
    result = update.install()
    assert result.exit_code == 0, result.stderr
    update.assert_new_installed()
    assert update.v2_gets()[-1].status == 416 and local_server.bytes_sent(update.path) < SIZE + 1000


# --- statuses and redirects -----------------------------------------------------------------------------


def test_429_waits_as_long_as_retry_after_says_then_completes(update, local_server):
    slept = []
    local_server.set_fault(update.path, Fault(statuses=[429], retry_after=7))
    result = update.install(sleep=slept.append)
    assert result.exit_code == 0, result.stderr
    assert slept == [7.0]
    update.assert_new_installed()


def test_429_for_longer_than_the_retries_exit_6_and_the_old_version_stays(update, local_server):
    local_server.set_fault(update.path, Fault(statuses=[429] * 10, retry_after=1))
    result = update.install(retries=2)
    assert result.exit_code == 6, result.stderr
    assert "after 3 attempts" in result.stderr and "HTTP 429" in result.stderr
    update.assert_old_intact()
    assert not (update.data_dir / STAGING).exists()  # nothing was received: not even an empty staging dir


def test_500_then_success(update, local_server):
    slept = []
    local_server.set_fault(update.path, Fault(statuses=[500, 503, 500]))
    result = update.install(retries=3, backoff=1.0, sleep=slept.append)
    assert result.exit_code == 0, result.stderr
    assert slept == [1.0, 2.0, 4.0]  # exponential backoff between the attempts
    update.assert_new_installed()


@pytest.mark.parametrize("target", ["file:///etc/passwd", "file://{data_dir}/db/db.bin"])
def test_redirect_to_a_file_url_is_refused(target, update, local_server):
    local_server.set_fault(update.path, Fault(redirect_to=target.format(data_dir=update.data_dir)))
    result = update.install()
    assert result.exit_code == 6, result.stderr
    assert "redirects to file://" in result.stderr
    update.assert_old_intact()
    assert not (update.data_dir / STAGING).exists()
