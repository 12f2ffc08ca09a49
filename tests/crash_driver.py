"""Crash consistency: a child process that SIGKILLs itself at a chosen point, and the
scenarios and checks that `tests/test_crash.py` (a few kill points) and
`tools/crash_run.py` (the long run) share. Nothing here imports pytest.

The child:

    python tests/crash_driver.py KILL_AT data install PACK ...
    python tests/crash_driver.py KILL_AT data sideload BUNDLE --trust site.pub ...

runs `devops-cp` in-process after arming one kill point, from outside the code it
kills: the product has no test hook. KILL_AT is one of

    none              run normally
    bytes:N           after N bytes went through the streaming copy into files (download,
                      extraction, bundle member), flushed, so a partial file is on disk; an odd N
                      sends a sideload's small files through SmallFilesProcess' child, an even N
                      writes them on SmallFiles' thread
    lock:pack         holding a pack's download lock, before the download starts
    lock:commit       holding a data dir's commit lock, before recovery and the commit
    staging           every file staged, before the durability sync and the journal
    journal           the journal is on disk, before the first rename
    rename:N          after the N-th rename in the data dir (N counts across packs): a file of the
                      previous version set aside, or one of the new version moved into place
    remove:N          after the N-th removal of a file the new version no longer has (the record
                      is written by then)
    records:tmp       the install record's temp file is written, not yet renamed into place
    records:before    the renames are done, the install record not yet written
    records:after     the install record written, the staging area not yet removed
    cleanup           the staging area half removed (its files gone, its journal still there)
    hold:PATH         not a kill: with every file staged (the lock held), create PATH.held and
                      wait until PATH exists, then go on (for tests of a second run meanwhile)

A scenario installs v1 of its packs, saves the whole HOME as a template, and then for
every kill point restores the template, runs the v2 command with that kill point armed,
and checks: right after the kill, every file under its final name is a complete v1 or
v2 file; after any command (`status`) recovered, every installed file matches its
record, each pack is entirely v1 or entirely v2, nothing of a staging area is left but
resumable partial downloads; and re-running the command finishes with v2 and leaves no
staging directory at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from support.tarballs import folder_tar_gz

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
STAGING = ".devops-cp-staging"
USER_FILE = "notes.txt"  # the user's own file in the data dir: never touched

PHASES = ("staging", "journal", "rename", "remove", "records:tmp", "records:before", "records:after", "cleanup")


# --- the child ------------------------------------------------------------------------------------


def _die(out=None) -> None:
    if out is not None:
        out.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _arm_bytes(limit: int) -> None:
    from executor import transfer

    original = transfer.Copy.feed
    lock = threading.Lock()
    state = {"written": 0}

    def counted(copy, chunks):
        for chunk in chunks:
            with lock:
                room = limit - state["written"]
                piece = chunk if len(chunk) <= room else chunk[:room]
                state["written"] += len(piece)
                reached = state["written"] >= limit
            yield piece
            if reached:  # feed() asked for more: the piece is written
                _die(copy.out)

    def feed(self, chunks):
        return original(self, chunks if self.out is None else counted(self, chunks))

    original_whole = transfer._write_whole

    def write_whole(path, data):  # small files, written whole on SmallFiles' thread
        with lock:
            room = limit - state["written"]
            piece = data if len(data) <= room else data[:room]
            state["written"] += len(piece)
            reached = state["written"] >= limit
        original_whole(path, piece)
        if reached:
            _die()

    original_send = transfer.SmallFilesProcess.write

    def send(self, path, data):  # small files, sent whole to SmallFilesProcess' child
        with lock:
            room = limit - state["written"]
            piece = data if len(data) <= room else data[:room]
            state["written"] += len(piece)
            reached = state["written"] >= limit
        original_send(self, path, piece)
        if reached:
            self.process.stdin.flush()  # the child has it; it may or may not write it before it sees this process gone
            _die()

    transfer.Copy.feed = feed
    transfer._write_whole = write_whole
    transfer.SmallFilesProcess.write = send
    # Half of the byte kill points run the small files through the child process, half through the thread.
    transfer.SmallFilesProcess.MIN_FILES = 1 if limit % 2 else 10**9


class _Proxy:
    """A module stand-in whose one function is wrapped; everything else is the real module."""

    def __init__(self, module, **overrides):
        self._module, self._overrides = module, overrides

    def __getattr__(self, name):
        return self._overrides.get(name) or getattr(self._module, name)


def _after_nth(n: int, function):
    calls = {"n": 0}

    def wrapped(*args, **kwargs):
        result = function(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] >= n:
            _die()
        return result

    return wrapped


def _arm_lock(store_class, method: str) -> None:
    """Die holding the lock: a pack's download lock (before its first byte) or a data dir's commit lock."""
    from contextlib import contextmanager

    real = getattr(store_class, method)

    @contextmanager
    def held(self, *args, **kwargs):
        with real(self, *args, **kwargs):
            if kwargs.get("timeout") != 0:  # not the tidying every command does at start
                _die()
            yield

    setattr(store_class, method, held)


def arm(kill_at: str) -> None:
    from executor import durable, store, txn

    kind, _, arg = kill_at.partition(":")
    if kill_at == "none":
        return
    if kind == "bytes":
        _arm_bytes(int(arg))
    elif kind == "hold":
        real_sync = durable.sync_files

        def held(*a, **k):
            Path(arg + ".held").touch()
            while not Path(arg).exists():
                time.sleep(0.02)
            return real_sync(*a, **k)

        durable.sync_files = held
    elif kind == "lock":
        _arm_lock(store.Store, {"pack": "pack_locked", "commit": "locked"}[arg])
    elif kind == "staging":
        durable.sync_files = lambda *a, **k: _die()
    elif kind == "journal":
        txn.roll_forward = lambda *a, **k: _die()
    elif kind == "rename":
        txn.os = _Proxy(os, replace=_after_nth(int(arg), os.replace))
    elif kind == "remove":
        txn.prune_empty_parents = _after_nth(int(arg), txn.prune_empty_parents)
    elif kill_at == "records:tmp":
        real_replace = os.replace

        def replace(src, dst, *a, **k):
            if Path(dst).parent.name == "records":
                _die()
            return real_replace(src, dst, *a, **k)

        durable.os = _Proxy(os, replace=replace)
    elif kill_at == "records:before":
        store.Store.write_record = lambda *a, **k: _die()
    elif kill_at == "records:after":
        store.Store.write_record = _after_nth(1, store.Store.write_record)
    elif kind == "cleanup":
        real_rmtree = shutil.rmtree

        def rmtree(path, *a, **k):
            if (Path(path) / "JOURNAL.json").is_file():
                real_rmtree(Path(path) / "files")
                _die()
            return real_rmtree(path, *a, **k)

        txn.shutil = _Proxy(shutil, rmtree=rmtree)
    else:
        raise SystemExit(f"crash_driver: unknown kill point {kill_at!r}")


def child_main(argv: list[str]) -> None:
    kill_at, *args = argv
    arm(kill_at)
    from devops_cp.cli import main

    sys.argv = ["devops-cp", *args]
    main()


# --- environments, packs and versions ---------------------------------------------------------------


def make_env(root: Path) -> dict[str, str]:
    """An isolated HOME and XDG tree under `root` for child processes (no proxies, no GPU)."""
    home = root / "home"
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and not k.startswith(("DEVOPS_CP_", "XDG_", "SSL_CERT"))}
    env.update(
        HOME=str(home),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        XDG_STATE_HOME=str(home / ".local" / "state"),
        XDG_CONFIG_HOME=str(home / ".config"),
        DEVOPS_CP_CATALOG=str(root / "catalog"),
        DEVOPS_CP_NO_GPU="1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def blob(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tar_gz(files: dict[str, bytes], top: str = "db-2024") -> bytes:
    return folder_tar_gz(files, top)


# v1 and v2 of the pack `crashdb`: one file unchanged, two changed, one dropped, one added.
CRASHDB = {
    "v1": {"a.db": blob(200_000, 1), "b.db": blob(150_000, 2), "c/d.db": blob(100_000, 3), "old-only.db": blob(50_000, 4)},
    "v2": {"a.db": blob(220_000, 11), "b.db": blob(150_000, 2), "c/d.db": blob(90_000, 13), "new-only.db": blob(120_000, 14)},
}
EXTRA = {"v1": {"e.bin": blob(80_000, 5)}, "v2": {"e.bin": blob(80_000, 15)}}
# A pack that v2 of the bundle adds: its folder is new in the data dir and moves in with one rename.
FRESH = {"v1": {}, "v2": {"f.bin": blob(60_000, 21), "sub/g.bin": blob(40_000, 22)}}


@dataclass
class Pack:
    key: str
    prefix: str  # its files live under data_dir/prefix/
    versions: dict[str, dict[str, str]]  # "v1"/"v2" -> {path relative to the data dir: sha256}

    def version_of(self, files: dict[str, str]) -> str | None:
        return next((v for v, expected in self.versions.items() if files == expected), None)


def _pack(key: str, prefix: str, contents: dict[str, dict[str, bytes]]) -> Pack:
    return Pack(key, prefix, {v: {f"{prefix}/{rel}": sha(d) for rel, d in files.items()} for v, files in contents.items()})


@dataclass
class PointResult:
    point: str
    killed: bool
    versions_after_kill: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class Scenario:
    """One command that moves packs from v1 to v2, killed at chosen points, always from the same start."""

    name = "scenario"

    def __init__(self, root: Path, server, *, python: str = sys.executable):
        self.root = Path(root)
        self.server = server
        self.python = python
        self.env = make_env(self.root)
        self.home = self.root / "home"
        self.template = self.root / "template"
        self.data_dir = self.home / "data" / "samples"
        self.records_dir = self.home / ".local" / "state" / "devops-cp" / "records"
        (self.root / "catalog").mkdir(parents=True, exist_ok=True)
        config = self.home / ".config" / "devops-cp" / "config.toml"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(f'lock_timeout = 30\n[data_dirs]\nsample = "{self.data_dir}"\n')
        self.packs: list[Pack] = []
        self.command: list[str] = []
        self.bytes_total = 0  # bytes the command writes through the streaming copy

    # -- running the CLI -------------------------------------------------------------------------

    def run(self, *args: str, kill_at: str = "none", timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self.python, str(TESTS / "crash_driver.py"), kill_at, *args],
            cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout,
        )

    def setup(self) -> None:
        """Install v1, drop a user's own file beside it, save the whole HOME as the template."""
        raise NotImplementedError

    def save_template(self) -> None:
        (self.data_dir / USER_FILE).write_text("the user's own notes: never touched\n")
        shutil.rmtree(self.template, ignore_errors=True)
        shutil.copytree(self.home, self.template, symlinks=True)

    def restore(self) -> None:
        shutil.rmtree(self.home)
        shutil.copytree(self.template, self.home, symlinks=True)

    # -- kill points -------------------------------------------------------------------------------

    def phase_points(self) -> list[str]:
        # A pack new in v2 moves in with one rename of its folder; the others file by file, but for
        # the files v1 has already, as they are: those stay where they are (executor/inplace.py).
        # What v2 replaces or leaves behind is first set aside by a rename of its own (txn._Swap).
        renames = 0
        for p in self.packs:
            v1, v2 = p.versions["v1"], p.versions["v2"]
            changed = [rel for rel, h in v2.items() if v1.get(rel) != h]
            renames += 1 if not v1 else len(changed) + sum(rel in v1 for rel in changed) + len(set(v1) - set(v2))
        removes = sum(len(set(p.versions["v1"]) - set(p.versions["v2"])) for p in self.packs)
        points = ["lock:pack", "lock:commit", "staging", "journal"] + [f"rename:{i}" for i in range(1, renames + 1)]
        points += [f"remove:{i}" for i in range(1, removes + 1)]
        return points + ["records:tmp", "records:before", "records:after", "cleanup"]

    def byte_points(self, count: int, seed: int = 0) -> list[str]:
        """`count` offsets spread over the bytes written: evenly, each jittered (seeded)."""
        rng = random.Random(seed)
        step = self.bytes_total / count
        return [f"bytes:{max(1, int(step * i + rng.uniform(0, step)))}" for i in range(count)]

    def quick_points(self) -> list[str]:
        return self.byte_points(2, seed=1) + ["staging", "rename:2", "records:tmp"]

    def long_points(self, bytes_points: int, seed: int) -> list[str]:
        return self.byte_points(bytes_points, seed) + self.phase_points()

    # -- one kill point, checked -----------------------------------------------------------------------

    def run_point(self, point: str) -> PointResult:
        self.restore()
        killed_run = self.run(*self.command, kill_at=point)
        result = PointResult(point, killed=killed_run.returncode == -signal.SIGKILL)
        if not result.killed and killed_run.returncode != 0:
            result.problems.append(f"the run to kill exited {killed_run.returncode} without being killed: {killed_run.stderr.strip()[-800:]}")
            return result
        result.problems += [f"right after the kill: {p}" for p in self.check_visible()]

        status = self.run("data", "status", "--json")  # any command that touches the store recovers first
        if status.returncode != 0:
            result.problems.append(f"`status` after the kill exited {status.returncode}: {status.stderr.strip()[-800:]}")
            return result
        versions, problems = self.check_settled()
        result.versions_after_kill = versions
        result.problems += [f"after recovery: {p}" for p in problems]
        listed = {p["key"] for p in json.loads(status.stdout)["packs"]}
        if listed != {p.key for p in self.packs if versions.get(p.key, "v1") != "v1" or p.versions["v1"]}:  # a pack new in v2 may not be there yet
            result.problems.append(f"after recovery: `status` lists {sorted(listed)}")
        if point.startswith(("bytes:", "lock:")) or point == "staging":
            if result.killed and any(v != "v1" for v in versions.values()):
                result.problems.append(f"killed before anything was decided, yet the packs are {versions}")

        rerun = self.run(*self.command)
        if rerun.returncode != 0:
            result.problems.append(f"re-running the command exited {rerun.returncode}: {rerun.stderr.strip()[-800:]}")
            return result
        versions, problems = self.check_settled()
        result.problems += [f"after the re-run: {p}" for p in problems]
        if any(v != "v2" for v in versions.values()):
            result.problems.append(f"after the re-run the packs are {versions}, not all v2")
        if (self.data_dir / STAGING).exists():
            left = sorted(str(p.relative_to(self.data_dir)) for p in (self.data_dir / STAGING).rglob("*")) or ["(empty)"]
            result.problems.append(f"after the re-run a staging directory is left in the data dir: {STAGING} {left[:5]}")
        return result

    # -- the checks ------------------------------------------------------------------------------------

    def _files(self) -> dict[str, Path]:
        """Every file under its final name in the data dir (the staging area excluded)."""
        if not self.data_dir.exists():
            return {}
        found = {}
        for path in self.data_dir.rglob("*"):
            rel = path.relative_to(self.data_dir).as_posix()
            if rel == STAGING or rel.startswith(STAGING + "/") or path.is_dir():
                continue
            found[rel] = path
        return found

    def check_visible(self) -> list[str]:
        """Whatever moment the kill hit: every visible file is one version's complete file."""
        problems = []
        known: dict[str, set[str]] = {}
        for pack in self.packs:
            for files in pack.versions.values():
                for rel, digest in files.items():
                    known.setdefault(rel, set()).add(digest)
        for rel, path in sorted(self._files().items()):
            if rel == USER_FILE:
                continue
            if path.is_symlink() or not path.is_file():
                problems.append(f"{rel} is not a plain file")
            elif rel not in known:
                problems.append(f"{rel} is visible in the data dir but belongs to no version (a partial or temp file?)")
            elif sha(path.read_bytes()) not in known[rel]:
                problems.append(f"{rel} is visible but is neither the v1 nor the v2 file (half written?)")
        for record in sorted(self.records_dir.glob("*.json")) if self.records_dir.is_dir() else []:
            try:
                json.loads(record.read_text())
            except ValueError:
                problems.append(f"install record {record.name} is not readable JSON")
        return problems

    def check_settled(self) -> tuple[dict[str, str], list[str]]:
        """After recovery: records match the files, each pack is all v1 or all v2, staging is clean."""
        problems = []
        versions = {}
        files = self._files()
        if (self.data_dir / USER_FILE).read_text() != "the user's own notes: never touched\n":
            problems.append("the user's own file changed")
        staging = self.data_dir / STAGING
        if staging.exists():
            for path in staging.rglob("*"):
                rel = path.relative_to(staging).as_posix()
                if not (rel == "partial" or (rel.startswith("partial/") and rel.endswith((".part", ".part.json")))):
                    problems.append(f"left in the staging area: {rel}")
        stray = sorted(p.name for p in self.records_dir.iterdir() if not p.name.endswith(".json")) if self.records_dir.is_dir() else []
        if stray:
            problems.append(f"stray files in the records dir: {stray}")
        owned = set()
        for pack in self.packs:
            record_path = self.records_dir / f"{pack.key}.json"
            if not record_path.is_file() and not pack.versions["v1"]:  # new in v2, and not installed
                versions[pack.key] = "v1"
                continue  # any file of it on disk is one that no pack owns (below)
            if not record_path.is_file():
                problems.append(f"{pack.key}: no install record")
                continue
            record = json.loads(record_path.read_text())
            recorded = {f["path"]: f["sha256"] for f in record["files"]}
            version = pack.version_of(recorded)
            if version is None:
                problems.append(f"{pack.key}: the record lists neither v1 nor v2: {sorted(recorded)}")
                continue
            versions[pack.key] = version
            for f in record["files"]:
                path = self.data_dir / f["path"]
                if not path.is_file():
                    problems.append(f"{pack.key}: recorded file {f['path']} is missing")
                elif path.stat().st_size != f["size"] or sha(path.read_bytes()) != f["sha256"]:
                    problems.append(f"{pack.key}: {f['path']} does not match its recorded size and sha256")
            on_disk = {rel for rel in files if rel.startswith(pack.prefix + "/")}
            if on_disk != set(recorded):
                problems.append(f"{pack.key} is a mix: on disk {sorted(on_disk)}, recorded ({version}) {sorted(recorded)}")
            owned |= on_disk
        unowned = sorted(set(files) - owned - {USER_FILE})
        if unowned:
            problems.append(f"files that no pack owns: {unowned}")
        return versions, problems


