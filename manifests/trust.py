"""The trust decision: may this host use this manifest? Read this file to know.

Shaped like python-tuf's `trusted_metadata_set`: bytes, keys and a clock reading in; a
verified, typed manifest or a typed error out. No I/O: the callers read the bundle, the
trust store, the host's catalog and the clock, and nothing they write happens before this
has said yes.

In order, for a manifest:

1. The signature over the exact bytes, before anything parses them (`verify_signature`):
   a raw Ed25519 signature by a key of the trust store. None at all passes only with
   --allow-unsigned; a bad one never does. Exit 3 (unsigned: exit 4).
2. The strict parse (manifests/codec.py): no duplicate key, no unknown field, no wrong
   type, every path canonical and outside the tool's staging area, every offline step
   a well-formed tool command. Exit 3.
3. The document's own rules (`check_manifest`): pack ids, data types and choice names
   are identifiers, choice values plain names; a pack's key is its id and choices, so
   two packs never share an install record; every file belongs to a listed pack, no path
   or member twice, no file that is also a folder, no path of two packs of one data type;
   the tool's wheels only under tool/. Exit 3.
4. The signer the manifest names is the key that signed it; it has not expired
   (--allow-expired). Exit 3 and 4.
5. What this host allows, whoever signed (`check_pack_for_host`): choice values are the
   host recipe's options (or identifiers where the host has no recipe), and offline steps
   run only when the host's own catalog defines the same pack with the same steps and the
   files they use match the host recipe's pins; otherwise the pack is refused unless the
   operator named it with --allow-commands. Exit 4. And no two packs of one bundle claim
   one path once the host has put each data type in its data dir (`check_packs_share_no_path`;
   for an archive's members, the same rule once it is unpacked, before anything is visible). Exit 3.

A parts index gets steps 1, 2 and 4.
"""

from __future__ import annotations

import re
import posixpath
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from manifests.codec import parse_manifest, parse_parts_index
from manifests.errors import BundleStructureError, ChoiceError, PolicyError, SignatureError
from manifests.hardware import Hardware
from manifests.model import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    TOOL_DATA_TYPE,
    TOOL_MEMBER_DIR,
    BundleManifest,
    FileEntry,
    PackEntry,
    PartsIndex,
    format_timestamp,
    parse_timestamp,
)
from manifests.names import IDENTIFIER_RULE, OPTION_VALUE_RULE, is_identifier, is_option_value, pack_key, shared_path
from manifests.plan import resolve
from manifests.signing import SIGNATURE_SIZE, key_id
from manifests.steps import Download, LocalCopy

if TYPE_CHECKING:
    from manifests.catalog import Catalog
    from manifests.recipe import Recipe

__all__ = [
    "check_manifest",
    "check_pack_for_host",
    "check_packs_share_no_path",
    "verify_manifest",
    "verify_parts_index",
    "verify_signature",
]


# --- 1. the signature over the exact bytes ----------------------------------------------------


def verify_signature(
    data: bytes,
    signature: bytes,
    trusted: Iterable[Ed25519PublicKey],
    *,
    claimed_key_id: str | None = None,
) -> str:
    """Return the id of the trusted key whose signature over `data` this is.

    `claimed_key_id` (the signer the manifest names) is only a hint: it orders
    the keys tried and words the error. It never makes a key trusted.
    """
    if len(signature) != SIGNATURE_SIZE:
        raise SignatureError(
            f"malformed signature: {len(signature)} bytes, an Ed25519 signature is {SIGNATURE_SIZE}",
            hint="the .sig file is damaged or is not a raw Ed25519 signature",
        )
    keys = {key_id(k): k for k in trusted}
    order = sorted(keys, key=lambda kid: kid != claimed_key_id)  # the claimed key first
    for kid in order:
        try:
            keys[kid].verify(signature, data)
        except InvalidSignature:
            continue
        return kid
    raise _why_not_verified(keys, claimed_key_id)


