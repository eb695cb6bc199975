"""Read an exported ONNX file back: its mode and each weight matrix rebuilt densely from the file's tensors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ...errors import InputError
from ...fileio import existing_file
from ...quantize import dequantize_roles
from ...spec import CSR
from ..exported import ExportedModel, dense_from_parts, layers_from_metadata
from .graph import all_graphs


def _dense(name: str, info: dict, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """W (float64) from the tensors the file computes with, as named in the dkp.layers metadata."""
    m, n = info["shape"]
    try:
        t = {role: arrays[tname] for role, tname in info.get("tensors", {}).items()}
    except KeyError as e:
        raise InputError(f"layer {name!r}: tensor {e.args[0]!r} named in the metadata is not in the file") from None
    if "col_idx" in t and np.asarray(t["col_idx"]).dtype == np.uint8:  # an ai.dkp op's column gaps
        t["col_idx"] = CSR.from_column_gaps((m, n), t["row_ptr"], t["col_idx"], t.get("values", []), name).col_idx
    t = dequantize_roles(t)  # an int8 file's tensors as the float ones they stand for
    sparse = None
    if "values" in t:
        sparse = CSR((m, n), t["row_ptr"], t["col_idx"], t["values"].astype(np.float32))
        sparse.check(name)
    parts = {role: t[role] for role in ("W", "B", "U", "V", "W_top") if role in t}
    if "C_T" in t:  # the file holds C transposed (MatMul's right operand)
        parts["C"] = t["C_T"].T
    return dense_from_parts(name, (m, n), parts, sparse)


def _array(t: onnx.TensorProto, path: Path) -> np.ndarray:
    """An initializer as an array; dims that its bytes do not fill (a cut file, a forged shape) are an InputError
    before numpy is asked to allocate them."""
    count = int(np.prod([int(d) for d in t.dims], dtype=object)) if t.dims else 1
    if any(int(d) < 0 for d in t.dims):
        raise InputError(f"tensor {t.name!r} has a negative dimension {list(t.dims)}", path)
    if t.HasField("raw_data"):
        try:
            itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
        except (KeyError, TypeError, ValueError):
            raise InputError(f"tensor {t.name!r} has an unknown data type {t.data_type}", path) from None
        if count * itemsize != len(t.raw_data):
            raise InputError(f"tensor {t.name!r}: dims {list(t.dims)} need {count * itemsize} bytes, the file holds "
                             f"{len(t.raw_data)}", path)
    try:
        return numpy_helper.to_array(t)
    except (ValueError, TypeError, MemoryError) as e:  # typed fields (float_data, ...) that do not fill the dims
        raise InputError(f"tensor {t.name!r}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                         path) from None


def load_exported(path: str | os.PathLike) -> ExportedModel:
    """The file's metadata, mode and dense W per matrix name (`ModelSpec.matrices()` names)."""
    p = existing_file(path)
    try:
        model = onnx.load(str(p))
    except Exception as e:  # protobuf raises several types for a file that is not ONNX
        raise InputError(f"not an ONNX file ({type(e).__name__})", p) from None
    meta = {m.key: m.value for m in model.metadata_props}
    layers = layers_from_metadata(meta, p)
    arrays = {t.name: _array(t, p) for g in all_graphs(model.graph) for t in g.initializer}
    try:
        matrices = {name: _dense(name, info, arrays) for name, info in layers.items()}
    except InputError as e:
        raise InputError(str(e), p) if e.path is None else e from None
    except (KeyError, TypeError, ValueError) as e:  # dkp.layers entries of the wrong form
        raise InputError(f"corrupt dkp.layers metadata ({type(e).__name__}: {e})", p) from None
    return ExportedModel(path=Path(p), format="onnx", mode=meta.get("dkp.mode", "sequence"), matrices=matrices,
                         metadata=meta)
