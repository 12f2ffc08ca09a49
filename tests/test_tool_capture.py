"""tool_command steps in all three modes: direct install, bundle (captured), sideload.

A stand-in `trivy` (a small Python script that the test puts on PATH, recording its
arguments) writes db/trivy.db and db/metadata.json into its --cache-dir, as
`trivy image --download-db-only --cache-dir DIR` does. When bundling, that directory is
the bundle's staging area; what the tool leaves there travels in the signed bundle as
ordinary files (size and sha256 in the manifest, checked when sideloaded), and lands
in the Trivy cache dir of an air-gapped host that has no trivy at all.

Also: recipes whose offline step differs from the fetching step (`bundle` / `offline`
tables, or install steps split by the planner), run after the sideload with {data_dir}
the real data dir and {python} the interpreter named with --python.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

from conftest import fresh_host, read_manifest


FAKE_TRIVY = """#!{python}
import json, os, shutil, sys
args = sys.argv[1:]
with open(os.environ["FAKE_TRIVY_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
cache = args[args.index("--cache-dir") + 1]
source = os.environ["FAKE_TRIVY_SOURCE"]
os.makedirs(os.path.join(cache, "db"), exist_ok=True)
for name in ("trivy.db", "metadata.json"):
    shutil.copyfile(os.path.join(source, name), os.path.join(cache, "db", name))
os.makedirs(os.path.join(cache, "fanal"), exist_ok=True)  # trivy's scan cache: not part of the DB
open(os.path.join(cache, "fanal", "fanal.db"), "wb").write(b"scan cache")
print("fake trivy: DB written to", cache, flush=True)
"""


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()






def keypair(cli, tmp_path: Path) -> tuple[Path, Path]:
    result = cli("keygen", "-o", str(tmp_path / "site"), "--no-passphrase")
    assert result.exit_code == 0, result.stderr
    return tmp_path / "site.key", tmp_path / "site.pub"


@pytest.fixture
def fake_trivy(tmp_path, monkeypatch):
    """A stand-in trivy on PATH; returns (bin dir, log file, the DB bytes it writes)."""
    bin_dir, source = tmp_path / "trivy-bin", tmp_path / "trivy-source"
    bin_dir.mkdir()
    source.mkdir()
    db = os.urandom(200_000)
    metadata = json.dumps({"Version": 2, "NextUpdate": "2030-01-01T06:00:00Z", "UpdatedAt": "2030-01-01T00:00:00Z", "DownloadedAt": "2030-01-01T00:01:00Z"}).encode()
    (source / "trivy.db").write_bytes(db)
    (source / "metadata.json").write_bytes(metadata)
    tool = bin_dir / "trivy"
    tool.write_text(FAKE_TRIVY.replace("{python}", sys.executable))
    tool.chmod(0o755)
    log = tmp_path / "trivy-calls.jsonl"
    monkeypatch.setenv("FAKE_TRIVY_LOG", str(log))
    monkeypatch.setenv("FAKE_TRIVY_SOURCE", str(source))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir, log, db, metadata


def calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


TRIVY_STEP = {"type": "tool_command", "command": ["trivy", "image", "--download-db-only", "--cache-dir", "{data_dir}"], "produces": ["db/trivy.db", "db/metadata.json"]}


def test_direct_install_runs_the_tool_into_the_trivy_cache(cli, write_recipe, isolated_env, fake_trivy):
    _, log, db, metadata = fake_trivy
    write_recipe("trivy-via-tool", [TRIVY_STEP], data_type="vulnerability_db", requires={"tools": ["trivy"]})
    result = cli("install", "trivy-via-tool", "--progress", "none")
    assert result.exit_code == 0, result.stderr
    trivy_cache = isolated_env.cache / "trivy"
    assert (trivy_cache / "db" / "trivy.db").read_bytes() == db
    assert (trivy_cache / "db" / "metadata.json").read_bytes() == metadata
    assert not (trivy_cache / "fanal").exists()  # produces names what the pack is; the rest is dropped
    [args] = calls(log)
    staged = Path(args[args.index("--cache-dir") + 1])
    assert staged.is_relative_to(trivy_cache / ".devops-cp-staging") and not staged.exists()
    record = isolated_env.record("trivy-via-tool")
    assert record["files"] == [
        {"path": "db/metadata.json", "size": len(metadata), "sha256": sha(metadata)},
        {"path": "db/trivy.db", "size": len(db), "sha256": sha(db)},
    ]


def test_bundle_captures_the_tool_output_and_sideload_places_it_where_trivy_looks(cli, write_recipe, isolated_env, fake_trivy, tmp_path, monkeypatch):
    bin_dir, log, db, metadata = fake_trivy
    write_recipe("trivy-via-tool", [TRIVY_STEP], data_type="vulnerability_db", requires={"tools": ["trivy"]})
    key, pub = keypair(cli, tmp_path)
    out = tmp_path / "usb" / "trivy.tar.zst"
    out.parent.mkdir()

    result = cli("bundle", "trivy-via-tool", "-o", str(out), "--key", str(key), "--progress", "none", "--json")
    assert result.exit_code == 0, result.stderr
    [args] = calls(log)
    staged = Path(args[args.index("--cache-dir") + 1])
    bundle_staging = isolated_env.cache / "devops-cp" / "bundle-staging"
    assert staged.is_relative_to(bundle_staging)  # {data_dir} is the staging area, not ~/.cache/trivy
    assert not staged.exists() and not (isolated_env.cache / "trivy").exists()

    manifest = read_manifest(out)
    [pack] = manifest["packs"]
    assert pack["offline_steps"] == [] and pack["source"] == "tool:trivy"
    assert sorted((f["path"], f["size"], f["sha256"]) for f in manifest["files"]) == [
        ("db/metadata.json", len(metadata), sha(metadata)),
        ("db/trivy.db", len(db), sha(db)),
    ]  # ordinary verified files; trivy's fanal/ scan cache stayed behind

    # The air-gapped host: a fresh HOME, no trivy on PATH, no recipe in its catalog.
    monkeypatch.setenv("PATH", os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != str(bin_dir)))
    cache = fresh_host(monkeypatch, tmp_path / "offline")
    result = cli("sideload", str(out), "--trust", str(pub), "--progress", "none", "--json")
    assert result.exit_code == 0, result.stderr
    assert (cache / "trivy" / "db" / "trivy.db").read_bytes() == db
    assert (cache / "trivy" / "db" / "metadata.json").read_bytes() == metadata
    assert sorted(p.relative_to(cache / "trivy").as_posix() for p in (cache / "trivy").rglob("*") if p.is_file()) == ["db/metadata.json", "db/trivy.db"]
    [outcome] = result.json()["results"]
    assert outcome["ok"] and {f["path"]: f["sha256"] for f in outcome["record"]["files"]} == {"db/trivy.db": sha(db), "db/metadata.json": sha(metadata)}
    assert len(calls(log)) == 1  # trivy ran once, on the online machine


def test_a_tool_without_produces_is_captured_whole_when_the_recipe_bundles_it(cli, isolated_env, tmp_path, monkeypatch):
    """A `bundle` table's tool command with no `produces`: every file it leaves is carried.

    (In `install`, a tool command without `produces` would be taken for a host-side action
    such as `pip install` and deferred to the offline host; so the install step declares them.)
    """
    writer = "import os, sys; d = sys.argv[1]; os.makedirs(d + '/a/b'); open(d + '/a/b/one.bin', 'wb').write(b'1' * 10); open(d + '/two.txt', 'w').write('two')"
    (isolated_env.catalog / "loose-tool.toml").write_text(
        'id = "loose-tool"\nlabel = "Loose tool"\ndata_type = "sample"\n'
        "[install._default]\n"
        'type = "tool_command"\n'
        f"command = {json.dumps(['{python}', '-c', writer, '{data_dir}'])}\n"
        'produces = ["a/b/one.bin", "two.txt"]\n'
        "[bundle._default]\n"
        'type = "tool_command"\n'
        f"command = {json.dumps(['{python}', '-c', writer, '{data_dir}'])}\n"
    )
    key, pub = keypair(cli, tmp_path)
    out = tmp_path / "loose.tar.zst"
    result = cli("bundle", "loose-tool", "-o", str(out), "--key", str(key), "--progress", "none")
    assert result.exit_code == 0, result.stderr
    assert sorted(f["path"] for f in read_manifest(out)["files"]) == ["a/b/one.bin", "two.txt"]
    fresh_host(monkeypatch, tmp_path / "offline")
    result = cli("sideload", str(out), "--trust", str(pub), "--progress", "none")
    assert result.exit_code == 0, result.stderr
    target = tmp_path / "offline" / "home" / ".local" / "share" / "devops-cp" / "samples"
    assert (target / "a" / "b" / "one.bin").read_bytes() == b"1" * 10 and (target / "two.txt").read_text() == "two"


# --- a different step offline ---------------------------------------------------------------

MARK = "import json, os, sys; open(os.environ['MARK_LOG'], 'a').write(json.dumps({'step': sys.argv[1], 'data_dir': sys.argv[2], 'python': sys.executable, 'files': sorted(os.listdir(sys.argv[2]))}) + '\\n')"
WRITE = "import sys; open(sys.argv[1] + '/' + sys.argv[2], 'wb').write(sys.argv[3].encode())"


def marks(path: Path) -> list[dict]:
    """What the MARK steps saw (the data dir's own staging folder left out: the executor's, not the pack's)."""
    found = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    for mark in found:
        mark["files"] = [f for f in mark["files"] if f != ".devops-cp-staging"]
    return found


def named_python(tmp_path: Path) -> Path:
    """Another name for this interpreter, as `--python PATH` would name a venv's python."""
    link = tmp_path / "named-bin" / "python3"
    link.parent.mkdir()
    link.symlink_to(sys.executable)
    return link


def test_install_steps_that_capture_nothing_run_on_the_offline_host(cli, isolated_env, tmp_path, monkeypatch):
    """No `bundle`/`offline` table: the bundle fetches the capturing steps, and the tool command
    that captures nothing (a pip install, fc-cache) is deferred to the host that installs."""
    mark_log = tmp_path / "marks.jsonl"
    monkeypatch.setenv("MARK_LOG", str(mark_log))
    (isolated_env.catalog / "split-steps.toml").write_text(
        'id = "split-steps"\nlabel = "Split steps"\ndata_type = "sample"\n'
        "[[install._default]]\n"
        'type = "tool_command"\n'
        f"command = {json.dumps(['{python}', '-c', WRITE, '{data_dir}', 'data.bin', 'payload'])}\n"
        'produces = ["data.bin"]\n'
        "[[install._default]]\n"
        'type = "tool_command"\n'
        f"command = {json.dumps(['{python}', '-c', MARK, 'register', '{data_dir}'])}\n"
    )
    result = cli("info", "split-steps", "--json")
    [variant] = result.json()["variants"]
    assert len(variant["direct_install"]) == 2 and len(variant["bundle_fetch"]) == 1 and "register" in variant["offline_install"][-1]

    key, pub = keypair(cli, tmp_path)
    out = tmp_path / "split.tar.zst"
    result = cli("bundle", "split-steps", "-o", str(out), "--key", str(key), "--progress", "none")
    assert result.exit_code == 0, result.stderr
    assert marks(mark_log) == []  # nothing registered on the online machine
    [pack] = read_manifest(out)["packs"]
    assert pack["offline_steps"] == [{"type": "tool_command", "command": ["{python}", "-c", MARK, "register", "{data_dir}"]}]

    python = named_python(tmp_path)
    fresh_host(monkeypatch, tmp_path / "offline", recipes=(isolated_env.catalog / "split-steps.toml",))  # its offline step is the host's own
    result = cli("sideload", str(out), "--trust", str(pub), "--python", str(python), "--progress", "none")
    assert result.exit_code == 0, result.stderr
    target = tmp_path / "offline" / "home" / ".local" / "share" / "devops-cp" / "samples"
    assert (target / "data.bin").read_bytes() == b"payload"
    assert marks(mark_log) == [{"step": "register", "data_dir": str(target), "python": str(python), "files": ["data.bin"]}]


def test_recipe_bundle_and_offline_tables_replace_the_install_steps(cli, isolated_env, tmp_path, monkeypatch):
    mark_log = tmp_path / "marks.jsonl"
    monkeypatch.setenv("MARK_LOG", str(mark_log))

    def tool(*args: str, produces: str | None = None) -> str:
        return 'type = "tool_command"\n' + f"command = {json.dumps(['{python}', '-c', *args])}\n" + (f'produces = ["{produces}"]\n' if produces else "")

    (isolated_env.catalog / "three-ways.toml").write_text(
        'id = "three-ways"\nlabel = "Three ways"\ndata_type = "sample"\n'
        "[[install._default]]\n" + tool(WRITE, "{data_dir}", "direct.bin", "direct", produces="direct.bin")
        + "[[install._default]]\n" + tool(MARK, "direct-install", "{data_dir}")
        + "[bundle._default]\n" + tool(WRITE, "{data_dir}", "carried.bin", "carried", produces="carried.bin")
        + "[offline._default]\n" + tool(MARK, "offline", "{data_dir}")
    )
    result = cli("install", "three-ways", "--progress", "none")
    assert result.exit_code == 0, result.stderr
    assert [m["step"] for m in marks(mark_log)] == ["direct-install"]
    assert [f["path"] for f in isolated_env.record("three-ways")["files"]] == ["direct.bin"]

    key, pub = keypair(cli, tmp_path)
    out = tmp_path / "three.tar.zst"
    result = cli("bundle", "three-ways", "-o", str(out), "--key", str(key), "--progress", "none")
    assert result.exit_code == 0, result.stderr
    manifest = read_manifest(out)
    assert [f["path"] for f in manifest["files"]] == ["carried.bin"]
    assert [s["command"][3] for s in manifest["packs"][0]["offline_steps"]] == ["offline"]

    fresh_host(monkeypatch, tmp_path / "offline", recipes=(isolated_env.catalog / "three-ways.toml",))
    result = cli("sideload", str(out), "--trust", str(pub), "--progress", "none")
    assert result.exit_code == 0, result.stderr
    target = tmp_path / "offline" / "home" / ".local" / "share" / "devops-cp" / "samples"
    offline = marks(mark_log)[-1]
    assert offline["step"] == "offline" and offline["data_dir"] == str(target) and offline["files"] == ["carried.bin"]
    assert offline["python"] == sys.executable  # --python's default: this interpreter


def test_a_failing_tool_while_bundling_writes_no_bundle(cli, write_recipe, tmp_path):
    write_recipe("broken-tool", [{"type": "tool_command", "command": ["{python}", "-c", "import sys; print('registry said no'); sys.exit(2)"], "produces": ["x.db"]}])
    key, _ = keypair(cli, tmp_path)
    out = tmp_path / "broken.tar.zst"
    result = cli("bundle", "broken-tool", "-o", str(out), "--key", str(key), "--progress", "none")
    assert result.exit_code == 7 and "registry said no" in result.stderr
    assert list(tmp_path.glob("broken.tar.zst*")) == []
