"""mirror -> a real registry (Debian's docker-registry) or an OCI image layout -> install --from.

The registry is the real one (tests/support/oci_registry.py); a served layout is `python -m http.server`
or, where a fault is needed (429, a dropped connection), the test suite's LocalServer.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from bundle_helpers import PackSpec, new_key, write_bundle, write_public_key
from conftest import REPO, fast_settings, gets, payload
from support.oci_registry import free_port, run_registry
from support.localserver import Fault, LocalServer

from fleet import artifact


BIG = payload(5 << 20, seed=3)  # its own layer
SMALL = {f"docs/page-{i:03d}.txt": f"page {i}\n".encode() * (i + 1) for i in range(40)}  # one tar layer
CREATED = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def model_pack(**extra) -> PackSpec:
    return PackSpec("model", {"weights.bin": BIG, **SMALL}, choices={"size": "base"}, **extra)


SWAPPED_BIG = payload(5 << 20, seed=4)  # the registry shares blobs between repositories: the test that alters one has its own


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

    result = cli("install", "model", "--from", site, "--trust", str(pub), "-q")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == "" and "installed model" in result.stdout  # -q: the result only, no progress or notice
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


def install_on_hosts(tmp_path: Path, count: int, *args: str, big: bytes = BIG) -> list[Path]:
    """`count` hosts installing at once; each must succeed with exactly the signed files."""
    roots = [tmp_path / f"host{i}" for i in range(count)]
    processes = [start_host(root, "install", *args, "--progress", "none") for root in roots]
    for root, process in zip(roots, processes):
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, f"{root.name}: {err}"
        assert installed_files(host_data(root)) == {"weights.bin": big, **SMALL}, root.name
    return roots


def assert_refused_and_nothing_installed(root: Path, *args: str) -> str:
    process = start_host(root, "install", *args, "--progress", "none")
    _, err = process.communicate(timeout=300)
    assert process.returncode == 3, err
    assert installed_files(host_data(root)) == {}
    assert not (root / "home" / ".local/state" / "devops-cp" / "records" / "model@size=base.json").exists()
    return err


def test_eight_hosts_install_from_the_registry_at_once_then_a_swapped_layer_is_refused(cli, tmp_path, registry, signer):
    key, pub = signer
    built = make_bundle(tmp_path, key, [PackSpec("model", {"weights.bin": SWAPPED_BIG, **SMALL}, choices={"size": "base"})])
    site = f"oci://{registry}/fleet/eight"
    result = cli("mirror", str(built.path), "--to", site, "--trust", str(pub))
    assert result.exit_code == 0, result.stderr

    install_on_hosts(tmp_path, 8, "model:size=base", "--from", site, "--trust", str(pub), big=SWAPPED_BIG)

    # the registry now serves other bytes for the large file's layer (same length)
    blob = registry.blob_file("sha256:" + hashlib.sha256(SWAPPED_BIG).hexdigest())
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
                    raise RuntimeError("python -m http.server did not start") from None
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


# --- the site asks for credentials -----------------------------------------------------------


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory):
    with run_registry(tmp_path_factory.mktemp("auth-registry"), users={"alice": "s3cret"}) as address:
        yield address


def test_a_push_without_credentials_is_refused_with_exit_5_then_docker_config_and_config_credentials_work(cli, tmp_path, auth_registry, signer, isolated_env):
    key, pub = signer
    built = make_bundle(tmp_path, key, [PackSpec("geo", {"geo.mmdb": b"g" * 1000})])
    site = f"oci://{auth_registry}/private/packs"
    result = cli("mirror", str(built.path), "--to", site, "--trust", str(pub))
    assert result.exit_code == 5, result.stderr
    assert "refused the credentials" in result.stderr and "docker login" in result.stderr

    docker = isolated_env.home / ".docker" / "config.json"
    docker.parent.mkdir()
    docker.write_text(json.dumps({"auths": {auth_registry: {"auth": base64.b64encode(b"alice:wrong").decode()}}}))
    result = cli("mirror", str(built.path), "--to", site, "--trust", str(pub))
    assert result.exit_code == 5, result.stderr

    docker.write_text(json.dumps({"auths": {auth_registry: {"auth": base64.b64encode(b"alice:s3cret").decode()}}}))
    result = cli("mirror", str(built.path), "--to", site, "--trust", str(pub))
    assert result.exit_code == 0, result.stderr
    docker.unlink()

    # a host pulls with the config file's [credentials."HOST:PORT"]
    assert cli("install", "geo", "--from", site, "--trust", str(pub)).exit_code == 5
    isolated_env.write_config(f'[credentials."{auth_registry}"]\nusername = "alice"\npassword = "s3cret"\n')
    result = cli("install", "geo", "--from", site, "--trust", str(pub))
    assert result.exit_code == 0, result.stderr
    assert (isolated_env.sample_dir() / "geo.mmdb").read_bytes() == b"g" * 1000


# --- bad input ----------------------------------------------------------------------------------


def test_a_damaged_bundle_publishes_nothing(cli, tmp_path, registry, signer):
    from bundle_helpers import flip_byte

    key, pub = signer
    built = make_bundle(tmp_path, key, [model_pack()])
    flip_byte(built.path, built.path.stat().st_size // 2)
    site = f"oci://{registry}/bad/damaged"
    result = cli("mirror", str(built.path), "--to", site, "--trust", str(pub))
    assert result.exit_code == 3, result.stderr
    assert httpx.get(f"http://{registry}/v2/bad/damaged/tags/list").status_code == 404  # no tag, no manifest

    tree = tmp_path / "tree"
    assert cli("mirror", str(built.path), "--to", str(tree), "--trust", str(pub)).exit_code == 3
    assert not (tree / "index.json").exists()


def test_unsigned_expired_untrusted_bundles_are_not_mirrored(cli, tmp_path, signer):
    key, pub = signer
    unsigned = make_bundle(tmp_path, None, [PackSpec("geo", {"g": b"1"})], name="unsigned.tar.zst")
    assert cli("mirror", str(unsigned.path), "--to", str(tmp_path / "t1")).exit_code == 4
    expired = make_bundle(tmp_path, key, [PackSpec("geo", {"g": b"1"})], name="old.tar.zst", created=CREATED, expires=CREATED + timedelta(days=1))
    result = cli("mirror", str(expired.path), "--to", str(tmp_path / "t2"), "--trust", str(pub))
    assert result.exit_code == 4 and "expire" in result.stderr
    other = make_bundle(tmp_path, new_key(), [PackSpec("geo", {"g": b"1"})], name="other.tar.zst")
    assert cli("mirror", str(other.path), "--to", str(tmp_path / "t3"), "--trust", str(pub)).exit_code == 3
    for name in ("t1", "t2", "t3"):
        assert not (tmp_path / name / "index.json").exists()


def test_bad_addresses_are_usage_errors(cli, tmp_path, signer):
    key, pub = signer
    built = make_bundle(tmp_path, key, [PackSpec("geo", {"g": b"1"})])
    for target in ("ftp://host/x", "oci://host", "oci://host/UPPER", "http://127.0.0.1:1/x"):
        result = cli("mirror", str(built.path), "--to", target, "--trust", str(pub))
        assert result.exit_code == 2, (target, result.stderr)
    result = cli("install", "geo", "--from", "oci:/typo/x")
    assert result.exit_code == 2 and "oci://HOST[:PORT]/REPO" in result.stderr


def test_a_host_that_does_not_trust_the_signer_installs_nothing(cli, tmp_path, signer, isolated_env):
    key, pub = signer
    tree = tmp_path / "tree"
    built = make_bundle(tmp_path, key, [model_pack()])
    assert cli("mirror", str(built.path), "--to", str(tree), "--trust", str(pub)).exit_code == 0
    with serve_tree(tree) as url:
        result = cli("install", "model", "--from", url)
    assert result.exit_code == 3, result.stderr
    assert "trust" in result.stderr.lower()
    assert installed_files(isolated_env.sample_dir()) == {}


def test_a_missing_pack_or_version_names_what_is_missing(cli, tmp_path, signer):
    key, pub = signer
    tree = tmp_path / "tree"
    built = make_bundle(tmp_path, key, [model_pack(), PackSpec("geo", {"g": b"1"})])
    assert cli("mirror", str(built.path), "--to", str(tree), "--trust", str(pub)).exit_code == 0
    with serve_tree(tree) as url:
        result = cli("install", "nothing", "--from", url, "--trust", str(pub))
        assert result.exit_code == 2 and "has no pack 'nothing'" in result.stderr and "geo, model@size=base" in result.stderr
        result = cli("install", "model:size=large", "--from", url, "--trust", str(pub))
        assert result.exit_code == 2 and "model:size=large" in result.stderr
        result = cli("install", "geo", "--from", url, "--trust", str(pub), "--at", "20200101T000000Z")
        assert result.exit_code == 2 and "has no tag" in result.stderr and "20200101T000000Z" in result.stderr


def test_offline_steps_need_allow_commands(cli, tmp_path, signer, isolated_env):
    key, pub = signer
    tree = tmp_path / "tree"
    step = {"type": "tool_command", "command": ["touch", "{data_dir}/offline-step-ran"]}
    built = make_bundle(tmp_path, key, [PackSpec("tool-pack", {"t.bin": b"t" * 10}, offline_steps=[step])])
    assert cli("mirror", str(built.path), "--to", str(tree), "--trust", str(pub)).exit_code == 0
    with serve_tree(tree) as url:
        result = cli("install", "tool-pack", "--from", url, "--trust", str(pub))
        assert result.exit_code == 4 and "--allow-commands tool-pack" in result.stderr
        assert installed_files(isolated_env.sample_dir()) == {}
        result = cli("install", "tool-pack", "--from", url, "--trust", str(pub), "--allow-commands", "tool-pack")
    assert result.exit_code == 0, result.stderr
    assert (isolated_env.sample_dir() / "offline-step-ran").exists()


# --- versions: rollback, freeze, updates ------------------------------------------------------


def test_rollback_is_skipped_or_refused_and_check_updates_reports_the_site(cli, tmp_path, signer, isolated_env):
    key, pub = signer
    old = make_bundle(tmp_path, key, [PackSpec("geo", {"geo.mmdb": b"old"})], name="old.tar.zst", created=CREATED)
    new = make_bundle(tmp_path, key, [PackSpec("geo", {"geo.mmdb": b"new"})], name="new.tar.zst", created=CREATED + timedelta(days=7))
    old_site, site = tmp_path / "old-site", tmp_path / "site"
    assert cli("mirror", str(old.path), "--to", str(old_site), "--trust", str(pub)).exit_code == 0
    assert cli("mirror", str(old.path), "--to", str(site), "--trust", str(pub)).exit_code == 0
    with LocalServer() as server:
        url, old_url = publish_tree(site, server), publish_tree(old_site, server, "/old-site")
        assert cli("install", "geo", "--from", url, "--trust", str(pub)).exit_code == 0
        doc = cli("check-updates", "--from", url, "--trust", str(pub), "--json").json()
        assert doc["packs"][0]["update"] is False and doc["newest_signed_manifest"] == old.manifest.created

        assert cli("mirror", str(new.path), "--to", str(site), "--trust", str(pub)).exit_code == 0
        result = cli("mirror", str(old.path), "--to", str(site), "--trust", str(pub), "--json")  # an older bundle again
        assert result.json()["packs"][0]["tags"] == [artifact.tag_for("geo", artifact.version_of(old.manifest.created))]  # latest stays
        publish_tree(site, server)
        doc = cli("check-updates", "--from", url, "--trust", str(pub), "--json").json()
        assert doc["packs"][0]["update"] is True and doc["newest_signed_manifest"] == new.manifest.created

        result = cli("install", "--from", url, "--trust", str(pub))  # no names: update what is installed
        assert result.exit_code == 0, result.stderr
        assert (isolated_env.sample_dir() / "geo.mmdb").read_bytes() == b"new"

        result = cli("install", "geo", "--from", old_url, "--trust", str(pub))  # a frozen or stale mirror
        assert result.exit_code == 0 and "kept" in result.stdout
        result = cli("install", "geo", "--from", url, "--trust", str(pub), "--at", artifact.version_of(old.manifest.created))
        assert result.exit_code == 4 and "--allow-downgrade" in result.stderr
    assert (isolated_env.sample_dir() / "geo.mmdb").read_bytes() == b"new"


def test_the_site_source_in_the_config_is_where_install_gets_packs(cli, tmp_path, signer, isolated_env):
    key, pub = signer
    tree = tmp_path / "tree"
    built = make_bundle(tmp_path, key, [PackSpec("geo", {"geo.mmdb": b"site"})])
    assert cli("mirror", str(built.path), "--to", str(tree), "--trust", str(pub)).exit_code == 0
    assert cli("trust", "add", str(pub)).exit_code == 0
    with serve_tree(tree) as url:
        isolated_env.write_config(f'[site]\nsource = "{url}"\n')
        result = cli("install", "geo")
    assert result.exit_code == 0, result.stderr
    assert (isolated_env.sample_dir() / "geo.mmdb").read_bytes() == b"site"


# --- fleet behaviour: 429/503 with jitter, a dropped layer resumes, a cut mirror finishes ----


@contextlib.contextmanager
def serve_tree(tree: Path, server=None):
    """The layout's files from the suite's LocalServer (faults can be set per path)."""
    with contextlib.ExitStack() as stack:
        server = server or stack.enter_context(LocalServer())
        yield publish_tree(tree, server)


def publish_tree(tree: Path, server, prefix: str = "/site") -> str:
    """Serve every file of the tree as it is now (again after another mirror into it)."""
    for path in tree.rglob("*"):
        if path.is_file():
            server.add(f"{prefix}/{path.relative_to(tree).as_posix()}", path.read_bytes())
    return server.url(prefix)


def test_429_and_503_are_retried_with_jittered_waits_and_a_dropped_layer_resumes(cli, tmp_path, signer, local_server, isolated_env):
    key, pub = signer
    tree = tmp_path / "tree"
    built = make_bundle(tmp_path, key, [model_pack()])
    assert cli("mirror", str(built.path), "--to", str(tree), "--trust", str(pub)).exit_code == 0
    big = "/site/blobs/sha256/" + hashlib.sha256(BIG).hexdigest()
    waits = []
    with serve_tree(tree, local_server) as url:
        local_server.set_fault("/site/index.json", Fault(statuses=[429, 503], retry_after=2))
        local_server.set_fault(big, Fault(drop_after=1 << 20))
        result = cli("install", "model", "--from", url, "--trust", str(pub), settings=fast_settings(sleep=waits.append, backoff=1.0))
    assert result.exit_code == 0, result.stderr
    assert installed_files(isolated_env.sample_dir()) == {"weights.bin": BIG, **SMALL}
    assert [r.status for r in gets(local_server, "/site/index.json")] == [429, 503, 200]
    assert 2.0 <= waits[0] <= 3.0 and 2.0 <= waits[1] <= 3.0  # Retry-After, spread by up to half of it
    requests = gets(local_server, big)
    assert [r.status for r in requests] == [200, 206] and requests[1].range == "bytes=1048576-"
    assert sum(r.body_bytes_sent for r in requests) < len(BIG) + (64 << 10) + 1  # resumed, not fetched again


def test_a_mirror_cut_short_shows_no_tag_and_a_second_run_finishes_it(cli, tmp_path, signer, monkeypatch):
    from fleet.publish import LayoutWriter
    from manifests.errors import NetworkError

    key, pub = signer
    tree = tmp_path / "tree"
    built = make_bundle(tmp_path, key, [model_pack()])
    real = LayoutWriter.put_manifests

    def cut(self, manifests):
        raise NetworkError("the site went away")

    monkeypatch.setattr(LayoutWriter, "put_manifests", cut)
    assert cli("mirror", str(built.path), "--to", str(tree), "--trust", str(pub)).exit_code == 6
    assert not (tree / "index.json").exists()
    monkeypatch.setattr(LayoutWriter, "put_manifests", real)
    result = cli("mirror", str(built.path), "--to", str(tree), "--trust", str(pub), "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["uploaded_bytes"] == 0 and result.json()["reused_blobs"] >= 5
    assert len(json.loads((tree / "index.json").read_text())["manifests"]) == 2


class FailsPatches(httpx.BaseTransport):
    """A link to the registry that fails the 2nd and 4th PATCH: never sent, or (lose_answer) sent and its answer lost."""

    def __init__(self, lose_answer: bool = False):
        self.inner, self.patches, self.ranges, self.lose_answer = httpx.HTTPTransport(), 0, [], lose_answer

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PATCH":
            self.patches += 1
            if self.patches in (2, 4):
                if not self.lose_answer:
                    raise httpx.ConnectError("connection refused (test)")
                self.inner.handle_request(request).close()
                raise httpx.ReadError("connection reset (test)")
        response = self.inner.handle_request(request)
        if request.method == "GET" and "/blobs/uploads/" in request.url.path:
            self.ranges.append(response.headers.get("range"))
        return response


def mirror_through(transport, bundle: Path, site: str, pub: Path):
    from fleet import publish
    from fleet.mirror import mirror_bundle
    from fleet.site import Endpoint, parse_address
    from sideload.api import TrustOptions

    with httpx.Client(transport=transport) as client:
        endpoint = Endpoint(client, fast_settings(), parse_address(site, allow_dir=False), actions="pull,push")
        return mirror_bundle(bundle, publish.RegistryWriter(endpoint), TrustOptions((pub,)))


def test_a_large_blob_goes_up_in_chunks_and_a_failed_chunk_resumes_where_the_registry_stopped(tmp_path, registry, signer, monkeypatch, cli, isolated_env):
    from fleet import publish

    monkeypatch.setattr(publish, "CHUNK", 1 << 20)
    key, pub = signer
    built = make_bundle(tmp_path, key, [model_pack()])
    site = f"oci://{registry}/fleet/chunks"
    transport = FailsPatches()
    report = mirror_through(transport, built.path, site, pub)
    assert report.uploaded_bytes > len(BIG)
    assert transport.patches == 5 + 2  # 5 chunks of the large file; the two that failed sent again
    assert transport.ranges == ["0-1048575", "0-2097151"]  # what the registry held when each failed: one chunk, then two
    result = cli("install", "model", "--from", site, "--trust", str(pub))
    assert result.exit_code == 0, result.stderr
    assert installed_files(isolated_env.sample_dir()) == {"weights.bin": BIG, **SMALL}


def test_a_chunk_whose_answer_was_lost_stops_the_mirror_and_a_second_run_finishes_it(tmp_path, registry, signer, monkeypatch, cli):
    """docker-registry signs each upload's offset into its Location: after a lost answer the
    upload cannot be asked about again. The mirror stops (exit 6), publishes no tag, and the
    next run sends that blob again and finishes."""
    from fleet import publish
    from manifests.errors import NetworkError

    monkeypatch.setattr(publish, "CHUNK", 1 << 20)
    key, pub = signer
    built = make_bundle(tmp_path, key, [model_pack()])
    site = f"oci://{registry}/fleet/lost"
    with pytest.raises(NetworkError) as exc:
        mirror_through(FailsPatches(lose_answer=True), built.path, site, pub)
    assert "run the same command again" in exc.value.hint
    assert httpx.get(f"http://{registry}/v2/fleet/lost/tags/list").status_code == 404
    result = cli("mirror", str(built.path), "--to", site, "--trust", str(pub), "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["uploaded_bytes"] >= len(BIG)


def test_a_bundle_made_for_one_host_is_not_mirrored(cli, tmp_path, signer):
    from bundle_helpers import bundle_members, replace, resign, write_tar_zst

    from manifests.model import FOR_HOST_VERSION, ForHost

    key, pub = signer
    built = make_bundle(tmp_path, key, [PackSpec("geo", {"geo.mmdb": b"g" * 100})])
    manifest_bytes, signature = resign(built.manifest, key, change=lambda m: replace(m, format_version=FOR_HOST_VERSION, for_host=ForHost("host-7", "e" * 32, "2026-12-01T07:00:00Z")))
    for_one = write_tar_zst(tmp_path / "for-one.tar.zst", bundle_members(manifest_bytes, signature, built.payload))
    result = cli("mirror", str(for_one), "--to", str(tmp_path / "tree"), "--trust", str(pub))
    assert result.exit_code == 4, result.stderr
    assert "made for one host (host-7" in result.stderr and "without --for" in result.stderr
    assert not (tmp_path / "tree" / "index.json").exists()
