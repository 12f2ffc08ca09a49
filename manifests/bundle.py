"""The bundle manifest and the parts index: typed models, strict JSON, pure verification.

A bundle is a .tar.zst whose first members are `manifest.json` and
`manifest.json.sig`. The manifest lists every pack and every file (relative
path, size, sha256, archive member); the signature covers its exact bytes.
A file may be an archive that the pack's recipe unpacks (`unpack`): it travels
as the upstream published it, and the host that installs it unpacks it below `path`.
A split bundle also has a parts index beside its parts, signed the same way,
listing every part's size and sha256 (DECISIONS "Names and files").

Everything here is pure: `verify_manifest` and `verify_parts_index` take bytes,
keys and a clock reading, and return typed objects or raise. They check the
signature over the exact bytes before parsing anything (DECISIONS "Signatures").
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from json.encoder import encode_basestring as _json_string  # json's escaping with ensure_ascii=False
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from manifests.errors import BundleStructureError, PolicyError, SignatureError
from manifests.fromhost import FOR_HOST_VERSION, KEPT, REBUILT, ForHost, FromHost, for_host_doc, for_host_from_doc, from_host_doc, from_host_from_doc
from manifests.signing import is_key_id, verify_signature

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

FORMAT_VERSION = 2  # 2: a file may be an archive to unpack (`unpack`); version 1 documents are still read
MANIFEST_NAME = "manifest.json"
SIGNATURE_SUFFIX = ".sig"
SIGNATURE_NAME = MANIFEST_NAME + SIGNATURE_SUFFIX
PARTS_INDEX_SUFFIX = ".parts.json"
_RESERVED_MEMBERS = frozenset({MANIFEST_NAME, SIGNATURE_NAME})
# The tool's own wheels (`bundle --include-tool`) travel as one pseudo-pack of this data type,
# members under tool/: covered by the signature like any file, never installed as data.
TOOL_PACK_ID = "devops-cp-tool"
TOOL_DATA_TYPE = "tool_wheels"
TOOL_MEMBER_DIR = "tool/"
_SHA256 = re.compile(r"[0-9a-f]{64}")  # used with fullmatch: "$" would let a trailing newline through
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# A path that _check_rel_path and the control-character rule accept, in one match: non-empty
# parts between single slashes, none of them '.' or '..', no backslash, no control character.
_PART = r"(?!\.\.?(?:/|\Z))[^/\\\x00-\x1f\x7f]+"
_CANONICAL_PATH = re.compile(f"{_PART}(?:/{_PART})*")
UNPACK_FORMATS = ("tar", "tar.gz", "tar.xz", "tar.zst", "zip")
_PACKAGE_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,98}[A-Za-z0-9])?$")  # PEP 508 names


# --- the models ---------------------------------------------------------------------


@dataclass(frozen=True)
class Unpack:
    """How an archive carried whole becomes files: the recipe's own `extract` settings."""

    format: str  # one of UNPACK_FORMATS
    strip_components: int = 0
    unpacked_size_bytes: int | None = None  # the recipe's estimate: the space check, and the bomb bound


@dataclass(frozen=True, slots=True)  # slots: one per file, 20,000 in a big pack
class FileEntry:
    pack_key: str
    path: str  # relative POSIX path inside the pack's data directory: where the file goes
    size: int
    sha256: str
    member: str  # the archive member that holds the bytes; never decides where they go
    unpack: Unpack | None = None  # an archive: its files go below `path`, a folder the pack owns
    from_host: FromHost | None = None  # a bundle made for one host: kept from its copy, or rebuilt from it ("" member when kept)

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
    offline_steps: list[dict[str, Any]]
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
    for_host: ForHost | None = None  # made for one host: useless to any other (see manifests/fromhost.py)

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


# --- JSON out -----------------------------------------------------------------------


