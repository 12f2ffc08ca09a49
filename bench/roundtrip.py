"""`python -m bench.roundtrip`: the update round trip (status --export, bundle --for, sideload)
against a full bundle of the same file, and against `rsync --only-write-batch` and
`zstd --patch-from` on the same pairs of files.

    python -m bench.roundtrip                      # the three pairs of the issue (64 MiB, 1 GiB, 1 GiB)
    python -m bench.roundtrip --quick              # 8 MiB and 32 MiB versions of them: a smoke test
    python -m bench.roundtrip --workdir DIR --markdown out.md

Pairs: 1 MiB changed in place in a 64 MiB file; 1% of a 1 GiB file's 4 KiB pages changed at
scattered places; 1,000,003 bytes inserted in the middle of a 1 GiB file. Every contender is a
child process measured by bench.measure (wall, CPU, peak RSS); the host's data dir for each
sideload is a hard-linked copy of the installed one (sideload only renames over it). Warm cache.
"""

from __future__ import annotations

import argparse
import functools
import random
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.data import write_incompressible
from bench.machine import description
from bench.measure import Sample, loadavg, run
from bench.server import Server, clean_env
from bench.workloads import cli_path

MIB, GIB = 1 << 20, 1 << 30
PAGE = 4096


@dataclass(frozen=True)
class Pair:
    name: str
    size: int
    change: str  # "inplace", "pages" or "insert"


PAIRS = (Pair("64 MiB, 1 MiB changed in place", 64 * MIB, "inplace"), Pair("1 GiB, 1% of 4 KiB pages changed", GIB, "pages"), Pair("1 GiB, 1,000,003 bytes inserted", GIB, "insert"))
QUICK = (Pair("8 MiB, 1 MiB changed in place", 8 * MIB, "inplace"), Pair("32 MiB, 1% of pages changed", 32 * MIB, "pages"), Pair("32 MiB, 1,000,003 bytes inserted", 32 * MIB, "insert"))