class InstallScenario(Scenario):
    """`devops-cp data install crashdb`: a tar.gz download extracted into crashdb/, v1 -> v2."""

    name = "install"

    def __init__(self, root: Path, server, **kw):
        super().__init__(root, server, **kw)
        self.packs = [_pack("crashdb", "crashdb", CRASHDB)]
        self.archives = {v: tar_gz(files) for v, files in CRASHDB.items()}
        self.urls = {v: server.add(f"/{self.root.name}/crashdb-{v}.tar.gz", data) for v, data in self.archives.items()}
        self.command = ["data", "install", "crashdb", "--progress", "none"]
        self.bytes_total = len(self.archives["v2"]) + sum(len(d) for d in CRASHDB["v2"].values())

    def write_recipe(self, version: str) -> None:
        data = self.archives[version]
        (self.root / "catalog" / "crashdb.toml").write_text(
            'id = "crashdb"\nlabel = "Crash test DB"\ndata_type = "sample"\nupdate_schedule = "daily"\n'
            '[[install._default]]\ntype = "download"\n'
            f'url = "{self.urls[version]}"\ndest = "crashdb"\nextract = "tar.gz"\nstrip_components = 1\n'
            f'size_bytes = {len(data)}\nchecksum = "sha256:{sha(data)}"\n'
        )

    def setup(self) -> None:
        self.write_recipe("v1")
        first = self.run(*self.command)
        if first.returncode != 0:
            raise RuntimeError(f"installing v1 failed: {first.stderr}")
        self.save_template()
        self.write_recipe("v2")