def _why_not_verified(keys: dict[str, Ed25519PublicKey], claimed: str | None) -> SignatureError:
    add_hint = "if you trust the signer, run `devops-cp data trust add SIGNER.pub` (or pass --trust SIGNER.pub) and retry"
    if not keys:
        return SignatureError("signature cannot be checked: no trusted keys are configured", hint=add_hint)
    if claimed is not None and claimed not in keys:
        return SignatureError(f"signed by key {claimed}, which is not trusted here ({len(keys)} trusted key(s))", hint=add_hint)
    if claimed is not None:
        return SignatureError(
            f"invalid signature: it does not match the signed data for trusted key {claimed}",
            hint="the data was changed after signing, or the signature belongs to something else; do not use it",
        )
    return SignatureError(
        f"signature does not verify with any of the {len(keys)} trusted key(s): "
        "the signer is unknown, or the data was changed after signing",
        hint=add_hint,
    )


def _check_signature(data: bytes, signature: bytes | None, trusted_keys: Iterable[Ed25519PublicKey], allow_unsigned: bool, what: str, sig_name: str) -> str | None:
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


# --- 2-4. the manifest and the parts index ---------------------------------------------------


def verify_manifest(
    manifest_bytes: bytes,
    signature: bytes | None,
    trusted_keys: Iterable[Ed25519PublicKey],
    *,
    allow_unsigned: bool,
    now: datetime,
    allow_expired: bool,
) -> tuple[BundleManifest, str | None]:
    """Steps 1 to 4: the manifest and the id of the trusted key that signed it (None when
    unsigned and `allow_unsigned`). What a host allows of it is `check_pack_for_host`."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    signer = _check_signature(manifest_bytes, signature, trusted_keys, allow_unsigned, "bundle", SIGNATURE_NAME)
    manifest = parse_manifest(manifest_bytes)
    check_manifest(manifest)
    _check_claimed_signer(MANIFEST_NAME, manifest.signer_key_id, signer)
    if manifest.expires is not None and not allow_expired and parse_timestamp(manifest.expires) <= now:
        raise PolicyError(
            f"bundle {manifest.bundle_id} expired at {manifest.expires} (now {format_timestamp(now)})",
            hint="make a fresh bundle, or pass --allow-expired to use this one anyway",
        )
    return manifest, signer


def verify_parts_index(index_bytes: bytes, signature: bytes | None, trusted_keys: Iterable[Ed25519PublicKey], *, allow_unsigned: bool) -> tuple[PartsIndex, str | None]:
    """The parts index is what covers every part with the signature: same rules as the manifest."""
    signer = _check_signature(index_bytes, signature, trusted_keys, allow_unsigned, "parts index", "its .sig file")
    index = parse_parts_index(index_bytes)
    _check_claimed_signer("parts index", index.signer_key_id, signer)
    return index, signer


def _check_claimed_signer(doc: str, claimed: str | None, signer: str | None) -> None:
    if signer is not None and claimed != signer:
        names = f"names signer key {claimed}" if claimed else "names no signer key"
        raise SignatureError(f"{doc} {names} but was signed by trusted key {signer}", hint="the bundle was made inconsistently; make it again")


def _fail(field: str, problem: str) -> BundleStructureError:
    return BundleStructureError(f"{MANIFEST_NAME}: field '{field}': {problem}", hint="the bundle is damaged or hostile; nothing was installed")


def check_manifest(manifest: BundleManifest) -> None:
    """Step 3: the rules that need the whole document. The bundler runs them too (bundle.to_json)."""
    keys: set[str] = set()
    for i, pack in enumerate(manifest.packs):
        if pack.key in keys:
            raise _fail(f"packs[{i}].key", f"duplicate pack key {pack.key!r}")
        keys.add(pack.key)
        _check_pack_names(i, pack)
    tool_keys = {p.key for p in manifest.packs if p.data_type == TOOL_DATA_TYPE}
    paths: dict[str, set[str]] = {key: set() for key in keys}  # per pack: no (pack, path) tuple per file
    folders_to_unpack: dict[str, set[str]] = {key: set() for key in keys}  # an archive's path is a folder
    members: set[str] = set()
    for i, entry in enumerate(manifest.files):
        if entry.pack_key not in keys:
            raise _fail(f"files[{i}].pack_key", f"{entry.pack_key!r} names no pack in 'packs'")
        in_pack = paths[entry.pack_key]
        if entry.path in in_pack:
            raise _fail(f"files[{i}].path", f"duplicate path {entry.path!r} in pack {entry.pack_key!r}")
        in_pack.add(entry.path)
        if entry.unpack is not None:
            folders_to_unpack[entry.pack_key].add(entry.path)
        if entry.member in members:
            raise _fail(f"files[{i}].member", f"duplicate archive member {entry.member!r}")
        if entry.member:  # a file kept from the host has none
            members.add(entry.member)
        _check_tool_member(i, entry, tool_keys)
    # Two packs of one data type share its data dir on every host (the host checks its own [data_dirs] too).
    check_packs_share_no_path(manifest, {p.key: p.data_type for p in manifest.packs if p.data_type != TOOL_DATA_TYPE})
    # 'a' and 'a/b' in one pack: one of them would have to be a file and a directory at once (unless 'a' is an archive's folder).
    for key, in_pack in paths.items():
        unpacked = folders_to_unpack[key]
        for path in in_pack:
            slash = path.find("/")
            while slash != -1:  # every folder above the path, the top one first
                if path[:slash] in in_pack and path[:slash] not in unpacked:
                    raise _fail("files", f"{path[:slash]!r} in pack {key!r} is a file and also the directory of {path!r}")
                slash = path.find("/", slash + 1)


def _check_pack_names(index: int, pack: PackEntry) -> None:
    """Rule 1: a data type names a folder and a pack key a record file: names, never paths."""
    where = f"packs[{index}]"
    for field in ("id", "data_type"):
        value = getattr(pack, field)
        if not is_identifier(value):
            raise _fail(f"{where}.{field}", f"{value!r} must be {IDENTIFIER_RULE}")
    for name, value in pack.choices.items():
        if not is_identifier(name):
            raise _fail(f"{where}.choices", f"choice name {name!r} must be {IDENTIFIER_RULE}")
        if not is_option_value(value):
            raise _fail(f"{where}.choices.{name}", f"{value!r} must be {OPTION_VALUE_RULE}")
    if pack.data_type != TOOL_DATA_TYPE and pack.key != pack_key(pack.id, pack.choices):
        raise _fail(f"{where}.key", f"{pack.key!r} is not the pack's id and choices ({pack_key(pack.id, pack.choices)!r})")


def _check_tool_member(index: int, entry: FileEntry, tool_keys: set[str]) -> None:
    """tool/NAME.whl belongs to the tool's pseudo-pack and nothing else does: a data pack cannot pose as wheels."""
    in_tool_dir = entry.member.startswith(TOOL_MEMBER_DIR)
    if (entry.pack_key in tool_keys) != in_tool_dir:
        raise _fail(f"files[{index}].member", f"{entry.member!r}: only the {TOOL_DATA_TYPE!r} pack has members under {TOOL_MEMBER_DIR}, and all of them are there")
    if in_tool_dir and (entry.member != TOOL_MEMBER_DIR + entry.path or "/" in entry.path or not entry.path.endswith(".whl")):
        raise _fail(f"files[{index}].member", f"{entry.member!r}: a tool member is {TOOL_MEMBER_DIR}NAME.whl, with NAME.whl as its path")


