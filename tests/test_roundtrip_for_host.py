"""The weekly round trip through the CLI: the air-gapped host exports what it has, the online
machine makes an update bundle for it (`bundle --for`), the host sideloads it.

Two HOMEs: the builder (the test's own) and the host. Both fetch from a real server on
127.0.0.1: the host installed last week's versions from it, the builder this week's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import random
import tarfile
from pathlib import Path

import pytest
import zstandard
from bundle_helpers import Home, Raw, tree_snapshot, write_tar_zst
from conftest import make_tar_gz

from manifests.bundle import parse_manifest, to_json
from manifests.chunk_format import CARRIED, MAGIC, recipe_size
from manifests.signing import load_private_key, sign

PASSPHRASE = "a test passphrase"
MIB = 1 << 20


def noise(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def versions() -> dict[str, dict]:
    """Last week's (1) and this week's (2) content of each pack."""
    model1 = noise(3 * MIB, 1)
    model2 = bytearray(model1)
    model2[MIB : MIB + 65536] = noise(65536, 2)  # 64 KiB changed in place
    db1 = noise(2 * MIB, 3)
    db2 = db1[:MIB] + noise(100_000, 4) + db1[MIB:]  # 100 kB inserted
    font = noise(300_000, 5)
    return {
        "model": {1: model1, 2: bytes(model2)},
        "db": {
            1: make_tar_gz([("db_1/trivy.db", db1), ("db_1/metadata.json", b'{"Version": 2, "UpdatedAt": "week 1"}')]),
            2: make_tar_gz([("db_2/trivy.db", db2), ("db_2/metadata.json", b'{"Version": 2, "UpdatedAt": "week 2"}')]),
        },
        "font": {1: font, 2: font},
        "extra": {2: noise(1_500_000, 6)},
    }


def write_catalog(server, catalog: Path, week: int) -> None:
    catalog.mkdir(parents=True, exist_ok=True)
    for pack_id, by_week in versions().items():
        if week not in by_week:
            continue
        data = by_week[week]
        url = server.add(f"/w{week}/{pack_id}", data)
        extract = 'extract = "tar.gz"\nstrip_components = 1\n' if pack_id == "db" else ""
        dest = "db" if pack_id == "db" else f"{pack_id}/{pack_id}.bin"
        (catalog / f"{pack_id}.toml").write_text(
            f'id = "{pack_id}"\nlabel = "{pack_id}"\ncategory = "data"\ndata_type = "sample"\nupdate_schedule = "weekly"\n\n'
            f'[install._default]\ntype = "download"\nurl = "{url}"\ndest = "{dest}"\nsize_bytes = {len(data)}\n'
            f'checksum = "sha256:{hashlib.sha256(data).hexdigest()}"\n{extract}'
        )


class RoundTrip:
    def __init__(self, cli, server, tmp_path: Path, monkeypatch):
        self.cli, self.server, self.tmp, self.monkeypatch = cli, server, tmp_path, monkeypatch
        monkeypatch.setenv("DEVOPS_CP_KEY_PASSPHRASE", PASSPHRASE)
        self.builder = Home(tmp_path / "builder").enter(monkeypatch.setenv)
        write_catalog(server, self.builder.catalog, 2)
        (tmp_path / "keys").mkdir()
        assert cli("keygen", "-o", str(tmp_path / "keys" / "site")).exit_code == 0
        self.key, self.pub = tmp_path / "keys" / "site.key", tmp_path / "keys" / "site.pub"
        self.host = self.new_host("host")

    def new_host(self, name: str, week: int = 1, packs=("model", "db", "font")) -> Home:
        home = Home(self.tmp / name).enter(self.monkeypatch.setenv)
        write_catalog(self.server, home.catalog, week)
        result = self.cli("install", *packs, "--yes", "--progress", "none")
        assert result.exit_code == 0, result.stderr
        self.builder.enter(self.monkeypatch.setenv)
        return home

    def export(self, *wants: str) -> Path:
        self.host.enter(self.monkeypatch.setenv)
        out = self.tmp / "host-state.json"
        result = self.cli("status", "--export", str(out), *(a for w in wants for a in ("--want", w)), "--progress", "none", "--json")
        assert result.exit_code == 0, result.stderr
        self.builder.enter(self.monkeypatch.setenv)
        return out

    def bundle(self, export: Path, *packs: str, name: str = "update.tar.zst") -> tuple[Path, dict]:
        self.builder.enter(self.monkeypatch.setenv)
        out = self.tmp / name
        result = self.cli("bundle", "--for", str(export), *packs, "-o", str(out), "--key", str(self.key), "--progress", "none", "--json")
        assert result.exit_code == 0, result.stderr
        return out, result.json()

    def sideload(self, home: Home, bundle: Path, *args: str):
        home.enter(self.monkeypatch.setenv)
        return self.cli("sideload", str(bundle), "--trust", str(self.pub), "--progress", "none", *args)


@pytest.fixture
def trip(cli, local_server, tmp_path, monkeypatch) -> RoundTrip:
    return RoundTrip(cli, local_server, tmp_path, monkeypatch)


def installed(home: Home) -> dict[str, str]:
    root = home.sample_dir()
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


def week2_files() -> dict[str, str]:
    v = versions()
    with tarfile.open(fileobj=io.BytesIO(v["db"][2]), mode="r:gz") as tar:
        db = {"db/" + m.name.split("/", 1)[1]: hashlib.sha256(tar.extractfile(m).read()).hexdigest() for m in tar}
    return {
        "model/model.bin": hashlib.sha256(v["model"][2]).hexdigest(),
        "font/font.bin": hashlib.sha256(v["font"][2]).hexdigest(),
        "extra/extra.bin": hashlib.sha256(v["extra"][2]).hexdigest(),
        **db,
    }


def test_export_bundle_for_sideload_updates_kept_changed_and_new_packs(trip):
    export = trip.export("extra")
    state = json.loads(export.read_text())
    assert {p["key"] for p in state["packs"]} == {"model", "db", "font"}
    model = next(p for p in state["packs"] if p["key"] == "model")["files"][0]
    assert model["chunks"]["count"] > 100  # indexed at export: above the 1 MiB threshold
    assert export.stat().st_size < 0.01 * 5.3 * MIB  # the exported state is under 1% of what it describes

    bundle, made = trip.bundle(export)
    assert made["for_host"] and (made["kept"], made["rebuilt"], made["whole"]) == (1, 2, 2)  # font; model, trivy.db; metadata.json, extra
    assert made["carried_bytes"] < 1_500_000 + 400_000  # the new pack whole, then the 64 KiB and 100 kB changes with their edges and recipes
    files = {f["path"]: f for f in json.loads(_manifest_bytes(bundle))["files"]}
    assert files["font/font.bin"]["member"] is None and files["font/font.bin"]["from_host"] == {"kind": "kept"}
    assert files["model/model.bin"]["from_host"]["kind"] == "rebuilt"
    assert files["db/trivy.db"]["from_host"]["kind"] == "rebuilt"  # the archive's unpacked file, compared on its own

    inspected = trip.cli("inspect", str(bundle), "--trust", str(trip.pub), "--json").json()
    assert inspected["format_version"] == 3 and inspected["for_host"]["name"]
    assert inspected["carried_bytes"] == made["carried_bytes"] < inspected["total_size"]
    assert {f["path"]: f["delivery"] for f in inspected["files"]}["font/font.bin"] == "kept"
    verified = trip.cli("verify", str(bundle), "--trust", str(trip.pub), "--json")
    assert verified.exit_code == 0 and verified.json()["rebuilt"] == 2

    result = trip.sideload(trip.host, bundle, "--json")
    assert result.exit_code == 0, result.stderr
    assert installed(trip.host) == week2_files()
    record = json.loads((trip.host.records_dir / "model.json").read_text())
    assert record["files"][0]["sha256"] == week2_files()["model/model.bin"]
    assert not list(trip.host.sample_dir().glob(".devops-cp-staging*"))

    again = trip.sideload(trip.host, bundle)  # the same update twice: the host has the new files already
    assert again.exit_code == 0, again.stderr
    assert installed(trip.host) == week2_files()


def test_named_packs_only_and_a_host_already_current_carries_nothing(trip):
    bundle, made = trip.bundle(trip.export(), "font")
    assert (made["kept"], made["rebuilt"], made["whole"], made["carried_bytes"]) == (1, 0, 0, 0)
    before = installed(trip.host)
    assert trip.sideload(trip.host, bundle).exit_code == 0
    assert installed(trip.host) == before


def test_the_wrong_host_is_refused_with_nothing_written(trip):
    other = trip.new_host("other", packs=("font",))  # has the font, not the model and db the bundle rebuilds
    bundle, _ = trip.bundle(trip.export())
    before = tree_snapshot(other.home)
    result = trip.sideload(other, bundle)
    assert result.exit_code == 4
    assert ("db: db/trivy.db" in result.stderr or "model: model/model.bin" in result.stderr) and "full bundle (without --for)" in result.stderr
    assert tree_snapshot(other.home) == before


def test_a_file_changed_on_the_host_after_the_export_is_refused(trip):
    bundle, _ = trip.bundle(trip.export())
    db = trip.host.sample_dir() / "db" / "trivy.db"
    with open(db, "r+b") as f:
        f.seek(12345)
        f.write(b"X")
    before = tree_snapshot(trip.host.home)
    result = trip.sideload(trip.host, bundle)
    assert result.exit_code == 4
    assert "db: db/trivy.db" in result.stderr and "changed since the export" in result.stderr
    assert tree_snapshot(trip.host.home) == before


def test_a_kept_file_changed_on_the_host_is_refused(trip):
    bundle, _ = trip.bundle(trip.export(), "font")
    font = trip.host.sample_dir() / "font" / "font.bin"
    font.write_bytes(b"not the font")
    result = trip.sideload(trip.host, bundle)
    assert result.exit_code == 4 and "font: font/font.bin" in result.stderr


def _manifest_bytes(bundle: Path) -> bytes:
    return _members(bundle)[0].data


def _members(bundle: Path) -> list[Raw]:
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(bundle.read_bytes()), read_across_frames=True).read()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        return [Raw(m.name, tar.extractfile(m).read()) for m in tar]


def _resigned(trip: RoundTrip, bundle: Path, edit_member, name: str) -> Path:
    """The bundle with its rebuilt model's member edited, the manifest fixed to match and signed
    again by the site's own key: what only a hostile or broken builder could make."""
    members = _members(bundle)
    manifest = parse_manifest(members[0].data)
    target = next(f for f in manifest.files if f.path == "model/model.bin")
    index = next(i for i, m in enumerate(members) if m.name == target.member)
    data, size = edit_member(members[index].data, target)
    members[index] = Raw(target.member, data)
    host = dataclasses.replace(target.from_host, carried_size=len(data), carried_sha256=hashlib.sha256(data).hexdigest())
    files = tuple(dataclasses.replace(f, from_host=host, size=size) if f is target else f for f in manifest.files)
    manifest_bytes = to_json(dataclasses.replace(manifest, files=files))
    key = load_private_key(trip.key.read_bytes(), PASSPHRASE.encode())
    members[:2] = [Raw("manifest.json", manifest_bytes), Raw("manifest.json.sig", sign(key, manifest_bytes))]
    return write_tar_zst(trip.tmp / name, members)


