"""The step types: each one stages files into a pack transaction.

download     URL -> partial file (resumable) -> verified -> staged (or extracted)
local_copy   a file on this host (a USB stick) -> verified -> staged (or extracted)
tool_command a program that writes into the staging area; what it leaves is captured
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, assert_never
from urllib.parse import urlsplit

from executor import consumers
from executor import extract as extractor
from executor.config import Config, rewrite_url
from executor.events import Listener, Meter, Notice
from executor.preflight import check_space, check_tools
from executor.inplace import InPlace, InPlaceFinder
from executor.transfer import Copy, HashingReader, copy_file, hash_file
from executor.txn import PARTIAL_DIR, PackTransaction, staging_root
from manifests.errors import ChecksumMismatch, ConfigError, FileTooLargeError, LengthError, NoSpaceError, ToolError, TrustError, UsageError
from manifests.recipe import Recipe
from manifests.steps import Download, LocalCopy, OciArtifact, Step, ToolCommand

if TYPE_CHECKING:  # httpx and executor.http are imported by the steps that download (a sideload has none)
    import httpx

    from executor.config import HttpSettings

@dataclass
class StepContext:
    """What a step needs from the run around it."""

    config: Config
    client_factory: "callable"
    listener: Listener
    settings: HttpSettings
    python: str = sys.executable
    # A direct install syncs the pack before it becomes visible: its files may start going to disk
    # as they arrive (Copy's writeback). Not bundle staging, which is never synced: there it only costs.
    will_sync: bool = False
    plain: bool = False  # WriteSettings.plain: no fast paths (see executor/transfer.py)
    connections: int = 1  # per large download (executor/segmented.py): the engine's connections_per_download
    in_place: InPlaceFinder | None = None  # files already there as a step would fetch them stay (executor/inplace.py)
    _client: httpx.Client | None = None

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = self.client_factory()
        return self._client


@dataclass
class StepOutcome:
    source: str = ""
    checksum_verified: bool = True
    notes: list[str] = field(default_factory=list)
    upstream: dict | None = None  # a download's validators (executor/upstream.py), for the install record


def step_label(step: Step) -> str:
    match step:
        case Download():
            return Path(urlsplit(step.url).path).name or step.dest
        case LocalCopy():
            return Path(step.source).name or step.dest
        case OciArtifact():
            return step.ref
        case ToolCommand():
            return " ".join(step.command[:3])
        case _:
            assert_never(step)


def credentials_auth(ctx: StepContext, recipe: Recipe, name: str | None, url: str, upstream: str) -> httpx.Auth | None:
    """The credentials for `url` (after [mirrors]), sent only to the hosts they were configured for.

    A [credentials.X] entry whose `hosts` lists the URL's host is used for it (a mirror that needs
    its own). The recipe's NAME goes only to its entry's `hosts`, by default the host of the
    recipe's own URL: a [mirrors] rewrite to another host never receives a license key.
    From the config file, else the recipe's environment variables. Never logged.
    """
    host = urlsplit(url).hostname
    for entry_name, entry in ctx.config.credentials.items():
        if host in entry.get("hosts", ()):
            return _basic_auth(entry, f"[credentials.{entry_name}]")
    if not name:
        return None
    spec = recipe.credentials[name]
    table = ctx.config.credentials.get(name, {})
    if host not in (table.get("hosts") or [urlsplit(upstream).hostname]):
        return None
    user = table.get("username") or os.environ.get(spec.username_env)
    password = table.get("password") or os.environ.get(spec.password_env)
    if not user or not password:
        raise ConfigError(
            f"{recipe.id} needs {name} credentials",
            hint=f"set {spec.username_env} and {spec.password_env}, or username/password in the config file's [credentials.{name}]",
        )
    import httpx

    return httpx.BasicAuth(user, password)


def _basic_auth(entry: dict, where: str) -> httpx.Auth:
    if not entry.get("username") or not entry.get("password"):
        raise ConfigError(f"{where} lists hosts but has no username and password", hint=f"add both to {where} in the config file")
    import httpx

    return httpx.BasicAuth(entry["username"], entry["password"])


def _expected_checksum(ctx: StepContext, recipe: Recipe, step: Download, url: str) -> str | None:
    if step.checksum:
        return step.checksum.split(":", 1)[1]
    if step.checksum_url:
        from executor.http import fetch_small, parse_sha256sum

        listing_url = rewrite_url(step.checksum_url, ctx.config.mirrors)
        auth = credentials_auth(ctx, recipe, step.credentials, listing_url, step.url)  # the recipe's host, not the listing's
        listing = fetch_small(ctx.client, listing_url, auth=auth, too_long=LengthError)
        return parse_sha256sum(listing.text, Path(urlsplit(url).path).name)
    return None


def partial_path(data_dir: Path, url: str) -> Path:
    name = Path(urlsplit(url).path).name or "download"
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return staging_root(data_dir) / PARTIAL_DIR / f"{digest}-{name}.part"


def run_download(ctx: StepContext, recipe: Recipe, key: str, index: int, step: Download, txn: PackTransaction) -> StepOutcome:
    from executor.http import Download

    url = rewrite_url(step.url, ctx.config.mirrors)
    auth = credentials_auth(ctx, recipe, step.credentials, url, step.url)
    expected = _expected_checksum(ctx, recipe, step, url)
    if kept := kept_in_place(ctx, key, step, txn, expected):
        return StepOutcome(source=url, checksum_verified=expected is not None, upstream=ctx.in_place.validators_for(url, kept))
    data_dir = txn.data_dir
    extra = step.unpacked_size_bytes or 0 if step.extract and not txn.keep_archives else 0  # room to unpack it, where it will be
    meter = Meter(ctx.listener, key, index, step_label(step), step.size_bytes)
    download = Download(
        client=ctx.client,
        url=url,
        partial=partial_path(data_dir, url),
        what=url,
        settings=ctx.settings,
        meter=meter,
        size_cap=step.size_bytes if step.size_exact else None,
        auth=auth,
        space_check=lambda remaining: check_space(data_dir, remaining + extra),
        writeback=ctx.will_sync and not step.extract,  # an archive is read back to be extracted, never made visible
        plain=ctx.plain,
        connections=ctx.connections,
    )
    try:
        try:
            copy = download.run(expected)
        except ChecksumMismatch as exc:
            ctx.listener(Notice(key, "warning", f"{exc.message}; downloading once more"))
            copy = download.run(expected)  # the seed: delete and re-download, then fail
    except (NoSpaceError, FileTooLargeError):
        download.discard()  # disk full, or a file the filesystem cannot hold: the partial file goes
        raise
    outcome = StepOutcome(source=url, checksum_verified=expected is not None)
    if download.validators is not None:
        outcome.upstream = download.validators.to_json()
    if expected is None:
        outcome.notes.append(f"{url} has no published checksum: recorded sha256:{copy.sha256} as received")
    try:
        place_file(download.partial, step, txn, copy, meter, data_type=recipe.data_type)
    except (NoSpaceError, FileTooLargeError, TrustError):
        download.discard()  # a full disk or a refused archive: nothing of it is kept in the data dir
        raise
    download.discard()
    return outcome


def kept_in_place(ctx: StepContext, key: str, step: Download | LocalCopy, txn: PackTransaction, expected: str | None) -> InPlace | None:
    """The step's file when the data dir has it already, as the step would produce it: kept there
    (adopted when no pack had it), and nothing is fetched or copied. None: the step runs."""
    if ctx.in_place is None or step.extract:
        return None
    kept = ctx.in_place.find(step.dest, expected, step.size_bytes if step.size_exact else None)
    if kept is None:
        return None
    txn.keep_in_place(kept)
    if note := ctx.in_place.adoption_note(kept):
        ctx.listener(Notice(key, "info", note))
    return kept


def place_file(path: Path, step: Download | LocalCopy | OciArtifact, txn: PackTransaction, copy: Copy, meter: Meter | None, *, data_type: str = "") -> None:
    """A verified file in the staging area becomes the step's dest (or is extracted there)."""
    if step.extract and txn.keep_archives:
        txn.keep_archive(path, copy.done, copy.sha256, fmt=step.extract, dest=step.dest, strip=step.strip_components, unpacked_size=step.unpacked_size_bytes)
    elif step.extract:
        extractor.extract(path, step.extract, txn, step.dest, strip=step.strip_components, max_total=extractor.unpack_bound(step.unpacked_size_bytes, copy.done), meter=None)
        if consumers.keeps_zip_beside(data_type, step.extract):
            consumers.keep_zip_beside(txn, path, step.dest, copy.done, copy.sha256)
    else:
        os.replace(path, txn.path_for(step.dest))
        txn.add(step.dest, copy.done, copy.sha256)
    if meter is not None:
        meter.done(copy.done)


