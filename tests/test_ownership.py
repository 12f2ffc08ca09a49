"""A pack owns its files and nothing else (issue 18, rules 4 and 5), whatever a signed manifest says.

A file already where a pack would put one is refused (exit 4) unless it is the very same bytes in a
plain file of this user with one link (adopted: recorded, never deleted) or `--overwrite` was
given (recorded). `remove` deletes only files still as installed and says which it kept. An update
cleans up where the previous version lived, and only the files its record lists.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

import pytest

from bundle_helpers import PackSpec, new_key, tree_snapshot, write_bundle, write_public_key
from conftest import payload, sha256

T0 = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=2)
T1 = T0 + timedelta(days=1)


@pytest.fixture
def bundles(tmp_path):
    """bundles(name, [PackSpec...], signed=True) -> path; bundles.pub: the trusted key's file."""
    key = new_key()

    def make(name: str, packs: list[PackSpec], *, signed: bool = True):
        return write_bundle(tmp_path / "bundles" / f"{name}.tar.zst", packs, key=key if signed else None).path

    make.pub = write_public_key(tmp_path / "site.pub", key)
    return make


def sideload(cli, bundles, bundle, *extra: str, signed: bool = True):
    trust = ("--trust", str(bundles.pub)) if signed else ("--allow-unsigned",)
    return cli("sideload", str(bundle), *trust, "--progress", "none", *extra)


def home_snapshot(isolated_env) -> dict[str, str]:
    """The whole HOME, lock files in the state directory (and the folders they need) aside: they hold no data."""
    home = isolated_env.records_dir.parents[3]
    state = isolated_env.records_dir.parent
    lock_folders = {str(state / "locks"), str(state), str(state.parent), str(state.parent.parent)}
    return {k: v for k, v in tree_snapshot(home).items() if not k.startswith(str(state / "locks") + "/") and not (k in lock_folders and v == "dir")}


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "allow-unsigned"])
def test_a_users_own_file_is_never_overwritten(signed, cli, bundles, isolated_env):
    fonts = isolated_env.sample_dir() / "fonts"
    fonts.mkdir(parents=True)
    (fonts / "mine.ttf").write_bytes(b"the user's own font")
    before = home_snapshot(isolated_env)
    bundle = bundles("font", [PackSpec("font", {"fonts/mine.ttf": b"a pack's font", "fonts/other.ttf": b"another"}, fetched_at=T0)], signed=signed)
    result = sideload(cli, bundles, bundle, signed=signed)
    assert result.exit_code == 4, result.stderr
    assert "mine.ttf is already there and is not font's (recorded by no pack)" in result.stderr and "--overwrite" in result.stderr
    assert home_snapshot(isolated_env) == before

    result = sideload(cli, bundles, bundle, "--overwrite", signed=signed)
    assert result.exit_code == 0, result.stderr
    assert (fonts / "mine.ttf").read_bytes() == b"a pack's font"
    assert isolated_env.record("font")["overwritten"] == ["fonts/mine.ttf"]


def test_another_packs_file_is_never_overwritten(cli, bundles, isolated_env):
    assert sideload(cli, bundles, bundles("a", [PackSpec("first", {"shared/x.bin": b"first's"}, fetched_at=T0)])).exit_code == 0
    before = home_snapshot(isolated_env)
    result = sideload(cli, bundles, bundles("b", [PackSpec("second", {"shared/x.bin": b"second's"}, fetched_at=T0)]))
    assert result.exit_code == 4 and "x.bin is already there and is not second's (first's)" in result.stderr, result.stderr
    assert home_snapshot(isolated_env) == before