class SideloadScenario(Scenario):
    """`devops-cp data sideload` of a signed bundle updating two packs (crashdb and extra) in one data dir.

    crashdb travels as its tar.gz, carried whole, which the sideload unpacks (as a bundle of an
    `extract` pack does); extra and fresh as plain files."""

    name = "sideload"

    def __init__(self, root: Path, server=None, **kw):
        super().__init__(root, server, **kw)
        self.packs = [_pack("crashdb", "crashdb", CRASHDB), _pack("extra", "extra", EXTRA), _pack("fresh", "fresh", FRESH)]
        self.bytes_total = sum(len(d) for files in (CRASHDB["v2"], EXTRA["v2"], FRESH["v2"]) for d in files.values())

    def setup(self) -> None:
        sys.path.insert(0, str(TESTS))
        from bundle_helpers import PackSpec, new_key, write_bundle, write_public_key
        from manifests.bundle import Unpack

        key = new_key()
        self.pub = write_public_key(self.root / "site.pub", key)
        t0 = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=2)
        self.bundles = {}
        for version, when in (("v1", t0), ("v2", t0 + timedelta(days=1))):
            packs = [
                PackSpec("crashdb", {}, fetched_at=when, archives={"crashdb": (tar_gz(CRASHDB[version]), Unpack("tar.gz", 1))}),
                PackSpec("extra", {f"extra/{rel}": d for rel, d in EXTRA[version].items()}, fetched_at=when),
            ] + ([PackSpec("fresh", {f"fresh/{rel}": d for rel, d in FRESH[version].items()}, fetched_at=when)] if FRESH[version] else [])
            self.bundles[version] = write_bundle(self.root / "bundles" / f"{version}.tar.zst", packs, key=key).path
        first = self.run("data", "sideload", str(self.bundles["v1"]), "--trust", str(self.pub), "--progress", "none")
        if first.returncode != 0:
            raise RuntimeError(f"sideloading v1 failed: {first.stderr}")
        self.save_template()
        self.command = ["data", "sideload", str(self.bundles["v2"]), "--trust", str(self.pub), "--progress", "none"]