def to_json(obj: BundleManifest | PartsIndex) -> bytes:
    """Deterministic UTF-8 JSON (sorted keys, newline at the end).

    The result is validated by the same rules `parse_*` applies, so the bundler
    can never write a manifest that sideload would refuse.
    """
    if isinstance(obj, BundleManifest):
        doc, check = _manifest_doc(obj), _manifest_from_doc
    elif isinstance(obj, PartsIndex):
        doc, check = _parts_doc(obj), _parts_from_doc
    else:
        raise TypeError(f"to_json takes a BundleManifest or PartsIndex, not {type(obj).__name__}")
    check(doc)
    return (_dumps(doc) + "\n").encode("utf-8")


def _dumps(doc: dict[str, Any]) -> str:
    """Sorted keys and a two-space indent, the `files` list one entry per line.

    json's indent mode runs its pure-Python encoder: for a pack of 20,000 files most of a
    second. Each entry goes through the C encoder instead and is set in place of an empty list.
    """
    options = dict(sort_keys=True, ensure_ascii=False, allow_nan=False)
    files = doc.get("files")
    if not files:
        return json.dumps(doc, indent=2, **options)
    text = json.dumps({**doc, "files": []}, indent=2, **options)
    lines = ",\n    ".join(_file_line(entry) if entry.keys() == _FILE_FIELDS else json.dumps(entry, **options) for entry in files)
    return text.replace('\n  "files": []', f'\n  "files": [\n    {lines}\n  ]', 1)  # the top-level key: nested ones sit deeper


_FILE_FIELDS = frozenset({"pack_key", "path", "size", "sha256", "member"})
# A files[] entry as json.dumps(entry, sort_keys=True, ensure_ascii=False) writes it: the keys in
# sorted order, strings through json's own escaping, the size as json writes an int.
_FILE_LINE = '{"member": %s, "pack_key": %s, "path": %s, "sha256": %s, "size": %d}'


def _file_line(entry: dict[str, Any]) -> str:
    """One validated files[] entry (to_json checks before it writes): json.dumps builds an
    encoder per call, which for 20,000 entries costs more than the lines themselves."""
    return _FILE_LINE % (_json_string(entry["member"]), _json_string(entry["pack_key"]), _json_string(entry["path"]), _json_string(entry["sha256"]), entry["size"])


def _manifest_doc(m: BundleManifest) -> dict[str, Any]:
    return {
        "format_version": m.format_version,
        "bundle_id": m.bundle_id,
        "created": m.created,
        "expires": m.expires,
        "tool_version": m.tool_version,
        "signer_key_id": m.signer_key_id,
        "packs": [
            {
                "key": p.key,
                "id": p.id,
                "label": p.label,
                "data_type": p.data_type,
                "choices": dict(p.choices),
                "update_schedule": p.update_schedule,
                "fetched_at": p.fetched_at,
                "offline_steps": [dict(s) for s in p.offline_steps],
                "source": p.source,
                "checksum_verified": p.checksum_verified,
                "tool_hint": p.tool_hint,
                "hardware": {"gpu_vendor": p.gpu_vendor, "min_vram_mb": p.min_vram_mb},
                **({"python_packages": list(p.python_packages)} if p.python_packages else {}),
            }
            for p in m.packs
        ],
        "files": [
            {"pack_key": f.pack_key, "path": f.path, "size": f.size, "sha256": f.sha256, "member": f.member or None, **unpack_doc(f.unpack),
             **({"from_host": from_host_doc(f.from_host)} if f.from_host is not None else {})}
            for f in m.files
        ],
        **({"for_host": for_host_doc(m.for_host)} if m.for_host is not None else {}),
    }


def unpack_doc(unpack: Unpack | None) -> dict[str, Any]:
    """A file entry's `unpack` field as the manifest writes it ({} for a plain file)."""
    if unpack is None:
        return {}
    return {"unpack": {"format": unpack.format, "strip_components": unpack.strip_components, "unpacked_size_bytes": unpack.unpacked_size_bytes}}


def _parts_doc(index: PartsIndex) -> dict[str, Any]:
    return {
        "format_version": index.format_version,
        "bundle_name": index.bundle_name,
        "parts": [{"name": p.name, "size": p.size, "sha256": p.sha256} for p in index.parts],
        "total_size": index.total_size,
        "signer_key_id": index.signer_key_id,
    }


