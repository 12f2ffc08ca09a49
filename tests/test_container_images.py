"""The built-in container-image recipe: `docker pull` online, `docker pull` + `docker save`
when bundling, `docker load -i` on the air-gapped host.

No Docker engine runs on our machines (and CI has none), so these tests put a stand-in
`docker` executable first on PATH: a small Python script that records every call's
arguments, writes a small tar for `save -o FILE`, and for `load -i FILE` records the
sha256 of the file it was given. The real `docker` CLI (if any) is never called.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from pathlib import Path

import pytest

from conftest import fresh_host, read_manifest

from manifests.catalog import load_catalog
from manifests.hardware import Hardware
from manifests.plan import resolve

FAKE_DOCKER = """#!{python}
import hashlib, io, json, os, sys, tarfile
args = sys.argv[1:]
record = {"args": args}
if os.environ.get("FAKE_DOCKER_FAIL") == args[0]:
    print("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?", flush=True)
    sys.exit(1)
if args[0] == "pull":
    print(f"Status: Downloaded newer image for {args[1]}", flush=True)
elif args[0] == "save":
    out, image = args[args.index("-o") + 1], args[-1]
    with tarfile.open(out, "w") as tar:
        for name, data in (("manifest.json", json.dumps([{"RepoTags": [image]}]).encode()), ("layer.tar", os.urandom(50_000))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    record["sha256"] = hashlib.sha256(open(out, "rb").read()).hexdigest()
elif args[0] == "load":
    path = args[args.index("-i") + 1]
    data = open(path, "rb").read()
    record["sha256"] = hashlib.sha256(data).hexdigest()
    with tarfile.open(path) as tar:
        tags = json.load(tar.extractfile("manifest.json"))[0]["RepoTags"]
    print("Loaded image: " + tags[0], flush=True)
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps(record) + "\\n")
"""


@pytest.fixture
def docker(tmp_path, monkeypatch) -> Path:
    """The stand-in docker, first on PATH; returns its call log."""
    bin_dir = tmp_path / "docker-bin"
    bin_dir.mkdir()
    tool = bin_dir / "docker"
    tool.write_text(FAKE_DOCKER.replace("{python}", sys.executable))
    tool.chmod(0o755)
    log = tmp_path / "docker-calls.jsonl"
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(log))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


def calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []






def make_bundle(cli, tmp_path: Path, pack: str) -> tuple[Path, Path]:
    assert cli("keygen", "-o", str(tmp_path / "site"), "--no-passphrase").exit_code == 0
    out = tmp_path / "images.tar.zst"
    result = cli("bundle", pack, "-o", str(out), "--key", str(tmp_path / "site.key"), "--progress", "none")
    assert result.exit_code == 0, result.stderr
    return out, tmp_path / "site.pub"


RECIPE = load_catalog().get("container-image")
REFS = {"alpine-3.20": "alpine:3.20", "debian-bookworm-slim": "debian:bookworm-slim", "python-3.12-slim": "python:3.12-slim"}


def test_the_recipe_names_safe_files_and_real_refs():
    assert {o.value for o in RECIPE.choices[0].options} == set(REFS) and RECIPE.choices[0].default.value == "alpine-3.20"
    for value, ref in REFS.items():
        direct = resolve(RECIPE, {"image": value}, Hardware(), mode="install")
        assert [s.command for s in direct.steps] == [("docker", "pull", ref)] and direct.offline_steps == ()
        bundled = resolve(RECIPE, {"image": value}, Hardware(), mode="bundle")
        pull, save = bundled.steps
        assert pull.command == ("docker", "pull", ref)
        assert save.command == ("docker", "save", "-o", f"{{data_dir}}/{value}.tar", ref) and save.produces == (f"{value}.tar",)
        assert re.fullmatch(r"[A-Za-z0-9._-]+\.tar", save.produces[0])  # ':' and '/' stay in the ref, out of file names
        assert [s.command for s in bundled.offline_steps] == [("docker", "load", "-i", f"{{data_dir}}/{value}.tar")]
        assert ":" not in bundled.key.partition("@")[2]  # the record key (a file name) is safe too


def test_direct_install_pulls(cli, docker, isolated_env):
    result = cli("install", "container-image", "-c", "image=debian-bookworm-slim", "--progress", "none", "--json")
    assert result.exit_code == 0, result.stderr
    assert [c["args"] for c in calls(docker)] == [["pull", "debian:bookworm-slim"]]
    assert isolated_env.record("container-image@image=debian-bookworm-slim")["files"] == []  # the image lives in Docker


def test_bundle_saves_the_image_and_sideload_loads_the_same_bytes(cli, docker, isolated_env, tmp_path, monkeypatch):
    out, pub = make_bundle(cli, tmp_path, "container-image:image=python-3.12-slim")
    pull, save = calls(docker)
    assert pull["args"] == ["pull", "python:3.12-slim"]
    assert save["args"][:2] == ["save", "-o"] and save["args"][3] == "python:3.12-slim"
    staged = Path(save["args"][2])
    assert staged.name == "python-3.12-slim.tar" and staged.is_relative_to(isolated_env.cache / "devops-cp" / "bundle-staging")
    manifest = read_manifest(out)
    [pack] = manifest["packs"]
    [entry] = manifest["files"]
    assert (entry["path"], entry["sha256"]) == ("python-3.12-slim.tar", save["sha256"])
    assert pack["offline_steps"] == [{"type": "tool_command", "command": ["docker", "load", "-i", "{data_dir}/python-3.12-slim.tar"]}]

    cache = fresh_host(monkeypatch, tmp_path / "offline")
    result = cli("sideload", str(out), "--trust", str(pub), "--progress", "plain")
    assert result.exit_code == 0, result.stderr
    assert "Loaded image: python:3.12-slim" in result.stderr
    tarball = cache / "devops-cp" / "images" / "python-3.12-slim.tar"
    load = calls(docker)[-1]
    assert load["args"] == ["load", "-i", str(tarball)]
    assert load["sha256"] == save["sha256"] == hashlib.sha256(tarball.read_bytes()).hexdigest()


def test_sideload_without_docker_refuses_before_placing_anything(cli, docker, tmp_path, monkeypatch):
    out, pub = make_bundle(cli, tmp_path, "container-image")
    no_docker = tmp_path / "empty-bin"
    no_docker.mkdir()
    monkeypatch.setenv("PATH", str(no_docker))  # no docker at all (this machine has the real CLI in /usr/local/bin)
    cache = fresh_host(monkeypatch, tmp_path / "offline")
    result = cli("sideload", str(out), "--trust", str(pub), "--progress", "none")
    assert result.exit_code == 7 and "docker" in result.stderr and "not on PATH" in result.stderr
    assert not (cache / "devops-cp" / "images").exists()


def test_bundle_with_a_failing_docker_writes_no_bundle(cli, docker, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_DOCKER_FAIL", "save")
    assert cli("keygen", "-o", str(tmp_path / "site"), "--no-passphrase").exit_code == 0
    result = cli("bundle", "container-image", "-o", str(tmp_path / "x.tar.zst"), "--key", str(tmp_path / "site.key"), "--progress", "none")
    assert result.exit_code == 7 and "docker save" in result.stderr and "Docker daemon" in result.stderr
    assert list(tmp_path.glob("x.tar.zst*")) == []
