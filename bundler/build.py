"""bundle: plans -> the executor stages every pack (two at a time) -> one signed archive.

Staging lives in the user cache (`~/.cache/devops-cp/bundle-staging`), so an
interrupted bundle resumes its downloads on the next run. Files are hashed once,
as they are fetched; the archive writer reads each staged file once.
"""

from __future__ import annotations

import functools
import itertools
import re
import shutil
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import BinaryIO, Callable

import platformdirs
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bundler import bootstrap, delta, tool_wheels
from bundler.stream_walk import STREAMABLE, StreamWalk, Tee
from bundler.writer import Member, write_archive
from executor import durable
from executor.config import rewrite_url
from executor.engine import Engine
from executor.events import Meter
from executor.extract import iter_archive, unpack_bound
from executor.preflight import check_space
from executor.steps import credentials_auth, step_label, uses_python
from executor.transfer import Copy, file_chunks
from executor.txn import KeptArchive, PackTransaction, recover
from manifests import signing
from manifests.bundle import (
    FOR_HOST_VERSION,
    FORMAT_VERSION,
    KEPT,
    REBUILT,
    BundleManifest,
    FileEntry,
    ForHost,
    FromHost,
    PackEntry,
    PartEntry,
    PartsIndex,
    TOOL_DATA_TYPE,
    Unpack,
    format_timestamp,
    parts_index_name,
    sha256sum_lines,
    to_json,
)
from manifests.errors import UnsafeArchiveError, UsageError
from manifests.hoststate import HostState
from manifests.fmt import fmt_size
from manifests.plan import Plan
from manifests.version import VERSION
from manifests.steps import Download

TOOL_VERSION = VERSION
SHA256_SUFFIX = ".sha256"
SIG_SUFFIX = ".sig"


def staging_dir() -> Path:
    return platformdirs.user_cache_path("devops-cp", appauthor=False) / "bundle-staging"


@dataclass
class BundleResult:
    manifest: BundleManifest
    paths: list[Path]  # the archive or its parts, then the checksum list and signatures
    parts: list[PartEntry]
    notes: list[str]


def _hardware_needs(plan: Plan) -> tuple[str, int]:
    vendor, vram = "", 0
    for choice in plan.recipe.choices:
        option = choice.option(dict(plan.choices)[choice.id])
        vendor = option.gpu_vendor or vendor
        vram = max(vram, option.min_vram_mb or 0)
    return vendor, vram


def _pack_entry(plan: Plan, source: str, *, checksum_verified: bool) -> PackEntry:
    vendor, vram = _hardware_needs(plan)
    return PackEntry(
        key=plan.key,
        id=plan.pack_id,
        label=plan.recipe.label,
        data_type=plan.recipe.data_type,
        choices=dict(plan.choices),
        update_schedule=plan.recipe.update_schedule,
        fetched_at=format_timestamp(datetime.now(timezone.utc)),
        offline_steps=tuple(plan.offline_steps),
        source=source,
        checksum_verified=checksum_verified,
        tool_hint=plan.recipe.tool_hint,
        gpu_vendor=vendor,
        min_vram_mb=vram,
        python_packages=plan.recipe.requires.packages_pip if uses_python(plan.offline_steps) else (),
    )


def _stage_pack(engine: Engine, plan: Plan, txn: PackTransaction) -> "_PackContent":
    outcomes = engine.stage(plan, txn)
    entry = _pack_entry(plan, ", ".join(o.source for o in outcomes if o.source), checksum_verified=all(o.checksum_verified for o in outcomes))
    files = [_File(rel, r.size, r.sha256, path=txn.files_root / rel) for rel, r in sorted(txn.files.items())]
    files += [_File(kept.dest, kept.size, kept.sha256, path=kept.path, unpack=Unpack(kept.fmt, kept.strip, kept.unpacked_size)) for kept in txn.archives]
    dests = [kept.dest for kept in txn.archives]
    if len(set(dests)) != len(dests):
        raise UsageError(f"{plan.pack_id}: two of its archives unpack into the same folder", hint="a bundle carries one archive per folder; fix the recipe")
    _check_unpacked(plan, files, txn.archives)
    return _PackContent(plan, entry, files, [n for o in outcomes for n in o.notes])


