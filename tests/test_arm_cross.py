"""The aarch64 build of the ops library: flags from setup.py, and a cross-compile where the toolchain exists.

The full proof (run under qemu, parity against the reference) is `make arm-check` (docs/arm.md): too slow and
too download-heavy for the suite. This keeps its cheap half honest on every run.
"""

from __future__ import annotations

import runpy
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
setup_flags = runpy.run_path(str(ROOT / "scripts" / "arm" / "build_flags.py"))["setup_flags"]

CROSS_CXX = "aarch64-linux-gnu-g++"
EM_AARCH64 = 183  # ELF e_machine of AArch64


def test_aarch64_flags_target_cortex_a72_portably() -> None:
    flags = setup_flags("aarch64")
    assert "-mcpu=cortex-a72" in flags or {"-march=armv8-a", "-mtune=cortex-a72"} <= set(flags)
    assert not [f for f in flags if "native" in f], flags
    assert not [f for f in setup_flags("x86_64") if "native" in f]


@pytest.mark.skipif(shutil.which(CROSS_CXX) is None, reason=f"{CROSS_CXX} not installed (make arm-check installs it)")
def test_ops_library_cross_compiles_for_aarch64(tmp_path: Path) -> None:
    lib = tmp_path / "_dkp_ops.aarch64.so"
    sources = sorted(str(p) for p in (ROOT / "ops").glob("*.cc"))
    subprocess.run([CROSS_CXX, "-shared", "-fPIC", *setup_flags("aarch64"), *sources, "-o", str(lib)], check=True)
    header = lib.read_bytes()[:20]
    assert header[:5] == b"\x7fELF\x02"  # 64-bit ELF
    assert int.from_bytes(header[18:20], "little") == EM_AARCH64
    nm = shutil.which("aarch64-linux-gnu-nm")
    if nm:
        symbols = subprocess.run([nm, "-D", "--defined-only", str(lib)], check=True, capture_output=True, text=True)
        exported = {line.split()[-1] for line in symbols.stdout.splitlines()}
        assert "RegisterCustomOps" in exported
