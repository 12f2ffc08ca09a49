"""The audit route under load (issue 24): `POST /audit/data-status` with 200 packs installed.

    python -m bench.audit_route                       # 200 packs, 20 clients for 20 s
    python -m bench.audit_route --packs 200 --clients 20 --seconds 20 --baseline /path/to/older/checkout

`devops-cp serve` runs as its own process over an isolated HOME holding PACKS install records
(5 files each, on disk). First one client posts one request after another (its median is the
yardstick), then CLIENTS clients post at once for SECONDS; the clients are threads of this
process, the server is another. Goal: p99 under load below 20 times one client's median.
With --baseline, the same is measured for the server code of another checkout (the code
before a change), in the same run, after this one.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOKEN = "bench-token-0123456789"


def make_home(root: Path, packs: int) -> dict[str, str]:
    """An isolated HOME with `packs` installed packs, written as a commit would write them."""
    home = root / "home"
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and not k.startswith(("DEVOPS_CP_", "XDG_"))}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), XDG_DATA_HOME=str(home / ".local/share"),
               XDG_STATE_HOME=str(home / ".local/state"), XDG_CONFIG_HOME=str(home / ".config"), DEVOPS_CP_NO_GPU="1")
    data_dir = home / "data" / "samples"
    config = home / ".config" / "devops-cp" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'[web]\ntoken = "{TOKEN}"\n[data_dirs]\nsample = "{data_dir}"\n')
    records = home / ".local" / "state" / "devops-cp" / "records"
    records.mkdir(parents=True)
    for n in range(packs):
        files = []
        for f in range(5):
            rel = f"pack{n:03d}/file{f}.bin"
            body = os.urandom(4096 + n)
            (data_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (data_dir / rel).write_bytes(body)
            files.append({"path": rel, "size": len(body), "sha256": "0" * 64})
        record = {
            "key": f"pack{n:03d}", "pack_id": f"pack{n:03d}", "label": f"Pack {n}", "data_type": "sample", "data_dir": str(data_dir),
            "choices": {}, "files": files, "source": "https://example.invalid/pack.bin", "installed_at": "2026-12-01T00:00:00Z",
            "fetched_at": "2026-12-01T00:00:00Z", "checksum_verified": True, "update_schedule": "daily", "bundle_created": None, "extra": {},
        }
        (records / f"pack{n:03d}.json").write_text(json.dumps(record, indent=2, sort_keys=True))
    return env


class ServeProcess:
    """`devops-cp serve --port 0` of the checkout at `repo`."""

    def __init__(self, repo: Path, env: dict[str, str]):
        self.process = subprocess.Popen(
            [sys.executable, "-c", "import sys; from devops_cp.cli import main; sys.argv[0] = 'devops-cp'; main()", "serve", "--port", "0"],
            cwd=repo, env={**env, "PYTHONPATH": str(repo)}, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        line = self.process.stdout.readline()
        if "http://" not in line:
            self.process.kill()
            raise RuntimeError(f"devops-cp serve did not start: {line!r}")
        self.port = int(line.split("http://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
        threading.Thread(target=self.process.stdout.read, daemon=True).start()  # its access log must never fill the pipe
        for _ in range(200):  # the URL is printed before uvicorn listens
            try:
                http.client.HTTPConnection("127.0.0.1", self.port, timeout=5).connect()
                return
            except ConnectionRefusedError:
                time.sleep(0.05)

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def post_status(conn: http.client.HTTPConnection, port: int) -> float:
    started = time.perf_counter()
    conn.request("POST", "/audit/data-status", body=b"{}", headers={
        "content-type": "application/json", "x-devops-cp-token": TOKEN, "host": f"127.0.0.1:{port}", "origin": f"http://127.0.0.1:{port}",
    })
    response = conn.getresponse()
    body = response.read()
    if response.status != 200:
        raise RuntimeError(f"{response.status}: {body[:300]!r}")
    return time.perf_counter() - started


def one_client(port: int, requests: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    post_status(conn, port)  # warm: the first request imports what the route needs
    times = [post_status(conn, port) for _ in range(requests)]
    conn.close()
    return times


def many_clients(port: int, clients: int, seconds: float) -> list[float]:
    times: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    errors: list[str] = []

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        mine = []
        try:
            while time.monotonic() < deadline:
                mine.append(post_status(conn, port))
        except (OSError, http.client.HTTPException, RuntimeError) as exc:
            errors.append(repr(exc))
        conn.close()
        with lock:
            times.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} client(s) failed, the first: {errors[0]}")
    return times


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(repo: Path, env: dict[str, str], clients: int, seconds: float) -> dict:
    server = ServeProcess(repo, env)
    try:
        single = statistics.median(one_client(server.port, 50))
        loaded = many_clients(server.port, clients, seconds)
    finally:
        server.close()
    p50, p99 = percentile(loaded, 0.5), percentile(loaded, 0.99)
    return {"code": str(repo), "one_client_median_ms": round(single * 1000, 1), "requests": len(loaded),
            "p50_ms": round(p50 * 1000, 1), "p99_ms": round(p99 * 1000, 1), "p99_over_one_client_median": round(p99 / single, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.audit_route", description=__doc__.splitlines()[0])
    parser.add_argument("--packs", type=int, default=200)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--baseline", type=Path, help="also measure the server code of this checkout (an older commit)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="devops-cp-audit-") as tmp:
        env = make_home(Path(tmp), args.packs)
        results = [measure(REPO, env, args.clients, args.seconds)]
        if args.baseline:
            results.append(measure(args.baseline.resolve(), env, args.clients, args.seconds))
    print(f"{args.packs} packs installed, {args.clients} clients for {args.seconds:.0f} s, load average {os.getloadavg()[0]:.2f}")
    for r in results:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
