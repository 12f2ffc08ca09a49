"""`devops-cp data demo`: the whole direct-install path, offline.

Builds two sample packs (a model file and a tar.gz database that the recipe
extracts), serves them from an embedded server on 127.0.0.1 with a paced body so
the bars are visible, installs them into a temporary HOME, and shows `status`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import tarfile
import tempfile
from pathlib import Path

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from devops_cp.demo_server import DemoServer


DEMO_PACE = 40_000_000  # bytes a second


def sample_model(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


def sample_db_tar_gz(entries: int = 2000, seed: int = 11) -> bytes:
    """A vulnerability-DB-like set of JSON files, compressible like the real thing."""
    rng = random.Random(seed)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        advisories = [
            {"id": f"CVE-2026-{10000 + i}", "severity": rng.choice(["LOW", "MEDIUM", "HIGH", "CRITICAL"]), "package": f"pkg-{rng.randrange(500)}", "fixed": f"{rng.randrange(9)}.{rng.randrange(20)}.{rng.randrange(40)}"}
            for i in range(entries)
        ]
        for name, payload in (("sample-db_20261126/advisories.json", advisories), ("sample-db_20261126/metadata.json", {"Version": 2, "UpdatedAt": "2026-11-26T00:00:00Z"})):
            data = json.dumps(payload, indent=1).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_790_000_000
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _recipe(pack_id: str, label: str, body: str) -> str:
    return f'id = "{pack_id}"\nlabel = "{label}"\ncategory = "data"\ndata_type = "sample"\nupdate_schedule = "weekly"\nsize_warning_mb = 500\n{body}'


def write_sample_catalog(server: DemoServer, catalog: Path, model_size: int) -> list[str]:
    model = sample_model(model_size)
    db = sample_db_tar_gz()
    model_url = server.add("/packs/sample-model.bin", model)
    db_url = server.add("/packs/sample-db.tar.gz", db)
    catalog.mkdir(parents=True, exist_ok=True)
    (catalog / "sample-model.toml").write_text(
        _recipe(
            "sample-model",
            "Sample model (demo)",
            f'size_estimate_mb = {model_size / 1e6:.1f}\n\n[install._default]\ntype = "download"\nurl = "{model_url}"\n'
            f'dest = "models/sample-model.bin"\nsize_bytes = {len(model)}\nsize_exact = true\nchecksum = "sha256:{hashlib.sha256(model).hexdigest()}"\n',
        )
    )
    (catalog / "sample-db.toml").write_text(
        _recipe(
            "sample-db",
            "Sample vulnerability DB (demo)",
            f'size_estimate_mb = {len(db) / 1e6:.1f}\n\n[install._default]\ntype = "download"\nurl = "{db_url}"\ndest = "db"\n'
            f'size_bytes = {len(db)}\nchecksum = "sha256:{hashlib.sha256(db).hexdigest()}"\nextract = "tar.gz"\nstrip_components = 1\n',
        )
    )
    return ["sample-model", "sample-db"]


@click.command()
@click.option("--size", default="48MiB", show_default=True, help="Size of the sample model file.")
@click.option("--keep", is_flag=True, help="Keep the temporary HOME and print its path.")
@click.option("--progress", type=click.Choice(["auto", "bar", "plain", "json", "none"]), default="auto", show_default=True)
def demo(size: str, keep: bool, progress: str) -> None:
    """Install built-in sample packs from an embedded server on 127.0.0.1 into a temporary HOME."""
    # Imported here, not at the top: every command's start-up would pay for the embedded server.
    from devops_cp.app import App
    from devops_cp.demo_server import DemoServer
    from devops_cp.render import progress_renderer
    from manifests.units import fmt_size, parse_size

    home = Path(tempfile.mkdtemp(prefix="devops-cp-demo-"))
    saved = {k: os.environ.get(k) for k in ("HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CONFIG_HOME", "DEVOPS_CP_CATALOG", "DEVOPS_CP_CONFIG")}
    os.environ.update(HOME=str(home), DEVOPS_CP_CATALOG=str(home / "catalog"))
    for key in ("XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CONFIG_HOME", "DEVOPS_CP_CONFIG"):
        os.environ.pop(key, None)
    try:
        # Paced so the bars move where a person can see them.
        with DemoServer(bytes_per_second=DEMO_PACE) as server:
            packs = write_sample_catalog(server, home / "catalog", parse_size(size))
            click.echo(f"serving sample packs from {server.base_url}; HOME={home}", err=True)
            app = App()
            plans = [app.plan(p) for p in packs]
            with progress_renderer(progress) as listener:
                engine = app.engine(listener)
                try:
                    outcomes = engine.install(plans, confirm=lambda *_: True)
                finally:
                    engine.close()
        failed = [o for o in outcomes if o.error]
        for outcome in outcomes:
            if outcome.error:
                click.echo(f"error: {outcome.key}: {outcome.error}", err=True)
            else:
                r = outcome.record
                click.echo(f"installed {r.key}: {len(r.files)} file(s), {fmt_size(r.size)}, sha256 verified, in {r.data_dir}")
        if failed:
            raise SystemExit(failed[0].error.exit_code)
        click.echo("demo finished: the same engine runs `install`, `bundle` and `sideload`.")
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if keep:
            click.echo(f"kept {home}", err=True)
        else:
            import shutil

            shutil.rmtree(home, ignore_errors=True)
