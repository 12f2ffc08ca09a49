"""No byte moved for what is already there (issue 18 rule 4's adoption, issue 20 item 2).

A file already in the data dir with exactly the pinned sha256, a plain file of this user with one
link, is adopted before anything is fetched: the server never sees a request for it. An installed
pack with a missing or changed file is repaired: only that file is fetched, the others keep their
inodes, and a repair that is cut off (a dropped connection, kill -9) leaves the pack as it was.
"""

from __future__ import annotations

import json
import os
import threading
import signal
import subprocess
import sys

import pytest

from bundle_helpers import PackSpec, new_key, write_bundle, write_public_key
from conftest import REPO, download_step, gets, make_tar_gz, payload, sha256
from support.localserver import Fault
from support.waiting import wait_for
from executor.txn import STAGING_NAME

MODEL = payload(400_000, seed=11)
CHILD_CLI = "import sys; from devops_cp.cli import main; sys.argv[0] = 'devops-cp'; main()"


def whisper_dir(isolated_env):
    return isolated_env.cache / "whisper"  # ml_model's data dir: ~/.cache/whisper


def fetched(server, path: str) -> int:
    """Body bytes the server sent for `path`, over every request."""
    return sum(r.body_bytes_sent for r in gets(server, path))


@pytest.fixture
def three_files(local_server, write_recipe):
    """A pack of three files, each from a download step of its own: {dest: (url path, bytes)}."""
    files = {f"db/{name}.bin": (f"/three/{name}.bin", payload(200_000, seed=n)) for n, name in enumerate(("a", "b", "c"), start=1)}
    steps = [download_step(local_server.add(path, data), dest, data) for dest, (path, data) in files.items()]
    write_recipe("three", steps)
    return files


def inodes(data_dir, rels) -> dict[str, int]:
    return {rel: (data_dir / rel).stat().st_ino for rel in rels}


# --- adoption before downloading (issue 18, rule 4) -----------------------------------------------


def test_whispers_own_model_file_is_adopted_and_not_downloaded(cli, local_server, write_recipe, isolated_env):
    url = local_server.add("/models/base.pt", MODEL)
    write_recipe("whisper-like", [download_step(url, "base.pt", MODEL)], data_type="ml_model")
    model = whisper_dir(isolated_env) / "base.pt"
    model.parent.mkdir(parents=True)
    model.write_bytes(MODEL)  # whisper downloaded it itself
    inode = model.stat().st_ino

    result = cli("install", "whisper-like", "--progress", "plain")
    assert result.exit_code == 0, result.stderr
    assert fetched(local_server, "/models/base.pt") == 0 and gets(local_server) == []
    assert "already there with the expected sha256: adopted" in result.stderr
    record = isolated_env.record("whisper-like")
    assert record["adopted"] == ["base.pt"] and [(f["path"], f["sha256"]) for f in record["files"]] == [("base.pt", sha256(MODEL))]
    assert model.stat().st_ino == inode

    assert "already installed" in cli("install", "whisper-like", "--progress", "none").stdout
    removed = cli("remove", "whisper-like")
    assert removed.exit_code == 0 and "it was there before the pack (adopted)" in removed.stdout
    assert model.read_bytes() == MODEL and model.stat().st_ino == inode
    assert gets(local_server) == []


def test_only_the_files_not_already_there_are_downloaded(cli, three_files, local_server, isolated_env):
    data_dir = isolated_env.sample_dir()
    (data_dir / "db").mkdir(parents=True)
    (data_dir / "db" / "b.bin").write_bytes(three_files["db/b.bin"][1])
    result = cli("install", "three", "--progress", "none")
    assert result.exit_code == 0, result.stderr
    assert fetched(local_server, "/three/b.bin") == 0
    assert fetched(local_server, "/three/a.bin") == fetched(local_server, "/three/c.bin") == 200_000
    assert isolated_env.record("three")["adopted"] == ["db/b.bin"]
    removed = cli("remove", "three")
    assert removed.exit_code == 0
    assert sorted(p.name for p in (data_dir / "db").iterdir()) == ["b.bin"]


