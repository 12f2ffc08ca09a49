"""Hostile and damaged bundles as data: every case of issue 3's security list by name, and
random damage (byte flips, truncations, appended bytes, in the compressed file, inside the
tar stream, in one part of a split bundle) from a seeded generator. Built on the bundle
writers of tests/bundle_helpers.py. No pytest here: tools/fuzz_run.py uses it too.

    factory = HostileBundles(workdir, key=new_key(), stranger=new_key())
    host = Host(pub=factory.pub)            # in the current HOME: installs factory.first
    for case in factory.named() + list(factory.random(random.Random(7), 25)):
        problems = host.check(case)         # [] when refused with its exit code, HOME as before

What a case must do: be refused with its exit code (3, verification failed; 4 where the
rule is a policy, an unsigned bundle) and leave the whole HOME (data dirs, install
records, locks, caches) byte for byte as it was. A random mutation the oracle proves
harmless (the decompressed stream is unchanged, or the byte changed is one no reader
looks at, such as block padding) may also be accepted, but then what it installed must
be exactly the signed content; the runs count those cases apart.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import tarfile
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import zstandard

from bundle_helpers import (
    BLOCK,
    PackSpec,
    Raw,
    build_manifest,
    bundle_members,
    changed_paths,
    tar_bytes,
    tree_snapshot,
    write_bundle,
    write_public_key,
    write_tar_zst,
    zstd_frame,
)
from bundler import raw_frames
from manifests import signing
from manifests.bundle import Unpack, to_json

T0 = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=2)
T1 = T0 + timedelta(days=1)


def blob(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def plain_tar(files: dict[str, bytes]) -> bytes:
    """An uncompressed tar of `files` under a top folder: random damage reaches its headers and data."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for rel, data in sorted(files.items()):
            info = tarfile.TarInfo(f"top/{rel}")
            info.size, info.mtime = len(data), 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


UNPACKED = {"a.json": blob(9_000, 5), "sub/b.bin": blob(6_000, 6)}  # an archive carried whole, unpacked by sideload
FIRST = [PackSpec("keep", {"data/keep.bin": blob(40_000, 1)}, fetched_at=T0)]
UPDATE = [
    PackSpec("keep", {"data/keep.bin": blob(40_000, 2), "data/new.bin": blob(30_000, 3)}, fetched_at=T1),
    PackSpec("other", {"other.bin": blob(20_000, 4)}, fetched_at=T1),
    PackSpec("unpacked", {}, fetched_at=T1, archives={"db": (plain_tar(UNPACKED), Unpack("tar", 1))}),
]
UPDATE_FILES = {
    "keep": {"data/keep.bin": blob(40_000, 2), "data/new.bin": blob(30_000, 3)},
    "other": {"other.bin": blob(20_000, 4)},
    "unpacked": {f"db/{rel}": data for rel, data in UNPACKED.items()},
}
NEW_MEMBER = "packs/keep/data/new.bin"


@dataclass
class Case:
    name: str
    path: Path  # what `sideload` is given
    exit_code: int = 3
    needle: str = ""  # a word the refusal must contain
    also: tuple[int, ...] = ()  # other exit codes that are right too (see SIGNATURE_DAMAGE)
    harmless_ok: bool = False  # the oracle could not rule out a harmless change: exit 0 with intact content is fine


def _swap(members: list[Raw], listed: str, **changes) -> list[Raw]:
    """The members, with the one named `listed` changed (its name, type, data, header size...)."""
    return [Raw(**{**m.__dict__, **changes}) if m.name == listed else m for m in members]


def _flip(data: bytes, offset: int, mask: int = 0xFF) -> bytes:
    changed = bytearray(data)
    changed[offset] ^= mask
    return bytes(changed)


def pax_record(key: str, value: str) -> bytes:
    """One 'LEN key=value\\n' record; LEN counts the whole record, its own digits included."""
    body = f" {key}={value}\n".encode()
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length += 1
    return str(length).encode() + body


