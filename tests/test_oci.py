"""oci_artifact steps against a real registry on 127.0.0.1.

The registry is Debian's `docker-registry` (github.com/docker/distribution), started per test
module with a temporary config and storage. The tests push Trivy-DB-like artifacts into it over
the distribution API with httpx (the same media types as the real trivy-db:2: once in the oras
1.0 form, artifact type in `config.mediaType`, once in the OCI 1.1 form, `artifactType` with an
empty config) and install them through the Engine, as `devops-cp data install` does.

Behaviour that the real registry cannot show (a bearer-token challenge, a blob redirected to
another host, a blob with the wrong bytes, a dropped connection) is served by LocalServer posing
as a registry.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

import pytest

from support.oci_registry import digest, free_port, push
from support.localserver import Fault, LocalServer, RequestContext
from support.tarballs import trivy_db_tarball
from executor.config import Config
from executor.engine import Engine
from executor.http import HttpSettings
from executor.oci import OCI_EMPTY, OCI_INDEX, OCI_MANIFEST, LayerNotFound, artifact_type, is_local_registry, parse_ref, registry_base
from executor.store import Store
from manifests.errors import ChecksumMismatch, LengthError, NetworkError, UsageError
from manifests.hardware import Hardware
from manifests.plan import resolve
from manifests.recipe import load_recipe

DB_LAYER = "application/vnd.aquasec.trivy.db.layer.v1.tar+gzip"
JAVADB_LAYER = "application/vnd.aquasec.trivy.javadb.layer.v1.tar+gzip"
TRIVY_CONFIG = "application/vnd.aquasec.trivy.config.v1+json"
REPO = "aquasecurity/trivy-db"


# --- the artifact -------------------------------------------------------------------------


class Pack:
    """Random trivy.db bytes, a metadata.json, and the layer (db.tar.gz) that carries them."""

    def __init__(self, size: int = 300_000):
        self.trivy_db = os.urandom(size)
        self.metadata = json.dumps({"Version": 2, "NextUpdate": "2030-01-01T06:00:00Z", "UpdatedAt": "2030-01-01T00:00:00Z", "DownloadedAt": ""}).encode()
        self.layer = trivy_db_tarball(self.trivy_db, self.metadata)

    def manifest(self, form: str, layer_media_type: str = DB_LAYER, layer: bytes | None = None) -> tuple[bytes, dict[str, bytes]]:
        """(manifest bytes, blobs it needs). form: 'config' (oras 1.0) or 'artifactType' (oras >= 1.1)."""
        layer = self.layer if layer is None else layer
        config = b"{}"
        layer_desc = {"mediaType": layer_media_type, "digest": digest(layer), "size": len(layer), "annotations": {"org.opencontainers.image.title": "db.tar.gz"}}
        manifest: dict = {"schemaVersion": 2, "mediaType": OCI_MANIFEST}
        if form == "config":
            manifest["config"] = {"mediaType": TRIVY_CONFIG, "digest": digest(config), "size": len(config)}
        else:
            manifest["artifactType"] = TRIVY_CONFIG
            manifest["config"] = {"mediaType": OCI_EMPTY, "digest": digest(config), "size": len(config), "data": base64.b64encode(config).decode()}
        manifest["layers"] = [layer_desc]
        manifest["annotations"] = {"org.opencontainers.image.created": "2030-01-01T00:00:00Z"}
        return json.dumps(manifest).encode(), {digest(config): config, digest(layer): layer}


# --- the real registry ---------------------------------------------------------------------


# --- running a recipe through the Engine ----------------------------------------------------


def make_engine(tmp_path: Path, mirrors: dict[str, str] | None = None) -> Engine:
    config = Config(path=tmp_path / "config.toml", data_dirs={"vulnerability_db": tmp_path / "trivy"}, mirrors=mirrors or {})
    settings = HttpSettings(retries=2, backoff=0.0, connect_timeout=5, stall_timeout=10, sleep=lambda seconds: None)
    return Engine(Store(config, state=tmp_path / "state"), settings=settings)


def install(tmp_path: Path, ref: str, *, fallback_refs: tuple[str, ...] = (), layer_media_type: str = DB_LAYER, mirrors: dict[str, str] | None = None):
    tmp_path.mkdir(parents=True, exist_ok=True)
    recipe_path = tmp_path / "trivy-db-test.toml"
    recipe_path.write_text(
        'id = "trivy-db-test"\nlabel = "Trivy DB (test)"\ndata_type = "vulnerability_db"\n\n'
        "[install._default]\n"
        'type = "oci_artifact"\n'
        f"ref = {json.dumps(ref)}\n"
        f"fallback_refs = {json.dumps(list(fallback_refs))}\n"
        f"layer_media_type = {json.dumps(layer_media_type)}\n"
        'dest = "db"\nextract = "tar.gz"\nunpacked_size_bytes = 10000000\n'
    )
    plan = resolve(load_recipe(recipe_path), {}, Hardware())
    engine = make_engine(tmp_path, mirrors)
    try:
        [outcome] = engine.install([plan])
    finally:
        engine.close()
    return outcome, engine.store


def assert_installed(tmp_path: Path, outcome, store: Store, pack: Pack, source: str) -> None:
    assert outcome.error is None, outcome.error
    data_dir = tmp_path / "trivy"
    assert (data_dir / "db" / "trivy.db").read_bytes() == pack.trivy_db
    assert (data_dir / "db" / "metadata.json").read_bytes() == pack.metadata
    record = store.read_record("trivy-db-test")
    assert {(f.path, f.size, f.sha256) for f in record.files} == {
        ("db/trivy.db", len(pack.trivy_db), hashlib.sha256(pack.trivy_db).hexdigest()),
        ("db/metadata.json", len(pack.metadata), hashlib.sha256(pack.metadata).hexdigest()),
    }
    assert record.source == source
    assert record.checksum_verified is True
    leftovers = [p for p in data_dir.rglob("*") if p.is_file() and not p.is_relative_to(data_dir / "db")]
    assert leftovers == []  # no partial blob, no staging file


def assert_nothing_installed(tmp_path: Path, store: Store) -> None:
    data_dir = tmp_path / "trivy"
    assert not (data_dir / "db").exists()
    assert store.read_record("trivy-db-test") is None
    assert [p for p in data_dir.rglob("*") if p.is_file()] == []  # a refused blob is not kept for resuming


# --- references ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, registry, repository, tag, digest_, base",
    [
        ("ghcr.io/aquasecurity/trivy-db:2", "ghcr.io", "aquasecurity/trivy-db", "2", None, "https://ghcr.io"),
        ("mirror.gcr.io/aquasec/trivy-db:2", "mirror.gcr.io", "aquasec/trivy-db", "2", None, "https://mirror.gcr.io"),
        ("public.ecr.aws/aquasecurity/trivy-db", "public.ecr.aws", "aquasecurity/trivy-db", "latest", None, "https://public.ecr.aws"),
        ("alpine", "registry-1.docker.io", "library/alpine", "latest", None, "https://registry-1.docker.io"),
        ("docker.io/alpine:3.20", "registry-1.docker.io", "library/alpine", "3.20", None, "https://registry-1.docker.io"),
        ("aquasec/trivy:0.74.0", "registry-1.docker.io", "aquasec/trivy", "0.74.0", None, "https://registry-1.docker.io"),
        ("127.0.0.1:5000/aquasecurity/trivy-db:2", "127.0.0.1:5000", "aquasecurity/trivy-db", "2", None, "http://127.0.0.1:5000"),
        ("localhost:5000/a/b", "localhost:5000", "a/b", "latest", None, "http://localhost:5000"),
        ("localhost/a", "localhost", "a", "latest", None, "http://localhost"),
        ("[::1]:5000/trivy-db:2", "[::1]:5000", "trivy-db", "2", None, "http://[::1]:5000"),
        ("registry.example:5000/x/y@sha256:" + "a" * 64, "registry.example:5000", "x/y", None, "sha256:" + "a" * 64, "https://registry.example:5000"),
        ("ghcr.io/x/y:2@sha256:" + "b" * 64, "ghcr.io", "x/y", "2", "sha256:" + "b" * 64, "https://ghcr.io"),
    ],
)
def test_parse_ref_and_scheme(text, registry, repository, tag, digest_, base):
    ref = parse_ref(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest_)
    assert ref.reference == (digest_ or tag)
    assert registry_base(ref.registry, {}) == base


@pytest.mark.parametrize("text", ["Ghcr.io/Upper/Case:1", "ghcr.io/x/y:bad tag", "ghcr.io/x/y@sha256", "ghcr.io/", ""])
def test_parse_ref_refuses_nonsense(text):
    with pytest.raises(UsageError, match="invalid OCI reference"):
        parse_ref(text)


def test_local_registries_are_plain_http_and_mirrors_replace_hosts():
    assert all(is_local_registry(h) for h in ("localhost", "localhost:5000", "127.0.0.1", "127.0.0.1:443", "[::1]:5000"))
    assert not any(is_local_registry(h) for h in ("ghcr.io", "10.0.0.1:5000", "localhost.example.com", "[2001:db8::1]:5000"))
    mirrors = {"ghcr.io": "127.0.0.1:5000", "docker.io": "https://hub-mirror.example/", "mirror.gcr.io": "registry.corp:8443"}
    assert registry_base("ghcr.io", mirrors) == "http://127.0.0.1:5000"
    assert registry_base("registry-1.docker.io", mirrors) == "https://hub-mirror.example"
    assert registry_base("mirror.gcr.io", mirrors) == "https://registry.corp:8443"
    assert registry_base("public.ecr.aws", mirrors) == "https://public.ecr.aws"


def test_artifact_type_from_either_form():
    pack = Pack(100)
    assert {artifact_type(json.loads(pack.manifest(form)[0])) for form in ("config", "artifactType")} == {TRIVY_CONFIG}


# --- against the real registry ---------------------------------------------------------------


@pytest.mark.parametrize("form", ["config", "artifactType"])
def test_install_from_a_real_registry(registry, tmp_path, form):
    """Both forms Trivy DBs are published in: oras 1.0 (config.mediaType) and oras 1.1 (artifactType)."""
    pack = Pack()
    name = f"{form.lower()}/trivy-db"
    manifest, blobs = pack.manifest(form)
    manifest_digest = push(registry, name, "2", manifest, blobs)
    ref = f"{registry}/{name}:2"
    outcome, store = install(tmp_path, ref)
    assert_installed(tmp_path, outcome, store, pack, f"oci:{ref}@{manifest_digest}")


def test_install_through_an_image_index_and_by_digest(registry, tmp_path):
    pack = Pack(50_000)
    name = "indexed/trivy-db"
    manifest, blobs = pack.manifest("artifactType")
    manifest_digest = push(registry, name, "single", manifest, blobs)
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [{"mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": len(manifest)}]}).encode()
    push(registry, name, "2", index, {}, media_type=OCI_INDEX)
    ref = f"{registry}/{name}:2"
    outcome, store = install(tmp_path, ref)
    assert_installed(tmp_path, outcome, store, pack, f"oci:{ref}@{manifest_digest}")

    pinned = f"{registry}/{name}@{manifest_digest}"
    outcome, store = install(tmp_path / "pinned", pinned)
    assert_installed(tmp_path / "pinned", outcome, store, pack, f"oci:{pinned}@{manifest_digest}")


@pytest.mark.parametrize("by", ["host", "url_prefix"])
def test_mirror_maps_the_registry_host(registry, tmp_path, by):
    """[mirrors] ghcr.io = "127.0.0.1:PORT" (or "https://ghcr.io/" = "http://127.0.0.1:PORT/"):
    the recipe's ghcr.io ref is pulled from the local registry, over plain HTTP."""
    pack = Pack(20_000)
    manifest, blobs = pack.manifest("config")
    manifest_digest = push(registry, REPO, "2", manifest, blobs)
    mirrors = {"ghcr.io": registry} if by == "host" else {"https://ghcr.io/": f"http://{registry}/"}
    outcome, store = install(tmp_path, f"ghcr.io/{REPO}:2", mirrors=mirrors)
    assert_installed(tmp_path, outcome, store, pack, f"oci:ghcr.io/{REPO}:2@{manifest_digest}")


