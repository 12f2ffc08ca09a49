"""The store: data directories, install records, locks, freshness and usage.

Records live in the XDG state directory (~/.local/state/devops-cp/records), one
JSON file per pack and chosen options, never inside the data directories.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from json.encoder import encode_basestring_ascii as _json_string
from pathlib import Path
from typing import Iterator

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

    def known_data_dirs(self) -> list[Path]:
        from manifests.datatypes import DEFAULT_DATA_DIRS

        dirs = {self.data_dir(t) for t in DEFAULT_DATA_DIRS} | set(self.config.data_dirs.values())
        dirs |= {Path(r.data_dir) for r in self.records()}
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
        if not self.records_dir.is_dir():
            return []
        return [self._load(p) for p in sorted(self.records_dir.glob("*.json"))]

    def records_for_pack(self, pack_id: str) -> list[InstallRecord]:
        return [r for r in self.records() if r.pack_id == pack_id]

    def write_record(self, record: InstallRecord) -> None:
        self.records_dir.mkdir(parents=True, exist_ok=True)
        durable.write_atomic(self._record_path(record.key), record.dumps())

    def delete_record(self, key: str) -> None:
        self._record_path(key).unlink(missing_ok=True)

    # --- locks --------------------------------------------------------------------

    @contextmanager
    def locked(self, data_dirs: list[Path], timeout: float | None = None) -> Iterator[None]:
        """One lock per data directory, taken in sorted order so two runs cannot deadlock.

        The locks are flock()s: a killed process releases them, so a stale lock never blocks.
        """
        timeout = self.config.lock_timeout if timeout is None else timeout
        self.locks_dir.mkdir(parents=True, exist_ok=True)
        with ExitStack() as stack:
            for directory in sorted(set(Path(d).resolve() for d in data_dirs)):
                name = hashlib.sha256(str(directory).encode()).hexdigest()[:16]
                lock = filelock.FileLock(str(self.locks_dir / f"{name}.lock"), timeout=timeout)
                try:
                    stack.enter_context(lock)
                except filelock.Timeout as exc:
                    raise LockTimeout(
                        f"another devops-cp run holds the lock on {directory} (waited {timeout:.0f}s)",
                        hint="wait for it to finish, then run this again",
                    ) from exc
            yield

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

    def usage(self) -> list[dict]:
        result = []
        for directory in self.known_data_dirs():
            if directory.is_dir():
                size = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file() and not p.is_symlink())
                result.append({"path": str(directory), "size_bytes": size})
        return result
