"""The one safe member walk (executor/extract.py: iter_archive, iter_tar_stream), used directly
as the bundler does: nothing is written, every refusal still happens."""

from __future__ import annotations

import io
import random
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

import pytest
import zstandard

from executor.extract import iter_archive, iter_tar_stream, safe_member_path
from manifests.errors import LengthError, UnsafeArchiveError

from conftest import make_tar_gz

FORMATS = ["tar", "tar.gz", "tar.xz", "tar.zst", "zip"]
TAR_MODES = {"tar.gz": "w:gz", "tar.xz": "w:xz", "tar": "w", "tar.zst": "w"}


def write_archive(tmp_path: Path, fmt: str, members) -> Path:
    """members: (name, bytes) for a file, (name, "dir") for a folder, or a tar link (tar formats)."""
    path = tmp_path / f"archive.{fmt}"
    if fmt == "zip":
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, content, *_ in members:
                zf.writestr(zipfile.ZipInfo(name.rstrip("/") + "/") if content == "dir" else name, b"" if content == "dir" else content)
        return path
    raw = make_tar_gz(members, fmt=TAR_MODES[fmt])
    path.write_bytes(zstandard.ZstdCompressor().compress(raw) if fmt == "tar.zst" else raw)
    return path


def walk(path: Path, fmt: str, **options) -> list[tuple[str, int, bytes]]:
    return [(rel, size, source.read()) for rel, size, source in iter_archive(path, fmt, **options)]


