"""The air-gapped round trip, driven through the CLI with real servers on 127.0.0.1.

A connected host (the test's own fresh HOME) fetches two packs from a local server (a
model file, and a tar.gz that its recipe extracts), signs them into one bundle; another
fresh HOME that holds only the public key sideloads it, and `status` / `check-updates`
see the packs as if they had been downloaded there, fetched when the bundle fetched them.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from bundle_helpers import Home, flip_byte, tree_snapshot
from devops_cp.demo import sample_db_tar_gz, sample_model, write_sample_catalog

PASSPHRASE = "correct horse battery staple"


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def db_files() -> dict[str, bytes]:
    """What the sample DB's recipe should place: the tar.gz's files, its dated top folder stripped."""
    files = {}
    with tarfile.open(fileobj=io.BytesIO(sample_db_tar_gz()), mode="r:gz") as tar:
        for member in tar:
            files["db/" + member.name.split("/", 1)[1]] = tar.extractfile(member).read()
    return files


class Site:
    """The connected host: sample packs served from 127.0.0.1, a signing key made with keygen."""

    def __init__(self, cli, env, server, tmp_path: Path, monkeypatch, model_size: int):
        self.cli, self.env, self.server, self.tmp, self.monkeypatch = cli, env, server, tmp_path, monkeypatch
        self.model_size = model_size
        self.packs = write_sample_catalog(server, env.catalog, model_size)
        monkeypatch.setenv("DEVOPS_CP_KEY_PASSPHRASE", PASSPHRASE)
        keys = tmp_path / "keys"
        keys.mkdir()
        result = cli("keygen", "-o", str(keys / "site"), "--json")
        assert result.exit_code == 0, result.stderr
        self.key_id = result.json()["key_id"]
        self.key, self.pub = keys / "site.key", keys / "site.pub"
        self.out_dir = tmp_path / "out"
        self.out_dir.mkdir()

    def bundle(self, name: str = "packs.tar.zst", *args: str) -> tuple[Path, dict]:
        out = self.out_dir / name
        result = self.cli("bundle", *self.packs, "-o", str(out), "--key", str(self.key), "--progress", "none", "--json", *args)
        assert result.exit_code == 0, result.stderr
        return out, result.json()

    def other_host(self, name: str, *, with_catalog: bool = True) -> Home:
        """Another fresh HOME becomes the current one; it has the site's recipes (a shared catalog), never its key."""
        home = Home(self.tmp / name).enter(self.monkeypatch.setenv)
        if with_catalog:
            for recipe in self.env.catalog.glob("*.toml"):
                shutil.copy(recipe, home.catalog / recipe.name)
        return home


@pytest.fixture
def site(cli, isolated_env, local_server, tmp_path, monkeypatch) -> Site:
    return Site(cli, isolated_env, local_server, tmp_path, monkeypatch, model_size=3_000_000)


def assert_installed(home: Home, model_size: int) -> None:
    samples = home.sample_dir()
    assert sha256_file(samples / "models" / "sample-model.bin") == hashlib.sha256(sample_model(model_size)).hexdigest()
    for rel, data in db_files().items():
        assert sha256_file(samples / rel) == hashlib.sha256(data).hexdigest(), rel
    found = sorted(p.relative_to(samples).as_posix() for p in samples.rglob("*"))
    assert found == sorted(["models", "models/sample-model.bin", "db", *db_files()])  # no staging left behind


# --- the must-show round trip -------------------------------------------------------------------


def test_round_trip_into_another_fresh_home_with_only_the_public_key(site, cli, local_server):
    bundle, doc = site.bundle()
    assert doc["signer_key_id"] == site.key_id and sorted(doc["packs"]) == ["sample-db", "sample-model"]
    manifest_fetched = {}
    inspected = cli("inspect", str(bundle), "--json").json()
    for pack in inspected["packs"]:
        manifest_fetched[pack["key"]] = pack["fetched_at"]
    requests_before = len(local_server.requests)

    home = site.other_host("airgapped")
    assert not list(home.home.rglob("*.key"))
    added = cli("trust", "add", str(site.pub))
    assert added.exit_code == 0 and site.key_id in added.stdout
    result = cli("sideload", str(bundle), "--progress", "none")
    assert result.exit_code == 0, result.stderr
    assert "installed sample-model" in result.stdout and "installed sample-db" in result.stdout
    assert len(local_server.requests) == requests_before  # the air-gapped side never touched the network

    assert_installed(home, site.model_size)

    status = cli("status", "--json").json()
    packs = {p["key"]: p for p in status["packs"]}
    assert sorted(packs) == ["sample-db", "sample-model"]
    for key, pack in packs.items():
        assert pack["source"] == f"bundle:{doc['bundle_id']}"
        assert pack["fetched_at"] == manifest_fetched[key]
        assert pack["data_dir"] == str(home.sample_dir())
    assert packs["sample-model"]["size_bytes"] == site.model_size

    updates = cli("check-updates", "--json").json()
    rows = {r["key"]: r for r in updates["packs"]}
    for key in ("sample-db", "sample-model"):
        assert rows[key]["fetched_at"] == manifest_fetched[key]  # freshness counts from the bundle's fetch
        assert rows[key]["stale"] is False and rows[key]["reason"] == "fresh"


