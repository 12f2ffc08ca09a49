"""The store: data directories, install records, locks, freshness and usage.

Records live in the XDG state directory (~/.local/state/devops-cp/records), one
JSON file per pack and chosen options, never inside the data directories.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from json.encoder import encode_basestring_ascii as _json_string
from pathlib import Path
from typing import Callable, Iterator

import filelock

from executor import durable
from executor.config import Config, state_dir
from manifests.datatypes import default_dir
from manifests.errors import ConfigError, LockTimeout, NotWritableError
from manifests.names import STAGING_NAME as STAGING_NAME  # where txn.py and transfer.py have always found it
from manifests.names import record_file_name


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True, slots=True)  # a pack may have tens of thousands: no __dict__ each
class FileRecord:
    path: str  # relative to the data dir
    size: int
    sha256: str


@dataclass
class InstallRecord:
    key: str
    pack_id: str
    label: str
    data_type: str
    data_dir: str
    choices: dict[str, str]
    files: list[FileRecord]
    source: str  # a URL, a local file, or "bundle:<id>"
    installed_at: str
    fetched_at: str  # when the data left upstream: freshness is judged by this
    checksum_verified: bool = True
    update_schedule: str = "manual"
    bundle_created: str | None = None
    extra: dict = field(default_factory=dict)
    adopted: list[str] = field(default_factory=list)  # files that were there already, the same bytes: never deleted
    overwritten: list[str] = field(default_factory=list)  # files it replaced that were not its own (--overwrite)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> dict:
        """Built directly: dataclasses.asdict deep-copies field by field, slow for 20,000 files."""
        data = self._fields_but_files()
        data["files"] = [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in self.files]
        return data

    def dumps(self) -> bytes:
        """The record file: sorted keys, two-space indent, one file per line.

        json's indent mode runs its pure-Python encoder, slow for a long file list, so the
        files are written one line each and set in place of an empty list.
        """
        data = self._fields_but_files()
        data["files"] = []
        text = json.dumps(data, indent=2, sort_keys=True)
        if self.files:
            lines = ",\n    ".join(map(_file_line, self.files))
            text = text.replace('\n  "files": []', f'\n  "files": [\n    {lines}\n  ]', 1)  # the top-level key: nested ones are indented further
        return text.encode()

    def _fields_but_files(self) -> dict:
        data = {name: getattr(self, name) for name in _RECORD_FIELDS if name != "files"}
        data["choices"], data["extra"] = dict(self.choices), dict(self.extra)
        data["adopted"], data["overwritten"] = list(self.adopted), list(self.overwritten)
        return data

    @classmethod
    def from_json(cls, data: dict) -> "InstallRecord":
        data = dict(data)
        data["files"] = [FileRecord(**f) for f in data["files"]]
        return cls(**data)


_RECORD_FIELDS = tuple(f.name for f in fields(InstallRecord))


def _file_line(f: FileRecord) -> str:
    """One file as json.dumps(..., sort_keys=True) writes it, without a dict per file."""
    return f'{{"path": {_json_string(f.path)}, "sha256": {_json_string(f.sha256)}, "size": {f.size:d}}}'


def _xdg(base: str, env: str, fallback: str) -> Path:
    value = os.environ.get(env)
    return Path(value) if value and os.path.isabs(value) else Path(fallback).expanduser()


def resolve_default_dir(data_type: str) -> Path:
    """Map the seed's `~/.cache/...` and `~/.local/share/...` onto the XDG variables."""
    text = default_dir(data_type)
    for prefix, env in (("~/.cache", "XDG_CACHE_HOME"), ("~/.local/share", "XDG_DATA_HOME")):
        if text == prefix or text.startswith(prefix + "/"):
            return _xdg(prefix, env, prefix) / text[len(prefix) + 1:]
    return Path(text).expanduser()