def sha256sum_lines(entries: Iterable[tuple[str, str]]) -> str:
    """[(name, sha256)] -> '<hex>  <name>\\n' lines that `sha256sum -c` reads."""
    lines = []
    for i, (name, digest) in enumerate(entries):
        where = _Obj("sha256sum", f"[{i}]", {"name": name, "sha256": digest})
        _check_file_name(where, "name", where.text("name"))
        where.sha256("sha256")
        lines.append(f"{digest}  {name}\n")
    return "".join(lines)


# --- JSON in ------------------------------------------------------------------------


def parse_manifest(data: bytes) -> BundleManifest:
    """Strict: refuses duplicate keys, unknown fields, wrong types and unsafe paths."""
    return _manifest_from_doc(_load_json(data, MANIFEST_NAME), release_files=True)


def parse_parts_index(data: bytes) -> PartsIndex:
    return _parts_from_doc(_load_json(data, "parts index"))


class _Obj:
    """Typed reads from one JSON object, naming the document and field in every error."""

    def __init__(self, doc: str, where: str, value: Any):
        self.doc, self.where = doc, where
        if not isinstance(value, dict):
            raise self.fail(None, f"must be a JSON object, got {_json_type(value)}")
        self.value = value

    def name(self, key: str | None) -> str:
        if key is None:
            return self.where or "(top level)"
        return f"{self.where}.{key}" if self.where else key

    def fail(self, key: str | None, problem: str) -> BundleStructureError:
        return BundleStructureError(f"{self.doc}: field '{self.name(key)}': {problem}")

    def only(self, *allowed: str) -> None:
        missing = [k for k in allowed if k not in self.value]
        if missing:
            raise self.fail(missing[0], "missing")
        extra = sorted(set(self.value) - set(allowed))
        if extra:
            raise self.fail(extra[0], "unknown field")

    def get(self, key: str, *types: type, what: str) -> Any:
        value = self.value[key]
        # bool is an int in Python, never in our documents.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise self.fail(key, f"must be {what}, got {_json_type(value)}")
        return value

    def text(self, key: str, *, empty: bool = False) -> str:
        value = self.get(key, str, what="a string")
        if not empty and not value:
            raise self.fail(key, "must not be empty")
        if _CONTROL.search(value):
            raise self.fail(key, "must not contain NUL or control characters")
        return value

    def optional_text(self, key: str) -> str | None:
        return None if self.value[key] is None else self.text(key)

    def integer(self, key: str, *, minimum: int = 0) -> int:
        value = self.get(key, int, what="an integer")
        if value < minimum:
            raise self.fail(key, f"must be at least {minimum}, got {value}")
        return value

    def boolean(self, key: str) -> bool:
        return self.get(key, bool, what="true or false")

    def sha256(self, key: str) -> str:
        value = self.get(key, str, what="a string")
        if not _SHA256.fullmatch(value):
            raise self.fail(key, "must be 64 lowercase hex digits (a sha256)")
        return value

    def key_id(self, key: str) -> str | None:
        value = self.value[key]
        if value is not None and not is_key_id(value):
            raise self.fail(key, "must be null or 64 lowercase hex digits (a key id)")
        return value

    def timestamp(self, key: str) -> datetime:
        text = self.text(key)
        try:
            return parse_timestamp(text)
        except ValueError as exc:
            raise self.fail(key, f"must be an ISO 8601 UTC time such as 2024-05-01T12:00:00Z: {exc}") from None

    def array(self, key: str) -> list[Any]:
        return self.get(key, list, what="an array")

    def child(self, key: str, index: int | None = None) -> _Obj:
        value = self.value[key] if index is None else self.value[key][index]
        return _Obj(self.doc, self.name(key) + ("" if index is None else f"[{index}]"), value)


def _json_type(value: Any) -> str:
    names = {
        dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "an integer", float: "a number",
    }  # fmt: skip
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _load_json(data: bytes, doc: str) -> Any:
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BundleStructureError(f"{doc} is not UTF-8 text: {exc}") from exc
    try:
        return json.loads(text, object_pairs_hook=_refuse_duplicates(doc), parse_constant=_refuse_constant(doc))
    except json.JSONDecodeError as exc:
        raise BundleStructureError(f"{doc} is not valid JSON: {exc}") from exc
    except (RecursionError, ValueError) as exc:  # absurd nesting, integers past Python's digit limit
        raise BundleStructureError(f"{doc} cannot be read as JSON: {type(exc).__name__}: {exc}") from None


