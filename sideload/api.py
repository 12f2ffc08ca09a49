"""inspect, verify and sideload: the air-gapped side.

The signature is checked against the trusted keys before any payload byte is read.
Every member is streamed into a staging file beside its destination, hashed as it
is written (an archive carried whole is unpacked there by the same extraction a
direct install uses, hashed as it is read); packs are committed only after the
whole bundle checked out, so nothing is installed from anything that fails verification.
"""

from __future__ import annotations

import functools
import json
import os
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from executor import consumers, extract
from executor import steps as step_types
from executor.config import config_dir
from executor.engine import Engine, Outcome, PackIdentity, missing_dirs, remove_if_empty
from executor.keys import TrustStore, check_strict_modes, read_public_key_file
from executor.events import Listener, Meter, Notice, ignore
from executor.inplace import InPlaceFinder
from executor.preflight import check_space_for, check_tools, existing_parent
from executor.pip_uninstall import PYTHON_KEY
from executor.rebuild import check_host_file, rebuild
from executor.store import BUNDLE_MANIFEST_KEY, parse_iso
from executor.transfer import SMALL_FILE, Copy, HashingReader, closing_output, copy_file, file_chunks, small_file_writer
from executor.txn import PackTransaction, tidy_staging
from manifests.bundle import TOOL_DATA_TYPE, BundleManifest, FileEntry, PackEntry, parse_manifest, parse_parts_index, unpack_doc, verify_manifest
from manifests.errors import DataPackError, HardwareRequirementError, Interrupted, LengthError, NoSpaceError, NotWritableError, PolicyError, SignatureError, UnsafeArchiveError, UsageError
from manifests.catalog import Catalog, load_catalog
from manifests.hardware import Hardware, gpu_fit
from manifests.names import shared_path
from manifests.trust import check_pack_for_host, check_packs_share_no_path, packs_clash
from sideload.reader import BundleReader, locate, read_parts_index


@dataclass(frozen=True)
class TrustOptions:
    trust_files: tuple[Path, ...] = ()
    allow_unsigned: bool = False
    allow_expired: bool = False
    bundle_sha256: str | None = None  # install --source BUNDLE --checksum: the archive file's sha256, checked as it is read


def trusted_keys(trust_files=()) -> list:
    """This host's trust store (config dir/trusted-keys) plus any --trust FILE.pub."""
    keys = TrustStore.in_config_dir(config_dir()).keys()
    keys.extend(read_public_key_file(Path(path)) for path in trust_files)  # as strictly as the store's own
    return keys


def _open(path: Path, keys, options: TrustOptions) -> BundleReader:
    location = locate(path)
    if location.split and options.bundle_sha256:
        raise UsageError(
            f"{location.name} is split into parts: one --checksum cannot name it",
            hint="leave --checksum out: every part is checked against the signed parts index (or run `sha256sum -c` on its .sha256 list first)",
        )
    index = read_parts_index(location, keys, options.allow_unsigned) if location.split else None
    return BundleReader(location, index, sha256=options.bundle_sha256)