def test_round_trip_with_trust_on_the_command_line(site, cli):
    bundle, _ = site.bundle()
    home = site.other_host("airgapped")
    untrusted = cli("sideload", str(bundle), "--progress", "none")
    assert untrusted.exit_code == 3 and "no trusted keys" in untrusted.stderr
    assert not home.records_dir.exists() or not list(home.records_dir.iterdir())
    result = cli("sideload", str(bundle), "--trust", str(site.pub), "--progress", "none", "--json")
    assert result.exit_code == 0, result.stderr
    assert {r["pack"] for r in result.json()["results"]} == {"sample-model", "sample-db"}
    assert_installed(home, site.model_size)
    assert not (home.config_dir / "devops-cp" / "trusted-keys").exists()  # --trust trusts for this run only


def test_sha256sum_and_openssl_check_the_bundle_without_this_tool(site, tmp_path):
    bundle, doc = site.bundle()
    listing = (bundle.parent / (bundle.name + ".sha256")).read_text()
    assert listing == f"{sha256_file(bundle)}  {bundle.name}\n"
    check = subprocess.run(["sha256sum", "-c", bundle.name + ".sha256"], cwd=bundle.parent, capture_output=True, text=True)
    assert check.returncode == 0 and f"{bundle.name}: OK" in check.stdout, check.stderr

    extracted = tmp_path / "extracted"
    extracted.mkdir()
    subprocess.run(["tar", "-I", "zstd", "-xf", str(bundle), "manifest.json", "manifest.json.sig"], cwd=extracted, check=True)
    listed = subprocess.run(["tar", "-I", "zstd", "-tf", str(bundle)], capture_output=True, text=True, check=True).stdout.split()
    assert listed[:2] == ["manifest.json", "manifest.json.sig"]  # the manifest can be checked before any payload
    verify = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(site.pub), "-rawin", "-in", "manifest.json", "-sigfile", "manifest.json.sig"]
    ok = subprocess.run(verify, cwd=extracted, capture_output=True, text=True)
    assert ok.returncode == 0 and "Signature Verified Successfully" in ok.stdout, ok.stdout + ok.stderr

    (extracted / "manifest.json").write_bytes((extracted / "manifest.json").read_bytes().replace(b"sample", b"simple", 1))
    bad = subprocess.run(verify, cwd=extracted, capture_output=True, text=True)
    assert bad.returncode != 0  # and openssl agrees that a changed byte breaks it


def test_the_manifest_carries_what_the_issue_asks_for(site, tmp_path, monkeypatch):
    bundle, doc = site.bundle("expiring.tar.zst", "--expires", "30d")
    import json

    raw = subprocess.run(["tar", "-I", "zstd", "-xOf", str(bundle), "manifest.json"], capture_output=True, check=True).stdout
    manifest = json.loads(raw)
    assert manifest["format_version"] == 2 and manifest["bundle_id"] == doc["bundle_id"]
    assert manifest["created"] < manifest["expires"] and manifest["tool_version"] and manifest["signer_key_id"] == site.key_id
    packs = {p["id"]: p for p in manifest["packs"]}
    assert packs["sample-db"]["update_schedule"] == "weekly" and packs["sample-db"]["label"]
    assert packs["sample-db"]["data_type"] == "sample" and packs["sample-db"]["choices"] == {}
    files = {(f["pack_key"], f["path"]): f for f in manifest["files"]}
    model = files[("sample-model", "models/sample-model.bin")]
    assert model["size"] == site.model_size and model["sha256"] == hashlib.sha256(sample_model(site.model_size)).hexdigest()
    assert all(not f["path"].startswith("/") and ".." not in f["path"].split("/") for f in manifest["files"])


# --- split bundles ------------------------------------------------------------------------------


@pytest.fixture
def big_site(cli, isolated_env, local_server, tmp_path, monkeypatch) -> Site:
    return Site(cli, isolated_env, local_server, tmp_path, monkeypatch, model_size=35_000_000)


