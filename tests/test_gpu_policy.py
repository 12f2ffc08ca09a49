"""One GPU/VRAM rule (manifests/hardware.gpu_fit) behind install, bundle, sideload and the reports."""

from __future__ import annotations

import pytest

from devops_cp.reports import option_availability
from manifests.hardware import Gpu, Hardware, gpu_fit
from manifests.recipe import Option

NONE = Hardware()
SMALL = Hardware((Gpu("nvidia", "T4", memory_total_mb=2048),))
BIG = Hardware((Gpu("nvidia", "A100", memory_total_mb=81920),))


@pytest.mark.parametrize(
    ("hardware", "vendor", "vram", "missing", "low"),
    [
        (NONE, "", 0, None, None),
        (NONE, "nvidia", 0, "requires an NVIDIA GPU and none was detected", None),
        (NONE, "nvidia", 4000, "requires an NVIDIA GPU and none was detected", "needs about 4000 MiB of GPU memory (no GPU memory detected)"),
        (SMALL, "nvidia", 4000, None, "needs about 4000 MiB of GPU memory (2048 MiB detected)"),
        (BIG, "nvidia", 4000, None, None),
        (SMALL, "", 1000, None, None),
    ],
)
def test_gpu_fit(hardware, vendor, vram, missing, low):
    fit = gpu_fit(hardware, vendor, vram)
    assert (fit.missing_gpu, fit.low_vram) == (missing, low)


def test_the_report_says_what_install_would_say():
    option = Option("trf", "Transformer", gpu_vendor="nvidia", min_vram_mb=4000)
    for hardware in (NONE, SMALL, BIG):
        fit = gpu_fit(hardware, "nvidia", 4000)
        report = option_availability(option, hardware)
        assert (report["available"], report["why_not"], report["note"]) == (fit.missing_gpu is None, fit.missing_gpu, fit.low_vram)