@pytest.mark.parametrize("why", ["a symlink", "a second link", "another owner", "other bytes"])
def test_a_file_that_cannot_be_adopted_is_downloaded_and_not_replaced_without_overwrite(why, cli, local_server, write_recipe, isolated_env, tmp_path):
    url = local_server.add("/models/base.pt", MODEL)
    write_recipe("whisper-like", [download_step(url, "base.pt", MODEL)], data_type="ml_model")
    model = whisper_dir(isolated_env) / "base.pt"
    model.parent.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere.pt"
    elsewhere.write_bytes(MODEL)
    if why == "a symlink":
        model.symlink_to(elsewhere)
    elif why == "a second link":
        os.link(elsewhere, model)
    elif why == "another owner":
        model.write_bytes(MODEL)
        os.chown(model, 65534, 65534)
    else:
        model.write_bytes(MODEL[:-1] + b"!")
    before = os.lstat(model)

    refused = cli("install", "whisper-like", "--progress", "none")
    assert refused.exit_code == 4, refused.stderr
    assert "is already there and is not whisper-like's" in refused.stderr and "--overwrite" in refused.stderr
    assert fetched(local_server, "/models/base.pt") == len(MODEL)  # not adoptable: fetched as usual, then refused
    after = os.lstat(model)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    assert elsewhere.read_bytes() == MODEL

    replaced = cli("install", "whisper-like", "--overwrite", "--progress", "none")
    assert replaced.exit_code == 0, replaced.stderr
    assert not model.is_symlink() and model.read_bytes() == MODEL and elsewhere.read_bytes() == MODEL
    record = isolated_env.record("whisper-like")
    assert record["overwritten"] == ["base.pt"] and record["adopted"] == []


def test_another_packs_file_with_the_same_bytes_is_not_adopted(cli, local_server, write_recipe, isolated_env):
    url = local_server.add("/models/base.pt", MODEL)
    write_recipe("first", [download_step(url, "base.pt", MODEL)], data_type="ml_model")
    write_recipe("second", [download_step(url, "base.pt", MODEL)], data_type="ml_model")
    assert cli("install", "first", "--progress", "none").exit_code == 0
    result = cli("install", "second", "--progress", "none")
    assert result.exit_code == 4 and "is not second's (first's)" in result.stderr, result.stderr
    assert len(gets(local_server)) == 2


def test_a_sideload_adopts_a_file_already_there_without_copying_it(cli, isolated_env, tmp_path):
    key = new_key()
    pub = write_public_key(tmp_path / "site.pub", key)
    bundle = write_bundle(tmp_path / "m.tar.zst", [PackSpec("model", {"models/tiny.pt": MODEL, "models/extra.bin": b"extra"})], key=key).path
    data_dir = isolated_env.sample_dir()
    (data_dir / "models").mkdir(parents=True)
    (data_dir / "models" / "tiny.pt").write_bytes(MODEL)
    inode = (data_dir / "models" / "tiny.pt").stat().st_ino

    result = cli("sideload", str(bundle), "--trust", str(pub), "--progress", "none")
    assert result.exit_code == 0, result.stderr
    assert "tiny.pt is already there with the expected sha256: adopted" in result.stderr
    assert isolated_env.record("model")["adopted"] == ["models/tiny.pt"]
    assert (data_dir / "models" / "tiny.pt").stat().st_ino == inode
    assert (data_dir / "models" / "extra.bin").read_bytes() == b"extra"


# --- repair only what changed (issue 20, item 2) ---------------------------------------------------


@pytest.mark.parametrize("verify", [False, True], ids=["size-and-time", "verify"])
def test_a_repair_fetches_only_the_missing_and_changed_files(verify, cli, three_files, local_server, isolated_env):
    assert cli("install", "three", "--progress", "none").exit_code == 0
    data_dir = isolated_env.sample_dir()
    record_before = isolated_env.record("three")
    untouched = inodes(data_dir, ["db/a.bin"])
    (data_dir / "db" / "b.bin").unlink()
    changed = data_dir / "db" / "c.bin"
    if verify:  # same size, same time: only a re-hash sees it
        st = changed.stat()
        with open(changed, "r+b") as f:
            f.write(b"\0" * 10)
        os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns))
    else:
        changed.write_bytes(b"truncated")

    result = cli("install", "three", *(["--verify"] if verify else []), "--progress", "plain")
    assert result.exit_code == 0, result.stderr
    assert "three: repairing: db/b.bin is missing" in result.stderr
    assert "2 file(s) fetched, 1 unchanged file(s) left as they were" in result.stderr
    assert fetched(local_server, "/three/a.bin") == 200_000  # the first install's only
    assert fetched(local_server, "/three/b.bin") == fetched(local_server, "/three/c.bin") == 400_000
    assert inodes(data_dir, ["db/a.bin"]) == untouched
    for rel, (_, data) in three_files.items():
        assert (data_dir / rel).read_bytes() == data
    record = isolated_env.record("three")
    assert record["files"] == record_before["files"] and record["adopted"] == []
    assert record["installed_at"] >= record_before["installed_at"]
    assert "already installed" in cli("install", "three", "--verify", "--progress", "none").stdout
    assert not (data_dir / STAGING_NAME).exists()


