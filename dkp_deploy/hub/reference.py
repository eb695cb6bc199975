"""Evaluate a hub in float64 with `onnx.reference` (no onnxruntime, no torch): the independent reference.

Floating-point initializers and feeds are promoted to float64; `DopedMatMul` runs as W = structured + W_s built
densely in float64 from the node's own tensors, `DopedGather` as rows of the table kron(B, C) + W_s built so.
`run(..., matrix_input=f)`: each doped (not "dense") DopedMatMul with a W_s applies W to f(x) instead of x, as
int8-dynamic files do (`dkp_deploy.quantize.dynamic_roundtrip`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

from ..reference import matmul
from .embedding import read_doped_gather
from .matrix import read_doped_matmul
from .schema import DOMAIN


class DopedMatMul(OpRun):
    op_domain = DOMAIN
    matrix_input = None  # a subclass made by `run` sets the function a doped matrix's input goes through

    def _run(self, x, f0=None, f1=None, f2=None, row_ptr=None, col_idx=None, values=None, bias=None,
             structure=None, shape=None, matrix=None):
        slots = ["x", "f0", "f1", "f2", "row_ptr", "col_idx", "values", "bias"]
        given = dict(zip(slots, (x, f0, f1, f2, row_ptr, col_idx, values, bias)))
        node = onnx.helper.make_node("DopedMatMul", [k if given[k] is not None else "" for k in slots], ["y"],
                                     domain=DOMAIN, structure=structure, shape=list(shape), matrix=matrix or "")
        arrays = {k: v for k, v in given.items() if v is not None}
        w, b = read_doped_matmul(node, arrays)
        y = matmul(w, type(self).matrix_input)(np.asarray(x, np.float64))
        if b is not None:
            y = y + b.astype(np.float64)
        return (y,)


class DopedGather(OpRun):
    op_domain = DOMAIN

    def _run(self, indices, b, c, row_ptr=None, col_idx=None, values=None, structure=None, shape=None, matrix=None):
        slots = ["indices", "B", "C", "row_ptr", "col_idx", "values"]
        given = dict(zip(slots, (indices, b, c, row_ptr, col_idx, values)))
        node = onnx.helper.make_node("DopedGather", [k if given[k] is not None else "" for k in slots], ["y"],
                                     domain=DOMAIN, structure=structure, shape=list(shape), matrix=matrix or "")
        w = read_doped_gather(node, {k: v for k, v in given.items() if v is not None})
        table = np.kron(np.asarray(b, np.float64), np.asarray(c, np.float64))  # the factors as given, in float64
        if w.sparse is not None:
            rows = np.repeat(np.arange(w.shape[0]), np.diff(np.asarray(row_ptr, np.int64)))
            np.add.at(table, (rows, np.asarray(col_idx, np.int64)), np.asarray(values, np.float64))
        ids = np.asarray(indices)
        if ids.size and (ids.min() < 0 or ids.max() >= w.shape[0]):
            raise ValueError(f"DopedGather: index out of range [0, {w.shape[0]})")
        return (table[ids],)


def _promote(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose float32 initializers (Scan bodies' too) are float64, so every op computes in float64, and
    whose reverse-direction Scans read and write a flipped sequence (onnx.reference runs forward Scans only)."""
    from ..converters.onnx.graph import all_graphs

    out = onnx.ModelProto()
    out.CopyFrom(model)
    for g in all_graphs(out.graph):
        tensors = [*g.initializer, *(a.t for n in g.node for a in n.attribute if a.type == onnx.AttributeProto.TENSOR)]
        for t in tensors:  # initializers and Constant / ConstantOfShape values
            if t.data_type == onnx.TensorProto.FLOAT:
                t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), t.name))
        for n in g.node:  # ConstantOfShape's default value is a float32 zero
            if n.op_type == "ConstantOfShape" and not n.attribute:
                n.attribute.append(onnx.helper.make_attribute("value", numpy_helper.from_array(np.zeros(1))))
    for g in list(all_graphs(out.graph)):
        _forward_scans(g)
    return out


def _forward_scans(graph: onnx.GraphProto) -> None:
    """Scan(x, reverse) = flip(Scan(flip(x), forward)) for the hub's one scan input and output per Scan."""
    flip = [numpy_helper.from_array(np.array(v, np.int64), f"reference/flip/{k}")
            for k, v in (("starts", [-1]), ("ends", [-(2**62)]), ("axes", [0]), ("steps", [-1]))]
    nodes, used = [], False
    for node in graph.node:
        attrs = {a.name: a for a in node.attribute}
        directions = list(attrs["scan_input_directions"].ints) if "scan_input_directions" in attrs else []
        if node.op_type != "Scan" or not any(directions):
            nodes.append(node)
            continue
        used = True
        x, y = node.input[-1], node.output[-1]
        nodes.append(onnx.helper.make_node("Slice", [x, *(t.name for t in flip)], [f"{x}/reference_flipped"]))
        scan = onnx.NodeProto()
        scan.CopyFrom(node)
        scan.input[-1], scan.output[-1] = f"{x}/reference_flipped", f"{y}/reference_flipped"
        for a in scan.attribute:
            if a.name in ("scan_input_directions", "scan_output_directions"):
                del a.ints[:]
                a.ints.extend([0] * len(directions))
        nodes.append(scan)
        nodes.append(onnx.helper.make_node("Slice", [f"{y}/reference_flipped", *(t.name for t in flip)], [y]))
    if used:
        del graph.node[:]
        graph.node.extend(nodes)
        graph.initializer.extend(flip)


def run(hub: onnx.ModelProto, feeds: Mapping[str, np.ndarray], *,
        matrix_input: Callable[[np.ndarray], np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The hub's outputs for `feeds`, computed in float64 (`matrix_input`: see the module docstring)."""
    matmul = DopedMatMul
    if matrix_input is not None:  # the evaluator instantiates the class: the function rides on a subclass
        matmul = type("DopedMatMul", (DopedMatMul,), {"matrix_input": staticmethod(matrix_input)})
    evaluator = ReferenceEvaluator(_promote(hub), new_ops=[matmul, DopedGather])
    cast = {k: (np.asarray(v, np.float64) if np.asarray(v).dtype.kind == "f" else np.asarray(v))
            for k, v in feeds.items()}
    names = [o.name for o in hub.graph.output]
    return dict(zip(names, evaluator.run(None, cast)))


__all__ = ["run", "DopedMatMul", "DopedGather"]
