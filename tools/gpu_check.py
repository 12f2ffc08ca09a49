"""Check GPU detection on a real NVIDIA host (CI has none; run it where a GPU is).

    python tools/gpu_check.py [--save DIR]

Asks each source the tool can use (NVML through nvidia-ml-py, `nvidia-smi --query-gpu`, and
`nvidia-smi -q -x`) and fails unless they agree on every GPU's name, total memory and driver.
Then runs `devops-cp data info whisper-model --json` and checks that the GPU-only option is
available here, and refused with DEVOPS_CP_NO_GPU=1. --save keeps the raw nvidia-smi output
(the test fixtures in tests/fixtures/gpu were taken this way).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from executor import hardware  # noqa: E402
from manifests.hardware import NVIDIA_SMI_QUERY, parse_nvidia_smi_xml  # noqa: E402

RAW_OUTPUTS = {
    "nvidia-smi-query.csv": NVIDIA_SMI_QUERY,
    "nvidia-smi-q.xml": ["nvidia-smi", "-q", "-x"],
    "nvidia-smi-L.txt": ["nvidia-smi", "-L"],
}


def _facts(gpus) -> list[tuple]:
    return [(g.name, g.memory_total_mb, g.driver_version) for g in gpus]


def _info(env_extra: dict[str, str]) -> dict:
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "HOME": home, "XDG_DATA_HOME": f"{home}/data", "XDG_CONFIG_HOME": f"{home}/config",
               "XDG_STATE_HOME": f"{home}/state", "XDG_CACHE_HOME": f"{home}/cache", **env_extra}
        result = subprocess.run([sys.executable, "-m", "devops_cp", "data", "info", "whisper-model", "--json"],
                                env=env, capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", type=Path, help="keep the raw nvidia-smi outputs here")
    args = parser.parse_args()
    failures = []

    raw = {name: subprocess.run(cmd, capture_output=True, text=True, check=True).stdout for name, cmd in RAW_OUTPUTS.items()}
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        for name, text in raw.items():
            (args.save / name).write_text(text)

    sources = {
        "nvml": hardware._from_nvml(),
        "nvidia-smi csv": hardware._from_nvidia_smi(),
        "nvidia-smi xml": hardware.Hardware(parse_nvidia_smi_xml(raw["nvidia-smi-q.xml"]), "nvidia-smi -q -x"),
    }
    for name, found in sources.items():
        print(f"{name:15} {found}")
        if found is None or not found.gpus:
            failures.append(f"{name} found no GPU")
    facts = {name: _facts(found.gpus) for name, found in sources.items() if found is not None}
    if len({json.dumps(f) for f in facts.values()}) != 1:
        failures.append(f"the sources disagree: {facts}")
    detected = hardware.detect()
    print(f"detect()        {detected}")
    if detected.source != "nvml" and sources["nvml"] is not None:
        failures.append(f"detect() used {detected.source}, not NVML")

    with_gpu = {v["option"]: v for v in _info({})["variants"]}
    without = {v["option"]: v for v in _info({"DEVOPS_CP_NO_GPU": "1"})["variants"]}
    print(f"info: large available with the GPU: {with_gpu['large']['available_here']}, vram note: {with_gpu['large']['vram_note']}")
    print(f"info: large available with DEVOPS_CP_NO_GPU=1: {without['large']['available_here']} ({without['large']['why_not']})")
    if not with_gpu["large"]["available_here"] or without["large"]["available_here"]:
        failures.append("the GPU-only option's availability does not follow the GPU")

    for failure in failures:
        print(f"FAIL: {failure}")
    print("gpu check: " + ("FAILED" if failures else "ok"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