def test_a_repair_without_published_checksums_keeps_what_the_record_vouches_for(cli, local_server, write_recipe, isolated_env):
    a, b = payload(50_000, seed=21), payload(50_000, seed=22)
    steps = [download_step(local_server.add("/u/a.bin", a), "u/a.bin", a, checksum=False), download_step(local_server.add("/u/b.bin", b), "u/b.bin", b, checksum=False)]
    write_recipe("unpinned", steps)
    assert cli("install", "unpinned", "--progress", "none").exit_code == 0
    data_dir = isolated_env.sample_dir()
    untouched = inodes(data_dir, ["u/a.bin"])
    (data_dir / "u" / "b.bin").unlink()
    result = cli("install", "unpinned", "--progress", "none")
    assert result.exit_code == 0, result.stderr
    assert len(gets(local_server, "/u/a.bin")) == 1 and len(gets(local_server, "/u/b.bin")) == 2
    assert inodes(data_dir, ["u/a.bin"]) == untouched and (data_dir / "u" / "b.bin").read_bytes() == b


def test_an_update_that_pins_a_new_file_keeps_the_unchanged_ones(cli, local_server, write_recipe, isolated_env):
    a, b1, b2 = payload(60_000, seed=31), payload(60_000, seed=32), payload(60_000, seed=33)
    url_a, url_b1, url_b2 = local_server.add("/v/a.bin", a), local_server.add("/v/b1.bin", b1), local_server.add("/v/b2.bin", b2)
    write_recipe("versioned", [download_step(url_a, "v/a.bin", a), download_step(url_b1, "v/b.bin", b1)])
    assert cli("install", "versioned", "--progress", "none").exit_code == 0
    data_dir = isolated_env.sample_dir()
    untouched = inodes(data_dir, ["v/a.bin"])
    write_recipe("versioned", [download_step(url_a, "v/a.bin", a), download_step(url_b2, "v/b.bin", b2)])
    result = cli("install", "versioned", "--progress", "plain")
    assert result.exit_code == 0, result.stderr
    assert "its recipe has changed since" in result.stderr
    assert len(gets(local_server, "/v/a.bin")) == 1 and len(gets(local_server, "/v/b2.bin")) == 1
    assert inodes(data_dir, ["v/a.bin"]) == untouched and (data_dir / "v" / "b.bin").read_bytes() == b2
    assert {f["path"]: f["sha256"] for f in isolated_env.record("versioned")["files"]} == {"v/a.bin": sha256(a), "v/b.bin": sha256(b2)}


def test_a_repair_of_an_archive_fetches_it_again_and_replaces_only_the_changed_files(cli, local_server, write_recipe, isolated_env):
    members = {f"m{n}.txt": payload(30_000, seed=40 + n) for n in range(4)}
    archive = make_tar_gz(list(members.items()))
    url = local_server.add("/arc/data.tar.gz", archive)
    write_recipe("arc", [download_step(url, "arc", archive, extract="tar.gz", unpacked_size_bytes=120_000)])
    assert cli("install", "arc", "--progress", "none").exit_code == 0
    data_dir = isolated_env.sample_dir() / "arc"
    untouched = inodes(data_dir, ["m0.txt", "m1.txt"])
    (data_dir / "m2.txt").unlink()
    (data_dir / "m3.txt").write_bytes(b"edited")

    result = cli("install", "arc", "--progress", "plain")
    assert result.exit_code == 0, result.stderr
    assert "repairing: arc/m2.txt is missing" in result.stderr
    assert "its archive had to be fetched again; 2 changed or missing file(s) from it replaced, 2 unchanged file(s) left as they were" in result.stderr
    assert len(gets(local_server, "/arc/data.tar.gz")) == 2
    assert inodes(data_dir, ["m0.txt", "m1.txt"]) == untouched
    assert {name: (data_dir / name).read_bytes() for name in members} == members


