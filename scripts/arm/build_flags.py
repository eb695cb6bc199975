"""Print, one per line, the compile and link flags setup.py gives the ops library on another machine type.

The ARM check cross-compiles with exactly what `pip install` on the board would use, so it reads them from
setup.py itself (run with `setuptools.setup` captured and `platform.machine()` answering `--machine`) instead
of keeping a second copy that could drift.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import runpy
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import setuptools

ROOT = Path(__file__).resolve().parents[2]


def setup_flags(machine: str, root: Path = ROOT) -> list[str]:
    """extra_compile_args + extra_link_args of setup.py's one extension, as built on `machine` (e.g. aarch64)."""
    captured: dict[str, Any] = {}
    cwd = os.getcwd()
    os.chdir(root)  # setup.py lists ops/ relative to the working directory
    try:
        with contextlib.ExitStack() as patches:
            patches.enter_context(mock.patch.object(setuptools, "setup", lambda **kw: captured.update(kw)))
            patches.enter_context(mock.patch.object(platform, "machine", lambda: machine))
            patches.enter_context(mock.patch.object(platform, "system", lambda: "Linux"))
            patches.enter_context(mock.patch.dict(os.environ, {"DKP_NATIVE": ""}))
            runpy.run_path(str(root / "setup.py"), run_name="__main__")
    finally:
        os.chdir(cwd)
    (ext,) = captured["ext_modules"]
    return [*ext.extra_compile_args, *ext.extra_link_args]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machine", default="aarch64", help="what platform.machine() says on the target")
    args = parser.parse_args(argv)
    print("\n".join(setup_flags(args.machine)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
