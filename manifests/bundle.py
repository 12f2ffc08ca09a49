"""The bundle format, in one import: the model (model.py), its JSON (codec.py) and the trust
decision (trust.py). Pure: bytes, keys and a clock in; typed objects or typed errors out.
"""

from __future__ import annotations

from manifests import codec
from manifests.codec import parse_manifest, parse_parts_index, sha256sum_lines, unpack_doc
from manifests.model import (
    FOR_HOST_VERSION,
    FORMAT_VERSION,
    KEPT,
    REBUILT,
    MANIFEST_NAME,
    PARTS_INDEX_SUFFIX,
    SIGNATURE_NAME,
    SIGNATURE_SUFFIX,
    TOOL_DATA_TYPE,
    TOOL_MEMBER_DIR,
    TOOL_PACK_ID,
    UNPACK_FORMATS,
    BundleManifest,
    FileEntry,
    ForHost,
    FromHost,
    PackEntry,
    PartEntry,
    PartsIndex,
    Unpack,
    format_timestamp,
    parse_timestamp,
    part_name,
    parts_index_name,
)
from manifests.trust import check_manifest, verify_manifest, verify_parts_index

__all__ = [
    "FOR_HOST_VERSION",
    "FORMAT_VERSION",
    "KEPT",
    "REBUILT",
    "ForHost",
    "FromHost",
    "MANIFEST_NAME",
    "PARTS_INDEX_SUFFIX",
    "SIGNATURE_NAME",
    "SIGNATURE_SUFFIX",
    "TOOL_DATA_TYPE",
    "TOOL_MEMBER_DIR",
    "TOOL_PACK_ID",
    "UNPACK_FORMATS",
    "BundleManifest",
    "FileEntry",
    "PackEntry",
    "PartEntry",
    "PartsIndex",
    "Unpack",
    "format_timestamp",
    "parse_manifest",
    "parse_parts_index",
    "parse_timestamp",
    "part_name",
    "parts_index_name",
    "sha256sum_lines",
    "to_json",
    "unpack_doc",
    "verify_manifest",
    "verify_parts_index",
]


def to_json(obj: BundleManifest | PartsIndex) -> bytes:
    """Deterministic UTF-8 JSON, checked by every rule a host applies to the document itself
    (codec's parse and trust.check_manifest): the bundler never writes what sideload refuses."""
    data = codec.to_json(obj)
    if isinstance(obj, BundleManifest):
        check_manifest(obj)
    return data
