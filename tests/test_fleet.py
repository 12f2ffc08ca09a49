"""mirror -> a real registry (Debian's docker-registry) or an OCI image layout -> install --from.

The registry is the real one (tests/oci_registry.py); a served layout is `python -m http.server`
or, where a fault is needed (429, a dropped connection), the test suite's LocalServer.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from bundle_helpers import PackSpec, new_key, write_bundle, write_public_key
from conftest import REPO, fresh_host, gets, payload
from devops_cp.localserver import Fault
from fleet import artifact
from oci_registry import free_port, registry  # noqa: F401  (the fixture)

BIG = payload(5 << 20, seed=3)  # its own layer
SMALL = {f"docs/page-{i:03d}.txt": f"page {i}\n".encode() * (i + 1) for i in range(40)}  # one tar layer
CREATED = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)


def model_pack(**extra) -> PackSpec:
    return PackSpec("model", {"weights.bin": BIG, **SMALL}, choices={"size": "base"}, **extra)


@pytest.fixture
def signer(tmp_path):
    key = new_key()
    return key, write_public_key(tmp_path / "site.pub", key)


def make_bundle(tmp_path, key, packs, created=CREATED, name="stick.tar.zst", **kw):
    return write_bundle(tmp_path / name, packs, key=key, created=created, **kw)


def installed_files(data_dir: Path) -> dict[str, bytes]:
    return {p.relative_to(data_dir).as_posix(): p.read_bytes() for p in sorted(data_dir.rglob("*")) if p.is_file() and ".devops-cp" not in p.parts}


# --- tags ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["trivy-db", "whisper-model@model_size=base", "a_b@lang=en_US,size=Large", "x@v=ü"])
def test_tag_encoding_round_trips_and_is_a_valid_tag(key):
    tag = artifact.tag_for(key, "20261201T080000Z")
    assert artifact.parse_tag(tag) == (key, "20261201T080000Z")
    assert artifact.parse_tag(artifact.tag_for(key, artifact.LATEST)) == (key, "latest")
    import re

    assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}", tag)


def test_tags_of_other_tools_are_not_taken_for_packs():
    assert artifact.parse_tag("latest") is None
    assert artifact.parse_tag("v1.2.3") is None
    assert artifact.parse_tag("model.20261301") is None


# --- registry -----------------------------------------------------------------------------


def test_mirror_to_registry_then_install_from_it(cli, tmp_path, registry, signer, monkeypatch, isolated_env):
    key, pub = signer
    built = make_bundle(tmp_path, key, [model_pack(), PackSpec("geo", {"geo.mmdb": b"g" * 1000})])
    site = f"oci://{registry}/site/packs"
    result = cli("mirror", str(built.path), "--to", site, "--trust", str(pub), "--json")
    assert result.exit_code == 0, result.stderr
    report = result.json()
    version = artifact.version_of(built.manifest.created)
    tags = {p["key"]: p["tags"] for p in report["packs"]}
    assert tags["model@size=base"] == [artifact.tag_for("model@size=base", version), artifact.tag_for("model@size=base", "latest")]

    # standard tools see a titled artifact with few layers
    manifest = httpx.get(f"http://{registry}/v2/site/packs/manifests/{tags['model@size=base'][1]}", headers={"Accept": artifact.OCI_MANIFEST}).json()
    titles = [layer["annotations"][artifact.TITLE] for layer in manifest["layers"]]
    assert titles == ["manifest.json", "manifest.json.sig", "weights.bin", "model.tar"]

    result = cli("install", "model", "--from", site, "--trust", str(pub))
    assert result.exit_code == 0, result.stderr
    got = installed_files(isolated_env.sample_dir())
    assert got == {"weights.bin": BIG, **SMALL}
    record = isolated_env.record("model@size=base")
    assert record["bundle_created"] == built.manifest.created and record["source"].startswith(site)

    # again: nothing to do
    result = cli("install", "--from", site, "--trust", str(pub))
    assert result.exit_code == 0, result.stderr
    assert "up to date" in result.stdout

    # a second mirror of the same bundle sends no blob twice
    result = cli("mirror", str(built.path), "--to", site, "--trust", str(pub), "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["uploaded_bytes"] == 0


# --- many hosts at once, as real processes ----------------------------------------------------


def host_env(root: Path) -> dict[str, str]:
    """Another machine: its own HOME and XDG dirs, nothing shared with the others."""
    home = root / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "DEVOPS_CP_"))}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), XDG_DATA_HOME=str(home / ".local/share"), XDG_STATE_HOME=str(home / ".local/state"), XDG_CONFIG_HOME=str(home / ".config"), DEVOPS_CP_NO_GPU="1", DEVOPS_CP_CATALOG=str(root / "catalog"))
    (root / "catalog").mkdir(parents=True, exist_ok=True)
    return env


def start_host(root: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "devops_cp", "data", *args], env=host_env(root), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def host_data(root: Path) -> Path:
    return root / "home" / ".local/share" / "devops-cp" / "samples"


def install_on_hosts(tmp_path: Path, count: int, *args: str) -> list[Path]:
    """`count` hosts installing at once; each must succeed with exactly the signed files."""
    roots = [tmp_path / f"host{i}" for i in range(count)]
    processes = [start_host(root, "install", *args, "--progress", "none") for root in roots]
    for root, process in zip(roots, processes):
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, f"{root.name}: {err}"
        assert installed_files(host_data(root)) == {"weights.bin": BIG, **SMALL}, root.name
    return roots


def assert_refused_and_nothing_installed(root: Path, *args: str) -> str:
    process = start_host(root, "install", *args, "--progress", "none")
    out, err = process.communicate(timeout=300)
    assert process.returncode == 3, err
    assert installed_files(host_data(root)) == {}
    assert not (root / "home" / ".local/state" / "devops-cp" / "records" / "model@size=base.json").exists()
    return err


def test_eight_hosts_install_from_the_registry_at_once_then_a_swapped_layer_is_refused(cli, tmp_path, registry, signer):
    key, pub = signer
    built = make_bundle(tmp_path, key, [model_pack()])
    site = f"oci://{registry}/fleet/eight"
    result = cli("mirror", str(built.path), "--to", site, "--trust", str(pub))
    assert result.exit_code == 0, result.stderr

    install_on_hosts(tmp_path, 8, "model:size=base", "--from", site, "--trust", str(pub))

    # the registry now serves other bytes for the large file's layer (same length)
    blob = registry.blob_file("sha256:" + hashlib.sha256(BIG).hexdigest())
    swapped = bytearray(blob.read_bytes())
    swapped[len(swapped) // 2] ^= 0x01
    blob.write_bytes(bytes(swapped))
    err = assert_refused_and_nothing_installed(tmp_path / "fresh", "model", "--from", site, "--trust", str(pub))
    assert "weights.bin" in err and "sha256" in err


@pytest.fixture
def http_server():
    """`python -m http.server` on 127.0.0.1 serving a directory, as a site's web server would."""
    started = []

    def serve(directory: Path) -> str:
        port = free_port()
        process = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(directory)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):  # until it answers (it binds within a second or so)
            try:
                httpx.get(url + "/oci-layout", timeout=2, trust_env=False)
                return url
            except httpx.TransportError:
                if process.poll() is not None:
                    raise RuntimeError("python -m http.server did not start")
                time.sleep(0.1)
        raise RuntimeError("python -m http.server did not answer")

    yield serve
    for process in started:
        process.terminate()
        process.wait(10)


