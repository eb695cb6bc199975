"""ops/ort_abi.h agrees with onnxruntime's official C header, slot by slot and field by field.

The official header comes from Debian trixie's libonnxruntime-dev (onnxruntime 1.21), fetched with a private APT
configuration into .cache/ort-abi/ (gitignored; later runs reuse it) and never vendored. tests/ops_abi_check.cc
static_asserts offsets, types and enum values; it is compiled once as is (must build) and once with a deliberately
mismatched slot (must not build), so the check itself is known to bite. Skips, saying why, where the package
cannot be fetched (no apt-get/dpkg, no network, no Debian keyring) or no C++ compiler exists.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "ort-abi"
HEADER_DIR = CACHE / "root" / "usr" / "include" / "onnxruntime"
SOURCES = "deb http://deb.debian.org/debian trixie main\n"


def _apt(args: list[str], conf: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {"APT_CONFIG": str(conf), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    cmd = ["apt-get", "-q", "-o", "Debug::NoLocking=1", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def official_headers() -> Path:
    """Directory holding onnxruntime_c_api.h from Debian trixie, fetched on first use; skips if that fails."""
    if (HEADER_DIR / "onnxruntime_c_api.h").is_file():
        return HEADER_DIR
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            pytest.skip(f"cannot fetch Debian's libonnxruntime-dev: {tool} not found")
    apt = CACHE / "apt"
    for sub in ("state/lists/partial", "cache/archives/partial", "debs"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    (apt / "sources.list").write_text(SOURCES)
    conf = apt / "apt.conf"
    conf.write_text(
        "\n".join(
            [
                'APT::Architecture "amd64";',
                'APT::Architectures { "amd64"; };',
                f'Dir::Etc::sourcelist "{apt / "sources.list"}";',
                'Dir::Etc::sourceparts "-";',
                f'Dir::State "{apt / "state"}";',
                'Dir::State::status "/dev/null";',
                f'Dir::Cache "{apt / "cache"}";',
                'Acquire::Languages "none";',
            ]
        )
        + "\n"
    )
    debs = apt / "debs"
    if not list(debs.glob("libonnxruntime-dev_*.deb")):
        for step in (["update"], ["download", "libonnxruntime-dev"]):
            proc = _apt(step, conf, debs)
            if proc.returncode != 0:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
                pytest.skip(f"cannot fetch Debian trixie's libonnxruntime-dev (apt-get {step[0]}): {tail}")
        shutil.rmtree(apt / "state", ignore_errors=True)  # the 20 MB package index is not needed once the .deb is here
    (deb,) = sorted(debs.glob("libonnxruntime-dev_*.deb"))[-1:]
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        subprocess.run(["dpkg-deb", "-x", str(deb), tmp], check=True, timeout=120)
        if not (Path(tmp) / "usr" / "include" / "onnxruntime" / "onnxruntime_c_api.h").is_file():
            pytest.skip(f"{deb.name} holds no onnxruntime_c_api.h")
        shutil.rmtree(CACHE / "root", ignore_errors=True)
        Path(tmp).rename(CACHE / "root")
    return HEADER_DIR


def compile_check(headers: Path, *defines: str) -> subprocess.CompletedProcess:
    cxx = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    cmd = [cxx, "-std=c++17", "-fsyntax-only", "-w", f"-I{ROOT / 'ops'}", f"-I{headers}", *defines]
    return subprocess.run([*cmd, str(ROOT / "tests" / "ops_abi_check.cc")], capture_output=True, text=True, timeout=120)


def test_our_abi_declarations_match_the_official_header() -> None:
    headers = official_headers()
    proc = compile_check(headers)
    assert proc.returncode == 0, proc.stderr[-3000:]
    mutant = compile_check(headers, "-DDKP_ABI_CHECK_MUTANT")
    assert mutant.returncode != 0 and "static assertion failed" in mutant.stderr, "the check does not detect a bad slot"