def test_a_repair_cut_off_by_a_dropped_connection_leaves_the_pack_as_it_was(cli, three_files, local_server, isolated_env):
    from conftest import fast_settings

    assert cli("install", "three", "--progress", "none").exit_code == 0
    data_dir = isolated_env.sample_dir()
    record_file = isolated_env.records_dir / "three.json"
    record_bytes = record_file.read_bytes()
    (data_dir / "db" / "b.bin").unlink()
    untouched = inodes(data_dir, ["db/a.bin", "db/c.bin"])
    local_server.set_fault("/three/b.bin", Fault(drop_after=100_000, drop_times=10))

    cut = cli("install", "three", "--progress", "none", settings=fast_settings(retries=0))
    assert cut.exit_code == 6, cut.stderr
    assert record_file.read_bytes() == record_bytes
    assert inodes(data_dir, ["db/a.bin", "db/c.bin"]) == untouched and not (data_dir / "db" / "b.bin").exists()

    local_server.set_fault("/three/b.bin", None)
    result = cli("install", "three", "--progress", "none")
    assert result.exit_code == 0, result.stderr
    assert (data_dir / "db" / "b.bin").read_bytes() == three_files["db/b.bin"][1]
    assert inodes(data_dir, ["db/a.bin", "db/c.bin"]) == untouched
    assert gets(local_server, "/three/b.bin")[-1].range == "bytes=100000-"  # the partial download was kept and resumed
    assert len(gets(local_server, "/three/a.bin")) == len(gets(local_server, "/three/c.bin")) == 1


