"""The machine a study ran on, for its report: timings only compare on the same CPU and libraries."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from gptctl.manifest import library_versions

# The instruction sets that change ONNX Runtime's int4/int8 kernels (and so decode speed).
_FLAGS = (
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_int8",
    "amx_bf16",
    "neon",
    "asimd",
    "sve",
)


def machine_fingerprint() -> dict[str, Any]:
    """CPU model, cores, instruction-set summary, OS, Python and the result-changing library versions."""
    model, flags = _cpuinfo()
    return {
        "cpu": model or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "flags": [f for f in _FLAGS if f in flags],
        "machine": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "libraries": library_versions(),
    }


def _cpuinfo() -> tuple[str, set[str]]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "", set()
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return model, flags