def _refuse_duplicates(doc: str):
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                # Two parsers could each pick a different copy: a signature over one meaning.
                raise BundleStructureError(f"{doc}: duplicate key {key!r} in a JSON object")
            result[key] = value
        return result

    return hook


def _refuse_constant(doc: str):
    def hook(name: str) -> Any:
        raise BundleStructureError(f"{doc}: {name} is not valid JSON")

    return hook


def _check_format_version(top: _Obj) -> int:
    if "format_version" not in top.value:
        raise top.fail("format_version", "missing")
    version = top.get("format_version", int, what="an integer")
    if not 1 <= version <= FOR_HOST_VERSION:
        newer = " (made by a newer devops-cp: upgrade this one)" if version > FOR_HOST_VERSION else ""
        raise top.fail("format_version", f"version {version} is not supported, this tool reads versions 1 to {FOR_HOST_VERSION}{newer}")
    return version


def _check_rel_path(obj: _Obj, key: str, path: str) -> None:
    """A relative POSIX path in canonical form: it can only ever name a place below its root."""
    if "\\" in path:
        raise obj.fail(key, f"{path!r}: backslashes are not allowed")
    if path.startswith("/"):
        raise obj.fail(key, f"{path!r}: absolute paths are not allowed")
    for part in path.split("/"):
        if part == "..":
            raise obj.fail(key, f"{path!r}: '..' is not allowed")
        if part in ("", "."):
            raise obj.fail(key, f"{path!r}: empty or '.' path components are not allowed")


def _check_file_name(obj: _Obj, key: str, name: str) -> None:
    if "/" in name or "\\" in name or name in (".", ".."):
        raise obj.fail(key, f"{name!r}: must be a plain file name")


def _manifest_from_doc(doc: Any, *, release_files: bool = False) -> BundleManifest:
    top = _Obj(MANIFEST_NAME, "", doc)
    version = _check_format_version(top)
    top.only("format_version", "bundle_id", "created", "expires", "tool_version", "signer_key_id", "packs", "files", *(["for_host"] if "for_host" in top.value else []))
    created = top.timestamp("created")
    if top.value["expires"] is not None and top.timestamp("expires") <= created:
        raise top.fail("expires", "must be later than 'created'")
    packs = tuple(_pack_from_doc(top.child("packs", i)) for i in range(len(top.array("packs"))))
    files = _files_from_doc(top, packs, release_files)
    _check_packs_and_files(top, packs, files)
    if version < 2 and any(f.unpack for f in files):
        raise top.fail("format_version", "version 1 manifests carry no archives to unpack")
    for_host = for_host_from_doc(top.child("for_host")) if "for_host" in top.value else None
    if for_host is not None and version < FOR_HOST_VERSION:
        raise top.fail("for_host", f"only version {FOR_HOST_VERSION} manifests are made for one host")
    if for_host is None and any(f.from_host for f in files):
        raise top.fail("files", "a file kept or rebuilt from the host's copy needs 'for_host': the host the bundle was made for")
    return BundleManifest(
        format_version=version,
        bundle_id=top.text("bundle_id"),
        created=top.value["created"],
        expires=top.value["expires"],
        tool_version=top.text("tool_version"),
        signer_key_id=top.key_id("signer_key_id"),
        packs=packs,
        files=files,
        for_host=for_host,
    )


