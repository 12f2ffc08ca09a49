"""Large members that do not compress go around the compressor as raw zstd frames (bundler/raw_frames.py).

The archive is walked frame by frame and block by block from its headers (RFC 8878), so the
tests see which bytes were compressed and which were stored, and it is read back by
python-zstandard (as sideload reads it) and by the zstd command line (as a user without
devops-cp would).
"""

from __future__ import annotations

import io
import json
import random
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import zstandard

from bundler import raw_frames
from bundler.raw_frames import BLOCK, LARGE_MEMBER, SEGMENT, SWITCH_AFTER, RawFrame
from bundler.writer import Member, TarWriter, write_archive
from executor.transfer import Copy

from conftest import payload, sha256

MIB = 1 << 20
RAW, COMPRESSED = 0, 2  # block types


@dataclass
class Frame:
    start: int  # offset in the archive
    blocks: list[tuple[int, int]]  # (type, size in the archive)
    checksum: bool

    @property
    def raw_content(self) -> int:
        return sum(size for kind, size in self.blocks if kind == RAW)


def frames(archive: bytes) -> list[Frame]:
    """Every frame of a zstd stream, from its frame and block headers alone."""
    found, pos = [], 0
    while pos < len(archive):
        assert archive[pos : pos + 4] == raw_frames.ZSTD_MAGIC, f"no frame at {pos}"
        start, descriptor = pos, archive[pos + 4]
        pos += 5
        single_segment = descriptor >> 5 & 1
        pos += 0 if single_segment else 1  # the window descriptor
        pos += (0, 1, 2, 4)[descriptor & 3]  # dictionary id
        pos += (1 if single_segment else 0, 2, 4, 8)[descriptor >> 6]  # content size
        blocks, last = [], 0
        while not last:
            header = int.from_bytes(archive[pos : pos + 3], "little")
            last, kind, size = header & 1, header >> 1 & 3, header >> 3
            assert kind != 3, "reserved block type"
            stored = 1 if kind == 1 else size  # an RLE block holds one byte
            blocks.append((kind, size))
            pos += 3 + stored
        checksum = bool(descriptor >> 2 & 1)
        pos += 4 if checksum else 0
        found.append(Frame(start, blocks, checksum))
    assert pos == len(archive)
    return found


def text_like(size: int, seed: int = 3) -> bytes:
    """JSON records, compressible like a vulnerability DB."""
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        out += json.dumps({"id": f"CVE-2026-{rng.randrange(99999)}", "severity": rng.choice(["LOW", "HIGH"]), "fixed": f"{rng.randrange(9)}.{rng.randrange(40)}"}).encode() + b"\n"
    return bytes(out[:size])


def plain_tar(members: list[tuple[str, bytes]]) -> bytes:
    """The same members through TarWriter without a compressor: the tar stream the archive must hold."""
    out = io.BytesIO()
    tar = TarWriter(out)
    for name, data in members:
        tar.add_bytes(name, data)
    tar.close()
    return out.getvalue()


def fed_in(data: bytes, name: str, step: int) -> Member:
    """A member whose bytes arrive in reads of `step` bytes, as a download's do."""

    def fetch(out) -> Copy:
        return Copy(out, what=name, limit=len(data)).feed(data[i : i + step] for i in range(0, len(data), step))

    return Member(name, None, len(data), sha256(data), fetch=fetch)


def archive_of(tmp_path: Path, members: list[tuple[str, bytes]], *, step: int = 1 << 20, name: str = "a.tar.zst", **options) -> Path:
    out = tmp_path / name
    write_archive(out, b'{"manifest": 1}', b"sig", [fed_in(data, n, step) for n, data in members], **options)
    return out


def expected_tar(members: list[tuple[str, bytes]]) -> bytes:
    return plain_tar([("manifest.json", b'{"manifest": 1}'), ("manifest.json.sig", b"sig")] + members)


def test_a_raw_frame_is_read_back_by_zstd_whatever_the_write_sizes(tmp_path):
    data = payload(3 * BLOCK + 1000)
    out = io.BytesIO()
    frame = RawFrame(out)
    pos = 0
    for step in (1, 70_000, BLOCK, 5, 10**9):
        frame.write(memoryview(data[pos : pos + step]), len(data) - pos)
        pos = min(pos + step, len(data))
    frame.end()
    written = out.getvalue()
    assert [f.blocks for f in frames(written)] == [[(RAW, BLOCK)] * 3 + [(RAW, 1000), (RAW, 0)]]
    assert len(written) == len(data) + 6 + 5 * 3  # frame header, five block headers
    assert zstandard.ZstdDecompressor().stream_reader(io.BytesIO(written)).read() == data


def test_an_incompressible_member_is_stored_in_raw_frames_and_a_compressible_one_compressed(tmp_path):
    random_member, text_member = payload(12 * MIB), text_like(12 * MIB)
    members = [("packs/m/model.bin", random_member), ("packs/d/db.json", text_member)]
    archive = archive_of(tmp_path, members).read_bytes()

    found = frames(archive)
    raw = [f for f in found if f.raw_content and not any(kind == COMPRESSED for kind, _ in f.blocks)]
    assert len(raw) == 1 and raw[0].raw_content == len(random_member) and not raw[0].checksum
    assert all(size == BLOCK for _, size in raw[0].blocks[:-2])  # full blocks, then the member's last one and the empty end
    compressed = [f for f in found if f is not raw[0]]
    assert all(f.checksum for f in compressed)  # the compressor's own frames keep zstd's checksum
    assert len(archive) < len(random_member) + len(text_member) // 4  # the text still compressed
    assert zstandard.ZstdDecompressor().stream_reader(io.BytesIO(archive), read_across_frames=True).read() == expected_tar(members)


