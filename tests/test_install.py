"""Packaging: the op library is optional (no compiler -> a warning and no .so), stripped, and the sdist is complete.

The builds run in a temporary copy of the source tree so the working tree's build outputs are never touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# What a source tree needs to build; tests/docs/examples ride along for the sdist check.
_COPY = ("setup.py", "pyproject.toml", "MANIFEST.in", "README.md", "LICENSE", "constraints.txt", "Makefile",
         "dkp_deploy", "ops", "tests", "docs", "examples")
_IGNORE = shutil.ignore_patterns("__pycache__", "*.so", "*.pyc", "*.egg-info", "build")

if not (ROOT / "setup.py").is_file():  # an installed copy of the tests, not a source tree
    pytest.skip("needs the source tree (setup.py)", allow_module_level=True)


def _copy_tree(dest: Path) -> Path:
    src = dest / "src"
    src.mkdir()
    for name in _COPY:
        p = ROOT / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=_IGNORE)
        elif p.is_file():
            shutil.copy2(p, src / name)
    return src


def _build(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    # --no-build-isolation: no network needed; the running environment has setuptools and wheel.
    proc = subprocess.run([sys.executable, "-m", "pip", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0 and "No module named" in proc.stderr and "setuptools" in proc.stderr:
        pytest.skip("setuptools is not importable here and fetching it would need the network")
    return proc


@pytest.mark.slow
def test_wheel_without_compiler_installs_without_op_library(tmp_path) -> None:
    src = _copy_tree(tmp_path)
    env = {**os.environ, "CXX": "/nonexistent/g++", "CC": "/nonexistent/gcc", "PIP_NO_INDEX": "1"}
    wheels = tmp_path / "wheels"
    proc = _build(["wheel", "--no-deps", "--no-build-isolation", "-v", "-w", str(wheels), "."], src, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = [line for line in (proc.stdout + proc.stderr).splitlines()
                if "WARNING: dkp-deploy: the C++ op library" in line]
    assert warnings and "reinstall" in warnings[0]
    (wheel,) = wheels.glob("dkp_deploy-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "dkp_deploy/ops.py" in names and "dkp_deploy/cli.py" in names
    assert not [n for n in names if n.endswith((".so", ".pyd", ".dylib"))]
    # installs (into a target dir: no venv needed) and then says how to get the op
    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target",
                           str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    code = ("from dkp_deploy import ops\n"
            "try:\n    ops.library_path()\nexcept ops.OpsLibraryMissing as e:\n    print(e)\n")
    env = {k: v for k, v in os.environ.items() if k != "DKP_OPS_LIBRARY"}
    env["PYTHONPATH"] = str(target)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "compiler" in proc.stdout and "reinstall" in proc.stdout


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux" or shutil.which("c++") is None and shutil.which("g++") is None,
                    reason="needs a C++ compiler on Linux")
def test_wheel_library_is_stripped(tmp_path) -> None:
    src = _copy_tree(tmp_path)
    wheels = tmp_path / "wheels"
    proc = _build(["wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), "."], src,
                  {**os.environ, "PIP_NO_INDEX": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = wheels.glob("dkp_deploy-*.whl")
    with zipfile.ZipFile(wheel) as z:
        (lib,) = [n for n in z.namelist() if n.endswith(".so")]
        data = z.read(lib)
    assert b".symtab" not in data  # the section name table lists .symtab only when a symbol table is kept
    assert len(data) < 600_000


def test_sdist_holds_tests_helpers_and_ops_sources(tmp_path) -> None:
    src = _copy_tree(tmp_path)
    proc = subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path)],
                          cwd=src, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "CXX": "/nonexistent/g++", "CC": "/nonexistent/gcc"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sdist,) = tmp_path.glob("dkp_deploy-*.tar.gz")
    with tarfile.open(sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    expected = {f"tests/{p.name}" for p in (ROOT / "tests").iterdir() if p.is_file() and p.suffix in (".py", ".cc")}
    expected |= {f"ops/{p.name}" for p in (ROOT / "ops").iterdir() if p.is_file()}
    for must in ("tests/conftest.py", "tests/_onnx_models.py", "tests/ops_fuzz.py", "tests/ops_graphs.py",
                 "tests/tflite_runtime_check.py", "tests/ops_abi_check.cc", "ops/ort_abi.h", "setup.py",
                 "pyproject.toml", "MANIFEST.in"):
        assert must in names
    assert expected <= names, sorted(expected - names)
    assert not [n for n in names if n.endswith((".so", ".pyc"))]