# Header fields (offset, length) and whether changing them can leave the member as it was.
FIELDS = {
    "name": (0, 100), "mode": (100, 8), "uid": (108, 8), "gid": (116, 8), "size": (124, 12), "mtime": (136, 12),
    "typeflag": (156, 1), "linkname": (157, 100), "magic": (257, 8), "uname": (265, 32), "gname": (297, 32),
    "devmajor": (329, 8), "prefix": (345, 155),
}  # fmt: skip
IGNORED_FIELDS = {"mode", "uid", "gid", "mtime", "linkname", "magic", "uname", "gname", "devmajor"}
REGULAR_TYPES = (b"0", b"\0", b"7")
TYPES = REGULAR_TYPES + tuple(c.encode() for c in "123456KLSxgVMDA")


# Damage up to the signature member's header (its header garbled or renamed, a cut there, the
# manifest's header claiming another size so the tar stream loses step) leaves a bundle whose
# manifest names a signer and that has no readable signature: exactly what a stripped signature
# looks like, which the project refuses as policy (exit 4, "not signed ... may have been
# removed"), not as damage (3). Either refusal is right here; the host must be untouched.
SIGNATURE_DAMAGE = (4,)


def with_checksum(header: bytes) -> bytes:
    """A ustar header block whose checksum is right again after an edit, so tarfile reads it."""
    block = bytearray(header)
    block[148:156] = b" " * 8
    block[148:155] = b"%06o\0" % sum(block)
    return bytes(block)


def _decompressed(data: bytes) -> bytes | None:
    """The whole stream decompressed, strictly (complete frames, checksums, nothing after); None if it is not."""
    try:
        out, rest = [], data
        while rest:
            d = zstandard.ZstdDecompressor().decompressobj()
            out.append(d.decompress(rest))
            if not d.eof:
                return None
            rest = d.unused_data
        return b"".join(out)
    except zstandard.ZstdError:
        return None


@contextmanager
def raw_frames_for_small_members():
    """The corpus's payload files (random bytes, a few KB) stored in raw zstd frames, as a large
    incompressible file is in a real bundle (bundler/raw_frames.py), so damage reaches that form too."""
    saved = raw_frames.LARGE_MEMBER, raw_frames.SEGMENT, raw_frames.SAMPLE
    raw_frames.LARGE_MEMBER, raw_frames.SEGMENT, raw_frames.SAMPLE = 16 << 10, 16 << 10, 4 << 10
    try:
        yield
    finally:
        raw_frames.LARGE_MEMBER, raw_frames.SEGMENT, raw_frames.SAMPLE = saved


