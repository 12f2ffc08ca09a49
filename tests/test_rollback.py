"""Refusal leaves the host as it was, also after files were moved into place (issue 18, rule 8).

A failure once some of a pack's files were renamed into the data dir (a rename refused because the
folder is another filesystem, a full disk at the k-th rename, the install record not written) rolls
the pack back in the same run: the previous version is there again, or nothing, its record as it
was, no journal left for the next run. Exit 5 (space or permission), saying what became of the pack.
The faults are real where a real one exists here: a mount point inside the data dir (EXDEV), a
read-only filesystem where the records live (EROFS); the k-th rename's ENOSPC is injected.
"""

from __future__ import annotations

import errno
import os
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bundle_helpers import PackSpec, new_key, tree_snapshot, write_bundle, write_public_key
from conftest import download_step
from executor import txn

T0 = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=2)
T1 = T0 + timedelta(days=1)
V1 = {"a.bin": b"v1 a" * 100, "b.bin": b"v1 b" * 100, "d/keep.bin": b"kept" * 100, "old.bin": b"v1 only" * 100}
V2 = {"a.bin": b"v2 a" * 100, "b.bin": b"v2 b" * 100, "d/keep.bin": b"kept" * 100, "d/new/e.bin": b"v2 e" * 100, "zz/c.bin": b"v2 new" * 100}


@pytest.fixture
def mounts():
    """mounts(path, ro=False): a small real tmpfs mounted at `path` (tests run as root); unmounted at teardown."""
    done: list[Path] = []

    def mount(path: Path, *, ro: bool = False) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(path)], capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.strip() or result.returncode}")
        done.append(path)
        return path

    def read_only(path: Path) -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True, capture_output=True)

    mount.read_only = read_only
    yield mount
    for path in reversed(done):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def sideload(cli, tmp_path):
    """sideload(name, files, fetched_at) makes a signed bundle of pack `pack` and sideloads it."""
    key = new_key()
    pub = write_public_key(tmp_path / "site.pub", key)

    def run(name: str, files: dict[str, bytes], fetched_at: datetime):
        bundle = write_bundle(tmp_path / "bundles" / f"{name}.tar.zst", [PackSpec("pack", files, fetched_at=fetched_at)], key=key).path
        return cli("sideload", str(bundle), "--trust", str(pub), "--progress", "none")

    return run


def host(isolated_env) -> dict[str, str]:
    """HOME byte for byte, lock files in the state dir (and the folders they need) aside: they hold no data."""
    state = isolated_env.records_dir.parent
    lock_folders = {str(state / "locks"), str(state), str(state.parent), str(state.parent.parent)}
    snapshot = tree_snapshot(isolated_env.records_dir.parents[3])
    return {k: v for k, v in snapshot.items() if not k.startswith(str(state / "locks") + "/") and not (k in lock_folders and v == "dir")}


def installed(data_dir: Path) -> dict[str, bytes]:
    return {p.relative_to(data_dir).as_posix(): p.read_bytes() for p in sorted(data_dir.rglob("*")) if p.is_file()}


def test_a_rename_onto_another_filesystem_rolls_a_fresh_install_back(sideload, isolated_env, mounts):
    """`zz` is a mount point inside the data dir: `a.bin` moves in, `zz/c.bin` cannot (EXDEV)."""
    data_dir = isolated_env.sample_dir()
    mounts(data_dir / "zz")
    before = host(isolated_env)
    result = sideload("v2", V2, T1)
    assert result.exit_code == 5, result.stderr
    assert "another filesystem" in result.stderr and "pack was rolled back" in result.stderr, result.stderr
    assert host(isolated_env) == before
    assert not (isolated_env.records_dir / "pack.json").exists()


def test_a_rename_onto_another_filesystem_puts_the_previous_version_back(sideload, isolated_env, mounts):
    """v1's files were replaced and its leftover set aside before `zz/c.bin` failed: v1 is back, whole."""
    assert sideload("v1", V1, T0).exit_code == 0
    data_dir = isolated_env.sample_dir()
    mounts(data_dir / "zz")
    before, record = host(isolated_env), isolated_env.record("pack")
    result = sideload("v2", V2, T1)
    assert result.exit_code == 5 and "pack was rolled back" in result.stderr, result.stderr
    assert installed(data_dir) == V1
    assert isolated_env.record("pack") == record
    assert host(isolated_env) == before


def test_a_record_that_cannot_be_written_rolls_the_files_back(sideload, isolated_env, mounts):
    """Every file of v2 is in place when the record's folder (a read-only filesystem) refuses it."""
    assert sideload("v1", V1, T0).exit_code == 0
    data_dir = isolated_env.sample_dir()
    records = isolated_env.records_dir
    saved = {p.name: p.read_bytes() for p in records.iterdir()}
    mounts(records)
    for name, data in saved.items():
        (records / name).write_bytes(data)
    mounts.read_only(records)
    before = host(isolated_env)
    result = sideload("v2", {**V2, "zz/c.bin": b"new"}, T1)
    assert result.exit_code == 5 and "pack was rolled back" in result.stderr, result.stderr
    assert installed(data_dir) == V1
    assert host(isolated_env) == before