def _records(data: bytes) -> tuple[bytes, list[bytearray]]:
    count = int.from_bytes(data[8:12], "big")
    return data[recipe_size(count) :], [bytearray(data[12 + 29 * i : 12 + 29 * (i + 1)]) for i in range(count)]


def _join(records: list[bytearray], carried: bytes) -> bytes:
    return MAGIC + len(records).to_bytes(4, "big") + b"".join(records) + carried


def _reads_past_the_end(data: bytes, entry):
    carried, records = _records(data)
    first_host = next(r for r in records if r[0] != CARRIED)
    first_host[1:9] = (entry.from_host.base_size - 10).to_bytes(8, "big")
    return _join(records, carried), entry.size


def _hash_lies(data: bytes, entry):
    carried, records = _records(data)
    records[0][13:29] = b"\x01" * 16
    return _join(records, carried), entry.size


def _larger_than_the_manifest_says(data: bytes, entry):
    return data, entry.size - 4096


@pytest.mark.parametrize("edit, words", [
    (_reads_past_the_end, "reads past the end of the host's file"),
    (_hash_lies, "does not match its hash in the recipe"),
    (_larger_than_the_manifest_says, "the manifest says"),
])  # fmt: skip
def test_hostile_recipes_are_refused_with_exit_3_and_nothing_installed(trip, edit, words):
    bundle, _ = trip.bundle(trip.export())
    hostile = _resigned(trip, bundle, edit, "hostile.tar.zst")
    before = tree_snapshot(trip.host.home)
    result = trip.sideload(trip.host, hostile)
    assert result.exit_code == 3, result.stderr
    assert words in result.stderr
    assert tree_snapshot(trip.host.home) == before