def test_fallback_from_a_dead_registry(registry, tmp_path):
    pack = Pack(20_000)
    name = "fallback/trivy-db"
    manifest, blobs = pack.manifest("config")
    manifest_digest = push(registry, name, "2", manifest, blobs)
    dead = f"127.0.0.1:{free_port()}/{name}:2"  # nothing listens there
    ref = f"{registry}/{name}:2"
    outcome, store = install(tmp_path, dead, fallback_refs=(ref,))
    assert_installed(tmp_path, outcome, store, pack, f"oci:{ref}@{manifest_digest}")
    assert any(dead in note and ref in note for note in outcome.notes), outcome.notes


def test_every_registry_dead_is_a_network_error(tmp_path):
    refs = [f"127.0.0.1:{free_port()}/dead/trivy-db:2", f"127.0.0.1:{free_port()}/dead/trivy-db:2"]
    outcome, store = install(tmp_path, refs[0], fallback_refs=(refs[1],))
    assert isinstance(outcome.error, NetworkError) and outcome.error.exit_code == 6
    assert refs[0] in outcome.error.message and refs[1] in outcome.error.message
    assert_nothing_installed(tmp_path, store)


def test_unknown_layer_media_type_is_a_clear_error(registry, tmp_path):
    pack = Pack(10_000)
    name = "wrongtype/trivy-db"
    manifest, blobs = pack.manifest("artifactType")
    push(registry, name, "2", manifest, blobs)
    outcome, store = install(tmp_path, f"{registry}/{name}:2", layer_media_type=JAVADB_LAYER)
    assert isinstance(outcome.error, LayerNotFound) and outcome.error.exit_code == 2
    assert JAVADB_LAYER in outcome.error.message and DB_LAYER in outcome.error.message
    assert TRIVY_CONFIG in outcome.error.message  # the artifact type, read from artifactType
    assert_nothing_installed(tmp_path, store)


