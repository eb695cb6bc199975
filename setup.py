"""Builds the onnxruntime custom-op library (ops/) as part of `pip install`.

The library is an ordinary shared object that onnxruntime loads with `register_custom_ops_library`; it is
built through setuptools' Extension machinery only because that gives us the platform's compiler, flags and
`pip install -e .` support for free. It is never imported by Python.
"""

import os
import platform

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


class BuildOps(build_ext):
    def get_export_symbols(self, ext):  # no PyInit_* symbol: this is not a Python module
        return ["RegisterCustomOps"]


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
            extra_link_args=["-Wl,--no-undefined", "-Wl,-z,nodelete"] if platform.system() == "Linux" else [],
        )
    ],
    cmdclass={"build_ext": BuildOps},
)