# v1 and v2 of `bigdb` for an update bundle made for the host (`bundle --for`): main.db is rebuilt
# from the host's copy and 128 KiB of carried chunks, meta.json carried whole, same.bin kept.
_MAIN_V1 = blob(3_000_000, 31)
BIGDB = {
    "v1": {"main.db": _MAIN_V1, "meta.json": b'{"week": 1}', "same.bin": blob(200_000, 33)},
    "v2": {"main.db": _MAIN_V1[:1_000_000] + blob(131_072, 32) + _MAIN_V1[1_131_072:], "meta.json": b'{"week": 2}', "same.bin": blob(200_000, 33)},
}


class RebuildScenario(Scenario):
    """`devops-cp data sideload` of an update bundle made for this host: a file rebuilt chunk by chunk
    from the installed one into staging, killed while rebuilding and at every later phase."""

    name = "rebuild"

    def __init__(self, root: Path, server, **kw):
        super().__init__(root, server, **kw)
        self.packs = [_pack("bigdb", "bigdb", BIGDB)]
        self.urls = {(v, rel): server.add(f"/{self.root.name}/{v}/{rel}", data) for v, files in BIGDB.items() for rel, data in files.items()}
        self.bytes_total = len(BIGDB["v2"]["main.db"]) + len(BIGDB["v2"]["meta.json"])  # same.bin is linked, not copied

    def recipe(self, version: str) -> str:
        steps = "".join(
            f'[[install._default]]\ntype = "download"\nurl = "{self.urls[(version, rel)]}"\ndest = "bigdb/{rel}"\nsize_bytes = {len(data)}\nchecksum = "sha256:{sha(data)}"\n'
            for rel, data in sorted(BIGDB[version].items())
        )
        return f'id = "bigdb"\nlabel = "Crash test DB, rebuilt"\ndata_type = "sample"\nupdate_schedule = "daily"\n{steps}'

    def setup(self) -> None:
        (self.root / "catalog" / "bigdb.toml").write_text(self.recipe("v1"))
        for args in (("data", "install", "bigdb", "--progress", "none"), ("data", "status", "--export", str(self.root / "host.json"), "--progress", "none")):
            done = self.run(*args)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(args)} failed: {done.stderr}")
        builder = make_env(self.root / "builder")
        Path(builder["DEVOPS_CP_CATALOG"]).mkdir(parents=True)
        Path(builder["DEVOPS_CP_CATALOG"], "bigdb.toml").write_text(self.recipe("v2"))
        bundle, key = self.root / "update.tar.zst", self.root / "site"
        for args in (("data", "keygen", "--no-passphrase", "-o", str(key)), ("data", "bundle", "--for", str(self.root / "host.json"), "-o", str(bundle), "--key", f"{key}.key", "--progress", "none")):
            done = subprocess.run([self.python, str(TESTS / "crash_driver.py"), "none", *args], cwd=REPO, env=builder, capture_output=True, text=True, timeout=120)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(args)} failed: {done.stderr}")
        self.save_template()
        self.command = ["data", "sideload", str(bundle), "--trust", f"{key}.pub", "--progress", "none"]


SCENARIOS = {"install": InstallScenario, "sideload": SideloadScenario, "rebuild": RebuildScenario}


if __name__ == "__main__":
    child_main(sys.argv[1:])