def test_eight_hosts_install_from_a_served_layout_then_a_changed_byte_is_refused(cli, tmp_path, signer, http_server):
    key, pub = signer
    built = make_bundle(tmp_path, key, [model_pack()])
    tree = tmp_path / "www" / "packs"
    result = cli("mirror", str(built.path), "--to", str(tree), "--trust", str(pub))
    assert result.exit_code == 0, result.stderr
    assert json.loads((tree / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    url = http_server(tree.parent) + "/packs"

    install_on_hosts(tmp_path, 8, "model", "--from", url, "--trust", str(pub))

    # one byte of one small file changed inside the tar layer, and the mirror's own digests
    # rewritten to match: only the signed manifest can tell
    index = json.loads((tree / "index.json").read_text())
    digest = index["manifests"][0]["digest"]
    manifest = json.loads((tree / "blobs" / digest.replace(":", "/")).read_text())
    layer = next(layer for layer in manifest["layers"] if layer["mediaType"] == artifact.FILES_TAR)
    data = bytearray((tree / "blobs" / layer["digest"].replace(":", "/")).read_bytes())
    data[data.index(b"page 7\n")] ^= 0x20
    new_digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (tree / "blobs" / new_digest.replace(":", "/")).write_bytes(bytes(data))
    layer["digest"] = new_digest
    new_manifest = json.dumps(manifest).encode()
    manifest_digest = "sha256:" + hashlib.sha256(new_manifest).hexdigest()
    (tree / "blobs" / manifest_digest.replace(":", "/")).write_bytes(new_manifest)
    for entry in index["manifests"]:
        entry.update(digest=manifest_digest, size=len(new_manifest))
    (tree / "index.json").write_text(json.dumps(index))

    err = assert_refused_and_nothing_installed(tmp_path / "fresh", "model", "--from", url, "--trust", str(pub))
    assert "docs/page-007.txt" in err
