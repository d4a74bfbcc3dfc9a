"""Which mixed precision a run uses when the user does not say: bf16 wherever the hardware computes it natively.

bf16 autocast halves a step on CPUs with AVX512-BF16 or AMX and on GPUs with bf16 tensor cores, at the same loss
(benchmarks/RESULTS.md). Elsewhere bf16 is emulated and slower than fp32, so fp32 stays.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """True when /proc/cpuinfo lists AVX512-BF16 or AMX-BF16 (Linux; other systems: False)."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.exists() else ""
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return any(flag in flags for flag in CPU_BF16_FLAGS)


def auto_mixed_precision(use_cpu: bool) -> str:
    """The precision for `--mixed_precision auto`.

    A launcher configured for fp16 or bf16 (`accelerate launch --mixed_precision`, a config file) is followed;
    otherwise bf16 where it is native, else "no". Pass `--mixed_precision no` for fp32 on bf16 hardware.
    """
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if launcher != "no":
        return launcher
    if not use_cpu and torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if cpu_has_native_bf16() else "no"
