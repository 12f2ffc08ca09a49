"""A pack as an OCI artifact: what `mirror` writes and `install --from` reads. Pure: no I/O.

One artifact per pack of a bundle, in one repository (or one OCI image layout):

    manifest   application/vnd.oci.image.manifest.v1+json, artifactType PACK_ARTIFACT
      config   the empty descriptor ({}), as OCI 1.1 artifacts have it
      layers   manifest.json        BUNDLE_MANIFEST   the signed bundle manifest, byte for byte
               manifest.json.sig    BUNDLE_SIGNATURE  its Ed25519 signature
               PATH                 ONE_FILE          a large file (or an archive carried whole):
                                                      its digest is the manifest's sha256 for it
               PACKID.tar           FILES_TAR         the pack's other files, one tar member each
      annotations org.opencontainers.image.created (the bundle's), PACK_KEY_ANNOTATION

The mirror is never trusted: a host reads the signed manifest from the artifact, verifies it,
and checks every byte of every layer against it. The layer digests only catch transport damage.

Tags encode the pack key reversibly (`tag_for`, `parse_tag`): `ENCODED.VERSION` with VERSION
the bundle's creation time (20261206T103815Z) and `ENCODED.latest` for the newest. ENCODED keeps
`a-z 0-9 -`, writes `_` as `__` and any other byte of the key's UTF-8 as `_` + two hex digits:
`whisper-model@model_size=base` -> `whisper-model_40model__size_3dbase`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from manifests.bundle import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    TOOL_DATA_TYPE,
    BundleManifest,
    FileEntry,
    PackEntry,
    parse_timestamp,
)
from manifests.errors import BundleStructureError, UsageError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG = b"{}"
PACK_ARTIFACT = "application/vnd.devops-cp.pack.v1"
BUNDLE_MANIFEST = "application/vnd.devops-cp.bundle-manifest.v1+json"
BUNDLE_SIGNATURE = "application/vnd.devops-cp.bundle-signature.v1"
ONE_FILE = "application/vnd.devops-cp.file.v1"
FILES_TAR = "application/vnd.oci.image.layer.v1.tar"
TITLE = "org.opencontainers.image.title"
CREATED = "org.opencontainers.image.created"
PACK_KEY_ANNOTATION = "dev.devops-cp.pack.key"
PATH_ANNOTATION = "dev.devops-cp.path"  # where a ONE_FILE layer goes (the title may only be its name)
LATEST = "latest"
# A file this large (or an archive carried whole) is its own layer: pulled, resumed and
# placed on its own; smaller ones travel together in the pack's tar layer.
OWN_LAYER_SIZE = 4 << 20
TAR_MEMBER_OVERHEAD = 3 * 512 + 511  # a pax header (long names), the ustar header, padding
_TAG_MAX = 128
_KEEP = re.compile(r"[a-z0-9-]")
_VERSION = re.compile(r"^\d{8}T\d{6}Z$")


# --- tags -----------------------------------------------------------------------------------


def encode_key(key: str) -> str:
    out = []
    for char in key:
        if _KEEP.fullmatch(char):
            out.append(char)
        elif char == "_":
            out.append("__")
        else:
            out.extend(f"_{byte:02x}" for byte in char.encode())
    return "".join(out)


def decode_key(encoded: str) -> str | None:
    """The pack key of an encoded tag part; None when it is not one of ours."""
    data, i = bytearray(), 0
    while i < len(encoded):
        char = encoded[i]
        if char != "_":
            if not _KEEP.fullmatch(char):
                return None
            data += char.encode()
            i += 1
        elif encoded[i + 1 : i + 2] == "_":
            data += b"_"
            i += 2
        elif re.fullmatch(r"[0-9a-f]{2}", encoded[i + 1 : i + 3]):
            data.append(int(encoded[i + 1 : i + 3], 16))
            i += 3
        else:
            return None
    try:
        return data.decode() or None
    except UnicodeDecodeError:
        return None


def version_of(created: str) -> str:
    """'2026-12-06T10:38:15Z' -> '20261206T103815Z' (a tag cannot hold ':')."""
    return parse_timestamp(created).strftime("%Y%m%dT%H%M%SZ")


def version_time(version: str) -> datetime:
    return datetime.strptime(version, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def tag_for(key: str, version: str) -> str:
    tag = f"{encode_key(key)}.{version}"
    if len(tag) > _TAG_MAX:
        raise UsageError(f"pack key {key!r} is too long for an OCI tag ({len(tag)} of at most {_TAG_MAX} characters)", hint="bundle it with fewer or shorter choices")
    return tag


def parse_tag(tag: str) -> tuple[str, str] | None:
    """`ENCODED.VERSION` or `ENCODED.latest` -> (pack key, version or 'latest'); None for other tags."""
    encoded, dot, version = tag.partition(".")
    if not dot or not (version == LATEST or _VERSION.match(version)):
        return None
    key = decode_key(encoded)
    return (key, version) if key else None


# --- which layers a pack's files travel in --------------------------------------------------


@dataclass(frozen=True)
class PackLayout:
    pack: PackEntry
    own: tuple[FileEntry, ...]  # each its own ONE_FILE layer
    in_tar: tuple[FileEntry, ...]  # together in one FILES_TAR layer (empty: no tar layer)

    @property
    def tar_title(self) -> str:
        return f"{self.pack.id}.tar"


def travels_alone(entry: FileEntry) -> bool:
    return entry.unpack is not None or entry.size >= OWN_LAYER_SIZE


def layout_packs(manifest: BundleManifest) -> list[PackLayout]:
    """The data packs of a bundle (not the tool's wheels) and how their files are grouped."""
    layouts = []
    for pack in manifest.packs:
        if pack.data_type == TOOL_DATA_TYPE:
            continue
        files = manifest.files_for(pack.key)
        layouts.append(PackLayout(pack, tuple(f for f in files if travels_alone(f)), tuple(f for f in files if not travels_alone(f))))
    return layouts


def tar_size_bound(entries: tuple[FileEntry, ...]) -> int:
    """The most a FILES_TAR layer of these files can hold: headers, padded data, end blocks."""
    return sum(TAR_MEMBER_OVERHEAD + e.size for e in entries) + 1024 + 10240


def file_title(entry: FileEntry) -> str:
    """What a standard tool names the pulled file: an archive keeps its format's suffix."""
    return entry.member.rpartition("/")[2] if entry.unpack else entry.path.rpartition("/")[2]


# --- the OCI manifest -----------------------------------------------------------------------


@dataclass(frozen=True)
class Blob:
    media_type: str
    digest: str  # sha256:HEX
    size: int
    annotations: tuple[tuple[str, str], ...] = ()

    def descriptor(self) -> dict:
        doc = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            doc["annotations"] = dict(self.annotations)
        return doc


def sha256_digest(hex_digest: str) -> str:
    return "sha256:" + hex_digest


def header_blobs(manifest_digest: str, manifest_size: int, signature_digest: str, signature_size: int) -> list[Blob]:
    return [
        Blob(BUNDLE_MANIFEST, manifest_digest, manifest_size, ((TITLE, MANIFEST_NAME),)),
        Blob(BUNDLE_SIGNATURE, signature_digest, signature_size, ((TITLE, SIGNATURE_NAME),)),
    ]


def file_blob(entry: FileEntry) -> Blob:
    return Blob(ONE_FILE, sha256_digest(entry.sha256), entry.size, ((TITLE, file_title(entry)), (PATH_ANNOTATION, entry.path)))


def tar_blob(layout: PackLayout, digest: str, size: int) -> Blob:
    return Blob(FILES_TAR, digest, size, ((TITLE, layout.tar_title),))


def artifact_manifest(pack: PackEntry, created: str, layers: list[Blob], config_digest: str) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": PACK_ARTIFACT,
        "config": {"mediaType": OCI_EMPTY, "digest": config_digest, "size": len(EMPTY_CONFIG)},
        "layers": [layer.descriptor() for layer in layers],
        "annotations": {CREATED: created, PACK_KEY_ANNOTATION: pack.key},
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def read_layers(manifest: dict, where: str) -> list[Blob]:
    """An artifact manifest's layers, strictly: anything malformed is refused (exit 3)."""
    layers = manifest.get("layers")
    if manifest.get("artifactType") != PACK_ARTIFACT or not isinstance(layers, list):
        raise BundleStructureError(f"{where} is not a devops-cp pack artifact", hint="publish it with `devops-cp data mirror`")
    blobs = []
    for raw in layers:
        ok = isinstance(raw, dict) and isinstance(raw.get("mediaType"), str) and isinstance(raw.get("size"), int) and not isinstance(raw.get("size"), bool)
        digest = raw.get("digest") if ok else None
        annotations = raw.get("annotations", {}) if ok else None
        if not ok or not isinstance(digest, str) or not re.fullmatch(r"sha256:[0-9a-f]{64}", digest) or raw["size"] < 0 or not isinstance(annotations, dict):
            raise BundleStructureError(f"{where}: malformed layer {raw!r}", hint="the site's copy is damaged: publish it again with `devops-cp data mirror`")
        blobs.append(Blob(raw["mediaType"], digest, raw["size"], tuple((str(k), str(v)) for k, v in annotations.items())))
    return blobs
