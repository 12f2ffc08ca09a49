"""BundleReader.payload(): each member's bytes come straight from the tar stream, bounded by its size."""

from __future__ import annotations

import random
import tarfile

import pytest

from bundle_helpers import PackSpec, Raw, build_manifest, bundle_members, new_key, write_bundle, write_tar_zst
from conftest import payload
from manifests import signing
from manifests.bundle import parse_manifest, to_json
from manifests.errors import BundleStructureError
from executor.extract import plain_file_header
from sideload.reader import BundleReader, locate

FILES = {"a.bin": payload(5000, seed=1), "b/c.bin": payload(70_000, seed=2), "empty": b"", "d.bin": payload(512, seed=3)}


def read_all(path, read_size: int) -> dict[str, bytes]:
    with BundleReader(locate(path)) as reader:
        manifest = parse_manifest(reader.read_header()[0])
        got = {}
        for entry, source in reader.payload(manifest):
            chunks = []
            while chunk := source.read(read_size):
                chunks.append(chunk)
            got[entry.path] = b"".join(chunks)
        reader.finish()
    return got


@pytest.mark.parametrize("read_size", [1, 511, 4096, 1 << 20, -1])
def test_each_member_reads_exactly_its_bytes_whatever_the_read_size(tmp_path, read_size):
    built = write_bundle(tmp_path / "b.tar.zst", [PackSpec("p", FILES)], key=new_key())
    assert read_all(built.path, read_size) == FILES


def test_members_with_pax_headers_between_plain_ones_read_the_same(tmp_path):
    """Long and non-ASCII names get a pax header: tarfile reads those, the shortcut the rest."""
    files = {"short.bin": payload(700, seed=5), "l" * 150 + "/long.bin": payload(1500, seed=6), "naïve.txt": b"x", "z.bin": payload(9, seed=7)}
    built = write_bundle(tmp_path / "b.tar.zst", [PackSpec("p", files)], key=new_key())
    assert read_all(built.path, 1 << 20) == files


def test_a_member_cut_short_by_the_end_of_the_stream_is_a_structure_error(tmp_path):
    key = new_key()
    manifest, members = build_manifest([PackSpec("p", {"x.bin": payload(9000, seed=4)})], key=key)
    data = to_json(manifest)
    raws = bundle_members(data, signing.sign(key, data), members)
    raws[-1] = Raw(raws[-1].name, raws[-1].data[:3000], size=9000)  # the header keeps the declared size
    path = write_tar_zst(tmp_path / "cut.tar.zst", raws, end=False)
    with BundleReader(locate(path)) as reader:
        listed = parse_manifest(reader.read_header()[0])
        _, source = next(reader.payload(listed))
        assert source.read(2000) == members[0][1][:2000]
        with pytest.raises(BundleStructureError, match="truncated|damaged"):
            source.read(7000)


# --- the shortcut for plain ustar headers: it must read exactly what tarfile reads, or pass ---------


def ustar(name: str, size: int, type: bytes = tarfile.REGTYPE, fmt=tarfile.USTAR_FORMAT) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.mode, info.mtime = size, type, 0o644, 0
    return info.tobuf(fmt, "utf-8", "surrogateescape")


def agrees_with_tarfile(block: bytes) -> bool:
    ours = plain_file_header(block)
    if ours is None:
        return True  # tarfile reads it (and the checks that follow refuse what they refuse)
    theirs = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    return (ours.name, ours.size, ours.type) == (theirs.name, theirs.size, theirs.type) and theirs.isreg()


def test_a_plain_header_reads_as_tarfile_reads_it():
    block = ustar("packs/p/d00/f00001.json", 8191)
    assert plain_file_header(block).name == "packs/p/d00/f00001.json" and agrees_with_tarfile(block)
    long_name = "packs/" + "d" * 120 + "/file.bin"  # ustar splits it into prefix and name
    member = plain_file_header(ustar(long_name, 3))
    assert (member.name, member.size) == (long_name, 3)


@pytest.mark.parametrize("block", [
    ustar("link", 0, tarfile.SYMTYPE), ustar("hard", 0, tarfile.LNKTYPE), ustar("dir", 0, tarfile.DIRTYPE),
    ustar("fifo", 0, tarfile.FIFOTYPE), ustar("old", 0, tarfile.AREGTYPE),
    ustar("gnu", 5, fmt=tarfile.GNU_FORMAT),  # GNU magic
    ustar("é" * 200, 5, fmt=tarfile.PAX_FORMAT)[:512],  # the pax extended header in front of it
    ustar("big", 2**40, fmt=tarfile.GNU_FORMAT),  # base-256 size
    ustar("x", 5)[:511], b"", b"\0" * 512,
], ids=["symlink", "hardlink", "dir", "fifo", "old-regular", "gnu", "pax", "base-256", "short", "empty", "zeros"])
def test_anything_else_is_left_to_tarfile(block):
    assert plain_file_header(block) is None


def test_a_bad_checksum_or_odd_fields_are_left_to_tarfile():
    block = bytearray(ustar("a.bin", 100))
    block[0] ^= 1  # the name changed, the checksum not
    assert plain_file_header(bytes(block)) is None
    for field, value in [(slice(124, 136), b"00000000144 "), (slice(124, 136), b"0000000014a\0"), (slice(148, 156), b"0061038\0")]:
        changed = bytearray(ustar("a.bin", 100))
        changed[field] = value
        assert plain_file_header(bytes(changed)) is None
    non_utf8 = bytearray(ustar("a.bin", 100))
    non_utf8[0] = 0xFF
    assert plain_file_header(bytes(non_utf8)) is None  # its checksum is wrong too; either way, tarfile's


def test_random_damage_never_makes_the_shortcut_disagree_with_tarfile():
    rng = random.Random(7)
    base = ustar("packs/p/" + "n" * 60 + "/f.bin", 12345)
    for _ in range(3000):
        block = bytearray(base)
        for _ in range(rng.randint(1, 3)):
            block[rng.randrange(512)] = rng.choice([0, 0x30, 0x37, 0x38, 0x20, 0x2F, 0xFF, rng.randrange(256)])
        fixed = fix_checksum(block) if rng.random() < 0.7 else block  # most keep a valid checksum
        assert agrees_with_tarfile(bytes(fixed))


def fix_checksum(block: bytearray) -> bytearray:
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return block
