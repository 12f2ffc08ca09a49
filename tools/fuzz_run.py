"""The long hostile-bundle run: every named case of issue 3's security list, then N random
damaged bundles (byte flips, truncations, appended bytes; in the compressed file, inside the
tar stream, in one part of a split bundle), each sideloaded into a host that has a pack
installed. Every case must be refused with its exit code and leave HOME byte for byte as it
was (tests/hostile.py says exactly what is checked).

    python tools/fuzz_run.py --cases 2000              # seed 1
    python tools/fuzz_run.py --cases 500 --seed 9 --json

Prints a summary (cases, refused, harmless ones accepted with intact content, failures) and
every failure; exits 1 on any failure. Record the summary in docs/reliability.md.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from bundle_helpers import new_key  # noqa: E402
from crash_driver import make_env  # noqa: E402
from hostile import Host, HostileBundles  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000, help="random cases after the named ones (default 2000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="devops-cp-fuzz-") as tmp:
        root = Path(tmp)
        os.environ.clear()
        os.environ.update(make_env(root / "host"))  # an isolated HOME for the in-process runs
        Path(os.environ["DEVOPS_CP_CATALOG"]).mkdir(parents=True)  # an empty catalog: a folder named there must exist
        factory = HostileBundles(root / "bundles", key=new_key(), stranger=new_key())
        host = Host(factory.pub, factory.first)
        report = {"seed": args.seed, "python": platform.python_version(), "named": 0, "random": 0, "refused": 0,
                  "harmless_accepted": 0, "failures": 0, "by_kind": {}, "exit_codes": {}, "failed_cases": []}  # fmt: skip
        kinds: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        exit_codes: collections.Counter = collections.Counter()

        def run(case, kind: str) -> None:
            outcome = host.check(case)
            exit_codes[outcome.exit_code] += 1
            kinds[kind]["cases"] += 1
            if outcome.problems:
                report["failures"] += 1
                kinds[kind]["failures"] += 1
                report["failed_cases"].append({"case": case.name, "bundle": str(case.path), "problems": outcome.problems})
                if not args.json:
                    print(f"FAIL {case.name}: " + "; ".join(outcome.problems), flush=True)
            elif outcome.refused:
                report["refused"] += 1
                kinds[kind]["refused"] += 1
            else:
                report["harmless_accepted"] += 1
                kinds[kind]["harmless_accepted"] += 1
            if case.path.parent.name.isdigit():
                for leftover in case.path.parent.iterdir():  # keep the temp dir small on long runs
                    leftover.unlink()
                case.path.parent.rmdir()

        for case in factory.named():
            report["named"] += 1
            run(case, "named")
        rng = random.Random(args.seed)
        for i, case in enumerate(factory.random(rng, args.cases), 1):
            report["random"] += 1
            run(case, factory.KINDS[(i - 1) % len(factory.KINDS)])
            if not args.json and i % 250 == 0:
                print(f"... {i} random cases, {report['failures']} failures", flush=True)

    report["by_kind"] = {k: dict(v) for k, v in kinds.items()}
    report["exit_codes"] = {str(k): v for k, v in sorted(exit_codes.items())}
    report["seconds"] = round(time.monotonic() - started, 1)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['named']} named + {report['random']} random cases (seed {args.seed}): "
              f"{report['refused']} refused, {report['harmless_accepted']} harmless accepted, {report['failures']} failures")
        for kind, counts in report["by_kind"].items():
            print(f"  {kind:<13} {dict(counts)}")
        print(f"  exit codes: {report['exit_codes']}; {report['seconds']} s")
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