def test_missing_tag_is_a_network_error(registry, tmp_path):
    outcome, store = install(tmp_path, f"{registry}/nothing/here:2")
    assert isinstance(outcome.error, NetworkError) and "404" in outcome.error.message
    assert_nothing_installed(tmp_path, store)


# --- LocalServer posing as a registry ----------------------------------------------------------


def fake_registry(server: LocalServer, manifest: bytes, blobs: dict[str, bytes], *, name: str = REPO, tag: str = "2") -> None:
    server.route("GET", f"/v2/{name}/manifests/{tag}", lambda ctx: ctx.respond(200, manifest, content_type=OCI_MANIFEST))
    for blob_digest, data in blobs.items():
        server.add(f"/v2/{name}/blobs/{blob_digest}", data)


def test_corrupted_blob_is_refused_and_not_retried_elsewhere(tmp_path):
    """Wrong bytes of the right length: exit 3, nothing installed, and the fallback registry is not asked."""
    pack = Pack(50_000)
    manifest, blobs = pack.manifest("config")
    corrupted = bytearray(pack.layer)
    corrupted[len(corrupted) // 2] ^= 0xFF
    with LocalServer() as bad, LocalServer() as good:
        fake_registry(bad, manifest, {d: (bytes(corrupted) if d == digest(pack.layer) else b) for d, b in blobs.items()})
        fake_registry(good, manifest, blobs)
        ref = f"127.0.0.1:{bad.port}/{REPO}:2"
        outcome, store = install(tmp_path, ref, fallback_refs=(f"127.0.0.1:{good.port}/{REPO}:2",))
        assert good.requests == []
    assert isinstance(outcome.error, ChecksumMismatch) and outcome.error.exit_code == 3
    assert digest(pack.layer).split(":")[1] in outcome.error.message
    assert_nothing_installed(tmp_path, store)


def test_blob_longer_than_its_descriptor_is_refused(tmp_path):
    pack = Pack(50_000)
    manifest, blobs = pack.manifest("config")
    with LocalServer() as server:
        fake_registry(server, manifest, {d: (b + b"trailing" if d == digest(pack.layer) else b) for d, b in blobs.items()})
        outcome, store = install(tmp_path, f"127.0.0.1:{server.port}/{REPO}:2")
    assert isinstance(outcome.error, LengthError) and outcome.error.exit_code == 3
    assert_nothing_installed(tmp_path, store)


def test_dropped_blob_download_resumes(tmp_path):
    """The blob goes through executor.http.Download: a dropped connection resumes with Range."""
    pack = Pack(400_000)
    manifest, blobs = pack.manifest("config")
    with LocalServer() as server:
        fake_registry(server, manifest, blobs)
        blob_path = f"/v2/{REPO}/blobs/{digest(pack.layer)}"
        server.set_fault(blob_path, Fault(drop_after=150_000))
        ref = f"127.0.0.1:{server.port}/{REPO}:2"
        outcome, store = install(tmp_path, ref)
        ranges = [r.range for r in server.requests if r.path == blob_path]
        sent = server.bytes_sent(blob_path)
    assert_installed(tmp_path, outcome, store, pack, f"oci:{ref}@{digest(manifest)}")
    assert ranges == [None, "bytes=150000-"]
    assert sent == len(pack.layer)


@pytest.mark.parametrize("token_field", ["token", "access_token"])
def test_anonymous_bearer_token_and_redirected_blob(tmp_path, token_field):
    """401 + WWW-Authenticate: Bearer -> token from the realm -> retried with it; the token is
    reused for the blob, and not sent to the storage host the blob redirects to."""
    pack = Pack(80_000)
    manifest, blobs = pack.manifest("artifactType")
    token = "t0k-" + token_field
    with LocalServer() as registry_srv, LocalServer() as storage:
        challenge = f'Bearer realm="{registry_srv.url("/token")}",service="fake-registry",scope="repository:{REPO}:pull"'
        token_requests: list[RequestContext] = []

        def issue_token(ctx: RequestContext) -> None:
            token_requests.append(ctx)
            ctx.json({token_field: token, "expires_in": 300})

        def protected(respond):
            def handler(ctx: RequestContext) -> None:
                if ctx.headers.get("authorization") != f"Bearer {token}":
                    ctx.respond(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', content_type="application/json", headers={"WWW-Authenticate": challenge})
                else:
                    respond(ctx)

            return handler

        layer_digest = digest(pack.layer)
        registry_srv.route("GET", "/token", issue_token)
        registry_srv.route("GET", f"/v2/{REPO}/manifests/2", protected(lambda ctx: ctx.respond(200, manifest, content_type=OCI_MANIFEST)))
        storage_url = storage.add(f"/blobs/{layer_digest}", pack.layer)
        registry_srv.route("GET", f"/v2/{REPO}/blobs/{layer_digest}", protected(lambda ctx: ctx.respond(307, b"", headers={"Location": storage_url})))

        ref = f"127.0.0.1:{registry_srv.port}/{REPO}:2"
        outcome, store = install(tmp_path, ref)
        storage_auth = [r.headers.get("authorization") for r in storage.requests]
        statuses = [(r.path, r.status) for r in registry_srv.requests]
    assert_installed(tmp_path, outcome, store, pack, f"oci:{ref}@{digest(manifest)}")
    assert len(token_requests) == 1  # cached for the blob request
    assert token_requests[0].param("scope") == f"repository:{REPO}:pull"
    assert token_requests[0].param("service") == "fake-registry"
    assert token_requests[0].headers.get("authorization") is None  # anonymous
    assert statuses == [
        (f"/v2/{REPO}/manifests/2", 401),
        ("/token", 200),
        (f"/v2/{REPO}/manifests/2", 200),
        (f"/v2/{REPO}/blobs/{layer_digest}", 307),
    ]
    assert storage_auth == [None]  # the bearer token stayed with the registry's host


def test_token_endpoint_refusal_is_a_network_error(tmp_path):
    with LocalServer() as server:
        challenge = f'Bearer realm="{server.url("/token")}",service="fake",scope="repository:{REPO}:pull"'
        server.route("GET", "/token", lambda ctx: ctx.json({"errors": [{"code": "DENIED"}]}, status=403))
        server.route("GET", f"/v2/{REPO}/manifests/2", lambda ctx: ctx.respond(401, b"", headers={"WWW-Authenticate": challenge}))
        outcome, store = install(tmp_path, f"127.0.0.1:{server.port}/{REPO}:2")
    assert isinstance(outcome.error, NetworkError) and "token endpoint" in outcome.error.message and "403" in outcome.error.message
    assert_nothing_installed(tmp_path, store)