GOOD = [("top/", "dir"), ("top/README", b"readme"), ("top/a.txt", b"alpha"), ("top/sub/", "dir"), ("top/sub/b.bin", b"\x00" * 70_000), ("top/z", b"")]


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_yields_each_file_in_archive_order_stripped(fmt, tmp_path):
    archive = write_archive(tmp_path, fmt, GOOD)
    assert walk(archive, fmt, strip=1) == [("README", 6, b"readme"), ("a.txt", 5, b"alpha"), ("sub/b.bin", 70_000, b"\x00" * 70_000), ("z", 0, b"")]
    assert [rel for rel, _, _ in walk(archive, fmt)] == ["top/README", "top/a.txt", "top/sub/b.bin", "top/z"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_files_left_unread_are_skipped_and_top_level_files_vanish_after_stripping(fmt, tmp_path):
    archive = write_archive(tmp_path, fmt, [("loose.txt", b"at the top"), ("top/a", b"1" * 5000), ("top/b", b"22")])
    items = iter_archive(archive, fmt, strip=1)
    assert next(items)[:2] == ("a", 5000)  # not read
    rel, size, source = next(items)
    assert (rel, size, source.read(), source.read()) == ("b", 2, b"22", b"")
    assert next(items, None) is None


def test_the_stream_variant_reads_front_to_back_once(tmp_path):
    raw = io.BytesIO(make_tar_gz(GOOD))
    raw.seek = None  # a forward-only source: no seeking at all
    assert [rel for rel, _, _ in iter_tar_stream(raw, "tar.gz", strip=1, name="stick.tar.gz")] == ["README", "a.txt", "sub/b.bin", "z"]


REFUSED = {
    "absolute": [("/etc/evil", b"x")],
    "dotdot": [("top/../../evil", b"x")],
    "backslash-dotdot": [("top\\..\\..\\evil", b"x")],
    "duplicate": [("top/a", b"1"), ("top/a", b"2")],
    "duplicate-after-strip": [("one/a", b"1"), ("two/a", b"2")],
    "duplicate-via-dot": [("top/a", b"1"), ("top/./a", b"2")],
    "file-then-child": [("top/db", b"file"), ("top/db/inner", b"x")],
    "child-then-file": [("top/db/inner", b"x"), ("top/db", b"file")],
    "deep-child-then-file": [("top/db/x/y/inner", b"x"), ("top/db/x", b"file")],
    "folder-then-file": [("top/db/", "dir"), ("top/db", b"file")],
    "file-then-folder": [("top/db", b"file"), ("top/db/", "dir")],
}


@pytest.mark.filterwarnings("ignore:Duplicate name")  # zipfile's, when the test writes a duplicate
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", sorted(REFUSED))
def test_hostile_names_are_refused_by_the_walk_alone(kind, fmt, tmp_path):
    archive = write_archive(tmp_path, fmt, REFUSED[kind])
    with pytest.raises(UnsafeArchiveError) as exc:
        walk(archive, fmt, strip=1)
    assert exc.value.exit_code == 3 and "archive." in exc.value.message
    assert sorted(p.name for p in tmp_path.iterdir()) == [archive.name]  # nothing written


@pytest.mark.parametrize("fmt", ["tar", "tar.gz", "tar.xz", "tar.zst"])
@pytest.mark.parametrize("member", [("top/link", "symlink", "/etc/passwd"), ("top/hard", "hardlink", "top/a")], ids=["symlink", "hardlink"])
def test_tar_links_are_refused(member, fmt, tmp_path):
    with pytest.raises(UnsafeArchiveError) as exc:
        walk(write_archive(tmp_path, fmt, [("top/a", b"x"), member]), fmt, strip=1)
    assert "is a link" in exc.value.message


def test_tar_special_files_are_refused(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("top/fifo")
        info.type = tarfile.FIFOTYPE
        tar.addfile(info)
    with pytest.raises(UnsafeArchiveError) as exc:
        list(iter_tar_stream(io.BytesIO(buffer.getvalue()), "tar", strip=1))
    assert "special file" in exc.value.message


def test_zip_symlinks_are_refused(tmp_path):
    path = tmp_path / "link.zip"
    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo("top/link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(UnsafeArchiveError) as exc:
        walk(path, "zip", strip=1)
    assert "link" in exc.value.message


@pytest.mark.parametrize("fmt", FORMATS)
def test_past_max_total_is_a_length_error_before_the_member_is_read(fmt, tmp_path):
    archive = write_archive(tmp_path, fmt, [("top/a", b"1" * 600), ("top/zeros", b"\0" * 2_000_000)])
    items = iter_archive(archive, fmt, strip=1, max_total=1_000_000)
    assert next(items)[:2] == ("a", 600)
    with pytest.raises(LengthError) as exc:
        next(items)
    assert exc.value.exit_code == 3 and "1000000" in exc.value.message


def test_files_stripped_away_still_count_toward_max_total(tmp_path):
    archive = write_archive(tmp_path, "tar.gz", [("top-level-bomb", b"\0" * 2_000_000), ("top/a", b"1")])
    with pytest.raises(LengthError):
        walk(archive, "tar.gz", strip=1, max_total=1_000_000)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_damaged_archive_is_untrusted_also_while_a_member_is_read(fmt, tmp_path):
    good = write_archive(tmp_path, fmt, [("top/a", bytes(range(256)) * 2000), ("top/b", b"x")]).read_bytes()
    cut = tmp_path / f"cut.{fmt}"
    cut.write_bytes(good[: len(good) // 2] if fmt != "zip" else good[:200] + b"\xff" * 300 + good[500:])
    with pytest.raises(UnsafeArchiveError) as exc:
        walk(cut, fmt, strip=1)
    assert "cut." in exc.value.message and "damaged" in exc.value.message


@pytest.mark.parametrize("fmt", FORMATS)
def test_not_an_archive_at_all_is_damaged(fmt, tmp_path):
    bogus = tmp_path / f"bogus.{fmt}"
    bogus.write_bytes(b"not an archive " * 100)
    with pytest.raises(UnsafeArchiveError):
        walk(bogus, fmt, name="stick copy")


@pytest.mark.parametrize("tar_format", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_the_walk_reads_what_tarfile_reads_whatever_the_header_form(tmp_path, tar_format):
    """Plain ustar headers take the fast path; long names, pax records and GNU headers take tarfile's."""
    names = ["top/short.txt", "top/" + "deep/" * 30 + "long-name.bin", "top/ünïcode.txt", "top/empty", "top/x" * 30]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tar_format) as tar:
        for number, name in enumerate(names):
            if tar_format == tarfile.USTAR_FORMAT and (len(name) > 100 or not name.isascii()):
                continue
            data = bytes([number]) * (number * 700)
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.uid, info.uname = len(data), 1_700_000_000 + number, 1000, "builder"
            tar.addfile(info, io.BytesIO(data))
    archive = tmp_path / "a.tar"
    archive.write_bytes(buffer.getvalue())
    with tarfile.open(archive) as tar:
        expected = [(m.name.split("/", 1)[1], tar.extractfile(m).read()) for m in tar.getmembers()]
    assert [(rel, source.read(size)) for rel, size, source in iter_archive(archive, "tar", strip=1)] == expected


# --- member names: the fast path reads them as pathlib does ---------------------------------


def pathlib_member_path(name: str, strip: int) -> str | None:
    """What safe_member_path answered before its shortcut for names already in canonical form
    (control characters refused: the rule manifest paths follow too)."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or any(ord(c) < 0x20 or c == "\x7f" for c in name):
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
        with pytest.raises(UnsafeArchiveError, match="would land outside|control characters"):
            safe_member_path(name, strip, "x")
    else:
        assert safe_member_path(name, strip, "x") == expected


def test_safe_member_path_reads_random_names_as_pathlib_does():
    rnd = random.Random(11)
    for _ in range(3000):
        name = "".join(rnd.choice("a./\\\x00\x1fé") for _ in range(rnd.randint(0, 9)))
        strip = rnd.randint(0, 2)
        try:
            expected = pathlib_member_path(name, strip)
        except UnsafeArchiveError:
            with pytest.raises(UnsafeArchiveError):
                safe_member_path(name, strip, "x")
        else:
            assert safe_member_path(name, strip, "x") == expected, repr(name)
