"""The five workloads of issue 6, each side by side with its peers.

Every contender is a child process. Ours runs the installed CLI with an isolated
HOME (fresh for every run, so data dirs are empty), a catalog of benchmark recipes
(DEVOPS_CP_CATALOG) pointing at the local server, `--yes --progress none`.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from bench import data
from bench.measure import Contender, compare, run
from bench.server import Server, clean_env
from bench.table import ratio_table, results_table

GIB = 1 << 30
MIB = 1 << 20
CAP_PER_CONNECTION = 16 * MIB  # W6's server: bytes per second per connection
SEED_SCRIPT = Path(__file__).with_name("seed_download.py")
# The `no sync` rows: what durability costs. UNSAFE outside a benchmark (README "Config").
NO_SYNC_CONFIG = "[writes]\ndurable = false\n"
ZSTD_TAR = "tar -I 'zstd -3 -T0' -cf"


def cli_path() -> list[str]:
    """The console script itself (a pyenv shim would add its own start-up to every run)."""
    script = Path(sysconfig.get_path("scripts")) / "devops-cp"
    return [str(script)] if script.exists() else [sys.executable, "-c", "from devops_cp.cli import main; main()"]


@dataclass
class Sizes:
    big: int  # the incompressible file of workloads 1-3
    text: int  # the vulnerability-DB-like JSON of workloads 2-3
    small_count: int  # workload 4
    small_mean: int
    memory: tuple[int, ...]  # workload 5

    @classmethod
    def full(cls, size_gib: float) -> "Sizes":
        return cls(int(size_gib * GIB), 200 * MIB, 20_000, 8192, (1 * GIB, 2 * GIB, 4 * GIB))

    @classmethod
    def quick(cls) -> "Sizes":
        return cls(32 * MIB, 4 * MIB, 500, 8192, (16 * MIB, 32 * MIB, 64 * MIB))


def _bytes(size: int | None) -> str:
    return "(not kept)" if size is None else f"{size:,} bytes"


def _bash(script: str) -> list[str]:
    return ["bash", "-o", "pipefail", "-c", script]


def _fresh(*paths: Path) -> Callable[[], None]:
    def prepare() -> None:
        for path in paths:
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir(parents=True)

    return prepare


def _remove(*paths: Path) -> Callable[[], None]:
    def cleanup() -> None:
        for path in paths:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    return cleanup


def _expect_file(path: Path, size: int) -> Callable[[], None]:
    def check() -> None:
        if not path.is_file() or path.stat().st_size != size:
            raise AssertionError(f"{path} was not produced with {size} bytes")

    return check


def _expect_exists(path: Path) -> Callable[[], None]:
    def check() -> None:
        if not path.is_file():
            raise AssertionError(f"{path} was not produced")

    return check


def _expect_count(root: Path, count: int) -> Callable[[], None]:
    def check() -> None:
        found = sum(1 for p in root.rglob("*") if p.is_file())
        if found < count:
            raise AssertionError(f"{root} holds {found} files, {count} expected")

    return check


@dataclass
class Bench:
    work: Path
    sizes: Sizes
    runs: int
    log: Callable[[str], None] = print
    server: Server | None = None
    sections: list[str] = field(default_factory=list)
    summary: list[tuple[str, str, str, float, float]] = field(default_factory=list)  # workload, ours, peer, ratio, target
    w2_made: bool = False  # W2's bundles exist for this run's data

    # --- set-up -------------------------------------------------------------------------

    @property
    def serve(self) -> Path:
        return self.work / "serve"

    @property
    def catalog(self) -> Path:
        return self.work / "catalog"

    @property
    def key(self) -> Path:
        return self.work / "keys" / "bench"

    @property
    def small_label(self) -> str:
        count = self.sizes.small_count
        return f"{count // 1000}k" if count >= 1000 and count % 1000 == 0 else str(count)

    def scratch(self, name: str) -> Path:
        return self.work / "runs" / name

    def home_of(self, name: str) -> Path:
        """The isolated HOME of one of our contenders (recreated empty before every run)."""
        return self.scratch(re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")) / "home"

    def generate(self) -> None:
        self.serve.mkdir(parents=True, exist_ok=True)
        self.log(f"generating data in {self.work} ...")
        self.big_sha = data.write_incompressible(self.serve / "big.bin", self.sizes.big)
        self.text_sha = data.write_text_like(self.serve / "vuln.json", self.sizes.text)
        self.text_size = (self.serve / "vuln.json").stat().st_size
        small_root = self.work / "small" / "smallfiles"
        self.small_total = data.write_small_files(small_root, self.sizes.small_count, self.sizes.small_mean)
        self.small_tar_sha = data.write_tar(small_root, self.serve / "small.tar", "smallfiles")
        self.small_tar_size = (self.serve / "small.tar").stat().st_size
        for path in (self.serve / "big.bin", self.serve / "vuln.json", self.serve / "small.tar"):
            data.warm(path)
        self.key.parent.mkdir(parents=True, exist_ok=True)
        if not self.key.with_suffix(".key").exists():  # a kept work dir keeps its key: its bundles stay verifiable
            run(cli_path() + ["data", "keygen", "--no-passphrase", "-o", str(self.key)], env=self.ours_env(self.work / "keys" / "home"))
        self.catalog.mkdir(parents=True, exist_ok=True)
        self.log(f"  big.bin {self.sizes.big / MIB:.0f} MiB, vuln.json {self.text_size / MIB:.0f} MiB, {self.sizes.small_count} small files ({self.small_total / MIB:.0f} MiB)")

    def write_recipes(self) -> None:
        """Recipes as a user would write them: exact size and sha256 of each download."""
        assert self.server is not None
        packs = {
            "bench-big": ("ml_model", "download", f'url = "{self.server.url("big.bin")}"\ndest = "bench/big.bin"\nsize_bytes = {self.sizes.big}\nsize_exact = true\nchecksum = "sha256:{self.big_sha}"\n'),
            "bench-vulndb": ("vulnerability_db", "download", f'url = "{self.server.url("vuln.json")}"\ndest = "bench/vuln.json"\nsize_bytes = {self.text_size}\nsize_exact = true\nchecksum = "sha256:{self.text_sha}"\n'),
            "bench-small": (
                "nltk_data",
                "download",
                f'url = "{self.server.url("small.tar")}"\ndest = "bench-small"\nsize_bytes = {self.small_tar_size}\nsize_exact = true\n'
                f'checksum = "sha256:{self.small_tar_sha}"\nextract = "tar"\nstrip_components = 1\nunpacked_size_bytes = {self.small_total}\n',
            ),
        }
        for pack_id, (data_type, kind, body) in packs.items():
            self.write_recipe(pack_id, data_type, f'type = "{kind}"\n{body}')

    def write_recipe(self, pack_id: str, data_type: str, step: str) -> None:
        (self.catalog / f"{pack_id}.toml").write_text(
            f'id = "{pack_id}"\nlabel = "{pack_id} (benchmark)"\ncategory = "data"\ndata_type = "{data_type}"\n'
            f'update_schedule = "manual"\nsize_warning_mb = 100000\n\n[install._default]\n{step}'
        )

    def ours_env(self, home: Path, *, no_sync: bool = False) -> dict[str, str]:
        env = clean_env(HOME=str(home), DEVOPS_CP_CATALOG=str(self.catalog), DEVOPS_CP_NO_GPU="1")
        for key in ("XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CONFIG_HOME", "DEVOPS_CP_CONFIG", "DEVOPS_CP_PLAIN_WRITES"):
            env.pop(key, None)
        if no_sync:  # beside the catalog: HOME is emptied before every run
            config = self.catalog.parent / "no-sync.toml"
            config.write_text(NO_SYNC_CONFIG)
            env["DEVOPS_CP_CONFIG"] = str(config)
        return env

    def ours(self, name: str, args: list[str], *, no_sync: bool = False, check: Callable[[], None] | None = None, keep: Callable[[], None] | None = None) -> Contender:
        home = self.home_of(name)

        def cleanup() -> None:
            if keep:
                keep()
            shutil.rmtree(home.parent, ignore_errors=True)

        return Contender(name, cli_path() + args + ["--yes", "--progress", "none"], ours=True, env=self.ours_env(home, no_sync=no_sync),
                         prepare=_fresh(home), check=check, cleanup=cleanup)

    def one_connection(self, contender: Contender) -> Contender:
        """`max_connections_per_download = 1` in a config file of its own: one stream, as before issue 23."""
        config = self.work / "one-connection.toml"
        config.write_text("max_connections_per_download = 1\n")
        contender.env["DEVOPS_CP_CONFIG"] = str(config)
        return contender

    def report(self, title: str, intro: str, contenders: list[Contender], size: int, targets: dict[tuple[str, str], float]) -> None:
        section = f"### {title}\n\n{intro}\n\n{results_table(contenders, size)}\n\n{ratio_table(contenders, targets)}\n"
        self.sections.append(section)
        by_name = {c.name: c for c in contenders}
        for (ours, peer), target in targets.items():
            self.summary.append((title.split(":")[0], ours, peer, by_name[ours].median_wall() / by_name[peer].median_wall(), target))
        self.log("\n" + section)

    # --- the workloads ------------------------------------------------------------------

    def server_check(self) -> None:
        from bench.server import curl_to_null

        walls = sorted(curl_to_null(self.server.url("big.bin"), max(3, self.runs)))
        median = walls[len(walls) // 2]
        section = (
            "### The local server\n\n`curl -o /dev/null` against `python -m support.localserver` (tests/support) (sendfile from the page cache), "
            f"{self.sizes.big / MIB:.0f} MiB: median {median:.2f} s, {self.sizes.big / median / 1e6:,.0f} MB/s "
            f"(runs: {', '.join(f'{w:.2f}' for w in walls)} s). Every client below is slower than this, so the server is not what is measured.\n"
        )
        self.sections.append(section)
        self.log(section)

    def w1_install(self) -> None:
        url, size = self.server.url("big.bin"), self.sizes.big
        out_dir = self.scratch("w1-peers")
        out = out_dir / "big.bin"
        q = shlex.quote
        curl = f"curl -sS --noproxy '*' -o {q(str(out))} {q(url)}"
        installed = lambda name: self.home_of(name) / ".cache" / "whisper" / "bench" / "big.bin"  # noqa: E731
        peer = dict(prepare=_fresh(out_dir), check=_expect_file(out, size), cleanup=_remove(out_dir))
        contenders = [
            self.ours("ours: install", ["data", "install", "bench-big"], check=_expect_file(installed("ours: install"), size)),
            self.ours("ours: install, no sync", ["data", "install", "bench-big"], no_sync=True, check=_expect_file(installed("ours: install, no sync"), size)),
            self.one_connection(self.ours("ours: install, 1 connection", ["data", "install", "bench-big"], check=_expect_file(installed("ours: install, 1 connection"), size))),
            Contender("curl -o", _bash(curl), **peer),
            Contender("curl -o + sync", _bash(f"{curl} && sync"), **peer),
            Contender("curl -o + sync FILE", _bash(f"{curl} && sync {q(str(out))}"), **peer),
            Contender("curl + sha256sum -c", _bash(f"{curl} && echo {self.big_sha}'  '{q(str(out))} | sha256sum -c --quiet -"), **peer),
            Contender("curl + openssl dgst", _bash(f"{curl} && test \"$(openssl dgst -sha256 -r {q(str(out))} | cut -c1-64)\" = {self.big_sha}"), **peer),
            Contender("seed loop (urllib 8 KiB + hash pass)", [sys.executable, str(SEED_SCRIPT), url, str(out), f"sha256:{self.big_sha}"], **peer),
        ]
        compare(contenders, self.runs, self.log)
        self.report(
            "W1: direct install",
            f"Install one {size / MIB:.0f} MiB incompressible file from the local server, sha256 checked against the recipe. "
            "Ours also stages, renames atomically and (by default) makes the pack durable with one syncfs before it becomes visible; "
            "`no sync` runs with the unsafe config key `[writes] durable = false`. `sync FILE` flushes only that file (fsync); plain `sync` the whole system.",
            contenders, size,
            {("ours: install", "curl -o"): 1.0, ("ours: install, no sync", "curl -o"): 1.0},
        )

    def _bundle_w2(self) -> Path:
        return self.work / "w2" / "bundle.tar.zst"

    def _keep_bundle(self, produced: Path, kept: Path) -> Callable[[], None]:
        def keep() -> None:
            if produced.is_file():
                kept.parent.mkdir(parents=True, exist_ok=True)
                for side in produced.parent.glob(produced.name + "*"):
                    os.replace(side, kept.with_name(kept.name + side.name[len(produced.name):]))

        return keep

    def _ours_bundle(self, name: str, packs: list[str], kept: Path) -> Contender:
        """Our signed bundle of `packs`; the last run's archive is kept at `kept` for the sideload workloads."""
        produced = self.home_of(name).parent / "out" / "bundle.tar.zst"
        ours = self.ours(name, ["data", "bundle", *packs, "-o", str(produced), "--key", f"{self.key}.key"], keep=self._keep_bundle(produced, kept))
        ours.prepare = _fresh(Path(ours.env["HOME"]), produced.parent)
        ours.check = _expect_exists(produced)
        return ours

    def w2_bundle(self) -> None:
        size = self.sizes.big + self.text_size
        peer_dir = self.scratch("w2-peers")
        peer_out = self.work / "w2" / "peer.tar.zst"
        peer_out.parent.mkdir(parents=True, exist_ok=True)
        files = "big.bin vuln.json"
        q = shlex.quote
        tar = f"{ZSTD_TAR} {q(str(peer_dir / 'peer.tar.zst'))} {files}"
        curl = " && ".join(f"curl -sS --noproxy '*' -O {q(self.server.url(f))}" for f in files.split())

        def keep_peer() -> None:
            if (peer_dir / "peer.tar.zst").is_file():
                os.replace(peer_dir / "peer.tar.zst", peer_out)

        peer = dict(cwd=self.serve, prepare=_fresh(peer_dir), cleanup=lambda: (keep_peer(), _remove(peer_dir)()))
        ours = self._ours_bundle("ours: bundle (signed)", ["bench-big", "bench-vulndb"], self._bundle_w2())
        contenders = [
            ours,
            Contender("sha256sum + tar/zstd -3 -T0", _bash(f"sha256sum {files} > {q(str(peer_dir / 'SUMS'))} && {tar}"), **peer),
            Contender("openssl dgst + tar/zstd -3 -T0", _bash(f"openssl dgst -sha256 -r {files} > {q(str(peer_dir / 'SUMS'))} && {tar}"), **peer),
            Contender("openssl dgst + tar/zstd + sync", _bash(f"openssl dgst -sha256 -r {files} > {q(str(peer_dir / 'SUMS'))} && {tar} && sync"), **peer),
            Contender("curl x2 + openssl dgst + tar/zstd", _bash(f"cd {q(str(peer_dir))} && {curl} && openssl dgst -sha256 -r {files} > SUMS && {ZSTD_TAR} peer.tar.zst {files}"),
                      prepare=_fresh(peer_dir), cleanup=_remove(peer_dir)),
        ]
        compare(contenders, self.runs, self.log)
        sizes = {path: path.stat().st_size if path.is_file() else None for path in (self._bundle_w2(), peer_out)}
        self.report(
            "W2: bundle",
            f"Bundle two packs, {self.sizes.big / MIB:.0f} MiB incompressible + {self.text_size / MIB:.0f} MiB vulnerability-DB-like JSON, "
            "signed. Ours downloads both from the local server, hashing as it fetches: the JSON pack is staged first, then the 1 GiB pack "
            "(sha256 and size pinned by its recipe) streams from the server straight into tar -> zstd -3 (multi-threaded; bytes that "
            "do not compress go around it as raw zstd frames) -> the archive (hashed as written, fsynced), then the signed checksum "
            "list. The peers start from the files already on disk, except the last one, which fetches them with curl first. "
            f"Archive size: ours {_bytes(sizes[self._bundle_w2()])}, the peers' {_bytes(sizes[peer_out])}.",
            contenders, size,
            {("ours: bundle (signed)", "sha256sum + tar/zstd -3 -T0"): 0.6, ("ours: bundle (signed)", "openssl dgst + tar/zstd -3 -T0"): 1.0},
        )
        self.w2_made = True

    def _ensure_w2_bundles(self) -> None:
        """W2's bundles of this run's data (a kept work dir's are of other random bytes)."""
        if self.w2_made:
            return
        runs, self.runs = self.runs, 1
        sections, summary = list(self.sections), list(self.summary)
        try:
            self.w2_bundle()  # only to make the bundles: its figures are not reported
        finally:
            self.runs, self.sections, self.summary = runs, sections, summary

    def _sideload_contenders(self, bundle: Path, peer_archive: Path, files: list[str], label: str, count: int) -> list[Contender]:
        """Ours (durable and not) against tar + a checksum list (with and without a final sync)."""
        q = shlex.quote
        dest = self.scratch(f"{label}-peers") / "dest"
        sums = peer_archive.with_suffix(".sha256sum")
        ossl = peer_archive.with_suffix(".openssl")
        # Every time: generate() writes new random data, so lists kept from an earlier run would not match.
        run(_bash(f"sha256sum {' '.join(files)} > {q(str(sums))} && openssl dgst -sha256 -r {' '.join(files)} > {q(str(ossl))}"), cwd=self.serve)
        extract = f"tar -I zstd -xf {q(str(peer_archive))} -C {q(str(dest))} && cd {q(str(dest))}"
        sha = f"{extract} && sha256sum -c --quiet {q(str(sums))}"
        ossl_check = f"{extract} && openssl dgst -sha256 -r {' '.join(files)} | cmp -s - {q(str(ossl))}"
        peer = dict(prepare=_fresh(dest), check=_expect_count(dest, count), cleanup=_remove(dest.parent))
        args = ["data", "sideload", str(bundle), "--trust", f"{self.key}.pub"]
        return [
            self.ours("ours: sideload", args, check=_expect_count(self.home_of("ours: sideload"), count)),
            self.ours("ours: sideload, no sync", args, no_sync=True, check=_expect_count(self.home_of("ours: sideload, no sync"), count)),
            Contender("tar -I zstd -xf + sha256sum -c", _bash(sha), **peer),
            Contender("tar -xf + sha256sum -c + sync", _bash(f"{sha} && sync"), **peer),
            Contender("tar -I zstd -xf + openssl dgst", _bash(ossl_check), **peer),
            Contender("tar -xf + openssl dgst + sync", _bash(f"{ossl_check} && sync"), **peer),
        ]

    def w3_sideload(self) -> None:
        self._ensure_w2_bundles()
        contenders = self._sideload_contenders(self._bundle_w2(), self.work / "w2" / "peer.tar.zst", ["big.bin", "vuln.json"], "w3", 2)
        compare(contenders, self.runs, self.log)
        self.report(
            "W3: sideload",
            "Sideload W2's bundle into empty data dirs: signature, every member's length and sha256, every part's hash, "
            "structure rules, staging, then (by default) one syncfs per pack before the atomic renames and the install records; "
            "`no sync` runs with the unsafe config key `[writes] durable = false`. The peers unpack the peer archive of W2 and check it with a checksum list; "
            "`+ sync` makes their result durable too.",
            contenders, self.sizes.big + self.text_size,
            {
                ("ours: sideload", "tar -I zstd -xf + sha256sum -c"): 0.4,
                ("ours: sideload", "tar -I zstd -xf + openssl dgst"): 1.0,
                ("ours: sideload, no sync", "tar -I zstd -xf + sha256sum -c"): 0.4,
            },
        )

    def w4_small_files(self) -> None:
        q = shlex.quote
        src = self.work / "small"
        bundle_kept = self.work / "w4" / "bundle.tar.zst"
        peer_out = self.work / "w4" / "peer.tar.zst"
        peer_dir = self.scratch("w4-bundle-peers")
        listing = "find smallfiles -type f -print0 | sort -z"
        tar = f"{ZSTD_TAR} {q(str(peer_dir / 'peer.tar.zst'))} smallfiles"

        def keep_peer() -> None:
            if (peer_dir / "peer.tar.zst").is_file():
                peer_out.parent.mkdir(parents=True, exist_ok=True)
                os.replace(peer_dir / "peer.tar.zst", peer_out)

        peer = dict(cwd=src, prepare=_fresh(peer_dir), cleanup=lambda: (keep_peer(), _remove(peer_dir)()))
        ours = self._ours_bundle(f"ours: bundle {self.small_label} files", ["bench-small"], bundle_kept)
        contenders = [
            ours,
            Contender("sha256sum each + tar/zstd -3 -T0", _bash(f"{listing} | xargs -0 sha256sum > {q(str(peer_dir / 'SUMS'))} && {tar}"), **peer),
            Contender("openssl dgst each + tar/zstd -3 -T0", _bash(f"{listing} | xargs -0 openssl dgst -sha256 -r > {q(str(peer_dir / 'SUMS'))} && {tar}"), **peer),
            Contender("openssl dgst each + tar/zstd + sync", _bash(f"{listing} | xargs -0 openssl dgst -sha256 -r > {q(str(peer_dir / 'SUMS'))} && {tar} && sync"), **peer),
        ]
        compare(contenders, self.runs, self.log, settle=self.sizes.small_count >= 5000)
        self.report(
            f"W4a: bundle of {self.sizes.small_count:,} small files",
            f"One pack of {self.sizes.small_count} files of 4-12 KiB ({self.small_total / MIB:.0f} MiB): its recipe pins the tar (sha256, exact size), so ours streams it "
            "from the server straight into the signed bundle, carried whole, while extraction's walk checks every member on a second thread (as an install would); "
            "the sha256 is checked on the way and is in the manifest. The peers hash and tar the files already on disk.",
            contenders, self.small_total,
            {(f"ours: bundle {self.small_label} files", "sha256sum each + tar/zstd -3 -T0"): 1.0, (f"ours: bundle {self.small_label} files", "openssl dgst each + tar/zstd -3 -T0"): 1.0},
        )
        files = sorted(p.relative_to(src).as_posix() for p in (src / "smallfiles").rglob("*") if p.is_file())
        sums = peer_out.with_suffix(".sha256sum")
        ossl = peer_out.with_suffix(".openssl")
        run(_bash(f"{listing} | xargs -0 sha256sum > {q(str(sums))} && {listing} | xargs -0 openssl dgst -sha256 -r > {q(str(ossl))}"), cwd=src)
        dest = self.scratch("w4-sideload-peers") / "dest"
        extract = f"tar -I zstd -xf {q(str(peer_out))} -C {q(str(dest))} && cd {q(str(dest))}"
        sha = f"{extract} && sha256sum -c --quiet {q(str(sums))}"
        ossl_check = f"{extract} && {listing} | xargs -0 openssl dgst -sha256 -r | cmp -s - {q(str(ossl))}"
        peer = dict(prepare=_fresh(dest), check=_expect_count(dest, len(files)), cleanup=_remove(dest.parent))
        args = ["data", "sideload", str(bundle_kept), "--trust", f"{self.key}.pub"]
        contenders = [
            self.ours(f"ours: sideload {self.small_label} files", args, check=_expect_count(self.home_of(f"ours: sideload {self.small_label} files"), len(files))),
            self.ours(f"ours: sideload {self.small_label} files, no sync", args, no_sync=True, check=_expect_count(self.home_of(f"ours: sideload {self.small_label} files, no sync"), len(files))),
            Contender("tar -I zstd -xf + sha256sum -c", _bash(sha), **peer),
            Contender("tar -xf + sha256sum -c + sync", _bash(f"{sha} && sync"), **peer),
            Contender("tar -I zstd -xf + openssl dgst", _bash(ossl_check), **peer),
            Contender("tar -xf + openssl dgst + sync", _bash(f"{ossl_check} && sync"), **peer),
        ]
        compare(contenders, self.runs, self.log, settle=self.sizes.small_count >= 5000)
        self.report(
            f"W4b: sideload of {self.sizes.small_count:,} small files",
            "Sideload that bundle into empty data dirs (the carried tar unpacked as it streams and its sha256 checked before anything is visible; "
            "every file hashed for the install record, made durable, renamed into place). "
            "The peers unpack the peer archive and check it with a checksum list.",
            contenders, self.small_total,
            {
                (f"ours: sideload {self.small_label} files", "tar -I zstd -xf + sha256sum -c"): 1.0,
                (f"ours: sideload {self.small_label} files", "tar -I zstd -xf + openssl dgst"): 1.0,
            },
        )

    def w5_memory(self) -> None:
        rows = []
        for size in self.sizes.memory:
            name = f"mem-{size // MIB}m.bin"
            serve = self.work / "w5-serve"  # its own server: the main one serves only what existed when it started
            serve.mkdir(parents=True, exist_ok=True)
            sha = data.write_incompressible(serve / name, size)
            data.warm(serve / name)
            pack = f"bench-mem-{size // MIB}m"
            out = self.scratch("w5") / "out" / "bundle.tar.zst"
            bundle = self.ours(f"ours: bundle {size // MIB} MiB", ["data", "bundle", pack, "-o", str(out), "--key", f"{self.key}.key"])
            bundle.prepare = _fresh(Path(bundle.env["HOME"]), out.parent)
            bundle.cleanup = None
            sideload = self.ours(f"ours: sideload {size // MIB} MiB", ["data", "sideload", str(out), "--trust", f"{self.key}.pub"])
            try:
                with Server(serve) as server:
                    self.write_recipe(pack, "ml_model", f'type = "download"\nurl = "{server.url(name)}"\ndest = "bench/{name}"\nsize_bytes = {size}\nsize_exact = true\nchecksum = "sha256:{sha}"\n')
                    compare([bundle], 1, self.log)  # one run each: peak memory does not need a median
                compare([sideload], 1, self.log)
            finally:
                shutil.rmtree(self.scratch("w5"), ignore_errors=True)
                shutil.rmtree(Path(bundle.env["HOME"]).parent, ignore_errors=True)
                shutil.rmtree(serve, ignore_errors=True)
                (self.catalog / f"{pack}.toml").unlink(missing_ok=True)
            rows.append((size, bundle, sideload))
        lines = ["| pack size | bundle: peak RSS | bundle: wall | sideload: peak RSS | sideload: wall |", "|---:|---:|---:|---:|---:|"]
        for size, bundle, sideload in rows:
            lines.append(f"| {size / MIB:,.0f} MiB | {bundle.peak_rss_mib():.0f} MiB | {bundle.median_wall():.2f} s | {sideload.peak_rss_mib():.0f} MiB | {sideload.median_wall():.2f} s |")
        rss = [r[1].peak_rss_mib() for r in rows] + [r[2].peak_rss_mib() for r in rows]
        growth_b = rows[-1][1].peak_rss_mib() - rows[0][1].peak_rss_mib()
        growth_s = rows[-1][2].peak_rss_mib() - rows[0][2].peak_rss_mib()
        verdict = (
            f"Largest peak RSS {max(rss):.0f} MiB (target <= 100 MiB: {'met' if max(rss) <= 100 else 'missed'}); "
            f"from the smallest to the largest pack the peak grows by {growth_b:+.0f} MiB (bundle) and {growth_s:+.0f} MiB (sideload) "
            f"(flat: {'yes' if max(abs(growth_b), abs(growth_s)) <= 8 else 'no'})."
        )
        section = "### W5: peak memory against pack size\n\nOne signed bundle of one incompressible file, then its sideload (durable), at each size; one run each.\n\n" + "\n".join(lines) + f"\n\n{verdict}\n"
        self.sections.append(section)
        self.log("\n" + section)

    def w6_capped(self) -> None:
        """Issue 23: a server capping each connection (CDNs, release storage) against aria2c's eight."""
        size, rate = self.sizes.big, CAP_PER_CONNECTION
        out_dir = self.scratch("w6-peers")
        out = out_dir / "big.bin"
        q = shlex.quote
        with Server(self.serve, rate_per_connection=rate) as capped:
            url = capped.url("big.bin")
            self.write_recipe("bench-capped", "ml_model", f'type = "download"\nurl = "{url}"\ndest = "bench/big.bin"\nsize_bytes = {size}\nsize_exact = true\nchecksum = "sha256:{self.big_sha}"\n')
            installed = lambda name: self.home_of(name) / ".cache" / "whisper" / "bench" / "big.bin"  # noqa: E731
            bundle = self.home_of("ours: bundle, streamed").parent / "out" / "capped.tar.zst"
            peer = dict(prepare=_fresh(out_dir), check=_expect_file(out, size), cleanup=_remove(out_dir))
            aria2 = f"aria2c -q -x8 -s8 --checksum=sha-256={self.big_sha} --allow-overwrite=true -d {q(str(out_dir))} -o big.bin {q(url)}"
            streamed = self.ours("ours: bundle, streamed", ["data", "bundle", "bench-capped", "-o", str(bundle), "--key", f"{self.key}.key"])
            streamed.prepare, streamed.check = _fresh(Path(streamed.env["HOME"]), bundle.parent), _expect_exists(bundle)
            contenders = [
                self.ours("ours: install", ["data", "install", "bench-capped"], check=_expect_file(installed("ours: install"), size)),
                self.ours("ours: install, no sync", ["data", "install", "bench-capped"], no_sync=True, check=_expect_file(installed("ours: install, no sync"), size)),
                streamed,
                Contender("aria2c -x8 -s8 --checksum", _bash(aria2), **peer),
                Contender("curl -o", _bash(f"curl -sS --noproxy '*' -o {q(str(out))} {q(url)}"), **peer),
            ]
            try:
                compare(contenders, self.runs, self.log)
            finally:
                (self.catalog / "bench-capped.toml").unlink(missing_ok=True)
        self.report(
            "W6: a server capping each connection",
            f"Install the {size / MIB:.0f} MiB file of W1 from the same local server run with `--rate-per-connection {rate}` "
            f"({rate / MIB:.0f} MiB/s per connection, as CDNs and release storage cap them). Ours uses up to "
            "max_connections_per_download (8) connections and is durable; aria2c checks the sha256 after the download; "
            "`bundle, streamed` puts the pinned file into a signed bundle through the bounded window (its peak RSS is the point).",
            contenders, size,
            {("ours: install", "aria2c -x8 -s8 --checksum"): 1.0, ("ours: install", "curl -o"): 0.2},
        )
