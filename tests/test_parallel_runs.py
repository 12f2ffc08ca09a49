"""Many runs sharing one home, as separate processes against a slow server on 127.0.0.1: each
pack downloads under its own lock, and only the short commit waits for the data dir's lock.
How long ten installs take against the slowest one is measured in bench/parallel_installs.py."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone

import pytest

from bundle_helpers import PackSpec, new_key, write_bundle, write_public_key
from conftest import download_step, files_under, gets, payload, sha256
from support.localserver import Fault
from test_concurrency import finish, spawn

SLOW = Fault(delay_per_chunk=0.1)  # 64 KiB every 0.1 s: a 1 MiB pack takes 1.6 s


def serve_slow(local_server, write_recipe, pack_id: str, size: int = 2**20) -> bytes:
    data = payload(size, seed=sum(map(ord, pack_id)))
    url = local_server.add(f"/packs/{pack_id}.bin", data)
    local_server.set_fault(f"/packs/{pack_id}.bin", SLOW)
    write_recipe(pack_id, [download_step(url, f"{pack_id}/{pack_id}.bin", data)])
    return data


def test_ten_installs_of_one_data_type_at_once_all_succeed(local_server, write_recipe, isolated_env):
    """One after another they would take 16 s; the commit lock's timeout is 8 s. Holding the data
    dir's lock for the whole download (as before) ends some of them with exit 8."""
    isolated_env.write_config("lock_timeout = 8\n")
    packs = {f"par{n}": serve_slow(local_server, write_recipe, f"par{n}") for n in range(10)}
    results = finish(*[spawn("install", pack, "--progress", "none") for pack in packs], timeout=240)
    assert [rc for rc, _, _ in results] == [0] * 10, [(rc, err[-300:]) for rc, _, err in results if rc]
    for pack, data in packs.items():
        record = isolated_env.record(pack)
        assert [(f["path"], f["sha256"]) for f in record["files"]] == [(f"{pack}/{pack}.bin", sha256(data))]
        assert (isolated_env.sample_dir() / pack / f"{pack}.bin").read_bytes() == data
        assert len(gets(local_server, f"/packs/{pack}.bin")) == 1
    assert files_under(isolated_env.sample_dir()) == sorted(f"{p}/{p}.bin" for p in packs)


def test_two_installs_of_the_same_pack_download_it_once(local_server, write_recipe, isolated_env):
    data = serve_slow(local_server, write_recipe, "twice", size=3 * 2**20)  # about 5 s
    first = spawn("install", "twice")  # plain progress lines on stderr (not a terminal)
    said = first.stderr.readline()  # its first line: the download has started
    assert said.startswith("twice:"), said
    second = spawn("install", "twice", "--progress", "none")
    waited = second.stderr.readline()
    assert "waiting for another devops-cp run that is installing twice" in waited, waited
    (rc1, _, err1), (rc2, _, err2) = finish(first, second)
    assert (rc1, rc2) == (0, 0), (err1, err2)
    assert "installed by another devops-cp run while this one waited" in err2
    assert len(gets(local_server, "/packs/twice.bin")) == 1
    assert isolated_env.record("twice")["files"][0]["sha256"] == sha256(data)
    assert files_under(isolated_env.sample_dir()) == ["twice/twice.bin"]


ROUNDS = 12


@pytest.mark.parametrize("first", ["install", "sideload"])
def test_an_older_sideload_racing_a_newer_install_never_wins_silently(first, local_server, write_recipe, isolated_env, tmp_path):
    """The install fetches today's data; the bundle carries data fetched a day ago. Whatever the
    order, the newer data ends installed: a sideload that commits first is updated by the install,
    one that would commit over it is refused (exit 4). Never the older data with both exiting 0."""
    key = new_key()
    pub = write_public_key(tmp_path / "site.pub", key)
    old = {"race/race.bin": payload(300_000, seed=77)}
    yesterday = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=1)
    bundle = write_bundle(tmp_path / "old.tar.zst", [PackSpec("race", old, fetched_at=yesterday)], key=key).path
    new = payload(600_000, seed=78)
    url = local_server.add("/packs/race.bin", new)
    local_server.set_fault("/packs/race.bin", Fault(delay_per_chunk=0.02))
    write_recipe("race", [download_step(url, "race/race.bin", new)])
    commands = {"install": ("install", "race"), "sideload": ("sideload", str(bundle), "--trust", str(pub), "--progress", "none")}
    second = "sideload" if first == "install" else "install"
    for n in range(ROUNDS):
        (isolated_env.records_dir / "race.json").unlink(missing_ok=True)
        shutil.rmtree(isolated_env.sample_dir() / "race", ignore_errors=True)
        children = {first: spawn(*commands[first])}
        if first == "install" and n % 2:
            children[first].stderr.readline()  # every other round the sideload starts mid-download
        children[second] = spawn(*commands[second])
        (rc_i, _, err_i), (rc_s, _, err_s) = finish(children["install"], children["sideload"])
        assert rc_i == 0, err_i
        assert rc_s in (0, 4), err_s
        record = isolated_env.record("race")
        assert record["files"][0]["sha256"] == sha256(new) and not record["source"].startswith("bundle:"), (n, rc_s, err_s)
        assert (isolated_env.sample_dir() / "race" / "race.bin").read_bytes() == new
        assert rc_s == 0 or "older than what is installed" in err_s, err_s
