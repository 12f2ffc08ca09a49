"""The disk fills up in the middle of a download and in the middle of a sideload.

On a real small filesystem (a 2 MiB tmpfs; skipped with the reason where it cannot be
mounted) and on pyfakefs (every machine): the pre-flight space check passes, then the
disk is taken away half way through. The run must stop with exit 5 and an error that
names the space needed, leave nothing behind (no partial file, no staging directory),
keep the version installed before intact, and a run after space was freed must finish.

A large file reserves its space before its first byte (fallocate), so on a real filesystem a
download whose length is known is not failed by another writer filling the disk; the
mid-download case runs as on a filesystem without fallocate, where the write meets the full disk.
"""

from __future__ import annotations

import errno
import os
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bundle_helpers import PackSpec, new_key, tree_snapshot, write_bundle, write_public_key
from conftest import download_step, payload, sha256
from executor import events
from executor.config import WriteSettings
from manifests.units import fmt_size

T0 = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=2)
T1 = T0 + timedelta(days=1)


ORIGINAL_UPDATE = events.Meter.update


def take_space_at(monkeypatch, threshold: int, fill, label_prefix: str = "") -> list[int]:
    """Once a progress meter passed `threshold` bytes, call fill(): the disk is full from then on.

    `give_space_back(monkeypatch)` disarms it (give_space_back(monkeypatch) would also undo the isolated HOME)."""
    fired: list[int] = []
    original = ORIGINAL_UPDATE

    def update(self, done, force=False):
        if not fired and done >= threshold and self.label.startswith(label_prefix):
            fired.append(done)
            fill()
        return original(self, done, force)

    monkeypatch.setattr(events.Meter, "update", update)
    return fired


def give_space_back(monkeypatch) -> None:
    monkeypatch.setattr(events.Meter, "update", ORIGINAL_UPDATE)


def filler(mount: Path, leave: int = 64 * 1024):
    def fill() -> None:
        free = shutil.disk_usage(mount).free
        try:
            (mount / "filler").write_bytes(b"\0" * max(0, free - leave))
        except OSError as exc:  # a small-file writer beside this took some of that space first: full all the same
            if exc.errno != errno.ENOSPC:
                raise

    return fill


