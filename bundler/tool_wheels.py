"""Wheels for devops-cp itself and every runtime dependency, so a bundle can carry the tool.

The tool's own wheel never comes from an index (the index may not have it, or may
have another build): it is rebuilt from the installed distribution. Its RECORD
lists every installed file with its hash; the files are zipped again, METADATA
and entry_points.txt (so `devops-cp` exists after `pip install`) are kept, WHEEL
and RECORD are written afresh. That works from a plain `pip install .`. An
editable install lists no package files in RECORD; then the wheel is built from
the source tree beside the package with `pip wheel`.

The dependencies come from the package index (or the mirror a site names in
PIP_INDEX_URL) with `pip download --only-binary=:all:` for the target interpreter
and platform: the online machine resolves them, the air-gapped host only installs.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from manifests.bundle import TOOL_DATA_TYPE, TOOL_MEMBER_DIR, TOOL_PACK_ID, FileEntry, PackEntry
from manifests.errors import ToolError, UsageError

if TYPE_CHECKING:
    import importlib.metadata

DIST_NAME = "devops-cp-data"
TOP_PACKAGE = "devops_cp"  # the package whose directory sits beside pyproject.toml in a checkout
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # reproducible wheels: zip's earliest date
_REGENERATED = {"RECORD", "WHEEL", "INSTALLER", "REQUESTED", "direct_url.json"}
_PYTHON_VERSION = re.compile(r"^3\.\d{1,2}$")
_PLATFORM_TAG = re.compile(r"^[a-z0-9_]+$")


@dataclass(frozen=True)
class Target:
    """The interpreter and platform the wheels are for; None: the ones running now."""

    python: str | None = None  # "3.11"
    platform: str | None = None  # "manylinux_2_17_x86_64"

    def __post_init__(self) -> None:
        if self.python is not None and not _PYTHON_VERSION.match(self.python):
            raise UsageError(f"--target-python {self.python!r}: expected a version such as 3.11")
        if self.platform is not None and not _PLATFORM_TAG.match(self.platform):
            raise UsageError(f"--target-platform {self.platform!r}: expected a wheel platform tag such as manylinux_2_17_x86_64")

    @property
    def python_version(self) -> str:
        return self.python or f"{sys.version_info.major}.{sys.version_info.minor}"

    @property
    def platform_tag(self) -> str:
        return self.platform or running_platform_tag()

    def pip_args(self) -> list[str]:
        """Nothing for the running interpreter: pip then uses exactly its own tags."""
        args = []
        if self.python:
            args += ["--python-version", self.python]
        if self.platform:
            args += ["--platform", self.platform]
        if args:
            args += ["--implementation", "cp"]
        return args


@dataclass(frozen=True)
class ToolWheels:
    tool_wheel: Path
    wheels: tuple[Path, ...]  # every wheel, the tool's own first, then the dependencies by name
    target: Target


def running_platform_tag() -> str:
    """The most specific wheel platform tag of this host (for the manifest: pip works it out itself)."""
    for module in ("packaging.tags", "pip._vendor.packaging.tags"):
        try:
            tags = importlib.import_module(module)
        except ImportError:
            continue
        return next(iter(tags.sys_tags())).platform
    return re.sub(r"[^a-z0-9]+", "_", sysconfig.get_platform().lower())


def collect(directory: Path, target: Target, *, dist_name: str = DIST_NAME) -> ToolWheels:
    """The tool's wheel (built here) and its dependencies' wheels (pip download) in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    tool = build_tool_wheel(directory, dist_name)
    download_dependencies(tool, directory, target)
    others = sorted((p for p in directory.glob("*.whl") if p != tool), key=lambda p: p.name.lower())
    stray = sorted(p.name for p in directory.iterdir() if p.suffix != ".whl")
    if stray:
        raise ToolError(f"pip download left something other than wheels: {', '.join(stray)}")
    return ToolWheels(tool, (tool, *others), target)