def run_local_copy(ctx: StepContext, key: str, index: int, step: Download | LocalCopy, txn: PackTransaction, source: Path, expected: str | None, *, data_type: str = "") -> StepOutcome:
    """The seed's air-gapped single-file workflow: `install PACK --source FILE`."""
    if not source.is_file():
        raise UsageError(f"{source} is not a file", hint="pass the path of the downloaded data file with --source")
    if expected is not None and kept_in_place(ctx, key, step, txn, expected):
        return StepOutcome(source=f"file:{source}")
    size = source.stat().st_size
    check_space(txn.data_dir, size + (step.unpacked_size_bytes or 0 if step.extract else 0))
    meter = Meter(ctx.listener, key, index, source.name, size)
    if step.extract and step.extract != "zip":
        # One pass: hash the archive while extracting it into staging; a mismatch aborts the transaction.
        with open(source, "rb") as raw:
            reader = HashingReader(raw, meter, plain=ctx.plain)
            extractor.extract_tar_stream(reader, step.extract, txn, step.dest, strip=step.strip_components, max_total=extractor.unpack_bound(step.unpacked_size_bytes, size), name=source.name)
            copy = reader.drain()
        copy.check(expected)
        meter.done(copy.done)
    else:
        staged = txn.root / "incoming" / source.name
        with open(source, "rb") as f:
            copy = copy_file(f, staged, what=str(source), meter=meter, writeback=ctx.will_sync, plain=ctx.plain)
        copy.check(expected)
        place_file(staged, step, txn, copy, meter, data_type=data_type)
    outcome = StepOutcome(source=f"file:{source}", checksum_verified=expected is not None)
    if expected is None:
        outcome.notes.append(f"{source} was not checked against a checksum (pass --checksum or --checksum-file): recorded sha256:{copy.sha256}")
    return outcome


