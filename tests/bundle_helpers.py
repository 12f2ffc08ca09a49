"""Make valid and damaged bundles from bytes in memory, for tests and the fault harness.

Valid bundles go through the real writer (`bundler.writer.write_archive`) and the
real side files (`OUT.tar.zst.sha256`, the signed parts index of a split bundle),
so what a test sideloads is what `devops-cp data bundle` would have written.

Damaged or hostile ones are written member by member with `write_tar_zst`, which
puts whatever a test asks for into the tar stream: symlinks, hardlinks, devices,
fifos, '..' and absolute names, duplicates, unlisted or missing members, a header
whose size differs from the bytes that follow, trailing garbage or extra frames.
Then byte-level damage (`flip_byte`, `truncate`, `append`) works on the file.

Nothing here imports pytest: a harness can import it as a plain module.

    key = new_key()
    good = write_bundle(tmp / "b.tar.zst", [PackSpec("model", {"m.bin": data})], key=key)
    evil = write_tar_zst(tmp / "e.tar.zst", header_members(good) + [Raw("../x", b"boom")])
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tarfile
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bundler.build import _write_side_files
from bundler.writer import Member, write_archive
from manifests import signing
from manifests.bundle import MANIFEST_NAME, SIGNATURE_NAME, BundleManifest, FileEntry, PackEntry, Unpack, format_timestamp, to_json

__all__ = [
    "BLOCK",
    "Built",
    "PackSpec",
    "Raw",
    "append",
    "build_manifest",
    "bundle_members",
    "flip_byte",
    "header_members",
    "new_key",
    "replace",
    "resign",
    "tar_bytes",
    "tree_snapshot",
    "truncate",
    "write_bundle",
    "write_public_key",
    "write_tar_zst",
    "zstd_frame",
]

BLOCK = 512


# --- keys ------------------------------------------------------------------------------------


def new_key() -> Ed25519PrivateKey:
    return signing.generate_keypair()[0]


def write_public_key(path: Path, key: Ed25519PrivateKey) -> Path:
    """PREFIX.pub for `--trust` / `trust add`."""
    path = Path(path)
    path.write_bytes(signing.public_key_pem(key.public_key()))
    return path


def key_id(key: Ed25519PrivateKey) -> str:
    return signing.key_id(key.public_key())


# --- manifests from bytes in memory ----------------------------------------------------------


def _ts(moment: datetime | str | None, default: datetime) -> str:
    if moment is None:
        moment = default
    return moment if isinstance(moment, str) else format_timestamp(moment)


@dataclass
class PackSpec:
    """One pack of a bundle: its files (relative path -> bytes) and its manifest fields."""

    id: str
    files: dict[str, bytes]
    data_type: str = "sample"
    choices: dict[str, str] = field(default_factory=dict)
    label: str = ""
    update_schedule: str = "weekly"
    fetched_at: datetime | str | None = None  # default: the bundle's created time
    offline_steps: list[dict] = field(default_factory=list)
    gpu_vendor: str = ""
    min_vram_mb: int = 0
    archives: dict[str, tuple[bytes, Unpack]] = field(default_factory=dict)  # folder -> archive carried whole, how it unpacks

    @property
    def key(self) -> str:
        from manifests.plan import record_key

        return record_key(self.id, self.choices)


def _tool_command(step):
    """A step written as the manifest's JSON writes it ({"type": "tool_command", ...}), typed."""
    from manifests.steps import parse_step

    return step if not isinstance(step, dict) else parse_step(step, "offline_steps", lambda field, problem: ValueError(f"{field}: {problem}"))


