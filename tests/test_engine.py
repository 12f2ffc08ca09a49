"""The engine as direct install drives it: pre-flight, disk full, progress, parallelism,
checksum sources, mirrors and credentials. Real servers on 127.0.0.1; pyfakefs where a fake
disk is the point; a real tmpfs for a real ENOSPC."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from devops_cp.app import App
from support.localserver import Fault
from executor.config import WriteSettings, load_config
from executor.engine import Engine
from executor.events import Notice, Progress, StepDone, StepStarted
from executor.store import Store
from manifests.errors import ConfirmationRequired, NoSpaceError, NotWritableError, ToolError

from conftest import download_step, fast_settings, files_under, gets, payload, sha256

PLAIN = WriteSettings(plain=True)  # pyfakefs: libc (syncfs, fallocate) cannot see its files


def install(packs, *, listener=lambda e: None, confirm=lambda *a: True, settings=None, **engine_kw):
    app = App(settings=settings or fast_settings())
    plans = [app.plan(p) for p in packs]
    engine = Engine(app.store, listener=listener, settings=app.settings, **engine_kw)
    try:
        return engine.install(plans, confirm=confirm)
    finally:
        engine.close()


@pytest.fixture
def as_normal_user(fs):
    """pyfakefs's set_uid(1000): from then on the fake disk refuses writes as it would to a normal user."""
    from pyfakefs import helpers

    yield lambda: helpers.set_uid(1000)
    helpers.reset_ids()


def only_error(outcomes):
    (outcome,) = outcomes
    assert outcome.record is None, "expected a failure"
    return outcome.error


# --- pre-flight -------------------------------------------------------------------------------


def test_no_space_is_refused_before_the_first_request_fakefs(fs, isolated_env, local_server, serve_pack):
    fs.create_dir(isolated_env.catalog)
    serve_pack("big", payload(2000), size_bytes=5_000_000)
    fs.set_disk_usage(4_000_000)
    with pytest.raises(NoSpaceError) as exc:
        install(["big"], writes=PLAIN)
    err = exc.value
    assert err.exit_code == 5
    assert err.needed == 6_000_000  # size x 1.2
    assert "5.7 MiB" in err.message and str(isolated_env.sample_dir()) in err.message
    assert local_server.requests == []


def test_not_writable_data_dir_is_refused_fakefs(fs, as_normal_user, isolated_env, local_server, serve_pack):
    fs.create_dir(isolated_env.catalog)
    serve_pack("ro", payload(2000))
    fs.create_dir("/readonly", perm_bits=0o555)
    isolated_env.write_config('[data_dirs]\nsample = "/readonly/samples"\n')
    as_normal_user()  # root ignores permissions; a normal user does not
    store = Store(load_config())
    with pytest.raises(NotWritableError) as exc:
        store.ensure_writable(Path("/readonly/samples"))
    assert exc.value.exit_code == 5 and "/readonly/samples" in exc.value.message
    with pytest.raises(NotWritableError):
        install(["ro"], writes=PLAIN)
    assert local_server.requests == []


def test_existing_read_only_dir_is_checked_not_assumed_fakefs(fs, as_normal_user):
    fs.create_dir("/data/samples", perm_bits=0o555)
    as_normal_user()
    with pytest.raises(NotWritableError):
        Store(load_config()).ensure_writable(Path("/data/samples"))


def test_missing_tool_is_refused_before_the_first_request(local_server, serve_pack):
    serve_pack("needs-tool", payload(100), top={"requires": {"tools": ["no-such-tool-xyz"]}})
    with pytest.raises(ToolError) as exc:
        install(["needs-tool"])
    assert exc.value.exit_code == 7 and "no-such-tool-xyz" in exc.value.message
    assert local_server.requests == []