def test_the_same_bytes_already_there_are_adopted_and_remove_leaves_them(cli, bundles, isolated_env):
    model = payload(300_000, seed=3)
    data_dir = isolated_env.sample_dir()
    (data_dir / "models").mkdir(parents=True)
    (data_dir / "models" / "tiny.pt").write_bytes(model)  # the tool downloaded it itself
    inode = (data_dir / "models" / "tiny.pt").stat().st_ino
    bundle = bundles("m", [PackSpec("model", {"models/tiny.pt": model, "models/extra.bin": b"extra"}, fetched_at=T0)])
    result = sideload(cli, bundles, bundle)
    assert result.exit_code == 0, result.stderr
    record = isolated_env.record("model")
    assert record["adopted"] == ["models/tiny.pt"] and record["overwritten"] == []
    assert {f["path"]: f["sha256"] for f in record["files"]}["models/tiny.pt"] == sha256(model)
    assert (data_dir / "models" / "tiny.pt").stat().st_ino == inode  # left in place, not replaced

    removed = cli("remove", "model")
    assert removed.exit_code == 0, removed.stderr
    assert "kept" in removed.stdout and "tiny.pt: it was there before the pack (adopted)" in removed.stdout
    assert (data_dir / "models" / "tiny.pt").read_bytes() == model
    assert not (data_dir / "models" / "extra.bin").exists()


@pytest.mark.parametrize("why", ["a second link", "other bytes"])
def test_a_file_that_is_not_plainly_the_same_is_not_adopted(why, cli, bundles, isolated_env, tmp_path):
    model = payload(100_000, seed=4)
    data_dir = isolated_env.sample_dir()
    (data_dir / "models").mkdir(parents=True)
    if why == "a second link":  # adopting it would tie the pack to a file that lives elsewhere too
        (tmp_path / "elsewhere.pt").write_bytes(model)
        os.link(tmp_path / "elsewhere.pt", data_dir / "models" / "tiny.pt")
    else:
        (data_dir / "models" / "tiny.pt").write_bytes(model[:-1] + b"!")
    before = home_snapshot(isolated_env)
    result = sideload(cli, bundles, bundles("m", [PackSpec("model", {"models/tiny.pt": model}, fetched_at=T0)]))
    assert result.exit_code == 4 and "is not model's" in result.stderr, result.stderr
    assert home_snapshot(isolated_env) == before


