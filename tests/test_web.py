"""The control-panel routes, driven over HTTP against a real uvicorn on 127.0.0.1.

Each test gets its own HOME/XDG directories, catalog and config file; packs are
served by a LocalServer (deliberately slow where a test needs to watch progress).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import os
import random
import subprocess
import sys
import types
from pathlib import Path

import httpx
import pytest

from devops_cp import reports
from devops_cp.app import App
from support.localserver import Fault, LocalServer
from devops_cp.web import create_app, web_settings
from support.waiting import wait_for
from support.webserver import ServerThread
from executor.config import load_config

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MiB = 2**20


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path, monkeypatch):
    """An isolated HOME, XDG dirs, catalog and config file (with [web] token and bundle_dirs)."""
    for name in ("HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CONFIG_HOME"):
        path = tmp_path / name.lower()
        path.mkdir()
        monkeypatch.setenv(name, str(path))
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    config = tmp_path / "config.toml"
    config.write_text(f'[web]\ntoken = "{TOKEN}"\nbundle_dirs = ["{bundles}"]\n')
    monkeypatch.setenv("DEVOPS_CP_CATALOG", str(catalog))
    monkeypatch.setenv("DEVOPS_CP_CONFIG", str(config))
    monkeypatch.setenv("DEVOPS_CP_NO_GPU", "1")
    return types.SimpleNamespace(root=tmp_path, catalog=catalog, bundles=bundles, config=config)


@pytest.fixture
def files():
    with LocalServer() as server:
        yield server


@pytest.fixture
def web(env):
    """The control panel on 127.0.0.1 (settings from the config file, as `serve` reads them)."""
    settings, generated = web_settings(load_config(), host="127.0.0.1")
    assert not generated and settings.token == TOKEN
    with ServerThread(create_app(settings)) as url:
        yield url


@pytest.fixture
def client(web):
    with httpx.Client(base_url=web, timeout=120.0, trust_env=False) as c:  # bounds a broken test only: a loaded machine must not fail a good one
        yield c


def sample(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def add_pack(env, files: LocalServer, pack_id: str, data: bytes, *, delay: float = 0.0, checksum: str | None = None,
             size_warning_mb: float = 500, gpu_option: bool = False) -> str:
    """A recipe whose one download step is served by `files`; `delay` paces each 64 KiB chunk."""
    url = files.add(f"/packs/{pack_id}.bin", data)
    if delay:
        files.set_fault(f"/packs/{pack_id}.bin", Fault(delay_per_chunk=delay))
    digest = checksum or hashlib.sha256(data).hexdigest()
    step = (f'type = "download"\nurl = "{url}"\ndest = "{pack_id}.bin"\nsize_bytes = {len(data)}\n'
            f'size_exact = true\nchecksum = "sha256:{digest}"\n')
    text = (f'id = "{pack_id}"\nlabel = "Test {pack_id}"\ncategory = "data"\ndata_type = "sample"\n'
            f'update_schedule = "weekly"\nsize_warning_mb = {size_warning_mb}\n')
    if gpu_option:
        text += ('\n[[choices]]\nid = "variant"\nlabel = "Variant"\n'
                 '[[choices.options]]\nvalue = "cpu"\nlabel = "CPU"\ndefault = true\n'
                 '[[choices.options]]\nvalue = "gpu"\nlabel = "GPU"\nrequires = { hardware = { gpu_vendor = "nvidia" } }\n'
                 f'\n[install.cpu]\n{step}\n[install.gpu]\n{step.replace(f"size_bytes = {len(data)}", f"size_bytes = {len(data) * 3}")}')
    else:
        text += f"\n[install._default]\n{step}"
    (env.catalog / f"{pack_id}.toml").write_text(text)
    return url


def start_install(client: httpx.Client, pack: str, **body) -> str:
    response = client.post("/api/jobs/install", json={"pack": pack, **body}, headers=AUTH)
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


def read_events(client: httpx.Client, job_id: str, headers: dict | None = None) -> list[dict]:
    """The whole SSE stream of a job, parsed: [{id, event, data}], until the server closes it (a
    stream left open fails on the client's read timeout)."""
    events, current = [], {}
    with client.stream("GET", f"/api/jobs/{job_id}/events", headers=headers or {}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line:
                if "event" in current:
                    events.append({**current, "data": json.loads(current["data"])})
                current = {}
            elif line.startswith(":"):
                continue
            else:
                field, _, value = line.partition(": ")
                current[field] = value
    return events


def pack_entry(client: httpx.Client, pack_id: str) -> dict:
    return next(p for p in client.get("/api/packs").json()["packs"] if p["id"] == pack_id)


# --- the SSE stream --------------------------------------------------------------------------------


def test_install_stream_from_first_event_to_last(env, files, client):
    data = sample(2 * MiB)
    add_pack(env, files, "paced", data, delay=0.02)  # 32 chunks, about 0.7 s
    events = read_events(client, start_install(client, "paced"))
    kinds = [e["event"] for e in events]

    assert kinds[0] == "step_started"
    assert kinds[-1] == "success"
    assert kinds[-2] == "download_done"
    assert set(kinds[1:-2]) == {"progress"}
    assert [int(e["id"]) for e in events] == sorted(int(e["id"]) for e in events)

    progress = [e["data"] for e in events if e["event"] == "progress"]
    for p in progress:
        assert {"step", "downloaded", "total", "percent", "speed_bps", "eta_seconds"} <= p.keys()
        assert p["step"] == 0 and p["total"] == len(data) and p["pack"] == "paced"
    downloaded = [p["downloaded"] for p in progress]
    assert downloaded == sorted(downloaded)
    intermediate = {p["percent"] for p in progress if 0 < p["percent"] < 100}
    assert len(intermediate) >= 5, intermediate
    assert progress[-1]["percent"] == 100 and downloaded[-1] == len(data)
    assert any(p["speed_bps"] > 0 and p["eta_seconds"] is not None for p in progress)
    assert events[-2]["data"]["size"] == len(data)

    result = events[-1]["data"]
    assert result["message"].startswith("installed paced: 1 file(s)")
    assert result["results"][0]["ok"] and result["results"][0]["checksum_verified"]
    installed = Path(result["results"][0]["data_dir"]) / "paced.bin"
    assert installed.read_bytes() == data


def test_checksum_failure_ends_with_an_error_event_a_person_can_act_on(env, files, client):
    data = sample(256 * 1024)
    add_pack(env, files, "corrupt", data, checksum="0" * 64)
    events = read_events(client, start_install(client, "corrupt"))

    assert events[0]["event"] == "step_started"
    final = events[-1]
    assert final["event"] == "error"
    assert "checksum mismatch" in final["data"]["message"] and "corrupt" in final["data"]["message"]
    assert final["data"]["hint"] == "the data is corrupted or was changed; nothing was installed"
    assert final["data"]["exit_code"] == 3 and final["data"]["type"] == "ChecksumMismatch"
    assert any(e["event"] == "notice" and "downloading once more" in e["data"]["message"] for e in events)
    assert client.post("/audit/data-status", headers=AUTH).json()["packs"] == []


def test_a_late_client_gets_the_current_state_first(env, files, client):
    data = sample(2 * MiB)
    add_pack(env, files, "slow", data, delay=0.05)  # about 1.6 s
    job_id = start_install(client, "slow")

    def progressed():
        summary = client.get(f"/api/jobs/{job_id}").json()
        return [p for p in summary["progress"] if p["percent"] >= 20]

    seen = wait_for(progressed)[0]["downloaded"]
    events = read_events(client, job_id)
    assert [e["event"] for e in events[:2]] == ["step_started", "progress"]
    assert events[1]["data"]["downloaded"] >= seen > 0  # where the job is now, not from zero
    assert events[-1]["event"] == "success"

    # After the end: the whole state at once, then the stream closes (read_events returns).
    replay = read_events(client, job_id)
    assert [e["event"] for e in replay] == ["step_started", "progress", "download_done", "success"]
    assert replay[1]["data"]["percent"] == 100

    # A reconnecting EventSource sends Last-Event-ID and gets only what it missed.
    resumed = read_events(client, job_id, headers={"Last-Event-ID": replay[2]["id"]})
    assert [e["event"] for e in resumed] == ["success"]


# --- starting work -----------------------------------------------------------------------------------


def test_one_job_per_pack(env, files, client):
    add_pack(env, files, "busy", sample(2 * MiB), delay=0.03)
    add_pack(env, files, "other", sample(64 * 1024, seed=2))
    first = start_install(client, "busy")

    again = client.post("/api/jobs/install", json={"pack": "busy"}, headers=AUTH)
    assert again.status_code == 409
    assert again.json()["job_id"] == first and "already has a running job" in again.json()["error"]
    assert pack_entry(client, "busy")["running_job"] == first

    other = start_install(client, "other")  # a different pack is not blocked
    assert read_events(client, first)[-1]["event"] == "success"
    assert read_events(client, other)[-1]["event"] == "success"
    again = read_events(client, start_install(client, "busy"))[-1]  # free again
    assert again["event"] == "success" and again["data"]["message"].startswith("already installed busy (upstream unchanged): 1 file(s)")
    assert again["data"]["results"][0]["already_installed"] is True
    assert len([r for r in files.requests if r.method == "GET" and r.path == "/packs/busy.bin"]) == 1  # intact: no byte moved


def test_a_large_pack_needs_confirm_and_shows_estimated_times(env, files, client):
    data = sample(2 * MiB)
    add_pack(env, files, "big", data, size_warning_mb=1)

    pack = pack_entry(client, "big")
    assert pack["large"] and pack["size_bytes"] == len(data)
    assert set(pack["estimated_times"]) == {"10 Mbps", "50 Mbps", "100 Mbps"}

    refused = client.post("/api/jobs/install", json={"pack": "big"}, headers=AUTH)
    assert refused.status_code == 409
    body = refused.json()
    assert body["confirm_required"] and body["size_bytes"] == len(data)
    assert body["estimated_times"] == pack["estimated_times"] and "large download" in body["error"]
    assert files.requests == []  # refused before the first byte
    assert client.post("/audit/data-status", headers=AUTH).json()["packs"] == []

    events = read_events(client, start_install(client, "big", confirm=True))
    assert events[-1]["event"] == "success"


def test_pack_list_gates_options_by_hardware(env, files, client):
    add_pack(env, files, "model", sample(1000), gpu_option=True)
    pack = pack_entry(client, "model")
    cpu, gpu = pack["choices"][0]["options"]
    assert cpu["available"] and cpu["default"] and cpu["size_bytes"] == 1000
    assert not gpu["available"] and gpu["why_not"] == "requires an NVIDIA GPU and none was detected"
    assert gpu["size_bytes"] == 3000

    refused = client.post("/api/jobs/install", json={"pack": "model", "choices": {"variant": "gpu"}}, headers=AUTH)
    assert refused.status_code == 409
    assert "requires an NVIDIA GPU" in refused.json()["error"] and refused.json()["hint"]


# --- security ------------------------------------------------------------------------------------------


POSTS = ["/audit/data-status", "/audit/data-check-updates", "/api/jobs/install", "/api/jobs/sideload"]


@pytest.mark.parametrize("path", POSTS)
def test_every_post_needs_the_token_and_a_matching_origin(env, files, client, web, path):
    add_pack(env, files, "guarded", sample(1000))
    body = {"pack": "guarded", "bundle": str(env.bundles / "x.tar.zst")}

    missing = client.post(path, json=body)
    assert missing.status_code == 401 and "token is required" in missing.json()["error"]
    wrong = client.post(path, json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403 and wrong.json()["error"] == "wrong token"
    foreign = client.post(path, json=body, headers={**AUTH, "Origin": "http://evil.example"})
    assert foreign.status_code == 403 and "another origin" in foreign.json()["error"]
    other_port = client.post(path, json=body, headers={**AUTH, "Origin": "http://127.0.0.1:1"})
    assert other_port.status_code == 403
    null_origin = client.post(path, json=body, headers={**AUTH, "Origin": "null"})
    assert null_origin.status_code == 403

    assert files.bytes_sent("/packs/guarded.bin") == 0  # nothing was started
    same_origin = client.post(path, json=body, headers={"X-DevOps-CP-Token": TOKEN, "Origin": web})
    assert same_origin.status_code not in (401, 403), same_origin.text
    if same_origin.status_code == 202:  # let the job end inside this test's HOME
        assert read_events(client, same_origin.json()["job_id"])[-1]["event"] == "success"


def test_reads_refuse_a_foreign_host_header(client):
    assert client.get("/api/packs").status_code == 200
    rebound = client.get("/api/packs", headers={"Host": "attacker.example:8765"})
    assert rebound.status_code == 400 and "Host" in rebound.json()["error"]


def test_sideload_paths_must_stay_inside_the_bundle_dirs(env, client):
    outside = env.root / "outside.tar.zst"
    outside.write_bytes(b"x")
    (env.bundles / "link.tar.zst").symlink_to(outside)
    (env.bundles / "split.tar.zst.001").write_bytes(b"x")
    (env.bundles / "split.tar.zst.002").symlink_to(outside)

    def sideload(bundle):
        return client.post("/api/jobs/sideload", json={"bundle": bundle}, headers=AUTH)

    for bundle in ["/etc/passwd", str(outside), "../outside.tar.zst", str(env.bundles / ".." / "outside.tar.zst"), str(env.bundles / "link.tar.zst")]:
        response = sideload(bundle)
        assert response.status_code == 403, bundle
        assert "outside the bundle directories" in response.json()["error"] and str(env.bundles) in response.json()["hint"]
    assert sideload(str(env.bundles / "split.tar.zst")).status_code == 403  # a part that links out
    assert sideload(str(env.bundles / "missing.tar.zst")).status_code == 404
    assert sideload("").status_code == 400


SIDELOAD_REQUEST_FIELDS = {"path", "trust", "packs", "allow_downgrade", "force", "hardware", "warnings"}


def fake_sideload_api(calls: list):
    """Stands in for sideload.api with the same shape: SideloadRequest, TrustOptions, inspect_bundle, sideload_bundle."""
    from executor.events import Progress, StepDone, StepStarted
    from manifests.errors import SignatureError

    @dataclasses.dataclass(frozen=True)
    class TrustOptions:
        trust_files: tuple = ()
        allow_unsigned: bool = False
        allow_expired: bool = False

    @dataclasses.dataclass
    class SideloadRequest:
        path: Path
        trust: TrustOptions = TrustOptions()
        packs: tuple = ()
        allow_downgrade: bool = False
        force: bool = False
        dry_run: bool = False
        hardware: object = None
        warnings: list = dataclasses.field(default_factory=list)

    def inspect_bundle(path, trust_files=()):
        return {"packs": [{"id": "bundled", "key": "bundled"}]}

    def sideload_bundle(engine, request):
        calls.append(request)
        if request.trust.allow_unsigned:
            raise SignatureError("site.tar.zst: the manifest signature does not verify", hint="check the trusted keys")
        engine.listener(StepStarted("sideload", 0, "bundle site", 10))
        engine.listener(Progress("sideload", 0, "bundle site", 5, 10, 50, 1.0, 5.0))
        engine.listener(StepDone("sideload", 0, "bundle site", 10))
        request.warnings.append("bundled needs about 4000 MiB of GPU memory (none MiB detected)")
        return []

    return types.SimpleNamespace(TrustOptions=TrustOptions, SideloadRequest=SideloadRequest, inspect_bundle=inspect_bundle, sideload_bundle=sideload_bundle)


def test_sideload_route_runs_sideload_bundle_as_a_job(env, client, monkeypatch):
    calls: list = []
    fake = fake_sideload_api(calls)
    monkeypatch.setitem(sys.modules, "sideload.api", fake)
    import sideload

    monkeypatch.setattr(sideload, "api", fake, raising=False)  # `from sideload import api` reads the package's attribute once it was imported
    (env.bundles / "site.tar.zst").write_bytes(b"bundle")

    started = client.post("/api/jobs/sideload", json={"bundle": "site.tar.zst"}, headers=AUTH)
    assert started.status_code == 202, started.text
    assert started.json()["job"]["packs"] == ["bundled"]  # one job per pack, read from the manifest
    events = read_events(client, started.json()["job_id"])
    assert [e["event"] for e in events] == ["step_started", "progress", "download_done", "notice", "success"]
    assert events[-1]["data"]["warnings"] == [events[-2]["data"]["message"]]
    request = calls[0]
    assert request.path == (env.bundles / "site.tar.zst").resolve() and request.packs == ()
    assert not request.trust.allow_unsigned and not request.force

    failed = client.post("/api/jobs/sideload", json={"bundle": "site.tar.zst", "allow_unsigned": True, "packs": ["bundled"]}, headers=AUTH)
    final = read_events(client, failed.json()["job_id"])[-1]
    assert final["event"] == "error" and final["data"]["exit_code"] == 3 and final["data"]["hint"] == "check the trusted keys"
    assert calls[1].trust.allow_unsigned and calls[1].packs == ("bundled",)


def test_the_real_sideload_api_has_the_shape_the_route_uses():
    api = pytest.importorskip("sideload.api", reason="sideload.api is not in this tree yet")
    assert callable(api.sideload_bundle) and callable(api.inspect_bundle)
    assert SIDELOAD_REQUEST_FIELDS <= {f.name for f in dataclasses.fields(api.SideloadRequest)}
    assert {"allow_unsigned", "allow_expired"} <= {f.name for f in dataclasses.fields(api.TrustOptions)}
    assert list(inspect.signature(api.sideload_bundle).parameters)[:2] == ["engine", "request"]


def test_sideload_a_real_signed_bundle_through_the_route(env, files, client):
    """bundle (online side) -> the bundle dir -> POST /api/jobs/sideload -> installed, with progress."""
    build = pytest.importorskip("bundler.build", reason="the bundler is not in this tree yet")
    from executor.config import config_dir
    from executor.keys import TrustStore
    from manifests import signing

    data = sample(512 * 1024, seed=9)
    add_pack(env, files, "carried", data)
    key, public = signing.generate_keypair()
    app = App()
    engine = app.engine()
    try:
        build.build_bundle(engine, [app.plan("carried")], env.bundles / "signed.tar.zst", private_key=key)
        build.build_bundle(engine, [app.plan("carried")], env.bundles / "unsigned.tar.zst", private_key=None)
    finally:
        engine.close()
    TrustStore.in_config_dir(config_dir()).add(signing.public_key_pem(public))

    refused = client.post("/api/jobs/sideload", json={"bundle": "unsigned.tar.zst"}, headers=AUTH)
    assert refused.status_code == 202 and refused.json()["job"]["packs"] == ["carried"]
    final = read_events(client, refused.json()["job_id"])[-1]
    assert final["event"] == "error" and final["data"]["exit_code"] == 4 and "--allow-unsigned" in final["data"]["hint"]

    started = client.post("/api/jobs/sideload", json={"bundle": str(env.bundles / "signed.tar.zst")}, headers=AUTH)
    events = read_events(client, started.json()["job_id"])
    assert events[0]["event"] == "step_started" and events[-1]["event"] == "success", events[-1]
    assert any(e["event"] == "progress" for e in events)
    assert events[-1]["data"]["message"].startswith("installed carried: 1 file(s)")
    installed = client.post("/audit/data-status", headers=AUTH).json()["packs"]
    assert [p["key"] for p in installed] == ["carried"]
    assert (Path(installed[0]["data_dir"]) / "carried.bin").read_bytes() == data


def test_errors_are_json_and_never_leak_a_traceback(env, files, client, monkeypatch):
    assert client.get("/api/jobs/nope/events").json()["error"] == "no such job"
    unknown = client.post("/api/jobs/install", json={"pack": "no-such-pack"}, headers=AUTH)
    assert unknown.status_code == 404 and "known packs" in unknown.json()["hint"]
    bad = client.post("/api/jobs/install", content=b"{not json", headers=AUTH)
    assert bad.status_code == 400 and bad.json()["error"] == "the request body is not valid JSON"

    def broken(app):
        raise RuntimeError("secret detail in /srv/internal/path")

    monkeypatch.setattr(reports, "status_document", broken)
    crashed = client.post("/audit/data-status", headers=AUTH)
    assert crashed.status_code == 500
    assert crashed.json() == {"error": "internal error", "hint": "the server log has the details; please report it"}

    add_pack(env, files, "bug", sample(1000))
    monkeypatch.setattr("executor.engine.Engine.install", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("secret detail")))
    final = read_events(client, start_install(client, "bug"))[-1]
    assert final["event"] == "error" and final["data"]["message"] == "bug: internal error"
    assert "secret" not in json.dumps(final["data"])


# --- the audit documents ----------------------------------------------------------------------------------


def _without_clock(document: dict) -> dict:
    """age_seconds and next_update_seconds move with the clock between two calls."""
    return json.loads(json.dumps(document, default=str), object_hook=lambda d: {k: v for k, v in d.items() if k not in ("age_seconds", "next_update_seconds")})


def test_audit_routes_return_the_cli_documents(env, files, client):
    add_pack(env, files, "audited", sample(4096))
    add_pack(env, files, "never", sample(100, seed=3))
    assert read_events(client, start_install(client, "audited"))[-1]["event"] == "success"

    status = client.post("/audit/data-status", headers=AUTH)
    assert status.status_code == 200
    assert status.json() == json.loads(json.dumps(reports.status_document(App()), default=str))
    assert [p["key"] for p in status.json()["packs"]] == ["audited"]

    updates = client.post("/audit/data-check-updates", headers=AUTH).json()
    expected = reports.check_updates_document(App())
    assert _without_clock(updates) == _without_clock(expected)
    row = next(r for r in updates["packs"] if r["pack"] == "audited")
    assert row["reason"] == "upstream unchanged" and abs(row["age_seconds"] - next(r for r in expected["packs"] if r["pack"] == "audited")["age_seconds"]) <= 2
    assert next(r for r in updates["packs"] if r["pack"] == "never")["reason"] == "never downloaded"


# --- `devops-cp serve` ---------------------------------------------------------------------------------------


def test_serve_prints_a_url_with_a_fresh_token_once_it_answers(env):
    env.config.write_text("")  # no [web] token: one is generated and printed
    proc = subprocess.Popen(
        [sys.executable, "-c", "from devops_cp.cli import main; main()", "serve", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy(),
    )
    try:
        line = proc.stdout.readline()  # not a terminal: the token is in a 0600 file (tests/test_web_secrets.py)
        assert line.startswith("devops-cp control panel: http://127.0.0.1:"), line
        url = line.split(": ", 1)[1].split()[0]
        token = Path(line.split("(token in ", 1)[1].split(",", 1)[0]).read_text().strip()
        assert len(token) >= 24
        with httpx.Client(base_url=url, timeout=10, trust_env=False) as http:
            page = http.get("/")  # at once, no retry: the URL is printed only once the socket accepts connections
            assert "<title>devops-cp" in page.text and page.headers["x-frame-options"] == "DENY"
            assert http.post("/audit/data-status").status_code == 401
            assert http.post("/audit/data-status", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_web_settings_validate_the_config(env):
    from manifests.errors import ConfigError

    env.config.write_text('[web]\ntoken = "short"\n')
    with pytest.raises(ConfigError, match="at least 8"):
        web_settings(load_config())
    env.config.write_text('[web]\nbundle_dir = "/tmp"\n')
    with pytest.raises(ConfigError, match="not a known key"):
        web_settings(load_config())
    env.config.write_text("")
    settings, generated = web_settings(load_config(), host="0.0.0.0")
    assert generated and len(settings.token) >= 24 and settings.allowed_hosts is None and settings.bundle_dirs == ()