def test_a_repair_killed_mid_download_leaves_the_pack_as_it_was(cli, local_server, write_recipe, isolated_env):
    small, big = payload(10_000, seed=51), payload(2 * 2**20, seed=52)
    write_recipe("killed", [download_step(local_server.add("/k/small.bin", small), "k/small.bin", small), download_step(local_server.add("/k/big.bin", big), "k/big.bin", big)])
    assert cli("install", "killed", "--progress", "none").exit_code == 0
    data_dir = isolated_env.sample_dir()
    record_bytes = (isolated_env.records_dir / "killed.json").read_bytes()
    (data_dir / "k" / "big.bin").write_bytes(b"damaged")
    untouched = inodes(data_dir, ["k/small.bin"])
    local_server.set_fault("/k/big.bin", Fault(stall_after=2**20, stall_seconds=30))

    child = subprocess.Popen([sys.executable, "-c", CHILD_CLI, "data", "install", "killed", "--progress", "none"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: fetched(local_server, "/k/big.bin") >= 2**20, "the first MiB of the repair to be sent")
        partial = data_dir / STAGING_NAME / "partial"
        wait_for(lambda: sum(p.stat().st_size for p in partial.glob("*.part")) >= 2**20 - 65536, "the partial file to fill")
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert cli("status", "--progress", "none").exit_code == 0  # recovers what the kill left
    assert (isolated_env.records_dir / "killed.json").read_bytes() == record_bytes
    assert (data_dir / "k" / "big.bin").read_bytes() == b"damaged" and inodes(data_dir, ["k/small.bin"]) == untouched

    local_server.set_fault("/k/big.bin", None)
    result = cli("install", "killed", "--progress", "none")
    assert result.exit_code == 0, result.stderr
    assert (data_dir / "k" / "big.bin").read_bytes() == big and inodes(data_dir, ["k/small.bin"]) == untouched
    assert len(gets(local_server, "/k/small.bin")) == 1


@pytest.mark.parametrize("kill_at", ["staging", "journal", "rename:1", "records:before", "cleanup"])
def test_a_repair_killed_at_any_phase_leaves_a_whole_pack_and_the_kept_files_untouched(kill_at, cli, three_files, local_server, isolated_env):
    """Killed before its journal, the repair is undone (the missing file still missing); after it, the
    next command completes it. Either way the files it kept were never touched."""
    assert cli("install", "three", "--progress", "none").exit_code == 0
    data_dir = isolated_env.sample_dir()
    record_before = (isolated_env.records_dir / "three.json").read_bytes()
    (data_dir / "db" / "b.bin").unlink()
    untouched = inodes(data_dir, ["db/a.bin", "db/c.bin"])
    child = subprocess.run([sys.executable, str(REPO / "tests" / "crash_driver.py"), kill_at, "data", "install", "three", "--progress", "none"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert cli("status", "--progress", "none").exit_code == 0  # recovers what the kill left
    b = data_dir / "db" / "b.bin"
    if kill_at == "staging":  # before the journal: as it was
        assert not b.exists() and (isolated_env.records_dir / "three.json").read_bytes() == record_before
    else:  # after it: completed
        assert b.read_bytes() == three_files["db/b.bin"][1]
        assert isolated_env.record("three")["files"] == json.loads(record_before)["files"]
    assert inodes(data_dir, ["db/a.bin", "db/c.bin"]) == untouched
    result = cli("install", "three", "--progress", "none")
    assert result.exit_code == 0, result.stderr
    assert {rel: (data_dir / rel).read_bytes() for rel in three_files} == {rel: data for rel, (_, data) in three_files.items()}
    assert inodes(data_dir, ["db/a.bin", "db/c.bin"]) == untouched and not (data_dir / STAGING_NAME).exists()


def test_a_sideload_of_the_same_bundle_again_rewrites_only_what_changed(cli, isolated_env, tmp_path):
    key = new_key()
    pub = write_public_key(tmp_path / "site.pub", key)
    files = {"db/a.bin": payload(100_000, seed=61), "db/b.bin": payload(100_000, seed=62), "db/c.bin": b"small"}
    bundle = write_bundle(tmp_path / "db.tar.zst", [PackSpec("db", files)], key=key).path
    assert cli("sideload", str(bundle), "--trust", str(pub), "--progress", "none").exit_code == 0
    data_dir = isolated_env.sample_dir()
    untouched = inodes(data_dir, ["db/a.bin", "db/c.bin"])
    (data_dir / "db" / "b.bin").unlink()
    result = cli("sideload", str(bundle), "--trust", str(pub), "--progress", "none")
    assert result.exit_code == 0, result.stderr
    assert inodes(data_dir, ["db/a.bin", "db/c.bin"]) == untouched
    assert {rel: (data_dir / rel).read_bytes() for rel in files} == files
    assert isolated_env.record("db")["adopted"] == []


def test_a_kept_file_that_changes_before_the_commit_stops_the_install(local_server, write_recipe, isolated_env):
    """The file was checked (and adopted) before the downloads; it is changed while the next file
    downloads: the commit sees another inode, size or time and refuses (exit 3), changing nothing."""
    a, b = payload(50_000, seed=71), payload(10_000, seed=72)
    entered, release = threading.Event(), threading.Event()

    def slow_b(ctx):
        entered.set()
        release.wait(60)
        ctx.respond(200, b, content_type="application/octet-stream")

    local_server.route("GET", "/late/b.bin", slow_b)
    write_recipe("late", [download_step(local_server.add("/late/a.bin", a), "late/a.bin", a), download_step(local_server.url("/late/b.bin"), "late/b.bin", b)])
    data_dir = isolated_env.sample_dir()
    (data_dir / "late").mkdir(parents=True)
    (data_dir / "late" / "a.bin").write_bytes(a)

    child = subprocess.Popen([sys.executable, "-c", CHILD_CLI, "data", "install", "late", "--progress", "none"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert entered.wait(60), "the download of b.bin never started"
        with open(data_dir / "late" / "a.bin", "ab") as f:
            f.write(b"the user's addition")
    finally:
        release.set()
        _, err = child.communicate(timeout=60)
    assert child.returncode == 3, err
    assert "a.bin changed while late was being installed" in err and "run the install again" in err
    assert gets(local_server, "/late/a.bin") == []
    assert (data_dir / "late" / "a.bin").read_bytes() == a + b"the user's addition"
    assert not (data_dir / "late" / "b.bin").exists() and not (isolated_env.records_dir / "late.json").exists()


def test_a_moving_target_without_checksums_is_fetched_whole_so_its_files_stay_one_version(cli, local_server, write_recipe, isolated_env):
    """Nothing pins what a daily pack's files should be: keeping one and fetching the other could
    join yesterday's file to today's. Both are fetched again."""
    a1, a2, b = payload(40_000, seed=81), payload(40_000, seed=82), payload(40_000, seed=83)
    steps = [download_step(local_server.add("/d/a.bin", a1), "d/a.bin", a1, checksum=False), download_step(local_server.add("/d/b.bin", b), "d/b.bin", b, checksum=False)]
    write_recipe("daily", steps, update_schedule="daily")
    assert cli("install", "daily", "--progress", "none").exit_code == 0
    data_dir = isolated_env.sample_dir()
    (data_dir / "d" / "b.bin").unlink()
    local_server.replace("/d/a.bin", a2)  # upstream moved on
    result = cli("install", "daily", "--progress", "none")
    assert result.exit_code == 0, result.stderr
    assert len(gets(local_server, "/d/a.bin")) == 2 and (data_dir / "d" / "a.bin").read_bytes() == a2
    assert {f["path"]: f["sha256"] for f in isolated_env.record("daily")["files"]} == {"d/a.bin": sha256(a2), "d/b.bin": sha256(b)}


def test_a_moving_target_with_published_checksums_keeps_a_file_that_still_matches_and_its_validators(cli, local_server, write_recipe, isolated_env):
    a, b = payload(40_000, seed=91), payload(40_000, seed=92)
    local_server.add("/p/SHA256SUMS", f"{sha256(a)}  a.bin\n{sha256(b)}  b.bin\n".encode())
    listing = local_server.url("/p/SHA256SUMS")
    steps = [download_step(local_server.add(f"/p/{n}.bin", data), f"p/{n}.bin", data, checksum=False, checksum_url=listing) for n, data in (("a", a), ("b", b))]
    write_recipe("listed", steps, update_schedule="daily")
    assert cli("install", "listed", "--progress", "none").exit_code == 0
    data_dir = isolated_env.sample_dir()
    validators = isolated_env.record("listed")["extra"]["upstream"]
    untouched = inodes(data_dir, ["p/a.bin"])
    (data_dir / "p" / "b.bin").unlink()
    result = cli("install", "listed", "--progress", "none")
    assert result.exit_code == 0, result.stderr
    assert len(gets(local_server, "/p/a.bin")) == 1 and len(gets(local_server, "/p/b.bin")) == 2
    assert inodes(data_dir, ["p/a.bin"]) == untouched
    assert sorted(v["url"] for v in isolated_env.record("listed")["extra"]["upstream"]) == sorted(v["url"] for v in validators)



def test_a_kept_file_is_there_for_a_later_tool_step(cli, local_server, write_recipe, isolated_env):
    """A tool step reads the downloaded file from the staging area (a wheel that pip installs): a
    file kept in place is linked there for it, and still not rewritten."""
    wheel = payload(30_000, seed=111)
    steps = [download_step(local_server.add("/t/w.whl", wheel), "t/w.whl", wheel), {"type": "tool_command", "command": ["cp", "{data_dir}/t/w.whl", "{data_dir}/t/copy.bin"], "produces": ["t/copy.bin"]}]
    write_recipe("tooled", steps)
    assert cli("install", "tooled", "--progress", "none").exit_code == 0
    data_dir = isolated_env.sample_dir()
    untouched = inodes(data_dir, ["t/w.whl"])
    (data_dir / "t" / "copy.bin").unlink()
    result = cli("install", "tooled", "--progress", "none")
    assert result.exit_code == 0, result.stderr
    assert len(gets(local_server, "/t/w.whl")) == 1
    assert inodes(data_dir, ["t/w.whl"]) == untouched and (data_dir / "t" / "w.whl").stat().st_nlink == 1
    assert (data_dir / "t" / "copy.bin").read_bytes() == wheel

# --- install --from a site: the same rules ----------------------------------------------------------


def test_install_from_a_site_adopts_a_file_already_there_and_an_update_fetches_only_what_changed(cli, local_server, isolated_env, tmp_path):
    from test_fleet import publish_tree

    key = new_key()
    pub = write_public_key(tmp_path / "site.pub", key)
    big, v1, v2 = payload(5 << 20, seed=101), b"week 1", b"week 2"  # 4 MiB or more: a layer of its own
    blob = "/site/blobs/sha256/" + sha256(big)
    tree = tmp_path / "tree"
    first = write_bundle(tmp_path / "v1.tar.zst", [PackSpec("geo", {"geo.mmdb": big, "notes.txt": v1}, fetched_at="2026-12-01T00:00:00Z")], key=key, created="2026-12-01T01:00:00Z").path
    assert cli("mirror", str(first), "--to", str(tree), "--trust", str(pub)).exit_code == 0
    data_dir = isolated_env.sample_dir()
    data_dir.mkdir(parents=True)
    (data_dir / "geo.mmdb").write_bytes(big)  # fetched some other way before
    inode = (data_dir / "geo.mmdb").stat().st_ino

    url = publish_tree(tree, local_server)
    result = cli("install", "geo", "--from", url, "--trust", str(pub), "--progress", "plain")
    assert result.exit_code == 0, result.stderr
    assert "geo.mmdb is already there with the expected sha256: adopted" in result.stderr
    assert fetched(local_server, blob) == 0
    assert isolated_env.record("geo")["adopted"] == ["geo.mmdb"] and (data_dir / "notes.txt").read_bytes() == v1

    second = write_bundle(tmp_path / "v2.tar.zst", [PackSpec("geo", {"geo.mmdb": big, "notes.txt": v2}, fetched_at="2026-12-02T00:00:00Z")], key=key, created="2026-12-02T01:00:00Z").path
    assert cli("mirror", str(second), "--to", str(tree), "--trust", str(pub)).exit_code == 0
    url = publish_tree(tree, local_server)
    result = cli("install", "geo", "--from", url, "--trust", str(pub), "--progress", "none")
    assert result.exit_code == 0, result.stderr
    assert fetched(local_server, blob) == 0 and (data_dir / "geo.mmdb").stat().st_ino == inode
    assert (data_dir / "notes.txt").read_bytes() == v2



def test_install_from_a_site_repairs_a_missing_file_of_the_installed_version(cli, local_server, isolated_env, tmp_path):
    from test_fleet import publish_tree

    key = new_key()
    pub = write_public_key(tmp_path / "site.pub", key)
    big, small = payload(5 << 20, seed=121), {f"docs/{n}.txt": f"page {n}".encode() for n in range(3)}
    blob = "/site/blobs/sha256/" + sha256(big)
    tree = tmp_path / "tree"
    bundle = write_bundle(tmp_path / "v1.tar.zst", [PackSpec("docs", {"big.bin": big, **small})], key=key).path
    assert cli("mirror", str(bundle), "--to", str(tree), "--trust", str(pub)).exit_code == 0
    url = publish_tree(tree, local_server)
    assert cli("install", "docs", "--from", url, "--trust", str(pub), "--progress", "none").exit_code == 0
    data_dir = isolated_env.sample_dir()
    again = cli("install", "docs", "--from", url, "--trust", str(pub), "--progress", "none")
    assert again.exit_code == 0 and "up to date" in again.stdout + again.stderr
    untouched = inodes(data_dir, ["big.bin", "docs/0.txt", "docs/2.txt"])
    (data_dir / "docs" / "1.txt").unlink()

    result = cli("install", "docs", "--from", url, "--trust", str(pub), "--progress", "plain")
    assert result.exit_code == 0, result.stderr
    assert "docs: repairing: docs/1.txt is missing" in result.stderr
    assert len(gets(local_server, blob)) == 1  # the first install's only: the big file was kept
    assert inodes(data_dir, ["big.bin", "docs/0.txt", "docs/2.txt"]) == untouched
    assert {rel: (data_dir / rel).read_bytes() for rel in small} == small


def test_a_repair_needs_room_only_for_what_it_fetches_tmpfs(tmpfs, cli, local_server, write_recipe, isolated_env):
    """A 2 MiB filesystem holds the pack's 1.2 MB file: a repair of its small file is not refused
    for want of room for the large one, nor asked about as a large download."""
    big, small = payload(1_200_000, seed=131), payload(20_000, seed=132)
    mnt = tmpfs("2m")
    isolated_env.write_config(f'[data_dirs]\nsample = "{mnt / "samples"}"\n')
    steps = [download_step(local_server.add("/s/big.bin", big), "s/big.bin", big), download_step(local_server.add("/s/small.bin", small), "s/small.bin", small)]
    write_recipe("roomy", steps, size_warning_mb=1)
    assert cli("install", "roomy", "--yes", "--progress", "none").exit_code == 0
    (mnt / "samples" / "s" / "small.bin").unlink()
    result = cli("install", "roomy", "--progress", "none")  # no --yes: 20 kB is not a large download
    assert result.exit_code == 0, result.stderr
    assert (mnt / "samples" / "s" / "small.bin").read_bytes() == small
    assert len(gets(local_server, "/s/big.bin")) == 1