def test_large_download_needs_confirmation(local_server, serve_pack):
    serve_pack("large", payload(2_000_000), top={"size_warning_mb": 1})
    asked = []

    def refuse(plan, size, times):
        asked.append((plan.pack_id, size, times))
        return False

    with pytest.raises(ConfirmationRequired):
        install(["large"], confirm=refuse)
    assert asked == [("large", 2_000_000, {"10 Mbps": "1s", "50 Mbps": "0s", "100 Mbps": "0s"})]
    assert local_server.requests == []
    (outcome,) = install(["large"], confirm=lambda *a: True)
    assert outcome.record is not None


# --- disk full in the middle --------------------------------------------------------------------


def test_disk_full_refused_when_the_body_turns_out_larger_tmpfs(tmpfs, isolated_env, local_server, serve_pack):
    """The recipe says 100 kB (pre-flight passes), the server sends 3 MiB into a 2 MiB filesystem."""
    mnt = tmpfs("2m")
    isolated_env.write_config(f'[data_dirs]\nsample = "{mnt}"\n')
    serve_pack("liar", payload(3 * 2**20), size_bytes=100_000)
    error = only_error(install(["liar"]))
    assert isinstance(error, NoSpaceError) and error.exit_code == 5
    assert str(mnt) in error.message and "3.6 MiB" in error.message  # 3 MiB x 1.2
    assert files_under(mnt) == []
    assert list(mnt.iterdir()) == []  # not even an empty staging directory


def _fill_at_first_byte(fill):
    """A listener that takes the disk away right after the space check passed (first Progress)."""
    done = threading.Event()

    def listener(event):
        if isinstance(event, Progress) and not done.is_set():
            done.set()
            fill()

    return listener


def test_disk_full_while_writing_deletes_the_partial_file_tmpfs(tmpfs, isolated_env, local_server, serve_pack):
    mnt = tmpfs("2m")
    data_dir = mnt / "samples"
    isolated_env.write_config(f'[data_dirs]\nsample = "{data_dir}"\n')
    serve_pack("big", payload(2**20))

    def fill():
        free = shutil.disk_usage(mnt).free
        (mnt / "filler").write_bytes(b"\0" * (free - 256 * 1024))

    error = only_error(install(["big"], listener=_fill_at_first_byte(fill)))
    assert isinstance(error, NoSpaceError) and error.exit_code == 5
    assert str(data_dir) in error.message and "needs 1.0 MiB" in error.message
    assert isinstance(error.__cause__, OSError)  # a real ENOSPC from the kernel, translated
    assert files_under(data_dir) == []
    assert not data_dir.exists() or list(data_dir.iterdir()) == []


def test_disk_full_while_writing_fakefs(fs, isolated_env, local_server, serve_pack):
    fs.create_dir(isolated_env.catalog)
    serve_pack("big", payload(2**20))
    fs.set_disk_usage(50 * 2**20)

    def fill():  # the disk shrinks to what is used now plus 100 kB
        used = shutil.disk_usage("/").used
        fs.set_disk_usage(used + 100_000)

    error = only_error(install(["big"], listener=_fill_at_first_byte(fill), writes=PLAIN))
    assert isinstance(error, NoSpaceError) and error.exit_code == 5
    assert files_under(isolated_env.sample_dir()) == []


def test_disk_full_on_the_last_small_write_fakefs(fs, isolated_env, local_server, serve_pack):
    """The body fits the io buffer, so ENOSPC comes at flush time: still exit 5, never a traceback."""
    fs.create_dir(isolated_env.catalog)
    serve_pack("small", payload(3000))

    def fill():
        fs.set_disk_usage(shutil.disk_usage("/").used + 1000)

    error = only_error(install(["small"], listener=_fill_at_first_byte(fill), writes=PLAIN))
    assert isinstance(error, NoSpaceError) and error.exit_code == 5
    assert files_under(isolated_env.sample_dir()) == []