def assert_untouched(before: dict, after: dict) -> None:
    changed = {k: (before.get(k), after.get(k)) for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert not changed, changed


# --- direct install -----------------------------------------------------------------------------------


@pytest.fixture
def db_versions(local_server, write_recipe):
    """v1 (100 kB) and v2 (1.5 MB) of pack `db`; write(v) points the recipe at one of them. v2 is
    longer than one socket read (1 MiB, executor/http_fastpath.py): a disk filled once its first
    chunk is counted still has the rest of it to refuse."""
    versions = {"v1": payload(100_000, seed=1), "v2": payload(1_500_000, seed=2)}
    urls = {v: local_server.add(f"/db-{v}.bin", data) for v, data in versions.items()}

    def write(version: str) -> bytes:
        write_recipe("db", [download_step(urls[version], "db/db.bin", versions[version])])
        return versions[version]

    return write


def test_a_disk_filled_by_another_writer_during_a_download_does_not_fail_it_tmpfs(tmpfs, cli, monkeypatch, db_versions, isolated_env):
    """The download reserved its space before the first byte (fallocate): what others write cannot take it."""
    mnt = tmpfs("2m")
    data_dir = mnt / "samples"
    isolated_env.write_config(f'[data_dirs]\nsample = "{data_dir}"\n')
    db_versions("v1")
    assert cli("install", "db").exit_code == 0
    v2 = db_versions("v2")
    free_after_fill = []
    fill = filler(mnt)
    fired = take_space_at(monkeypatch, 300_000, lambda: (fill(), free_after_fill.append(shutil.disk_usage(mnt).free)), label_prefix="db-v2")
    result = cli("install", "db", "--progress", "none")
    assert fired and free_after_fill[0] <= 64 * 1024, "the disk was never filled: the test did not test anything"
    assert result.exit_code == 0, result.stderr
    assert (data_dir / "db" / "db.bin").read_bytes() == v2


def test_disk_full_mid_download_tmpfs(tmpfs, cli, monkeypatch, db_versions, isolated_env):
    """Where nothing can be reserved (a filesystem without fallocate), the write itself meets the full disk."""
    from executor import durable

    monkeypatch.setattr(durable, "_fallocate", None)
    mnt = tmpfs("2m")
    data_dir = mnt / "samples"
    isolated_env.write_config(f'[data_dirs]\nsample = "{data_dir}"\n')
    v1 = db_versions("v1")
    assert cli("install", "db").exit_code == 0
    (data_dir / "notes.txt").write_text("the user's own file")
    before = tree_snapshot(data_dir, isolated_env.records_dir)

    v2 = db_versions("v2")
    fired = take_space_at(monkeypatch, 300_000, filler(mnt), label_prefix="db-v2")
    result = cli("install", "db", "--progress", "none")
    assert fired, "the disk was never filled: the test did not test anything"
    assert result.exit_code == 5, result.stderr
    assert f"not enough space in {data_dir}: needs {fmt_size(len(v2))}" in result.stderr  # the data dir, the space needed
    assert_untouched(before, tree_snapshot(data_dir, isolated_env.records_dir))  # no partial, no staging dir
    assert (data_dir / "db" / "db.bin").read_bytes() == v1

    (mnt / "filler").unlink()  # the user frees space; the same command now finishes
    give_space_back(monkeypatch)
    result = cli("install", "db", "--progress", "none")
    assert result.exit_code == 0, result.stderr
    assert (data_dir / "db" / "db.bin").read_bytes() == v2
    assert isolated_env.record("db")["files"][0]["sha256"] == sha256(v2)
    assert sorted(p.name for p in data_dir.iterdir()) == ["db", "notes.txt"]


def test_disk_full_mid_extraction_tmpfs(tmpfs, cli, local_server, write_recipe, isolated_env):
    """A tar.gz whose recipe gives no unpacked size: it is the extraction that fills the disk."""
    from conftest import make_tar_gz

    mnt = tmpfs("2m")
    data_dir = mnt / "samples"
    isolated_env.write_config(f'[data_dirs]\nsample = "{data_dir}"\n')
    old = make_tar_gz([("top/a.db", b"old a"), ("top/b.db", b"old b")])
    url = local_server.add("/arch.tar.gz", old)
    write_recipe("arch", [download_step(url, "arch", old, extract="tar.gz", strip_components=1)])
    assert cli("install", "arch").exit_code == 0
    before = tree_snapshot(data_dir, isolated_env.records_dir)

    big = make_tar_gz([("top/a.db", b"\0" * 1_500_000), ("top/b.db", b"\0" * 1_500_000)])  # compresses to a few kB
    local_server.replace("/arch.tar.gz", big)
    write_recipe("arch", [download_step(url, "arch", big, extract="tar.gz", strip_components=1)])
    result = cli("install", "arch", "--progress", "none")
    assert result.exit_code == 5, result.stderr
    assert f"not enough space in {data_dir}: needs" in result.stderr
    assert_untouched(before, tree_snapshot(data_dir, isolated_env.records_dir))  # not even the downloaded archive
    assert (data_dir / "arch" / "a.db").read_bytes() == b"old a"


# --- sideload ---------------------------------------------------------------------------------------------


@pytest.fixture
def bundles(tmp_path):
    """bundles(name, [PackSpec...]) -> bundle path, all signed by one key; .pub is the key to trust."""
    key = new_key()

    def make(name: str, packs: list[PackSpec]) -> Path:
        return write_bundle(tmp_path / "bundles" / f"{name}.tar.zst", packs, key=key).path

    make.pub = write_public_key(tmp_path / "site.pub", key)
    return make


# Files larger than SMALL_FILE are copied in the loop; smaller ones are written on SmallFiles' thread,
# or by SmallFilesProcess' child when there are at least MIN_FILES of them.
UPDATES = {
    "large-files": {f"db/{name}.bin": payload(400_000, seed=seed) for seed, name in enumerate("abc", 3)},
    "small-files": {f"db/{i:02d}.bin": payload(40_000, seed=10 + i) for i in range(30)},
}


@pytest.mark.parametrize("update_kind", sorted(UPDATES))
def test_disk_full_mid_sideload_tmpfs(tmpfs, cli, monkeypatch, bundles, isolated_env, update_kind):
    mnt = tmpfs("2m")
    data_dir = mnt / "samples"
    isolated_env.write_config(f'[data_dirs]\nsample = "{data_dir}"\n')
    old = {"db/a.bin": payload(50_000, seed=1), "db/b.bin": payload(50_000, seed=2)}
    new = UPDATES[update_kind]
    first = bundles("v1", [PackSpec("carried", old, fetched_at=T0)])
    assert cli("sideload", str(first), "--trust", str(bundles.pub)).exit_code == 0
    before = tree_snapshot(data_dir, isolated_env.records_dir)

    update = bundles("v2", [PackSpec("carried", new, fetched_at=T1)])
    fired = take_space_at(monkeypatch, 400_000, filler(mnt), label_prefix="bundle ")
    result = cli("sideload", str(update), "--trust", str(bundles.pub), "--progress", "none")
    assert fired, "the disk was never filled"
    assert result.exit_code == 5, result.stderr
    assert f"not enough space in {data_dir}: needs {fmt_size(sum(map(len, new.values())))}" in result.stderr  # the whole update
    assert_untouched(before, tree_snapshot(data_dir, isolated_env.records_dir))  # no staging dir left either
    for rel, data in old.items():
        assert (data_dir / rel).read_bytes() == data

    (mnt / "filler").unlink()
    give_space_back(monkeypatch)
    result = cli("sideload", str(update), "--trust", str(bundles.pub), "--progress", "none")
    assert result.exit_code == 0, result.stderr
    assert {rel: (data_dir / rel).read_bytes() for rel in new} == new
    assert sorted(p.name for p in data_dir.iterdir()) == ["db"]


def test_disk_full_while_the_small_file_process_writes_tmpfs(tmpfs, cli, monkeypatch, bundles, isolated_env):
    """Past MIN_FILES, small files go to SmallFilesProcess' child: its full disk is the whole update's NoSpaceError too."""
    from executor.transfer import SmallFilesProcess

    mnt = tmpfs("8m")
    data_dir = mnt / "samples"
    isolated_env.write_config(f'[data_dirs]\nsample = "{data_dir}"\n')
    old = {"db/a.bin": payload(50_000, seed=1)}
    new = {f"db/{i:03d}.bin": payload(3_000, seed=10 + i) for i in range(SmallFilesProcess.MIN_FILES + 100)}
    assert cli("sideload", str(bundles("v1", [PackSpec("carried", old, fetched_at=T0)])), "--trust", str(bundles.pub)).exit_code == 0
    before = tree_snapshot(data_dir, isolated_env.records_dir)
    started = []
    monkeypatch.setattr(SmallFilesProcess, "__init__", lambda self, real=SmallFilesProcess.__init__: (started.append(self), real(self))[1])

    update = bundles("v2", [PackSpec("carried", new, fetched_at=T1)])
    fired = take_space_at(monkeypatch, 3_000 * (SmallFilesProcess.MIN_FILES + 20), filler(mnt), label_prefix="bundle ")  # the child is writing
    result = cli("sideload", str(update), "--trust", str(bundles.pub), "--progress", "none")
    assert fired and started, "the disk was never filled, or the child process never wrote"
    assert result.exit_code == 5, result.stderr
    assert f"not enough space in {data_dir}: needs {fmt_size(sum(map(len, new.values())))}" in result.stderr
    assert_untouched(before, tree_snapshot(data_dir, isolated_env.records_dir))
    assert started[0].process.returncode is not None  # no child left behind

    (mnt / "filler").unlink()
    give_space_back(monkeypatch)
    result = cli("sideload", str(update), "--trust", str(bundles.pub), "--progress", "none")
    assert result.exit_code == 0, result.stderr
    assert {rel: (data_dir / rel).read_bytes() for rel in new} == new


def test_two_data_dirs_on_one_full_filesystem_tmpfs(tmpfs, cli, bundles, isolated_env):
    """Each pack fits its own data dir's free space, both together do not: whatever stops it, cleanly."""
    mnt = tmpfs("2m")
    dirs = {"sample": mnt / "samples", "ml_model": mnt / "models"}
    isolated_env.write_config("[data_dirs]\n" + "".join(f'{t} = "{d}"\n' for t, d in dirs.items()))
    first = bundles("v1", [PackSpec("one", {"one.bin": b"one v1"}, fetched_at=T0), PackSpec("two", {"two.bin": b"two v1"}, data_type="ml_model", fetched_at=T0)])
    assert cli("sideload", str(first), "--trust", str(bundles.pub)).exit_code == 0
    before = tree_snapshot(*dirs.values(), isolated_env.records_dir)

    update = bundles("v2", [
        PackSpec("one", {"one.bin": payload(1_100_000, seed=1)}, fetched_at=T1),
        PackSpec("two", {"two.bin": payload(1_100_000, seed=2)}, data_type="ml_model", fetched_at=T1),
    ])  # fmt: skip
    result = cli("sideload", str(update), "--trust", str(bundles.pub), "--progress", "none")
    assert result.exit_code == 5, result.stderr
    assert any(f"not enough space in {d}: needs" in result.stderr for d in dirs.values()), result.stderr
    assert_untouched(before, tree_snapshot(*dirs.values(), isolated_env.records_dir))


# --- the same on pyfakefs, on every machine ------------------------------------------------------------------


def test_disk_full_mid_download_fakefs(fs, monkeypatch, db_versions, isolated_env):
    from devops_cp.app import App
    from executor.engine import Engine
    from conftest import fast_settings

    fs.create_dir(isolated_env.catalog)
    fs.set_disk_usage(50 * 2**20)

    def install():
        app = App(settings=fast_settings())
        engine = Engine(app.store, settings=app.settings, writes=WriteSettings(plain=True))
        try:
            (outcome,) = engine.install([app.plan("db")], confirm=lambda *a: True)
        finally:
            engine.close()
        return outcome

    v1 = db_versions("v1")
    assert install().record is not None
    data_dir = isolated_env.sample_dir()
    before = tree_snapshot(data_dir, isolated_env.records_dir)

    v2 = db_versions("v2")
    fired = take_space_at(monkeypatch, 300_000, lambda: fs.set_disk_usage(shutil.disk_usage("/").used + 50_000), label_prefix="db-v2")
    outcome = install()
    assert fired and outcome.record is None
    assert outcome.error.exit_code == 5 and f"needs {fmt_size(len(v2))}" in outcome.error.message
    assert_untouched(before, tree_snapshot(data_dir, isolated_env.records_dir))
    assert (data_dir / "db" / "db.bin").read_bytes() == v1

    give_space_back(monkeypatch)
    fs.set_disk_usage(50 * 2**20)
    assert install().record is not None
    assert (data_dir / "db" / "db.bin").read_bytes() == v2


@pytest.mark.parametrize("update_kind", sorted(UPDATES))
def test_disk_full_mid_sideload_fakefs(fs, monkeypatch, isolated_env, update_kind):
    from devops_cp.app import App
    from executor.engine import Engine
    from sideload.api import SideloadRequest, TrustOptions, sideload_bundle
    from manifests.errors import NoSpaceError

    fs.set_disk_usage(50 * 2**20)
    fs.create_dir(isolated_env.catalog)  # DEVOPS_CP_CATALOG names it, and a folder named there must exist
    key = new_key()
    os.chmod("/", 0o755)  # pyfakefs makes its root world-writable: no real host's is, and keys under it are refused
    Path("/keys").mkdir()
    pub = write_public_key(Path("/keys/site.pub"), key)
    old = {"db/a.bin": payload(50_000, seed=1)}
    new = UPDATES[update_kind]
    first = write_bundle(Path("/bundles/v1.tar.zst"), [PackSpec("carried", old, fetched_at=T0)], key=key).path
    update = write_bundle(Path("/bundles/v2.tar.zst"), [PackSpec("carried", new, fetched_at=T1)], key=key).path

    def sideload(bundle: Path):
        app = App()
        engine = Engine(app.store, writes=WriteSettings(plain=True))
        return sideload_bundle(engine, SideloadRequest(bundle, TrustOptions((pub,)), hardware=app.hardware))

    (outcome,) = sideload(first)
    assert outcome.error is None
    data_dir = isolated_env.sample_dir()
    before = tree_snapshot(data_dir, isolated_env.records_dir)

    fired = take_space_at(monkeypatch, 300_000, lambda: fs.set_disk_usage(shutil.disk_usage("/").used + 50_000), label_prefix="bundle ")
    with pytest.raises(NoSpaceError) as exc:
        sideload(update)
    assert fired and exc.value.exit_code == 5 and "needs" in exc.value.message
    assert_untouched(before, tree_snapshot(data_dir, isolated_env.records_dir))
    assert (data_dir / "db" / "a.bin").read_bytes() == old["db/a.bin"]

    give_space_back(monkeypatch)
    fs.set_disk_usage(50 * 2**20)
    (outcome,) = sideload(update)
    assert outcome.error is None and {rel: (data_dir / rel).read_bytes() for rel in new} == new
