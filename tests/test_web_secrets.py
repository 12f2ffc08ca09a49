"""Issue 18 rule 9, the panel's part: the token never reaches a log, and every file the bundle
reader opens for a panel request resolves inside [web] bundle_dirs."""

from __future__ import annotations

import os
import pty
import re
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bundle_helpers import PackSpec, new_key, write_bundle
from support.waiting import wait_for


def _serve(env_extra: dict | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", "from devops_cp.cli import main; main()", "serve", "--port", "0"],
        env={**os.environ, **(env_extra or {})}, **kw,
    )  # fmt: skip


def _get_or_none(http: httpx.Client, path: str):
    try:
        return http.get(path)
    except httpx.TransportError:
        return None


def test_serve_not_on_a_terminal_writes_the_token_to_a_private_file_and_no_log_shows_it(isolated_env):
    proc = _serve(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        match = re.fullmatch(r"devops-cp control panel: (http://127\.0\.0\.1:\d+/)  \(token in (\S+), mode 0600: .*\)\n", line)
        assert match, line
        url, token_file = match.group(1), Path(match.group(2))
        assert token_file.parent == isolated_env.state / "devops-cp"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        assert len(token) >= 24 and token not in line
        with httpx.Client(base_url=url, timeout=10, trust_env=False) as http:
            page = wait_for(lambda: _get_or_none(http, f"/?token={token}"))  # the URL a person opens
            assert page.status_code == 200
            assert http.post("/audit/data-status", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    assert "GET /?token=[redacted]" in out + err  # the access log (on stdout) still says what was asked for
    assert token not in out + err


def test_serve_on_a_terminal_prints_the_url_with_its_token(isolated_env):
    main, child = pty.openpty()
    proc = _serve(stdout=child, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    os.close(child)
    try:
        buffer = b""
        while b"\n" not in buffer:
            buffer += os.read(main, 1024)
        line = buffer.decode().splitlines()[0]
        assert re.fullmatch(r"devops-cp control panel: http://127\.0\.0\.1:\d+/\?token=\S{24,}", line.strip()), line
        assert not (isolated_env.state / "devops-cp" / "web-token").exists()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        os.close(main)


# --- the parts of a bundle, inside bundle_dirs ---------------------------------------------------------


@pytest.fixture
def panel(isolated_env, tmp_path):
    from devops_cp.web import ControlPanel, web_settings
    from executor.config import load_config

    stick = tmp_path / "stick"
    stick.mkdir()
    isolated_env.write_config(f'[web]\ntoken = "a-token-for-tests"\nbundle_dirs = ["{stick}"]\n')
    settings, _ = web_settings(load_config())
    return ControlPanel(settings), stick


def _split_bundle(where: Path) -> Path:
    built = write_bundle(where / "x.tar.zst", [PackSpec("pack", {"a.bin": os.urandom(300_000)})], key=new_key(), split_size=100_000)
    return built.path


@pytest.mark.parametrize("moved", ["x.tar.zst.002", "x.tar.zst.parts.json", "x.tar.zst.parts.json.sig"])
def test_a_part_or_index_linked_from_outside_is_refused_whichever_part_is_named(panel, tmp_path, moved):
    from devops_cp.web import ApiError

    control, stick = panel
    outside = tmp_path / "outside"
    _split_bundle(outside)
    for path in outside.iterdir():  # the bundle on the stick, but one of its files a link to a copy elsewhere
        (stick / path.name).symlink_to(path) if path.name == moved else (stick / path.name).write_bytes(path.read_bytes())
    for named in ("x.tar.zst", "x.tar.zst.001"):
        with pytest.raises(ApiError) as info:
            control.bundle_path(named)
        assert info.value.status == 403 and moved in str(info.value)


def test_a_bundle_whose_files_are_all_inside_is_accepted(panel):
    control, stick = panel
    _split_bundle(stick)
    assert control.bundle_path("x.tar.zst.001") == Path(os.path.realpath(stick / "x.tar.zst.001"))


# --- rule 1 at the routes: pack ids are identifiers --------------------------------------------------


@pytest.mark.parametrize("pack", ["../../etc", "a/b", "Sample", "-rf", "x" * 65, "whisper-model@model_size=base"])
def test_the_install_route_takes_only_pack_ids(panel, pack):
    from devops_cp.web import create_app
    from support.webserver import ServerThread

    control, _ = panel
    with ServerThread(create_app(control.settings)) as url, httpx.Client(base_url=url, timeout=20, trust_env=False) as http:
        response = http.post("/api/jobs/install", json={"pack": pack}, headers={"Authorization": "Bearer a-token-for-tests"})
    assert response.status_code == 400 and "pack id" in response.json()["error"]


def test_the_sideload_route_takes_only_pack_ids_or_keys(panel):
    from devops_cp.web import create_app
    from support.webserver import ServerThread

    control, stick = panel
    _split_bundle(stick)
    with ServerThread(create_app(control.settings)) as url, httpx.Client(base_url=url, timeout=20, trust_env=False) as http:
        for packs in (["../x"], ["pack@a=b/c"], ["pack@../x=1"], [3]):
            response = http.post("/api/jobs/sideload", json={"bundle": "x.tar.zst", "packs": packs}, headers={"Authorization": "Bearer a-token-for-tests"})
            assert response.status_code == 400 and "pack ids or keys" in response.json()["error"], packs