def _pack_from_doc(p: _Obj) -> PackEntry:
    p.only(
        "key", "id", "label", "data_type", "choices", "update_schedule", "fetched_at",
        "offline_steps", "source", "checksum_verified", "tool_hint", "hardware",
        *(["python_packages"] if "python_packages" in p.value else []),  # optional: newer than the rest
    )  # fmt: skip
    choices = p.child("choices")
    for name, value in choices.value.items():
        if not name or not isinstance(value, str):
            raise choices.fail(name, f"choices map a name to a string, got {_json_type(value)}")
    steps = p.array("offline_steps")
    for i in range(len(steps)):
        p.child("offline_steps", i)  # each step is an object; its fields are the recipe's business
    p.timestamp("fetched_at")
    hardware = p.child("hardware")
    hardware.only("gpu_vendor", "min_vram_mb")
    python_packages = p.array("python_packages") if "python_packages" in p.value else []
    for i, name in enumerate(python_packages):
        if not isinstance(name, str) or not _PACKAGE_NAME.match(name):
            raise p.fail("python_packages", f"item {i} must be a Python package name, got {name!r}")
    return PackEntry(
        key=p.text("key"),
        id=p.text("id"),
        label=p.text("label", empty=True),
        data_type=p.text("data_type"),
        choices=dict(choices.value),
        update_schedule=p.text("update_schedule"),
        fetched_at=p.value["fetched_at"],
        offline_steps=list(steps),
        source=p.text("source", empty=True),
        checksum_verified=p.boolean("checksum_verified"),
        tool_hint=p.text("tool_hint", empty=True),
        gpu_vendor=hardware.text("gpu_vendor", empty=True),
        min_vram_mb=hardware.integer("min_vram_mb"),
        python_packages=tuple(python_packages),
    )


def _files_from_doc(top: _Obj, packs: tuple[PackEntry, ...], release: bool) -> tuple[FileEntry, ...]:
    """`release`: drop each JSON object once it is read (the document is ours alone), so that the
    parsed JSON and the model are never held whole at once: megabytes with 20,000 files."""
    items = top.array("files")
    pack_keys = {p.key: p.key for p in packs}  # the files of a pack share its key string
    files = []
    for i, item in enumerate(items):
        files.append(_well_formed_file(item, pack_keys) or _file_from_doc(top.child("files", i), pack_keys))
        if release:
            items[i] = None
    return tuple(files)



def _well_formed_file(item: Any, pack_keys: dict[str, str]) -> FileEntry | None:
    """A files[] entry that meets every rule of _file_from_doc, read in one go; None for any other,
    which _file_from_doc then reads field by field to say what is wrong (20,000 entries: a third of a second)."""
    if type(item) is not dict or item.keys() != _FILE_FIELDS:
        return None
    pack_key, path, size, sha256, member = item["pack_key"], item["path"], item["size"], item["sha256"], item["member"]
    if (
        type(pack_key) is str and pack_key in pack_keys  # a pack's key is a valid text already
        and type(path) is str and _CANONICAL_PATH.fullmatch(path)
        and type(member) is str and _CANONICAL_PATH.fullmatch(member) and member not in _RESERVED_MEMBERS
        and type(size) is int and size >= 0
        and type(sha256) is str and _SHA256.fullmatch(sha256)
    ):  # fmt: skip
        return FileEntry(pack_key=pack_keys[pack_key], path=path, size=size, sha256=sha256, member=member)
    return None


def _file_from_doc(f: _Obj, pack_keys: dict[str, str]) -> FileEntry:
    optional = [k for k in ("unpack", "from_host") if k in f.value]
    f.only("pack_key", "path", "size", "sha256", "member", *optional)
    path, size, sha256 = f.text("path"), f.integer("size"), f.sha256("sha256")
    from_host = from_host_from_doc(f.child("from_host"), size, sha256) if "from_host" in f.value else None
    _check_rel_path(f, "path", path)
    if from_host is not None and from_host.kind == KEPT:  # carried by nobody: the host has it
        if f.value["member"] is not None:
            raise f.fail("member", "must be null for a file kept from the host")
        member = ""
    else:
        member = f.text("member")
        _check_rel_path(f, "member", member)
    if member in _RESERVED_MEMBERS:
        raise f.fail("member", f"{member!r} is reserved for the manifest and its signature")
    pack_key = f.text("pack_key")
    unpack = _unpack_from_doc(f.child("unpack")) if "unpack" in f.value else None
    if unpack is not None and from_host is not None:
        raise f.fail("from_host", "an archive to unpack is carried whole")
    return FileEntry(pack_key=pack_keys.get(pack_key, pack_key), path=path, size=size, sha256=sha256, member=member, unpack=unpack, from_host=from_host)


