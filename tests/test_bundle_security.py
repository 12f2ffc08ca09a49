"""Hostile and damaged bundles: each one refused with exit 3, the host byte for byte as before.

Every test first sideloads a good bundle (pack `keep`), snapshots the data directory and
the install records, then sideloads a bundle that updates `keep` and adds `other`, with one
thing wrong. The refusal must name the problem, exit 3 (verification failed), and leave
every data file, directory and install record exactly as it was: a pack that was installed
before stays intact, and nothing of the new one is visible, not even a staging folder.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from bundle_helpers import (
    PackSpec,
    Raw,
    append,
    build_manifest,
    bundle_members,
    flip_byte,
    header_members,
    new_key,
    truncate,
    tree_snapshot,
    write_bundle,
    write_public_key,
    write_tar_zst,
    zstd_frame,
)
from conftest import payload, sha256
from hostile import T0, T1
from bundler import raw_frames
from manifests import signing
from manifests.bundle import to_json

KEEP_OLD = payload(300_000, seed=21)
KEEP_NEW = payload(300_000, seed=22)  # same length: an update, not a resize
NEW_FILE = payload(200_000, seed=23)
OTHER = payload(100_000, seed=24)


@pytest.fixture(scope="module")
def key():
    return new_key()


@pytest.fixture(scope="module")
def stranger():
    return new_key()


@pytest.fixture
def pub(key, tmp_path) -> Path:
    return write_public_key(tmp_path / "site.pub", key)


def update_packs() -> list[PackSpec]:
    return [
        PackSpec("keep", {"data/keep.bin": KEEP_NEW, "data/new.bin": NEW_FILE}, fetched_at=T1),
        PackSpec("other", {"other.bin": OTHER}, fetched_at=T1),
    ]


class Host:
    """The air-gapped host of one test: a pack installed, its state snapshotted."""

    def __init__(self, cli, env, pub: Path, tmp_path: Path):
        self.cli, self.env, self.pub, self.tmp = cli, env, pub, tmp_path
        self.before: dict[str, str] = {}

    def sideload(self, bundle: Path, *args: str):
        return self.cli("sideload", str(bundle), "--trust", str(self.pub), "--progress", "none", *args)

    def snapshot(self) -> dict[str, str]:
        return tree_snapshot(self.env.data, self.env.records_dir)

    def assert_refused(self, bundle: Path, *needles: str, exit_code: int = 3) -> str:
        result = self.sideload(bundle)
        assert result.exit_code == exit_code, (result.exit_code, result.stderr, result.stdout)
        for needle in needles:
            assert needle in result.stderr, f"{needle!r} not in: {result.stderr}"
        after = self.snapshot()
        assert after == self.before, {k: (self.before.get(k), after.get(k)) for k in set(after) | set(self.before) if after.get(k) != self.before.get(k)}
        return result.stderr


@pytest.fixture
def host(cli, isolated_env, pub, key, tmp_path) -> Host:
    h = Host(cli, isolated_env, pub, tmp_path)
    good = write_bundle(tmp_path / "first" / "keep.tar.zst", [PackSpec("keep", {"data/keep.bin": KEEP_OLD}, fetched_at=T0)], key=key)
    result = h.sideload(good.path)
    assert result.exit_code == 0, result.stderr
    assert (isolated_env.sample_dir() / "data" / "keep.bin").read_bytes() == KEEP_OLD
    h.before = h.snapshot()
    assert any(k.endswith("keep.json") for k in h.before)
    return h


@pytest.fixture
def signed(key):
    """The update's manifest bytes, signature and payload members, signed by the trusted key."""
    manifest, members = build_manifest(update_packs(), key=key)
    data = to_json(manifest)
    return data, signing.sign(key, data), members


def evil(tmp_path: Path, members: list[Raw], name: str = "evil.tar.zst", **kw) -> Path:
    return write_tar_zst(tmp_path / "evil" / name, members, **kw)