def test_an_export_claiming_millions_of_chunks_is_refused_by_the_builder(trip):
    export = trip.export()
    doc = json.loads(export.read_text())
    indexed = next(f for p in doc["packs"] for f in p["files"] if "chunks" in f)
    indexed["chunks"]["count"] = 7_000_000
    export.write_text(json.dumps(doc))
    result = trip.cli("bundle", "--for", str(export), "-o", str(trip.tmp / "x.tar.zst"), "--key", str(trip.key), "--progress", "none")
    assert result.exit_code == 3 and "claims 7000000 chunks" in result.stderr
    assert not list(trip.tmp.glob("x.tar.zst*"))


def test_a_malformed_export_is_a_usage_error(trip):
    bad = trip.tmp / "bad.json"
    bad.write_text('{"export_format": 1')
    result = trip.cli("bundle", "--for", str(bad), "-o", str(trip.tmp / "x.tar.zst"), "--key", str(trip.key))
    assert result.exit_code == 2 and "not valid JSON" in result.stderr


def test_a_host_too_old_for_update_bundles_gets_a_clear_refusal(trip):
    export = trip.export()
    doc = json.loads(export.read_text())
    doc["reads_manifest_formats"] = [1, 2]
    export.write_text(json.dumps(doc))
    result = trip.cli("bundle", "--for", str(export), "-o", str(trip.tmp / "x.tar.zst"), "--key", str(trip.key))
    assert result.exit_code == 2 and "cannot read an update bundle" in result.stderr and "without --for" in result.stderr


