"""The tests' local HTTP server (tests/support/localserver.py) as its own process, so its
CPU never counts against a contender, and a check that it is much faster than the client."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.measure import run

TESTS = Path(__file__).resolve().parents[1] / "tests"  # support.localserver lives there


class Server:
    def __init__(self, root: Path, *, rate_per_connection: int | None = None):
        """`rate_per_connection`: bytes per second each connection may carry (W6: a CDN's cap)."""
        self.root = root
        self.rate_per_connection = rate_per_connection
        self.process: subprocess.Popen | None = None
        self.base_url = ""

    def __enter__(self) -> "Server":
        self.process = subprocess.Popen(
            [sys.executable, "-m", "support.localserver", str(self.root)]
            + (["--rate-per-connection", str(self.rate_per_connection)] if self.rate_per_connection else []),
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=clean_env(PYTHONPATH=str(TESTS)),
        )
        self.base_url = self.process.stdout.readline().strip().rstrip("/")
        if not self.base_url.startswith("http://"):
            self.process.kill()
            raise RuntimeError("the local server did not start")
        return self

    def __exit__(self, *exc) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without proxies (loopback must not go through one)."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
    env["NO_PROXY"] = "127.0.0.1,localhost"
    env.update(extra)
    return env


def curl_to_null(url: str, runs: int) -> list[float]:
    """Seconds for `curl -o /dev/null URL`: the server's speed with a client that writes nothing."""
    return [run(["curl", "-sS", "--noproxy", "*", "-o", "/dev/null", url], env=clean_env()).wall for _ in range(runs)]