def _unpack_from_doc(u: _Obj) -> Unpack:
    u.only("format", "strip_components", "unpacked_size_bytes")
    if u.value["format"] not in UNPACK_FORMATS:
        raise u.fail("format", f"must be one of {', '.join(UNPACK_FORMATS)}, got {u.value['format']!r}")
    estimate = None if u.value["unpacked_size_bytes"] is None else u.integer("unpacked_size_bytes")
    return Unpack(u.value["format"], u.integer("strip_components"), estimate)


def _check_packs_and_files(top: _Obj, packs: tuple[PackEntry, ...], files: tuple[FileEntry, ...]) -> None:
    keys: set[str] = set()
    for i, pack in enumerate(packs):
        if pack.key in keys:
            raise top.fail(f"packs[{i}].key", f"duplicate pack key {pack.key!r}")
        keys.add(pack.key)
    tool_keys = {p.key for p in packs if p.data_type == TOOL_DATA_TYPE}
    paths: dict[str, set[str]] = {key: set() for key in keys}  # per pack: no (pack, path) tuple per file
    folders_to_unpack: dict[str, set[str]] = {key: set() for key in keys}  # an archive's path is a folder
    members: set[str] = set()
    for i, entry in enumerate(files):
        if entry.pack_key not in keys:
            raise top.fail(f"files[{i}].pack_key", f"{entry.pack_key!r} names no pack in 'packs'")
        in_pack = paths[entry.pack_key]
        if entry.path in in_pack:
            raise top.fail(f"files[{i}].path", f"duplicate path {entry.path!r} in pack {entry.pack_key!r}")
        in_pack.add(entry.path)
        if entry.unpack is not None:
            folders_to_unpack[entry.pack_key].add(entry.path)
        if entry.member in members:
            raise top.fail(f"files[{i}].member", f"duplicate archive member {entry.member!r}")
        if entry.member:  # a kept file has none
            members.add(entry.member)
        _check_tool_member(top, i, entry, tool_keys)
    # 'a' and 'a/b' in one pack: one of them would have to be a file and a directory at once (unless 'a' is an archive's folder).
    for pack_key, in_pack in paths.items():
        unpacked = folders_to_unpack[pack_key]
        for path in in_pack:
            slash = path.find("/")
            while slash != -1:  # every folder above the path, the top one first
                if path[:slash] in in_pack and path[:slash] not in unpacked:
                    raise top.fail("files", f"{path[:slash]!r} in pack {pack_key!r} is a file and also the directory of {path!r}")
                slash = path.find("/", slash + 1)


def _check_tool_member(top: _Obj, index: int, entry: FileEntry, tool_keys: set[str]) -> None:
    """tool/NAME.whl belongs to the tool's pseudo-pack and nothing else does: a data pack cannot pose as wheels."""
    in_tool_dir = entry.member.startswith(TOOL_MEMBER_DIR)
    if (entry.pack_key in tool_keys) != in_tool_dir:
        raise top.fail(f"files[{index}].member", f"{entry.member!r}: only the {TOOL_DATA_TYPE!r} pack has members under {TOOL_MEMBER_DIR}, and all of them are there")
    if in_tool_dir and (entry.member != TOOL_MEMBER_DIR + entry.path or "/" in entry.path or not entry.path.endswith(".whl")):
        raise top.fail(f"files[{index}].member", f"{entry.member!r}: a tool member is {TOOL_MEMBER_DIR}NAME.whl, with NAME.whl as its path")


def _parts_from_doc(doc: Any) -> PartsIndex:
    top = _Obj("parts index", "", doc)
    version = _check_format_version(top)
    top.only("format_version", "bundle_name", "parts", "total_size", "signer_key_id")
    bundle_name = top.text("bundle_name")
    _check_file_name(top, "bundle_name", bundle_name)
    parts = []
    for i in range(len(top.array("parts"))):
        p = top.child("parts", i)
        p.only("name", "size", "sha256")
        expected = part_name(bundle_name, i + 1)
        if p.text("name") != expected:
            raise p.fail("name", f"part {i + 1} must be named {expected!r}, got {p.value['name']!r}")
        parts.append(PartEntry(name=expected, size=p.integer("size", minimum=1), sha256=p.sha256("sha256")))
    if not parts:
        raise top.fail("parts", "must list at least one part")
    total = top.integer("total_size")
    if total != sum(p.size for p in parts):
        raise top.fail("total_size", f"is {total}, but the parts add up to {sum(p.size for p in parts)}")
    return PartsIndex(
        bundle_name=bundle_name, parts=tuple(parts), total_size=total,
        signer_key_id=top.key_id("signer_key_id"), format_version=version,
    )  # fmt: skip