def test_the_update_itself_is_fine(host, key, tmp_path):
    """The control: the same bundle, undamaged, installs (so each refusal below is the damage's doing)."""
    good = write_bundle(tmp_path / "good.tar.zst", update_packs(), key=key)
    result = host.sideload(good.path)
    assert result.exit_code == 0, result.stderr
    assert (host.env.sample_dir() / "data" / "keep.bin").read_bytes() == KEEP_NEW
    assert (host.env.sample_dir() / "other.bin").read_bytes() == OTHER
    assert not (host.env.sample_dir() / ".devops-cp-staging").exists()


# --- member names never decide where a file goes ------------------------------------------------


def _swap(members: list[Raw], listed: str, **changes) -> list[Raw]:
    out = []
    for m in members:
        if m.name == listed:
            m = Raw(**{**m.__dict__, **changes})
        out.append(m)
    return out


def test_dotdot_member_is_refused(host, signed, tmp_path):
    data, sig, payload_members = signed
    members = _swap(bundle_members(data, sig, payload_members), "packs/keep/data/new.bin", name="../../new.bin")
    host.assert_refused(evil(tmp_path, members), "'../../new.bin'", "not listed")
    assert not (tmp_path / "new.bin").exists() and not (host.env.data / "new.bin").exists()


def test_dotdot_path_in_a_signed_manifest_is_refused(host, key, tmp_path):
    """Even the signer cannot name a place outside the data directory."""
    manifest, members = build_manifest(update_packs(), key=key)
    data = to_json(manifest).replace(b'"path": "data/new.bin"', b'"path": "../../../escaped.bin"')
    assert b"escaped" in data
    bundle = evil(tmp_path, bundle_members(data, signing.sign(key, data), members))
    host.assert_refused(bundle, "'..' is not allowed")
    assert not list(tmp_path.rglob("escaped.bin"))


def test_absolute_member_name_is_refused(host, signed, tmp_path):
    data, sig, payload_members = signed
    target = tmp_path / "abs-target.bin"
    members = _swap(bundle_members(data, sig, payload_members), "packs/keep/data/new.bin", name=str(target))
    host.assert_refused(evil(tmp_path, members), str(target), "not listed")
    assert not target.exists()


def test_absolute_path_in_a_signed_manifest_is_refused(host, key, tmp_path):
    target = tmp_path / "abs-target.bin"
    manifest, members = build_manifest(update_packs(), key=key)
    data = to_json(manifest).replace(b'"path": "data/new.bin"', f'"path": "{target}"'.encode())
    host.assert_refused(evil(tmp_path, bundle_members(data, signing.sign(key, data), members)), "absolute paths are not allowed")
    assert not target.exists()


def test_symlink_member_is_refused(host, signed, tmp_path):
    data, sig, payload_members = signed
    members = _swap(bundle_members(data, sig, payload_members), "packs/keep/data/new.bin", type=tarfile.SYMTYPE, linkname="/etc/passwd", data=b"")
    host.assert_refused(evil(tmp_path, members), "packs/keep/data/new.bin", "symlink")


def test_hardlink_member_is_refused(host, signed, tmp_path):
    data, sig, payload_members = signed
    members = _swap(bundle_members(data, sig, payload_members), "packs/keep/data/new.bin", type=tarfile.LNKTYPE, linkname="packs/keep/data/keep.bin", data=b"")
    host.assert_refused(evil(tmp_path, members), "packs/keep/data/new.bin", "hardlink")


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE], ids=["char-device", "block-device", "fifo"])
def test_device_or_fifo_member_is_refused(kind, host, signed, tmp_path):
    data, sig, payload_members = signed
    members = _swap(bundle_members(data, sig, payload_members), "packs/keep/data/new.bin", type=kind, data=b"")
    host.assert_refused(evil(tmp_path, members), "packs/keep/data/new.bin", "device or special file")


def test_directory_member_is_refused(host, signed, tmp_path):
    data, sig, payload_members = signed
    members = bundle_members(data, sig, payload_members)
    members.insert(2, Raw("packs/keep/data", type=tarfile.DIRTYPE))
    host.assert_refused(evil(tmp_path, members), "packs/keep/data", "directory")


