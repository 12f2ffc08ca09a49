"""Safe extraction (executor/extract.py): every format, leading folders stripped, hostile members refused."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest
import zstandard

from executor.config import Config
from executor.extract import ForwardOnly, extract, extract_tar_stream, safe_member_path
from executor.store import Store
from executor.txn import PackTransaction
from manifests.errors import LengthError, UnsafeArchiveError

from conftest import make_tar_gz, payload, sha256

GOOD = [("top/", "dir"), ("top/a.txt", b"alpha"), ("top/sub/b.bin", b"\x00" * 3000)]


@pytest.fixture
def txn(tmp_path):
    store = Store(Config(path=tmp_path / "config.toml"), state=tmp_path / "state")
    with PackTransaction(store, tmp_path / "data", "pack") as transaction:
        yield transaction


def write_archive(tmp_path: Path, fmt: str, members) -> Path:
    path = tmp_path / f"archive.{fmt}"
    if fmt == "zip":
        with zipfile.ZipFile(path, "w") as zf:
            for name, content, *_ in members:
                if content == "dir":
                    zf.writestr(zipfile.ZipInfo(name), b"")
                else:
                    zf.writestr(name, content)
        return path
    raw = make_tar_gz(members, fmt={"tar.gz": "w:gz", "tar.xz": "w:xz", "tar": "w", "tar.zst": "w"}[fmt])
    if fmt == "tar.zst":
        raw = zstandard.ZstdCompressor().compress(raw)
    path.write_bytes(raw)
    return path


@pytest.mark.parametrize("fmt", ["tar.gz", "tar.zst", "tar.xz", "tar", "zip"])
def test_every_format_extracts_with_strip_components(fmt, tmp_path, txn):
    archive = write_archive(tmp_path, fmt, GOOD)
    total = extract(archive, fmt, txn, "db", strip=1)
    assert total == 5 + 3000
    assert sorted(txn.files) == ["db/a.txt", "db/sub/b.bin"]
    assert (txn.files_root / "db" / "a.txt").read_bytes() == b"alpha"
    assert txn.files["db/sub/b.bin"].sha256 == sha256(b"\x00" * 3000) and txn.files["db/sub/b.bin"].size == 3000


def test_a_tar_zst_of_several_frames_extracts_whole(tmp_path, txn):
    """pzstd writes one frame per piece; zstd reads them as one stream, and so must we."""
    members = [("top/", "dir")] + [(f"top/f{i}", bytes([65 + i]) * 300_000) for i in range(3)]
    raw = make_tar_gz(members, fmt="w")
    cut = len(raw) // 2  # inside f1's data
    archive = tmp_path / "pieces.tar.zst"
    archive.write_bytes(b"".join(zstandard.ZstdCompressor().compress(piece) for piece in (raw[:cut], raw[cut:])))
    assert extract(archive, "tar.zst", txn, "db", strip=1) == 900_000
    assert {name: (txn.files_root / name).read_bytes() for name in txn.files} == {f"db/f{i}": bytes([65 + i]) * 300_000 for i in range(3)}


def test_without_strip_the_top_folder_is_kept(tmp_path, txn):
    extract(write_archive(tmp_path, "tar.gz", GOOD), "tar.gz", txn, "db")
    assert sorted(txn.files) == ["db/top/a.txt", "db/top/sub/b.bin"]


def test_tar_stream_reads_front_to_back(txn):
    extract_tar_stream(io.BytesIO(make_tar_gz(GOOD)), "tar.gz", txn, "db", strip=1, name="stick.tar.gz")
    assert sorted(txn.files) == ["db/a.txt", "db/sub/b.bin"]


def test_many_small_members_go_through_the_child_process_and_land_whole(tmp_path, txn, monkeypatch):
    """Past SmallFilesProcess.MIN_FILES, the rest of an archive's small files are made by the child."""
    from executor.transfer import SmallFilesProcess

    monkeypatch.setattr(SmallFilesProcess, "MIN_FILES", 5)
    started = []
    monkeypatch.setattr(SmallFilesProcess, "__init__", lambda self, real=SmallFilesProcess.__init__: (started.append(self), real(self))[1])
    members = [(f"top/d{i % 3}/f{i:02d}.json", payload(100 + i * 7, seed=i)) for i in range(40)] + [("top/big.bin", payload(300_000))]
    total = extract(write_archive(tmp_path, "tar", members), "tar", txn, "db", strip=1)
    assert len(started) == 1 and started[0].process.returncode == 0
    assert total == sum(len(data) for _, data in members)
    for name, data in members:
        rel = "db/" + name.removeprefix("top/")
        assert (txn.files_root / rel).read_bytes() == data and txn.files[rel].sha256 == sha256(data)


@pytest.mark.parametrize("staged", ["file", "folder"])
def test_a_member_that_clashes_with_what_another_step_staged_is_refused(staged, tmp_path, txn):
    """Another step of the pack placed db/x (a file, or a folder): the archive's db/x/y or db/x cannot go there."""
    if staged == "file":
        (txn.files_root / "db").mkdir(parents=True)
        (txn.files_root / "db" / "x").write_bytes(b"placed by a download step")
        members = [("top/x/y", b"under a file")]
    else:
        (txn.files_root / "db" / "x").mkdir(parents=True)
        members = [("top/x", b"where a folder is")]
    with pytest.raises(UnsafeArchiveError, match=r"member 'db/x.*' clashes with a file or folder already staged"):
        extract(write_archive(tmp_path, "tar", members), "tar", txn, "db", strip=1)