# --- 5. what this host allows, whoever signed ------------------------------------------------


def check_pack_for_host(pack: PackEntry, files: Iterable[FileEntry], catalog: Catalog, *, allow_commands: bool = False) -> Recipe | None:
    """Code comes from the host, data from the signer (issue 18, rules 2 and 3).

    `pack` and `files` (its entries) come from a verified manifest, `catalog` is this host's
    own (built-in recipes and its catalog_dirs). Returns the host's recipe for the pack (None
    when it has none), or raises PolicyError saying why and what to do, before anything is
    written. `allow_commands`: the operator named this pack with --allow-commands (never with
    --allow-unsigned); its steps then run although the host does not define them, each printed
    first. sideload, install --source BUNDLE and install --from all call this.
    """
    if pack.data_type == TOOL_DATA_TYPE:
        return None  # the tool's wheels: verified, never installed as data, nothing run
    recipe = catalog.recipes.get(pack.id)
    _check_choice_values(pack, recipe)
    if not pack.offline_steps or allow_commands:
        return recipe
    commands = "; ".join(" ".join(step.command) for step in pack.offline_steps)
    if recipe is None:
        raise _commands_refused(pack, f"this host's catalog does not define pack {pack.id!r}, so nothing vouches for its offline steps ({commands})")
    try:
        plan = resolve(recipe, dict(pack.choices), Hardware(), mode="bundle")  # bundle mode: no GPU rule here
    except ChoiceError as exc:
        raise _commands_refused(pack, f"its choices are not options of this host's recipe {recipe.source} ({exc.message})") from exc
    if plan.key != pack.key:
        raise _commands_refused(pack, f"this host's recipe {recipe.source} makes it {plan.key!r}: its choices differ")
    if plan.offline_steps != pack.offline_steps:
        ours = "; ".join(" ".join(step.command) for step in plan.offline_steps) or "none"
        raise _commands_refused(pack, f"its offline steps ({commands}) differ from those of this host's recipe {recipe.source} ({ours})")
    carried = {entry.path: entry.sha256 for entry in files}
    for step in plan.steps:
        if isinstance(step, (Download, LocalCopy)) and step.checksum:
            pinned = step.checksum.split(":", 1)[1]
            if carried.get(step.dest) != pinned:
                found = f"carries sha256:{carried[step.dest]}" if step.dest in carried else "does not carry it"
                raise _commands_refused(pack, f"this host's recipe {recipe.source} pins {step.dest} to sha256:{pinned}, and the bundle {found}")
    return recipe