def test_the_builder_notes_when_the_host_reported_too_little_space(trip):
    export = trip.export("extra")
    doc = json.loads(export.read_text())
    doc["free_space"] = [{"data_type": "sample", "free_bytes": 1000}]
    export.write_text(json.dumps(doc))
    _, made = trip.bundle(export)
    assert any("reported 1000 B free for sample" in note for note in made["notes"]), made["notes"]


def test_the_space_check_counts_rebuilt_files_not_carried_chunks():
    from manifests.bundle import KEPT, REBUILT, FileEntry, FromHost
    from sideload.api import _space_needed

    rebuilt = FileEntry("p", "a.bin", 5 * MIB, "a" * 64, "chunks/p/a.bin", from_host=FromHost(REBUILT, 5 * MIB, "b" * 64, 70_000, "c" * 64, 1300, 20))
    kept = FileEntry("p", "b.bin", 3 * MIB, "d" * 64, "", from_host=FromHost(KEPT, 3 * MIB, "d" * 64))
    whole = FileEntry("p", "c.bin", 1000, "e" * 64, "packs/p/c.bin")
    assert [_space_needed(f) for f in (rebuilt, kept, whole)] == [5 * MIB, 0, 1000]
    assert [f.member_size for f in (rebuilt, kept, whole)] == [70_000, 0, 1000]


def test_a_wanted_pack_with_a_bad_name_is_a_usage_error(trip):
    trip.host.enter(trip.monkeypatch.setenv)
    result = trip.cli("status", "--export", str(trip.tmp / "x.json"), "--want", "Not A Pack!")
    assert result.exit_code == 2 and "'Not A Pack!'" in result.stderr
    assert not (trip.tmp / "x.json").exists()
