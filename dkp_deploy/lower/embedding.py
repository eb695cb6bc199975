"""Lowering of a `DopedGather` (a doped embedding W = kron(B, C) + W_s, V x D) to standard ONNX ops.

- ``custom`` and ``portable`` (the same graph: onnxruntime has no sparse row-gather op to gain from): ids flattened
  to [n]; i1 = ids / V2, i2 = ids - i1 V2; the kron rows are the outer products Gather(B, i1)[:, :, None] *
  Gather(C, i2)[:, None, :] reshaped to [n, D]; W_s's rows are read per id straight from the CSR arrays in
  padded-row form (positions row_ptr[id] + k for k < w, w = the longest row; a position past the row's end reads
  value 0) and added with ScatterElements(reduction="add") along D. The file holds B, C^T and the CSR arrays with
  columns as `stored_columns` picks them (the tensors a tied decoder's DopedMatMul holds, so the two share them;
  uint8 gaps are summed back by ops on constants, folded at load): no V x D and no V x w tensor.
- ``dense``: Gather on the folded V x D table (the baseline).

The `dkp.layers` entry names the tensors by DopedMatMul's roles (B, C_T, row_ptr, col_idx, values; W for dense),
so `dkp-validate` rebuilds the table like any matrix; ``indices`` names the ids input (its random feeds are drawn
below V).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx

from ..converters.onnx.graph import Graph
from ..converters.onnx.matrix import int32_columns, stored_columns, weight_factor
from ..hub.embedding import read_doped_gather
from ..hub.matrix import matrix_name
from ..quantize import quantize_csr, quantize_rows
from ..spec import DopedMatrix


def _kron_rows(g: Graph, ids: str, w: DopedMatrix, scope: str, roles: dict[str, str], quantize: str | None) -> str:
    """kron(B, C)[ids] for flat int64 ids [n]: [n, D]. B and C_T are written as a DopedMatMul's factors are (int8
    behind a folded Cast + Mul when quantized), so a tied decoder shares them."""
    b, c = w.factors["B"], w.factors["C"]
    (_, d1), (v2, d2) = b.shape, c.shape
    bn = weight_factor(g, f"{scope}/B", b, "B", roles, quantize)
    ct = weight_factor(g, f"{scope}/C_T", c, "C_T", roles, quantize, transpose=True)
    c_rows = g.node("Transpose", [ct], f"{scope}/C", perm=[1, 0])  # of a constant: folded when the session loads
    v2_t = g.i64(v2, f"{scope}/V2")
    i1 = g.node("Div", [ids, v2_t], f"{scope}/i1")  # ids >= 0: integer Div is floor division
    i2 = g.node("Sub", [ids, g.node("Mul", [i1, v2_t], f"{scope}/i1_V2")], f"{scope}/i2")
    rb = g.node("Unsqueeze", [g.node("Gather", [bn, i1], f"{scope}/B_rows", axis=0), g.i64([2])], f"{scope}/B_col")
    rc = g.node("Unsqueeze", [g.node("Gather", [c_rows, i2], f"{scope}/C_rows", axis=0), g.i64([1])],
                f"{scope}/C_row")
    outer = g.node("Mul", [rb, rc], f"{scope}/outer")  # [n, D1, D2]: entry j1 * D2 + j2 = B[i1, j1] C[i2, j2]
    return g.node("Reshape", [outer, g.i64([-1, d1 * d2])], f"{scope}/kron_rows")


def _sparse_rows(g: Graph, ids: str, y: str, w: DopedMatrix, scope: str, roles: dict[str, str],
                 quantize: str | None) -> str:
    """y + W_s[ids] for flat ids [n] and y [n, D], from the CSR arrays (padded to the longest row per id); int8
    values are scaled by their row's scale as they are gathered."""
    assert w.sparse is not None and w.sparse.nnz
    sp, cols = stored_columns(w.sparse)  # as a tied decoder's DopedMatMul stores them, so the two share the tensors
    width = int(np.diff(sp.row_ptr.astype(np.int64)).max())
    s = f"{scope}/W_s"
    roles["row_ptr"] = rp = g.init(f"{s}/row_ptr", sp.row_ptr.astype(np.int32))
    roles["col_idx"] = g.init(f"{s}/col_idx", cols)
    ci = int32_columns(g, rp, roles["col_idx"], cols.dtype, sp.shape[0], sp.nnz, s)
    if quantize:
        q, row_scale = quantize_csr(sp)
        roles["values"] = vals = g.init(f"{s}/values", q)
        roles["row_scale"] = rs = g.init(f"{s}/row_scale", row_scale)
    else:
        roles["values"] = vals = g.init(f"{s}/values", np.asarray(sp.values, np.float32))
    start = g.node("Gather", [rp, ids], f"{s}/row_start", axis=0)
    end = g.node("Gather", [rp, g.node("Add", [ids, g.i64(1, f"{s}/one")], f"{s}/next_id")], f"{s}/row_end", axis=0)
    k = g.init(f"{s}/k", np.arange(width, dtype=np.int32)[None, :])
    pos = g.node("Add", [g.node("Unsqueeze", [start, g.i64([1])], f"{s}/start_col"), k], f"{s}/pos")
    count = g.node("Unsqueeze", [g.node("Sub", [end, start], f"{s}/count"), g.i64([1])], f"{s}/count_col")
    valid = g.node("Less", [k, count], f"{s}/valid")
    # a position past the row's end is clipped into the arrays; its value is zeroed, so its column adds nothing
    pos = g.node("Min", [pos, g.init(f"{s}/last", np.asarray(sp.nnz - 1, np.int32))], f"{s}/pos_clip")
    col = g.node("Gather", [ci, pos], f"{s}/cols", axis=0)
    val = g.node("Gather", [vals, pos], f"{s}/val_gather", axis=0)
    if quantize:  # [n, w] int8 -> float, times the scale of each id's row
        val = g.node("Cast", [val], f"{s}/val_f32", to=onnx.TensorProto.FLOAT)
        scale = g.node("Unsqueeze", [g.node("Gather", [rs, ids], f"{s}/id_scale", axis=0), g.i64([1])],
                       f"{s}/id_scale_col")
        val = g.node("Mul", [val, scale], f"{s}/val_scaled")
    val = g.node("Where", [valid, val, g.init("const/zero_f32", np.asarray(0, np.float32))], f"{s}/vals")
    return g.node("ScatterElements", [y, col, val], f"{s}/scatter_add", axis=1, reduction="add")


