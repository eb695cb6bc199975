"""Python face of the C++ onnxruntime op library (ops/): where it is and how to load it into a session.

The library defines `ai.dkp::SparseMatVec` (contract in docs/ops.md): Y = X @ W^T (+ Y0) for a CSR matrix W given
as row_ptr / col_idx / values, and its int8 forms `SparseMatVecInt8` (int8 values, float X) and
`SparseMatVecInteger` (int8 values, uint8 X from DynamicQuantizeLinear). It is built by setuptools with the
package; this module never imports torch.
"""

from __future__ import annotations

import os
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from typing import Any

from dkp_deploy.errors import DkpError
from dkp_deploy.hub.schema import register_schemas

register_schemas()  # onnx's checker and tools then know the ai.dkp ops (DopedMatMul, SparseMatVec)

DOMAIN = "ai.dkp"
OP_TYPE = "SparseMatVec"
OPSET_VERSION = 1
INPUT_NAMES = ("X", "row_ptr", "col_idx", "values", "Y0", "B", "C_T")  # from Y0 on optional; B, C_T: kron(B, C) @ X
INT8_OP_TYPE = "SparseMatVecInt8"  # int8 values, one float scale per row of W
INT8_INPUT_NAMES = ("X", "row_ptr", "col_idx", "values", "row_scale", "Y0", "B", "C_T")
# int8-dynamic files: X uint8 from DynamicQuantizeLinear, int8 values; Y = x_scale * row_scale[i] *
# sum_k values[k] * (X[..., col_idx[k]] - x_zero_point) (+ Y0), float32
INTEGER_OP_TYPE = "SparseMatVecInteger"
INTEGER_INPUT_NAMES = ("X", "row_ptr", "col_idx", "values", "row_scale", "x_scale", "x_zero_point", "Y0", "B", "C_T",
                       "X_kron")  # X_kron: the float x of the Kronecker half (with a uint8 X)

# what a file using the op says about it (ModelProto.doc_string), for people and tools that open it
LIBRARY_DOC = ("Needs the ai.dkp custom-op library of dkp-deploy (pip install dkp-deploy): "
               "dkp_deploy.ops.session_options(), or SessionOptions.register_custom_ops_library("
               "dkp_deploy.ops.library_path()); the portable and dense files run without it")
LIBRARY_ENV = "DKP_OPS_LIBRARY"  # overrides the built library's path (e.g. a cross-built one for a board)
_LIBRARY_STEM = "_dkp_ops"
_BUILD_HINT = (
    "it is compiled when dkp-deploy installs and was skipped, most likely for want of a C++17 compiler: install "
    "one (e.g. `apt install g++`) and reinstall dkp-deploy (`pip install --force-reinstall --no-deps dkp-deploy`, "
    "or `pip install -e .` in the source tree); the portable ONNX and TFLite paths do not need it"
)


class OpsLibraryMissing(DkpError, FileNotFoundError):
    """The compiled op library is not where the package expects it."""


def library_path() -> Path:
    """Path of the built op library (the `DKP_OPS_LIBRARY` environment variable wins when set)."""
    override = os.environ.get(LIBRARY_ENV)
    if override:
        path = Path(override)
        if not path.is_file():
            raise OpsLibraryMissing(f"{LIBRARY_ENV}={override}: no such file")
        return path
    package_dir = Path(__file__).resolve().parent
    for suffix in EXTENSION_SUFFIXES:
        path = package_dir / f"{_LIBRARY_STEM}{suffix}"
        if path.is_file():
            return path
    raise OpsLibraryMissing(
        f"the dkp_deploy op library ({_LIBRARY_STEM}*.so) is not built in {package_dir}: {_BUILD_HINT}"
    )


def session_options(**attributes: Any):
    """An `onnxruntime.SessionOptions` with the op library registered and `attributes` set on it.

    Example: `session_options(intra_op_num_threads=1)`. An unknown attribute name raises TypeError.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    for name, value in attributes.items():
        if not hasattr(options, name):
            raise TypeError(f"onnxruntime.SessionOptions has no attribute {name!r}")
        setattr(options, name, value)
    options.register_custom_ops_library(str(library_path()))
    return options
