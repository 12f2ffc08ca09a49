"""The executor: decide first (pre-flight), then act (stage, verify, commit).

Direct install, bundle and sideload all run through `Engine`: `stage()` runs a
plan's steps into a pack transaction, `commit()` makes a staged pack visible with
its install record. Bundling stages without committing; sideloading stages from an
archive instead of the network.
"""

from __future__ import annotations

import os
import stat
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Collection, assert_never

from executor import consumers, interrupt, steps as step_types, upstream
from executor.config import Config, WriteSettings, rewrite_url
from executor.events import Listener, LockedListener, Notice, ignore
from executor.inplace import InPlaceFinder
from executor.intact import PLAN_KEY, changed_file, plan_fingerprint, schedule_due, why_outdated
from executor.pip_uninstall import PYTHON_KEY, uninstall_wheels
from executor.preflight import check_space_for, check_tools, existing_parent
from executor.store import BUNDLE_MANIFEST_KEY, FileRecord, InstallRecord, Store, now_iso
from executor.transfer import hash_file
from executor.txn import PackTransaction, prune_empty_parents, recover, tidy_staging
from manifests.errors import ConfigError, ConfirmationRequired, DataPackError, UsageError
from manifests.plan import Plan
from manifests.steps import Download, LocalCopy, OciArtifact, ToolCommand, sizes
from manifests.units import estimated_times, fmt_size

if TYPE_CHECKING:  # httpx is loaded by the first download, never by a sideload
    import httpx

    from executor.config import HttpSettings

# confirm(plan, size_bytes, estimated_times) -> True to go ahead
Confirm = Callable[[Plan, int, dict], bool]


def never_confirm(plan: Plan, size: int, times: dict) -> bool:
    raise ConfirmationRequired(
        f"{plan.pack_id} is a large download ({fmt_size(size)}; "
        + ", ".join(f"{k}: {v}" for k, v in times.items())
        + ") and there is no terminal to ask",
        hint="pass --yes to go ahead",
    )


@dataclass
class Outcome:
    """What happened to one pack: a record, or the error that stopped it."""

    key: str
    record: InstallRecord | None = None
    error: DataPackError | None = None
    notes: list[str] = field(default_factory=list)  # warnings a person should read
    already_installed: bool = False  # intact and current: nothing was downloaded (record: the installed one)
    upstream: str | None = None  # a moving target's upstream when already installed: "unchanged", "unreachable", "not asked"


@dataclass(frozen=True)
class PackIdentity:
    """Who a staged pack is, from a plan (install) or a bundle manifest (sideload)."""

    key: str
    pack_id: str
    label: str
    data_type: str
    choices: dict[str, str]
    update_schedule: str

    @classmethod
    def of_plan(cls, plan: Plan) -> "PackIdentity":
        r = plan.recipe
        return cls(plan.key, r.id, r.label, r.data_type, dict(plan.choices), r.update_schedule)


@dataclass
class LocalSource:
    """`install PACK --source FILE`: the step's input comes from this file."""

    path: Path
    sha256: str | None = None


def _default_settings() -> HttpSettings:
    from executor.config import HttpSettings

    return HttpSettings()


