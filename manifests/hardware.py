"""Hardware facts as plain data, and parsers for nvidia-smi output (pure: no subprocess here)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass


@dataclass(frozen=True)
class Gpu:
    vendor: str
    name: str
    memory_total_mb: int | None = None
    memory_free_mb: int | None = None
    driver_version: str = ""


@dataclass(frozen=True)
class Hardware:
    gpus: tuple[Gpu, ...] = ()
    source: str = "none"  # how it was detected: nvidia-smi, nvml, none

    def has_vendor(self, vendor: str) -> bool:
        return any(g.vendor == vendor for g in self.gpus)

    def max_vram_mb(self, vendor: str | None = None) -> int | None:
        sizes = [g.memory_total_mb for g in self.gpus if g.memory_total_mb and (vendor is None or g.vendor == vendor)]
        return max(sizes) if sizes else None


NVIDIA_SMI_QUERY = ["nvidia-smi", "--query-gpu=index,name,memory.total,memory.free,driver_version", "--format=csv,noheader,nounits"]


def _mib(text: str) -> int | None:
    digits = text.strip().removesuffix("MiB").strip()
    return int(digits) if digits.isdigit() else None


def parse_nvidia_smi_csv(text: str) -> tuple[Gpu, ...]:
    """Output of NVIDIA_SMI_QUERY; also accepts the variant with a header and 'MiB' units."""
    gpus = []
    for row in csv.reader(io.StringIO(text), skipinitialspace=True):
        if len(row) < 5 or row[0].strip() == "index":
            continue
        gpus.append(Gpu("nvidia", row[1].strip(), _mib(row[2]), _mib(row[3]), row[4].strip()))
    return tuple(gpus)


def parse_nvidia_smi_xml(text: str) -> tuple[Gpu, ...]:
    """Output of `nvidia-smi -q -x`."""
    import xml.etree.ElementTree as ET  # only here: every command imports this module (start-up time)

    root = ET.fromstring(text)
    driver = (root.findtext("driver_version") or "").strip()
    gpus = []
    for gpu in root.iter("gpu"):
        gpus.append(
            Gpu(
                "nvidia",
                (gpu.findtext("product_name") or "").strip(),
                _mib(gpu.findtext("fb_memory_usage/total") or ""),
                _mib(gpu.findtext("fb_memory_usage/free") or ""),
                driver,
            )
        )
    return tuple(gpus)


@dataclass(frozen=True)
class GpuFit:
    """Whether an option's GPU needs are met here, each shortfall as a phrase to follow a pack's name."""

    missing_gpu: str | None  # "requires an NVIDIA GPU and none was detected": install refuses without --force
    low_vram: str | None  # "needs about 4000 MiB of GPU memory (2048 MiB detected)": a warning only
    vram_mb: int | None  # the most GPU memory detected for that vendor


def gpu_fit(hardware: Hardware, gpu_vendor: str | None, min_vram_mb: int | None) -> GpuFit:
    """The one GPU/VRAM rule: for install, bundle, sideload and the reports alike."""
    missing = bool(gpu_vendor) and not hardware.has_vendor(gpu_vendor)
    vram = hardware.max_vram_mb(gpu_vendor or None)
    low = bool(min_vram_mb) and (vram or 0) < min_vram_mb
    have = f"{vram} MiB detected" if vram else "no GPU memory detected"
    return GpuFit(
        missing_gpu=f"requires an {gpu_vendor.upper()} GPU and none was detected" if missing else None,
        low_vram=f"needs about {min_vram_mb} MiB of GPU memory ({have})" if low else None,
        vram_mb=vram,
    )
