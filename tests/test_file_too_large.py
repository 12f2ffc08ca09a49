"""A file larger than its filesystem holds (EFBIG: FAT32 holds at most 4 GiB - 1 byte, the usual
USB stick). It must be a clear error with exit 5 that says what to do, never a traceback, and
leave nothing behind.

The real kernel error comes from a file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored) set on a
child `devops-cp` process: its writes past the limit fail with EFBIG, as a FAT32 filesystem's
writes past 4 GiB do. The reservation's own EFBIG (fallocate on FAT32 refuses at once) is
simulated in-process.
"""

from __future__ import annotations

import ctypes
import errno
import io
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import files_under, payload
from executor import durable
from executor.transfer import Copy, closing_output
from manifests.errors import FileTooLargeError

LIMIT = 1 << 20  # the child's largest file

RUN_LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
from devops_cp.cli import main
main(sys.argv[2:], prog_name="devops-cp")
"""


def run_limited(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", RUN_LIMITED, str(LIMIT), "data", *args, "--progress", "none"], capture_output=True, text=True, timeout=120)


@pytest.fixture
def key(keygen_key) -> Path:
    return keygen_key


def test_a_download_larger_than_the_filesystem_holds_is_exit_5_and_leaves_nothing(serve_pack, isolated_env):
    serve_pack("big", payload(3 * LIMIT))
    result = run_limited("install", "big", "--yes")
    assert result.returncode == 5, result.stderr
    assert "cannot hold a file of 3.0 MiB" in result.stderr and "FAT32" in result.stderr
    assert "Traceback" not in result.stderr
    assert files_under(isolated_env.sample_dir()) == []


def test_a_bundle_larger_than_the_stick_holds_says_to_split_it(serve_pack, isolated_env, key, tmp_path):
    serve_pack("model", payload(3 * LIMIT), size_exact=True)  # pinned: streamed into the archive
    out = tmp_path / "stick" / "b.tar.zst"
    out.parent.mkdir()
    result = run_limited("bundle", "model", "-o", str(out), "--key", str(key))
    assert result.returncode == 5, result.stderr
    assert "cannot hold a file of" in result.stderr and "--split-size fat32" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(out.parent.iterdir()) == []

    result = run_limited("bundle", "model", "-o", str(out), "--key", str(key), "--split-size", "1MiB")  # what the hint says; parts are at least 1 MiB
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith("b.tar.zst.0")) == ["b.tar.zst.001", "b.tar.zst.002", "b.tar.zst.003", "b.tar.zst.004"]


def test_a_write_refused_as_too_large_is_file_too_large_error():
    class TooLarge(io.RawIOBase):
        name = "/media/stick/data/db.bin"

        def writable(self):
            return True

        def write(self, b):
            raise OSError(errno.EFBIG, "File too large")

    with pytest.raises(FileTooLargeError) as exc:
        Copy(TooLarge(), what="db.bin", limit=5 << 30).feed([b"data"])
    assert exc.value.exit_code == 5 and exc.value.where == "/media/stick/data" and exc.value.size == 5 << 30


def test_a_reservation_refused_as_too_large_fails_before_the_first_byte(tmp_path, monkeypatch):
    def efbig(fd, mode, offset, length):  # what fallocate says on FAT32 past 4 GiB
        ctypes.set_errno(errno.EFBIG)
        return -1

    monkeypatch.setattr(durable, "_fallocate", efbig)
    with pytest.raises(FileTooLargeError) as exc:
        with closing_output(open(tmp_path / "model.bin", "wb"), reserve=5 << 30) as out:
            out.write(b"never")
    assert "cannot hold a file of 5.0 GiB" in exc.value.message
    assert (tmp_path / "model.bin").stat().st_size == 0
