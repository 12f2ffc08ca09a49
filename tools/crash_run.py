"""The long crash-consistency run: SIGKILL `devops-cp data install` and `devops-cp data sideload`
at 50+ points each and check every kill (tests/crash_driver.py says what is checked).

    python tools/crash_run.py                      # both commands, 40 byte offsets + every phase point
    python tools/crash_run.py --bytes-points 100 --seed 3 --command sideload
    python tools/crash_run.py --json               # one JSON document on stdout

Prints one line per kill point and a summary (runs, kills, failures); exits 1 on any failure.
Everything happens under a temporary directory with its own HOME; a loopback server serves
the downloads. Record the summary in docs/reliability.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from crash_driver import SCENARIOS  # noqa: E402
from support.localserver import LocalServer  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--command", choices=[*SCENARIOS, "both"], default="both")
    parser.add_argument("--bytes-points", type=int, default=40, help="kill points spread over the bytes written (default 40)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of lines")
    args = parser.parse_args(argv)

    names = list(SCENARIOS) if args.command == "both" else [args.command]
    started = time.monotonic()
    report = {"seed": args.seed, "bytes_points": args.bytes_points, "python": platform.python_version(), "commands": {}}
    with tempfile.TemporaryDirectory(prefix="devops-cp-crash-") as tmp, LocalServer() as server:
        for name in names:
            scenario = SCENARIOS[name](Path(tmp) / name, server)
            scenario.setup()
            points = scenario.long_points(args.bytes_points, args.seed)
            summary = {"runs": 0, "kills": 0, "failures": 0, "ended_v1": 0, "ended_v2": 0, "failed_points": []}
            for point in points:
                result = scenario.run_point(point)
                summary["runs"] += 1
                summary["kills"] += result.killed
                if set(result.versions_after_kill.values()) == {"v1"}:
                    summary["ended_v1"] += 1
                elif result.versions_after_kill:
                    summary["ended_v2"] += 1  # v2, or (sideload) one pack v2 and the other still v1
                if not result.ok:
                    summary["failures"] += 1
                    summary["failed_points"].append({"point": point, "problems": result.problems})
                if not args.json:
                    state = "ok  " if result.ok else "FAIL"
                    killed = "killed" if result.killed else "ran to the end"
                    print(f"{state} {name:<8} {point:<16} {killed:<14} after recovery: {result.versions_after_kill}", flush=True)
                    for problem in result.problems:
                        print(f"       {problem}", flush=True)
            report["commands"][name] = summary
    report["seconds"] = round(time.monotonic() - started, 1)
    failures = sum(s["failures"] for s in report["commands"].values())
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for name, s in report["commands"].items():
            print(f"{name}: {s['runs']} runs, {s['kills']} kills, {s['failures']} failures "
                  f"(after recovery: {s['ended_v1']} still v1, {s['ended_v2']} moved to v2)")
        print(f"seed {args.seed}, {report['seconds']} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