def inspect_bundle(path: Path, trust_files=()) -> dict:
    """Reads only the manifest and its signature; reports, never refuses on trust."""
    keys = trusted_keys(trust_files)
    location = locate(path)
    # Inspect reports on trust and refuses nothing: the index is parsed, its signature checked by verify/sideload.
    index = parse_parts_index(location.index_path.read_bytes()) if location.split else None
    with BundleReader(location, index) as reader:
        manifest_bytes, signature = reader.read_header()
    manifest = parse_manifest(manifest_bytes)
    try:
        signer = verify_manifest(manifest_bytes, signature, keys, allow_unsigned=False, now=datetime.now(timezone.utc), allow_expired=True)[1]
        trust = {"signed": True, "trusted": True, "verified_by": signer}
    except SignatureError as exc:
        trust = {"signed": True, "trusted": False, "why": exc.message}
    except PolicyError as exc:
        trust = {"signed": False, "trusted": False, "why": exc.message}
    return {
        "bundle": str(path),
        "bundle_id": manifest.bundle_id,
        "created": manifest.created,
        "expires": manifest.expires,
        "tool_version": manifest.tool_version,
        "signer_key_id": manifest.signer_key_id,
        **trust,
        "split": location.split,
        "parts": [p.name for p in index.parts] if index else [location.parts[0].name],
        "total_size": manifest.total_size,
        "format_version": manifest.format_version,
        "for_host": _for_host_doc(manifest),
        "carried_bytes": manifest.carried_size,  # the payload this bundle holds; total_size: what a full bundle would hold
        "packs": [
            {
                "key": p.key, "id": p.id, "label": p.label, "data_type": p.data_type, "choices": p.choices, "fetched_at": p.fetched_at,
                "files": len(manifest.files_for(p.key)), "size": sum(f.size for f in manifest.files_for(p.key)),
                "archives_to_unpack": sum(1 for f in manifest.files_for(p.key) if f.unpack),
                **_deliveries(manifest.files_for(p.key)),
            }  # fmt: skip
            for p in manifest.packs
        ],
        "files": [
            {"pack": f.pack_key, "path": f.path, "size": f.size, "sha256": f.sha256, "delivery": f.delivery, "carried": f.member_size, **unpack_doc(f.unpack)}
            for f in manifest.files
        ],
    }


def _for_host_doc(manifest: BundleManifest) -> dict | None:
    host = manifest.for_host
    return None if host is None else {"name": host.name, "export_id": host.export_id, "exported_at": host.exported_at}


def _deliveries(files: tuple[FileEntry, ...]) -> dict:
    """How many files are kept from the host, rebuilt from its chunks, or carried whole."""
    return {kind: sum(1 for f in files if f.delivery == kind) for kind in ("kept", "rebuilt", "whole")}


def _read_verified_header(reader: BundleReader, keys, options: TrustOptions, *, keep: list | None = None) -> tuple[BundleManifest, str | None]:
    """`keep`: receives the manifest's exact bytes and its signature, to be kept with the install records."""
    manifest_bytes, signature = reader.read_header()
    verified = verify_manifest(
        manifest_bytes, signature, keys, allow_unsigned=options.allow_unsigned, now=datetime.now(timezone.utc), allow_expired=options.allow_expired
    )
    if keep is not None:
        keep[:] = [manifest_bytes, signature]
    return verified


def verify_bundle(path: Path, options: TrustOptions = TrustOptions(), listener: Listener = ignore) -> tuple[BundleManifest, str | None]:
    """The full check (signature, every member's length and hash, nothing extra, nothing missing;
    a tar carried whole also walked with the rules its unpacking will apply); writes nothing."""
    keys = trusted_keys(options.trust_files)
    with _open(path, keys, options) as reader:
        manifest, signer = _read_verified_header(reader, keys, options)
        meter = Meter(listener, "verify", 0, Path(path).name, manifest.carried_size)
        done = 0
        for entry, source in reader.payload(manifest):
            if entry.unpack is not None and entry.unpack.format != "zip":  # a zip is read from its end: hashed only
                _read_archive(entry, source, _Progress(meter, done), functools.partial(_walk, unpack=entry.unpack, name=entry.member))
            else:  # a rebuilt file's member (recipe and carried chunks) is checked here; the host's chunks only on the host
                _check_member(entry, file_chunks(source, entry.member_size))
            done += entry.member_size
            meter.update(done)
        reader.finish()
        meter.done(done)
    return manifest, signer


@dataclass
class SideloadRequest:
    path: Path
    trust: TrustOptions = TrustOptions()
    packs: tuple[str, ...] = ()  # pack ids or keys; empty: all
    allow_downgrade: bool = False
    force: bool = False  # install options whose GPU requirement is not met
    dry_run: bool = False
    hardware: Hardware | None = None
    warnings: list[str] = field(default_factory=list)
    # Packs (ids or keys) whose offline steps may run although this host's catalog does not
    # define them (--allow-commands); never with allow_unsigned, never from the web panel.
    allow_commands: tuple[str, ...] = ()
    catalog: Catalog | None = None  # this host's own; loaded from the config when None