def test_duplicate_member_is_refused(host, signed, tmp_path):
    data, sig, payload_members = signed
    members = bundle_members(data, sig, payload_members)
    first = members[2]
    members.insert(3, Raw(first.name, payload(len(first.data), seed=99)))  # a second copy, other bytes
    host.assert_refused(evil(tmp_path, members), repr(first.name), "appears twice")


def test_duplicate_of_the_last_member_is_refused(host, signed, tmp_path):
    data, sig, payload_members = signed
    members = bundle_members(data, sig, payload_members)
    members.append(Raw(members[-1].name, members[-1].data))
    host.assert_refused(evil(tmp_path, members), repr(members[-1].name), "appears twice")


def test_unlisted_member_is_refused(host, signed, tmp_path):
    data, sig, payload_members = signed
    members = bundle_members(data, sig, payload_members) + [Raw("packs/keep/data/extra.bin", b"not in the manifest")]
    host.assert_refused(evil(tmp_path, members), "'packs/keep/data/extra.bin'", "not listed in the manifest")
    assert not (host.env.sample_dir() / "data" / "extra.bin").exists()


def test_unlisted_member_in_the_middle_is_refused(host, signed, tmp_path):
    data, sig, payload_members = signed
    members = bundle_members(data, sig, payload_members)
    members.insert(3, Raw("packs/keep/data/extra.bin", b"not in the manifest"))
    host.assert_refused(evil(tmp_path, members), "'packs/keep/data/extra.bin'", "not listed in the manifest")


def test_listed_file_missing_is_refused(host, signed, tmp_path):
    data, sig, payload_members = signed
    members = [m for m in bundle_members(data, sig, payload_members) if m.name != "packs/other/other.bin"]
    host.assert_refused(evil(tmp_path, members), "'packs/other/other.bin'", "ends before")


def test_listed_file_missing_in_the_middle_is_refused(host, signed, tmp_path):
    data, sig, payload_members = signed
    members = [m for m in bundle_members(data, sig, payload_members) if m.name != "packs/keep/data/keep.bin"]
    host.assert_refused(evil(tmp_path, members), "'packs/keep/data/keep.bin'")


def test_member_longer_than_declared_is_refused(host, signed, tmp_path):
    data, sig, payload_members = signed
    longer = NEW_FILE + b"more bytes than the manifest declares"
    members = _swap(bundle_members(data, sig, payload_members), "packs/keep/data/new.bin", data=longer)
    host.assert_refused(evil(tmp_path, members), "packs/keep/data/new.bin", "longer than declared")


def test_member_shorter_than_declared_is_refused(host, signed, tmp_path):
    data, sig, payload_members = signed
    members = _swap(bundle_members(data, sig, payload_members), "packs/keep/data/new.bin", data=NEW_FILE[:-1])
    host.assert_refused(evil(tmp_path, members), "packs/keep/data/new.bin", "shorter than declared")


# --- bytes changed after signing ----------------------------------------------------------------


def test_changed_manifest_byte_is_refused(host, signed, tmp_path):
    data, sig, payload_members = signed
    changed = data.replace(b'"label": "other (test)"', b'"label": "0ther (test)"')
    assert changed != data and len(changed) == len(data)
    host.assert_refused(evil(tmp_path, bundle_members(changed, sig, payload_members)), "invalid signature")