def test_remove_deletes_only_files_still_as_installed_and_says_which_it_kept(cli, bundles, isolated_env):
    files = {"db/a.bin": b"a" * 1000, "db/b.bin": b"b" * 1000, "db/c.bin": b"c" * 1000}
    assert sideload(cli, bundles, bundles("db", [PackSpec("db", files, fetched_at=T0)])).exit_code == 0
    data_dir = isolated_env.sample_dir()
    (data_dir / "db" / "b.bin").write_bytes(b"the user edited this")
    (data_dir / "db" / "c.bin").unlink()
    result = cli("remove", "db", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["kept"] == [f"{data_dir / 'db' / 'b.bin'}: it changed since it was installed"]
    assert not (data_dir / "db" / "a.bin").exists()
    assert (data_dir / "db" / "b.bin").read_bytes() == b"the user edited this"
    assert not (isolated_env.records_dir / "db.json").exists()


def test_an_update_cleans_up_where_the_previous_version_lived(cli, bundles, isolated_env, tmp_path):
    """The data dir moved in the config between versions: v1's leftovers go from v1's own dir,
    and a same-named file in the new dir (not v1's) stays."""
    first, second = tmp_path / "first-dir", tmp_path / "second-dir"
    isolated_env.write_config(f'[data_dirs]\nsample = "{first}"\n')
    v1 = bundles("v1", [PackSpec("moving", {"m/keep.bin": b"v1 keep", "m/old-only.bin": b"v1 only"}, fetched_at=T0)])
    assert sideload(cli, bundles, v1).exit_code == 0
    (first / "notes.txt").write_text("the user's")
    isolated_env.write_config(f'[data_dirs]\nsample = "{second}"\n')
    (second / "m").mkdir(parents=True)
    (second / "m" / "old-only.bin").write_text("not the pack's: same name, other dir")
    v2 = bundles("v2", [PackSpec("moving", {"m/keep.bin": b"v2 keep", "m/new.bin": b"v2 new"}, fetched_at=T1)])
    result = sideload(cli, bundles, v2)
    assert result.exit_code == 0, result.stderr
    assert (second / "m" / "old-only.bin").read_text() == "not the pack's: same name, other dir"
    assert (second / "m" / "keep.bin").read_bytes() == b"v2 keep" and (second / "m" / "new.bin").read_bytes() == b"v2 new"
    assert sorted(p.name for p in first.rglob("*")) == ["notes.txt"]  # v1's files gone from where they lived, and its empty folder
    assert isolated_env.record("moving")["data_dir"] == str(second)


# --- every unpack is bounded; a refusal leaves the host as it was (rules 6 and 8) ---------------------------


def test_an_archive_without_a_size_estimate_is_bounded_and_a_refusal_leaves_no_data_dir(cli, bundles, isolated_env):
    """A signed bundle carries a small tar.gz that unpacks to far more than 20 times itself and says
    nothing of its unpacked size: exit 3 while unpacking, nothing left, not even the data dir it made."""
    import io
    import tarfile

    from manifests.model import Unpack

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("top/zeros.bin")
        info.size = 20 * 2**20
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    archive = buffer.getvalue()
    assert len(archive) * 20 < 20 * 2**20
    data_dir = isolated_env.sample_dir()
    assert not data_dir.exists()
    before = home_snapshot(isolated_env)
    bundle = bundles("bomb", [PackSpec("bomb", {}, fetched_at=T0, archives={"db": (archive, Unpack("tar.gz", 1))})])
    result = sideload(cli, bundles, bundle)
    assert result.exit_code == 3 and "unpacks to more than" in result.stderr, result.stderr
    assert not data_dir.exists()
    assert home_snapshot(isolated_env) == before


def zeros_tar_gz(size: int) -> bytes:
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("top/zeros.bin")
        info.size = size
        tar.addfile(info, io.BytesIO(bytes(size)))
    return buffer.getvalue()


@pytest.mark.parametrize(
    "estimate, code, said",
    [
        (None, 5, "not enough space in"),  # the default bound (16 MiB) is past the room: the room bites, exit 5
        (2_000_000, 5, "not enough space in"),  # within its bound (4 MB), the estimate fits, what it really unpacks to does not
        (1_000_000, 3, "unpacks to more than the 2000000 bytes"),  # its own bound comes first: bad data, exit 3
    ],
    ids=["no-estimate-past-the-room", "estimate-past-the-room", "past-its-bound-before-the-room"],
)
def test_an_unpack_is_held_within_the_free_space_and_the_exit_code_says_which_limit_bit(estimate, code, said, cli, bundles, isolated_env, tmpfs):
    """3.5 MiB of zeros on a 4 MiB filesystem: it would fit, but not with the margin every write keeps
    (the check before the first byte keeps it too). Past the room: exit 5 saying how much is needed
    and free; past the archive's bound: exit 3. Either way nothing is left there."""
    from manifests.model import Unpack

    small = tmpfs("4m")
    isolated_env.write_config(f'[data_dirs]\nsample = "{small}"\n')
    before = home_snapshot(isolated_env)
    archive = zeros_tar_gz(3 * 2**20 + 2**19)
    bundle = bundles("big", [PackSpec("big", {"small.txt": b"fits"}, fetched_at=T0, archives={"db": (archive, Unpack("tar.gz", 1, unpacked_size_bytes=estimate))})])
    result = sideload(cli, bundles, bundle)
    assert result.exit_code == code and said in result.stderr, result.stderr
    if code == 5:
        assert "needs 4.2 MiB" in result.stderr and "MiB free" in result.stderr, result.stderr
    assert list(small.iterdir()) == [] and home_snapshot(isolated_env) == before


def test_a_name_longer_than_a_filesystem_allows_is_refused_before_anything_is_visible(cli, bundles, isolated_env):
    data_dir = isolated_env.sample_dir()
    before = home_snapshot(isolated_env)
    bundle = bundles("long", [PackSpec("long", {"ok.bin": b"fine", "d/" + "n" * 300: b"too long a name"}, fetched_at=T0)])
    result = sideload(cli, bundles, bundle)
    assert result.exit_code == 3 and "longer than a filesystem allows" in result.stderr, result.stderr
    assert not data_dir.exists() and home_snapshot(isolated_env) == before
