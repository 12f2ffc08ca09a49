"""`python -m bench`: the workloads of issue 6 side by side with their peers.

    python -m bench                      # everything at 1 GiB, 3 runs each (about 15 minutes)
    python -m bench --quick              # small sizes, 1 run: a smoke test (under a minute)
    python -m bench --only W1,W3 --runs 5
    python -m bench --markdown out.md    # also write the tables to a file

Figures are warm-cache: the page cache is not dropped (that needs root and disturbs
everyone else on a shared machine); every input is read once before the first run,
and `sync` runs (untimed) before every timed run.

Put --workdir on the kind of filesystem users have (a journaled ext4, xfs, ...): the
header says which one it was. On ext4 without a journal, file creation right after many
deletions is pathologically slow (see bench/machine.py), which swamps workload 4.
The bench needs about 4x --size-gib plus 16 GiB (workload 5 at 4 GiB) of free space.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from bench.machine import description
from bench.measure import loadavg
from bench.server import Server
from bench.workloads import Bench, Sizes

WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gib", type=float, default=1.0, help="size of the incompressible pack of W1-W3 (default 1)")
    parser.add_argument("--runs", type=int, default=None, help="runs per contender, in alternation (default 3; 1 with --quick)")
    parser.add_argument("--only", default=",".join(WORKLOADS), help="comma-separated workloads, e.g. W1,W3 (default all)")
    parser.add_argument("--quick", action="store_true", help="small sizes and one run: checks that everything works")
    parser.add_argument("--workdir", type=Path, default=None, help="where to generate data (default: a new temp dir, removed at the end)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the tables to this file")
    args = parser.parse_args(argv)
    args.only = [w.strip().upper() for w in args.only.split(",") if w.strip()]
    unknown = [w for w in args.only if w not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload {unknown[0]}; choose from {', '.join(WORKLOADS)}")
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    needed = ["curl", "tar", "zstd", "sha256sum", "openssl", "bash", "find", "xargs"] + (["aria2c"] if "W6" in args.only else [])
    for tool in needed:
        if shutil.which(tool) is None:
            print(f"python -m bench needs {tool} (Debian: apt-get install curl zstd tar coreutils openssl findutils aria2)", file=sys.stderr)
            return 7
    command = "python -m bench " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    work = args.workdir or Path(tempfile.mkdtemp(prefix="devops-cp-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    header = "## Run\n\n" + description(command.strip(), loadavg(), str(work))
    print(header, flush=True)
    sizes = Sizes.quick() if args.quick else Sizes.full(args.size_gib)
    bench = Bench(work, sizes, args.runs, log=lambda line: print(line, flush=True))
    try:
        bench.generate()
        with Server(bench.serve) as server:
            bench.server = server
            bench.write_recipes()
            bench.server_check()
            steps = {"W1": bench.w1_install, "W2": bench.w2_bundle, "W3": bench.w3_sideload, "W4": bench.w4_small_files, "W5": bench.w5_memory, "W6": bench.w6_capped}
            for name in args.only:
                print(f"\n== {name} (load {loadavg()}) ==", flush=True)
                steps[name]()
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    summary = ["### Targets", "", "| workload | ours | peer | ratio | target | |", "|---|---|---|---:|---:|---|"]
    for workload, ours, peer, ratio, target in bench.summary:
        summary.append(f"| {workload} | {ours} | {peer} | {ratio:.2f}x | <= {target:.1f}x | {'met' if ratio <= target else 'missed'} |")
    report = "\n\n".join([header + f"\n- load average at the end: {loadavg()}", *bench.sections, "\n".join(summary)]) + "\n"
    print("\n" + "\n".join(summary))
    if args.markdown:
        args.markdown.write_text(report)
        print(f"\nwrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