# --- verification: pure -------------------------------------------------------------


def verify_manifest(
    manifest_bytes: bytes,
    signature: bytes | None,
    trusted_keys: Iterable[Ed25519PublicKey],
    *,
    allow_unsigned: bool,
    now: datetime,
    allow_expired: bool,
) -> tuple[BundleManifest, str | None]:
    """Check the signature over the exact bytes, then parse, then apply the policy.

    Returns the manifest and the id of the trusted key that signed it (None
    when unsigned and `allow_unsigned`). No I/O: the caller reads the archive,
    the trust store and the clock.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    signer = _check_signature(manifest_bytes, signature, trusted_keys, allow_unsigned, "bundle", SIGNATURE_NAME)
    manifest = parse_manifest(manifest_bytes)
    _check_claimed_signer(MANIFEST_NAME, manifest.signer_key_id, signer)
    if manifest.expires is not None and not allow_expired:
        expires = parse_timestamp(manifest.expires)
        if expires <= now:
            raise PolicyError(
                f"bundle {manifest.bundle_id} expired at {manifest.expires} (now {format_timestamp(now)})",
                hint="make a fresh bundle, or pass --allow-expired to use this one anyway",
            )
    return manifest, signer


def verify_parts_index(
    index_bytes: bytes,
    signature: bytes | None,
    trusted_keys: Iterable[Ed25519PublicKey],
    *,
    allow_unsigned: bool,
) -> tuple[PartsIndex, str | None]:
    """The parts index is what covers every part with the signature: same rules as the manifest."""
    signer = _check_signature(index_bytes, signature, trusted_keys, allow_unsigned, "parts index", "its .sig file")
    index = parse_parts_index(index_bytes)
    _check_claimed_signer("parts index", index.signer_key_id, signer)
    return index, signer


def _check_signature(
    data: bytes,
    signature: bytes | None,
    trusted_keys: Iterable[Ed25519PublicKey],
    allow_unsigned: bool,
    what: str,
    sig_name: str,
) -> str | None:
    claimed = _peek_signer(data)
    if signature is None:
        if allow_unsigned:
            return None
        stripped = f", although it names signer key {claimed}: its signature may have been removed" if claimed else ""
        hint = "pass --allow-unsigned to use an unsigned bundle anyway"
        if claimed:  # most likely damage or tampering, not a bundle meant to be unsigned
            hint = "get a fresh copy of the bundle; " + hint + ", only if you accept data nobody vouches for"
        raise PolicyError(f"{what} is not signed ({sig_name} is missing){stripped}", hint=hint)
    # A bad signature is never "unsigned": --allow-unsigned does not excuse it.
    return verify_signature(data, signature, trusted_keys, claimed_key_id=claimed)


_SIGNER_FIELD = re.compile(rb'"signer_key_id"\s*:\s*"([0-9a-f]{64})"')


def _peek_signer(data: bytes) -> str | None:
    """The signer the unverified bytes claim, for error messages only; decides nothing.

    A regex rather than a JSON parse, so that nothing reads the document's
    structure before its signature has verified.
    """
    found = _SIGNER_FIELD.findall(data)
    return found[0].decode("ascii") if len(found) == 1 else None


def _check_claimed_signer(doc: str, claimed: str | None, signer: str | None) -> None:
    if signer is not None and claimed != signer:
        names = f"names signer key {claimed}" if claimed else "names no signer key"
        raise SignatureError(
            f"{doc} {names} but was signed by trusted key {signer}",
            hint="the bundle was made inconsistently; make it again",
        )
