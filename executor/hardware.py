"""Detect GPUs on this host: NVML when importable, else `nvidia-smi`. Never fails: no GPU is a fact."""

from __future__ import annotations

import os
import shutil
import subprocess

from manifests.hardware import NVIDIA_SMI_QUERY, Gpu, Hardware, parse_nvidia_smi_csv


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value  # older pynvml returns bytes


def _from_nvml() -> Hardware | None:
    try:
        import pynvml  # optional: nvidia-ml-py
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        try:
            driver = _text(pynvml.nvmlSystemGetDriverVersion())
            gpus = []
            for i in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(i)
                name = _text(pynvml.nvmlDeviceGetName(handle))
                memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
                gpus.append(Gpu("nvidia", name, memory.total // 2**20, memory.free // 2**20, driver))
        finally:
            pynvml.nvmlShutdown()
        return Hardware(tuple(gpus), "nvml")
    except pynvml.NVMLError:
        return None


def _from_nvidia_smi() -> Hardware | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        result = subprocess.run(NVIDIA_SMI_QUERY, capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    gpus = parse_nvidia_smi_csv(result.stdout)
    return Hardware(gpus, "nvidia-smi") if gpus else None


def detect() -> Hardware:
    """DEVOPS_CP_NO_GPU=1 pretends there is none (useful to test a bundle for a CPU-only target)."""
    if os.environ.get("DEVOPS_CP_NO_GPU"):
        return Hardware((), "disabled by DEVOPS_CP_NO_GPU")
    return _from_nvml() or _from_nvidia_smi() or Hardware((), "none")
