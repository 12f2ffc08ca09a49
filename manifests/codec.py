"""The bundle format's JSON: model -> deterministic bytes, and bytes -> model, strictly.

Parsing refuses duplicate keys, unknown fields, wrong types, non-canonical paths and
anything JSON itself does not define (NaN); each error names the document and the field,
exit 3. The rules that need the whole document (a file's pack exists, no path twice, what a
host may accept) are manifests/trust.py's, which is also the only caller that parses bytes
whose signature it has checked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from json.encoder import encode_basestring as _json_string  # json's escaping with ensure_ascii=False
from typing import Any

from manifests.errors import BundleStructureError
from manifests.fields import SHA256, Fields, json_type
from manifests.model import (
    FOR_HOST_VERSION,
    KEPT,
    MANIFEST_NAME,
    READ_VERSION,
    REBUILT,
    RESERVED_MEMBERS,
    UNPACK_FORMATS,
    BundleManifest,
    FileEntry,
    ForHost,
    FromHost,
    PackEntry,
    PartEntry,
    PartsIndex,
    Unpack,
    part_name,
    parse_timestamp,
)
from manifests.names import is_relative_path, relative_path_problem
from manifests.signing import is_key_id
from manifests.steps import ToolCommand, parse_step, step_doc

__all__ = ["parse_manifest", "parse_parts_index", "sha256sum_lines", "to_json", "unpack_doc"]

_PACKAGE_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,98}[A-Za-z0-9])?$")  # PEP 508 names


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
                "offline_steps": [step_doc(s) for s in p.offline_steps],
                "source": p.source,
                "checksum_verified": p.checksum_verified,
                "tool_hint": p.tool_hint,
                "hardware": {"gpu_vendor": p.gpu_vendor, "min_vram_mb": p.min_vram_mb},
                **({"python_packages": list(p.python_packages)} if p.python_packages else {}),
            }
            for p in m.packs
        ],
        "files": [
            {"pack_key": f.pack_key, "path": f.path, "size": f.size, "sha256": f.sha256, "member": f.member or None, **unpack_doc(f.unpack), **_from_host_doc(f.from_host)}
            for f in m.files
        ],
        **({"for_host": {"name": m.for_host.name, "export_id": m.for_host.export_id, "exported_at": m.for_host.exported_at}} if m.for_host else {}),
    }


def _from_host_doc(value: FromHost | None) -> dict[str, Any]:
    if value is None:
        return {}
    if value.kind == KEPT:
        return {"from_host": {"kind": KEPT}}
    return {"from_host": {
        "kind": REBUILT, "base_size": value.base_size, "base_sha256": value.base_sha256, "carried_size": value.carried_size,
        "carried_sha256": value.carried_sha256, "chunks": value.chunks, "carried_chunks": value.carried_chunks,
    }}  # fmt: skip


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


def _Obj(doc: str, where: str, value: Any) -> Fields:
    """A reader of one object of a bundle document: what it refuses is bad data (exit 3)."""
    return Fields(doc, where, value, BundleStructureError)


def _key_id(obj: Fields, key: str) -> str | None:
    value = obj.value[key]
    if value is not None and not is_key_id(value):
        raise obj.fail(key, "must be null or 64 lowercase hex digits (a key id)")
    return value


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


def _check_format_version(top: Fields) -> int:
    if "format_version" not in top.value:
        raise top.fail("format_version", "missing")
    version = top.get("format_version", int, what="an integer")
    if not 1 <= version <= READ_VERSION:
        newer = " (made by a newer devops-cp: upgrade this one)" if version > READ_VERSION else ""
        raise top.fail("format_version", f"version {version} is not supported, this tool reads versions 1 to {READ_VERSION}{newer}")
    return version


def _check_rel_path(obj: Fields, key: str, path: str) -> None:
    """A relative POSIX path in canonical form: it can only ever name a place below its root."""
    problem = relative_path_problem(path)
    if problem is not None:
        raise obj.fail(key, problem)


def _check_file_name(obj: Fields, key: str, name: str) -> None:
    if "/" in name or "\\" in name or name in (".", ".."):
        raise obj.fail(key, f"{name!r}: must be a plain file name")


def _manifest_from_doc(doc: Any, *, release_files: bool = False) -> BundleManifest:
    top = _Obj(MANIFEST_NAME, "", doc)
    version = _check_format_version(top)
    top.only("format_version", "bundle_id", "created", "expires", "tool_version", "signer_key_id", "packs", "files", *(["for_host"] if "for_host" in top.value else []))
    created = top.timestamp("created", parse_timestamp)
    if top.value["expires"] is not None and top.timestamp("expires", parse_timestamp) <= created:
        raise top.fail("expires", "must be later than 'created'")
    packs = tuple(_pack_from_doc(top.child("packs", i)) for i in range(len(top.array("packs"))))
    files = _files_from_doc(top, packs, release_files)
    if version < 2 and any(f.unpack for f in files):
        raise top.fail("format_version", "version 1 manifests carry no archives to unpack")
    for_host = _for_host_from_doc(top.child("for_host")) if "for_host" in top.value else None
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
        signer_key_id=_key_id(top, "signer_key_id"),
        packs=packs,
        files=files,
        for_host=for_host,
    )


def _pack_from_doc(p: Fields) -> PackEntry:
    p.only(
        "key", "id", "label", "data_type", "choices", "update_schedule", "fetched_at",
        "offline_steps", "source", "checksum_verified", "tool_hint", "hardware",
        *(["python_packages"] if "python_packages" in p.value else []),  # optional: newer than the rest
    )  # fmt: skip
    choices = p.child("choices")
    for name, value in choices.value.items():
        if not name or not isinstance(value, str):
            raise choices.fail(name, f"choices map a name to a string, got {json_type(value)}")
    steps = tuple(_offline_step(p, i, data) for i, data in enumerate(p.array("offline_steps")))
    p.timestamp("fetched_at", parse_timestamp)
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
        offline_steps=steps,
        source=p.text("source", empty=True),
        checksum_verified=p.boolean("checksum_verified"),
        tool_hint=p.text("tool_hint", empty=True),
        gpu_vendor=hardware.text("gpu_vendor", empty=True),
        min_vram_mb=hardware.integer("min_vram_mb"),
        python_packages=tuple(python_packages),
    )


def _offline_step(p: Fields, index: int, data: Any) -> ToolCommand:
    """The recipes' own step parser, failing as a manifest fails; only programs run offline."""
    where = p.name("offline_steps") + f"[{index}]"
    step = parse_step(data, where, lambda field, problem: BundleStructureError(f"{p.doc}: field '{field}': {problem}"))
    if not isinstance(step, ToolCommand):
        raise BundleStructureError(f"{p.doc}: field '{where}.type': an offline step runs a program: only tool_command, got {step.type!r}")
    for path in step.produces:
        problem = relative_path_problem(path)
        if problem is not None:
            raise BundleStructureError(f"{p.doc}: field '{where}.produces': {problem}")
    return step