class HostileBundles:
    """Writes every case into `workdir`; the host trusts `key` (pub), never `stranger`."""

    def __init__(self, workdir: Path, key, stranger):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key, self.stranger = key, stranger
        self.pub = write_public_key(self.dir / "site.pub", key)
        with raw_frames_for_small_members():
            self.first = write_bundle(self.dir / "first" / "first.tar.zst", FIRST, key=key).path
            self.good = write_bundle(self.dir / "good" / "good.tar.zst", UPDATE, key=key)
            self.split = write_bundle(self.dir / "split" / "split.tar.zst", UPDATE, key=key, split_size=30_000)
        manifest, self.payload = build_manifest(UPDATE, key=key)
        self.manifest = manifest
        self.data = to_json(manifest)
        self.sig = signing.sign(key, self.data)
        self.members = bundle_members(self.data, self.sig, self.payload)
        self.tar = tar_bytes(self.members)
        self.compressed = self.good.path.read_bytes()
        self.original_stream = _decompressed(self.compressed)
        self._layout()
        self._count = 0

    def _layout(self) -> None:
        """Where each member's header and data lie in self.tar: the bytes a reader must look at."""
        self.sensitive: list[tuple[int, int]] = []
        pos = 0
        for member in self.members:
            header = member.header()
            assert len(header) == BLOCK, "a PAX extended header: the oracle below assumes plain ustar headers"
            self.sensitive.append((pos, pos + 148 + 7))  # up to the checksum's NUL; byte 155 (a space) is never read
            self.sensitive.append((pos + 156, pos + BLOCK))
            self.sensitive.append((pos + BLOCK, pos + BLOCK + len(member.data)))
            pos += len(member.encode())
        self.members_end = pos  # the end-of-archive blocks and record padding follow
        start = len(self.members[0].encode())
        self.signature_header = (start, start + BLOCK)

    def _is_sensitive(self, offset: int) -> bool:
        return any(start <= offset < end for start, end in self.sensitive)

    def _in_signature_header(self, offset: int) -> tuple[int, ...]:
        """Damage at `offset` may cost the signature its place in the stream (see SIGNATURE_DAMAGE)."""
        manifest_header = (0, BLOCK)
        return SIGNATURE_DAMAGE if any(start <= offset < end for start, end in (manifest_header, self.signature_header)) else ()

    def _path(self, name: str) -> Path:
        self._count += 1
        directory = self.dir / "cases" / f"{self._count:05d}"
        directory.mkdir(parents=True)
        return directory / f"{name}.tar.zst"

    def _evil(self, name: str, members: list[Raw], **kw) -> Path:
        return write_tar_zst(self._path(name), members, **kw)

    def _bytes(self, name: str, data: bytes) -> Path:
        path = self._path(name)
        path.write_bytes(data)
        return path

    def _split_copy(self, name: str) -> tuple[Path, list[Path]]:
        """A copy of the split bundle (parts, parts index and its signature) to damage."""
        path = self._path(name)
        for source in self.split.outputs:
            shutil.copy2(source, path.parent / source.name)
        copy = path.parent / self.split.path.name
        return copy, sorted(path.parent.glob(copy.name + ".[0-9][0-9][0-9]"))

    # --- issue 3's security list, by name ------------------------------------------------------

    def named(self) -> list[Case]:
        d, s, p, m = self.data, self.sig, self.payload, self.members
        target = self.dir / "escaped.bin"
        cases = [
            Case("dotdot-member-name", self._evil("dotdot", _swap(m, NEW_MEMBER, name="../../escaped.bin")), needle="not listed"),
            Case("absolute-member-name", self._evil("absolute", _swap(m, NEW_MEMBER, name=str(target))), needle="not listed"),
            Case("dotdot-in-a-long-pax-name", self._evil("pax-dotdot", _swap(m, NEW_MEMBER, name="packs/keep/" + "d/" * 60 + "../" * 70 + "escaped.bin"))),
            Case("dotdot-in-a-gnu-longname", self._evil("gnu-dotdot", _swap(m, NEW_MEMBER, name="packs/keep/" + "../" * 60 + "escaped.bin", pax=False))),
            Case("pax-header-renaming-a-member-outside", self._evil("pax-path", self._with_pax(NEW_MEMBER, path="../../escaped.bin")), needle="not listed"),
            Case("pax-header-making-a-member-longer", self._evil("pax-size", self._with_pax(NEW_MEMBER, size="40000")), needle="longer"),
            Case("pax-header-turning-a-member-into-a-link", self._evil("pax-link", self._with_pax(NEW_MEMBER, linkpath="/etc/passwd", typeflag=tarfile.SYMTYPE))),
            Case("global-pax-header-renaming-what-follows", self._evil("pax-global", self._with_pax(NEW_MEMBER, kind=tarfile.XGLTYPE, path="../../escaped.bin"))),
            Case("dotdot-path-in-a-signed-manifest", self._resigned("path-dotdot", b'"path": "data/new.bin"', b'"path": "../../../escaped.bin"'), needle="'..' is not allowed"),
            Case("absolute-path-in-a-signed-manifest", self._resigned("path-absolute", b'"path": "data/new.bin"', f'"path": "{target}"'.encode()), needle="absolute"),
            Case("symlink-member", self._evil("symlink", _swap(m, NEW_MEMBER, type=tarfile.SYMTYPE, linkname="/etc/passwd", data=b"")), needle="symlink"),
            Case("symlink-member-to-a-data-file", self._evil("symlink-rel", _swap(m, NEW_MEMBER, type=tarfile.SYMTYPE, linkname="../keep.bin", data=b"")), needle="symlink"),
            Case("hardlink-member", self._evil("hardlink", _swap(m, NEW_MEMBER, type=tarfile.LNKTYPE, linkname="packs/keep/data/keep.bin", data=b"")), needle="hardlink"),
            Case("char-device-member", self._evil("chardev", _swap(m, NEW_MEMBER, type=tarfile.CHRTYPE, data=b"")), needle="device"),
            Case("block-device-member", self._evil("blockdev", _swap(m, NEW_MEMBER, type=tarfile.BLKTYPE, data=b"")), needle="device"),
            Case("fifo-member", self._evil("fifo", _swap(m, NEW_MEMBER, type=tarfile.FIFOTYPE, data=b"")), needle="special"),
            Case("directory-member", self._evil("dir", m[:2] + [Raw("packs/keep/data", type=tarfile.DIRTYPE)] + m[2:]), needle="directory"),
            Case("duplicate-member", self._evil("dup", m[:3] + [Raw(m[2].name, blob(len(m[2].data), 9))] + m[3:]), needle="twice"),
            Case("duplicate-of-the-last-member", self._evil("dup-last", m + [m[-1]]), needle="twice"),
            Case("unlisted-member-at-the-end", self._evil("unlisted", m + [Raw("packs/keep/data/extra.bin", b"extra")]), needle="not listed"),
            Case("unlisted-member-in-the-middle", self._evil("unlisted-mid", m[:3] + [Raw("packs/keep/data/extra.bin", b"extra")] + m[3:]), needle="not listed"),
            Case("listed-file-missing-at-the-end", self._evil("missing", m[:-1])),
            Case("listed-file-missing-in-the-middle", self._evil("missing-mid", m[:2] + m[3:])),
            Case("member-longer-than-declared", self._evil("longer", _swap(m, NEW_MEMBER, data=dict(p)[NEW_MEMBER] + b"more")), needle="longer"),
            Case("member-shorter-than-declared", self._evil("shorter", _swap(m, NEW_MEMBER, data=dict(p)[NEW_MEMBER][:-1])), needle="shorter"),
            Case("header-claiming-a-terabyte", self._evil("huge", _swap(m, NEW_MEMBER, size=10**12)), needle="longer"),
            Case("changed-manifest-byte", self._evil("manifest-byte", bundle_members(_flip(d, len(d) // 2, 0x01), s, p)), needle="signature"),
            Case("changed-payload-byte-same-length", self._evil("payload-byte", _swap(m, NEW_MEMBER, data=_flip(dict(p)[NEW_MEMBER], 1000, 0x01))), needle="checksum mismatch"),
            Case("changed-compressed-byte", self._bytes("compressed-byte", _flip(self.compressed, len(self.compressed) // 2))),
            Case("truncated-in-the-header", self._bytes("cut-header", self.compressed[:100])),
            Case("truncated-half-way", self._bytes("cut-half", self.compressed[: len(self.compressed) // 2])),
            Case("truncated-by-its-checksum", self._bytes("cut-end", self.compressed[:-2])),
            Case("cut-at-the-end-of-the-last-member", self._evil("no-end-blocks", m, end=False)),
            Case("trailing-garbage", self._bytes("garbage", self.compressed + b"trailing garbage\n" * 4), needle="garbage"),
            Case("a-second-zstd-frame", self._bytes("second-frame", self.compressed + zstd_frame(b"not tar padding"))),
            Case("tar-data-after-the-end-blocks", self._bytes("hidden", zstd_frame(self.tar + tar_bytes([Raw("packs/keep/data/hidden.bin", b"hidden")])))),
            Case("zstd-bomb-after-the-archive", self._bytes("bomb", self._bomb())),
            Case("first-member-is-not-the-manifest", self._evil("not-first", [m[2]] + m[:2] + m[3:])),
            Case("not-a-bundle-at-all", self._bytes("random", blob(5000, 5))),
            Case("empty-file", self._bytes("empty", b"")),
            Case("signature-by-an-untrusted-key", write_bundle(self._path("stranger"), UPDATE, key=self.stranger).path, needle="not trusted"),
            Case("signature-of-another-manifest", self._evil("other-sig", bundle_members(d, signing.sign(self.key, to_json(build_manifest(FIRST, key=self.key)[0])), p)), needle="signature"),
            Case("manifest-naming-another-signer", self._resigned("other-signer", b'"signer_key_id": "' + signing.key_id(self.key.public_key()).encode(), b'"signer_key_id": "' + b"ab" * 32)),
            Case("truncated-signature", self._evil("short-sig", bundle_members(d, s[:32], p))),
            Case("signature-stripped", self._evil("no-sig", bundle_members(d, None, p)), exit_code=4, needle="--allow-unsigned"),
        ]
        cases += self._split_cases()
        return cases

    def _with_pax(self, listed: str, kind: bytes = tarfile.XHDTYPE, typeflag: bytes | None = None, **records: str) -> list[Raw]:
        """A PAX extended header (or a global one) in front of the member named `listed`."""
        body = b"".join(pax_record(k, v) for k, v in records.items())
        out = []
        for m in self.members:
            if m.name == listed:
                out.append(Raw("././@PaxHeader", body, type=kind, size=len(body), pax=False))
                if typeflag is not None:
                    m = Raw(**{**m.__dict__, "type": typeflag, "data": b""})
            out.append(m)
        return out

    def _resigned(self, name: str, old: bytes, new: bytes) -> Path:
        """A manifest changed and then validly signed by the trusted key: the signer itself is hostile."""
        assert old in self.data, old
        data = self.data.replace(old, new)
        return self._evil(name, bundle_members(data, signing.sign(self.key, data), self.payload))

    def _bomb(self) -> bytes:
        compressor = zstandard.ZstdCompressor(level=1).compressobj()
        body = compressor.compress(self.tar)
        for _ in range(64):
            body += compressor.compress(bytes(1 << 20))  # 64 MiB of zeros after the archive, a few kB compressed
        return body + compressor.flush()

    def _split_cases(self) -> list[Case]:
        cases = []
        path, parts = self._split_copy("split-part-byte")
        data = parts[1].read_bytes()
        parts[1].write_bytes(_flip(data, len(data) // 2, 0x01))
        cases.append(Case("split-part-with-a-changed-byte", path, needle=parts[1].name))
        path, parts = self._split_copy("split-part-missing")
        parts[1].unlink()
        cases.append(Case("split-part-missing", path, needle=parts[1].name))
        path, parts = self._split_copy("split-part-truncated")
        os.truncate(parts[-1], parts[-1].stat().st_size - 1)
        cases.append(Case("split-part-truncated", path, needle=parts[-1].name))
        path, parts = self._split_copy("split-parts-swapped")
        a, b = parts[0].read_bytes(), parts[1].read_bytes()
        parts[0].write_bytes(b)
        parts[1].write_bytes(a)
        cases.append(Case("split-parts-swapped", path))
        path, _ = self._split_copy("split-index-changed")
        index = path.with_name(path.name + ".parts.json")
        doc = json.loads(index.read_bytes())
        doc["parts"][0]["sha256"] = hashlib.sha256(b"another part").hexdigest()
        index.write_bytes(json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n")
        cases.append(Case("split-index-changed", path, needle="signature"))
        path, _ = self._split_copy("split-index-signature-stripped")
        path.with_name(path.name + ".parts.json.sig").unlink()
        cases.append(Case("split-index-signature-stripped", path, exit_code=4, needle="--allow-unsigned"))
        return cases

    # --- random damage, seeded ------------------------------------------------------------------------

    KINDS = ("flip", "truncate", "append", "tarflip", "tarheader", "tartruncate", "partflip", "parttruncate")

    def random(self, rng: random.Random, count: int):
        """`count` random cases, the same ones for the same seed."""
        for i in range(count):
            kind = self.KINDS[i % len(self.KINDS)]
            yield getattr(self, f"_random_{kind}")(rng)

    def _random_flip(self, rng: random.Random) -> Case:
        offset = rng.randrange(len(self.compressed))
        data = _flip(self.compressed, offset, rng.randrange(1, 256))
        harmless = _decompressed(data) == self.original_stream
        return Case(f"flip-compressed-byte-{offset}", self._bytes("flip", data), harmless_ok=harmless)

    def _random_truncate(self, rng: random.Random) -> Case:
        size = rng.randrange(len(self.compressed))
        return Case(f"truncate-compressed-at-{size}", self._bytes("truncate", self.compressed[:size]))

    def _random_append(self, rng: random.Random) -> Case:
        extra = rng.randbytes(rng.randrange(1, 64))
        return Case(f"append-{len(extra)}-bytes", self._bytes("append", self.compressed + extra))

    def _random_tarflip(self, rng: random.Random) -> Case:
        offset = rng.randrange(self.members_end)
        data = zstd_frame(_flip(self.tar, offset, rng.randrange(1, 256)))
        return Case(f"flip-tar-byte-{offset}", self._bytes("tarflip", data), harmless_ok=not self._is_sensitive(offset), also=self._in_signature_header(offset))

    def _random_tarheader(self, rng: random.Random) -> Case:
        """One header field of one member rewritten, its checksum fixed: the reader's own checks must catch it."""
        index = rng.randrange(len(self.members))
        member = self.members[index]
        start = sum(len(m.encode()) for m in self.members[:index])
        field_name = rng.choice(sorted(FIELDS))
        offset, length = FIELDS[field_name]
        header = bytearray(self.tar[start : start + BLOCK])
        must_refuse = field_name not in IGNORED_FIELDS
        if field_name == "typeflag":
            header[offset:offset + 1] = rng.choice(TYPES)
            must_refuse = bytes(header[offset:offset + 1]) not in REGULAR_TYPES
        elif field_name == "size":
            value = rng.choice([0, len(member.data) + rng.randrange(1, 4096), max(0, len(member.data) - rng.randrange(1, 512)), 8**11 - 1])
            header[offset:offset + length] = b"%011o\0" % value
            must_refuse = value != len(member.data)
        elif field_name == "name":
            where = rng.randrange(len(member.name) + 1)  # a byte of the name, or the NUL that ends it
            header[offset + where] = rng.choice(b"./\\abcdefXYZ0123456789-_")
            must_refuse = bytes(header[offset:offset + length]).split(b"\0")[0] != member.name.encode()
        elif field_name == "prefix":
            header[offset:offset + 6] = rng.choice([b"..\0\0\0\0", b"/tmp\0\0", b"packs\0", b"evil/\0"])
        else:
            where = rng.randrange(length)
            header[offset + where] = rng.randrange(256)
        tar = self.tar[:start] + with_checksum(bytes(header)) + self.tar[start + BLOCK :]
        return Case(f"header-{member.name.rsplit('/', 1)[-1]}-{field_name}", self._bytes("tarheader", zstd_frame(tar)), harmless_ok=not must_refuse, also=self._in_signature_header(start))

    def _random_tartruncate(self, rng: random.Random) -> Case:
        size = rng.randrange(self.members_end)
        return Case(f"truncate-tar-at-{size}", self._bytes("tartruncate", zstd_frame(self.tar[:size])), also=self._in_signature_header(size))

    def _random_partflip(self, rng: random.Random) -> Case:
        path, parts = self._split_copy("partflip")
        part = rng.choice(parts)
        data = part.read_bytes()
        offset = rng.randrange(len(data))
        part.write_bytes(_flip(data, offset, rng.randrange(1, 256)))
        return Case(f"flip-{part.name[-3:]}-byte-{offset}", path)

    def _random_parttruncate(self, rng: random.Random) -> Case:
        path, parts = self._split_copy("parttruncate")
        part = rng.choice(parts)
        size = rng.randrange(part.stat().st_size)
        os.truncate(part, size)
        return Case(f"truncate-{part.name[-3:]}-at-{size}", path)


# --- the host that must not change ----------------------------------------------------------------------


@dataclass
class Outcome:
    case: Case
    exit_code: int
    output: str
    problems: list[str] = field(default_factory=list)

    @property
    def refused(self) -> bool:
        return self.exit_code in (self.case.exit_code, *self.case.also)

    @property
    def harmless(self) -> bool:
        return self.exit_code == 0 and not self.problems


class Host:
    """The current HOME (its environment is set by the caller), with FIRST sideloaded.

    `check(case)` sideloads the case in-process and returns what went wrong; after a
    harmless case that was accepted, the HOME is put back as it was.
    """

    def __init__(self, pub: Path, first: Path):
        self.home = Path(os.environ["HOME"])
        self.pub = pub
        result = self.sideload(first)
        if result[0] != 0:
            raise RuntimeError(f"the first bundle did not install: {result[1]}")
        self.before = tree_snapshot(self.home)
        self.saved = self.home.parent / (self.home.name + ".saved")
        shutil.rmtree(self.saved, ignore_errors=True)
        shutil.copytree(self.home, self.saved, symlinks=True)

    def sideload(self, path: Path) -> tuple[int, str]:
        from click.testing import CliRunner

        from devops_cp.cli import main

        result = CliRunner().invoke(main, ["data", "sideload", str(path), "--trust", str(self.pub), "--progress", "none"])
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            trace = "".join(traceback.format_exception(result.exception))
            return 1, f"internal error: {trace}"
        return result.exit_code, result.stderr

    def check(self, case: Case) -> Outcome:
        exit_code, output = self.sideload(case.path)
        outcome = Outcome(case, exit_code, output)
        if exit_code == 0 and case.harmless_ok:
            outcome.problems += self._installed_exactly_the_update()
            self.restore()
            return outcome
        if not outcome.refused:
            outcome.problems.append(f"exit {exit_code}, expected {case.exit_code}: {output.strip()[-1500:]}")
        elif case.needle and case.needle not in output:
            outcome.problems.append(f"the refusal does not say {case.needle!r}: {output.strip()}")
        changed = changed_paths(self.before, tree_snapshot(self.home))
        if changed:
            outcome.problems.append("HOME changed: " + ", ".join(changed[:8]))
            self.restore()
        return outcome

    def _installed_exactly_the_update(self) -> list[str]:
        from executor.config import load_config
        from executor.store import Store

        store = Store(load_config())
        problems = []
        for pack, files in UPDATE_FILES.items():
            record = store.read_record(pack)
            if record is None:
                problems.append(f"accepted, but {pack} is not installed")
                continue
            for rel, data in files.items():
                path = Path(record.data_dir) / rel
                if not path.is_file() or path.read_bytes() != data:
                    problems.append(f"accepted, but {pack}/{rel} is not the signed content")
        return problems

    def restore(self) -> None:
        shutil.rmtree(self.home)
        shutil.copytree(self.saved, self.home, symlinks=True)
