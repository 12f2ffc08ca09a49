"""A pack's files become visible together, or not at all.

Files are staged under `<data_dir>/.devops-cp-staging/txn-*/files/` (same filesystem,
so each rename is atomic), made durable, and then a journal is written. Once the
journal exists the transaction is decided: the renames, the removal of the previous
version's leftovers and the install record are rolled forward, by this run or, after
a kill, by the next command that touches the store. A transaction without a journal
is rolled back: its staging directory is deleted and the installed version is untouched.

Until the record is written, what the new version replaces is set aside in the staging area,
not deleted: a failure in this run (a rename refused, a full disk, the record not written)
moves everything back in reverse order, so the previous version, or nothing, is there again
and the journal goes. Each undo step leaves a state that rolling forward also completes, so a
rollback that itself fails keeps the journal for the next run.

A top-level folder of the pack that the data dir does not have yet moves in with one rename
(a pack of 20,000 files under one folder: one rename instead of 20,000). Everything else,
an update's files among them, moves file by file.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from executor import durable
from executor.config import WriteSettings
from executor.inplace import InPlace, InPlaceFinder, identity
from executor.store import STAGING_NAME, FileRecord, InstallRecord, Store
from executor.transfer import hash_file
from manifests.errors import DataPackError, LockTimeout, NoSpaceError, NotWritableError, PolicyError, TrustError, UnsafeArchiveError
from manifests.names import is_identifier, pack_key, relative_path_problem

JOURNAL = "JOURNAL.json"
ASIDE = "previous"  # in a transaction's folder: the files it replaces, until its record is written
NAME_MAX, PATH_MAX = 255, 4096  # Linux's limits for one name and a whole path, in bytes
PARTIAL_DIR = "partial"  # resumable downloads: kept across runs on purpose


def staging_root(data_dir: Path) -> Path:
    return data_dir / STAGING_NAME


@dataclass(frozen=True)
class KeptArchive:
    """A verified archive staged whole: a bundle carries it as it is, and the host that installs it unpacks it."""

    path: Path
    size: int
    sha256: str
    fmt: str
    dest: str  # its files go below this folder of the pack
    strip: int
    unpacked_size: int | None  # the recipe's estimate


class PackTransaction:
    def __init__(self, store: Store, data_dir: Path, key: str, *, keep_archives: bool = False, writes: WriteSettings = WriteSettings()):
        """`keep_archives`: a download step's archive is staged whole (see `keep_archive`),
        not extracted: a bundle carries it as it is, sparing a file per member.
        `writes`: the engine's; whether commit() syncs, and whether the writers may use fast paths."""
        self.store = store
        self.writes = writes
        self.data_dir = data_dir
        self.key = key
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in key)[:80]
        self.root = staging_root(data_dir) / f"txn-{safe}-{uuid.uuid4().hex[:8]}"
        self.files_root = self.root / "files"
        self.files: dict[str, FileRecord] = {}
        self.in_place: dict[str, InPlace] = {}  # files already in the data dir, kept as they are: neither staged nor moved
        self.kept_visible = False  # a tool step reads kept files from the staging area: link them there
        self.keep_archives = keep_archives
        self.archives: list[KeptArchive] = []
        self.committed = False
        # Whole new folders move in with one rename only while the staging area holds nothing
        # but the recorded files: a tool step may leave files it never declared.
        self.only_recorded_files = True
        self.files_root.mkdir(parents=True)
        self._files_root = os.fspath(self.files_root)
        self._made_dirs: set[str] = {""}  # a pack of many small files: one mkdir per folder, not per file

    def path_for(self, rel: str) -> str:
        """Where to stage the file that will appear at `data_dir/rel` (its folder made).

        A string, not a Path: for 20,000 small files pathlib's parsing costs more than the rest."""
        if len(rel) > NAME_MAX and any(len(part.encode()) > NAME_MAX for part in rel.split("/")) or len(os.fsencode(self.data_dir)) + len(rel.encode()) >= PATH_MAX:
            raise UnsafeArchiveError(
                f"{self.key}: {rel[:80]!r}... is longer than a filesystem allows (a name over {NAME_MAX} bytes, or a path over {PATH_MAX})",
                hint="the bundle or archive is damaged or hostile; nothing of this pack was installed",
            )
        folder = rel.rpartition("/")[0]
        if folder not in self._made_dirs:
            os.makedirs(os.path.join(self._files_root, folder), exist_ok=True)
            self._made_dirs.add(folder)
        return os.path.join(self._files_root, rel)

    def add(self, rel: str, size: int, sha256: str) -> None:
        self.files[rel] = FileRecord(rel, size, sha256)

    def keep_in_place(self, kept: InPlace) -> None:
        """A file already in the data dir (executor/inplace.py) is the pack's as it is: nothing is
        written or moved for it. With `kept_visible` (a later tool step reads it from the staging
        area) it is linked there; the link is dropped before the swap."""
        if self.kept_visible:
            staged = self.path_for(kept.rel)
            try:
                os.link(self.data_dir / kept.rel, staged)
            except OSError:  # a filesystem without hard links
                shutil.copyfile(self.data_dir / kept.rel, staged)
        self.in_place[kept.rel] = kept
        self.files[kept.rel] = FileRecord(kept.rel, kept.size, kept.sha256)

    def keep_unchanged(self, finder: InPlaceFinder) -> int:
        """Staged files that the installed version has already, as they are (an archive fetched
        again to repair one of its files): the staged copy goes, the installed file stays untouched.
        Returns how many."""
        kept = 0
        for rel, staged in list(self.files.items()):
            if rel in self.in_place or rel not in finder.recorded:
                continue
            found = finder.find(rel, staged.sha256, staged.size)
            if found is not None:
                os.unlink(os.path.join(self._files_root, rel))
                self.keep_in_place(found)
                kept += 1
        return kept

    def keep_archive(self, path: Path, size: int, sha256: str, *, fmt: str, dest: str, strip: int, unpacked_size: int | None) -> None:
        """Move a verified archive into the transaction, whole (only with keep_archives)."""
        kept = self.root / "archives" / f"{len(self.archives)}-{path.name}"
        kept.parent.mkdir(exist_ok=True)
        os.replace(path, kept)
        self.archives.append(KeptArchive(kept, size, sha256, fmt, dest, strip, unpacked_size))

    def commit(
        self, record: InstallRecord, previous: InstallRecord | None, *, others: Iterable[InstallRecord] = (), overwrite: bool = False
    ) -> None:
        """Under the data dir's commit lock. `others`: the other packs' records (who owns what);
        `overwrite`: replace files this pack does not own (recorded) instead of refusing."""
        record.files = sorted(self.files.values(), key=lambda f: f.path)
        folders = self._new_folders()
        ours = _owned(previous, self.data_dir)
        self._refuse_foreign_files_in_the_way(ours, folders)
        record.adopted, record.overwritten = self._claim(ours, folders, others, overwrite)
        if self.writes.durable:  # the one filesystem sync per pack, before its swap
            durable.sync_files(self.root, self._to_sync(folders), plain=self.writes.plain)
        journal = self._journal(previous, folders, set(record.adopted))
        try:
            durable.write_atomic(self.root / JOURNAL, json.dumps({**journal, "record": record.to_json()}).encode())  # no indent: json's C encoder
            roll_forward(self.root, self.data_dir, self.store.write_record, {**journal, "record": record}, undo_record=lambda: self._restore_record(previous))
        except OSError as exc:  # rolled back already (or, if even that failed, left to the journal)
            if (self.root / JOURNAL).exists():
                raise _commit_failed(exc, f"{self.key} could not be rolled back either: the next devops-cp command completes it from its journal") from exc
            raise _commit_failed(exc, f"{self.key} was rolled back: its files and install record are as they were before") from exc
        self.committed = True

    def _restore_record(self, previous: InstallRecord | None) -> None:
        """The record as it was before, unless it still is (its write failed before its rename)."""
        now = self.store.read_record(self.key)
        if (now and now.to_json()) == (previous and previous.to_json()):
            return
        if previous is None:
            self.store.delete_record(self.key)
        else:
            self.store.write_record(previous)

    def _new_folders(self) -> list[str]:
        """The pack's top-level folders that nothing in the data dir stands in the way of."""
        if not self.only_recorded_files:
            return []
        tops = {_top(rel) for rel in self.files if "/" in rel}
        return sorted(top for top in tops if not os.path.lexists(self.data_dir / top))

    def _claim(self, ours: set[str], folders: list[str], others: Iterable[InstallRecord], overwrite: bool) -> tuple[list[str], list[str]]:
        """A file already where this pack puts one, and not this pack's: the very same bytes, a plain
        file of this user with one link (whisper downloaded it itself, say), is adopted (kept in place,
        recorded, never deleted by `remove`); anything else is refused unless `overwrite`.
        Returns (adopted, overwritten)."""
        new = set(folders)
        owners = {f.path: r.key for r in others if r.key != self.key and Path(r.data_dir) == self.data_dir for f in r.files}
        adopted, overwritten = [], []
        for rel, staged in sorted(self.files.items()):
            if rel in self.in_place:
                self._check_still_in_place(self.in_place[rel], owners)
                if self.in_place[rel].adopted:
                    adopted.append(rel)
                continue
            if _top(rel) in new or rel in ours:
                continue
            final = os.path.join(self.data_dir, rel)
            try:
                found = os.lstat(final)
            except (FileNotFoundError, NotADirectoryError):  # nothing there, or a file of the previous version where this one has a folder
                continue
            if stat.S_ISDIR(found.st_mode):
                continue  # a folder in the way: it holds only this pack's files (checked above)
            if rel not in owners and _adoptable(found) and found.st_size == staged.size and hash_file(Path(final)).sha256 == staged.sha256:
                adopted.append(rel)
            elif overwrite:
                overwritten.append(rel)
            else:
                whose = f"{owners[rel]}'s" if rel in owners else "recorded by no pack"
                raise PolicyError(
                    f"{final} is already there and is not {self.key}'s ({whose}); {self.key} would replace it",
                    hint="move it away, or pass --overwrite to replace it (the install record says so); nothing was changed",
                )
        return adopted, overwritten

    def _check_still_in_place(self, kept: InPlace, owners: dict[str, str]) -> None:
        """A kept file is still the one that was checked (same inode, size and time), and no other pack has claimed it since."""
        path = os.path.join(self.data_dir, kept.rel)
        try:
            same = identity(os.lstat(path)) == kept.identity
        except (FileNotFoundError, NotADirectoryError):
            same = False
        if not same or kept.rel in owners:
            raise TrustError(
                f"{path} changed while {self.key} was being installed (it was kept as it was, not fetched again)",
                hint="run the install again; nothing was changed",
            )

    def _refuse_foreign_files_in_the_way(self, ours: set[str], folders: list[str]) -> None:
        """A folder standing where this version has a file is removed to make way: it may hold
        only the previous version's files, never a user's or another pack's."""
        new = set(folders)
        for rel in self.files:
            if _top(rel) in new:
                continue  # nothing stands in a folder the data dir does not have
            final = os.path.join(self.data_dir, rel)
            if os.path.isdir(final) and not os.path.islink(final):
                for found in _entries_below(final, self.data_dir):
                    if found not in ours:
                        raise PolicyError(
                            f"{final} is a folder, and this version of {self.key} has a file there; it holds {found}, which is not {self.key}'s",
                            hint="move that folder's contents elsewhere, then run again; nothing was changed",
                        )

    def _to_sync(self, folders: list[str]) -> Iterator[Path]:
        """Without syncfs: every file, and every folder that will be renamed in whole (its entries)."""
        yield from (self.files_root / rel for rel in self.files if rel not in self.in_place)
        if folders:
            moved = set(folders)
            folders_inside = {parent for rel in self.files if _top(rel) in moved for parent in _parents(rel)}
            yield from (self.files_root / folder for folder in sorted(folders_inside))

    def _journal(self, previous: InstallRecord | None, folders: list[str], adopted: set[str]) -> dict:
        """What roll_forward does, but the record (added by commit).

        The previous version's files are removed where it lived (its record's own data dir, which
        a changed configuration may have moved), and only those its record lists as its own."""
        leftovers: list[str] = []
        if previous is not None:
            kept = set(self.files) if Path(previous.data_dir) == self.data_dir else set()
            leftovers = sorted(_owned(previous, Path(previous.data_dir)) - kept)
        moved = set(folders)
        in_place = adopted | set(self.in_place)
        renames = sorted(rel for rel in self.files if _top(rel) not in moved and rel not in in_place)
        for rel in in_place:  # kept where it is: a staged copy (or link) is not needed
            try:
                os.unlink(self.files_root / rel)
            except FileNotFoundError:
                pass
        remove_from = previous.data_dir if previous is not None else str(self.data_dir)
        return {"key": self.key, "folders": folders, "renames": renames, "remove": leftovers, "remove_from": remove_from}

    def abort(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "PackTransaction":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.committed:
            self.abort()


def _owned(record: InstallRecord | None, data_dir: Path) -> set[str]:
    """The files `record` owns in `data_dir`: none in another dir, never one it adopted."""
    if record is None or Path(record.data_dir) != data_dir:
        return set()
    return {f.path for f in record.files} - set(record.adopted)


def _adoptable(found: os.stat_result) -> bool:
    """A plain file of this user with a single link: adopting it can change nothing else."""
    return stat.S_ISREG(found.st_mode) and found.st_uid == os.getuid() and found.st_nlink == 1


def _top(rel: str) -> str:
    """The top-level folder (or file) of a path in the pack: the unit a folder swap moves."""
    return rel.split("/", 1)[0]


def roll_forward(
    txn_root: Path, data_dir: Path, write_record: Callable[[InstallRecord], None], journal: dict | None = None, *, undo_record: Callable[[], None] | None = None
) -> None:
    """Idempotent: safe to run again after a kill at any point inside it.

    `journal`: the one commit() has just written, as it holds it (its record an InstallRecord), so
    that 20,000 file entries are not read back; otherwise the journal on disk (recovery).
    `undo_record`: given by the run that wrote the journal (it knows every step taken): a failure
    before the record is written rolls the pack back to what was there before, and re-raises.
    Recovery rolls forward only: the steps of a killed run are not known to it.
    """
    if journal is None:
        journal = json.loads((txn_root / JOURNAL).read_text(encoding="utf-8"))
        journal["record"] = InstallRecord.from_json(journal["record"])
    record = journal["record"]
    swap = _Swap(txn_root, data_dir)
    old_dir = Path(journal.get("remove_from") or data_dir)  # journals of earlier versions have none: the same dir
    try:
        swap.move_in(journal, record, set_aside_leftovers=old_dir == data_dir)
        if undo_record is not None:
            swap.undo.append(undo_record)  # first: a write that failed after its rename must be undone too
        write_record(record)
    except BaseException:
        if undo_record is not None:
            swap.roll_back()
        raise
    # Decided and done: the previous version's files go, and only now (a failure above restored them).
    for rel in journal["remove"]:
        gone = old_dir / rel
        if old_dir != data_dir:
            gone.unlink(missing_ok=True)
        prune_empty_parents(gone.parent, old_dir)
    shutil.rmtree(txn_root, ignore_errors=True)


class _Swap:
    """The renames of one transaction, each recorded with its inverse while this run makes them."""

    def __init__(self, txn_root: Path, data_dir: Path):
        self.files_root, self.aside_root, self.top = os.path.join(txn_root, "files"), os.path.join(txn_root, ASIDE), os.fspath(data_dir)
        self.journal_path = txn_root / JOURNAL
        self.undo: list[Callable[[], None]] = []  # each step's inverse, appended once the step is done
        self.aside_dirs: set[str] = set()

    def move_in(self, journal: dict, record: InstallRecord, *, set_aside_leftovers: bool) -> None:
        # The previous version's leftovers go aside first: its file `a` may stand where the new version has a folder `a/`.
        if set_aside_leftovers:
            for rel in journal["remove"]:
                self._set_aside(rel)
        renames = list(journal["renames"])
        touched: set[str] = set()
        for folder in journal.get("folders", []):  # journals of earlier versions have none
            staged, final = os.path.join(self.files_root, folder), os.path.join(self.top, folder)
            if not os.path.lexists(staged):
                continue  # moved by an earlier run that was killed
            if _move_folder(staged, final):
                self.undo.append(lambda staged=staged, final=final: os.replace(final, staged))
                touched.add(self.top)
            else:
                renames += [f.path for f in record.files if f.path.startswith(folder + "/")]
        for rel in renames:
            staged, final = os.path.join(self.files_root, rel), os.path.join(self.top, rel)
            touched.add(os.path.dirname(final))  # also when an earlier, killed run moved it: it may not have synced the folder
            if not os.path.lexists(staged):
                continue  # moved by an earlier run that was killed
            self._set_aside(rel)
            made = move_into_place(staged, final)
            self.undo.append(lambda staged=staged, final=final, made=made: _take_back(staged, final, made))
        for directory in touched:
            durable.fsync_dir(directory)

    def _set_aside(self, rel: str) -> None:
        """A file (or link) of the previous version, or one --overwrite replaces, moved into the staging area."""
        final, aside = os.path.join(self.top, rel), os.path.join(self.aside_root, rel)
        try:
            if stat.S_ISDIR(os.lstat(final).st_mode):
                return  # the new version's folder (a killed run moved it in), or one move_into_place clears
        except (FileNotFoundError, NotADirectoryError):
            return
        folder = os.path.dirname(aside)
        if folder not in self.aside_dirs:
            os.makedirs(folder, exist_ok=True)
            self.aside_dirs.add(folder)
        os.replace(final, aside)
        self.undo.append(lambda: _put_back(aside, final))

    def roll_back(self) -> None:
        """Every step undone, the last first; then the journal goes: nothing of the transaction is visible.
        A step that cannot be undone stops it: the journal stays, and the next run rolls forward."""
        try:
            for undo in reversed(self.undo):
                try:
                    undo()
                except FileNotFoundError:
                    pass  # its step had not happened: the error came from it
            self.journal_path.unlink()
        except OSError:
            return


def _take_back(staged: str, final: str, made: str | None) -> None:
    """A new file back into the staging area, and the folders made for it (empty now) removed."""
    os.replace(final, staged)
    if made is not None:
        prune_empty_parents(Path(final).parent, Path(made).parent)


def _put_back(aside: str, final: str) -> None:
    os.makedirs(os.path.dirname(final), exist_ok=True)  # a folder the swap removed once it was empty
    os.replace(aside, final)


def _commit_failed(exc: OSError, what: str) -> DataPackError:
    """An OSError while moving a pack into place, as the README's exit 5, saying `what` became of the pack."""
    named = [str(name) for name in (exc.filename, exc.filename2) if name]
    where = next((name for name in named if STAGING_NAME not in name), "its data directory")  # the data dir's side of a rename
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        error: DataPackError = NoSpaceError(str(where), 0)
        error.message = f"not enough space to move files into place ({where}): {what}"
    elif exc.errno == errno.EXDEV:
        error = NotWritableError(str(where), f"it is on another filesystem than the data directory (a mount point inside it?); {what}")
        error.hint = "a pack's files are moved into place by rename: keep its data directory on one filesystem, or point this data type elsewhere in the config file's [data_dirs]"
    else:
        error = NotWritableError(str(where), f"{exc.strerror or exc}; {what}")
    return error


def _move_folder(staged: str, final: str) -> bool:
    """One rename for a whole new folder; False when its files must move one by one instead.

    Idempotent: a staged folder that is gone was moved by an earlier run that was killed. Something
    that appeared at `final` since the journal was written (only a process not holding the data
    dir's lock could put it there) is merged into file by file, as an update is.
    """
    if not os.path.lexists(staged):
        return True
    try:
        os.replace(staged, final)  # replaces nothing but an empty folder
        return True
    except OSError:
        return False


def _entries_below(folder: str, data_dir: Path) -> Iterator[str]:
    """Files, links and links to folders below `folder`, as paths relative to `data_dir`."""
    for where, folders, names in os.walk(folder):
        for name in names + [f for f in folders if os.path.islink(os.path.join(where, f))]:
            yield os.path.relpath(os.path.join(where, name), data_dir).replace(os.sep, "/")


def _parents(rel: str) -> Iterator[str]:
    """'a/b/c' -> 'a', 'a/b' (relative to the staging area's files/)."""
    parts = rel.split("/")
    for n in range(1, len(parts)):
        yield "/".join(parts[:n])


def move_into_place(staged: str, final: str) -> str | None:
    """Rename a staged file over its final name: one rename when nothing is in the way.
    Returns the topmost folder it had to make for it, if any (a rollback removes it again).

    Idempotent: a staged file that is gone was moved by an earlier run that was killed.
    """
    made = None
    try:
        for _ in range(2):
            try:
                os.replace(staged, final)
                return made
            except FileNotFoundError:
                if not os.path.lexists(staged):
                    return made
                made = made or _topmost_missing(os.path.dirname(final))
                os.makedirs(os.path.dirname(final), exist_ok=True)  # the first file of a new folder
            except IsADirectoryError:
                shutil.rmtree(final)  # a directory where the new version has a file
        os.replace(staged, final)
        return made
    except OSError:
        if made is not None:  # not moved after all: no empty folder made for it stays
            prune_empty_parents(Path(final).parent, Path(made).parent)
        raise


def _topmost_missing(folder: str) -> str | None:
    missing = None
    while not os.path.lexists(folder):
        missing, folder = folder, os.path.dirname(folder)
    return missing


def prune_empty_parents(directory: Path, stop: Path) -> None:
    while directory != stop and stop in directory.parents:
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent


def recover(store: Store, data_dir: Path) -> list[str]:
    """Finish or undo what a killed run left in one data dir. Returns what was done.

    The caller holds the data dir's commit lock. A journal is written only under that lock, so a
    journaled transaction is a killed run's: it is rolled forward. One without a journal may be a
    live run's download in progress: it is removed only while no run is staging in the data dir.
    """
    done = []
    root = staging_root(data_dir)
    if not root.is_dir():
        return done
    for txn_root in sorted(root.glob("txn-*")):
        if (txn_root / JOURNAL).is_file():
            journal, problem = read_journal(txn_root, data_dir, store)
            if journal is None:  # removed below with the other unfinished staging areas, never acted on
                done.append(f"warning: ignored the journal in {txn_root}: {problem}")
                continue
            try:
                roll_forward(txn_root, data_dir, store.write_record, journal)
            except OSError as exc:  # its journal stays: nothing of it is removed below
                raise _commit_failed(exc, f"an interrupted install of {journal['record'].key} could not be completed; every devops-cp command tries again") from exc
            done.append(f"completed an interrupted install in {data_dir}")
    with store.staging_idle(data_dir) as idle:
        if idle:
            for txn_root in sorted(root.glob("txn-*")):
                shutil.rmtree(txn_root, ignore_errors=True)
                done.append(f"removed an unfinished staging area in {data_dir}")
            remove_empty_staging(data_dir)
    return done


_JOURNAL_FIELDS = {"key", "folders", "renames", "remove", "remove_from", "record"}


def read_journal(txn_root: Path, data_dir: Path, store: Store) -> tuple[dict | None, str | None]:
    """A journal left on disk, read as untrusted input (issue 18, rule 2): (journal, None), or
    (None, why it must not be acted on).

    Anyone who could write into the staging area could plant one, so it may act only inside
    `data_dir`, only for a pack whose data type this host's config or its existing records put
    there, and only on canonical paths below it that are not the staging area.
    """
    try:
        doc = json.loads((txn_root / JOURNAL).read_bytes())
        unknown = sorted(set(doc) - _JOURNAL_FIELDS) if isinstance(doc, dict) else ["(not an object)"]
        if unknown or not {"renames", "remove", "record"} <= set(doc):
            return None, f"unexpected fields {unknown}" if unknown else "fields are missing"
        record = InstallRecord.from_json(doc["record"])
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        return None, f"it cannot be read ({exc})"
    if record.data_dir != str(data_dir):
        return None, f"its record names data directory {record.data_dir!r}, not {str(data_dir)!r}"
    if not is_identifier(record.data_type) or not is_identifier(record.pack_id) or record.key != pack_key(record.pack_id, record.choices):
        return None, f"its pack {record.key!r} or data type {record.data_type!r} is not a name this tool writes"
    if store.data_dir(record.data_type) != data_dir and not any(r.data_dir == record.data_dir for r in store.records() if r.data_type == record.data_type):
        return None, f"neither the config nor an install record puts data type {record.data_type!r} in {data_dir}"
    lists = {name: doc.get(name, []) for name in ("folders", "renames", "remove")}
    for name, paths in {**lists, "record files": [f.path for f in record.files]}.items():
        if not isinstance(paths, list) or not all(isinstance(p, str) and relative_path_problem(p) is None for p in paths):
            return None, f"its {name} are not all plain paths inside the data directory"
    remove_from = doc.get("remove_from", str(data_dir))  # where the previous version lived: here, or its record's own dir
    previous = store.read_record(record.key)
    if remove_from != str(data_dir) and (previous is None or previous.data_dir != remove_from):
        return None, f"it would remove files in {remove_from!r}, where no install record of {record.key!r} puts them"
    return {**lists, "key": doc.get("key"), "remove_from": remove_from, "record": record}, None


def tidy_staging(store: Store, data_dir: Path) -> None:
    """No empty staging folders left in a user's data dir, unless another run is staging there."""
    with store.staging_idle(data_dir) as idle:
        if idle:
            remove_empty_staging(data_dir)


def remove_empty_staging(data_dir: Path) -> None:
    """No empty staging folders left behind in users' data dirs; kept partial downloads stay.

    Call it only while no run stages there (`Store.staging_idle`).
    """
    root = staging_root(data_dir)
    for directory in (root / PARTIAL_DIR, root):
        try:
            directory.rmdir()
        except OSError:
            pass  # missing, or not empty: a partial download kept to resume from


def recover_all(store: Store) -> list[str]:
    """Recover every data dir whose lock is free now; one held by a live run is its business."""
    done = []
    remove_dead_temp_files(store.records_dir)
    for data_dir in store.known_data_dirs():
        if not staging_root(data_dir).is_dir():
            continue
        try:
            with store.locked([data_dir], timeout=0):
                done += recover(store, data_dir)
        except LockTimeout:
            continue
        except DataPackError as exc:  # say so, and let the command go on: an install in that data dir is refused (exit 5)
            done.append(f"warning: {exc}")
    return done


def remove_dead_temp_files(directory: Path) -> None:
    """`write_atomic`'s `.NAME.PID.tmp`, left when its process was killed before the rename."""
    for tmp in directory.glob(".*.tmp") if directory.is_dir() else ():
        pid = tmp.name.rsplit(".", 2)[-2]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True
