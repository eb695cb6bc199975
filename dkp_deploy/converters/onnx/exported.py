"""Read an exported ONNX file back: its mode and each weight matrix rebuilt densely from the file's tensors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from ...errors import InputError
from ...fileio import existing_file
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
    sparse = None
    if "values" in t:
        sparse = CSR((m, n), t["row_ptr"], t["col_idx"], t["values"].astype(np.float32))
        sparse.check(name)
    parts = {role: t[role] for role in ("W", "B", "U", "V", "W_top") if role in t}
    if "C_T" in t:  # the file holds C transposed (MatMul's right operand)
        parts["C"] = t["C_T"].T
    return dense_from_parts(name, (m, n), parts, sparse)


def load_exported(path: str | os.PathLike) -> ExportedModel:
    """The file's metadata, mode and dense W per matrix name (`ModelSpec.matrices()` names)."""
    p = existing_file(path)
    try:
        model = onnx.load(str(p))
    except Exception as e:  # protobuf raises several types for a file that is not ONNX
        raise InputError(f"not an ONNX file ({type(e).__name__})", p) from None
    meta = {m.key: m.value for m in model.metadata_props}
    layers = layers_from_metadata(meta, p)
    arrays = {t.name: numpy_helper.to_array(t) for g in all_graphs(model.graph) for t in g.initializer}
    try:
        matrices = {name: _dense(name, info, arrays) for name, info in layers.items()}
    except InputError as e:
        raise InputError(str(e), p) if e.path is None else e from None
    except (KeyError, TypeError, ValueError) as e:  # dkp.layers entries of the wrong form
        raise InputError(f"corrupt dkp.layers metadata ({type(e).__name__}: {e})", p) from None
    return ExportedModel(path=Path(p), format="onnx", mode=meta.get("dkp.mode", "sequence"), matrices=matrices,
                         metadata=meta)
