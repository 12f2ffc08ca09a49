"""Crash consistency, quick version: a direct install and a sideload, each SIGKILLed at a
handful of points (by bytes written, and in the staging, rename and records phases),
checked after every kill (see tests/crash_driver.py). The long version, 50+ kill points
per command, is `python tools/crash_run.py` (docs/reliability.md)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from crash_driver import REPO, STAGING, InstallScenario, RebuildScenario, SideloadScenario
from executor.config import PLAIN_WRITES_ENV
from support.localserver import Fault


def _failures(results) -> str:
    return "\n".join(f"{r.point}: {p}" for r in results for p in r.problems)


@pytest.mark.parametrize("plain", [False, True], ids=["fast", "plain"])
@pytest.mark.parametrize("scenario_class", [InstallScenario, SideloadScenario, RebuildScenario], ids=["install", "sideload", "rebuild"])
def test_kill_at_a_handful_of_points(scenario_class, plain, tmp_path, local_server):
    """Both ways: the fast writers (threads, a child process, syncfs) and the plain reference path."""
    scenario = scenario_class(tmp_path / "crash", local_server)
    if plain:
        scenario.env[PLAIN_WRITES_ENV] = "1"
    scenario.setup()
    results = [scenario.run_point(point) for point in scenario.quick_points()]
    assert not _failures(results), _failures(results)
    assert all(r.killed for r in results), [r.point for r in results if not r.killed]
    # The kills before the journal keep v1, the ones after it end in v2: both sides were hit.
    seen = {v for r in results for v in r.versions_after_kill.values()}
    assert seen == {"v1", "v2"}


def test_a_kill_while_rebuilding_from_chunks_leaves_a_whole_version(tmp_path, local_server):
    """Killed at every 256 kB of the rebuilt file (the host's chunks and the carried ones) and at
    each phase after it: the old version stays whole until the journal, the new one after it."""
    scenario = RebuildScenario(tmp_path / "crash", local_server)
    scenario.setup()
    points = [f"bytes:{n}" for n in range(1, scenario.bytes_total, 256_000)] + scenario.phase_points()
    results = [scenario.run_point(point) for point in points]
    assert not _failures(results), _failures(results)
    assert all(r.killed for r in results), [r.point for r in results if not r.killed]
    assert {v for r in results for v in r.versions_after_kill.values()} == {"v1", "v2"}


@pytest.mark.parametrize("scenario_class", [InstallScenario, SideloadScenario], ids=["install", "sideload"])
@pytest.mark.parametrize("lock", ["pack", "commit"])
def test_a_run_killed_holding_a_lock_leaves_the_next_run_able_to_proceed(lock, scenario_class, tmp_path, local_server):
    """Killed holding a pack's download lock (its staging area just made) or a data dir's commit lock
    (its pack staged whole): the next `status` tidies up, and the command run again finishes (a lock
    left held would make it wait for good: the pack's lock has no timeout)."""
    scenario = scenario_class(tmp_path / "crash", local_server)
    scenario.setup()
    result = scenario.run_point(f"lock:{lock}")
    assert result.killed and result.ok, result.problems
    assert result.versions_after_kill and set(result.versions_after_kill.values()) == {"v1"}


def test_a_real_sigkill_from_outside_mid_download(tmp_path, local_server):
    """No in-process hook: the parent watches the partial file grow and kills `devops-cp` itself."""
    scenario = InstallScenario(tmp_path / "crash", local_server)
    scenario.setup()
    scenario.restore()
    path = f"/{scenario.root.name}/crashdb-v2.tar.gz"
    local_server.set_fault(path, Fault(stall_after=300_000, stall_seconds=30))
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; from devops_cp.cli import main; sys.argv[0] = 'devops-cp'; main()", *scenario.command],
        cwd=REPO, env=scenario.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    partial_dir = scenario.data_dir / STAGING / "partial"
    try:
        deadline = time.monotonic() + 60
        while sum(p.stat().st_size for p in partial_dir.glob("*.part")) < 300_000 - 65536:
            assert child.poll() is None and time.monotonic() < deadline, "the download never got going"
            time.sleep(0.02)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    local_server.set_fault(path, None)
    assert scenario.check_visible() == []
    assert scenario.run("data", "status", "--json").returncode == 0
    versions, problems = scenario.check_settled()
    assert problems == [] and versions == {"crashdb": "v1"}
    assert list(partial_dir.glob("*.part")), "the partial download is kept to resume from"

    rerun = scenario.run(*scenario.command)
    assert rerun.returncode == 0, rerun.stderr
    versions, problems = scenario.check_settled()
    assert problems == [] and versions == {"crashdb": "v2"}
    assert not (scenario.data_dir / STAGING).exists()
    resumed = [r for r in local_server.requests if r.path == path][-1]
    assert resumed.range is not None and resumed.status == 206  # it resumed, it did not start over


def test_a_killed_bundle_leaves_no_staged_copies_behind(tmp_path, local_server, isolated_env):
    """`bundle` stages whole packs in the user cache: a kill must not leave gigabytes there for good."""
    from conftest import download_step, payload, recipe_toml

    isolated_env.write_config("max_parallel_downloads = 1\n")  # one after the other: the kill lands in the second
    first, second = payload(800_000, seed=8), payload(400_000, seed=9)
    for pack_id, data in (("carried", first), ("second", second)):
        url = local_server.add(f"/packs/{pack_id}.bin", data)
        (isolated_env.catalog / f"{pack_id}.toml").write_text(recipe_toml(pack_id, [download_step(url, f"{pack_id}.bin", data)]))
    staging = isolated_env.cache / "devops-cp" / "bundle-staging" / STAGING
    out = tmp_path / "out" / "carried.tar.zst"
    out.parent.mkdir()
    driver = [sys.executable, str(REPO / "tests" / "crash_driver.py")]
    args = ["data", "bundle", "carried", "second", "-o", str(out), "--unsigned", "--progress", "none"]
    killed = subprocess.run([*driver, "bytes:1000000", *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert list(staging.glob("txn-carried-*/files/carried.bin")), "the first pack's staged copy is on disk"
    assert not list(out.parent.iterdir()), "nothing named like the bundle exists"

    again = subprocess.run([*driver, "none", *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert not list(staging.glob("txn-*")) and not list(staging.glob("partial/*.part"))
    verify = subprocess.run([*driver, "none", "data", "verify", str(out), "--allow-unsigned"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stderr