def _check_unpacked(plan: Plan, files: list["_File"], archives: list[KeptArchive]) -> None:
    """What the pack's archives will unpack to, walked with extraction's own rules (nothing is
    written, nothing hashed: the archive's own hash is in the manifest): a hostile or damaged
    archive, or two files at one path, is refused on the machine that fetched it, not on the
    air-gapped host."""
    if not archives:
        return
    paths = [f.rel for f in files if f.unpack is None]
    for kept in archives:
        paths += [f"{kept.dest}/{rel}" for rel, _, _ in iter_archive(kept.path, kept.fmt, strip=kept.strip, max_total=unpack_bound(kept.unpacked_size))]
    _check_paths(plan, paths)


def _check_paths(plan: Plan, paths: list[str]) -> None:
    """What extraction onto disk would have refused: two files at one path, a file where a folder goes."""
    hint = "the archive is damaged or hostile; nothing was bundled"
    if len(set(paths)) != len(paths):
        raise UnsafeArchiveError(f"{plan.pack_id}: two of its files have the same path", hint=hint)
    folders = {rel.rsplit("/", depth)[0] for rel in paths for depth in range(1, rel.count("/") + 1)}
    clash = next((rel for rel in paths if rel in folders), None)
    if clash is not None:
        raise UnsafeArchiveError(f"{plan.pack_id}: {clash!r} is both a file and a folder", hint=hint)


def _keeps_archives(plan: Plan) -> bool:
    """Only downloads: no later step (a tool, say) expects the archive unpacked in the staging area."""
    return all(isinstance(step, Download) for step in plan.steps)


def _pinned(step) -> bool:
    """A download whose every byte the recipe pins (sha256 and exact size), kept as it comes
    (an archive too: a tar is walked as it streams, see bundler/stream_walk.py)."""
    pinned = isinstance(step, Download) and bool(step.checksum) and step.size_exact and step.size_bytes is not None
    return pinned and (not step.extract or step.extract in STREAMABLE)


def _choose_live(plans: list[Plan]) -> Plan | None:
    """The pack whose downloads go straight into the archive instead of through staging.

    Only a pack made of pinned downloads, at most one of them an archive, qualifies: its manifest
    entries are known before a byte is fetched, and the manifest comes first in the archive.
    Streaming saves writing the files to the staging cache and reading them back (and that much
    free space); the other packs are staged first, in parallel, as before. The largest such pack
    gains the most.
    """
    candidates = [
        p for p in plans
        if p.steps and all(_pinned(s) for s in p.steps) and len({s.dest for s in p.steps}) == len(p.steps) and sum(1 for s in p.steps if s.extract) <= 1
    ]  # fmt: skip
    return max(candidates, key=lambda p: sum(s.size_bytes for s in p.steps), default=None)


@dataclass(frozen=True)
class _File:
    """A pack's file on its way into the archive: staged on disk, or fetched live by `fetch`."""

    rel: str
    size: int
    sha256: str
    path: Path | None = None
    fetch: Callable[[BinaryIO], Copy] | None = None
    unpack: Unpack | None = None  # an archive, carried whole: the installing host unpacks it below `rel`


def _stream_download(download, sha256: str, out: BinaryIO) -> Copy:
    copy = download.stream_into(out, sha256)
    download.meter.done(copy.done)
    return copy


def _stream_archive(download, sha256: str, plan: Plan, step: Download, plain_paths: list[str], out: BinaryIO) -> Copy:
    """A pinned archive streamed into the bundle, walked by extraction's rules as it passes: the
    refusals of a staged archive (_check_unpacked), without the staging."""
    walk = StreamWalk(step.extract, strip=step.strip_components, max_total=unpack_bound(step.unpacked_size_bytes), name=download.url)
    try:
        copy = _stream_download(download, sha256, Tee(out, walk))
        unpacked = walk.finish()
    finally:
        walk.abandon()
    _check_paths(plan, plain_paths + [f"{step.dest}/{rel}" for rel in unpacked])
    return copy


