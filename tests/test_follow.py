"""executor/follow.py: a bundle's kept tar is walked while it downloads; the walk counts only
when it read exactly the verified bytes, and a bundle is the same either way."""

from __future__ import annotations

import hashlib
import random
import threading
import time
from pathlib import Path

import pytest

from bundler.unpacked import UnpackedArchive
from conftest import download_step, make_tar_gz, read_manifest, sha256
from devops_cp.localserver import Fault
from executor.extract import digest_members, iter_archive
from executor.follow import ArchiveFollower, GrowingFile

MEMBERS = [("top/", "dir"), *((f"top/d{i % 3}/f{i:03d}", random.Random(i).randbytes(i * 997 % 20000)) for i in range(60))]
UNPACKED = {f"db/{name[4:]}": data for name, data in MEMBERS[1:]}


def write_slowly(path: Path, data: bytes, pieces: int = 40) -> threading.Thread:
    """Another thread writes `data` into `path` in pieces, pausing between them: a download."""

    def run() -> None:
        step = -(-len(data) // pieces)
        with open(path, "wb") as out:
            for at in range(0, len(data), step):
                out.write(data[at : at + step])
                out.flush()
                time.sleep(0.003)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_growing_file_gives_whole_reads_until_the_writer_is_done(tmp_path):
    data = random.Random(1).randbytes(300_000)
    writer = write_slowly(tmp_path / "partial", data)
    source = GrowingFile(tmp_path / "partial")
    first = source.read(100_000)  # waits for the file to appear, then for enough bytes
    assert first == data[:100_000]
    writer.join()
    source.complete.set()
    assert source.read(10**6) == data[100_000:]  # fewer than asked: only once it is complete
    assert source.read(10) == b""
    assert source.hasher.hexdigest() == hashlib.sha256(data).hexdigest()
    source.close()


@pytest.mark.parametrize("fmt", ["tar", "tar.gz"])
def test_the_followers_walk_is_the_walk_of_the_finished_file(fmt, tmp_path):
    data = make_tar_gz(MEMBERS, fmt="w" if fmt == "tar" else "w:gz")
    path = tmp_path / f"pack.{fmt}"
    follower = ArchiveFollower(path, fmt, strip=1, max_total=None)
    write_slowly(path, data).join()
    walked = follower.result(hashlib.sha256(data).hexdigest())
    assert walked == digest_members(iter_archive(path, fmt, strip=1), path.name)
    assert [(m, size, digest) for m, size, digest, _ in walked] == [(rel[3:], len(d), sha256(d)) for rel, d in UNPACKED.items()]


def test_a_walk_of_other_bytes_than_the_verified_ones_is_no_result(tmp_path):
    data = make_tar_gz(MEMBERS, fmt="w")
    path = tmp_path / "pack.tar"
    follower = ArchiveFollower(path, "tar", strip=1, max_total=None)
    write_slowly(path, data).join()
    assert follower.result(hashlib.sha256(data + b"\0").hexdigest()) is None


def test_a_hostile_archive_is_no_result_and_no_error(tmp_path):
    data = make_tar_gz([("top/../../escape", b"x")], fmt="w")
    path = tmp_path / "pack.tar"
    path.write_bytes(data)
    follower = ArchiveFollower(path, "tar", strip=1, max_total=None)
    assert follower.result(hashlib.sha256(data).hexdigest()) is None  # the walk of the finished file says why


def test_stop_ends_a_walk_that_waits_for_bytes_that_never_come(tmp_path):
    path = tmp_path / "pack.tar"
    path.write_bytes(make_tar_gz(MEMBERS, fmt="w")[:5000])  # the download failed here
    follower = ArchiveFollower(path, "tar", strip=1, max_total=None)
    time.sleep(0.05)
    started = time.monotonic()
    follower.stop()
    assert not follower.thread.is_alive() and follower.members is None
    assert time.monotonic() - started < 5


# --- end to end: the bundle takes the walk the follower made ---------------------------------------------


@pytest.fixture
def key(cli, tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("DEVOPS_CP_KEY_PASSPHRASE", "follow")
    (tmp_path / "keys").mkdir()
    assert cli("keygen", "-o", str(tmp_path / "keys" / "site")).exit_code == 0
    return tmp_path / "keys" / "site.key"


def serve_tar(local_server, write_recipe, fault: Fault | None = None) -> None:
    data = make_tar_gz(MEMBERS, fmt="w")
    url = local_server.add("/db.tar", data)
    if fault is not None:
        local_server.set_fault("/db.tar", fault)
    write_recipe("tardb", [download_step(url, "db", data, extract="tar", strip_components=1, size_exact=True)])


def bundled_files(out: Path) -> list[tuple[str, int, str]]:
    return [(f["path"], f["size"], f["sha256"]) for f in read_manifest(out)["files"]]


def test_a_bundle_of_a_tar_walks_it_as_it_downloads_not_afterwards(cli, key, local_server, write_recipe, tmp_path, monkeypatch):
    serve_tar(local_server, write_recipe)

    def no_second_walk(self):
        raise AssertionError("the finished archive was walked again for its hashes")

    monkeypatch.setattr(UnpackedArchive, "_walk", no_second_walk)  # an uncompressed tar's copy reads offsets, no walk
    out = tmp_path / "b.tar.zst"
    result = cli("bundle", "tardb", "-o", str(out), "--key", str(key), "--progress", "none")
    assert result.exit_code == 0, result.stderr
    assert bundled_files(out) == [(rel, len(d), sha256(d)) for rel, d in UNPACKED.items()]


@pytest.mark.parametrize("fault", [Fault(drop_after=20_000), Fault(drop_after=20_000, ignore_range=True)], ids=["resumed", "restarted"])
def test_a_dropped_download_still_gives_the_right_manifest(fault, cli, key, local_server, write_recipe, tmp_path):
    serve_tar(local_server, write_recipe, fault)
    out = tmp_path / "b.tar.zst"
    result = cli("bundle", "tardb", "-o", str(out), "--key", str(key), "--progress", "none")
    assert result.exit_code == 0, result.stderr
    assert bundled_files(out) == [(rel, len(d), sha256(d)) for rel, d in UNPACKED.items()]
