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


@pytest.mark.parametrize("runtime", ["onnxruntime", "tflite"])
def test_parity_script_passes_and_fails_when_it_must(tmp_path: Path, runtime: str) -> None:
    """The host half of `make arm-check` on x86: the same scripts, exit 0 on parity and 1 on a wrong reference."""
    import sys

    import numpy as np

    if runtime == "tflite":
        pytest.importorskip("dkp_deploy.converters.tflite")
        if not any(__import__("importlib").util.find_spec(m) for m in ("ai_edge_litert", "tflite_runtime")):
            pytest.skip("no TFLite interpreter installed")
    models = tmp_path / "models"
    arm = ROOT / "scripts" / "arm"
    subprocess.run([sys.executable, str(arm / "make_models.py"), "--out", str(models)], check=True, capture_output=True)

    def parity() -> subprocess.CompletedProcess:
        cmd = [sys.executable, str(arm / "run_parity.py"), "--runtime", runtime, "--models", str(models)]
        return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)

    ok = parity()
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "PASS" in ok.stdout and "FAIL" not in ok.stdout
    data = dict(np.load(models / "lstm_step.npz"))  # one reference output off by 1e-2: parity must fail
    key = next(k for k in data if k.startswith("ref/"))
    data[key] = data[key] + 1e-2
    np.savez(models / "lstm_step.npz", **data)
    bad = parity()
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert any(line.startswith("FAIL") and "lstm_step" in line for line in bad.stdout.splitlines()), bad.stdout
