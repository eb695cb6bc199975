"""`DopedMatMul` hub nodes: written from a `DopedMatrix` (+ bias), and read back into one."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import helper

from ..errors import InputError
from ..spec import CSR, FACTOR_NAMES, DopedMatrix
from .schema import DOMAIN

DOPED_MATMUL = "DopedMatMul"
_SPARSE_SLOTS = ("row_ptr", "col_idx", "values")


def doped_matmul_node(
    g, x: str, w: DopedMatrix, bias: np.ndarray | None, name: str, output: str | None = None
) -> str:
    """Emit one DopedMatMul into the `Graph` builder `g` (its tensors become initializers); return Y's name.

    A "dense" W (F0 = W) is a DopedMatMul only where the matrix must stay tracked by name (a native model's
    undoped layers, which validation rebuilds); the general export writes dense layers as standard ops."""
    factors = [g.init(f"{name}/{role}", np.asarray(w.factors[role], np.float32))
               for role in FACTOR_NAMES[w.structure]]
    factors += [""] * (3 - len(factors))
    sparse = ["", "", ""]
    if w.sparse is not None and w.sparse.nnz:
        sp = w.sparse
        sparse = [g.init(f"{name}/W_s/row_ptr", sp.row_ptr.astype(np.int32)),
                  g.init(f"{name}/W_s/col_idx", sp.col_idx.astype(np.int32)),
                  g.init(f"{name}/W_s/values", sp.values.astype(np.float32))]
    b = g.init(f"{name}/bias", np.asarray(bias, np.float32)) if bias is not None else ""
    inputs = [x, *factors, *sparse, b]
    while inputs[-1] == "":
        inputs.pop()
    node = g.node(DOPED_MATMUL, inputs, f"{name}/doped_matmul", domain=DOMAIN, outputs=[output] if output else 1,
                  structure=w.structure, shape=list(w.shape), matrix=name)
    return node


def node_header(node: onnx.NodeProto, dims: str) -> tuple[str, str, tuple[int, int]]:
    """(label for messages, `structure`, `shape`) of a doped hub node; `dims` names the shape in the message."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    label = node.name or node.output[0]
    try:
        structure = attrs["structure"].decode()
        m, n = (int(v) for v in attrs["shape"])
    except (KeyError, ValueError, AttributeError):
        raise InputError(f"node {label!r}: {node.op_type} needs attributes structure and shape {dims}") from None
    return label, structure, (m, n)


def constant_inputs(node: onnx.NodeProto, roles: tuple[str | None, ...], arrays: Mapping[str, np.ndarray]
                    ) -> dict[str, np.ndarray]:
    """The node's inputs by role (`roles[i]` names slot i; None: not a constant, e.g. the data input), each a
    constant initializer of `arrays`; empty slots are left out."""
    label = node.name or node.output[0]
    out = {}
    for name, role in zip(node.input, roles):
        if not name or role is None:
            continue
        if name not in arrays:
            raise InputError(f"node {label!r}: input {role} ({name!r}) must be a constant initializer")
        out[role] = np.asarray(arrays[name])
    return out


def sparse_part(label: str, shape: tuple[int, int], t: Mapping[str, np.ndarray]) -> CSR | None:
    """W_s from the roles row_ptr, col_idx and values of `t` (all three or none)."""
    given = [r for r in _SPARSE_SLOTS if r in t]
    if not given:
        return None
    if len(given) < len(_SPARSE_SLOTS):
        raise InputError(f"node {label!r}: W_s needs all of row_ptr, col_idx and values")
    return CSR(shape, t["row_ptr"], t["col_idx"], np.asarray(t["values"], np.float32))


def read_doped_matmul(node: onnx.NodeProto, arrays: Mapping[str, np.ndarray]) -> tuple[DopedMatrix, np.ndarray | None]:
    """The matrix and bias a DopedMatMul node holds; its tensors must be constants (`arrays`: initializers)."""
    label, structure, (m, n) = node_header(node, "[M, N]")
    if structure not in FACTOR_NAMES:
        raise InputError(f"node {label!r}: unknown DopedMatMul structure {structure!r}")
    factor_roles = (*FACTOR_NAMES[structure], "F1", "F2", "F3")[:3]  # slots a structure leaves unused: ignored
    t = constant_inputs(node, (None, *factor_roles, *_SPARSE_SLOTS, "bias"), arrays)
    factors = {}
    for role in FACTOR_NAMES[structure]:
        if role not in t:
            raise InputError(f"node {label!r}: structure {structure!r} needs factor {role}")
        factors[role] = np.asarray(t[role], np.float32)
    w = DopedMatrix((m, n), structure, factors, sparse_part(label, (m, n), t))
    w.check(matrix_name(node))
    bias = t.get("bias")
    if bias is not None and bias.shape != (m,):
        raise InputError(f"node {label!r}: bias of shape {bias.shape}, expected ({m},)")
    return w, None if bias is None else np.asarray(bias, np.float32)


def matrix_name(node: onnx.NodeProto) -> str:
    """The name a DopedMatMul node gives its matrix (its `matrix` attribute, else the node's name)."""
    for a in node.attribute:
        if a.name == "matrix" and a.s:
            return a.s.decode()
    return node.name or node.output[0]


__all__ = ["DOPED_MATMUL", "doped_matmul_node", "read_doped_matmul", "matrix_name", "node_header", "constant_inputs",
           "sparse_part"]
