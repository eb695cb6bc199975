"""Builds the onnxruntime custom-op library (ops/) as part of `pip install`.

The library is an ordinary shared object that onnxruntime loads with `register_custom_ops_library`; it is
built through setuptools' Extension machinery only because that gives us the platform's compiler, flags and
`pip install -e .` support for free. It is never imported by Python.
"""

import os
import platform
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _arch_flags() -> list[str]:
    # Safe on every CPU of the target arch: no -march=native unless the user opts in.
    if os.environ.get("DKP_NATIVE") == "1":
        return ["-march=native"]
    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64"):
        return ["-mcpu=cortex-a72", "-mtune=generic"]
    return []


_NO_OPS_WARNING = (
    "WARNING: dkp-deploy: the C++ op library (ai.dkp::SparseMatVec) could not be built ({error}); "
    "installing without it. The portable ONNX (--sparse-impl portable) and TFLite paths work; for the op, "
    "install a C++17 compiler and reinstall dkp-deploy."
)


class BuildOps(build_ext):
    """build_ext that treats the op library as optional: a missing or failing compiler warns, never fails."""

    def get_export_symbols(self, ext):  # no PyInit_* symbol: this is not a Python module
        return ["RegisterCustomOps"]

    def run(self) -> None:
        try:
            super().run()
        except Exception as e:  # setuptools wraps compiler failures in several classes (CCompilerError, ...)
            self._warn(e)

    def build_extension(self, ext) -> None:
        try:
            super().build_extension(ext)
        except Exception as e:
            self._warn(e)

    def _warn(self, error: Exception) -> None:
        msg = " ".join(str(error).split()) or type(error).__name__
        print(_NO_OPS_WARNING.format(error=msg), file=sys.stderr)


ops_sources = sorted(os.path.join("ops", f) for f in os.listdir("ops") if f.endswith(".cc"))

setup(
    ext_modules=[
        Extension(
            "dkp_deploy._dkp_ops",
            sources=ops_sources,
            depends=[os.path.join("ops", f) for f in os.listdir("ops") if f.endswith(".h")],
            language="c++",
            extra_compile_args=[
                "-std=c++17", "-O3", "-fvisibility=hidden", "-fno-math-errno", "-ffp-contract=fast", *_arch_flags()
            ],
            # nodelete: the op domain is a process-wide static that sessions keep using after their options die.
            # -s: strip the symbol tables (about 1.5 MB -> 120 KB); only RegisterCustomOps needs to be visible.
            extra_link_args=["-Wl,--no-undefined", "-Wl,-z,nodelete", "-s"] if platform.system() == "Linux" else [],
        )
    ],
    cmdclass={"build_ext": BuildOps},
)