def download_dependencies(tool_wheel: Path, directory: Path, target: Target) -> None:
    """Every runtime dependency of `tool_wheel`, resolved by pip for the target, as wheels."""
    command = [
        sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--disable-pip-version-check",
        "--no-input", "--progress-bar", "off", *target.pip_args(), "--dest", str(directory), str(tool_wheel),
    ]  # fmt: skip
    result = _run(command)
    if result.returncode != 0:
        raise ToolError(
            f"pip download of the tool's dependencies for Python {target.python_version} on {target.platform_tag} failed:\n"
            + _tail(result.stdout),
            hint="this machine needs a package index (a site mirror: set PIP_INDEX_URL), and wheels must exist for that target",
        )


def manifest_entries(tool: ToolWheels, fetched_at: str, tool_version: str) -> tuple[PackEntry, list[FileEntry], list[tuple[str, Path, int]]]:
    """The wheels as a pseudo-pack (TOOL_PACK_ID, data type TOOL_DATA_TYPE) whose files are tool/NAME.whl.

    A pack, so that the signed manifest lists every wheel's size and sha256 and
    sideload verifies them like any file; its data type keeps sideload from
    installing it as data (pip installs it: see bundler/bootstrap.py).
    """
    files, members = [], []
    for path in tool.wheels:
        size, member = path.stat().st_size, TOOL_MEMBER_DIR + path.name
        files.append(FileEntry(TOOL_PACK_ID, path.name, size, sha256_file(path), member))
        members.append((member, path, size))
    entry = PackEntry(
        key=TOOL_PACK_ID,
        id=TOOL_PACK_ID,
        label=f"devops-cp {tool_version} and its dependencies, as wheels (installed with pip, not as data)",
        data_type=TOOL_DATA_TYPE,
        choices={"python": tool.target.python_version, "platform": tool.target.platform_tag},
        update_schedule="never",
        fetched_at=fetched_at,
        offline_steps=(),
        source=f"{tool.tool_wheel.name} rebuilt from the installed tool; dependencies from the package index",
        checksum_verified=False,
        tool_hint="install with `pip install --no-index --find-links DIR/tool " + DIST_NAME + "` (README: Air-gapped hosts)",
    )
    return entry, files, members


# --- the tool's own wheel -------------------------------------------------------------------


def build_tool_wheel(out_dir: Path, dist_name: str = DIST_NAME, *, distribution: importlib.metadata.Distribution | None = None) -> Path:
    dist = distribution or _installed(dist_name)
    files = _package_files(dist)
    if files:
        return wheel_from_record(dist, files, out_dir)
    return wheel_from_source(_source_root(dist), out_dir)


def _installed(dist_name: str) -> importlib.metadata.Distribution:
    import importlib.metadata  # only here: --include-tool alone pays its import

    try:
        return importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise ToolError(f"{dist_name} is not installed as a distribution here, so its wheel cannot be built", hint="install it with `pip install .`") from None


def _dist_info(dist: importlib.metadata.Distribution) -> str:
    for f in dist.files or ():
        if f.parts[0].endswith(".dist-info"):
            return f.parts[0]
    raise ToolError(f"{dist.metadata['Name']}: the installed distribution has no .dist-info directory in its RECORD")


def _package_files(dist: importlib.metadata.Distribution) -> list[importlib.metadata.PackagePath]:
    """The files a wheel would hold, or [] for an editable install (only a .pth file and a finder)."""
    info = _dist_info(dist)
    files = [
        f for f in dist.files or ()
        if f.parts[0] not in ("..", info) and "__pycache__" not in f.parts and f.suffix != ".pyc"
        and not f.name.startswith("__editable__") and f.suffix != ".pth"
    ]  # fmt: skip
    tops = (dist.read_text("top_level.txt") or "").split() or [TOP_PACKAGE]
    names = {f.as_posix() for f in files}
    if not all(f"{top}/__init__.py" in names or f"{top}.py" in names for top in tops):
        return []
    return files