def test_changed_payload_byte_of_the_same_length_is_refused(host, signed, tmp_path):
    data, sig, payload_members = signed
    damaged = bytearray(NEW_FILE)
    damaged[len(damaged) // 2] ^= 0x01
    members = _swap(bundle_members(data, sig, payload_members), "packs/keep/data/new.bin", data=bytes(damaged))
    host.assert_refused(evil(tmp_path, members), "checksum mismatch", "packs/keep/data/new.bin")


def test_changed_compressed_byte_is_refused(host, key, tmp_path):
    good = write_bundle(tmp_path / "b.tar.zst", update_packs(), key=key)
    flip_byte(good.path, good.path.stat().st_size // 2)
    host.assert_refused(good.path, "damaged")


@pytest.mark.parametrize("keep", [0.95, 0.5, 0.05, -1, -3], ids=["near-the-end", "half", "in-the-header", "last-byte", "frame-checksum"])
def test_truncated_archive_is_refused(keep, host, key, tmp_path):
    """Also a cut inside the frame's last bytes, after every tar byte: the zstd reader alone would not notice."""
    good = write_bundle(tmp_path / "b.tar.zst", update_packs(), key=key)
    size = good.path.stat().st_size
    truncate(good.path, int(size * keep) if keep > 0 else size + keep)
    host.assert_refused(good.path, "truncated")


def test_archive_cut_at_the_end_of_its_last_member_is_refused(host, signed, tmp_path):
    """No end-of-archive blocks: a bundle cut exactly after a member must not pass as complete."""
    data, sig, payload_members = signed
    host.assert_refused(evil(tmp_path, bundle_members(data, sig, payload_members), end=False), "truncated")


def test_trailing_garbage_after_the_zstd_frame_is_refused(host, key, tmp_path):
    good = write_bundle(tmp_path / "b.tar.zst", update_packs(), key=key)
    append(good.path, b"garbage after the frame\n" * 10)
    host.assert_refused(good.path, "trailing garbage")


def test_a_second_zstd_frame_after_the_archive_is_refused(host, key, tmp_path):
    good = write_bundle(tmp_path / "b.tar.zst", update_packs(), key=key)
    append(good.path, zstd_frame(b"an appended frame with data that is not tar padding"))
    host.assert_refused(good.path, "data after its last member")


def test_tar_data_after_the_end_blocks_is_refused(host, signed, tmp_path):
    """A member hidden after the end-of-archive marker, inside the same frame."""
    data, sig, payload_members = signed
    members = bundle_members(data, sig, payload_members)
    from bundle_helpers import tar_bytes

    hidden = tar_bytes(members) + tar_bytes([Raw("packs/keep/data/hidden.bin", b"hidden")])
    bundle = tmp_path / "evil" / "hidden.tar.zst"
    bundle.parent.mkdir()
    bundle.write_bytes(zstd_frame(hidden))
    host.assert_refused(bundle, "data after its last member")


# --- signatures ---------------------------------------------------------------------------------


def test_signature_by_an_untrusted_key_is_refused(host, stranger, tmp_path):
    bundle = write_bundle(tmp_path / "b.tar.zst", update_packs(), key=stranger)
    stderr = host.assert_refused(bundle.path, signing.key_id(stranger.public_key()), "not trusted here")
    assert "trust" in stderr  # the hint says how to trust it


def test_signature_of_another_manifest_is_refused(host, key, signed, tmp_path):
    data, _, payload_members = signed
    other, _ = build_manifest([PackSpec("keep", {"data/keep.bin": KEEP_NEW}, fetched_at=T1)], key=key)
    other_sig = signing.sign(key, to_json(other))  # a real signature by the trusted key, of something else
    host.assert_refused(evil(tmp_path, bundle_members(data, other_sig, payload_members)), "invalid signature")


def test_manifest_naming_another_signer_is_refused(host, key, tmp_path):
    """Signed by the trusted key, but claiming another key id: the bundle was made inconsistently."""
    manifest, members = build_manifest(update_packs(), key=key, signer_key_id="ab" * 32)
    data = to_json(manifest)
    host.assert_refused(evil(tmp_path, bundle_members(data, signing.sign(key, data), members)), "names signer key")


def test_a_truncated_signature_is_refused(host, signed, tmp_path):
    data, sig, payload_members = signed
    host.assert_refused(evil(tmp_path, bundle_members(data, sig[:32], payload_members)), "malformed signature")


def test_a_stripped_signature_is_refused_by_policy(host, signed, tmp_path):
    """manifest.json.sig removed: unsigned, so policy (exit 4), and it says the signature may have been removed."""
    data, _, payload_members = signed
    host.assert_refused(evil(tmp_path, bundle_members(data, None, payload_members)), "not signed", "--allow-unsigned", exit_code=4)


# --- decompression is bounded by the declared sizes ---------------------------------------------


def test_header_claiming_a_huge_size_is_refused_before_reading_it(host, signed, tmp_path):
    data, sig, payload_members = signed
    members = _swap(bundle_members(data, sig, payload_members), "packs/keep/data/new.bin", size=10**12)
    host.assert_refused(evil(tmp_path, members), "packs/keep/data/new.bin", "longer than declared", "1000000000000 bytes")


def test_zstd_bomb_after_the_last_member_stops_at_the_declared_sizes(host, signed, tmp_path, monkeypatch):
    """256 MiB of zeros (a few KiB compressed) after the archive: refused long before the end."""
    import sideload.reader as reader

    data, sig, payload_members = signed
    body = bytearray()
    from bundle_helpers import tar_bytes

    tar = tar_bytes(bundle_members(data, sig, payload_members))
    compressor = __import__("zstandard").ZstdCompressor(level=1)
    chunk = bytes(1 << 20)
    writer = compressor.compressobj()
    body += writer.compress(tar)
    for _ in range(256):
        body += writer.compress(chunk)
    body += writer.flush()
    bundle = tmp_path / "evil" / "bomb.tar.zst"
    bundle.parent.mkdir()
    bundle.write_bytes(bytes(body))
    assert bundle.stat().st_size < 2 * 2**20

    counted = []
    original = reader._Bounded.read

    def read(self, size=-1):
        data = original(self, size)
        counted.append(self.count)
        return data

    monkeypatch.setattr(reader._Bounded, "read", read)
    host.assert_refused(bundle, "decompresses to more than its manifest declares")
    total = sum(len(d) for _, d in payload_members)
    assert max(counted) < total + 8 * 2**20  # stopped within a few buffers of the declared size, not at 256 MiB


def test_zstd_bomb_inside_a_member_is_capped_at_its_declared_size(host, key, tmp_path):
    """A listed member of 1 KiB whose header says 1 GiB of zeros: refused at the header, nothing read."""
    manifest, members = build_manifest([PackSpec("keep", {"data/keep.bin": bytes(1024)}, fetched_at=T1)], key=key)
    data = to_json(manifest)
    raw = header_members(data, signing.sign(key, data)) + [Raw(members[0][0], bytes(1024), size=2**30)]
    host.assert_refused(evil(tmp_path, raw), "longer than declared")


def test_refusals_report_json_too(host, signed, tmp_path):
    data, sig, payload_members = signed
    members = bundle_members(data, sig, payload_members) + [Raw("packs/x", b"x")]
    result = host.sideload(evil(tmp_path, members), "--json")
    assert result.exit_code == 3
    doc = json.loads(result.stdout)
    assert doc["ok"] is False and doc["error"]["exit_code"] == 3 and doc["error"]["type"] == "BundleStructureError"
    assert host.snapshot() == host.before


def test_verify_refuses_the_same_damage_and_writes_nothing(host, key, tmp_path):
    good = write_bundle(tmp_path / "b.tar.zst", update_packs(), key=key)
    append(good.path, b"garbage")
    before_home = tree_snapshot(host.env.home)
    result = host.cli("verify", str(good.path), "--trust", str(host.pub), "--progress", "none")
    assert result.exit_code == 3, result.stderr
    assert tree_snapshot(host.env.home) == before_home


def test_file_sizes_are_never_trusted_from_tar_for_the_hash(host, signed, tmp_path):
    """Both size and bytes match the header but not the manifest's sha256: exit 3 naming the member."""
    data, sig, payload_members = signed
    members = _swap(bundle_members(data, sig, payload_members), "packs/other/other.bin", data=payload(len(OTHER), seed=77))
    host.assert_refused(evil(tmp_path, members), "checksum mismatch", "packs/other/other.bin")
    assert sha256(OTHER) in host.sideload(evil(tmp_path, members, name="again.tar.zst")).stderr


# --- the frame walker that tells a whole compressed stream from a cut one -----------------------


def _walk(data: bytes, step: int = 4099):
    from sideload.reader import FrameWalker

    walker = FrameWalker()
    for i in range(0, len(data), step):
        walker.feed(data[i : i + step])
    return walker


@pytest.mark.parametrize("content", [b"", b"abc" * 50_000, payload(400_000, seed=40), bytes(3 << 20)], ids=["empty", "text", "random", "zeros"])
def test_frame_walker_knows_complete_cut_and_garbage(content):
    import subprocess

    import zstandard

    frames = [
        zstandard.ZstdCompressor(level=3, write_checksum=True).compress(content),
        zstandard.ZstdCompressor(level=1, write_content_size=False).compress(content),
        zstandard.ZstdCompressor(level=3, threads=2, write_checksum=True).compress(content),
        subprocess.run(["zstd", "-q", "-c"], input=content, capture_output=True, check=True).stdout,
    ]
    skippable = (0x184D2A53).to_bytes(4, "little") + (5).to_bytes(4, "little") + b"skip!"
    for frame in frames:
        assert _walk(frame).complete
        assert _walk(frame + frame + skippable).complete and _walk(frame + frame).frames == 2
        for cut in range(1, min(len(frame), 64)):
            assert not _walk(frame[:-cut]).complete, cut
        garbage = _walk(frame + b"\0garbage")
        assert not garbage.complete and "trailing garbage" in garbage.why_incomplete() and str(len(frame)) in garbage.why_incomplete()
    assert "empty" in _walk(b"").why_incomplete()


# --- a large member stored in raw zstd frames (bundler/raw_frames.py) ------------------------------

BIG = payload(9 << 20, seed=25)  # incompressible and over LARGE_MEMBER: written around the compressor


def big_update(key, tmp_path: Path) -> tuple[Path, int]:
    """The update with a large file; and where its raw frame starts in the archive."""
    packs = update_packs()
    packs[0].files["data/big.bin"] = BIG
    good = write_bundle(tmp_path / "big.tar.zst", packs, key=key)
    frame = good.path.read_bytes().find(raw_frames.FRAME_HEADER)
    assert frame > 0
    return good.path, frame


RAW_BLOCK = (128 << 10) + 3  # a full raw block with its header


def test_the_update_with_a_raw_frame_installs(host, key, tmp_path):
    bundle, _ = big_update(key, tmp_path)
    result = host.sideload(bundle)
    assert result.exit_code == 0, result.stderr
    assert (host.env.sample_dir() / "data" / "big.bin").read_bytes() == BIG


def test_a_changed_byte_in_a_raw_frame_is_refused_by_the_member_hash(host, key, tmp_path):
    """A raw frame has no zstd checksum: the member's sha256 in the signed manifest catches it."""
    bundle, frame = big_update(key, tmp_path)
    flip_byte(bundle, frame + 6 + 5 * RAW_BLOCK + 1000)
    host.assert_refused(bundle, "checksum mismatch", "packs/keep/data/big.bin")


@pytest.mark.parametrize("change", ["larger-than-a-block", "reserved-type", "not-last"])
def test_a_damaged_raw_block_header_is_refused(change, host, key, tmp_path):
    bundle, frame = big_update(key, tmp_path)
    data = bytearray(bundle.read_bytes())
    at = {"larger-than-a-block": frame + 6 + 3 * RAW_BLOCK, "reserved-type": frame + 6, "not-last": frame + 6 + 72 * RAW_BLOCK}[change]
    header = int.from_bytes(data[at : at + 3], "little")
    if change == "not-last":  # the empty last block after the 72 full ones (9 MiB) loses its "last" bit
        assert header == 1
        header = 0  # the next frame's magic is then read as a block header
    else:
        assert header == (128 << 10) << 3  # a full raw block
        header = ((128 << 10) + 1) << 3 if change == "larger-than-a-block" else header | 3 << 1
    data[at : at + 3] = header.to_bytes(3, "little")
    bundle.write_bytes(bytes(data))
    host.assert_refused(bundle, "damaged")


def test_an_archive_cut_inside_a_raw_frame_is_refused(host, key, tmp_path):
    bundle, frame = big_update(key, tmp_path)
    truncate(bundle, frame + 6 + 40 * RAW_BLOCK + 17)
    host.assert_refused(bundle, "truncated")
