"""Shared fixtures: an isolated HOME per test, a loopback server, recipe and config writers,
and a CLI runner whose HTTP settings retry without sleeping.

Every test gets its own HOME and XDG directories (so nothing reads or writes the real
~/.cache), DEVOPS_CP_CONFIG unset, DEVOPS_CP_CATALOG pointing at an empty catalog
directory, no proxy variables (httpx would send 127.0.0.1 through them) and no GPU
(DEVOPS_CP_NO_GPU=1: the GPU tests turn detection back on themselves).
"""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from click.testing import CliRunner

from support.localserver import LocalServer
from support.oci_registry import registry  # noqa: F401  (a fixture: a real registry on 127.0.0.1)
from support.tarballs import make_tar_gz  # noqa: F401  (tests import it from here too)
from executor.http import HttpSettings

REPO = Path(__file__).resolve().parents[1]

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy", "no_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR")


def fast_settings(retries: int = 3, **overrides) -> HttpSettings:
    """Retries without waiting; a short stall timeout so a hung test fails quickly."""
    values = dict(retries=retries, backoff=0, sleep=lambda s: None, stall_timeout=10.0, connect_timeout=5.0)
    values.update(overrides)
    return HttpSettings(**values)


@dataclass
class Env:
    home: Path
    cache: Path
    data: Path
    state: Path
    config_dir: Path
    catalog: Path

    @property
    def config_file(self) -> Path:
        return self.config_dir / "devops-cp" / "config.toml"

    @property
    def records_dir(self) -> Path:
        return self.state / "devops-cp" / "records"

    def sample_dir(self) -> Path:
        """Where data_type = "sample" installs by default (XDG_DATA_HOME/devops-cp/samples)."""
        return self.data / "devops-cp" / "samples"

    def write_config(self, text: str) -> Path:
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(text)
        return self.config_file

    def record(self, key: str) -> dict:
        return json.loads((self.records_dir / f"{key}.json").read_text())


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory, monkeypatch) -> Env:
    root = tmp_path_factory.mktemp("env")  # beside tmp_path, so a test's own tmp_path stays empty
    env = Env(
        home=root / "home",
        cache=root / "home" / ".cache",
        data=root / "home" / ".local" / "share",
        state=root / "home" / ".local" / "state",
        config_dir=root / "home" / ".config",
        catalog=root / "catalog",
    )
    for path in (env.home, env.catalog):
        path.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(env.home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(env.cache))
    monkeypatch.setenv("XDG_DATA_HOME", str(env.data))
    monkeypatch.setenv("XDG_STATE_HOME", str(env.state))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(env.config_dir))
    monkeypatch.setenv("DEVOPS_CP_CATALOG", str(env.catalog))
    monkeypatch.setenv("DEVOPS_CP_NO_GPU", "1")
    monkeypatch.delenv("DEVOPS_CP_CONFIG", raising=False)
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    return env


@pytest.fixture
def tmpfs(tmp_path):
    """tmpfs(size="2m", ro=False) mounts a real small filesystem (tests run as root here); unmounted at teardown."""
    mounted: list[Path] = []

    def mount(size: str = "2m", *, ro: bool = False, name: str = "mnt") -> Path:
        directory = tmp_path / name
        directory.mkdir()
        options = f"size={size}" + (",ro" if ro else "")
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(directory)], capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.strip() or result.returncode}")
        mounted.append(directory)
        return directory

    yield mount
    for directory in reversed(mounted):
        subprocess.run(["umount", "-l", str(directory)], capture_output=True)


@pytest.fixture(params=["fast", "plain"])
def http_path(request, monkeypatch) -> str:
    """Run a download test through executor/http_fastpath.py's socket reads, then through plain httpx."""
    from executor import http_fastpath

    monkeypatch.setattr(http_fastpath, "ENABLED", request.param == "fast")
    return request.param


@pytest.fixture
def local_server():
    with LocalServer() as server:
        yield server


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def payload(size: int, seed: int = 1) -> bytes:
    """Deterministic, incompressible-enough bytes whose every offset differs from its neighbours."""
    import random

    return random.Random(seed).randbytes(size)


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def _toml_table(lines: list[str], name: str, table: dict) -> None:
    lines.append(f"[{name}]")
    lines += [f"{k} = {toml_value(v)}" for k, v in table.items() if not isinstance(v, dict)]
    for key, value in table.items():
        if isinstance(value, dict):
            _toml_table(lines, f"{name}.{key}", value)