def build_manifest(
    packs: list[PackSpec],
    *,
    key: Ed25519PrivateKey | None,
    created: datetime | str | None = None,
    expires: datetime | str | None = None,
    bundle_id: str | None = None,
    signer_key_id: str | None = "auto",
) -> tuple[BundleManifest, list[tuple[str, bytes]]]:
    """The manifest for these packs and the payload members (name, bytes) in manifest order."""
    now = datetime.now(timezone.utc)
    created_s = _ts(created, now)
    pack_entries, files, payload = [], [], []
    for spec in packs:
        pack_entries.append(
            PackEntry(
                key=spec.key,
                id=spec.id,
                label=spec.label or f"{spec.id} (test)",
                data_type=spec.data_type,
                choices=dict(spec.choices),
                update_schedule=spec.update_schedule,
                fetched_at=_ts(spec.fetched_at, datetime.fromisoformat(created_s.replace("Z", "+00:00"))),
                offline_steps=tuple(_tool_command(step) for step in spec.offline_steps),
                source="test",
                checksum_verified=True,
                tool_hint="",
                gpu_vendor=spec.gpu_vendor,
                min_vram_mb=spec.min_vram_mb,
            )
        )
        for rel in sorted(spec.files):
            data = spec.files[rel]
            member = f"packs/{spec.key}/{rel}"
            files.append(FileEntry(spec.key, rel, len(data), hashlib.sha256(data).hexdigest(), member))
            payload.append((member, data))
        for folder, (data, unpack) in sorted(spec.archives.items()):
            member = f"archives/{spec.key}/{folder}.{unpack.format}"
            files.append(FileEntry(spec.key, folder, len(data), hashlib.sha256(data).hexdigest(), member, unpack))
            payload.append((member, data))
    if signer_key_id == "auto":
        signer_key_id = signing.key_id(key.public_key()) if key is not None else None
    manifest = BundleManifest(
        bundle_id=bundle_id or uuid.uuid4().hex,
        created=created_s,
        expires=None if expires is None else _ts(expires, now),
        tool_version="test",
        signer_key_id=signer_key_id,
        packs=tuple(pack_entries),
        files=tuple(files),
    )
    return manifest, payload


# --- valid bundles through the real writer ---------------------------------------------------


@dataclass
class Built:
    path: Path  # OUT.tar.zst, as a user names it (split or not)
    manifest: BundleManifest
    manifest_bytes: bytes
    signature: bytes | None
    payload: list[tuple[str, bytes]]
    outputs: list[Path]  # the archive or its parts, then the side files

    @property
    def parts(self) -> list[Path]:
        return [p for p in self.outputs if p.name == self.path.name or p.name[len(self.path.name) + 1 :].isdigit()]