def test_whole_install_under_pyfakefs_takes_the_plain_durability_path(fs, isolated_env, local_server, serve_pack, monkeypatch):
    """libc cannot see pyfakefs's files: a plain engine calls no libc, and fsyncs file by file."""
    from executor import durable

    fs.create_dir(isolated_env.catalog)
    data = payload(100_000)
    serve_pack("fake", data)
    synced = []
    real_fsync = durable.fsync_path
    monkeypatch.setattr(durable, "fsync_path", lambda path: synced.append(path) or real_fsync(path))
    monkeypatch.setattr(durable, "syncfs", lambda path: pytest.fail("a plain engine called syncfs"))
    (outcome,) = install(["fake"], writes=PLAIN)
    assert outcome.record is not None
    assert (isolated_env.sample_dir() / "fake" / "fake.bin").read_bytes() == data
    assert files_under(isolated_env.sample_dir()) == ["fake/fake.bin"]
    assert any(str(p).endswith("fake.bin") for p in synced)


# --- progress ---------------------------------------------------------------------------------------


def test_progress_events_carry_bytes_total_percent_speed_eta(local_server, serve_pack):
    data = payload(2 * 2**20)
    serve_pack("model", data)
    local_server.set_fault("/packs/model.bin", Fault(delay_per_chunk=0.002))
    events = []
    (outcome,) = install(["model"], listener=events.append)
    assert outcome.record is not None
    kinds = [type(e) for e in events]
    assert kinds[0] is StepStarted and StepDone in kinds
    assert kinds.index(StepStarted) < kinds.index(Progress) < kinds.index(StepDone)
    started = events[0]
    assert started.pack == "model" and started.total == len(data) and started.label == "model.bin"
    progress = [e for e in events if isinstance(e, Progress)]
    assert len(progress) > 10
    assert all(p.total == len(data) for p in progress)
    assert [p.downloaded for p in progress] == sorted(p.downloaded for p in progress)
    moving = [p for p in progress if 0 < p.downloaded < len(data)]
    assert moving and all(p.speed_bps > 0 and p.eta_seconds is not None and 0 <= p.percent < 100 for p in moving)
    assert progress[-1].downloaded == len(data) and progress[-1].percent == 100
    done = next(e for e in events if isinstance(e, StepDone))
    assert done.size == len(data)


# --- parallel -----------------------------------------------------------------------------------------


class InFlight:
    """Counts downloads between StepStarted and StepDone, from the listener's side."""

    def __init__(self):
        self.now = self.most = 0

    def __call__(self, event):
        if isinstance(event, StepStarted):
            self.now += 1
            self.most = max(self.most, self.now)
        elif isinstance(event, StepDone):
            self.now -= 1


@pytest.mark.parametrize("limit", [1, 3])
def test_max_parallel_downloads_comes_from_the_config(limit, isolated_env, local_server, serve_pack):
    isolated_env.write_config(f"max_parallel_downloads = {limit}\n")
    for i in range(4):
        serve_pack(f"p{i}", payload(256 * 1024, seed=i))
        local_server.set_fault(f"/packs/p{i}.bin", Fault(delay_per_chunk=0.03))
    counter = InFlight()
    outcomes = install([f"p{i}" for i in range(4)], listener=counter)
    assert all(o.record is not None for o in outcomes)
    assert counter.most == limit


# --- where the checksum comes from ------------------------------------------------------------------


def test_checksum_from_a_published_sha256sum_file(local_server, write_recipe, isolated_env):
    data = payload(50_000)
    url = local_server.add("/geo/GeoLite2-City.tar.gz", data)
    local_server.add("/geo/SHA256SUMS", f"{'0' * 64}  GeoLite2-ASN.tar.gz\n{sha256(data)}  GeoLite2-City.tar.gz\n".encode())
    write_recipe("geo", [download_step(url, "GeoLite2-City.tar.gz", data, checksum=False, checksum_url=local_server.url("/geo/SHA256SUMS"))])
    (outcome,) = install(["geo"])
    assert outcome.record.checksum_verified and outcome.record.files[0].sha256 == sha256(data)
    local_server.replace("/geo/SHA256SUMS", f"{'1' * 64}  GeoLite2-City.tar.gz\n".encode())
    error = only_error(install(["geo"]))
    assert error.exit_code == 3