def recipe_toml(pack_id: str, steps: list[dict] | dict[str, list[dict]], *, data_type: str = "sample", choices: list[dict] | None = None, **top) -> str:
    """A recipe as TOML. `steps` is the `_default` steps, or {option value: steps}."""
    lines = [f"id = {toml_value(pack_id)}", f"label = {toml_value(top.pop('label', pack_id + ' (test)'))}", f"data_type = {toml_value(data_type)}"]
    tables = {k: top.pop(k) for k in list(top) if isinstance(top[k], dict)}  # requires, credentials
    for key, value in top.items():
        lines.append(f"{key} = {toml_value(value)}")
    for name, table in tables.items():
        _toml_table(lines, name, table)
    for choice in choices or []:
        lines.append("[[choices]]")
        for key in ("id", "label"):
            lines.append(f"{key} = {toml_value(choice[key])}")
        for option in choice["options"]:
            lines.append("[[choices.options]]")
            for key, value in option.items():
                if key == "gpu_vendor":
                    lines.append(f"requires = {{ hardware = {{ gpu_vendor = {toml_value(value)} }} }}")
                else:
                    lines.append(f"{key} = {toml_value(value)}")
    table = steps if isinstance(steps, dict) else {"_default": steps}
    for key, step_list in table.items():
        for step in step_list:
            lines.append(f"[[install.{json.dumps(key)}]]")
            lines += [f"{k} = {toml_value(v)}" for k, v in step.items()]
    return "\n".join(lines) + "\n"


def download_step(url: str, dest: str, data: bytes | None = None, *, checksum: bool | str = True, **extra) -> dict:
    step = {"type": "download", "url": url, "dest": dest}
    if data is not None:
        step["size_bytes"] = len(data)
        if checksum is True:
            step["checksum"] = "sha256:" + sha256(data)
    if isinstance(checksum, str):
        step["checksum"] = checksum
    step.update(extra)
    return step


@pytest.fixture
def write_recipe(isolated_env) -> Callable[..., Path]:
    """write_recipe(pack_id, steps, **top) -> the recipe file in the test's catalog."""

    def write(pack_id: str, steps, **top) -> Path:
        path = isolated_env.catalog / f"{pack_id}.toml"
        path.write_text(recipe_toml(pack_id, steps, **top))
        return path

    return write


@pytest.fixture
def keygen_key(cli, tmp_path, monkeypatch) -> Path:
    """A signing key made by `devops-cp data keygen` (passphrase from DEVOPS_CP_KEY_PASSPHRASE); `.pub` beside it."""
    monkeypatch.setenv("DEVOPS_CP_KEY_PASSPHRASE", "a test passphrase")
    (tmp_path / "keys").mkdir()
    result = cli("keygen", "-o", str(tmp_path / "keys" / "site"))
    assert result.exit_code == 0, result.stderr
    return tmp_path / "keys" / "site.key"


@pytest.fixture
def serve_pack(local_server, write_recipe) -> Callable[..., str]:
    """serve_pack(pack_id, data, dest=..., **step_extra) serves `data` and writes a recipe for it; returns the URL."""

    def serve(pack_id: str, data: bytes, *, dest: str | None = None, path: str | None = None, etag="auto", checksum: bool | str = True, top: dict | None = None, **step_extra) -> str:
        url = local_server.add(path or f"/packs/{pack_id}.bin", data, etag=etag)
        write_recipe(pack_id, [download_step(url, dest or f"{pack_id}/{pack_id}.bin", data, checksum=checksum, **step_extra)], **(top or {}))
        return url

    return serve


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None

    def json(self):
        return json.loads(self.stdout)


@pytest.fixture
def cli(monkeypatch) -> Callable[..., CliResult]:
    """cli("install", "pack", settings=...) runs `devops-cp data ...` in-process with fast HTTP settings."""
    import devops_cp.cli as cli_module
    from devops_cp.app import App

    def run(*args: str, settings: HttpSettings | None = None, input: str | None = None) -> CliResult:
        monkeypatch.setattr(cli_module, "App", functools.partial(App, settings=settings or fast_settings()))
        result = CliRunner().invoke(cli_module.main, ["data", *args], input=input, catch_exceptions=True)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return CliResult(result.exit_code, result.stdout, result.stderr, result.exception)

    return run


def files_under(directory: Path) -> list[str]:
    """Every file (not directory) below `directory`, relative, sorted; [] when it does not exist."""
    if not directory.exists():
        return []
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if not p.is_dir())


def gets(server: LocalServer, path: str | None = None) -> list:
    return [r for r in server.requests if r.method == "GET" and (path is None or r.path == path)]


def fresh_host(monkeypatch, root: Path, recipes: tuple[Path, ...] = ()) -> Path:
    """Another machine: a new HOME and XDG dirs, no config, a catalog holding only copies of
    `recipes` (a bundle's offline steps run there only when its own catalog defines them).
    Returns XDG_CACHE_HOME."""
    home = root / "home"
    dirs = {
        "HOME": home,
        "XDG_CACHE_HOME": home / ".cache",
        "XDG_DATA_HOME": home / ".local" / "share",
        "XDG_STATE_HOME": home / ".local" / "state",
        "XDG_CONFIG_HOME": home / ".config",
        "DEVOPS_CP_CATALOG": root / "empty-catalog",
    }
    for name, path in dirs.items():
        path.mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(name, str(path))
    for recipe in recipes:
        (dirs["DEVOPS_CP_CATALOG"] / recipe.name).write_bytes(recipe.read_bytes())
    return dirs["XDG_CACHE_HOME"]


def read_manifest(bundle: Path) -> dict:
    """A bundle's manifest as JSON (read without verifying: for assertions only)."""
    from sideload.reader import BundleReader, locate

    with BundleReader(locate(bundle)) as reader:
        manifest_bytes, _ = reader.read_header()
    return json.loads(manifest_bytes)
