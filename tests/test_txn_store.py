"""The store and its transactions: records keyed by choices, status, check-updates, remove,
recovery after a kill (journal or not), updates that fail, and the per-data-dir lock."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from support.localserver import Fault
from support.waiting import wait_for
from executor.config import load_config
from executor.store import Store
from executor.txn import STAGING_NAME
from manifests.errors import LockTimeout

from conftest import REPO, download_step, files_under, gets, make_tar_gz, payload, sha256

CHILD_CLI = "import sys; from devops_cp.cli import main; sys.argv[0] = 'devops-cp'; main()"


def spawn_cli(*args: str, prelude: str = "") -> subprocess.Popen:
    """`devops-cp data ARGS` in another process (same isolated environment), optionally patched first."""
    return subprocess.Popen(
        [sys.executable, "-c", prelude + "\n" + CHILD_CLI, "data", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def whisper_like(local_server, write_recipe):
    """Two options of one pack, installed side by side."""
    tiny, base = payload(3000, seed=5), payload(7000, seed=6)
    steps = {
        "tiny": [download_step(local_server.add("/w/tiny.pt", tiny), "tiny.pt", tiny)],
        "base": [download_step(local_server.add("/w/base.pt", base), "base.pt", base)],
    }
    choices = [{"id": "model_size", "label": "Model size", "options": [{"value": "tiny", "label": "Tiny", "default": True}, {"value": "base", "label": "Base"}]}]
    write_recipe("whisper-like", steps, choices=choices, data_type="ml_model", update_schedule="manual")
    return tiny, base


def test_records_are_keyed_by_pack_and_choices(cli, whisper_like, isolated_env):
    tiny, base = whisper_like
    assert cli("install", "whisper-like").exit_code == 0
    assert cli("install", "whisper-like", "-c", "model_size=base").exit_code == 0
    whisper_dir = isolated_env.cache / "whisper"  # the seed's ~/.cache/whisper, under XDG_CACHE_HOME
    assert files_under(whisper_dir) == ["base.pt", "tiny.pt"]
    assert isolated_env.record("whisper-like@model_size=tiny")["files"][0]["sha256"] == sha256(tiny)
    assert isolated_env.record("whisper-like@model_size=base")["choices"] == {"model_size": "base"}

    status = cli("status", "--json").json()
    sizes = {p["key"]: p["size_bytes"] for p in status["packs"]}
    assert sizes == {"whisper-like@model_size=tiny": len(tiny), "whisper-like@model_size=base": len(base)}
    usage = {u["path"]: u["size_bytes"] for u in status["data_dirs"]}
    assert usage[str(whisper_dir)] == len(tiny) + len(base)

    text = cli("status")
    assert "whisper-like@model_size=base" in text.stdout and str(whisper_dir) in text.stdout


def test_remove_one_variant_keeps_the_other(cli, whisper_like, isolated_env):
    cli("install", "whisper-like:model_size=tiny")
    cli("install", "whisper-like:model_size=base")
    result = cli("remove", "whisper-like:model_size=tiny", "--json")
    assert result.exit_code == 0 and result.json()["removed"] == ["whisper-like@model_size=tiny"]
    assert files_under(isolated_env.cache / "whisper") == ["base.pt"]
    assert [p["key"] for p in cli("status", "--json").json()["packs"]] == ["whisper-like@model_size=base"]
    assert cli("remove", "whisper-like:model_size=tiny").exit_code == 2  # no longer installed


def test_remove_deletes_only_that_packs_files(cli, serve_pack, isolated_env):
    serve_pack("first", payload(1000, seed=1), dest="models/first/first.bin")
    serve_pack("second", payload(1000, seed=2), dest="models/second.bin")
    assert cli("install", "first", "second").exit_code == 0
    (isolated_env.sample_dir() / "notes.txt").write_text("the user's own file")
    assert cli("remove", "first").exit_code == 0
    assert files_under(isolated_env.sample_dir()) == ["models/second.bin", "notes.txt"]  # models/first/ pruned
    assert [r["key"] for r in cli("status", "--json").json()["packs"]] == ["second"]


def test_check_updates_never_fresh_stale_and_tool_hint(cli, serve_pack, write_recipe, isolated_env):
    serve_pack("daily-db", payload(1000, seed=1), top={"update_schedule": "daily"})
    serve_pack("weekly-db", payload(1000, seed=2), top={"update_schedule": "weekly"})
    write_recipe("never-db", [download_step("http://127.0.0.1:9/x.bin", "x.bin", b"x")], update_schedule="weekly", tool_hint="scanner will not work without its DB")
    assert cli("install", "daily-db", "weekly-db").exit_code == 0

    for key in ("daily-db", "weekly-db"):  # no validators: judged by the schedule (upstream's answer: tests/test_upstream_changed.py)
        record_file = isolated_env.records_dir / f"{key}.json"
        record = json.loads(record_file.read_text())
        del record["extra"]["upstream"]
        if key == "daily-db":
            record["fetched_at"] = "2020-01-01T00:00:00Z"
        record_file.write_text(json.dumps(record))

    result = cli("check-updates", "--json")
    assert result.exit_code == 0
    rows = {r["key"]: r for r in result.json()["packs"]}
    assert rows["daily-db"]["stale"] is True and rows["daily-db"]["reason"] == "older than its update schedule"
    assert rows["daily-db"]["next_update_seconds"] == 0
    assert rows["weekly-db"]["stale"] is False and rows["weekly-db"]["reason"] == "fresh"
    assert 6 * 86400 < rows["weekly-db"]["next_update_seconds"] <= 7 * 86400
    assert rows["never-db"]["stale"] is True and rows["never-db"]["reason"] == "never downloaded"
    assert "scanner will not work without its DB" in result.json()["warnings"]

    text = cli("check-updates")
    assert "STALE (fetched 2020-01-01" in text.stdout and "never downloaded" in text.stdout
    assert "warning: scanner will not work without its DB" in text.stderr


def test_freshness_is_judged_by_fetched_at_not_installed_at(isolated_env):
    from executor.store import InstallRecord, parse_iso

    record = InstallRecord("k", "p", "P", "sample", "/d", {}, [], "bundle:x", installed_at="2026-11-25T00:00:00Z", fetched_at="2026-11-18T00:00:00Z")
    now = parse_iso("2026-11-25T00:00:00Z").timestamp()  # sideloaded today, fetched a week ago
    fresh = Store(load_config()).freshness(record, 7 * 86400 - 1, now=now)
    assert fresh["stale"] is True and fresh["age_seconds"] == 7 * 86400  # a week-old DB sideloaded today is a week old


# --- updates and atomicity -----------------------------------------------------------------------------


def test_a_failed_update_leaves_the_previous_version_intact(cli, local_server, serve_pack, isolated_env):
    v1 = payload(5000, seed=1)
    serve_pack("db", v1, dest="db/vuln.db")
    assert cli("install", "db").exit_code == 0
    v2 = payload(6000, seed=2)
    local_server.replace("/packs/db.bin", v2)
    result = cli("install", "db", "--reinstall")  # the recipe still pins v1's checksum: v2 is refused
    assert result.exit_code == 3
    assert (isolated_env.sample_dir() / "db" / "vuln.db").read_bytes() == v1
    assert isolated_env.record("db")["files"][0]["sha256"] == sha256(v1)
    assert files_under(isolated_env.sample_dir()) == ["db/vuln.db"]


def test_an_update_replaces_files_and_removes_the_ones_the_new_version_lacks(cli, local_server, write_recipe, isolated_env):
    v1 = make_tar_gz([("top/a.db", b"a1"), ("top/old-only.db", b"old")])
    v2 = make_tar_gz([("top/a.db", b"a2"), ("top/new-only.db", b"new")])
    url = local_server.add("/db.tar.gz", v1)
    write_recipe("arch", [download_step(url, "arch", v1, extract="tar.gz", strip_components=1)])
    assert cli("install", "arch").exit_code == 0
    local_server.replace("/db.tar.gz", v2)
    write_recipe("arch", [download_step(url, "arch", v2, extract="tar.gz", strip_components=1)])
    assert cli("install", "arch").exit_code == 0
    assert files_under(isolated_env.sample_dir()) == ["arch/a.db", "arch/new-only.db"]
    assert (isolated_env.sample_dir() / "arch" / "a.db").read_bytes() == b"a2"
    assert sorted(f["path"] for f in isolated_env.record("arch")["files"]) == ["arch/a.db", "arch/new-only.db"]


KILL_AT_ROLL_FORWARD = """
import os, signal
import executor.txn as txn
def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)  # the journal is on disk; nothing has moved yet
txn.roll_forward = killed
"""

KILL_BEFORE_JOURNAL = """
import os, signal
import executor.durable as durable
def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)  # staged, never decided
durable.sync_files = killed
"""


def test_kill_after_the_journal_is_completed_by_the_next_command(cli, serve_pack, isolated_env):
    data = payload(20_000)
    serve_pack("journaled", data, dest="db/j.db")
    child = spawn_cli("install", "journaled", "--progress", "none", prelude=KILL_AT_ROLL_FORWARD)
    assert child.wait(60) == -signal.SIGKILL
    staging = isolated_env.sample_dir() / STAGING_NAME
    assert len(list(staging.glob("txn-*/JOURNAL.json"))) == 1
    assert not (isolated_env.sample_dir() / "db" / "j.db").exists()

    status = cli("status", "--json").json()  # any command that touches the store recovers first
    assert [p["key"] for p in status["packs"]] == ["journaled"]
    assert (isolated_env.sample_dir() / "db" / "j.db").read_bytes() == data
    assert files_under(isolated_env.sample_dir()) == ["db/j.db"]
    assert not staging.exists()


def test_kill_before_the_journal_is_rolled_back_by_the_next_command(cli, local_server, serve_pack, isolated_env):
    v1 = payload(20_000, seed=1)
    serve_pack("rolled", v1, dest="db/r.db", checksum=False)
    assert cli("install", "rolled").exit_code == 0
    local_server.replace("/packs/rolled.bin", payload(20_000, seed=2))
    child = spawn_cli("install", "rolled", "--reinstall", "--progress", "none", prelude=KILL_BEFORE_JOURNAL)
    assert child.wait(60) == -signal.SIGKILL
    staging = isolated_env.sample_dir() / STAGING_NAME
    assert list(staging.glob("txn-*/files/db/r.db"))  # staged, not visible
    assert cli("status", "--json").exit_code == 0
    assert not staging.exists()
    assert (isolated_env.sample_dir() / "db" / "r.db").read_bytes() == v1
    assert isolated_env.record("rolled")["files"][0]["sha256"] == sha256(v1)


def test_a_staging_dir_without_journal_is_removed(cli, isolated_env):
    leftover = isolated_env.sample_dir() / STAGING_NAME / "txn-old-0123abcd" / "files" / "db"
    leftover.mkdir(parents=True)
    (leftover / "half.db").write_bytes(b"half")
    assert cli("status").exit_code == 0
    assert not (isolated_env.sample_dir() / STAGING_NAME).exists()


def test_kill_9_mid_download_then_rerun_resumes_from_the_partial(cli, local_server, serve_pack, isolated_env):
    data = payload(2 * 2**20)
    serve_pack("killed", data)
    local_server.set_fault("/packs/killed.bin", Fault(stall_after=2**20, stall_seconds=30))
    child = spawn_cli("install", "killed", "--progress", "none")
    try:
        partial_dir = isolated_env.sample_dir() / STAGING_NAME / "partial"
        wait_for(lambda: gets(local_server) and gets(local_server)[0].body_bytes_sent >= 2**20, "the first MiB to be sent")
        wait_for(lambda: sum(p.stat().st_size for p in partial_dir.glob("*.part")) >= 2**20 - 65536, "the partial file to fill")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    local_server.set_fault("/packs/killed.bin", None)
    (part,) = partial_dir.glob("*.part")
    kept = part.stat().st_size
    result = cli("install", "killed")
    assert result.exit_code == 0, result.stderr
    resumed = gets(local_server)[1]
    assert resumed.range == f"bytes={kept}-" and resumed.status == 206
    assert (isolated_env.sample_dir() / "killed" / "killed.bin").read_bytes() == data
    assert not (isolated_env.sample_dir() / STAGING_NAME).exists()


# --- locks ------------------------------------------------------------------------------------------------

HOLDER = """
import sys, time
from pathlib import Path
from executor.config import load_config
from executor.store import Store
with Store(load_config()).locked([Path(sys.argv[1])], timeout=5):
    print("locked", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def lock_holder(isolated_env):
    processes = []

    def hold(directory: Path) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-c", HOLDER, str(directory)], cwd=REPO, stdout=subprocess.PIPE, text=True)
        processes.append(process)
        assert process.stdout.readline().strip() == "locked"
        return process

    yield hold
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def test_lock_held_by_another_process_times_out(lock_holder, cli, serve_pack, isolated_env):
    directory = isolated_env.sample_dir()
    lock_holder(directory)
    with pytest.raises(LockTimeout) as exc:
        with Store(load_config()).locked([directory], timeout=0.2):
            pass
    assert exc.value.exit_code == 8 and str(directory) in exc.value.message

    isolated_env.write_config("lock_timeout = 0.3\n")
    serve_pack("blocked", payload(1000))
    result = cli("install", "blocked")
    assert result.exit_code == 8 and "another devops-cp run holds the lock" in result.stderr


def test_lock_of_a_sigkilled_process_does_not_block(lock_holder, isolated_env):
    directory = isolated_env.sample_dir()
    holder = lock_holder(directory)
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    with Store(load_config()).locked([directory], timeout=2):
        pass


def test_two_installs_at_once_are_serialised(cli, local_server, serve_pack, isolated_env):
    data = payload(2**20)
    serve_pack("shared", data)
    local_server.set_fault("/packs/shared.bin", Fault(delay_per_chunk=0.02))
    child = spawn_cli("install", "shared", "--progress", "none")
    try:
        wait_for(lambda: gets(local_server), "the other run to start downloading")
        result = cli("install", "shared")  # waits for the lock, then installs again over the finished copy
        assert child.wait(30) == 0, child.stderr.read()
    finally:
        if child.poll() is None:
            child.kill()
    assert result.exit_code == 0, result.stderr
    assert (isolated_env.sample_dir() / "shared" / "shared.bin").read_bytes() == data
    assert files_under(isolated_env.sample_dir()) == ["shared/shared.bin"]
