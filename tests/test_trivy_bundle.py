"""The must-show: `devops-cp data bundle trivy-db` against a real registry, then sideload
into a fresh HOME, leaves db/trivy.db and db/metadata.json in the Trivy cache dir with
the bytes that were pushed.

The registry is Debian's `docker-registry` on 127.0.0.1 (as in test_oci.py). The test
pushes a Trivy-DB-like artifact (same media types as trivy-db:2, random trivy.db bytes)
as aquasec/trivy-db:2, and the config file's [mirrors] maps the built-in recipe's first
registry, mirror.gcr.io, to it: the recipe itself is the shipped one, unchanged. The
bundle is built and sideloaded through the CLI; the air-gapped side has a new HOME, no
config, no mirror and no trivy.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os

import pytest

from conftest import fresh_host
from support.oci_registry import digest, push
from executor.oci import OCI_EMPTY, OCI_MANIFEST
from sideload.reader import BundleReader, locate
from support.tarballs import trivy_db_tarball

DB_LAYER = "application/vnd.aquasec.trivy.db.layer.v1.tar+gzip"
TRIVY_CONFIG = "application/vnd.aquasec.trivy.config.v1+json"


def trivy_artifact(trivy_db: bytes, metadata: bytes, form: str) -> tuple[bytes, dict[str, bytes]]:
    """db.tar.gz (trivy.db + metadata.json) as the layer of an OCI manifest, in the oras 1.0
    form (artifact type in config.mediaType) or the oras 1.1 form (artifactType, empty config)."""
    layer, config = trivy_db_tarball(trivy_db, metadata), b"{}"
    manifest: dict = {"schemaVersion": 2, "mediaType": OCI_MANIFEST}
    if form == "config":
        manifest["config"] = {"mediaType": TRIVY_CONFIG, "digest": digest(config), "size": len(config)}
    else:
        manifest["artifactType"] = TRIVY_CONFIG
        manifest["config"] = {"mediaType": OCI_EMPTY, "digest": digest(config), "size": len(config), "data": base64.b64encode(config).decode()}
    manifest["layers"] = [{"mediaType": DB_LAYER, "digest": digest(layer), "size": len(layer), "annotations": {"org.opencontainers.image.title": "db.tar.gz"}}]
    return json.dumps(manifest).encode(), {digest(config): config, digest(layer): layer}


@pytest.mark.parametrize("form", ["config", "artifactType"])
def test_bundle_trivy_db_from_the_local_registry_then_sideload_into_a_fresh_home(cli, registry, isolated_env, tmp_path, monkeypatch, form):
    trivy_db = os.urandom(1_000_000)
    metadata = json.dumps({"Version": 2, "NextUpdate": "2030-01-01T06:00:00Z", "UpdatedAt": "2030-01-01T00:00:00Z", "DownloadedAt": ""}).encode()
    manifest, blobs = trivy_artifact(trivy_db, metadata, form)
    manifest_digest = push(registry, "aquasec/trivy-db", "2", manifest, blobs)  # the tag this test bundles
    isolated_env.write_config(f'[mirrors]\n"mirror.gcr.io" = "{registry}"\n')

    assert cli("keygen", "-o", str(tmp_path / "site"), "--no-passphrase").exit_code == 0
    out = tmp_path / "usb" / "trivy.tar.zst"
    out.parent.mkdir()
    result = cli("bundle", "trivy-db", "-o", str(out), "--key", str(tmp_path / "site.key"), "--progress", "none", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["packs"] == ["trivy-db"]
    with BundleReader(locate(out)) as reader:
        bundled = json.loads(reader.read_header()[0])
    assert bundled["packs"][0]["source"] == f"oci:mirror.gcr.io/aquasec/trivy-db:2@{manifest_digest}"
    assert bundled["packs"][0]["offline_steps"] == []
    assert sorted((f["path"], f["sha256"]) for f in bundled["files"]) == sorted(
        [("db/trivy.db", hashlib.sha256(trivy_db).hexdigest()), ("db/metadata.json", hashlib.sha256(metadata).hexdigest())]
    )
    assert not (isolated_env.cache / "trivy").exists()  # the online machine's own Trivy cache is untouched

    cache = fresh_host(monkeypatch, tmp_path / "air-gapped")
    result = cli("sideload", str(out), "--trust", str(tmp_path / "site.pub"), "--progress", "none", "--json")
    assert result.exit_code == 0, result.stderr
    trivy_cache = cache / "trivy"
    assert (trivy_cache / "db" / "trivy.db").read_bytes() == trivy_db
    assert (trivy_cache / "db" / "metadata.json").read_bytes() == metadata
    assert sorted(p.relative_to(trivy_cache).as_posix() for p in trivy_cache.rglob("*") if p.is_file()) == ["db/metadata.json", "db/trivy.db"]
    [outcome] = result.json()["results"]
    assert outcome["ok"] and outcome["record"]["source"] == f"bundle:{bundled['bundle_id']}"
    assert outcome["record"]["fetched_at"] == bundled["packs"][0]["fetched_at"]  # freshness travels with the data

    status = cli("status", "--json").json()
    assert [p["key"] for p in status["packs"]] == ["trivy-db"]