def _wheel_tag(dist: importlib.metadata.Distribution) -> tuple[str, bool]:
    text = dist.read_text("WHEEL") or ""
    tags = re.findall(r"^Tag:\s*(\S+)\s*$", text, re.M)
    purelib = not re.search(r"^Root-Is-Purelib:\s*false\s*$", text, re.M | re.I)
    return (tags[0] if len(tags) == 1 else "py3-none-any"), purelib


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def wheel_from_record(dist: importlib.metadata.Distribution, files, out_dir: Path) -> Path:
    """Zip the installed files again; refuse any that changed since pip installed them."""
    info = _dist_info(dist)
    tag, purelib = _wheel_tag(dist)
    entries: list[tuple[str, bytes]] = []
    for f in sorted(files, key=lambda f: f.as_posix()):
        data = Path(f.locate()).read_bytes()
        if f.hash is not None and _record_hash(data) != f"{f.hash.mode}={f.hash.value}":
            raise ToolError(f"{f.as_posix()} changed after it was installed, so the wheel would not match this tool", hint=f"reinstall {dist.metadata['Name']}, then bundle again")
        entries.append((f.as_posix(), data))
    for f in sorted(dist.files or (), key=lambda f: f.as_posix()):
        if f.parts[0] == info and f.name not in _REGENERATED and "__pycache__" not in f.parts:
            entries.append((f.as_posix(), Path(f.locate()).read_bytes()))
    wheel_meta = f"Wheel-Version: 1.0\nGenerator: devops-cp (rebuilt from the installed distribution)\nRoot-Is-Purelib: {str(purelib).lower()}\nTag: {tag}\n"
    entries.append((f"{info}/WHEEL", wheel_meta.encode()))
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in entries) + f"{info}/RECORD,,\n"
    entries.append((f"{info}/RECORD", record.encode()))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{info.removesuffix('.dist-info')}-{tag}.whl"
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            member = zipfile.ZipInfo(name, _ZIP_TIME)
            member.external_attr = 0o644 << 16
            member.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(member, data)
    tmp.replace(path)
    return path


def _source_root(dist: importlib.metadata.Distribution) -> Path:
    """The checkout an editable install points at: pyproject.toml beside the package, naming this project."""
    spec = importlib.util.find_spec(TOP_PACKAGE)
    if spec is None or spec.origin is None:
        raise ToolError(f"cannot find the {TOP_PACKAGE} package to build the tool's wheel from")
    root = Path(spec.origin).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    name = dist.metadata["Name"]
    if not pyproject.is_file():
        raise ToolError(
            f"{name} is installed in editable mode and {root} has no pyproject.toml, so its wheel can be neither rebuilt nor built",
            hint="install the tool with `pip install .` (not -e), then bundle again",
        )
    project = tomllib.loads(pyproject.read_text()).get("project", {}).get("name", "")
    if _canonical(project) != _canonical(name):
        raise ToolError(f"{pyproject} is the project {project!r}, not {name!r}", hint="install the tool with `pip install .`, then bundle again")
    return root


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_from_source(root: Path, out_dir: Path) -> Path:
    """`pip wheel --no-deps` on a clean copy of the source tree (the checkout gets no build/ or egg-info).

    Without build isolation first (offline, uses the installed setuptools); if that
    setuptools cannot build wheels, again with isolation (pip fetches the backend).
    """
    with tempfile.TemporaryDirectory(prefix="devops-cp-wheel-") as tmp:
        source, built = Path(tmp) / "src", Path(tmp) / "wheel"
        shutil.copytree(root, source, ignore=shutil.ignore_patterns(".*", "build", "dist", "*.egg-info", "__pycache__", "tests", "bench"))
        base = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "--no-input", "-w", str(built)]
        result = _run([*base, "--no-build-isolation", str(source)])
        if result.returncode != 0:
            result = _run([*base, str(source)])
        wheels = sorted(built.glob("*.whl"))
        if result.returncode != 0 or len(wheels) != 1:
            raise ToolError(f"pip wheel could not build the tool's wheel from {root}:\n" + _tail(result.stdout), hint="install the tool with `pip install .` (not -e), then bundle again")
        out_dir.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy2(wheels[0], out_dir / wheels[0].name))


def _run(command: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    except OSError as exc:
        raise ToolError(f"cannot run {command[0]}: {exc}") from exc


def _tail(text: str, lines: int = 12) -> str:
    return "\n".join("  " + line for line in text.strip().splitlines()[-lines:])


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


__all__ = ["DIST_NAME", "Target", "ToolWheels", "build_tool_wheel", "collect", "download_dependencies", "manifest_entries", "running_platform_tag", "wheel_from_record", "wheel_from_source"]
