"""`bundle --include-tool`: the stick is all an air-gapped host needs.

Two real bundles of the sample packs (served from 127.0.0.1), built by the CLI in
subprocesses: one whole archive with explicit --target-python/--target-platform, one
split into parts with the defaults. The dependency wheels come from `pip download`;
where this machine has no package index the network tests skip, saying so.

Then, in fresh virtual environments with pip cut off from every index
(`--no-index`, PIP_NO_INDEX=1, PIP_INDEX_URL and HTTP(S)_PROXY pointing at a closed
port, no pip.conf), using only files from the bundle:
- the README's air-gapped steps, run as written, end with a working `devops-cp` that
  sideloads the bundle's packs into a fresh HOME;
- the bootstrap script beside the split bundle does the same, writes nothing outside
  its directory but the sideloaded data, and stops at the first failed check.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import zstandard

from conftest import REPO, sha256
from devops_cp.demo import sample_model, write_sample_catalog
from support.localserver import LocalServer

ORIGINAL_ENV = dict(os.environ)  # taken at import, before any fixture edits os.environ
MODEL_SIZE = 150_000
CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens; any attempt to use it fails
CLI = [sys.executable, "-c", "from devops_cp.cli import main; main()"]
PY = f"{sys.version_info.major}.{sys.version_info.minor}"


def _x86_64_glibc() -> bool:
    return sys.platform == "linux" and platform.machine() == "x86_64" and platform.libc_ver()[0] == "glibc"


def online_env(home: Path, catalog: Path) -> dict[str, str]:
    """The online machine: this process's environment (index, proxies) with its own HOME."""
    env = {k: v for k, v in ORIGINAL_ENV.items() if not k.startswith(("XDG_", "DEVOPS_CP_"))}
    no_proxy = ",".join(filter(None, [env.get("NO_PROXY", ""), "127.0.0.1,localhost"]))
    env.update(HOME=str(home), DEVOPS_CP_CATALOG=str(catalog), DEVOPS_CP_NO_GPU="1", NO_PROXY=no_proxy, no_proxy=no_proxy)
    # A new HOME hides the user's pip.conf, which may name this site's index mirror: keep it.
    config_home = Path(ORIGINAL_ENV.get("XDG_CONFIG_HOME") or Path(ORIGINAL_ENV.get("HOME", "/nonexistent")) / ".config")
    if "PIP_CONFIG_FILE" not in env and (config_home / "pip" / "pip.conf").is_file():
        env["PIP_CONFIG_FILE"] = str(config_home / "pip" / "pip.conf")
    home.mkdir(parents=True, exist_ok=True)
    return env


def offline_env(home: Path, bin_dir: Path) -> dict[str, str]:
    """The air-gapped host: a bare environment where every index and proxy is a closed port."""
    home.mkdir(parents=True, exist_ok=True)
    return {
        "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "DEVOPS_CP_NO_GPU": "1",
        "PIP_NO_INDEX": "1",
        "PIP_INDEX_URL": CLOSED + "/simple",
        "PIP_EXTRA_INDEX_URL": CLOSED + "/extra",
        "HTTP_PROXY": CLOSED,
        "HTTPS_PROXY": CLOSED,
        "http_proxy": CLOSED,
        "https_proxy": CLOSED,
    }


@dataclass
class Site:
    root: Path
    pub: Path
    whole: Path  # stick.tar.zst, one archive, explicit targets
    split: Path  # split/stick.tar.zst.001 ... with the defaults
    bin_dir: Path  # python3 -> this interpreter, nothing else
    served: dict[str, bytes]


