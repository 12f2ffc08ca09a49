"""bundler/unpacked.py directly: the first walk hashes an archive's members, the second pass copies
them into the bundle. An uncompressed tar is read again at the offsets the first walk found
(no second header walk); compressed tars and zips are walked again. Either way the bytes
copied are checked against the first walk, and an archive that changed is refused."""

from __future__ import annotations

import hashlib
import io
import random
import zipfile
from pathlib import Path, PurePosixPath

import pytest
import zstandard

from bundler import unpacked
from bundler.unpacked import UnpackedArchive
from bundler.writer import Member, TarWriter
from conftest import make_tar_gz
from executor.extract import safe_member_path
from executor.transfer import CHUNK_SIZE
from executor.txn import KeptArchive
from manifests.errors import ChecksumMismatch, UnsafeArchiveError

BIG = random.Random(3).randbytes(CHUNK_SIZE + 1000)  # more than one chunk: file_chunks, not one read
MEMBERS = [("top/", "dir"), ("top/a.json", b'{"a": 1}' * 300), ("top/sub/b.bin", bytes(range(256)) * 40), ("top/empty", b""), ("top/big", BIG)]
FILES = {"db/a.json": MEMBERS[1][1], "db/sub/b.bin": MEMBERS[2][1], "db/empty": b"", "db/big": BIG}
TAR_MODES = {"tar": "w", "tar.gz": "w:gz", "tar.zst": "w"}


def stage(tmp_path: Path, fmt: str, members=MEMBERS) -> KeptArchive:
    path = tmp_path / f"pack.{fmt}"
    if fmt == "zip":
        with zipfile.ZipFile(path, "w") as zf:
            for name, content in members:
                if content != "dir":
                    zf.writestr(name, content)
    else:
        raw = make_tar_gz(members, fmt=TAR_MODES[fmt])
        path.write_bytes(zstandard.ZstdCompressor().compress(raw) if fmt == "tar.zst" else raw)
    return KeptArchive(path, fmt, "db", strip=1, max_total=None)


def copy_all(archive: UnpackedArchive, files: list[tuple[str, int, str]]) -> dict[str, bytes]:
    copied = {}
    for rel, size, sha256 in files:
        out = io.BytesIO()
        copy = archive.copy_next(rel, out)
        copy.check(sha256, size)
        copied[rel] = out.getvalue()
    return copied


@pytest.mark.parametrize("fmt", ["tar", "tar.gz", "tar.zst", "zip"])
def test_both_passes_agree_with_the_archive(fmt, tmp_path):
    archive = UnpackedArchive(stage(tmp_path, fmt))
    files = archive.files()
    assert files == [(rel, len(data), hashlib.sha256(data).hexdigest()) for rel, data in FILES.items()]
    try:
        assert copy_all(archive, files) == FILES
    finally:
        archive.close()


def test_an_uncompressed_tar_is_not_walked_twice(tmp_path, monkeypatch):
    archive = UnpackedArchive(stage(tmp_path, "tar"))
    files = archive.files()

    def no_second_walk(*args, **kwargs):
        raise AssertionError("the tar's headers were walked again")

    monkeypatch.setattr(unpacked, "iter_archive", no_second_walk)
    try:
        assert copy_all(archive, files) == FILES
    finally:
        archive.close()


def test_a_member_changed_after_the_first_walk_fails_the_hash_check(tmp_path):
    kept = stage(tmp_path, "tar")
    archive = UnpackedArchive(kept)
    files = archive.files()
    data = kept.path.read_bytes()
    at = data.index(MEMBERS[2][1])
    kept.path.write_bytes(data[:at] + b"X" + data[at + 1 :])  # same length, one byte of b.bin changed
    tar = TarWriter(io.BytesIO())
    try:
        tar.add(Member(files[0][0], None, files[0][1], files[0][2], fetch=lambda out: archive.copy_next(files[0][0], out)), lambda n: None)
        with pytest.raises(ChecksumMismatch, match="db/sub/b.bin"):
            tar.add(Member(files[1][0], None, files[1][1], files[1][2], fetch=lambda out: archive.copy_next(files[1][0], out)), lambda n: None)
    finally:
        archive.close()


@pytest.mark.parametrize("fmt", ["tar", "tar.gz"])
def test_a_tar_cut_short_after_the_first_walk_is_refused(fmt, tmp_path):
    kept = stage(tmp_path, fmt)
    archive = UnpackedArchive(kept)
    files = archive.files()
    data = kept.path.read_bytes()
    kept.path.write_bytes(data[: len(data) // 2])
    try:
        with pytest.raises(UnsafeArchiveError):
            copy_all(archive, files)
    finally:
        archive.close()


@pytest.mark.parametrize("fmt", ["tar", "zip"])
def test_files_asked_for_out_of_order_are_refused(fmt, tmp_path):
    archive = UnpackedArchive(stage(tmp_path, fmt))
    files = archive.files()
    try:
        with pytest.raises(UnsafeArchiveError, match="changed in the staging cache"):
            archive.copy_next(files[1][0], io.BytesIO())
    finally:
        archive.close()


def pathlib_member_path(name: str, strip: int) -> str | None:
    """What safe_member_path answered before its shortcut for names already in canonical form."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or "\x00" in name:
        raise UnsafeArchiveError("outside")
    parts = [p for p in path.parts if p not in ("", ".")]
    return "/".join(parts[strip:]) if len(parts) > strip else None


@pytest.mark.parametrize(
    "name",
    ["a", "a/b/c", "top/", "./top/a", "a//b", "a/./b", "a/.", "/a", "//a", "a/../b", "..", "../a", ".", "", "a\\b", "a\\..\\b",
     "a\x00b", "..a/b.", "a/..b/.c", "...", "a/...", " /a", "a\x01/b", "é/ü"],
)  # fmt: skip
@pytest.mark.parametrize("strip", [0, 1, 2])
def test_safe_member_path_reads_names_as_pathlib_does(name, strip):
    try:
        expected = pathlib_member_path(name, strip)
    except UnsafeArchiveError:
        with pytest.raises(UnsafeArchiveError, match="would land outside"):
            safe_member_path(name, strip, "x")
    else:
        assert safe_member_path(name, strip, "x") == expected


def test_safe_member_path_reads_random_names_as_pathlib_does():
    rnd = random.Random(11)
    for _ in range(3000):
        name = "".join(rnd.choice("a./\\\x00é") for _ in range(rnd.randint(0, 9)))
        strip = rnd.randint(0, 2)
        try:
            expected = pathlib_member_path(name, strip)
        except UnsafeArchiveError:
            with pytest.raises(UnsafeArchiveError):
                safe_member_path(name, strip, "x")
        else:
            assert safe_member_path(name, strip, "x") == expected, repr(name)