def _select(manifest: BundleManifest, wanted: tuple[str, ...]) -> list[PackEntry]:
    # The tool's own wheels (--include-tool) are verified with the rest, never installed as data: pip installs them.
    tool = [w for w in wanted if any(w in (p.id, p.key) and p.data_type == TOOL_DATA_TYPE for p in manifest.packs)]
    if tool:
        raise UsageError(f"{tool[0]!r} holds this tool's wheels, not data", hint="install them with pip: see `devops-cp data bootstrap-script` and the README's air-gapped section")
    packs = [p for p in manifest.packs if p.data_type != TOOL_DATA_TYPE]
    if not wanted:
        return packs
    chosen = [p for p in packs if p.id in wanted or p.key in wanted]
    unknown = [w for w in wanted if not any(w in (p.id, p.key) for p in packs)]
    if unknown:
        raise UsageError(f"the bundle has no pack {unknown[0]!r}", hint="it holds: " + ", ".join(p.key for p in packs))
    return chosen


def _check_downgrade(engine: Engine, pack: PackEntry, request: SideloadRequest) -> None:
    """Checked before anything is read, and again under the commit lock: an install of newer data
    may have been committed while this bundle was staged."""
    installed = engine.store.read_record(pack.key)
    if installed and parse_iso(installed.fetched_at) > parse_iso(pack.fetched_at) and not request.allow_downgrade:
        raise PolicyError(
            f"{pack.key}: the bundle's data (fetched {pack.fetched_at}) is older than what is installed (fetched {installed.fetched_at})",
            hint="pass --allow-downgrade to install the older data anyway",
        )


def check_policy(engine: Engine, pack: PackEntry, request: SideloadRequest) -> None:
    """The host's own rules for one pack: no downgrade unless asked, and the GPU rule."""
    _check_downgrade(engine, pack, request)
    fit = gpu_fit(request.hardware or Hardware(), pack.gpu_vendor, pack.min_vram_mb)
    if fit.missing_gpu:
        why = f"{pack.key} {fit.missing_gpu}"
        if not request.force:
            raise HardwareRequirementError(why, hint="pass --force to install it anyway")
        request.warnings.append(why + "; installing anyway because of --force")
    if fit.low_vram:
        request.warnings.append(f"{pack.key} {fit.low_vram}")


def _check_offline_needs(engine: Engine, pack: PackEntry) -> None:
    """The offline steps' programs and `{python}`'s packages (spacy for a spaCy wheel), before anything is placed."""
    check_tools(sorted({s.command[0] for s in pack.offline_steps if not s.command[0].startswith("{")}), f"{pack.key} (its offline steps)")
    step_types.check_python_packages(engine.python, pack.python_packages, pack.key)


def sideload_bundle(engine: Engine, request: SideloadRequest) -> list[Outcome]:
    keys = trusted_keys(request.trust.trust_files)
    header: list = []
    with _open(request.path, keys, request.trust) as reader:
        manifest, signer = _read_verified_header(reader, keys, request.trust, keep=header)
        selected = _select(manifest, request.packs)
        commands_allowed = check_code_from_host(engine, manifest, selected, request)
        data_dirs = {p.key: engine.store.data_dir(p.data_type) for p in selected}
        check_packs_share_no_path(manifest, {key: str(d) for key, d in data_dirs.items()})
        for pack in selected:
            check_policy(engine, pack, request)
            _check_offline_needs(engine, pack)
        current = _check_host_files(engine, manifest, selected, data_dirs)  # a bundle made for this host: what it builds on is here, unchanged
        needs = {d: 0 for d in data_dirs.values()}
        for pack in selected:
            needs[data_dirs[pack.key]] += sum(_space_needed(f) for f in manifest.files_for(pack.key))
        made = missing_dirs(needs)  # removed again below unless something was installed there
        held = [manifest]  # handed over whole: _install_selected frees it before the commit
        del manifest
        try:
            outcomes = _install_selected(engine, reader, held, request, selected, data_dirs, needs, current, commands_allowed)
            if any(o.record is not None and o.record.source.startswith("bundle:") for o in outcomes):  # kept with the records it describes
                engine.store.keep_bundle_manifest(json.loads(header[0])["bundle_id"], *header)
            return outcomes
        finally:
            remove_if_empty(made)