def make_pair(pair: Pair, old: Path, new: Path, seed: int = 1) -> None:
    write_incompressible(old, pair.size)
    rng = random.Random(seed)
    if pair.change == "insert":
        with open(old, "rb") as src, open(new, "wb") as out:
            half = pair.size // 2
            shutil.copyfileobj(_limited(src, half), out, MIB)
            out.write(rng.randbytes(1_000_003))
            shutil.copyfileobj(src, out, MIB)
        return
    shutil.copyfile(old, new)
    with open(new, "r+b") as f:
        if pair.change == "inplace":
            f.seek(pair.size // 3)
            f.write(rng.randbytes(MIB))
        else:
            pages = pair.size // PAGE
            for page in rng.sample(range(pages), pages // 100):
                f.seek(page * PAGE)
                f.write(rng.randbytes(PAGE))


def _limited(f, size: int):
    class Reader:
        left = size

        def read(self, n: int = -1) -> bytes:
            data = f.read(min(n if n > 0 else self.left, self.left))
            self.left -= len(data)
            return data

    return Reader()


class Sides:
    """The host (installed the old file), the builder (serves the new one), their keys and catalogs."""

    def __init__(self, work: Path, server: Server):
        self.work, self.server = work, server
        self.key = work / "keys" / "site"

    def env(self, who: str) -> dict[str, str]:
        home = self.work / who / "home"
        env = clean_env(HOME=str(home), DEVOPS_CP_CATALOG=str(self.work / who / "catalog"), DEVOPS_CP_NO_GPU="1")
        for key in ("XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CONFIG_HOME", "DEVOPS_CP_CONFIG"):
            env.pop(key, None)
        return env

    def recipe(self, who: str, name: str, path: Path) -> None:
        catalog = self.work / who / "catalog"
        catalog.mkdir(parents=True, exist_ok=True)
        (catalog / "rt.toml").write_text(
            'id = "rt"\nlabel = "round trip"\ncategory = "data"\ndata_type = "ml_model"\nupdate_schedule = "weekly"\nsize_warning_mb = 100000\n\n'
            f'[install._default]\ntype = "download"\nurl = "{self.server.url(name)}"\ndest = "rt/rt.bin"\nsize_bytes = {path.stat().st_size}\n'
        )

    def ours(self, who: str, *args: str) -> Sample:
        return run(cli_path() + ["data", *args], env=self.env(who))


def measure_pair(pair: Pair, work: Path, log) -> dict:
    serve = work / "serve"
    shutil.rmtree(work, ignore_errors=True)
    serve.mkdir(parents=True)
    old, new = serve / "old.bin", serve / "new.bin"
    log(f"{pair.name}: generating ...")
    make_pair(pair, old, new)
    result: dict = {"pair": pair.name, "size": new.stat().st_size}
    with Server(serve) as server:
        sides = Sides(work, server)
        sides.key.parent.mkdir(parents=True)
        run(cli_path() + ["data", "keygen", "--no-passphrase", "-o", str(sides.key)], env=sides.env("keys"))
        sides.recipe("host", "old.bin", old)
        sides.recipe("builder", "new.bin", new)
        sides.ours("host", "install", "rt", "--yes", "--progress", "none")
        template = work / "host" / "home"
        export = work / "host.json"
        result["export"] = sides.ours("host", "status", "--export", str(export), "--progress", "none")
        result["export_bytes"] = export.stat().st_size
        log(f"  export {result['export_bytes']:,} bytes")
        for kind, extra in (("full", []), ("update", ["--for", str(export)])):
            out = work / f"{kind}.tar.zst"
            result[f"{kind}_build"] = sides.ours("builder", "bundle", "rt", *extra, "-o", str(out), "--key", f"{sides.key}.key", "--yes", "--progress", "none")
            result[f"{kind}_bytes"] = out.stat().st_size
            shutil.rmtree(work / "hostcopy", ignore_errors=True)
            subprocess.run(["cp", "-al", str(template.parent), str(work / "hostcopy")], check=True)  # sideload renames over files, never writes into them
            env = {**sides.env("hostcopy"), "DEVOPS_CP_CATALOG": str(work / "hostcopy" / "catalog")}
            result[f"{kind}_sideload"] = run(cli_path() + ["data", "sideload", str(out), "--trust", f"{sides.key}.pub", "--progress", "none"], env=env)
            installed = work / "hostcopy" / "home" / ".cache" / "whisper" / "rt" / "rt.bin"
            if subprocess.run(["cmp", "-s", str(installed), str(new)], check=False).returncode != 0:
                raise RuntimeError(f"{kind}: the sideloaded file is not the new version")
            log(f"  {kind}: bundle {result[f'{kind}_bytes']:,} bytes, build {result[f'{kind}_build'].wall:.1f} s, sideload {result[f'{kind}_sideload'].wall:.1f} s")
            out.unlink()
        host_file = template / ".cache" / "whisper" / "rt" / "rt.bin"
        batch = work / "rsync.batch"
        result["rsync"] = run(["rsync", "--only-write-batch", str(batch), "--no-whole-file", str(new), str(host_file)])
        result["rsync_bytes"] = batch.stat().st_size
        patch = work / "patch.zst"
        result["zstd"] = run(["zstd", "-q", "-f", f"--patch-from={host_file}", str(new), "-o", str(patch)])
        result["zstd_bytes"] = patch.stat().st_size
        log(f"  rsync batch {result['rsync_bytes']:,} bytes, zstd --patch-from {result['zstd_bytes']:,} bytes ({result['zstd'].maxrss_kib // 1024} MiB)")
    shutil.rmtree(work, ignore_errors=True)
    return result


def _percent(n: int, size: int) -> str:
    return f"{n:,} B ({100 * n / size:.2f}%)"


def table(results: list[dict]) -> str:
    rows = [
        "| pair | export (% of data) | update bundle (% of file) | full bundle | rsync batch | zstd --patch-from | zstd peak RSS |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        pct = functools.partial(_percent, size=r["size"])
        rows.append(f"| {r['pair']} | {pct(r['export_bytes'])} | {pct(r['update_bytes'])} | {pct(r['full_bytes'])} | {pct(r['rsync_bytes'])} | {pct(r['zstd_bytes'])} | {r['zstd'].maxrss_kib // 1024} MiB |")
    rows += ["", "| pair | full: build + sideload | update: build + sideload | ratio (target <= 1.5) | update build peak RSS | update sideload peak RSS | export | rsync batch |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        full = r["full_build"].wall + r["full_sideload"].wall
        update = r["update_build"].wall + r["update_sideload"].wall
        rows.append(
            f"| {r['pair']} | {r['full_build'].wall:.1f} + {r['full_sideload'].wall:.1f} s | {r['update_build'].wall:.1f} + {r['update_sideload'].wall:.1f} s | {update / full:.2f}x | "
            f"{r['update_build'].maxrss_kib // 1024} MiB | {r['update_sideload'].maxrss_kib // 1024} MiB | {r['export'].wall:.1f} s, {r['export'].maxrss_kib // 1024} MiB | {r['rsync'].wall:.1f} s, {r['rsync'].maxrss_kib // 1024} MiB |"
        )
    return "\n".join(rows)


def _first_line(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.splitlines()[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.roundtrip", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--only", type=int, nargs="*", help="pair numbers (1 2 3)")
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    for tool in ("rsync", "zstd"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: apt-get install -y {tool}")
    root = args.workdir or Path(tempfile.mkdtemp(prefix="devops-cp-roundtrip-"))
    root.mkdir(parents=True, exist_ok=True)
    load_start = loadavg()
    pairs = QUICK if args.quick else PAIRS
    chosen = [p for i, p in enumerate(pairs, 1) if not args.only or i in args.only]
    results = [measure_pair(p, root / f"pair{i}", lambda m: print(m, flush=True)) for i, p in enumerate(chosen, 1)]
    command = "python -m bench.roundtrip " + " ".join(argv if argv is not None else sys.argv[1:])
    text = f"{description(command.strip(), load_start, str(root))}\n- rsync: {_first_line(['rsync', '--version'])}\n\n{table(results)}\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