def _live_files(engine: Engine, plan: Plan) -> list[_File]:
    from executor.http import Download  # httpx: only when a bundle downloads

    ctx = engine.step_context()
    files = []
    for index, step in enumerate(plan.steps):
        url = rewrite_url(step.url, ctx.config.mirrors)
        download = Download(
            client=ctx.client,
            url=url,
            partial=None,  # forward-only: resumed in-process after a drop, never staged
            what=url,
            settings=ctx.settings,
            meter=Meter(ctx.listener, plan.key, index, step_label(step), step.size_bytes),
            size_cap=step.size_bytes,
            auth=credentials_auth(ctx, plan.recipe, step.credentials),
            plain=ctx.plain,
            connections=ctx.connections,
        )
        sha256 = step.checksum.split(":", 1)[1]
        if step.extract:
            plain = [s.dest for s in plan.steps if not s.extract]
            fetch = functools.partial(_stream_archive, download, sha256, plan, step, plain)
            unpack = Unpack(step.extract, step.strip_components, step.unpacked_size_bytes)
            files.append(_File(step.dest, step.size_bytes, sha256, fetch=fetch, unpack=unpack))
        else:
            files.append(_File(step.dest, step.size_bytes, sha256, fetch=functools.partial(_stream_download, download, sha256)))
    return sorted(files, key=lambda f: f.rel)


@dataclass
class _PackContent:
    """One pack as it goes into the archive: its manifest entry, its files, notes for the user."""

    plan: Plan
    entry: PackEntry
    files: list[_File]
    notes: list[str]


