"""Evaluate a hub in float64 with `onnx.reference` (no onnxruntime, no torch): the independent reference.

Floating-point initializers and feeds are promoted to float64; `DopedMatMul` runs as W = structured + W_s built
densely in float64 from the node's own tensors.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

from .matrix import read_doped_matmul
from .schema import DOMAIN


class DopedMatMul(OpRun):
    op_domain = DOMAIN

    def _run(self, x, f0=None, f1=None, f2=None, row_ptr=None, col_idx=None, values=None, bias=None,
             structure=None, shape=None, matrix=None):
        slots = ["x", "f0", "f1", "f2", "row_ptr", "col_idx", "values", "bias"]
        given = dict(zip(slots, (x, f0, f1, f2, row_ptr, col_idx, values, bias)))
        node = onnx.helper.make_node("DopedMatMul", [k if given[k] is not None else "" for k in slots], ["y"],
                                     domain=DOMAIN, structure=structure, shape=list(shape), matrix=matrix or "")
        arrays = {k: v for k, v in given.items() if v is not None}
        w, b = read_doped_matmul(node, arrays)
        y = np.asarray(x, np.float64) @ w.dense(np.float64).T
        if b is not None:
            y = y + b.astype(np.float64)
        return (y,)


def _promote(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose float32 initializers are float64 (so every op computes in float64)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for t in out.graph.initializer:
        if t.data_type == onnx.TensorProto.FLOAT:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), t.name))
    return out


def run(hub: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The hub's outputs for `feeds`, computed in float64."""
    evaluator = ReferenceEvaluator(_promote(hub), new_ops=[DopedMatMul])
    cast = {k: (np.asarray(v, np.float64) if np.asarray(v).dtype.kind == "f" else np.asarray(v))
            for k, v in feeds.items()}
    names = [o.name for o in hub.graph.output]
    return dict(zip(names, evaluator.run(None, cast)))


__all__ = ["run", "DopedMatMul"]
