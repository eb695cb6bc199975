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


def read_doped_matmul(node: onnx.NodeProto, arrays: Mapping[str, np.ndarray]) -> tuple[DopedMatrix, np.ndarray | None]:
    """The matrix and bias a DopedMatMul node holds; its tensors must be constants (`arrays`: initializers)."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    label = node.name or node.output[0]
    try:
        structure = attrs["structure"].decode()
        m, n = (int(v) for v in attrs["shape"])
    except (KeyError, ValueError, AttributeError):
        raise InputError(f"node {label!r}: DopedMatMul needs attributes structure and shape [M, N]") from None
    if structure not in FACTOR_NAMES:
        raise InputError(f"node {label!r}: unknown DopedMatMul structure {structure!r}")
    slots = list(node.input) + [""] * (8 - len(node.input))

    def tensor(i: int, role: str) -> np.ndarray | None:
        if not slots[i]:
            return None
        if slots[i] not in arrays:
            raise InputError(f"node {label!r}: input {role} ({slots[i]!r}) must be a constant initializer")
        return arrays[slots[i]]

    factors = {}
    for i, role in enumerate(FACTOR_NAMES[structure]):
        f = tensor(1 + i, role)
        if f is None:
            raise InputError(f"node {label!r}: structure {structure!r} needs factor {role}")
        factors[role] = np.asarray(f, np.float32)
    rp, ci, vals = (tensor(4 + i, role) for i, role in enumerate(_SPARSE_SLOTS))
    sparse = None
    if rp is not None or ci is not None or vals is not None:
        if rp is None or ci is None or vals is None:
            raise InputError(f"node {label!r}: W_s needs all of row_ptr, col_idx and values")
        sparse = CSR((m, n), np.asarray(rp), np.asarray(ci), np.asarray(vals, np.float32))
    bias = tensor(7, "bias")
    w = DopedMatrix((m, n), structure, factors, sparse)
    name = attrs.get("matrix", b"").decode() or label
    w.check(name)
    if bias is not None and np.asarray(bias).shape != (m,):
        raise InputError(f"node {label!r}: bias of shape {np.asarray(bias).shape}, expected ({m},)")
    return w, None if bias is None else np.asarray(bias, np.float32)


def matrix_name(node: onnx.NodeProto) -> str:
    """The name a DopedMatMul node gives its matrix (its `matrix` attribute, else the node's name)."""
    for a in node.attribute:
        if a.name == "matrix" and a.s:
            return a.s.decode()
    return node.name or node.output[0]


__all__ = ["DOPED_MATMUL", "doped_matmul_node", "read_doped_matmul", "matrix_name"]