class _Proxy:
    def __init__(self, module, **overrides):
        self._module, self._overrides = module, overrides

    def __getattr__(self, name):
        return self._overrides.get(name) or getattr(self._module, name)


# v1 -> v2 in one data dir: old.bin set aside, the new folder zz moved in whole, a.bin and b.bin each set
# aside and replaced, d/new/e.bin tried (its folder is missing), then moved once d/new is made. d/keep.bin,
# the same in both, stays where it is (executor/inplace.py): no rename.
RENAMES = 1 + 1 + 2 * 2 + 2
FOLDER_RENAME = 2  # refused, its files move in one by one instead: the update still succeeds


@pytest.mark.parametrize("k", range(1, RENAMES + 1))
def test_a_full_disk_at_any_rename_rolls_the_update_back(k, sideload, isolated_env, monkeypatch):
    assert sideload("v1", V1, T0).exit_code == 0
    data_dir = isolated_env.sample_dir()
    before, record = host(isolated_env), isolated_env.record("pack")
    calls = {"n": 0}

    def replace(src, dst):
        calls["n"] += 1
        if calls["n"] == k:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), dst)
        return os.replace(src, dst)

    monkeypatch.setattr(txn, "os", _Proxy(os, replace=replace))
    result = sideload("v2", V2, T1)
    if k == FOLDER_RENAME:
        assert result.exit_code == 0 and installed(data_dir) == V2, result.stderr
        return
    assert result.exit_code == 5 and "not enough space" in result.stderr and "pack was rolled back" in result.stderr, result.stderr
    assert installed(data_dir) == V1 and isolated_env.record("pack") == record
    assert host(isolated_env) == before

    monkeypatch.setattr(txn, "os", os)  # the disk has room again: the same bundle installs
    result = sideload("v2", V2, T1)
    assert result.exit_code == 0, result.stderr
    assert installed(data_dir) == V2


def test_without_a_fault_the_update_makes_exactly_the_renames_counted_above(sideload, isolated_env, monkeypatch):
    """The control for the sweep above: it covers every rename of the update."""
    assert sideload("v1", V1, T0).exit_code == 0
    calls = {"n": 0}

    def replace(src, dst):
        calls["n"] += 1
        return os.replace(src, dst)

    monkeypatch.setattr(txn, "os", _Proxy(os, replace=replace))
    assert sideload("v2", V2, T1).exit_code == 0
    assert calls["n"] == RENAMES
    assert installed(isolated_env.sample_dir()) == V2


def test_a_direct_install_is_rolled_back_the_same_way(cli, local_server, write_recipe, isolated_env, mounts):
    """The same commit for `install`: a.bin is in place when zz/c.bin cannot follow (EXDEV); nothing stays, no record."""
    files = {"a.bin": b"direct a" * 100, "zz/c.bin": b"direct c" * 100}
    write_recipe("direct", [download_step(local_server.add(f"/{rel}", data), rel, data) for rel, data in files.items()])
    data_dir = isolated_env.sample_dir()
    mounts(data_dir / "zz")
    before = host(isolated_env)
    result = cli("install", "direct", "--progress", "none")
    assert result.exit_code == 5 and "another filesystem" in result.stderr and "direct was rolled back" in result.stderr, result.stderr
    assert host(isolated_env) == before


def test_a_journal_that_cannot_be_completed_is_kept_and_said_until_it_can(cli, tmp_path, isolated_env, mounts):
    """A run killed with its journal on disk (nothing renamed yet); then `zz` becomes a mount point, so the
    roll forward cannot finish: every command says so and goes on, an install in that data dir is exit 5,
    and once the mount is gone the next command completes the update."""
    import subprocess
    import sys

    key = new_key()
    pub = write_public_key(tmp_path / "site.pub", key)
    v1, v2 = (write_bundle(tmp_path / f"{name}.tar.zst", [PackSpec("pack", files, fetched_at=when)], key=key).path for name, files, when in (("v1", V1, T0), ("v2", V2, T1)))
    assert cli("sideload", str(v1), "--trust", str(pub), "--progress", "none").exit_code == 0
    driver = Path(__file__).with_name("crash_driver.py")
    killed = subprocess.run([sys.executable, str(driver), "journal", "data", "sideload", str(v2), "--trust", str(pub), "--progress", "none"], capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr  # SIGKILLed with the journal on disk
    data_dir = isolated_env.sample_dir()
    mounts(data_dir / "zz")

    status = cli("status")
    assert status.exit_code == 0 and "interrupted install of pack could not be completed" in status.stderr, status.stderr
    again = cli("sideload", str(v2), "--trust", str(pub), "--progress", "none")
    assert again.exit_code == 5 and "another filesystem" in again.stderr, again.stderr
    assert list((data_dir / ".devops-cp-staging").glob("txn-*/JOURNAL.json")), "the journal was kept"

    subprocess.run(["umount", str(data_dir / "zz")], check=True)
    (data_dir / "zz").rmdir()
    status = cli("status")
    assert status.exit_code == 0 and "could not be completed" not in status.stderr, status.stderr
    assert installed(data_dir) == V2 and not (data_dir / ".devops-cp-staging").exists()