def test_no_published_checksum_is_hashed_on_the_way_and_said_so(local_server, serve_pack, isolated_env):
    data = payload(10_000)
    serve_pack("moving", data, checksum=False)
    notices = []
    (outcome,) = install(["moving"], listener=lambda e: notices.append(e) if isinstance(e, Notice) else None)
    record = outcome.record
    assert record.checksum_verified is False and record.files[0].sha256 == sha256(data)
    assert any("no published checksum" in n.message and sha256(data) in n.message for n in notices)
    assert isolated_env.record("moving")["checksum_verified"] is False


def test_mirror_prefix_rewrites_the_url(local_server, write_recipe, isolated_env):
    data = payload(10_000)
    local_server.add("/mirror/packs/x.bin", data)
    write_recipe("mirrored", [download_step("https://upstream.invalid/packs/x.bin", "x.bin", data)])
    isolated_env.write_config(f'[mirrors]\n"https://upstream.invalid/" = "{local_server.url("/mirror/")}"\n')
    (outcome,) = install(["mirrored"])
    assert outcome.record is not None
    assert gets(local_server)[0].path == "/mirror/packs/x.bin"
    assert (isolated_env.sample_dir() / "x.bin").read_bytes() == data


def test_credentials_from_environment_are_sent_and_never_stored(local_server, write_recipe, isolated_env, monkeypatch):
    data = payload(10_000)
    url = local_server.add("/geo/db.mmdb", data, auth=("42", "s3cret-key"))
    write_recipe(
        "geo-auth",
        [download_step(url, "db.mmdb", data, credentials="maxmind")],
        credentials={"maxmind": {"username_env": "MM_ACCOUNT", "password_env": "MM_KEY"}},
    )
    error = only_error(install(["geo-auth"]))
    assert error.exit_code == 2 and "MM_ACCOUNT" in str(error)  # says which variables to set
    monkeypatch.setenv("MM_ACCOUNT", "42")
    monkeypatch.setenv("MM_KEY", "wrong")
    error = only_error(install(["geo-auth"]))
    assert error.exit_code == 6 and "401" in error.message
    monkeypatch.setenv("MM_KEY", "s3cret-key")
    (outcome,) = install(["geo-auth"])
    assert outcome.record is not None
    stored = "".join(p.read_text() for p in isolated_env.records_dir.glob("*.json"))
    assert "s3cret-key" not in stored and "wrong" not in stored


def test_credentials_from_the_config_file(local_server, write_recipe, isolated_env):
    data = payload(1000)
    url = local_server.add("/geo/db.mmdb", data, auth=("42", "from-config"))
    write_recipe("geo-auth", [download_step(url, "db.mmdb", data, credentials="maxmind")], credentials={"maxmind": {"username_env": "MM_A", "password_env": "MM_K"}})
    isolated_env.write_config('[credentials.maxmind]\nusername = "42"\npassword = "from-config"\n')
    (outcome,) = install(["geo-auth"])
    assert outcome.record is not None


def test_download_with_extract_and_strip_components(local_server, write_recipe, isolated_env):
    from conftest import make_tar_gz

    archive = make_tar_gz([("GeoLite2-City_20260101/", "dir"), ("GeoLite2-City_20260101/GeoLite2-City.mmdb", b"mmdb"), ("GeoLite2-City_20260101/LICENSE.txt", b"license")])
    url = local_server.add("/geo/city.tar.gz", archive)
    write_recipe("city", [download_step(url, "city", archive, extract="tar.gz", strip_components=1)])
    (outcome,) = install(["city"])
    assert sorted(f.path for f in outcome.record.files) == ["city/GeoLite2-City.mmdb", "city/LICENSE.txt"]
    assert (isolated_env.sample_dir() / "city" / "GeoLite2-City.mmdb").read_bytes() == b"mmdb"
    assert files_under(isolated_env.sample_dir()) == ["city/GeoLite2-City.mmdb", "city/LICENSE.txt"]