HOSTILE_TAR = {
    "dotdot": [("top/../../evil", b"x")],
    "absolute": [("/etc/evil", b"x")],
    "backslash-dotdot": [("top\\..\\..\\evil", b"x")],
    "symlink": [("top/link", "symlink", "/etc/passwd")],
    "relative-symlink": [("top/link", "symlink", "../../outside")],
    "hardlink": [("top/a", b"x"), ("top/hard", "hardlink", "top/a")],
    "duplicate": [("top/a", b"1"), ("top/a", b"2")],
    "duplicate-after-strip": [("one/a", b"1"), ("two/a", b"2")],
    "duplicate-via-dot": [("top/a", b"1"), ("top/./a", b"2")],
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_TAR))
def test_hostile_tar_members_are_refused(kind, tmp_path, txn):
    archive = write_archive(tmp_path, "tar.gz", HOSTILE_TAR[kind])
    with pytest.raises(UnsafeArchiveError) as exc:
        extract(archive, "tar.gz", txn, "db", strip=1)
    assert exc.value.exit_code == 3 and "archive.tar.gz" in exc.value.message
    assert not (tmp_path / "evil").exists() and not Path("/etc/evil").exists()


def test_special_files_are_refused(tmp_path, txn):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for kind in (tarfile.FIFOTYPE, tarfile.CHRTYPE):
            info = tarfile.TarInfo(f"top/dev{kind!r}")
            info.type = kind
            tar.addfile(info)
    with pytest.raises(UnsafeArchiveError) as exc:
        extract_tar_stream(io.BytesIO(buffer.getvalue()), "tar", txn, "db", strip=1)
    assert "special file" in exc.value.message


@pytest.mark.parametrize("members", [
    [("top/db", b"file"), ("top/db/inner", b"x")],  # a file, then a member below it
    [("top/db/inner", b"x"), ("top/db", b"file")],  # a folder, then a file of the same name
], ids=["file-then-child", "child-then-file"])
def test_a_file_and_a_folder_of_the_same_name_is_refused_as_untrusted(members, tmp_path, txn):
    with pytest.raises(UnsafeArchiveError):
        extract(write_archive(tmp_path, "tar.gz", members), "tar.gz", txn, "db", strip=1)


def test_zip_dotdot_and_symlink_are_refused(tmp_path, txn):
    evil = tmp_path / "dotdot.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("top/../../evil", b"x")
    with pytest.raises(UnsafeArchiveError):
        extract(evil, "zip", txn, "db", strip=1)
    link = tmp_path / "link.zip"
    with zipfile.ZipFile(link, "w") as zf:
        info = zipfile.ZipInfo("top/link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(UnsafeArchiveError) as exc:
        extract(link, "zip", txn, "db", strip=1)
    assert "link" in exc.value.message


def test_decompression_bomb_stops_at_the_bound(tmp_path, txn):
    archive = write_archive(tmp_path, "tar.gz", [("top/zeros", b"\0" * 2_000_000)])
    assert archive.stat().st_size < 10_000  # it compresses a lot: the bound is on the unpacked size
    with pytest.raises(LengthError) as exc:
        extract(archive, "tar.gz", txn, "db", strip=1, max_total=1_000_000)
    assert exc.value.exit_code == 3 and "1000000" in exc.value.message


def test_damaged_archive_is_untrusted(tmp_path, txn):
    good = make_tar_gz([("top/a", b"x" * 100_000)])
    damaged = tmp_path / "cut.tar.gz"
    damaged.write_bytes(good[: len(good) // 2])
    with pytest.raises(UnsafeArchiveError) as exc:
        extract(damaged, "tar.gz", txn, "db", strip=1)
    assert "damaged" in exc.value.message
    garbage = tmp_path / "garbage.zip"
    garbage.write_bytes(b"not a zip at all")
    with pytest.raises(UnsafeArchiveError):
        extract(garbage, "zip", txn, "db")


def test_safe_member_path():
    assert safe_member_path("top/a/b", 1, "x") == "a/b"
    assert safe_member_path("./top/a", 1, "x") == "a"
    assert safe_member_path("top/", 1, "x") is None
    for bad in ("../a", "/a", "a/../../b", "a\x00b"):
        with pytest.raises(UnsafeArchiveError):
            safe_member_path(bad, 0, "x")


@pytest.mark.parametrize("fmt", ["tar.gz", "tar.xz", "tar.zst"])
def test_a_file_that_is_not_of_its_format_is_damaged(fmt, tmp_path, txn):
    bogus = tmp_path / f"bogus.{fmt}"
    bogus.write_bytes(b"this is not compressed data at all" * 100)
    with pytest.raises(UnsafeArchiveError) as exc:
        extract(bogus, fmt, txn, "db")
    assert "damaged" in exc.value.message


def test_forward_only_reads_small_and_large_and_never_seeks_back():
    data = bytes(range(256)) * 10_000
    stream = ForwardOnly(io.BytesIO(data))
    assert stream.read(512) == data[:512] and stream.tell() == 512
    assert stream.seek(1000) == 1000 and stream.read(3 << 20) == data[1000 : 1000 + (3 << 20)]
    with pytest.raises(tarfile.ReadError):
        stream.seek(10)
    assert stream.read() == data[1000 + (3 << 20) :]


def test_forward_only_skips_within_its_buffer_and_past_its_end():
    data = bytes(range(256)) * 10_000
    stream = ForwardOnly(io.BytesIO(data))
    assert stream.peek(512) == data[:512]  # fills the read-ahead
    assert stream.seek(700) == 700 and stream.read(10) == data[700:710]
    past = ForwardOnly.READ_AHEAD + 4321  # beyond what the buffer holds
    assert stream.seek(past) == past and stream.tell() == past and stream.read(10) == data[past : past + 10]
    end = len(data) + 5
    with pytest.raises(tarfile.ReadError, match="unexpected end"):
        stream.seek(end)