def write_bundle(
    out: Path,
    packs: list[PackSpec],
    *,
    key: Ed25519PrivateKey | None,
    split_size: int | None = None,
    created: datetime | str | None = None,
    expires: datetime | str | None = None,
    **manifest_fields,
) -> Built:
    """A valid bundle, exactly as the bundler writes one (archive, .sha256, parts index, signatures)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    manifest, payload = build_manifest(packs, key=key, created=created, expires=expires, **manifest_fields)
    manifest_bytes = to_json(manifest)
    signature = signing.sign(key, manifest_bytes) if key is not None else None
    staged = out.parent / f".{out.name}.payload"
    members = []
    for i, (name, data) in enumerate(payload):
        path = staged / str(i)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        members.append(Member(name, path, len(data)))
    try:
        parts = write_archive(out, manifest_bytes, signature, members, split_size=split_size)
    finally:
        for m in members:
            m.path.unlink(missing_ok=True)
        if staged.exists():
            staged.rmdir()
    outputs = [out.with_name(p.name) for p in parts]
    outputs += _write_side_files(out, parts, key, manifest.signer_key_id, split_size is not None)
    return Built(out, manifest, manifest_bytes, signature, payload, outputs)


# --- arbitrary tar.zst archives --------------------------------------------------------------


@dataclass
class Raw:
    """One tar member, written as given.

    type: tarfile.REGTYPE, SYMTYPE, LNKTYPE, CHRTYPE, BLKTYPE, FIFOTYPE, DIRTYPE...
    size: what the header claims, when it should differ from len(data) (the bytes
    that follow are `data`, padded to a block, whatever the header says).
    """

    name: str
    data: bytes = b""
    type: bytes = tarfile.REGTYPE
    linkname: str = ""
    size: int | None = None
    pax: bool = True  # a PAX header (as the bundler writes), else GNU

    def header(self) -> bytes:
        info = tarfile.TarInfo(self.name)
        info.type = self.type
        info.linkname = self.linkname
        info.size = len(self.data) if self.size is None else self.size
        if self.type != tarfile.REGTYPE and self.type != tarfile.AREGTYPE:
            info.size = 0 if self.size is None else self.size
        info.mode = 0o644
        info.mtime = 0
        if self.type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
            info.devmajor, info.devminor = 1, 3  # /dev/null
        fmt = tarfile.PAX_FORMAT if self.pax else tarfile.GNU_FORMAT
        return info.tobuf(fmt, "utf-8", "surrogateescape")

    def encode(self) -> bytes:
        pad = (-len(self.data)) % BLOCK
        return self.header() + self.data + b"\0" * pad


def tar_bytes(members: Iterable[Raw], *, end: bool = True) -> bytes:
    """The uncompressed tar stream: headers and data as given, then two zero blocks padded to 10 KiB."""
    body = b"".join(m.encode() for m in members)
    if end:
        body += b"\0" * (2 * BLOCK)
        body += b"\0" * ((-len(body)) % tarfile.RECORDSIZE)
    return body


def zstd_frame(data: bytes, level: int = 3) -> bytes:
    return zstandard.ZstdCompressor(level=level, write_checksum=True).compress(data)


def write_tar_zst(path: Path, members: Iterable[Raw], *, end: bool = True, trailer: bytes = b"", level: int = 3) -> Path:
    """A .tar.zst of exactly these members (one zstd frame), then `trailer` as raw bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(zstd_frame(tar_bytes(members, end=end), level) + trailer)
    return path


def header_members(manifest_bytes: bytes, signature: bytes | None) -> list[Raw]:
    """manifest.json (and its signature) as the first members, as the bundler writes them."""
    members = [Raw(MANIFEST_NAME, manifest_bytes)]
    if signature is not None:
        members.append(Raw(SIGNATURE_NAME, signature))
    return members


def bundle_members(built_or_manifest: Built | bytes, signature: bytes | None = None, payload: list[tuple[str, bytes]] | None = None) -> list[Raw]:
    """Every member of a bundle as Raw, ready to be edited and written with write_tar_zst."""
    if isinstance(built_or_manifest, Built):
        b = built_or_manifest
        return header_members(b.manifest_bytes, b.signature) + [Raw(n, d) for n, d in b.payload]
    return header_members(built_or_manifest, signature) + [Raw(n, d) for n, d in payload or []]