def lower_doped_gather(g: Graph, node: onnx.NodeProto, arrays: Mapping[str, np.ndarray], impl: str,
                       quantize: str | None = None) -> tuple[str, dict]:
    """Emit the lowering of one DopedGather into `g`, its output named as the node's; (table name, dkp.layers entry).
    `quantize="int8"` or `"int8-dynamic"`: the forms of `dkp_deploy.quantize` (custom and portable; a lookup has
    no activation to quantize, so both modes write the same nodes)."""
    w = read_doped_gather(node, arrays)
    name = matrix_name(node)
    ids, (v, d) = node.input[0], w.shape
    roles: dict[str, str] = {}
    if impl == "dense":
        roles["W"] = table = g.init(f"{name}/W", w.dense(np.float64).astype(np.float32))
        y = g.node("Gather", [table, ids], f"{name}/gather", axis=0)
    else:
        flat = g.node("Cast", [g.node("Reshape", [ids, g.i64([-1])], f"{name}/ids_flat")], f"{name}/ids_i64",
                      to=onnx.TensorProto.INT64)
        # a negative id must fail like one >= V (Gather of B's row V // V2 is out of range), not wrap around
        v_t = g.i64(v, f"{name}/V")
        flat = g.node("Where", [g.node("Less", [flat, g.i64(0, f"{name}/zero")], f"{name}/negative"), v_t, flat],
                      f"{name}/ids")
        y = _kron_rows(g, flat, w, name, roles, quantize)
        if w.sparse is not None and w.sparse.nnz:
            y = _sparse_rows(g, flat, y, w, name, roles, quantize)
        shape = g.node("Concat", [g.node("Shape", [ids], f"{name}/ids_shape"), g.i64([d])], f"{name}/out_shape",
                       axis=0)
        y = g.node("Reshape", [y, shape], f"{name}/rows")
    g.rename_output(y, node.output[0])
    info = {"shape": [v, d], "structure": w.structure, "kind": "embedding", "indices": ids,
            "factor_shapes": {k: list(f.shape) for k, f in w.factors.items()}, "nnz": w.nnz,
            "compression_factor": w.compression_factor(), "tensors": roles}
    return name, info


__all__ = ["lower_doped_gather"]


def lower_int8_gather(g: Graph, node: onnx.NodeProto, table: np.ndarray) -> None:
    """An int8 file's embedding lookup: Gather the int8 rows and their scales, then Cast and Mul (the table stays
    int8 in memory; `dkp_deploy.quantize.gather_tables` says which tables). The output keeps the node's name."""
    q, scale = quantize_rows(table)
    src, ids = node.input[0], node.input[1]
    qn = g.init(f"{src}/int8", q)
    sn = g.init(f"{src}/row_scale", scale[:, None])
    rows = g.node("Cast", [g.node("Gather", [qn, ids], f"{src}/gather_int8", axis=0)], f"{src}/rows_f32",
                  to=onnx.TensorProto.FLOAT)
    y = g.node("Mul", [rows, g.node("Gather", [sn, ids], f"{src}/gather_scale", axis=0)], f"{src}/dequantize")
    g.rename_output(y, node.output[0])
