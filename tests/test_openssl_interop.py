"""Standard tools check our bundles: OpenSSL 3 verifies the signatures, `sha256sum -c` the parts.

The commands are the README's own lines (its air-gapped section), run with sh against
bundles that `devops-cp data bundle` wrote (one whole, one split into parts), with the
manifest and its signature taken out of the archive by tar and zstd.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import REPO
from devops_cp.demo import write_sample_catalog
from support.localserver import LocalServer

CLI = [sys.executable, "-c", "from devops_cp.cli import main; main()"]
TOOLS = ("openssl", "sha256sum", "tar", "zstd")
pytestmark = pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS), reason=f"needs {', '.join(TOOLS)} on PATH")


def readme_line(*needles: str) -> str:
    """The one line of the README's air-gapped block that holds every needle."""
    section = (REPO / "README.md").read_text().split("## Air-gapped hosts", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if all(n in line for n in needles)]
    assert len(lines) == 1, (needles, lines)
    return lines[0].strip()


VERIFY_MANIFEST = readme_line("openssl pkeyutl -verify", '-in "$DIR/manifest.json"')
VERIFY_LIST = readme_line("openssl pkeyutl -verify", '-in "$B.sha256"')
CHECK_SUMS = readme_line("sha256sum -c")


@dataclass
class Bundles:
    root: Path
    pub: Path
    whole: Path
    split: Path
    env: dict[str, str]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> Bundles:
    root = tmp_path_factory.mktemp("openssl")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "DEVOPS_CP_")) and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env.update(HOME=str(root / "home"), DEVOPS_CP_CATALOG=str(root / "catalog"), DEVOPS_CP_NO_GPU="1")
    with LocalServer() as server:
        write_sample_catalog(server, root / "catalog", 300_000)
        run = lambda *args: subprocess.run([*CLI, "data", *args], env=env, cwd=root, capture_output=True, text=True, check=True)  # noqa: E731
        run("keygen", "-o", str(root / "site"), "--no-passphrase")
        for name, extra in (("whole", ()), ("split", ("--split-size", "100K"))):
            (root / name).mkdir()
            run("bundle", "sample-model", "sample-db", "-o", str(root / name / "b.tar.zst"), "--key", str(root / "site.key"), "--progress", "none", *extra)
    return Bundles(root, root / "site.pub", root / "whole" / "b.tar.zst", root / "split" / "b.tar.zst", env)


def sh(command: str, cwd: Path, **variables: str) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C", **variables}
    return subprocess.run(["sh", "-c", command], cwd=cwd, env=env, capture_output=True, text=True)


def extract_header(bundle: Path, into: Path, split: bool) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    if split:
        command = 'cat "$B".[0-9][0-9][0-9] | zstd -dc | tar -xf - -C "$DIR" --occurrence manifest.json manifest.json.sig'
    else:
        command = 'tar -I zstd -xf "$B" -C "$DIR" manifest.json manifest.json.sig'
    result = sh(command, bundle.parent, B=bundle.name, DIR=str(into))
    assert result.returncode == 0, result.stderr
    return into


def verify_manifest(directory: Path, key: Path) -> subprocess.CompletedProcess:
    return sh(VERIFY_MANIFEST, directory, KEY=str(key), DIR=str(directory))


