"""`python -m bench.fleet`: one stick, many hosts (issue 21), side by side with skopeo and curl.

    python -m bench.fleet                     # a 1 GiB bundle, 8 hosts, 3 runs
    python -m bench.fleet --size-gib 0.1 --runs 1 --hosts 4

M1 mirror: the signed bundle into a local docker-registry. Ours reads the .tar.zst (decompress,
check every byte against the signed manifest) and pushes; skopeo copies the same artifact from the
OCI image layout `mirror --to DIR` wrote (no bundle to read, no signature); curl PUTs the one
large blob, its digest given, to the registry API (the floor: no hashing, one request).

M2 fleet: N hosts at once pull from that registry. Ours: N `install PACK --from oci://...`
(separate HOMEs; the signed manifest verified, every byte hashed, staged, committed); skopeo: N
`skopeo copy docker://... oci:DIR`; curl: N `curl -o` of the large blob. Wall time of the batch.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench import data
from bench.machine import description
from bench.measure import Contender, compare, loadavg, run
from bench.server import Server, clean_env
from bench.table import ratio_table, results_table
from bench.workloads import cli_path

GIB, MIB = 1 << 30, 1 << 20
REPO = "bench/packs"


def start_registry(root: Path) -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (root / "config.yml").write_text(
        f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {root / 'storage'}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    process = subprocess.Popen(["docker-registry", "serve", str(root / "config.yml")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=2, trust_env=False).status_code == 200:
                return process, f"127.0.0.1:{port}"
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("docker-registry did not start")


def bash(script: str) -> list[str]:
    return ["bash", "-c", "set -e\n" + script]


def in_parallel(commands: list[str]) -> str:
    """Start all, then wait for each: one failure fails the batch."""
    starts = "\n".join(f"{c} & pids+=($!)" for c in commands)
    return f"pids=()\n{starts}\nfor p in \"${{pids[@]}}\"; do wait $p; done"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gib", type=float, default=1.0)
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--only", default="M1,M2", help="M1 (mirror), M2 (hosts at once) or both")
    args = parser.parse_args(argv)
    for tool in ("docker-registry", "skopeo", "curl"):
        if shutil.which(tool) is None:
            print(f"python -m bench.fleet needs {tool} (Debian: apt-get install docker-registry skopeo curl)", file=sys.stderr)
            return 7
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    work.mkdir(parents=True, exist_ok=True)
    size = int(args.size_gib * GIB)
    cli = cli_path()
    keys_home, serve, catalog = work / "keys-home", work / "serve", work / "catalog"
    for d in (keys_home, serve, catalog):
        d.mkdir(exist_ok=True)
    env = clean_env(HOME=str(keys_home), DEVOPS_CP_CATALOG=str(catalog), DEVOPS_CP_NO_GPU="1")
    print(f"generating {size / MIB:.0f} MiB and its signed bundle in {work} ...")
    sha = data.write_incompressible(serve / "big.bin", size)
    run(cli + ["data", "keygen", "--no-passphrase", "-o", str(work / "site")], env=env)
    bundle = work / "stick.tar.zst"
    with Server(serve) as server:
        (catalog / "fleet-big.toml").write_text(
            'id = "fleet-big"\nlabel = "fleet-big (benchmark)"\ncategory = "data"\ndata_type = "ml_model"\nupdate_schedule = "manual"\nsize_warning_mb = 100000\n\n'
            f'[install._default]\ntype = "download"\nurl = "{server.url("big.bin")}"\ndest = "fleet/big.bin"\nsize_bytes = {size}\nsize_exact = true\nchecksum = "sha256:{sha}"\n'
        )
        run(cli + ["data", "bundle", "fleet-big", "-o", str(bundle), "--key", str(work / "site.key"), "--progress", "none"], env=env)
    layout = work / "layout"
    run(cli + ["data", "mirror", str(bundle), "--to", str(layout), "--trust", str(work / "site.pub"), "--progress", "none"], env=env)
    data.warm(bundle)
    data.warm(serve / "big.bin")
    registry_root = work / "registry"
    registry_root.mkdir(exist_ok=True)
    process, registry = start_registry(registry_root)
    command = "python -m bench.fleet " + shlex.join(argv if argv is not None else sys.argv[1:])
    skopeo = subprocess.run(["skopeo", "--version"], capture_output=True, text=True).stdout.strip()
    sections = [description(command, loadavg(), str(work)) + f"\n- {skopeo}; docker-registry (Debian's distribution)\n- the machine was shared with six other engineers' builds and tests while this ran\n"]
    try:
        counter = iter(range(1_000_000))

        def fresh_repo() -> str:
            return f"{REPO}{next(counter)}"

        # M1: mirror into the registry (a new repository each run; the registry's storage is emptied first)
        def empty_storage() -> None:
            shutil.rmtree(registry_root / "storage" / "docker" / "registry" / "v2" / "blobs", ignore_errors=True)

        repos = {"ours": "", "skopeo": "", "curl": ""}

        def prepare(name: str):
            def go() -> None:
                empty_storage()
                repos[name] = fresh_repo()
                contenders[name].argv = argv_for(name, repos[name])

            return go

        def argv_for(name: str, repo: str) -> list[str]:
            if name == "ours":
                return cli + ["data", "mirror", str(bundle), "--to", f"oci://{registry}/{repo}", "--trust", str(work / "site.pub"), "--progress", "none"]
            if name == "skopeo":
                index = json.loads((layout / "index.json").read_text())
                tag = next(m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"].endswith(".latest"))
                return ["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{layout}:{tag}", f"docker://{registry}/{repo}:{tag}"]
            url = f"http://{registry}/v2/{repo}/blobs/uploads/"
            return bash(
                f"loc=$(curl -sS --noproxy '*' -X POST -o /dev/null -w '%{{redirect_url}}%{{header_json}}' {shlex.quote(url)} | python3 -c "
                "'import sys,json; t=sys.stdin.read(); print(json.loads(t[t.index(\"{\"):])[\"location\"][0])')\n"
                f"case $loc in http*) ;; *) loc=http://{registry}$loc;; esac\n"
                f"curl -sS --noproxy '*' -f -T {shlex.quote(str(serve / 'big.bin'))} -H 'Content-Type: application/octet-stream' \"$loc&digest=sha256:{sha}\" -o /dev/null"
            )

        contenders = {
            "ours": Contender("ours: mirror BUNDLE --to oci://", [], ours=True, env=env, prepare=prepare("ours")),
            "skopeo": Contender("skopeo copy oci:LAYOUT docker://", [], prepare=prepare("skopeo")),
            "curl": Contender("curl PUT of the blob (digest given)", [], prepare=prepare("curl")),
        }
        m1 = list(contenders.values())
        if "M1" in args.only:
            compare(m1, args.runs)
            sections.append(f"### M1: mirror a {size / MIB:.0f} MiB bundle into docker-registry\n\n{results_table(m1, size)}\n\n{ratio_table(m1)}\n")
            print(sections[-1])
        if "M2" not in args.only:
            return _finish(args, sections, work)

        # M2: N hosts at once from one registry repository that ours mirrored
        empty_storage()
        repo = fresh_repo()
        run(argv_for("ours", repo), env=env)
        run(["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{layout}:fleet-big.latest", f"docker://{registry}/{repo}-skopeo:fleet-big.latest"])
        hosts = work / "hosts"

        def reset_hosts() -> None:
            shutil.rmtree(hosts, ignore_errors=True)
            hosts.mkdir()

        def host_cmd(i: int) -> str:
            home = hosts / f"h{i}"
            return f"env HOME={home} DEVOPS_CP_CATALOG={hosts}/none DEVOPS_CP_NO_GPU=1 {shlex.join(cli)} data install fleet-big --from oci://{registry}/{repo} --trust {work / 'site.pub'} --progress none"

        blob = f"http://{registry}/v2/{repo}/blobs/sha256:{sha}"
        m2 = [
            Contender(f"ours: {args.hosts} x install --from oci://", bash(in_parallel([host_cmd(i) for i in range(args.hosts)])), ours=True, env=env, prepare=reset_hosts, cleanup=reset_hosts),
            Contender(f"skopeo: {args.hosts} x copy docker:// oci:DIR", bash(in_parallel([f"skopeo copy -q --src-tls-verify=false docker://{registry}/{repo}-skopeo:fleet-big.latest oci:{hosts}/s{i}:x" for i in range(args.hosts)])), prepare=reset_hosts, cleanup=reset_hosts),
            Contender(f"curl: {args.hosts} x curl -o of the blob", bash(in_parallel([f"curl -sS --noproxy '*' -f -o {hosts}/c{i}.bin {blob}" for i in range(args.hosts)])), prepare=reset_hosts, cleanup=reset_hosts),
        ]
        compare(m2, args.runs)
        sections.append(f"### M2: {args.hosts} hosts install it at once from that registry\n\n{results_table(m2, size * args.hosts)}\n\n{ratio_table(m2)}\n")
        print(sections[-1])
    finally:
        process.terminate()
        process.wait(10)
    return _finish(args, sections, work)


def _finish(args: argparse.Namespace, sections: list[str], work: Path) -> int:
    if args.markdown:
        args.markdown.write_text("\n".join(sections))
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