def hostile_bundle(path: Path, packs: list[PackSpec], *, key: Ed25519PrivateKey | None, edit: Callable[[dict], None] | None = None) -> Path:
    """A bundle whose manifest JSON `edit` changed after the writer's own checks, then signed by
    `key` (None: unsigned): what a compromised or careless signer can put on a stick."""
    manifest, payload = build_manifest(packs, key=key)
    doc = json.loads(to_json(manifest))
    if edit is not None:
        edit(doc)
    data = (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
    return write_tar_zst(path, bundle_members(data, signing.sign(key, data) if key is not None else None, payload))


def resign(manifest: BundleManifest, key: Ed25519PrivateKey | None, *, change: Callable[[BundleManifest], BundleManifest] | None = None) -> tuple[bytes, bytes | None]:
    """(manifest bytes, signature) after an optional dataclasses.replace-style change."""
    if change is not None:
        manifest = change(manifest)
    data = to_json(manifest)
    return data, signing.sign(key, data) if key is not None else None


def replace(obj, **changes):
    return dataclasses.replace(obj, **changes)


# --- damage to bytes on disk -----------------------------------------------------------------


def flip_byte(path: Path, offset: int) -> int:
    """Invert one byte (negative offsets count from the end); the size stays the same."""
    path = Path(path)
    with open(path, "r+b") as f:
        size = os.fstat(f.fileno()).st_size
        where = offset % size
        f.seek(where)
        old = f.read(1)
        f.seek(where)
        f.write(bytes([old[0] ^ 0xFF]))
    return where


def truncate(path: Path, size: int) -> None:
    """Keep the first `size` bytes (negative: drop that many from the end)."""
    path = Path(path)
    if size < 0:
        size = path.stat().st_size + size
    os.truncate(path, size)


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def tree_snapshot(*roots: Path) -> dict[str, str]:
    """Every path below the roots: files by sha256, directories and links marked; for before/after checks."""
    snap: dict[str, str] = {}
    for root in roots:
        root = Path(root)
        if not root.exists():
            snap[str(root)] = "absent"
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames:
                p = Path(dirpath, name)
                snap[str(p)] = "link->" + os.readlink(p) if p.is_symlink() else "dir"
            for name in filenames:
                p = Path(dirpath, name)
                if p.is_symlink():
                    snap[str(p)] = "link->" + os.readlink(p)
                else:
                    snap[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return snap


def is_state_lock(path: str) -> bool:
    """Lock files in the state directory may appear on any run (a pack's lock is made on first use): no data."""
    return "/devops-cp/locks/" in path and path.endswith(".lock")


def changed_paths(before: dict[str, str], after: dict[str, str], *, ignore=is_state_lock) -> list[str]:
    """What differs between two tree_snapshot()s, as 'PATH (before -> after)', lock files aside
    (and the folders made to hold them)."""
    kept = [k for k in after if ignore(k)]
    holders = {str(parent) for k in kept for parent in Path(k).parents}
    keys = sorted(
        k for k in set(before) | set(after)
        if before.get(k) != after.get(k) and not ignore(k) and not (k not in before and after.get(k) == "dir" and k in holders)
    )  # fmt: skip
    return [f"{k} ({before.get(k, 'absent')} -> {after.get(k, 'absent')})" for k in keys]


class Untouched:
    """The roots (a HOME and the places around it a hostile bundle aims at), snapshotted now;
    `changes()` says what is different since, byte for byte, lock files in the state dir aside."""

    def __init__(self, *roots: Path):
        self.roots = roots
        self.before = tree_snapshot(*roots)

    def changes(self, ignore=is_state_lock) -> list[str]:
        return changed_paths(self.before, tree_snapshot(*self.roots), ignore=ignore)


# --- another host: a fresh HOME --------------------------------------------------------------


@dataclass
class Home:
    """A HOME with its XDG directories, as a second (air-gapped) host sees them."""

    root: Path

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def cache(self) -> Path:
        return self.home / ".cache"

    @property
    def data(self) -> Path:
        return self.home / ".local" / "share"

    @property
    def state(self) -> Path:
        return self.home / ".local" / "state"

    @property
    def config_dir(self) -> Path:
        return self.home / ".config"

    @property
    def catalog(self) -> Path:
        return self.root / "catalog"

    @property
    def records_dir(self) -> Path:
        return self.state / "devops-cp" / "records"

    def sample_dir(self) -> Path:
        return self.data / "devops-cp" / "samples"

    def env(self) -> dict[str, str]:
        self.home.mkdir(parents=True, exist_ok=True)
        self.catalog.mkdir(parents=True, exist_ok=True)
        return {
            "HOME": str(self.home),
            "XDG_CACHE_HOME": str(self.cache),
            "XDG_DATA_HOME": str(self.data),
            "XDG_STATE_HOME": str(self.state),
            "XDG_CONFIG_HOME": str(self.config_dir),
            "DEVOPS_CP_CATALOG": str(self.catalog),
        }

    def enter(self, setenv: Callable[[str, str], None]) -> "Home":
        """Make this the current HOME: `home.enter(monkeypatch.setenv)`."""
        for name, value in self.env().items():
            setenv(name, value)
        return self