@pytest.mark.parametrize("split", [False, True], ids=["whole", "split"])
def test_readme_openssl_command_accepts_the_manifest_of_a_real_bundle(bundles, tmp_path, split):
    directory = extract_header(bundles.split if split else bundles.whole, tmp_path / "x", split)
    assert (directory / "manifest.json.sig").stat().st_size == 64  # raw Ed25519
    result = verify_manifest(directory, bundles.pub)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Signature Verified Successfully" in result.stdout


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_readme_openssl_command_rejects_a_manifest_with_one_byte_changed(bundles, tmp_path, where):
    directory = extract_header(bundles.whole, tmp_path / "x", split=False)
    manifest = directory / "manifest.json"
    data = bytearray(manifest.read_bytes())
    offset = {"first": 0, "middle": len(data) // 2, "last": len(data) - 1}[where]
    data[offset] ^= 0x01
    manifest.write_bytes(bytes(data))
    result = verify_manifest(directory, bundles.pub)
    assert result.returncode != 0
    assert "Signature Verification Failure" in result.stdout + result.stderr


def test_readme_openssl_command_rejects_a_damaged_signature_and_another_key(bundles, tmp_path):
    directory = extract_header(bundles.whole, tmp_path / "x", split=False)
    sig = directory / "manifest.json.sig"
    good = sig.read_bytes()
    sig.write_bytes(bytes([good[0] ^ 0x80]) + good[1:])
    assert verify_manifest(directory, bundles.pub).returncode != 0
    sig.write_bytes(good)
    subprocess.run([*CLI, "data", "keygen", "-o", str(tmp_path / "other"), "--no-passphrase"], env=bundles.env, check=True, capture_output=True)
    assert verify_manifest(directory, tmp_path / "other.pub").returncode != 0
    assert verify_manifest(directory, bundles.pub).returncode == 0


def test_checksum_list_and_parts_index_signatures_verify_with_openssl(bundles, tmp_path):
    stick = tmp_path / "stick"
    shutil.copytree(bundles.split.parent, stick)
    result = sh(VERIFY_LIST, stick, B="b.tar.zst", KEY=str(bundles.pub))
    assert result.returncode == 0 and "Signature Verified Successfully" in result.stdout, result.stderr
    index = sh('openssl pkeyutl -verify -pubin -inkey "$KEY" -rawin -in "$B.parts.json" -sigfile "$B.parts.json.sig"', stick, B="b.tar.zst", KEY=str(bundles.pub))
    assert index.returncode == 0, index.stderr
    listing = stick / "b.tar.zst.sha256"
    lines = listing.read_text().splitlines(keepends=True)
    listing.write_text("".join(lines[1:]))  # a part dropped from the list: the signature no longer matches
    assert sh(VERIFY_LIST, stick, B="b.tar.zst", KEY=str(bundles.pub)).returncode != 0


def test_sha256sum_accepts_every_part_of_a_split_bundle(bundles):
    parts = sorted(p.name for p in bundles.split.parent.glob("b.tar.zst.[0-9][0-9][0-9]"))
    assert len(parts) >= 3
    result = sh(CHECK_SUMS, bundles.split.parent, B="b.tar.zst")
    assert result.returncode == 0, result.stdout + result.stderr
    assert [line for line in result.stdout.splitlines() if line.endswith(": OK")] == [f"{p}: OK" for p in parts]


@pytest.mark.parametrize("damage", ["flipped byte", "truncated", "missing"])
def test_sha256sum_rejects_a_damaged_part(bundles, tmp_path, damage):
    stick = tmp_path / "stick"
    shutil.copytree(bundles.split.parent, stick)
    part = stick / "b.tar.zst.002"
    if damage == "flipped byte":
        data = bytearray(part.read_bytes())
        data[1234] ^= 0x40
        part.write_bytes(bytes(data))
    elif damage == "truncated":
        part.write_bytes(part.read_bytes()[:-1])
    else:
        part.unlink()
    result = sh(CHECK_SUMS, stick, B="b.tar.zst")
    assert result.returncode != 0
    assert re.search(r"^b\.tar\.zst\.002: FAILED", result.stdout, re.M), result.stdout + result.stderr
    assert "b.tar.zst.001: OK" in result.stdout


def test_sha256sum_checks_a_whole_bundle_too(bundles):
    result = sh(CHECK_SUMS, bundles.whole.parent, B="b.tar.zst")
    assert result.returncode == 0 and result.stdout.strip() == "b.tar.zst: OK", result.stdout + result.stderr
