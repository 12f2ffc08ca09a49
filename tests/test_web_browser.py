"""The page in a real headless browser (Debian's chromium driven by Playwright; no browser download).

An install from a deliberately slow local server: the size warning first, then the
step modal's bar moves through intermediate values to 100% and a success message.
Screenshots go to tests/artifacts/; one is kept as docs/screenshot-progress.png (written when
missing, or refreshed with DEVOPS_CP_UPDATE_SCREENSHOT=1).
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import time
from pathlib import Path

import pytest

from support.localserver import Fault, LocalServer
from devops_cp.web import create_app, web_settings
from support.webserver import ServerThread
from executor.config import load_config

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "tests" / "artifacts"
DOCS_SCREENSHOT = REPO / "docs" / "screenshot-progress.png"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
TOKEN = "browser-test-token-0123"
SIZE = 12 * 2**20

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

pytestmark = [
    pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed (pip install playwright; .ci/run does)"),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)"),
]


@pytest.fixture
def panel(tmp_path, monkeypatch):
    """A catalog with one large-ish pack served slowly (about 4 s) and one GPU-only option."""
    for name in ("HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CONFIG_HOME"):
        (tmp_path / name.lower()).mkdir()
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    config = tmp_path / "config.toml"
    config.write_text(f'[web]\ntoken = "{TOKEN}"\n')
    monkeypatch.setenv("DEVOPS_CP_CATALOG", str(catalog))
    monkeypatch.setenv("DEVOPS_CP_CONFIG", str(config))
    monkeypatch.setenv("DEVOPS_CP_NO_GPU", "1")

    data = random.Random(5).randbytes(SIZE)
    with LocalServer() as files:
        url = files.add("/packs/slow-model.bin", data)
        files.set_fault("/packs/slow-model.bin", Fault(delay_per_chunk=0.02))  # 192 chunks of 64 KiB
        step = f'type = "download"\nurl = "{url}"\ndest = "slow-model.bin"\nsize_bytes = {SIZE}\nsize_exact = true\nchecksum = "sha256:{hashlib.sha256(data).hexdigest()}"\n'
        (catalog / "slow-model.toml").write_text(
            'id = "slow-model"\nlabel = "Slow sample model"\ncategory = "data"\ndata_type = "ml_model"\n'
            'description = "A 12 MiB sample served slowly from 127.0.0.1."\nsize_warning_mb = 10\n'
            '[[choices]]\nid = "model_size"\nlabel = "Model size"\n'
            '[[choices.options]]\nvalue = "small"\nlabel = "Small (12 MiB)"\ndefault = true\n'
            '[[choices.options]]\nvalue = "huge"\nlabel = "Huge (GPU)"\nrequires = { hardware = { gpu_vendor = "nvidia" } }\n'
            f"[install.small]\n{step}\n[install.huge]\n{step}"
        )
        settings, _ = web_settings(load_config())
        with ServerThread(create_app(settings)) as base:
            yield base, data


def _percent(width: str) -> float:
    assert width.endswith("%"), width
    return float(width[:-1])


def test_install_progress_bar_moves_to_100_percent(panel):
    base, data = panel
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 720})
            problems: list[str] = []
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)

            page.goto(f"{base}/?token={TOKEN}")
            card = page.locator('.pack[data-pack="slow-model"]')
            card.wait_for()
            assert "token=" not in page.url  # taken into sessionStorage, out of the address bar
            gpu = card.locator('option[value="huge"]')
            assert gpu.is_disabled() and "requires an NVIDIA GPU" in gpu.inner_text()
            assert "large download" in card.locator(".size").inner_text()

            # A refusal reads as a message with its hint, not a stack trace.
            page.fill("#bundle-path", "/etc/passwd")
            page.click('#sideload-form button[type="submit"]')
            banner = page.locator("#banner.error")
            banner.wait_for()
            assert "no bundle directories are configured" in banner.inner_text() and "bundle_dirs" in banner.inner_text()

            page.fill("#bundle-path", "")
            page.evaluate("window.scrollTo(0, document.querySelector('[data-pack=\"slow-model\"]').offsetTop - 120)")

            card.locator("button.install").click()
            dialog = page.locator("#confirm-dialog")
            dialog.wait_for(state="visible")
            assert "12.0 MiB" in dialog.inner_text() and "10 Mbps" in dialog.inner_text()
            page.locator("#confirm-yes").click()

            row = page.locator(".step-row").first
            row.wait_for()
            samples, midway = [], None
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                state = row.evaluate(
                    "r => ({width: r.querySelector('.progress-bar').style.width,"
                    " label: r.querySelector('.progress-label').textContent,"
                    " stats: r.querySelector('.progress-stats').textContent,"
                    " done: !document.getElementById('job-result').hidden})"
                )
                if state["width"]:
                    samples.append(state)
                if midway is None and 30 <= _percent(state["width"] or "0%") <= 70:
                    midway = ARTIFACTS / "progress-midway.png"
                    page.screenshot(path=str(midway))
                if state["done"]:
                    break
                time.sleep(0.1)

            result = page.locator("#job-result")
            result.wait_for(state="visible")
            assert "success" in result.get_attribute("class")
            assert "installed slow-model@model_size=small: 1 file(s), 12.0 MiB" in result.inner_text()
            page.screenshot(path=str(ARTIFACTS / "progress-done.png"))
            page.locator("#status table").get_by_text("slow-model@model_size=small").wait_for()
        finally:
            browser.close()

    percents = [_percent(s["width"]) for s in samples]
    intermediate = sorted({p for p in percents if 0 < p < 100})
    assert len(intermediate) >= 3, percents
    assert percents == sorted(percents) and percents[-1] == 100
    moving = [s for s in samples if 0 < _percent(s["width"]) < 100]
    for s in moving:
        assert re.fullmatch(r"\d{1,2}% \(\d+(\.\d)? (B|KiB|MiB)/12\.0 MiB\)", s["label"]), s["label"]
        assert s["label"].startswith(f"{int(_percent(s['width']))}%")
    assert any("/s" in s["stats"] and "ETA" in s["stats"] for s in moving)
    assert samples[-1]["label"] == "100% (12.0 MiB/12.0 MiB)"
    # No script errors and no Content-Security-Policy violations; the refused sideload's 403 is the only failed request.
    assert [p for p in problems if "status of 403" not in p] == [], problems

    assert midway is not None and midway.stat().st_size > 1000, percents
    # The committed copy is refreshed on request only, so that a test run leaves the tree clean.
    if not DOCS_SCREENSHOT.exists() or os.environ.get("DEVOPS_CP_UPDATE_SCREENSHOT"):
        DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(midway, DOCS_SCREENSHOT)
