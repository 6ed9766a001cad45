"""What a benchmark record says about the CPU it ran on.

Hosts that all report "AMD EPYC" differ where it matters to these numbers: the widest vector
unit (AVX2 or AVX-512) sets the fp32 rate, and a VNNI unit (one u8 x s8 dot-product
instruction) took the dense int8 pipeline from 1.5x its fp32 rate to 2.1x (README, Results).
So records name both, not only the model name.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def describe() -> dict:
    """``{"cpus", "processor", "vector", "int8_dot_product"}`` for this host (x86 Linux: /proc/cpuinfo flags)."""
    name, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not name:
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    vector = next((v for v in ("avx512f", "avx2", "avx") if v in flags), "unknown")
    vnni = next((v for v in ("avx512_vnni", "avx_vnni") if v in flags), "none")
    return {"cpus": os.cpu_count(), "processor": name or platform.processor() or platform.machine() or "unknown",
            "vector": vector, "int8_dot_product": vnni}