def build_bundle(
    engine: Engine,
    plans: list[Plan],
    out: Path,
    *,
    private_key: Ed25519PrivateKey | None,
    expires_in: timedelta | None = None,
    split_size: int | None = None,
    confirm=None,
    include_tool: tool_wheels.Target | None = None,
    for_host: HostState | None = None,
) -> BundleResult:
    """Fetch, stage and archive. Nothing named OUT* exists until the archive is complete.

    `include_tool`: also carry wheels of this tool and its dependencies for that target
    (bundler/tool_wheels.py), and write OUT.bootstrap.sh beside the bundle.
    `for_host`: an update for that host only: what it has is kept or rebuilt from its chunks
    (bundler/delta.py); a pack it has unpacked is compared on its unpacked files.
    """
    out = out.resolve()
    work = staging_dir()
    engine.store.ensure_writable(out.parent)
    if include_tool is not None and private_key is None:
        raise UsageError("--include-tool needs a signed bundle: the air-gapped host checks it with openssl before running anything", hint="pass --key PREFIX.key")
    live = _choose_live(plans) if for_host is None else None  # every file is staged: it is compared with the host's
    engine.preflight(
        plans, confirm or (lambda *_: True), target_dir=work, streamed={live.key} if live else (), kept_whole={p.key for p in plans if _keeps_archives(p)}
    )
    check_space(out.parent, sum(p.size_estimate_bytes for p in plans))
    held = ExitStack()  # bundles share this staging cache and its partial downloads: one at a time
    txns: list[PackTransaction] = []
    contents: list[_PackContent] = []
    wheel_dir = None
    try:
        held.enter_context(engine.store.locked([work]))
        recover(engine.store, work)  # staged copies that a killed bundle left behind
        txns = [PackTransaction(engine.store, work, plan.key, keep_archives=_keeps_archives(plan) and not _host_has(for_host, plan), writes=engine.writes) for plan in plans]
        tool = None
        if include_tool is not None:  # first: a missing index fails in seconds, before gigabytes are fetched
            wheel_dir = Path(tempfile.mkdtemp(prefix="devops-cp-tool-wheels-"))  # tens of MB; not in the staging cache
            tool = tool_wheels.collect(wheel_dir, include_tool)
        to_stage = [(plan, txn) for plan, txn in zip(plans, txns) if plan is not live]
        workers = max(1, min(engine.config.max_parallel_downloads, len(to_stage)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            staged = dict(zip((plan.key for plan, _ in to_stage), pool.map(lambda pt: _stage_pack(engine, *pt), to_stage)))
        for plan in plans:
            if plan is live:
                sources = ", ".join(rewrite_url(s.url, engine.config.mirrors) for s in plan.steps)
                contents.append(_PackContent(plan, _pack_entry(plan, sources, checksum_verified=True), _live_files(engine, plan), []))
            else:
                contents.append(staged[plan.key])
        return _write(engine, out, contents, private_key, expires_in, split_size, tool, for_host)
    finally:
        for txn in txns:
            txn.abort()
        if wheel_dir is not None:
            shutil.rmtree(wheel_dir, ignore_errors=True)
        held.close()


def _host_has(for_host: HostState | None, plan: Plan) -> bool:
    return for_host is not None and for_host.pack(plan.key) is not None


def _write(engine, out, contents: list[_PackContent], private_key, expires_in, split_size, tool=None, for_host: HostState | None = None) -> BundleResult:
    files, members, packs = [], [], [c.entry for c in contents]
    if tool is not None:  # the wheels go first: the bootstrap's tar stops reading right after them
        tool_pack, files, tool_members = tool_wheels.manifest_entries(tool, format_timestamp(datetime.now(timezone.utc)), TOOL_VERSION)
        packs.append(tool_pack)
        members = [Member(name, path, size) for name, path, size in tool_members]
    for content in contents:
        key = content.plan.key
        host_pack = for_host.pack(key) if for_host is not None else None
        host_files = {hf.path: hf for hf in host_pack.files} if host_pack is not None else {}
        for f in content.files:
            if f.unpack is None and f.path is not None and host_files:
                meter = functools.partial(Meter, engine.listener, key, 0, f"chunks of {f.rel}", f.size)
                entry, member = _from_host(key, f, delta.decide(f.path, f.size, f.sha256, host_files.get(f.rel), meter))
                files.append(entry)
                members += [member] if member is not None else []
                continue
            name = f"archives/{key}/{f.rel}.{f.unpack.format}" if f.unpack else f"packs/{key}/{f.rel}"
            files.append(FileEntry(key, f.rel, f.size, f.sha256, name, f.unpack))
            members.append(Member(name, f.path, f.size, f.sha256, f.fetch))
    now = datetime.now(timezone.utc)
    signer = signing.key_id(private_key.public_key()) if private_key else None
    manifest = BundleManifest(
        format_version=FOR_HOST_VERSION if for_host is not None else FORMAT_VERSION,
        for_host=ForHost(for_host.host_name, for_host.export_id, for_host.created) if for_host is not None else None,
        bundle_id=uuid.uuid4().hex,
        created=format_timestamp(now),
        expires=format_timestamp(now + expires_in) if expires_in else None,
        tool_version=TOOL_VERSION,
        signer_key_id=signer,
        packs=tuple(packs),
        files=tuple(files),
    )
    manifest_bytes = to_json(manifest)
    signature = signing.sign(private_key, manifest_bytes) if private_key else None
    total = sum(m.size for m in members)
    check_space(out.parent, total)
    meter = Meter(engine.listener, "bundle", 0, out.name, total)
    done = 0

    def on_bytes(n: int) -> None:
        nonlocal done
        done += n
        meter.update(done)

    parts = write_archive(out, manifest_bytes, signature, members, split_size=split_size, on_bytes=on_bytes, plain=engine.writes.plain)
    meter.done(done)
    paths = [out.with_name(p.name) for p in parts]
    listed = []  # besides the parts, in the signed checksum list
    if tool is not None:
        script, digest = bootstrap.write(out.parent, bootstrap_info(manifest, out.name, [p.name for p in parts] if split_size is not None else []))
        listed.append((script.name, digest))
        paths.append(script)
    paths += _write_side_files(out, parts, private_key, signer, split_size is not None, listed)
    return BundleResult(manifest, paths, parts, [n for c in contents for n in c.notes] + _host_space_notes(for_host, contents, manifest))


def _host_space_notes(for_host: HostState | None, contents: list[_PackContent], manifest: BundleManifest) -> list[str]:
    """The free space the host reported against what sideload will write there (rebuilt and whole files)."""
    if for_host is None:
        return []
    needs: dict[str, int] = {}
    for content in contents:
        written = sum(f.size for f in manifest.files_for(content.plan.key) if f.delivery != "kept")
        needs[content.entry.data_type] = needs.get(content.entry.data_type, 0) + written
    return [
        f"{for_host.host_name} reported {fmt_size(for_host.free_space[kind])} free for {kind}; this update writes about {fmt_size(need)} there"
        for kind, need in sorted(needs.items())
        if kind in for_host.free_space and need > for_host.free_space[kind]
    ]


def _from_host(key: str, f: _File, found: delta.Delivery) -> tuple[FileEntry, Member | None]:
    """A file of a pack the host has: kept (no member), rebuilt (the recipe and the carried chunks), or whole."""
    if found.kind == "whole":
        name = f"packs/{key}/{f.rel}"
        return FileEntry(key, f.rel, f.size, f.sha256, name), Member(name, f.path, f.size, f.sha256)
    if found.kind == "kept":
        return FileEntry(key, f.rel, f.size, f.sha256, "", from_host=FromHost(KEPT, f.size, f.sha256)), None
    name = f"chunks/{key}/{f.rel}"
    from_host = FromHost(REBUILT, found.base_size, found.base_sha256, found.member_size, found.member_sha256, found.chunks, found.carried_chunks)

    def fetch(out: BinaryIO) -> Copy:
        with open(found.spill, "rb") as spill:
            return Copy(out, what=name, limit=found.member_size).feed(itertools.chain((found.recipe,), file_chunks(spill)))

    return FileEntry(key, f.rel, f.size, f.sha256, name, from_host=from_host), Member(name, None, found.member_size, found.member_sha256, fetch)


def bootstrap_info(manifest: BundleManifest, bundle_name: str, parts: list[str]) -> bootstrap.BootstrapInfo:
    """What the bootstrap script needs, from the manifest alone (so `bootstrap-script` prints the same bytes)."""
    tool = next((p for p in manifest.packs if p.data_type == TOOL_DATA_TYPE), None)
    if tool is None:
        raise UsageError(f"{bundle_name} carries no wheels of this tool", hint="make the bundle with `devops-cp data bundle ... --include-tool`")
    python = tool.choices.get("python", "")
    if not re.fullmatch(r"3\.\d{1,2}", python):
        raise UsageError(f"{bundle_name}: its tool wheels name no target Python (got {python!r})", hint="make the bundle again with --include-tool")
    members = tuple(f.member for f in manifest.files_for(tool.key))
    return bootstrap.BootstrapInfo(bundle_name, tuple(parts), members, python, tool_wheels.DIST_NAME)


def _write_side_files(out: Path, parts: list[PartEntry], private_key, signer: str | None, split: bool, listed=()) -> list[Path]:
    """OUT.sha256 (for `sha256sum -c`: the parts, then `listed` (name, sha256) such as the
    bootstrap script) and, for split bundles, the parts index; each signed."""
    written = []
    checksums = [*((p.name, p.sha256) for p in parts), *listed]
    documents = [(out.with_name(out.name + SHA256_SUFFIX), sha256sum_lines(checksums).encode())]
    if split:
        index = PartsIndex(bundle_name=out.name, parts=tuple(parts), total_size=sum(p.size for p in parts), signer_key_id=signer)
        documents.append((out.with_name(parts_index_name(out.name)), to_json(index)))
    for path, data in documents:
        durable.write_atomic(path, data)
        written.append(path)
        if private_key is not None:
            sig_path = path.with_name(path.name + SIG_SUFFIX)
            durable.write_atomic(sig_path, signing.sign(private_key, data))
            written.append(sig_path)
    return written