def _install_selected(engine, reader, held: list[BundleManifest], request, selected, data_dirs, needs, current, commands_allowed) -> list[Outcome]:
    manifest = held.pop()
    for directory in needs:
        _check_writable(engine, directory, request.dry_run)
    check_space_for(needs)
    if request.dry_run:
        return [Outcome(p.key, notes=[_dry_run_note(manifest.files_for(p.key), data_dirs[p.key])]) for p in selected]
    say = engine.say_waiting("sideload")
    try:
        with engine.store.pack_locked({p.key: data_dirs[p.key] for p in selected}, on_wait=say), ExitStack() as stack:
            for directory in sorted(set(data_dirs.values())):
                stack.enter_context(engine.store.staging(directory))
            txns = {p.key: stack.enter_context(PackTransaction(engine.store, data_dirs[p.key], p.key, writes=engine.writes)) for p in selected}
            records = engine.store.records()
            finders = {p.key: InPlaceFinder(data_dirs[p.key], p.key, engine.store.read_record(p.key), records) for p in selected}
            _stream_payload(engine, reader, manifest, txns, current, finders)
            reader.finish()  # trailing data and every part's hash, before anything becomes visible
            _check_staged_paths(txns)
            for key, txn in txns.items():
                txn.keep_unchanged(finders[key])  # an archive's files that the installed version has already, as they are
            bundle_id, created = manifest.bundle_id, manifest.created
            del manifest  # its file list (megabytes with 20,000 files) is not needed to commit: free it first
            with engine.store.locked(sorted(set(data_dirs.values())), on_wait=say):
                for directory in sorted(set(data_dirs.values())):
                    engine.recover(directory)
                for pack in selected:
                    _check_downgrade(engine, pack, request)
                return [_commit_or_stop(engine, bundle_id, created, pack, txns[pack.key], request, commands_allowed[pack.key]) for pack in selected]
    finally:
        for directory in set(data_dirs.values()):
            tidy_staging(engine.store, directory)


def _check_staged_paths(txns: dict[str, PackTransaction]) -> None:
    """Rule 4 for what archives unpacked (their members are known only now): no path of two packs."""
    if len(txns) > 1:
        clash = shared_path({key: [os.path.join(txn.data_dir, rel) for rel in txn.files] for key, txn in txns.items()})
        if clash is not None:
            raise packs_clash(clash)


def _commit_or_stop(engine, bundle_id, created, pack, txn, request, operator_allowed: bool) -> Outcome:
    """Ctrl-C between two packs' commits: the packs committed are reported, the rest are not committed."""
    try:
        return _commit(engine, bundle_id, created, pack, txn, request, operator_allowed)
    except Interrupted as exc:
        return Outcome(pack.key, error=exc)


def _check_member(entry: FileEntry, chunks) -> None:
    """A member's bytes against its manifest entry: length and sha256, nothing written."""
    Copy(None, what=entry.member, limit=entry.member_size).feed(chunks).check(entry.member_sha256, entry.member_size)


def _check_host_files(engine: Engine, manifest: BundleManifest, selected: list[PackEntry], data_dirs: dict[str, Path]) -> set[str]:
    """Before anything is written: every file a bundle made for this host keeps or rebuilds from is
    here and is the file the host exported (its size and sha256); exit 4 naming the pack and file otherwise.
    Returns the members of rebuilt files that are the new version already (the update was applied before)."""
    needed = [(pack, f) for pack in selected for f in manifest.files_for(pack.key) if f.from_host is not None]
    current: set[str] = set()
    if not needed:
        return current
    meter = Meter(engine.listener, "sideload", 0, "files this update builds on", sum(f.from_host.base_size for _, f in needed))
    done = 0
    for pack, f in needed:
        found = check_host_file(data_dirs[pack.key] / f.path, f"{pack.key}: {f.path}", _Progress(meter, done), (f.from_host.base_size, f.from_host.base_sha256), (f.size, f.sha256))
        if found == 1 and f.delivery == "rebuilt":
            current.add(f.member)
        done += f.from_host.base_size
    meter.done(done)
    return current


