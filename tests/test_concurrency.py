"""Two runs at once, as separate processes: the same pack twice, two packs into one data dir,
an install beside a sideload, two bundles. Both end correct, or one waits for the other, or
one refuses clearly (exit 8 once `lock_timeout` ran out). A lock held by a process that was
SIGKILLed never blocks the next run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bundle_helpers import PackSpec, new_key, write_bundle, write_public_key
from crash_driver import TESTS
from conftest import REPO, download_step, files_under, gets, payload, sha256
from support.localserver import Fault
from support.waiting import wait_for

STAGING = ".devops-cp-staging"


def spawn(*args: str, kill_at: str = "none") -> subprocess.Popen:
    """`devops-cp data ARGS` as another process, in this test's isolated environment."""
    return subprocess.Popen(
        [sys.executable, str(TESTS / "crash_driver.py"), kill_at, "data", *args],
        cwd=REPO, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def finish(*children: subprocess.Popen, timeout: float = 90) -> list[tuple[int, str, str]]:
    results = []
    try:
        for child in children:
            out, err = child.communicate(timeout=timeout)
            results.append((child.returncode, out, err))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(10)
    return results


def installed(env, key: str, data_dir: Path, files: dict[str, bytes]) -> None:
    """The record lists exactly these files and each one on disk matches it."""
    record = env.record(key)
    assert {f["path"]: f["sha256"] for f in record["files"]} == {rel: sha256(d) for rel, d in files.items()}
    for rel, data in files.items():
        assert (data_dir / rel).read_bytes() == data


@pytest.fixture
def slow_pack(local_server, write_recipe):
    """slow_pack(id, size) serves a pack whose body takes a moment (64 KiB chunks, a pause between)."""

    def make(pack_id: str, size: int = 1_000_000, delay: float = 0.03) -> bytes:
        data = payload(size, seed=len(pack_id))
        url = local_server.add(f"/packs/{pack_id}.bin", data)
        local_server.set_fault(f"/packs/{pack_id}.bin", Fault(delay_per_chunk=delay))
        write_recipe(pack_id, [download_step(url, f"{pack_id}/{pack_id}.bin", data)])
        return data

    return make


@pytest.fixture
def bundle_with(tmp_path):
    """bundle_with(name, {pack_id: {path: bytes}}) -> (bundle path, public key path)."""
    key = new_key()
    pub = write_public_key(tmp_path / "site.pub", key)
    fetched = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)

    def make(name: str, packs: dict[str, dict[str, bytes]]) -> tuple[Path, Path]:
        specs = [PackSpec(pack_id, files, fetched_at=fetched) for pack_id, files in packs.items()]
        return write_bundle(tmp_path / "bundles" / f"{name}.tar.zst", specs, key=key).path, pub

    return make


# --- both end correct -------------------------------------------------------------------------------


def test_the_same_install_twice_at_once_both_end_correct(slow_pack, local_server, isolated_env):
    data = slow_pack("shared")
    results = finish(spawn("install", "shared", "--progress", "none"), spawn("install", "shared", "--progress", "none"))
    assert [rc for rc, _, _ in results] == [0, 0], results
    installed(isolated_env, "shared", isolated_env.sample_dir(), {"shared/shared.bin": data})
    assert files_under(isolated_env.sample_dir()) == ["shared/shared.bin"]


def test_two_packs_into_the_same_data_dir_at_once(slow_pack, isolated_env):
    first, second = slow_pack("first"), slow_pack("second")
    results = finish(spawn("install", "first", "--progress", "none"), spawn("install", "second", "--progress", "none"))
    assert [rc for rc, _, _ in results] == [0, 0], results
    installed(isolated_env, "first", isolated_env.sample_dir(), {"first/first.bin": first})
    installed(isolated_env, "second", isolated_env.sample_dir(), {"second/second.bin": second})
    assert files_under(isolated_env.sample_dir()) == ["first/first.bin", "second/second.bin"]
    assert sorted(p["key"] for p in json.loads(spawn("status", "--json").communicate(timeout=60)[0])["packs"]) == ["first", "second"]


def test_the_same_sideload_twice_at_once_both_end_correct(bundle_with, isolated_env):
    files = {"db/a.bin": payload(2_000_000, seed=1), "db/b.bin": payload(1_000_000, seed=2)}
    bundle, pub = bundle_with("b", {"sidedb": files})
    args = ("sideload", str(bundle), "--trust", str(pub), "--progress", "none")
    results = finish(spawn(*args), spawn(*args))
    assert [rc for rc, _, _ in results] == [0, 0], results
    installed(isolated_env, "sidedb", isolated_env.sample_dir(), files)
    assert files_under(isolated_env.sample_dir()) == ["db/a.bin", "db/b.bin"]


def test_an_install_and_a_sideload_into_the_same_data_dir_at_once(slow_pack, bundle_with, isolated_env):
    downloaded = slow_pack("online")
    carried = {"carried/c.bin": payload(1_500_000, seed=3)}
    bundle, pub = bundle_with("c", {"carried": carried})
    results = finish(spawn("install", "online", "--progress", "none"), spawn("sideload", str(bundle), "--trust", str(pub), "--progress", "none"))
    assert [rc for rc, _, _ in results] == [0, 0], results
    installed(isolated_env, "online", isolated_env.sample_dir(), {"online/online.bin": downloaded})
    installed(isolated_env, "carried", isolated_env.sample_dir(), carried)
    assert files_under(isolated_env.sample_dir()) == ["carried/c.bin", "online/online.bin"]