def test_the_route_changes_only_after_several_segments_disagree(tmp_path):
    """Text, then random bytes, then text: stored from the fourth random MiB on, compressed again
    from the fourth text MiB on; a lone odd segment changes nothing."""
    head = bytearray(text_like(6 * MIB))
    head[2 * MIB : 3 * MIB] = payload(MIB, seed=9)  # one incompressible MiB among the text
    mixed = bytes(head) + payload(8 * MIB) + text_like(6 * MIB, seed=4)
    archive = archive_of(tmp_path, [("packs/x/mixed.bin", mixed)]).read_bytes()

    stored = [f.raw_content for f in frames(archive) if f.raw_content and all(kind == RAW for kind, _ in f.blocks)]
    assert stored == [8 * MIB]  # MiB 9 to 16: the last 5 random ones, then 3 of text before it switched back
    assert SWITCH_AFTER == 4 and SEGMENT == MIB
    assert zstandard.ZstdDecompressor().stream_reader(io.BytesIO(archive), read_across_frames=True).read() == expected_tar([("packs/x/mixed.bin", mixed)])


def test_the_archive_is_the_same_however_the_bytes_were_cut_into_reads(tmp_path):
    members = [("packs/x/mixed.bin", text_like(3 * MIB) + payload(9 * MIB) + text_like(2 * MIB, seed=5))]
    one = archive_of(tmp_path, members, step=1 << 20, name="one.tar.zst").read_bytes()
    other = archive_of(tmp_path, members, step=100_003, name="other.tar.zst").read_bytes()
    tiny = archive_of(tmp_path, members, step=4093, name="tiny.tar.zst").read_bytes()
    assert one == other == tiny
    assert any(f.raw_content > 5 * MIB for f in frames(one))


def test_members_under_the_threshold_are_never_sampled(tmp_path, monkeypatch):
    monkeypatch.setattr(raw_frames.MemberRoute, "_choose", lambda *a: pytest.fail("a small member was sampled"))
    small = payload(LARGE_MEMBER - 1)
    archive = archive_of(tmp_path, [("packs/s/small.bin", small)]).read_bytes()
    assert all(f.checksum for f in frames(archive))  # one compressor's frame (its blocks raw inside it)
    assert zstandard.ZstdDecompressor().stream_reader(io.BytesIO(archive), read_across_frames=True).read() == expected_tar([("packs/s/small.bin", small)])


def test_a_segment_that_is_not_a_whole_number_of_blocks_ends_its_blocks_with_it(tmp_path, monkeypatch):
    """The route may change at every segment's end, so no raw block crosses one, whatever the sizes."""
    monkeypatch.setattr(raw_frames, "SEGMENT", 200_000)
    monkeypatch.setattr(raw_frames, "LARGE_MEMBER", MIB)
    members = [("packs/x/mixed.bin", text_like(MIB) + payload(2 * MIB) + text_like(MIB, seed=6))]
    archive = archive_of(tmp_path, members, step=70_001).read_bytes()
    raw_blocks = [size for f in frames(archive) if all(kind == RAW for kind, _ in f.blocks) for _, size in f.blocks]
    assert {BLOCK, 200_000 - BLOCK} <= set(raw_blocks) and max(raw_blocks) == BLOCK
    assert zstandard.ZstdDecompressor().stream_reader(io.BytesIO(archive), read_across_frames=True).read() == expected_tar(members)


def test_split_parts_cut_through_raw_frames_and_join_back(tmp_path):
    members = [("packs/m/model.bin", payload(10 * MIB)), ("packs/d/db.json", text_like(9 * MIB))]
    out = tmp_path / "split.tar.zst"
    parts = write_archive(out, b'{"manifest": 1}', b"sig", [fed_in(d, n, 65536) for n, d in members], split_size=3 * MIB)
    joined = b"".join((tmp_path / part.name).read_bytes() for part in parts)
    assert all(sha256((tmp_path / part.name).read_bytes()) == part.sha256 for part in parts)
    assert len(parts) == 4 and any(f.raw_content == 10 * MIB for f in frames(joined))
    assert zstandard.ZstdDecompressor().stream_reader(io.BytesIO(joined), read_across_frames=True).read() == expected_tar(members)


@pytest.mark.skipif(shutil.which("zstd") is None or shutil.which("tar") is None, reason="needs zstd and tar on PATH (.ci/run installs them)")
def test_zstd_and_tar_read_the_mixed_archive(tmp_path):
    members = [("packs/m/model.bin", payload(9 * MIB)), ("packs/d/db.json", text_like(2 * MIB))]
    archive = archive_of(tmp_path, members)
    assert subprocess.run(["zstd", "-t", "-q", str(archive)]).returncode == 0
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    subprocess.run(["tar", "-I", "zstd", "-xf", str(archive), "-C", str(unpacked)], check=True)
    assert all((unpacked / name).read_bytes() == data for name, data in members)