def _files_from_doc(top: Fields, packs: tuple[PackEntry, ...], release: bool) -> tuple[FileEntry, ...]:
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
        and type(path) is str and is_relative_path(path)
        and type(member) is str and is_relative_path(member) and member not in RESERVED_MEMBERS
        and type(size) is int and size >= 0
        and type(sha256) is str and SHA256.fullmatch(sha256)
    ):  # fmt: skip
        return FileEntry(pack_key=pack_keys[pack_key], path=path, size=size, sha256=sha256, member=member)
    return None


def _file_from_doc(f: Fields, pack_keys: dict[str, str]) -> FileEntry:
    f.only("pack_key", "path", "size", "sha256", "member", *[k for k in ("unpack", "from_host") if k in f.value])
    path, size, sha256 = f.text("path"), f.integer("size"), f.sha256("sha256")
    from_host = _from_host_from_doc(f.child("from_host"), size, sha256) if "from_host" in f.value else None
    _check_rel_path(f, "path", path)
    if from_host is not None and from_host.kind == KEPT:  # carried by nobody: the host has it
        if f.value["member"] is not None:
            raise f.fail("member", "must be null for a file kept from the host")
        member = ""
    else:
        member = f.text("member")
        _check_rel_path(f, "member", member)
    if member in RESERVED_MEMBERS:
        raise f.fail("member", f"{member!r} is reserved for the manifest and its signature")
    pack_key = f.text("pack_key")
    unpack = _unpack_from_doc(f.child("unpack")) if "unpack" in f.value else None
    if unpack is not None and from_host is not None:
        raise f.fail("from_host", "an archive to unpack is carried whole")
    return FileEntry(pack_key=pack_keys.get(pack_key, pack_key), path=path, size=size, sha256=sha256, member=member, unpack=unpack, from_host=from_host)


def _from_host_from_doc(h: Fields, size: int, sha256: str) -> FromHost:
    kind = h.text("kind")
    if kind == KEPT:
        h.only("kind")
        return FromHost(KEPT, size, sha256)
    if kind != REBUILT:
        raise h.fail("kind", f"must be {KEPT!r} or {REBUILT!r}, got {kind!r}")
    h.only("kind", "base_size", "base_sha256", "carried_size", "carried_sha256", "chunks", "carried_chunks")
    chunks, carried_chunks = h.integer("chunks", minimum=1), h.integer("carried_chunks")
    if carried_chunks > chunks:
        raise h.fail("carried_chunks", f"is more than the file's {chunks} chunks")
    return FromHost(REBUILT, h.integer("base_size"), h.sha256("base_sha256"), h.integer("carried_size"), h.sha256("carried_sha256"), chunks, carried_chunks)


def _for_host_from_doc(h: Fields) -> ForHost:
    h.only("name", "export_id", "exported_at")
    return ForHost(h.text("name"), h.text("export_id"), h.text("exported_at"))


def _unpack_from_doc(u: Fields) -> Unpack:
    u.only("format", "strip_components", "unpacked_size_bytes")
    if u.value["format"] not in UNPACK_FORMATS:
        raise u.fail("format", f"must be one of {', '.join(UNPACK_FORMATS)}, got {u.value['format']!r}")
    estimate = None if u.value["unpacked_size_bytes"] is None else u.integer("unpacked_size_bytes")
    return Unpack(u.value["format"], u.integer("strip_components"), estimate)


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
        signer_key_id=_key_id(top, "signer_key_id"), format_version=version,
    )  # fmt: skip
