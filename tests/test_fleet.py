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