def parts_of(bundle: Path) -> list[Path]:
    return sorted(bundle.parent.glob(bundle.name + ".[0-9][0-9][0-9]"))


def split_bundle(big_site: Site) -> tuple[Path, dict]:
    bundle, doc = big_site.bundle("split.tar.zst", "--split-size", "10M")
    parts = parts_of(bundle)
    assert len(parts) == 4 and not bundle.exists()
    assert [p.name for p in parts] == [f"split.tar.zst.{n:03d}" for n in range(1, 5)]
    assert all(p.stat().st_size <= 10_000_000 for p in parts)
    assert all(p.stat().st_size == 10_000_000 for p in parts[:-1])
    assert [p["name"] for p in doc["parts"]] == [p.name for p in parts]
    for side in ("split.tar.zst.sha256", "split.tar.zst.sha256.sig", "split.tar.zst.parts.json", "split.tar.zst.parts.json.sig"):
        assert (bundle.parent / side).is_file(), side
    return bundle, doc


def copy_bundle(bundle: Path, dest: Path) -> Path:
    for path in bundle.parent.glob(bundle.name + "*"):
        shutil.copy(path, dest / path.name)
    return dest / bundle.name


def test_split_bundle_sideloads_from_a_read_only_stick(big_site, cli, tmpfs):
    bundle, _ = split_bundle(big_site)
    check = subprocess.run(["sha256sum", "-c", bundle.name + ".sha256"], cwd=bundle.parent, capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.count(": OK") == 4, check.stdout + check.stderr

    stick = tmpfs("60m", name="stick")
    on_stick = copy_bundle(bundle, stick)
    remount = subprocess.run(["mount", "-o", "remount,ro", str(stick)], capture_output=True, text=True)
    if remount.returncode != 0:
        pytest.skip(f"cannot remount the tmpfs read-only here: {remount.stderr.strip()}")
    assert not os.access(stick, os.W_OK) or subprocess.run(["touch", str(stick / "probe")], capture_output=True).returncode != 0
    before = tree_snapshot(stick)

    home = big_site.other_host("airgapped")
    assert cli("trust", "add", str(big_site.pub)).exit_code == 0
    inspected = cli("inspect", str(on_stick), "--json")
    assert inspected.exit_code == 0 and inspected.json()["split"] is True and inspected.json()["trusted"] is True
    result = cli("sideload", str(on_stick), "--progress", "none")
    assert result.exit_code == 0, result.stderr
    assert_installed(home, big_site.model_size)
    assert tree_snapshot(stick) == before  # nothing written next to the parts, nothing joined

    second = big_site.other_host("second-host")
    assert cli("trust", "add", str(big_site.pub)).exit_code == 0
    by_part = cli("sideload", str(stick / "split.tar.zst.003"), "--progress", "none")  # a part's own name works too
    assert by_part.exit_code == 0, by_part.stderr
    assert_installed(second, big_site.model_size)
    assert tree_snapshot(stick) == before


def test_split_bundle_with_a_missing_part_names_it_and_installs_nothing(big_site, cli, tmp_path):
    bundle, _ = split_bundle(big_site)
    (bundle.parent / "split.tar.zst.002").unlink()
    home = big_site.other_host("airgapped")
    for name in (bundle, bundle.parent / "split.tar.zst.001"):
        result = cli("sideload", str(name), "--trust", str(big_site.pub), "--progress", "none")
        assert result.exit_code == 3, result.stderr
        assert "split.tar.zst.002" in result.stderr and "missing" in result.stderr
    verified = cli("verify", str(bundle), "--trust", str(big_site.pub), "--progress", "none")
    assert verified.exit_code == 3 and "split.tar.zst.002" in verified.stderr
    assert not home.records_dir.exists() or not list(home.records_dir.iterdir())
    assert not [p for p in home.data.rglob("*") if p.is_file()]


@pytest.mark.parametrize("part, offset", [(1, 5_000_000), (3, 123_456), (4, -10)], ids=["first", "middle", "last"])
def test_split_bundle_with_a_damaged_part_names_it(part, offset, big_site, cli):
    bundle, _ = split_bundle(big_site)
    damaged = bundle.parent / f"split.tar.zst.{part:03d}"
    size = damaged.stat().st_size
    flip_byte(damaged, offset)
    assert damaged.stat().st_size == size
    home = big_site.other_host("airgapped")
    result = cli("sideload", str(bundle), "--trust", str(big_site.pub), "--progress", "none")
    assert result.exit_code == 3, result.stderr
    assert f"part {damaged.name} is damaged" in result.stderr
    assert not home.records_dir.exists() or not list(home.records_dir.iterdir())
    assert not [p for p in home.data.rglob("*") if p.is_file()]
    verified = cli("verify", str(bundle), "--trust", str(big_site.pub), "--progress", "none")
    assert verified.exit_code == 3 and f"part {damaged.name} is damaged" in verified.stderr


def test_split_bundle_whose_parts_index_was_changed_is_refused(big_site, cli):
    bundle, _ = split_bundle(big_site)
    index = bundle.parent / "split.tar.zst.parts.json"
    index.write_bytes(index.read_bytes().replace(b'"total_size"', b'"total_size" ', 1))
    big_site.other_host("airgapped")
    result = cli("sideload", str(bundle), "--trust", str(big_site.pub), "--progress", "none")
    assert result.exit_code == 3, result.stderr
    assert "parts index" in result.stderr and "invalid signature" in result.stderr


# --- install PACK --source BUNDLE ---------------------------------------------------------------


def test_install_with_a_bundle_as_source_installs_that_one_pack(site, cli):
    bundle, doc = site.bundle()
    home = site.other_host("airgapped")
    assert cli("trust", "add", str(site.pub)).exit_code == 0
    result = cli("install", "sample-model", "--source", str(bundle), "--progress", "none", "--json")
    assert result.exit_code == 0, result.stderr
    assert [r["pack"] for r in result.json()["results"]] == ["sample-model"]
    samples = home.sample_dir()
    assert sha256_file(samples / "models" / "sample-model.bin") == hashlib.sha256(sample_model(site.model_size)).hexdigest()
    assert not (samples / "db").exists()
    status = cli("status", "--json").json()
    assert [(p["key"], p["source"]) for p in status["packs"]] == [("sample-model", f"bundle:{doc['bundle_id']}")]


def test_install_from_a_bundle_still_checks_the_signature(site, cli, tmp_path):
    bundle, _ = site.bundle()
    home = site.other_host("airgapped")  # trusts nothing
    result = cli("install", "sample-model", "--source", str(bundle), "--progress", "none")
    assert result.exit_code == 3 and "trusted" in result.stderr
    assert not home.sample_dir().exists() or not [p for p in home.sample_dir().rglob("*") if p.is_file()]


# --- GPU requirements are checked where the pack is installed -----------------------------------


@pytest.fixture
def gpu_site(cli, isolated_env, local_server, write_recipe, tmp_path, monkeypatch):
    from conftest import download_step, payload

    small, large = payload(1000, seed=3), payload(5000, seed=4)
    steps = {
        "small": [download_step(local_server.add("/m/small.pt", small), "small.pt", small)],
        "large": [download_step(local_server.add("/m/large.pt", large), "large.pt", large)],
    }
    choices = [{"id": "model_size", "label": "Model size", "options": [
        {"value": "small", "label": "Small", "default": True},
        {"value": "large", "label": "Large", "gpu_vendor": "nvidia"},
    ]}]  # fmt: skip
    write_recipe("gpu-model", steps, choices=choices)
    site = Site(cli, isolated_env, local_server, tmp_path, monkeypatch, model_size=1000)
    site.packs = ["gpu-model:model_size=large"]
    return site, large


def test_gpu_pack_is_bundled_anywhere_but_refused_on_a_host_without_gpu_unless_forced(gpu_site, cli, monkeypatch):
    site, large = gpu_site
    out = site.out_dir / "gpu.tar.zst"
    made = cli("bundle", *site.packs, "-o", str(out), "--key", str(site.key), "--progress", "none")
    assert made.exit_code == 0, made.stderr
    assert "requires an NVIDIA GPU" in made.stderr and "bundling it anyway" in made.stderr

    home = site.other_host("cpu-only")
    monkeypatch.setenv("DEVOPS_CP_NO_GPU", "1")
    refused = cli("sideload", str(out), "--trust", str(site.pub), "--progress", "none")
    assert refused.exit_code == 4, refused.stderr
    assert "requires an NVIDIA GPU" in refused.stderr and "--force" in refused.stderr
    assert not home.sample_dir().exists() or not list(home.sample_dir().rglob("*.pt"))
    assert not home.records_dir.exists() or not list(home.records_dir.iterdir())

    forced = cli("sideload", str(out), "--trust", str(site.pub), "--progress", "none", "--force", "--json")
    assert forced.exit_code == 0, forced.stderr
    (result,) = forced.json()["results"]
    assert result["pack"] == "gpu-model@model_size=large"
    assert any("installing anyway because of --force" in w for w in result["warnings"])
    assert (home.sample_dir() / "large.pt").read_bytes() == large