def test_two_bundles_of_the_same_pack_at_once(slow_pack, tmp_path, isolated_env):
    """Both stage through the same cache (and the same resumable partial file): neither may spoil the other's."""
    data = slow_pack("bundled")
    outs = [tmp_path / "out" / f"{n}.tar.zst" for n in ("one", "two")]
    outs[0].parent.mkdir()
    children = [spawn("bundle", "bundled", "-o", str(out), "--unsigned", "--progress", "none") for out in outs]
    results = finish(*children)
    assert [rc for rc, _, _ in results] == [0, 0], results
    for out in outs:
        verified = spawn("verify", str(out), "--allow-unsigned", "--json").communicate(timeout=60)
        assert json.loads(verified[0])["ok"] is True, verified
    staging = isolated_env.cache / "devops-cp" / "bundle-staging" / STAGING
    assert not any(staging.glob("txn-*")), "no staged copies left in the cache"
    assert data  # served and bundled twice


# --- one waits, or refuses clearly ----------------------------------------------------------------


def test_only_the_wait_for_a_commit_is_bounded_by_lock_timeout(slow_pack, local_server, bundle_with, isolated_env, tmp_path):
    """The first run holds the data dir's commit lock. Another pack downloads meanwhile, then gives up
    on its commit with exit 8; a sideload likewise. A second run of the same pack waits on the pack's
    lock for as long as it takes (no lock_timeout there), says so at once, then finds it installed."""
    isolated_env.write_config("lock_timeout = 0.5\n")
    data = slow_pack("held", delay=0)
    slow_pack("other", delay=0)
    go_on = tmp_path / "go-on"
    holder = spawn("install", "held", "--progress", "none", kill_at=f"hold:{go_on}")  # holds the commit lock until told
    same = None
    try:
        wait_for(lambda: (tmp_path / "go-on.held").exists(), "the first run to hold the lock with its pack staged")
        waiting = finish(spawn("install", "other", "--progress", "none", "--json"))[0]
        bundle, pub = bundle_with("w", {"carried": {"carried.bin": b"other pack, same data dir"}})
        sideload = finish(spawn("sideload", str(bundle), "--trust", str(pub), "--progress", "none"))[0]
        same = spawn("install", "held", "--progress", "none")
        said = same.stderr.readline()
        assert "waiting for another devops-cp run that is installing held" in said and str(isolated_env.sample_dir()) in said, said
    finally:
        go_on.touch()
        first = finish(holder)[0]
        again = finish(same)[0] if same else None
    assert first[0] == 0, first
    rc, out, err = waiting
    assert rc == 8, waiting
    assert "another devops-cp run holds the lock on" in err and str(isolated_env.sample_dir()) in err and "waited" in err
    assert json.loads(out)["results"][0]["exit_code"] == 8  # downloaded, then refused at its commit
    assert sideload[0] == 8 and "another devops-cp run holds the lock" in sideload[2], sideload
    assert again[0] == 0 and "installed by another devops-cp run while this one waited" in again[2], again
    assert len(gets(local_server, "/packs/held.bin")) == 1, "the second run of the same pack did not download it again"
    installed(isolated_env, "held", isolated_env.sample_dir(), {"held/held.bin": data})
    assert files_under(isolated_env.sample_dir()) == ["held/held.bin"]  # the refused runs left nothing
    assert not (isolated_env.records_dir / "other.json").exists() and not (isolated_env.records_dir / "carried.json").exists()


# --- a killed holder never blocks -----------------------------------------------------------------


def test_a_sigkilled_install_does_not_block_the_next_run(local_server, write_recipe, isolated_env):
    isolated_env.write_config("lock_timeout = 5\n")
    data = payload(1_000_000, seed=9)
    url = local_server.add("/packs/stuck.bin", data)
    local_server.set_fault("/packs/stuck.bin", Fault(stall_after=300_000, stall_seconds=60))
    write_recipe("stuck", [download_step(url, "stuck/stuck.bin", data)])
    child = spawn("install", "stuck", "--progress", "none")
    partial = isolated_env.sample_dir() / STAGING / "partial"
    try:
        wait_for(lambda: sum(p.stat().st_size for p in partial.glob("*.part")) >= 300_000 - 65536, "the partial file to fill")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    local_server.set_fault("/packs/stuck.bin", None)
    rc, _, err = finish(spawn("install", "stuck", "--progress", "none"))[0]
    assert rc == 0, err
    installed(isolated_env, "stuck", isolated_env.sample_dir(), {"stuck/stuck.bin": data})
    assert gets(local_server)[-1].range is not None  # it resumed what the killed run had fetched


def test_a_sigkilled_sideload_does_not_block_the_next_run(bundle_with, isolated_env):
    isolated_env.write_config("lock_timeout = 5\n")
    files = {"k/k1.bin": payload(600_000, seed=4), "k/k2.bin": payload(600_000, seed=5)}
    bundle, pub = bundle_with("k", {"killed": files})
    args = ("sideload", str(bundle), "--trust", str(pub), "--progress", "none")
    killed = spawn(*args, kill_at="bytes:700000")
    assert killed.wait(60) == -signal.SIGKILL
    assert any((isolated_env.sample_dir() / STAGING).glob("txn-*/files/k/*")), "killed half way through staging"
    rc, _, err = finish(spawn(*args))[0]
    assert rc == 0, err
    installed(isolated_env, "killed", isolated_env.sample_dir(), files)
    assert not (isolated_env.sample_dir() / STAGING).exists()
