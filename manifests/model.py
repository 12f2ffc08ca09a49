"""The bundle format's model: typed, frozen records of a manifest and a parts index.

A bundle is a .tar.zst whose first members are `manifest.json` and `manifest.json.sig`.
The manifest lists every pack and every file (relative path, size, sha256, archive member);
the signature covers its exact bytes. A file may be an archive that the pack's recipe unpacks
(`unpack`): it travels as the upstream published it, and the host that installs it unpacks it
below `path`. A split bundle also has a parts index beside its parts, signed the same way,
listing every part's size and sha256 (DECISIONS "Names and files").

JSON in and out: manifests/codec.py. Whether a manifest may be used: manifests/trust.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from manifests.steps import ToolCommand

FORMAT_VERSION = 2  # 2: a file may be an archive to unpack (`unpack`); version 1 documents are still read
# 3: a bundle made for one host (`bundle --for`): `for_host`, and files kept or rebuilt from the host's
# copy (`from_host`). Only such bundles are written as 3, so full bundles stay readable by older hosts.
FOR_HOST_VERSION = 3
READ_VERSION = FOR_HOST_VERSION  # the newest version this tool reads
KEPT, REBUILT = "kept", "rebuilt"
MANIFEST_NAME = "manifest.json"
SIGNATURE_SUFFIX = ".sig"
SIGNATURE_NAME = MANIFEST_NAME + SIGNATURE_SUFFIX
PARTS_INDEX_SUFFIX = ".parts.json"
RESERVED_MEMBERS = frozenset({MANIFEST_NAME, SIGNATURE_NAME})
# The tool's own wheels (`bundle --include-tool`) travel as one pseudo-pack of this data type,
# members under tool/: covered by the signature like any file, never installed as data.
TOOL_PACK_ID = "devops-cp-tool"
TOOL_DATA_TYPE = "tool_wheels"
TOOL_MEMBER_DIR = "tool/"
UNPACK_FORMATS = ("tar", "tar.gz", "tar.xz", "tar.zst", "zip")

# --- the models ---------------------------------------------------------------------


@dataclass(frozen=True)
class Unpack:
    """How an archive carried whole becomes files: the recipe's own `extract` settings."""

    format: str  # one of UNPACK_FORMATS
    strip_components: int = 0
    unpacked_size_bytes: int | None = None  # the recipe's estimate: the space check, and the bomb bound


@dataclass(frozen=True, slots=True)
class FromHost:
    """How the host gets a file without the bundle carrying it whole (a bundle made for one host):
    - KEPT: its copy is the new version already (same size and sha256); no member;
    - REBUILT: from its copy (`base_size`, `base_sha256`) and the member, which holds the recipe and
      the chunks the host lacks (`carried_size`, `carried_sha256`; manifests/chunk_format.py)."""

    kind: str  # KEPT or REBUILT
    base_size: int
    base_sha256: str
    carried_size: int = 0
    carried_sha256: str = ""
    chunks: int = 0
    carried_chunks: int = 0


@dataclass(frozen=True)
class ForHost:
    """The host a bundle was made for and the export it was made from: the bundle carries only what
    that host lacked, so it is useless anywhere else (`mirror` refuses it)."""

    name: str  # the host's name when it exported, for people: sideload checks its files
    export_id: str
    exported_at: str


@dataclass(frozen=True, slots=True)  # slots: one per file, 20,000 in a big pack
class FileEntry:
    pack_key: str
    path: str  # relative POSIX path inside the pack's data directory: where the file goes
    size: int
    sha256: str
    member: str  # the archive member that holds the bytes; never decides where they go
    unpack: Unpack | None = None  # an archive: its files go below `path`, a folder the pack owns
    from_host: FromHost | None = None  # a bundle made for one host: kept ("" member) or rebuilt from its copy

    @property
    def delivery(self) -> str:
        return self.from_host.kind if self.from_host is not None else "whole"

    @property
    def in_archive(self) -> bool:
        return self.from_host is None or self.from_host.kind == REBUILT

    @property
    def member_size(self) -> int:
        """The bytes its member holds: the file, a rebuilt file's recipe and carried chunks, or none."""
        return self.size if self.from_host is None else self.from_host.carried_size

    @property
    def member_sha256(self) -> str:
        return self.sha256 if self.from_host is None else self.from_host.carried_sha256


@dataclass(frozen=True)
class PackEntry:
    key: str  # install record key: pack id plus chosen options (whisper-model@model_size=base)
    id: str
    label: str
    data_type: str
    choices: dict[str, str]
    update_schedule: str
    fetched_at: str  # ISO 8601 UTC: when the data came from upstream; freshness counts from here
    offline_steps: tuple[ToolCommand, ...]  # run on the installing host only as trust.py allows
    source: str
    checksum_verified: bool  # False: hashed on the way in, not checked against a published checksum
    tool_hint: str
    # The chosen options' hardware needs, checked on the host that installs ("" and 0: none).
    gpu_vendor: str = ""
    min_vram_mb: int = 0
    # Python packages the offline steps' `{python}` needs (spacy, for a spaCy model's wheel); checked
    # before the pack is placed. Written only when there are some; bundles without it read as ().
    python_packages: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class BundleManifest:
    format_version: int = FORMAT_VERSION
    bundle_id: str
    created: str  # ISO 8601 UTC
    expires: str | None  # ISO 8601 UTC
    tool_version: str
    signer_key_id: str | None
    packs: tuple[PackEntry, ...]
    files: tuple[FileEntry, ...]
    for_host: ForHost | None = None  # made for one host: useless to any other

    @property
    def total_size(self) -> int:
        """The files' bytes: what a full bundle carries."""
        return sum(f.size for f in self.files)

    @property
    def carried_size(self) -> int:
        """The payload's bytes: less than total_size when made for one host."""
        return sum(f.member_size for f in self.files)

    def files_for(self, pack_key: str) -> tuple[FileEntry, ...]:
        return tuple(f for f in self.files if f.pack_key == pack_key)


@dataclass(frozen=True, slots=True)
class PartEntry:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class PartsIndex:
    bundle_name: str  # OUT.tar.zst, the name the user passes around
    parts: tuple[PartEntry, ...]  # OUT.tar.zst.001, .002, ... in order
    total_size: int
    signer_key_id: str | None = None
    format_version: int = FORMAT_VERSION


def part_name(bundle_name: str, number: int) -> str:
    """part_name('out.tar.zst', 1) -> 'out.tar.zst.001' (numbers start at 1)."""
    return f"{bundle_name}.{number:03d}"


def parts_index_name(bundle_name: str) -> str:
    return bundle_name + PARTS_INDEX_SUFFIX


def format_timestamp(moment: datetime) -> str:
    """An aware datetime -> '2024-05-01T12:00:00Z', the form manifests carry."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("timestamps must be timezone-aware")
    return moment.astimezone(timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(text: str) -> datetime:
    """ISO 8601 with a UTC offset of zero ('Z' or '+00:00') -> aware datetime. ValueError otherwise."""
    moment = datetime.fromisoformat(text)
    if moment.utcoffset() != timedelta(0):
        raise ValueError("must be in UTC (end with 'Z' or '+00:00')")
    return moment
