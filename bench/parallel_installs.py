"""Ten `devops-cp data install` runs of ten different packs of one data type at once (issue 24).

    python -m bench.parallel_installs                       # 10 packs of 2 MiB, each served at 1 MiB/s
    python -m bench.parallel_installs --packs 10 --mib 2 --baseline /path/to/older/checkout

Each run is its own process; a loopback server (tests/support/localserver.py, in this process)
sends each body at --bps. Measured: one install alone, then all of them started at once; the
goal is that the ten finish in about the time of the slowest one alone. With --baseline, the same
for the code of another checkout (the code before a change), in the same run, after this one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from support.localserver import Fault, LocalServer  # noqa: E402


def make_home(root: Path, server: LocalServer, packs: int, size: int, bps: int) -> dict[str, str]:
    import hashlib

    home = root / "home"
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and not k.startswith(("DEVOPS_CP_", "XDG_"))}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), XDG_DATA_HOME=str(home / ".local/share"),
               XDG_STATE_HOME=str(home / ".local/state"), XDG_CONFIG_HOME=str(home / ".config"),
               DEVOPS_CP_NO_GPU="1", DEVOPS_CP_CATALOG=str(root / "catalog"))
    (root / "catalog").mkdir(parents=True)
    config = home / ".config" / "devops-cp" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'lock_timeout = 600\n[data_dirs]\nsample = "{home / "data"}"\n')
    for n in range(packs):
        data = os.urandom(size)
        url = server.add(f"/{root.name}/p{n}.bin", data)
        server.set_fault(f"/{root.name}/p{n}.bin", Fault(trickle_bps=bps))
        (root / "catalog" / f"p{n}.toml").write_text(
            f'id = "p{n}"\nlabel = "Pack {n}"\ndata_type = "sample"\n[[install._default]]\ntype = "download"\n'
            f'url = "{url}"\ndest = "p{n}/p{n}.bin"\nsize_bytes = {size}\nchecksum = "sha256:{hashlib.sha256(data).hexdigest()}"\n'
        )
    return env


def install(repo: Path, env: dict[str, str], packs: list[str]) -> tuple[float, list[int]]:
    """Seconds until every run finished, and their exit codes."""
    command = [sys.executable, "-c", "import sys; from devops_cp.cli import main; sys.argv[0] = 'devops-cp'; main()", "data", "install"]
    started = time.perf_counter()
    children = [subprocess.Popen([*command, pack, "--progress", "none"], cwd=repo, env={**env, "PYTHONPATH": str(repo)},
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for pack in packs]
    codes = [child.wait() for child in children]
    return time.perf_counter() - started, codes


def measure(repo: Path, server: LocalServer, tmp: Path, packs: int, size: int, bps: int) -> dict:
    alone_env = make_home(tmp / f"alone-{len(os.listdir(tmp))}", server, 1, size, bps)
    alone, alone_codes = install(repo, alone_env, ["p0"])
    many_env = make_home(tmp / f"many-{len(os.listdir(tmp))}", server, packs, size, bps)
    together, codes = install(repo, many_env, [f"p{n}" for n in range(packs)])
    return {"code": str(repo), "one_alone_s": round(alone, 2), "all_at_once_s": round(together, 2),
            "ratio": round(together / alone, 2), "exit_codes": sorted(alone_codes + codes)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.parallel_installs", description=__doc__.splitlines()[0])
    parser.add_argument("--packs", type=int, default=10)
    parser.add_argument("--mib", type=float, default=2.0, help="size of each pack in MiB (default 2)")
    parser.add_argument("--bps", type=int, default=2**20, help="bytes per second the server sends each body (default 1 MiB/s)")
    parser.add_argument("--baseline", type=Path, help="also measure the code of this checkout (an older commit)")
    args = parser.parse_args(argv)
    size = int(args.mib * 2**20)
    with tempfile.TemporaryDirectory(prefix="devops-cp-parallel-") as tmp, LocalServer() as server:
        results = [measure(REPO, server, Path(tmp), args.packs, size, args.bps)]
        if args.baseline:
            results.append(measure(args.baseline.resolve(), server, Path(tmp), args.packs, size, args.bps))
    print(f"{args.packs} packs of {args.mib:g} MiB at {args.bps} B/s each, load average {os.getloadavg()[0]:.2f}")
    for r in results:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