def _space_needed(entry: FileEntry) -> int:
    """An archive needs room for what it unpacks to (the recipe's estimate), a zip also for itself (it is staged first);
    a rebuilt file room for itself, a kept one none (it is linked)."""
    if entry.from_host is not None:
        return entry.size if entry.delivery == "rebuilt" else 0
    if entry.unpack is None:
        return entry.size
    return (entry.unpack.unpacked_size_bytes or entry.size) + (entry.size if entry.unpack.format == "zip" else 0)


def _dry_run_note(files: tuple[FileEntry, ...], data_dir: Path) -> str:
    archives = sum(1 for f in files if f.unpack)
    unpacked = f" and unpack {archives} archive(s)" if archives else ""
    return f"would install {len(files) - archives} file(s){unpacked} into {data_dir}"


def _check_writable(engine: Engine, directory: Path, dry_run: bool) -> None:
    """A dry run checks without creating the data directory or writing a probe into it."""
    if not dry_run:
        engine.store.ensure_writable(directory)
        return
    parent = existing_parent(directory)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise NotWritableError(str(directory), f"{parent} is not writable")


def _stream_payload(
    engine: Engine, reader: BundleReader, manifest: BundleManifest, txns: dict[str, PackTransaction], current: set[str] = frozenset(), finders: dict[str, InPlaceFinder] | None = None
) -> None:
    """`current`: members of rebuilt files the host has in their new version already: checked, then kept.
    `finders`: per pack, files already in its data dir with the member's sha256 (executor/inplace.py):
    the member is checked, not copied out, and the file stays."""
    finders = finders or {}
    meter = Meter(engine.listener, "sideload", 0, f"bundle {manifest.bundle_id[:12]}", manifest.total_size)
    data_types = {p.key: p.data_type for p in manifest.packs}
    done, writes = 0, engine.writes
    try:
        with small_file_writer(writes.plain) as small_files:
            for entry in manifest.files:
                if entry.delivery == "kept" and entry.pack_key in txns:
                    _keep(txns[entry.pack_key], entry)
                    done += entry.size
            for entry, source in reader.payload(manifest):
                txn = txns.get(entry.pack_key)
                if txn is None:  # a pack not chosen: still verified, written nowhere
                    _check_member(entry, file_chunks(source, entry.member_size))
                elif entry.member in current:
                    _check_member(entry, file_chunks(source, entry.member_size))
                    _keep(txn, entry)
                elif entry.unpack is None and (kept := _in_place(finders.get(entry.pack_key), entry)) is not None:
                    _check_member(entry, file_chunks(source, entry.member_size))  # verified with the rest, not copied out
                    txn.keep_in_place(kept)
                    if note := finders[entry.pack_key].adoption_note(kept):
                        engine.listener(Notice(entry.pack_key, "info", note))
                elif entry.from_host is not None:  # rebuilt from the host's old file and the carried chunks
                    hashed = HashingReader(source, what=entry.member)
                    h = entry.from_host
                    copy = rebuild(txn.path_for(entry.path), txn.data_dir / entry.path, hashed, size=entry.size, sha256=entry.sha256, base_size=h.base_size, carried_size=h.carried_size, what=f"{entry.pack_key}: {entry.path}", plain=txn.writes.plain)
                    hashed.drain().check(h.carried_sha256, h.carried_size)
                    txn.add(entry.path, copy.done, copy.sha256)
                elif entry.unpack is not None:
                    _unpack(entry, source, txn, _Progress(meter, done), keep_zip=consumers.keeps_zip_beside(data_types[entry.pack_key], entry.unpack.format))
                elif entry.size <= SMALL_FILE:  # read whole, checked, then created by the small-file writer
                    data = source.read(entry.size)
                    _check_member(entry, (data,))
                    small_files.write(txn.path_for(entry.path), data)
                    txn.add(entry.path, entry.size, entry.sha256)
                else:
                    with closing_output(open(txn.path_for(entry.path), "wb"), reserve=entry.size, plain=writes.plain) as out:
                        copy = Copy(out, what=entry.member, limit=entry.size, writeback=writes.durable, plain=writes.plain).feed(file_chunks(source, entry.size))
                    copy.check(entry.sha256, entry.size)
                    txn.add(entry.path, copy.done, copy.sha256)
                done += entry.size
                meter.update(done)
    except NoSpaceError as exc:  # name what the update needs in that data dir, not one file
        data_dir = next((t.data_dir for t in txns.values() if str(t.data_dir) == exc.where), None)
        if data_dir is None:
            raise
        needed = sum(_space_needed(f) for f in manifest.files if f.pack_key in txns and txns[f.pack_key].data_dir == data_dir)
        raise NoSpaceError(str(data_dir), max(needed, exc.needed), exc.free) from exc  # an archive without an estimate: what it unpacked to
    meter.done(done)