class Engine:
    def __init__(
        self,
        store: Store,
        *,
        listener: Listener = ignore,
        settings: HttpSettings | None = None,  # None: the defaults
        transport: httpx.BaseTransport | None = None,
        python: str = sys.executable,
        writes: WriteSettings | None = None,  # None: the config's [writes]
        connections_per_download: int | None = None,
        overwrite: bool = False,
    ):
        """`connections_per_download`: how many connections one large file may use (None: the
        config's max_connections_per_download). A site mirror serving a fleet passes 1."""
        self.store = store
        self.config: Config = store.config
        self.listener = LockedListener(listener)
        self.settings = settings if settings is not None else _default_settings()
        self.transport = transport
        self.python = python
        self.writes = writes if writes is not None else self.config.writes
        self.overwrite = overwrite  # replace files a pack does not own (--overwrite), recorded as such
        self.connections_per_download = connections_per_download or self.config.max_connections_per_download
        self._client: httpx.Client | None = None

    def client(self) -> httpx.Client:
        if self._client is None:
            from executor.http import make_client

            self._client = make_client(self.settings, self.transport)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def step_context(self, *, will_sync: bool = False) -> step_types.StepContext:
        return step_types.StepContext(
            self.config, self.client, self.listener, self.settings, self.python,
            will_sync=will_sync and self.writes.durable, plain=self.writes.plain, connections=self.connections_per_download,
        )

    # --- decide -------------------------------------------------------------------------

    def preflight(
        self,
        plans: list[Plan],
        confirm: Confirm = never_confirm,
        *,
        local: bool = False,
        target_dir: Path | None = None,
        streamed: Collection[str] = (),
        kept_whole: Collection[str] = (),
        installed: dict[str, int] | None = None,
    ) -> None:
        """Everything that can refuse before the first byte: writable, space, tools, size warning.

        `target_dir` replaces the data dirs (a bundle stages into one cache directory);
        `streamed`: keys of packs that never touch it (a bundle streams them into the archive);
        `kept_whole`: keys of packs whose archives are not unpacked there (a bundle carries them
        whole), which need room for their downloads only. `installed`: per pack key, the bytes of
        its downloads that are installed as they are (a repair fetches only the rest).
        """
        installed = installed or {}
        needed: dict[Path, int] = {}
        for plan in plans:
            data_dir = target_dir or self.store.data_dir(plan.recipe.data_type)
            self.store.ensure_writable(data_dir)
            tools = [t for t in plan.recipe.requires.tools if t not in ("python", "python3")]
            tools += [s.command[0] for s in plan.steps if isinstance(s, ToolCommand) and not s.command[0].startswith("{")]
            check_tools(sorted(set(tools)), plan.pack_id)
            if step_types.uses_python(plan.steps):  # a wheel installed --no-deps needs its framework there
                step_types.check_python_packages(self.python, plan.recipe.requires.packages_pip, plan.pack_id)
            unpacks = plan.key not in kept_whole
            needed[data_dir] = needed.get(data_dir, 0) + (0 if plan.key in streamed else sum(
                fetched + (unpacked if unpacks else 0) for fetched, unpacked in map(sizes, plan.steps)
            ) - installed.get(plan.key, 0))
        check_space_for(needed)
        # Asked last: a person should not say yes to a download that cannot fit anyway.
        for plan in plans:
            size = plan.size_estimate_bytes - installed.get(plan.key, 0)
            if not local and size > plan.recipe.size_warning_mb * 10**6 and not confirm(plan, size, estimated_times(size)):
                raise ConfirmationRequired(f"{plan.pack_id}: not confirmed, nothing was downloaded")

    # --- act ----------------------------------------------------------------------------

    def stage(
        self, plan: Plan, txn: PackTransaction, source: LocalSource | None = None, *, will_sync: bool = False, in_place: InPlaceFinder | None = None
    ) -> list[step_types.StepOutcome]:
        """Run the plan's steps into `txn`; nothing becomes visible here.

        `will_sync`: `commit()` follows and syncs the pack (a direct install), so downloads may
        start writing to disk while they run. A bundle's staging is never synced: False.
        `in_place`: a file that the data dir has already, as a step would fetch it, is kept there
        instead (executor/inplace.py); None: everything is fetched.
        """
        ctx = self.step_context(will_sync=will_sync)
        ctx.in_place = in_place
        txn.kept_visible = any(isinstance(s, ToolCommand) for s in plan.steps)  # a tool step may read a kept file
        values = {"data_dir": str(txn.files_root), "python": self.python, "pack": plan.pack_id}
        outcomes = []
        for index, step in enumerate(plan.steps):
            match step:
                case Download() | LocalCopy() if source is not None:
                    expected = source.sha256 or (step.checksum.split(":", 1)[1] if step.checksum else None)
                    outcomes.append(step_types.run_local_copy(ctx, plan.key, index, step, txn, source.path, expected, data_type=plan.recipe.data_type))
                case Download():
                    outcomes.append(step_types.run_download(ctx, plan.recipe, plan.key, index, step, txn))
                case LocalCopy():
                    if not step.source:
                        raise UsageError(f"{plan.pack_id} installs from a local file", hint="pass it with --source FILE")
                    path = Path(step_types.expand_runtime(step.source, values)).expanduser()
                    expected = step.checksum.split(":", 1)[1] if step.checksum else None
                    outcomes.append(step_types.run_local_copy(ctx, plan.key, index, step, txn, path, expected, data_type=plan.recipe.data_type))
                case ToolCommand():
                    outcomes.append(step_types.run_tool_command(ctx, plan.key, step, values, txn))
                case OciArtifact():
                    outcomes.append(self.run_extension_step(plan, index, step, txn, ctx))
                case _:
                    assert_never(step)
        return outcomes

    def run_extension_step(self, plan: Plan, index: int, step, txn: PackTransaction, ctx: step_types.StepContext) -> step_types.StepOutcome:
        from executor import oci  # registry artifacts: imported only when a recipe uses them

        return oci.run_oci_artifact(ctx, plan.key, index, step, txn)

    def commit(
        self,
        pack: PackIdentity,
        txn: PackTransaction,
        *,
        source: str,
        checksum_verified: bool,
        fetched_at: str | None = None,
        bundle_created: str | None = None,
        extra: dict | None = None,
    ) -> InstallRecord:
        """Make a staged pack visible, with its install record (see executor/txn.py)."""
        record = InstallRecord(
            key=pack.key,
            pack_id=pack.pack_id,
            label=pack.label,
            data_type=pack.data_type,
            data_dir=str(txn.data_dir),
            choices=dict(pack.choices),
            files=[],
            source=source,
            installed_at=now_iso(),
            fetched_at=fetched_at or now_iso(),
            checksum_verified=checksum_verified,
            update_schedule=pack.update_schedule,
            bundle_created=bundle_created,
            extra=dict(extra or {}),
        )
        consumers.adopt(pack.data_type, txn, record.fetched_at)  # trivy's DownloadedAt, before the files are synced
        with interrupt.deferred():  # a swap that has begun finishes, as after a kill
            interrupt.check()  # Ctrl-C before it began: nothing is committed
            # Under the commit lock: who owns which file is decided against the records as they are now.
            txn.commit(record, self.store.read_record(pack.key), others=self.store.records(), overwrite=self.overwrite)
        return record

    def install(
        self, plans: list[Plan], *, confirm: Confirm = never_confirm, source: LocalSource | None = None, reinstall: bool = False, verify: bool = False
    ) -> list[Outcome]:
        """Direct install: several packs download at most max_parallel_downloads at a time.

        A pack already installed, intact and current is not downloaded again unless `reinstall`
        (`verify`: re-hash its files to tell); a changed or missing file is repaired.
        """
        done: dict[str, Outcome] = {}
        if source is None and not reinstall:
            done = self._already_installed(plans, verify)
        todo = [p for p in plans if p.key not in done]
        keep = source is None and not reinstall  # what is there already, as it would be fetched, stays
        outcomes = {o.key: o for o in self._install(todo, confirm, source, keep=keep, verify=verify)} if todo else {}
        return [done.get(p.key) or outcomes[p.key] for p in plans]

    def _already_installed(self, plans: list[Plan], verify: bool) -> dict[str, Outcome]:
        done = {}
        for plan in plans:
            record = self.store.read_record(plan.key)
            if record is None:
                continue
            outdated = why_outdated(self.store, plan, record)
            changed = None if outdated else changed_file(record, verify=verify)
            outcome = Outcome(plan.key, record=record, already_installed=True)
            if outdated is None and changed is None and plan.recipe.schedule_seconds is not None:
                outdated = self._moving_target_update(plan, record, outcome)
            if outdated:
                self.listener(Notice(plan.key, "info", f"installed, but {outdated}: fetching it again"))
            elif changed:
                self.listener(Notice(plan.key, "info", f"repairing: {changed}"))
            else:
                done[plan.key] = outcome
        return done

    def _moving_target_update(self, plan: Plan, record: InstallRecord, outcome: Outcome) -> str | None:
        """Why an intact moving target is fetched again (its upstream changed), or None; what was
        asked goes into `outcome`. Upstream out of reach keeps the installed pack, with a warning."""
        answer = self.ask_upstream(plan, record)
        if answer.state == upstream.CHANGED:
            return f"an update: upstream has changed ({answer.detail})"
        if answer.state == upstream.UNCHANGED:
            outcome.upstream = "unchanged"
            return None
        if answer.state == upstream.UNREACHABLE:
            outcome.upstream = "unreachable"
            note = f"upstream could not be checked ({answer.detail}): kept the installed version"
            outcome.notes.append(note)
            self.listener(Notice(plan.key, "warning", note))
            return None
        why = schedule_due(self.store, plan, record)
        outcome.upstream = "not asked"
        self.listener(Notice(plan.key, "info", f"{answer.detail}: judged by its {plan.recipe.update_schedule} schedule instead"))
        return why

    def ask_upstream(self, plan: Plan, record: InstallRecord) -> upstream.Answer:
        """Has the upstream of each of the plan's downloads changed since `record` was fetched?
        UNDECIDED when the record holds no validators for one of them (or the plan downloads nothing)."""
        kept = upstream.recorded(record.extra)
        ctx = self.step_context()
        checks = []
        for step in plan.steps:
            if not isinstance(step, Download):
                continue
            url = rewrite_url(step.url, self.config.mirrors)
            validators = kept.get(url)
            if validators is None or not validators.usable:
                return upstream.Answer(upstream.UNDECIDED, f"no ETag or Last-Modified was recorded for {url}")
            try:
                auth = step_types.credentials_auth(ctx, plan.recipe, step.credentials, url, step.url)
            except ConfigError as exc:
                return upstream.Answer(upstream.UNREACHABLE, exc.message)
            checks.append((validators, auth))
        if not checks:
            return upstream.Answer(upstream.UNDECIDED, "it downloads nothing over HTTP")
        return upstream.ask(self.client(), checks)

    def _install(self, plans: list[Plan], confirm: Confirm, source: LocalSource | None, *, keep: bool = False, verify: bool = False) -> list[Outcome]:
        """Each pack downloads into its own staging area under its own lock; a data dir's lock is
        taken only for the short commit, so separate runs download in parallel too.
        """
        seen = {plan.key: self.store.read_record(plan.key) for plan in plans}  # before any wait
        data_dirs = sorted({self.store.data_dir(p.recipe.data_type) for p in plans})
        made = missing_dirs(data_dirs)
        installed = {p.key: self._installed_bytes(p, seen[p.key]) for p in plans if seen[p.key] is not None} if keep else {}
        try:
            self.preflight(plans, confirm, local=source is not None, installed=installed)
        except DataPackError:
            remove_if_empty(made)
            raise
        try:
            workers = max(1, min(self.config.max_parallel_downloads, len(plans)))
            with interrupt.deferred(), ThreadPoolExecutor(max_workers=workers) as pool:
                return list(pool.map(lambda plan: self._install_one(plan, source, seen[plan.key], keep=keep, verify=verify), plans))
        finally:
            for data_dir in data_dirs:
                tidy_staging(self.store, data_dir)
            remove_if_empty(made)

    def _install_one(self, plan: Plan, source: LocalSource | None, seen: InstallRecord | None, *, keep: bool = False, verify: bool = False) -> Outcome:
        data_dir = self.store.data_dir(plan.recipe.data_type)
        say = self.say_waiting(plan.key)
        try:
            with self.store.pack_locked({plan.key: data_dir}, on_wait=say), self.store.staging(data_dir):
                current = self.store.read_record(plan.key)
                if _installed_meanwhile(seen, current):
                    note = f"installed by another devops-cp run while this one waited ({current.installed_at})"
                    self.listener(Notice(plan.key, "info", note))
                    return Outcome(plan.key, record=current, notes=[note])
                with PackTransaction(self.store, data_dir, plan.key, writes=self.writes) as txn:
                    finder = self.in_place_finder(plan, data_dir, current, verify=verify) if keep else None
                    outcomes = self.stage(plan, txn, source, will_sync=True, in_place=finder)  # commit() syncs: syncfs, else an fsync per file
                    if finder is not None and current is not None:
                        unpacked = txn.keep_unchanged(finder)  # an archive fetched again: only its changed files are replaced
                        if txn.in_place:
                            self.listener(Notice(plan.key, "info", _kept_note(txn, unpacked)))
                    with self.store.locked([data_dir], on_wait=say):
                        self.recover(data_dir)
                        record = self.commit(
                            PackIdentity.of_plan(plan),
                            txn,
                            source=", ".join(o.source for o in outcomes if o.source),
                            checksum_verified=all(o.checksum_verified for o in outcomes),
                            extra={PLAN_KEY: plan_fingerprint(plan), **({PYTHON_KEY: self.python} if step_types.uses_python(plan.steps) else {}), **_upstream_extra(outcomes)},
                        )
        except DataPackError as exc:
            return Outcome(plan.key, error=exc)
        notes = list(plan.warnings) + [n for o in outcomes for n in o.notes]
        for note in notes:
            self.listener(Notice(plan.key, "warning", note))
        return Outcome(plan.key, record=record, notes=notes)

    def in_place_finder(self, plan: Plan, data_dir: Path, current: InstallRecord | None, *, verify: bool = False) -> InPlaceFinder:
        # A repair of the installed version: a step without a checksum would fetch what the record
        # says it fetched. Not for a moving target, whose upstream may have moved on since.
        same_version = current is not None and plan.recipe.schedule_seconds is None and why_outdated(self.store, plan, current) is None
        return InPlaceFinder(data_dir, plan.key, current, self.store.records(), verify=verify, same_version=same_version)

    def _installed_bytes(self, plan: Plan, record: InstallRecord) -> int:
        """How much of a pack's downloads is installed as it is (size and time; nothing is read): a
        repair needs no room for it, and asks no confirmation for it."""
        finder = self.in_place_finder(plan, self.store.data_dir(plan.recipe.data_type), record)
        return sum(
            step.size_bytes or 0
            for step in plan.steps
            if isinstance(step, Download) and not step.extract and finder.find(step.dest, step.checksum.split(":", 1)[1] if step.checksum else None, adopt=False)
        )

    def say_waiting(self, key: str) -> Callable[[str], None]:
        """A run that has to wait for a lock says so at once."""
        return lambda message: self.listener(Notice(key, "info", message))

    def recover(self, data_dir: Path) -> None:
        """Under the data dir's commit lock: finish what a killed run left there."""
        for note in recover(self.store, data_dir):
            warning = note.removeprefix("warning: ")
            self.listener(Notice("", "warning" if warning != note else "info", warning))

    def remove(self, record: InstallRecord) -> tuple[list[str], list[str]]:
        """Deletes only that pack's files, and of those only the ones still as installed (their
        sha256), then its record; a wheel its steps pip-installed is uninstalled from the
        interpreter they used first. Returns what it said about that, and why each file it kept was kept."""
        data_dir = Path(record.data_dir)
        wheels = [data_dir / f.path for f in record.files if f.path.endswith(".whl") and (data_dir / f.path).is_file()]
        notes = uninstall_wheels(wheels, record.extra.get(PYTHON_KEY)) if wheels else []
        kept = []
        with self.store.locked([data_dir], on_wait=self.say_waiting(record.key)):
            record = self.store.read_record(record.key) or record  # as it is now, under the lock
            adopted = set(record.adopted)
            for f in record.files:
                path = data_dir / f.path
                why = "it was there before the pack (adopted)" if f.path in adopted else _changed_since_installed(path, f)
                if why is not None:
                    if why:
                        kept.append(f"{path}: {why}")
                    continue
                path.unlink()
                prune_empty_parents(path.parent, data_dir)
            self.store.delete_record(record.key)
            self.store.drop_unused_bundle_manifest(record.extra.get(BUNDLE_MANIFEST_KEY))
        return notes, kept