def expand_runtime(arg: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        arg = arg.replace("{" + name + "}", value)
    return arg


def run_tool_command(ctx: StepContext, key: str, step: ToolCommand, values: dict[str, str], txn: PackTransaction | None) -> StepOutcome:
    """Run a tool, stream its output as notices; capture what it wrote into the staging area."""
    command = [expand_runtime(a, values) for a in step.command]
    check_tools([command[0]], f"{key} (step `{' '.join(command)}`)")
    tail: deque[str] = deque(maxlen=20)
    if txn is not None:
        txn.only_recorded_files = False  # the tool may leave files (or links) beside those it produces
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    except OSError as exc:
        raise ToolError(f"could not start {command[0]}: {exc.strerror}") from exc
    with process:
        for line in process.stdout:
            tail.append(line.rstrip())
            ctx.listener(Notice(key, "info", f"{command[0]}: {line.rstrip()}"))
    if process.returncode != 0:
        raise ToolError(
            f"`{' '.join(command)}` failed with exit code {process.returncode}",
            hint="its last output:\n    " + "\n    ".join(tail) if tail else None,
        )
    if txn is not None:
        capture_outputs(txn, step)
    return StepOutcome(source=f"tool:{command[0]}")


def uses_python(steps) -> bool:
    """Whether any of these steps runs `{python}` (a wheel's `pip install`, say)."""
    return any("{python}" in arg for step in steps if isinstance(step, ToolCommand) for arg in step.command)


_MISSING_DISTRIBUTIONS = """import sys
from importlib import metadata
for name in sys.argv[1:]:
    try:
        metadata.distribution(name)
    except metadata.PackageNotFoundError:
        print(name)
"""


def check_python_packages(python: str, packages, why: str) -> None:
    """The recipe's `requires.packages_pip`, looked up in the interpreter its `{python}` steps use.

    A spaCy model's wheel is installed with `--no-deps`: without spacy in that interpreter it
    would install and then fail at `spacy.load()`. Checked before anything is placed.
    """
    if not packages:
        return
    try:
        result = subprocess.run([python, "-c", _MISSING_DISTRIBUTIONS, *packages], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolError(f"{why} installs into the Python interpreter {python}, which could not be run: {exc}", hint="name a working interpreter with --python PATH") from exc
    if result.returncode != 0:
        raise ToolError(f"{why}: could not ask {python} which packages it has (exit code {result.returncode})", hint=(result.stderr.strip().splitlines() or [""])[-1] or None)
    missing = result.stdout.split()
    if missing:
        names = ", ".join(missing)
        raise ToolError(
            f"{why} needs the Python package{'s' if len(missing) > 1 else ''} {names}, which is not installed in {python}",
            hint=f"install {names} into that interpreter first, or name one that has it with --python PATH",
        )


def capture_outputs(txn: PackTransaction, step: ToolCommand) -> None:
    """The declared `produces`, or every new file the tool left in the staging area."""
    if step.produces:
        paths = []
        for rel in step.produces:
            if not (txn.files_root / rel).is_file():
                raise ToolError(f"`{step.command[0]}` did not produce {rel}", hint="check the tool's output above")
            paths.append(rel)
    else:
        paths = [p.relative_to(txn.files_root).as_posix() for p in txn.files_root.rglob("*") if p.is_file() and not p.is_symlink()]
    for rel in paths:
        if rel not in txn.files:
            copy = hash_file(txn.files_root / rel, plain=txn.writes.plain)
            txn.add(rel, copy.done, copy.sha256)