def _in_place(finder: InPlaceFinder | None, entry: FileEntry):
    """A file of the bundle that the data dir has already, as it is (executor/inplace.py)."""
    return None if finder is None else finder.find(entry.path, entry.sha256, entry.size)


def _keep(txn: PackTransaction, entry: FileEntry) -> None:
    """A file the new version shares with the installed one: linked into the staging area (checked
    by _check_host_files), so the swap moves it with the rest and nothing is copied."""
    staged = txn.path_for(entry.path)
    try:
        os.link(txn.data_dir / entry.path, staged)
    except OSError:  # a filesystem without hard links
        with open(txn.data_dir / entry.path, "rb") as old:
            copy_file(old, Path(staged), what=entry.path, size=entry.size, limit=entry.size, plain=txn.writes.plain).check(entry.sha256, entry.size)
    txn.add(entry.path, entry.size, entry.sha256)


class _Progress:
    """One member's progress, reported as bytes of the whole bundle."""

    def __init__(self, meter: Meter, before: int):
        self.meter, self.before = meter, before

    def update(self, done: int, force: bool = False) -> None:
        self.meter.update(self.before + done, force)


def _unpack(entry: FileEntry, source, txn: PackTransaction, progress: _Progress, *, keep_zip: bool = False) -> None:
    """An archive carried whole, unpacked below `entry.path` by a direct install's own extraction.

    A tar is unpacked as it streams, hashed on the way; the hash is checked before the pack can be
    committed, so files from an altered archive never become visible. A zip is read from its end:
    it is staged whole (and checked) first.
    """
    unpack = entry.unpack
    bound = extract.unpack_bound(unpack.unpacked_size_bytes, entry.size)
    if unpack.format == "zip":
        staged = txn.root / "incoming" / entry.member.rpartition("/")[2]
        copy_file(source, staged, what=entry.member, size=entry.size, limit=entry.size, meter=progress, plain=txn.writes.plain).check(entry.sha256, entry.size)
        extract.extract(staged, "zip", txn, entry.path, strip=unpack.strip_components, max_total=bound)
        if keep_zip:  # nltk: the zip beside its folder, as nltk.download() leaves it
            consumers.keep_zip_beside(txn, staged, entry.path, entry.size, entry.sha256)
        else:
            staged.unlink()
        return
    _read_archive(entry, source, progress, lambda hashed: extract.extract_tar_stream(hashed, unpack.format, txn, entry.path, strip=unpack.strip_components, max_total=bound, name=entry.member))


def _walk(hashed, unpack, name: str) -> None:
    """Every member of a tar checked as unpacking would check it; nothing written."""
    for _ in extract.iter_tar_stream(hashed, unpack.format, strip=unpack.strip_components, max_total=extract.unpack_bound(unpack.unpacked_size_bytes), name=name):
        pass


def _read_archive(entry: FileEntry, source, progress: _Progress, read) -> None:
    """`read(hashed)` reads the tar carried as `entry` (unpacks it, or walks it) from a reader that
    hashes it on the way; then the hash is checked. Refused by the walk and also not the signed
    bytes: the error says it was altered, not what the alteration broke."""
    reader = HashingReader(source, progress, what=entry.member)
    try:
        read(reader)
    except (UnsafeArchiveError, LengthError):
        reader.drain().check(entry.sha256, entry.size)
        raise
    reader.drain().check(entry.sha256, entry.size)