def _kept_note(txn: PackTransaction, unpacked: int) -> str:
    """A repair or an update of an installed pack: how much of it stayed as it was."""
    kept, replaced = len(txn.in_place), len(txn.files) - len(txn.in_place)
    if unpacked:
        return f"its archive had to be fetched again; {replaced} changed or missing file(s) from it replaced, {kept} unchanged file(s) left as they were"
    return f"{replaced} file(s) fetched, {kept} unchanged file(s) left as they were"


def _upstream_extra(outcomes: list[step_types.StepOutcome]) -> dict:
    """The downloads' validators, for the record: a later install asks upstream with them."""
    found = [o.upstream for o in outcomes if o.upstream is not None]
    return {upstream.UPSTREAM_KEY: found} if found else {}


def _installed_meanwhile(seen: InstallRecord | None, current: InstallRecord | None) -> bool:
    """Another install of this pack committed while this run waited for its lock: its download
    would fetch the same again. A bundle's data committed meanwhile may be older: it is updated."""
    return current is not None and current != seen and not current.source.startswith("bundle:")


def _changed_since_installed(path: Path, recorded: FileRecord) -> str | None:
    """None when `path` is still the file the record lists; "" when it is gone; otherwise why it is kept."""
    try:
        found = path.lstat()
    except FileNotFoundError:
        return ""
    if not stat.S_ISREG(found.st_mode):
        return "it is no longer a plain file"
    if found.st_size != recorded.size or hash_file(path).sha256 != recorded.sha256:
        return "it changed since it was installed"
    return None


def missing_dirs(directories) -> dict[Path, Path]:
    """Each of `directories` that does not exist yet, with its nearest existing parent."""
    return {Path(d): existing_parent(Path(d)) for d in directories if not os.path.lexists(d)}


def remove_if_empty(made: dict[Path, Path]) -> None:
    """A data directory this run created (and the folders above it that it created) goes again
    when nothing was installed into it: a refusal leaves no empty folders behind."""
    for directory, existed in made.items():
        prune_empty_parents(directory, existed)