def _start_bundle(env: dict, out: Path, key: Path, *extra: str) -> subprocess.Popen:
    out.parent.mkdir(parents=True, exist_ok=True)
    args = [*CLI, "data", "bundle", "sample-model", "sample-db", "-o", str(out), "--key", str(key), "--include-tool", "--yes", "--progress", "none", *extra]
    return subprocess.Popen(args, env=env, cwd=out.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> None:
    stdout, stderr = proc.communicate(timeout=240)
    if proc.returncode == 7 and "pip download" in stderr:
        pytest.skip(f"no package index reachable for `pip download` of the tool's dependencies: {stderr.strip().splitlines()[-3:]}")
    assert proc.returncode == 0, stdout + stderr


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Site:
    root = tmp_path_factory.mktemp("include-tool")
    catalog = root / "catalog"
    with LocalServer() as server:
        write_sample_catalog(server, catalog, MODEL_SIZE)
        env = online_env(root / "online-home", catalog)
        subprocess.run([*CLI, "data", "keygen", "-o", str(root / "site"), "--no-passphrase"], env=env, check=True, capture_output=True)
        key = root / "site.key"
        targets = ["--target-python", PY] + (["--target-platform", "manylinux_2_17_x86_64"] if _x86_64_glibc() else [])
        # Both at once, each with its own HOME (staging): the tool wheel build and pip download dominate.
        whole = _start_bundle(env, root / "whole" / "stick.tar.zst", key, *targets)
        split = _start_bundle(online_env(root / "online-home-2", catalog), root / "split" / "stick.tar.zst", key, "--split-size", "2M")
        _finish(whole)
        _finish(split)
    bin_dir = root / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(getattr(sys, "_base_executable", None) or sys.executable)
    served = {"models/sample-model.bin": sample_model(MODEL_SIZE)}
    return Site(root, root / "site.pub", root / "whole" / "stick.tar.zst", root / "split" / "stick.tar.zst", bin_dir, served)


def _inspect(site: Site, bundle: Path) -> dict:
    env = online_env(site.root / "inspect-home", site.root / "catalog")
    result = subprocess.run([*CLI, "data", "inspect", str(bundle), "--trust", str(site.pub), "--json"], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _tool_files(doc: dict) -> dict[str, str]:
    return {f["path"]: f["sha256"] for f in doc["files"] if f["pack"] == "devops-cp-tool"}


def _requirement_names(dist_name: str) -> set[str]:
    names = set()
    for req in importlib.metadata.distribution(dist_name).requires or []:
        if "extra ==" in req:
            continue
        names.add(re.split(r"[\s<>=!~;\[(]", req, maxsplit=1)[0].lower().replace("_", "-"))
    return names


def _wheel_dist(name: str) -> str:
    return name.split("-")[0].lower().replace("_", "-")


# --- what the bundle carries ----------------------------------------------------------------


def test_manifest_lists_the_tool_and_every_dependency_wheel_with_its_sha256(site):
    doc = _inspect(site, site.whole)
    assert doc["trusted"] is True
    tool_pack = next(p for p in doc["packs"] if p["id"] == "devops-cp-tool")
    assert tool_pack["data_type"] == "tool_wheels" and tool_pack["choices"]["python"] == PY
    wheels = _tool_files(doc)
    assert all(name.endswith(".whl") for name in wheels)
    dists = {_wheel_dist(name) for name in wheels}
    assert "devops-cp-data" in dists
    assert _requirement_names("devops-cp-data") <= dists, "every runtime dependency has a wheel"
    # The members under tool/ are exactly those wheels, byte for byte as the signed manifest says.
    found = _tool_members(site.whole)
    assert {name: hashlib.sha256(data).hexdigest() for name, data in found.items()} == {f"tool/{name}": digest for name, digest in wheels.items()}
    # The tool's own wheel: its code, its data files and the console script's entry point.
    own = next(name for name in wheels if _wheel_dist(name) == "devops-cp-data")
    with zipfile.ZipFile(io.BytesIO(found[f"tool/{own}"])) as zf:
        names = set(zf.namelist())
        entry_points = next(zf.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert {"devops_cp/cli.py", "bundler/tool_wheels.py", "manifests/packs/whisper-model.toml"} <= names
    assert "devops-cp = devops_cp.cli:main" in entry_points


def _tool_members(path: Path) -> dict[str, bytes]:
    with open(path, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True) as stream:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            return {m.name: tar.extractfile(m).read() for m in tar if m.name.startswith("tool/")}


def test_bootstrap_script_sits_beside_the_bundle_in_the_signed_checksum_list(site):
    script = site.split.with_name("stick.tar.zst.bootstrap.sh")
    listed = dict(reversed(line.split("  ", 1)) for line in site.split.with_name("stick.tar.zst.sha256").read_text().splitlines())
    assert listed["stick.tar.zst.bootstrap.sh"] == sha256(script.read_bytes())
    assert sorted(n for n in listed if n != "stick.tar.zst.bootstrap.sh") == sorted(p.name for p in site.split.parent.glob("stick.tar.zst.[0-9][0-9][0-9]"))
    env = online_env(site.root / "script-home", site.root / "catalog")
    printed = subprocess.run([*CLI, "data", "bootstrap-script", str(site.split.with_name("stick.tar.zst.002")), "--trust", str(site.pub)], env=env, capture_output=True)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == script.read_bytes(), "the command prints the very script written at bundle time"
    lint = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stderr


def test_sideload_verifies_the_wheels_but_never_installs_them_as_data(site, cli, isolated_env):
    result = cli("sideload", str(site.whole), "--trust", str(site.pub), "--json", "--progress", "none")
    assert result.exit_code == 0, result.stderr
    assert sorted(r["pack"] for r in result.json()["results"]) == ["sample-db", "sample-model"]
    assert not any("whl" in p.name for p in isolated_env.home.rglob("*"))
    refused = cli("sideload", str(site.whole), "--trust", str(site.pub), "--pack", "devops-cp-tool")
    assert refused.exit_code == 2 and "wheels" in refused.stderr


# --- the air-gapped host ---------------------------------------------------------------------


def _readme_steps() -> tuple[str, str]:
    """The README's air-gapped block: its first line (the variables) and the commands after it."""
    section = (REPO / "README.md").read_text().split("## Air-gapped hosts", 1)[1].split("\n## ", 1)[0]
    block = next(b for b in re.findall(r"```sh\n(.*?)```", section, re.S) if "install --no-index" in b)
    first, rest = block.split("\n", 1)
    assert first.startswith("B=") and "KEY=" in first and "DIR=" in first
    return first, rest


def _run_sh(script: str, env: dict, cwd: Path, *args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-eux", "-c", script, "sh", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(directory.rglob("*"))}


def _assert_sideloaded(home: Path, site: Site) -> None:
    samples = home / ".local" / "share" / "devops-cp" / "samples"
    assert (samples / "models" / "sample-model.bin").read_bytes() == site.served["models/sample-model.bin"]
    assert (samples / "db" / "advisories.json").is_file()
    records = home / ".local" / "state" / "devops-cp" / "records"
    assert {p.stem.split("@")[0] for p in records.glob("*.json")} == {"sample-model", "sample-db"}


def test_readme_air_gapped_steps_install_the_tool_with_no_index_and_sideload(site):
    _, commands = _readme_steps()
    work = site.root / "readme-host"
    tool_dir, home = work / "opt-devops-cp", work / "home"
    env = offline_env(home, site.bin_dir)
    env.update(B=site.whole.name, KEY=str(site.pub), DIR=str(tool_dir))
    before = _snapshot(site.whole.parent)
    result = _run_sh(commands, env, site.whole.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Signature Verified Successfully" in result.stdout
    assert f"{site.whole.name}: OK" in result.stdout
    assert _snapshot(site.whole.parent) == before, "the stick is read, never written"
    venv_python = tool_dir / "venv" / "bin" / "python"
    version = subprocess.run([str(tool_dir / "venv" / "bin" / "devops-cp"), "--version"], env=env, capture_output=True, text=True)
    assert version.returncode == 0 and "0.1.0" in version.stdout
    where = subprocess.run([str(venv_python), "-c", "import devops_cp, zstandard, cryptography; print(devops_cp.__file__)"], env=env, cwd=work, capture_output=True, text=True)
    assert where.returncode == 0 and where.stdout.startswith(str(tool_dir / "venv")), where.stdout + where.stderr
    check = subprocess.run([str(venv_python), "-m", "pip", "check"], env=env, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr  # every runtime dependency is there
    _assert_sideloaded(home, site)
    _rebuilt_wheel_matches_the_bundled_one(site, venv_python, env, work, tool_dir)


def _rebuilt_wheel_matches_the_bundled_one(site: Site, venv_python: Path, env: dict, work: Path, tool_dir: Path) -> None:
    """The venv holds a plain (not editable) install: rebuilding from its RECORD gives the same wheel."""
    out = work / "rebuilt"
    code = "import sys; from pathlib import Path; from bundler.tool_wheels import build_tool_wheel; print(build_tool_wheel(Path(sys.argv[1])))"
    built = subprocess.run([str(venv_python), "-c", code, str(out)], env=env, cwd=work, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    rebuilt = Path(built.stdout.strip())
    original = next((tool_dir / "tool").glob("devops_cp_data-*.whl"))
    assert rebuilt.name == original.name
    assert _wheel_contents(rebuilt) == _wheel_contents(original)
    target = work / "rebuilt-install"
    install = subprocess.run([str(venv_python), "-m", "pip", "install", "--no-index", "--no-deps", "--target", str(target), str(rebuilt)], env={**env, "PIP_CONFIG_FILE": os.devnull}, capture_output=True, text=True)
    assert install.returncode == 0, install.stdout + install.stderr
    assert (target / "devops_cp" / "cli.py").is_file()


def _wheel_contents(path: Path) -> dict[str, str]:
    with zipfile.ZipFile(path) as zf:
        return {n: hashlib.sha256(zf.read(n)).hexdigest() for n in zf.namelist() if not n.endswith(("/RECORD", "/WHEEL"))}


def test_bootstrap_script_installs_the_tool_and_sideloads_touching_nothing_else(site):
    work = site.root / "bootstrap-host"
    home, tool_dir = work / "home", work / "tool dir"  # a space in the name, as operators do
    env = offline_env(home, site.bin_dir)
    bundle_dir = site.split.parent
    before = _snapshot(bundle_dir)
    result = subprocess.run(["sh", str(bundle_dir / "stick.tar.zst.bootstrap.sh"), str(tool_dir), str(site.pub), "--progress", "none"], env=env, cwd=work, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "devops-cp, version 0.1.0" in result.stderr
    assert _snapshot(bundle_dir) == before
    _assert_sideloaded(home, site)
    # Outside the tool's directory: only the sideloaded data and its records.
    assert sorted(p.name for p in work.iterdir()) == ["home", "tool dir"]
    outside = {str(p.relative_to(home)) for p in home.rglob("*") if p.is_file()}
    assert all(p.startswith((".local/share/devops-cp/samples/", ".local/state/devops-cp/")) for p in outside), outside
    assert sorted(p.name for p in tool_dir.iterdir()) == ["manifest.json", "manifest.json.sig", "tool", "venv"]


@pytest.fixture
def stick_copy(site, tmp_path) -> Path:
    copy = tmp_path / "stick"
    shutil.copytree(site.split.parent, copy)
    return copy / "stick.tar.zst"


@pytest.mark.parametrize("damage", ["part", "checksum list", "key"])
def test_bootstrap_script_stops_at_the_first_failed_check(site, stick_copy, tmp_path, damage):
    pub = site.pub
    if damage == "part":
        part = stick_copy.with_name("stick.tar.zst.003")
        data = bytearray(part.read_bytes())
        data[len(data) // 2] ^= 0x01
        part.write_bytes(bytes(data))
    elif damage == "checksum list":
        listing = stick_copy.with_name("stick.tar.zst.sha256")
        listing.write_text(listing.read_text().replace("stick.tar.zst.002", "stick.tar.zst.00X", 1))
    else:
        subprocess.run([*CLI, "data", "keygen", "-o", str(tmp_path / "stranger"), "--no-passphrase"], check=True, capture_output=True, env=online_env(tmp_path / "h", tmp_path))
        pub = tmp_path / "stranger.pub"
    tool_dir = tmp_path / "tool"
    result = subprocess.run(["sh", str(stick_copy.with_name("stick.tar.zst.bootstrap.sh")), str(tool_dir), str(pub)], env=offline_env(tmp_path / "home", site.bin_dir), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stderr
    expected = "does not match" if damage == "part" else "is not signed by that key"
    assert expected in result.stderr
    assert not (tool_dir / "venv").exists() and not (tool_dir / "tool").exists()
    assert not (tmp_path / "home" / ".local").exists()


# --- no network needed ------------------------------------------------------------------------


def test_include_tool_needs_a_signed_bundle_and_targets_need_include_tool(cli, serve_pack):
    serve_pack("p", b"x" * 100)
    result = cli("bundle", "p", "-o", "out.tar.zst", "--unsigned", "--include-tool")
    assert result.exit_code == 2 and "signed" in result.stderr
    result = cli("bundle", "p", "-o", "out.tar.zst", "--unsigned", "--target-python", "3.11")
    assert result.exit_code == 2 and "--include-tool" in result.stderr


def test_target_is_validated():
    from bundler.tool_wheels import Target
    from manifests.errors import UsageError

    assert Target("3.12", "manylinux_2_17_aarch64").pip_args() == ["--python-version", "3.12", "--platform", "manylinux_2_17_aarch64", "--implementation", "cp"]
    assert Target().pip_args() == [] and Target().python_version == PY
    for bad in (("3", None), ("3.11; rm", None), (None, "linux x86_64")):
        with pytest.raises(UsageError):
            Target(*bad)


def _fake_installed(site_dir: Path, name: str = "fake-tool", *, editable: bool = False) -> importlib.metadata.Distribution:
    """An installed distribution as pip leaves it: package files, dist-info, RECORD with hashes."""
    from bundler.tool_wheels import _record_hash

    info = site_dir / "fake_tool-1.2.dist-info"
    info.mkdir(parents=True)
    files = {
        "fake_tool-1.2.dist-info/METADATA": b"Metadata-Version: 2.1\nName: fake-tool\nVersion: 1.2\nRequires-Dist: click\n",
        "fake_tool-1.2.dist-info/entry_points.txt": b"[console_scripts]\nfake = fakepkg:main\n",
        "fake_tool-1.2.dist-info/top_level.txt": b"fakepkg\n",
        "fake_tool-1.2.dist-info/INSTALLER": b"pip\n",
        "fake_tool-1.2.dist-info/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    if editable:
        files["__editable__.fake_tool-1.2.pth"] = b"import __editable___fake_tool_finder\n"
    else:
        files["fakepkg/__init__.py"] = b"def main():\n    print('fake')\n"
        files["fakepkg/data/table.toml"] = b"x = 1\n"
    for rel, data in files.items():
        (site_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (site_dir / rel).write_bytes(data)
    lines = [f"{rel},{_record_hash(data)},{len(data)}" for rel, data in files.items()]
    lines += ["fakepkg/__pycache__/__init__.cpython-311.pyc,,", "../../../bin/fake,,", "fake_tool-1.2.dist-info/RECORD,,"]
    (info / "RECORD").write_text("\n".join(lines) + "\n")
    return importlib.metadata.PathDistribution(info)


def test_tool_wheel_is_rebuilt_from_an_installed_record(tmp_path):
    from bundler.tool_wheels import _record_hash, build_tool_wheel

    dist = _fake_installed(tmp_path / "site")
    wheel = build_tool_wheel(tmp_path / "out", distribution=dist)
    assert wheel.name == "fake_tool-1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        record = zf.read("fake_tool-1.2.dist-info/RECORD").decode()
        assert sorted(names) == sorted([
            "fakepkg/__init__.py", "fakepkg/data/table.toml", "fake_tool-1.2.dist-info/METADATA",
            "fake_tool-1.2.dist-info/entry_points.txt", "fake_tool-1.2.dist-info/top_level.txt",
            "fake_tool-1.2.dist-info/WHEEL", "fake_tool-1.2.dist-info/RECORD",
        ])  # fmt: skip
        for name in names:
            if not name.endswith("RECORD"):
                assert f"{name},{_record_hash(zf.read(name))},{len(zf.read(name))}" in record
        assert "Tag: py3-none-any" in zf.read("fake_tool-1.2.dist-info/WHEEL").decode()
    assert build_tool_wheel(tmp_path / "again", distribution=dist).read_bytes() == wheel.read_bytes(), "reproducible"


def test_tool_wheel_refuses_installed_files_that_changed(tmp_path):
    from bundler.tool_wheels import build_tool_wheel
    from manifests.errors import ToolError

    dist = _fake_installed(tmp_path / "site")
    (tmp_path / "site" / "fakepkg" / "__init__.py").write_text("tampered = True\n")
    with pytest.raises(ToolError, match="changed after it was installed"):
        build_tool_wheel(tmp_path / "out", distribution=dist)


def test_editable_install_without_its_project_is_a_clear_error(tmp_path):
    from bundler.tool_wheels import build_tool_wheel
    from manifests.errors import ToolError

    dist = _fake_installed(tmp_path / "site", editable=True)
    # The package beside the checkout's pyproject.toml is devops_cp: another project's name is refused.
    with pytest.raises(ToolError, match="not 'fake-tool'"):
        build_tool_wheel(tmp_path / "out", distribution=dist)


def test_manifest_keeps_tool_members_and_data_apart():
    from manifests.bundle import TOOL_DATA_TYPE, BundleManifest, FileEntry, PackEntry, to_json
    from manifests.errors import BundleStructureError

    def manifest(*files: FileEntry) -> BundleManifest:
        packs = (
            PackEntry("data", "data", "", "sample", {}, "weekly", "2026-01-01T00:00:00Z", [], "", True, ""),
            PackEntry("devops-cp-tool", "devops-cp-tool", "", TOOL_DATA_TYPE, {"python": "3.11"}, "never", "2026-01-01T00:00:00Z", [], "", False, ""),
        )
        return BundleManifest(bundle_id="b", created="2026-01-01T00:00:00Z", expires=None, tool_version="0.1.0", signer_key_id=None, packs=packs, files=files)

    digest = "0" * 64
    to_json(manifest(FileEntry("devops-cp-tool", "a-1-py3-none-any.whl", 1, digest, "tool/a-1-py3-none-any.whl"), FileEntry("data", "x.bin", 1, digest, "packs/data/x.bin")))
    for bad in (
        FileEntry("data", "a.whl", 1, digest, "tool/a.whl"),  # a data pack posing as the tool's wheels
        FileEntry("devops-cp-tool", "a.whl", 1, digest, "packs/devops-cp-tool/a.whl"),  # a wheel outside tool/
        FileEntry("devops-cp-tool", "a.whl", 1, digest, "tool/b.whl"),  # member and path disagree
        FileEntry("devops-cp-tool", "setup.sh", 1, digest, "tool/setup.sh"),  # not a wheel
    ):
        with pytest.raises(BundleStructureError):
            to_json(manifest(bad))
