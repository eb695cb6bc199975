"""The machine and software a benchmark ran on, recorded next to its numbers."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("dkp-deploy", "numpy", "scipy", "onnx", "onnxruntime", "ai-edge-litert", "tflite-runtime", "tflite")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "processor\t: arm")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "asimd", "neon", "sve")


def cpu_details() -> dict[str, str]:
    """CPU family / model / stepping and the SIMD flags that matter to the kernels (from /proc/cpuinfo)."""
    info: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("cpu family", "model", "stepping", "cpu part", "cpu implementer") and key not in info:
            info[key] = value.strip()
        if key in ("flags", "features") and "isa" not in info:
            present = set(value.split())
            info["isa"] = " ".join(f for f in ISA_FLAGS if f in present)
    return info


def caches() -> dict[str, str]:
    """Per-core cache sizes as the kernel reports them (Linux sysfs), e.g. {"L1d": "32K", "L2": "1024K"}."""
    out = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level, kind, size = ((index / f).read_text().strip() for f in ("level", "type", "size"))
        except OSError:
            continue
        if kind != "Instruction":
            out[f"L{level}{'d' if kind == 'Data' else ''}"] = size
    return out


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def capture(threads: int) -> dict[str, Any]:
    """CPU, core count, load, OS, Python and package versions, threads used, UTC time, git commit."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "logical_cpus": os.cpu_count(),
        "cpu_details": cpu_details(),
        "caches": caches(),
        "load_average_1_5_15": [round(x, 2) for x in load] if load else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": {p: v for p in PACKAGES if (v := _version(p))},
        "threads": threads,
        "utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "git_commit": _git_commit(),
    }


def describe(env: dict[str, Any]) -> str:
    """One line for tables and plot footers."""
    pk = env.get("packages", {})
    load = env.get("load_average_1_5_15")
    cache = ", ".join(f"{k} {v}" for k, v in env.get("caches", {}).items())
    return (
        f"{env['cpu']} ({env['logical_cpus']} logical CPUs{', ' + cache if cache else ''}, "
        f"load {load[0] if load else '?'}), "
        f"{env['threads']} thread(s), onnxruntime {pk.get('onnxruntime', '?')}, "
        f"ai-edge-litert {pk.get('ai-edge-litert', '-')}, numpy {pk.get('numpy', '?')}, {env['utc']}"
    )