def _commit(engine: Engine, bundle_id: str, bundle_created: str, pack: PackEntry, txn: PackTransaction, request: SideloadRequest, operator_allowed: bool) -> Outcome:
    identity = PackIdentity(pack.key, pack.id, pack.label, pack.data_type, dict(pack.choices), pack.update_schedule)
    record = engine.commit(
        identity,
        txn,
        source=f"bundle:{bundle_id}",
        checksum_verified=pack.checksum_verified,
        fetched_at=pack.fetched_at,
        bundle_created=bundle_created,
        extra={BUNDLE_MANIFEST_KEY: bundle_id, **({PYTHON_KEY: engine.python} if step_types.uses_python(pack.offline_steps) else {})},
    )
    notes = [w for w in request.warnings if w.startswith(pack.key)]
    try:
        run_offline_steps(engine, pack, Path(record.data_dir), announce=operator_allowed)
    except DataPackError as exc:
        return Outcome(pack.key, record=record, error=exc, notes=notes)
    for note in notes:
        engine.listener(Notice(pack.key, "warning", note))
    return Outcome(pack.key, record=record, notes=notes)


def run_offline_steps(engine: Engine, pack: PackEntry, data_dir: Path, *, announce: bool = False) -> None:
    """The pack's offline steps (pip install, docker load, ...) against its installed files.

    `announce`: they run because the operator named the pack with --allow-commands, not because
    this host defines them: each command is printed before it runs."""
    values = {"data_dir": str(data_dir), "python": engine.python, "pack": pack.id}
    for step in pack.offline_steps:  # tool commands only: the manifest's parser allows nothing else
        if announce:
            command = " ".join(step_types.expand_runtime(arg, values) for arg in step.command)
            engine.listener(Notice(pack.key, "warning", f"running a command this host's catalog does not define (--allow-commands): {command}"))
        step_types.run_tool_command(engine.step_context(), pack.key, step, values, None)


def check_code_from_host(engine: Engine, manifest: BundleManifest, selected: list[PackEntry], request: SideloadRequest) -> dict[str, bool]:
    """Issue 18 rules 2, 3 and 7 for each selected pack, before anything is written: its choice
    values are the host's, and its offline steps are the host's own (defined by a recipe file
    only this user or root can change, with the pinned files the bundle carries) or the operator
    named the pack with --allow-commands. Returns, per pack key, whether the operator did."""
    if request.allow_commands and request.trust.allow_unsigned:
        raise UsageError(
            "--allow-commands cannot be used with --allow-unsigned: commands nobody signed would run on this host",
            hint="get a signed bundle, or add the pack's recipe to catalog_dirs in the config file and leave --allow-commands out",
        )
    named = set(request.allow_commands)
    unknown = sorted(named - {p.id for p in selected} - {p.key for p in selected})
    if unknown:
        raise UsageError(f"--allow-commands {unknown[0]}: no such pack is being sideloaded", hint="name a pack of the bundle: " + ", ".join(p.id for p in selected))
    catalog = request.catalog or load_catalog(engine.config.env_catalog_dirs())
    allowed = {}
    for pack in selected:
        allowed[pack.key] = bool(pack.offline_steps) and bool(named & {pack.id, pack.key})
        recipe = check_pack_for_host(pack, manifest.files_for(pack.key), catalog, allow_commands=allowed[pack.key])
        if pack.offline_steps and not allowed[pack.key]:
            check_strict_modes(Path(recipe.source), "recipe")  # the file that vouches for the commands
    return allowed


def read_verified_manifest(path: Path, options: TrustOptions = TrustOptions()) -> tuple[BundleManifest, tuple[str, ...]]:
    """The manifest, parsed only after its signature verified, and the part names (() for one archive).

    Reads nothing past the signature: for `bootstrap-script`, which needs the manifest, not the payload.
    """
    keys = trusted_keys(options.trust_files)
    location = locate(path)
    index = read_parts_index(location, keys, options.allow_unsigned) if location.split else None
    with BundleReader(location, index) as reader:
        manifest, _ = _read_verified_header(reader, keys, options)
    return manifest, tuple(p.name for p in index.parts) if index else ()