class Store:
    def __init__(self, config: Config, state: Path | None = None):
        self.config = config
        self.state = state or state_dir()
        self.records_dir = self.state / "records"
        self.locks_dir = self.state / "locks"

    # --- where things live ------------------------------------------------------

    def data_dir(self, data_type: str) -> Path:
        return self.config.data_dirs.get(data_type) or resolve_default_dir(data_type)

    def known_data_dirs(self, records: list[InstallRecord] | None = None) -> list[Path]:
        from manifests.datatypes import DEFAULT_DATA_DIRS

        dirs = {self.data_dir(t) for t in DEFAULT_DATA_DIRS} | set(self.config.data_dirs.values())
        dirs |= set(map(Path, {r.data_dir for r in (self.records() if records is None else records)}))
        return sorted(dirs)

    # --- records ------------------------------------------------------------------

    def _record_path(self, key: str) -> Path:
        return self.records_dir / record_file_name(key)  # distinct keys never share a file

    @staticmethod
    def _load(path: Path) -> InstallRecord:
        try:
            return InstallRecord.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigError(
                f"{path} is not a valid install record: {exc}",
                hint="move it away; the pack then counts as not installed and can be installed again",
            ) from exc

    def read_record(self, key: str) -> InstallRecord | None:
        path = self._record_path(key)
        return self._load(path) if path.is_file() else None

    def records(self) -> list[InstallRecord]:
        """Every install record. Each file is parsed once while it stays the same file: a record is
        only ever replaced by a rename, so its inode, size and mtime tell a new one from a known one
        (a web audit with 200 packs installed stats 200 files instead of parsing them)."""
        if not self.records_dir.is_dir():
            return []
        found = []
        for entry in sorted(os.scandir(self.records_dir), key=lambda e: e.name):
            if not entry.name.endswith(".json") or entry.name.startswith("."):
                continue
            stat = entry.stat()
            stamp = (entry.path, stat.st_ino, stat.st_size, stat.st_mtime_ns)
            record = _parsed.get(stamp)
            if record is None:
                record = self._load(Path(entry.path))
                _parsed.put(stamp, record)
            found.append(record)
        return found

    def records_for_pack(self, pack_id: str) -> list[InstallRecord]:
        return [r for r in self.records() if r.pack_id == pack_id]

    def write_record(self, record: InstallRecord) -> None:
        self.records_dir.mkdir(parents=True, exist_ok=True)
        durable.write_atomic(self._record_path(record.key), record.dumps())

    def delete_record(self, key: str) -> None:
        self._record_path(key).unlink(missing_ok=True)

    # --- locks --------------------------------------------------------------------
    #
    # Three kinds, always taken in this order so that no two runs can deadlock:
    #   a pack's lock     held while its files are fetched into its own staging area (no timeout:
    #                     a second run of the same pack waits for the first, then finds it installed);
    #   staging (shared)  held by every run staging in a data dir, so that tidying up never deletes a
    #                     live run's staging area (tidying takes it exclusively, without waiting);
    #   a data dir's lock the commit: journal, renames, record; `lock_timeout` bounds this wait only.
    # All are flock()s: a killed process releases them, so a stale lock never blocks.

    def _lock_file(self, kind: str, name: str) -> str:
        self.locks_dir.mkdir(parents=True, exist_ok=True)
        return str(self.locks_dir / f"{kind}{hashlib.sha256(name.encode()).hexdigest()[:16]}.lock")

    @contextmanager
    def locked(self, data_dirs: list[Path], timeout: float | None = None, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
        """The commit lock of each data directory, taken in sorted order."""
        timeout = self.config.lock_timeout if timeout is None else timeout
        with ExitStack() as stack:
            for directory in sorted(set(Path(d).resolve() for d in data_dirs)):
                lock = filelock.FileLock(self._lock_file("", str(directory)), timeout=timeout)
                try:
                    stack.enter_context(_acquire(lock, on_wait, f"waiting for another devops-cp run to finish its commit in {directory}"))
                except filelock.Timeout as exc:
                    raise LockTimeout(
                        f"another devops-cp run holds the lock on {directory} (waited {timeout:.0f}s)",
                        hint="wait for it to finish, then run this again",
                    ) from exc
            yield

    @contextmanager
    def pack_locked(self, packs: dict[str, Path], on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
        """The locks of these packs ({key: data dir}, taken in sorted order), held while they download;
        waits as long as the other run's download takes."""
        with ExitStack() as stack:
            for key in sorted(packs):
                lock = filelock.FileLock(self._lock_file("pack-", key), timeout=-1)
                stack.enter_context(_acquire(lock, on_wait, f"waiting for another devops-cp run that is installing {key} into {packs[key]}"))
            yield

    @contextmanager
    def staging(self, data_dir: Path) -> Iterator[None]:
        """Shared by every run that stages files in `data_dir` (see `staging_idle`)."""
        name = str(Path(data_dir).resolve())
        with _Flock(self._lock_file("staging-", name), fcntl_flags=fcntl.LOCK_SH), _staging_here.holding(name):
            yield

    @contextmanager
    def staging_idle(self, data_dir: Path) -> Iterator[bool]:
        """True (held until the block ends) when no run is staging in `data_dir`: what staging holds is left over."""
        name = str(Path(data_dir).resolve())
        if _staging_here.busy(name):  # this process's own threads (flock would say so too, but not on every filesystem)
            yield False
            return
        flock = _Flock(self._lock_file("staging-", name), fcntl_flags=fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            flock.__enter__()
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            flock.__exit__(None, None, None)

    # --- checks -----------------------------------------------------------------

    def ensure_writable(self, directory: Path) -> None:
        """Checked, not assumed: create the directory and a file in it."""
        try:
            directory.mkdir(parents=True, exist_ok=True)
            probe = directory / f".devops-cp-probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise NotWritableError(str(directory), exc.strerror or str(exc)) from exc

    # --- freshness and usage -------------------------------------------------------

    def freshness(self, record: InstallRecord | None, schedule_seconds: int | None, now: float | None = None) -> dict:
        now = time.time() if now is None else now
        if record is None:
            return {"stale": True, "reason": "never downloaded"}
        age = now - parse_iso(record.fetched_at).timestamp()
        result = {"age_seconds": int(age), "fetched_at": record.fetched_at, "installed_at": record.installed_at}
        if schedule_seconds is None:
            return {**result, "stale": False, "reason": "manual updates only"}
        stale = age > schedule_seconds
        return {
            **result,
            "stale": stale,
            "reason": "older than its update schedule" if stale else "fresh",
            "next_update_seconds": 0 if stale else int(schedule_seconds - age),
        }

    def usage(self, records: list[InstallRecord] | None = None) -> list[dict]:
        """Bytes of installed packs per data dir that exists, from the records: no walk of the disk."""
        records = self.records() if records is None else records
        sizes: dict[str, int] = {}
        for record in records:
            sizes[record.data_dir] = sizes.get(record.data_dir, 0) + record.size
        return [{"path": str(d), "size_bytes": sizes.get(str(d), 0)} for d in self.known_data_dirs(records) if d.is_dir()]


@contextmanager
def _acquire(lock: filelock.FileLock, on_wait: Callable[[str], None] | None, waiting: str) -> Iterator[None]:
    """Take `lock`; a run that has to wait says so at once (`on_wait(waiting)`), then waits."""
    try:
        lock.acquire(blocking=False)
    except filelock.Timeout:
        if on_wait is not None:
            on_wait(waiting)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


class _Flock:
    """A flock() on a descriptor of its own, shared or exclusive (filelock has no shared flock);
    released by close, or by the process's death."""

    def __init__(self, path: str, *, fcntl_flags: int):
        self.path, self.flags, self.fd = path, fcntl_flags, -1

    def __enter__(self) -> "_Flock":
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, self.flags)
        except BaseException:
            os.close(self.fd)
            raise
        return self

    def __exit__(self, *exc) -> None:
        os.close(self.fd)


class _StagingHere:
    """How many of this process's threads stage in each data dir."""

    def __init__(self):
        self._lock = threading.Lock()
        self._count: dict[str, int] = {}

    @contextmanager
    def holding(self, name: str) -> Iterator[None]:
        with self._lock:
            self._count[name] = self._count.get(name, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._count[name] -= 1

    def busy(self, name: str) -> bool:
        with self._lock:
            return self._count.get(name, 0) > 0


_staging_here = _StagingHere()


class _ParsedRecords:
    """Parsed install records by (path, inode, size, mtime), shared by the Stores of one process."""

    LIMIT = 4096

    def __init__(self):
        self._lock = threading.Lock()
        self._by_stamp: dict[tuple, InstallRecord] = {}

    def get(self, stamp: tuple) -> InstallRecord | None:
        with self._lock:
            return self._by_stamp.get(stamp)

    def put(self, stamp: tuple, record: InstallRecord) -> None:
        with self._lock:
            if len(self._by_stamp) >= self.LIMIT:
                self._by_stamp.clear()
            self._by_stamp[stamp] = record


_parsed = _ParsedRecords()