def check_packs_share_no_path(manifest: BundleManifest, data_dirs: Mapping[str, str]) -> None:
    """Rule 4 inside one bundle: no two of the packs being installed (`data_dirs`: each one's data
    dir, as this host resolves its data type) claim one path. What an archive unpacks is known only
    while unpacking: its folder is checked here, its members by `shared_path` on what was staged."""
    files: dict[str, list[str]] = {key: [] for key in data_dirs}
    folders: dict[str, list[str]] = {key: [] for key in data_dirs}
    for entry in manifest.files:
        if entry.pack_key in data_dirs:
            (files if entry.unpack is None else folders)[entry.pack_key].append(posixpath.join(data_dirs[entry.pack_key], entry.path))
    clash = shared_path(files, folders)
    if clash is not None:
        raise packs_clash(clash)


def packs_clash(clash: str) -> BundleStructureError:
    return BundleStructureError(
        f"two packs of this bundle claim one path: {clash}",
        hint="the bundle is damaged or hostile, or this host's [data_dirs] puts two of its data types in one folder; nothing was installed",
    )


def _check_choice_values(pack: PackEntry, recipe: Recipe | None) -> None:
    """Choice values name records and fill the steps' placeholders: the host's options, or identifiers."""
    for name, value in pack.choices.items():
        if recipe is None:
            if not is_identifier(value):
                raise PolicyError(
                    f"{pack.key}: choice {name}={value!r} is not an identifier ({IDENTIFIER_RULE}) and this host's catalog does not define pack {pack.id!r}",
                    hint="add the pack's recipe to catalog_dirs in the config file, so that its options are known here",
                )
            continue
        choice = next((c for c in recipe.choices if c.id == name), None)
        if choice is None or choice.option(value) is None:
            known = ", ".join(f"{c.id}={'/'.join(o.value for o in c.options)}" for c in recipe.choices) or "none"
            raise PolicyError(
                f"{pack.key}: choice {name}={value!r} is not an option of this host's recipe {recipe.source} (its options: {known})",
                hint="update this host's recipe for the pack (catalog_dirs), or make the bundle with options this host knows",
            )


def _commands_refused(pack: PackEntry, why: str) -> PolicyError:
    return PolicyError(
        f"{pack.key}: refused before anything was written: {why}",
        hint=f"add the pack's recipe to catalog_dirs in the config file, or pass --allow-commands {pack.id} to run its commands anyway (each is printed before it runs)",
    )
