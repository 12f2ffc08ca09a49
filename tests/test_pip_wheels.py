"""spaCy models as pip wheels: bundled as a verified file, pip-installed offline into the
interpreter the user names with --python.

The recipe under test is the built-in manifests/packs/spacy-en.toml itself, copied with
another id and, for the `sm` option, the checksum of a small wheel that the test writes
(a wheel is a zip with the package, METADATA, WHEEL and RECORD: no build step). The
config file's [mirrors] sends the recipe's GitHub release URL to a LocalServer on
127.0.0.1. The target interpreter is a fresh venv made with `python -m venv` (with pip;
pip works offline there because the recipe's pip step passes --no-index --no-deps).
The stand-in `spacy` is another small wheel of that name.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import fresh_host, read_manifest

from manifests.bundle import BundleManifest, PackEntry, parse_manifest, to_json
from manifests.catalog import builtin_dir
from manifests.errors import BundleStructureError

REAL_SM_CHECKSUM = "sha256:1932429db727d4bff3deed6b34cfc05df17794f4a52eeb26cf8928f7c1a0fb85"
RELEASES = "https://github.com/explosion/spacy-models/releases/download/"
WHEEL = "en_core_web_sm-3.8.0-py3-none-any.whl"
PIPELINE = "def load():\n    return 'a tiny English pipeline'\n"


# --- wheels and interpreters ---------------------------------------------------------------


def build_wheel(directory: Path, dist: str, version: str, files: dict[str, str]) -> Path:
    """A pure-Python wheel that pip installs: the files, then METADATA, WHEEL and RECORD."""
    info = f"{dist}-{version}.dist-info"
    contents = dict(files)
    contents[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\nSummary: test wheel\n"
    contents[f"{info}/WHEEL"] = "Wheel-Version: 1.0\nGenerator: devops-cp-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = []
    for name, text in contents.items():
        data = text.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    contents[f"{info}/RECORD"] = "\n".join(record + [f"{info}/RECORD,,"]) + "\n"
    path = directory / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in contents.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), text)
    return path


@pytest.fixture(scope="module")
def pristine_venv(tmp_path_factory) -> Path:
    """One `python -m venv` (with pip) per module; tests work on copies of it."""
    path = tmp_path_factory.mktemp("venv") / "pristine"
    result = subprocess.run([sys.executable, "-m", "venv", str(path)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"python -m venv with pip is not available here: {result.stderr.strip()[-500:]}")
    return path


@pytest.fixture
def venv_python(pristine_venv, tmp_path) -> Path:
    """A fresh venv's python, without spacy. (A venv copy works: `bin/python -m pip` finds its
    prefix from pyvenv.cfg beside it; only console-script shebangs would point at the original.)"""
    target = tmp_path / "target-venv"
    shutil.copytree(pristine_venv, target, symlinks=True)
    return target / "bin" / "python"


def run_in(python: Path, code: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True)


def add_fake_spacy(python: Path, tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path, "spacy", "3.8.0", {"spacy/__init__.py": "__version__ = '3.8.0'\n"})
    subprocess.run([str(python), "-m", "pip", "install", "--no-index", "--no-deps", "-q", str(wheel)], check=True, capture_output=True)


# --- the recipe: spacy-en.toml with the test wheel's checksum, fetched through [mirrors] ------------


@pytest.fixture
def spacy_pack(isolated_env, local_server, tmp_path) -> dict:
    wheel_dir = tmp_path / "wheels-upstream"
    wheel_dir.mkdir()
    wheel = build_wheel(wheel_dir, "en_core_web_sm", "3.8.0", {"en_core_web_sm/__init__.py": PIPELINE})
    assert wheel.name == WHEEL
    data = wheel.read_bytes()
    text = (builtin_dir() / "spacy-en.toml").read_text()
    assert text.count(REAL_SM_CHECKSUM) == 2  # [[install.sm]] and [[bundle.sm]]
    text = text.replace('id = "spacy-en"', 'id = "spacy-en-test"').replace(REAL_SM_CHECKSUM, "sha256:" + hashlib.sha256(data).hexdigest())
    (isolated_env.catalog / "spacy-en-test.toml").write_text(text)
    path = f"/spacy-models/en_core_web_sm-3.8.0/{WHEEL}"
    local_server.add(path, data)
    isolated_env.write_config(f'[mirrors]\n"{RELEASES}" = "{local_server.url("/spacy-models/")}"\n')
    return {"wheel": data, "path": path}






def make_bundle(cli, tmp_path: Path) -> tuple[Path, Path]:
    assert cli("keygen", "-o", str(tmp_path / "site"), "--no-passphrase").exit_code == 0
    out = tmp_path / "spacy.tar.zst"
    result = cli("bundle", "spacy-en-test", "-o", str(out), "--key", str(tmp_path / "site.key"), "--progress", "none")
    assert result.exit_code == 0, result.stderr
    return out, tmp_path / "site.pub"


# --- sideload ---------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["sideload", "install --source"])
def test_bundle_carries_the_wheel_and_sideload_pip_installs_it_into_the_named_python(cli, spacy_pack, venv_python, isolated_env, tmp_path, monkeypatch, how):
    out, pub = make_bundle(cli, tmp_path)  # the online machine needs no spacy: bundling only downloads
    manifest = read_manifest(out)
    [pack] = manifest["packs"]
    assert [(f["path"], f["sha256"]) for f in manifest["files"]] == [(f"wheels/{WHEEL}", hashlib.sha256(spacy_pack["wheel"]).hexdigest())]
    assert pack["python_packages"] == ["spacy"]
    assert pack["offline_steps"] == [{"type": "tool_command", "command": ["{python}", "-m", "pip", "install", "--no-index", "--no-deps", f"{{data_dir}}/wheels/{WHEEL}"]}]

    cache = fresh_host(monkeypatch, tmp_path / "offline", recipes=(isolated_env.catalog / "spacy-en-test.toml",))  # its pip step is the host's own
    if how == "sideload":
        command = ["sideload", str(out), "--trust", str(pub)]
    else:
        assert cli("trust", "add", str(pub)).exit_code == 0
        command = ["install", "spacy-en-test", "--source", str(out)]
    command += ["--python", str(venv_python), "--progress", "none"]

    # spacy is missing in the target interpreter: a clear error, and nothing is placed.
    refused = cli(*command)
    assert refused.exit_code == 7, refused.stderr
    assert "spacy" in refused.stderr and str(venv_python) in refused.stderr and "--python" in refused.stderr
    assert not (cache / "spacy").exists()
    assert not (tmp_path / "offline" / "home" / ".local" / "state" / "devops-cp" / "records").exists()

    add_fake_spacy(venv_python, tmp_path)
    result = cli(*command)
    assert result.exit_code == 0, result.stderr
    assert (cache / "spacy" / "wheels" / WHEEL).read_bytes() == spacy_pack["wheel"]
    loaded = run_in(venv_python, "import spacy, en_core_web_sm; print(en_core_web_sm.load())")
    assert loaded.returncode == 0 and loaded.stdout.strip() == "a tiny English pipeline", loaded.stderr
    assert importlib.util.find_spec("en_core_web_sm") is None  # went into the named interpreter, not this one


def test_direct_install_downloads_then_pip_installs_into_the_named_python(cli, spacy_pack, venv_python, local_server, isolated_env, tmp_path):
    refused = cli("install", "spacy-en-test", "--python", str(venv_python), "--progress", "none")
    assert refused.exit_code == 7 and "spacy" in refused.stderr and str(venv_python) in refused.stderr
    assert [r for r in local_server.requests if r.path == spacy_pack["path"]] == []  # decided before the first byte

    add_fake_spacy(venv_python, tmp_path)
    result = cli("install", "spacy-en-test", "-c", "model_size=sm", "--python", str(venv_python), "--progress", "none", "--json")
    assert result.exit_code == 0, result.stderr
    [outcome] = result.json()["results"]
    assert [f["path"] for f in outcome["record"]["files"]] == [f"wheels/{WHEEL}"]
    assert (isolated_env.cache / "spacy" / "wheels" / WHEEL).read_bytes() == spacy_pack["wheel"]
    loaded = run_in(venv_python, "import en_core_web_sm; print(en_core_web_sm.load())")
    assert loaded.returncode == 0 and loaded.stdout.strip() == "a tiny English pipeline", loaded.stderr


def test_an_interpreter_that_does_not_exist_is_a_tool_error(cli, spacy_pack, tmp_path):
    missing = tmp_path / "no-such-venv" / "bin" / "python"
    result = cli("install", "spacy-en-test", "--python", str(missing), "--progress", "none")
    assert result.exit_code == 7 and str(missing) in result.stderr


def test_data_only_packs_do_not_check_python_packages(cli, write_recipe, local_server, isolated_env, tmp_path):
    """nltk-data lists nltk in packages_pip, but runs no {python} step: nothing to check."""
    url = local_server.add("/punkt.bin", b"tokens")
    write_recipe("data-for-nltk", [{"type": "download", "url": url, "dest": "punkt.bin", "checksum": "sha256:" + hashlib.sha256(b"tokens").hexdigest()}], requires={"packages_pip": ["no-such-package-xyz"]})
    result = cli("install", "data-for-nltk", "--python", str(tmp_path / "nonexistent-python"), "--progress", "none")
    assert result.exit_code == 0, result.stderr


# --- the manifest field -------------------------------------------------------------------------


def _manifest(python_packages: tuple[str, ...]) -> BundleManifest:
    pack = PackEntry(
        key="spacy-en@model_size=sm", id="spacy-en", label="spaCy", data_type="language_model", choices={"model_size": "sm"},
        update_schedule="manual", fetched_at="2030-01-01T00:00:00Z", offline_steps=(), source="x", checksum_verified=True,
        tool_hint="", python_packages=python_packages,
    )  # fmt: skip
    return BundleManifest(bundle_id="b" * 32, created="2030-01-01T00:00:00Z", expires=None, tool_version="0.1.0", signer_key_id=None, packs=(pack,), files=())


def test_python_packages_is_optional_in_the_manifest():
    """Written only when a pack needs some, so manifests of other packs read as before."""
    plain = to_json(_manifest(()))
    assert b"python_packages" not in plain and parse_manifest(plain).packs[0].python_packages == ()
    spacy = to_json(_manifest(("spacy", "spacy-curated-transformers")))
    assert parse_manifest(spacy).packs[0].python_packages == ("spacy", "spacy-curated-transformers")


@pytest.mark.parametrize("bad", [["-r/etc/passwd"], [""], [3], "spacy"])
def test_python_packages_must_be_package_names(bad):
    doc = json.loads(to_json(_manifest(("spacy",))))
    doc["packs"][0]["python_packages"] = bad
    with pytest.raises(BundleStructureError, match="python_packages"):
        parse_manifest(json.dumps(doc).encode())
