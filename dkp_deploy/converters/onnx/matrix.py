"""Lowering of y = W @ x + b for one `DopedMatrix` W, x of shape [batch, N] (2-D), per sparse impl.

- structured part: ``kron`` as Reshape -> MatMul -> MatMul -> Reshape (the cheaper association order is picked
  per matrix; no Transpose, no M x N tensor), ``lmf`` / ``hmd`` as Gemms on the factors, ``dense`` as one Gemm.
- sparse part W_s: ``custom`` = ``ai.dkp::SparseMatVec`` with the structured result + bias fed as Y0 (the add is
  fused); a ``kron`` half goes into that node too, as its B and C_T inputs (the bias as Y0); ``portable`` =
  standard ops only (see `_portable`; the padded-row / COO index arrays are derived in-graph from the CSR arrays by
  constant-foldable ops, so the file holds CSR only); ``dense`` = W folded into one Gemm (the baseline). Column
  indices as `stored_columns` picks them: each row's column gaps as uint8 (`CSR.column_gaps`; 1 byte per non-zero)
  unless W_s is so sparse that bridging gaps over 255 would add over 1% of entries, then uint16 where N <= 65536,
  else int32. The op reads all three; ``portable`` turns them into int32 columns with ops onnxruntime folds at
  load.
- ``quantize="int8"`` (custom and portable): the forms of `dkp_deploy.quantize` (int8 factors turned to float by
  Cast + Mul, folded at load; int8 W_s values with per-row scales: ``ai.dkp::SparseMatVecInt8`` or Cast + Mul).
- ``quantize="int8-dynamic"``: the same tensors; a matrix with a W_s reads its input x quantized as
  ``DynamicQuantizeLinear`` does (uint8, per tensor), both halves: ``custom`` = ``ai.dkp::SparseMatVecInteger`` on
  float x, which quantizes it itself and multiplies the integers (W_s's, and B's for a Kronecker half); an lmf /
  hmd half's standard ops read DequantizeLinear(DynamicQuantizeLinear(x)), the node then its uint8 x;
  ``portable`` = DynamicQuantizeLinear and DequantizeLinear into the int8 matrix above.

Every lowering records in `roles` which initializer holds which part, so `exported.load_exported` can rebuild W
from the file's own tensors.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from ...quantize import DYNAMIC, check_mode, quantize_csr, quantize_rows
from ...spec import CSR, DopedMatrix
from .graph import DKP_DOMAIN, Graph

SPARSE_IMPLS = ("custom", "portable", "dense")


def _f32(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def weight_factor(g: Graph, name: str, a: np.ndarray, role: str, roles: dict, quantize: str | None,
            transpose: bool = False) -> str:
    """A factor (a.T when `transpose`) as a float32 initializer, or as int8 with one scale per row of `a`, turned
    back to float by Cast and Mul, which onnxruntime folds at session creation (the file keeps the int8 bytes).
    Not DequantizeLinear: onnxruntime fuses DequantizeLinear -> MatMul into an integer MatMul that quantizes the
    activations too, which is not the function this file stands for."""
    if quantize is None:
        roles[role] = t = g.init(name, _f32(a).T if transpose else _f32(a))
        return t
    q, scale = quantize_rows(a)
    roles[role] = t = g.init(name, q.T if transpose else q)
    roles[f"{role}_scale"] = s = g.init(f"{name}_scale", scale[None, :] if transpose else scale[:, None])
    f = g.node("Cast", [t], f"{name}/to_float", to=TensorProto.FLOAT)
    return g.node("Mul", [f, s], f"{name}/dequantize")


def _gemm(g: Graph, x: str, w: str, bias: str | None, name: str) -> str:
    """x @ w^T (+ bias): Gemm with transB so factors are stored as the spec holds them."""
    return g.node("Gemm", [x, w] + ([bias] if bias else []), name, transB=1)


def _batch_rows(g: Graph, x: str, m: int, scope: str) -> str:
    """The shape tensor [batch, m] for a 2-D x."""
    b = g.node("Shape", [x], f"{scope}/batch", start=0, end=1)
    return g.node("Concat", [b, g.i64([m])], f"{scope}/rows_shape", axis=0)


def _kron(g: Graph, x: str, w: DopedMatrix, bias: np.ndarray | None, scope: str, roles: dict,
          quantize: str | None) -> str:
    """kron(B, C) @ x (+ bias) = vec(B @ X @ C^T) with X = x reshaped row-major to [N1, N2]."""
    b, c = w.factors["B"], w.factors["C"]
    (m1, n1), (m2, n2) = b.shape, c.shape
    b_name = weight_factor(g, f"{scope}/B", b, "B", roles, quantize)
    ct_name = weight_factor(g, f"{scope}/C_T", c, "C_T", roles, quantize, transpose=True)
    r = g.node("Reshape", [x, g.i64([-1, n1, n2])], f"{scope}/kron/reshape_in")
    if m1 * n1 * n2 + m1 * n2 * m2 <= n1 * n2 * m2 + m1 * n1 * m2:  # B first: [M1,N1]@[b,N1,N2] -> [b,M1,N2]
        t = g.node("MatMul", [b_name, r], f"{scope}/kron/matmul_b")
        u = g.node("MatMul", [t, ct_name], f"{scope}/kron/matmul_c")
    else:  # C first: [b,N1,N2]@[N2,M2] -> [b,N1,M2]
        t = g.node("MatMul", [r, ct_name], f"{scope}/kron/matmul_c")
        u = g.node("MatMul", [b_name, t], f"{scope}/kron/matmul_b")
    if bias is not None:
        u = g.node("Add", [u, g.init(f"{scope}/bias", _f32(bias).reshape(m1, m2))], f"{scope}/kron/add_bias")
    return g.node("Reshape", [u, g.i64([-1, m1 * m2])], f"{scope}/kron/reshape_out")


def _fused_inputs(g: Graph, w: DopedMatrix, bias: np.ndarray | None, scope: str, roles: dict,
                  quantize: str | None) -> list[str]:
    """The sparse node's optional inputs for a Kronecker half it computes itself: [Y0 (the bias [M], or "" for
    none), B, C_T]."""
    b_name = weight_factor(g, f"{scope}/B", w.factors["B"], "B", roles, quantize)
    ct_name = weight_factor(g, f"{scope}/C_T", w.factors["C"], "C_T", roles, quantize, transpose=True)
    return [g.init(f"{scope}/bias", _f32(bias)) if bias is not None else "", b_name, ct_name]


def _structured(g: Graph, x: str, w: DopedMatrix, bias: np.ndarray | None, scope: str, roles: dict,
                quantize: str | None) -> str | None:
    """The structured part plus bias, or None when there is neither (structure "none", no bias)."""
    f = w.factors
    if w.structure == "kron":
        return _kron(g, x, w, bias, scope, roles, quantize)
    def bias_name() -> str | None:
        return g.init(f"{scope}/bias", _f32(bias)) if bias is not None else None

    if w.structure == "lmf":
        v = weight_factor(g, f"{scope}/V", f["V"], "V", roles, quantize)
        u = weight_factor(g, f"{scope}/U", f["U"], "U", roles, quantize)
        t = _gemm(g, x, v, None, f"{scope}/lmf/gemm_v")
        return _gemm(g, t, u, bias_name(), f"{scope}/lmf/gemm_u")
    if w.structure == "hmd":
        k = f["W_top"].shape[0]
        top_w = weight_factor(g, f"{scope}/W_top", f["W_top"], "W_top", roles, quantize)
        v = weight_factor(g, f"{scope}/V", f["V"], "V", roles, quantize)
        u = weight_factor(g, f"{scope}/U", f["U"], "U", roles, quantize)
        b_top = g.init(f"{scope}/bias_top", _f32(bias[:k])) if bias is not None else None
        b_low = g.init(f"{scope}/bias_low", _f32(bias[k:])) if bias is not None else None
        top = _gemm(g, x, top_w, b_top, f"{scope}/hmd/gemm_top")
        t = _gemm(g, x, v, None, f"{scope}/hmd/gemm_v")
        low = _gemm(g, t, u, b_low, f"{scope}/hmd/gemm_u")
        return g.node("Concat", [top, low], f"{scope}/hmd/concat", axis=1)
    if bias is None:  # "none"
        return None
    return g.node("Expand", [bias_name(), _batch_rows(g, x, w.shape[0], scope)], f"{scope}/bias_rows")


def _batch_col(g: Graph, x: str, scope: str) -> str:
    """The shape tensor [batch, 1] of a 2-D x: Expand's target to repeat index rows per batch row."""
    b = g.node("Shape", [x], f"{scope}/batch", start=0, end=1)
    return g.node("Concat", [b, g.i64([1])], f"{scope}/batch_col", axis=0)


def _gather_x(g: Graph, x: str, idx: str, scope: str) -> str:
    """x[:, idx] for idx [1, L]: GatherElements (several times faster than Gather(axis=1) in onnxruntime)."""
    rows = g.node("Expand", [idx, _batch_col(g, x, scope)], f"{scope}/sparse/expand_idx")
    return g.node("GatherElements", [x, rows], f"{scope}/sparse/gather", axis=1)


def _ell(g: Graph, sp: CSR, rp: str, ci: str, vals: str, width: int, scope: str) -> tuple[str, str]:
    """Padded-row (ELL) column index [1, M*width] and values [M, width] derived from the CSR arrays.

    Every input is a constant, so onnxruntime folds these nodes at session creation and the file keeps CSR only.
    Padding entries read column 0 with value 0.
    """
    m, nnz = sp.shape[0], sp.nnz
    s = f"{scope}/sparse/ell"
    start = g.node("Slice", [rp, g.i64([0]), g.i64([m])], f"{s}/row_start")
    count = g.node("Sub", [g.node("Slice", [rp, g.i64([1]), g.i64([m + 1])], f"{s}/row_end"), start], f"{s}/count")
    k = g.init(f"{s}/k", np.arange(width, dtype=np.int32)[None, :])
    pos = g.node("Add", [g.node("Unsqueeze", [start, g.i64([1])], f"{s}/start_col"), k], f"{s}/pos")
    valid = g.node("Less", [k, g.node("Unsqueeze", [count, g.i64([1])], f"{s}/count_col")], f"{s}/valid")
    pos = g.node("Min", [pos, g.init("const/last", np.asarray(nnz - 1, np.int32), shared=False)], f"{s}/pos_clip")
    col = g.node("Gather", [ci, pos], f"{s}/col_gather", axis=0)
    col = g.node("Where", [valid, col, g.init("const/zero_i32", np.asarray(0, np.int32))], f"{s}/col")
    col = g.node("Reshape", [col, g.i64([1, -1])], f"{s}/col_flat")
    val = g.node("Gather", [vals, pos], f"{s}/val_gather", axis=0)
    val = g.node("Where", [valid, val, g.init("const/zero_f32", np.asarray(0, np.float32))], f"{s}/val")
    return col, val


def _coo_rows(g: Graph, rp: str, m: int, nnz: int, scope: str) -> str:
    """COO row index [1, nnz] from row_ptr (cumsum of row starts), from constants only like `_ell`."""
    s = f"{scope}/sparse/coo"
    starts = g.node("Slice", [rp, g.i64([1]), g.i64([m])], f"{s}/row_starts")
    zero = helper.make_tensor("zero", TensorProto.INT32, [1], [0])
    marks = g.node("ConstantOfShape", [g.i64([nnz + 1])], f"{s}/zeros", value=zero)
    ones = g.node("Expand", [g.init("const/one_i32", np.ones(1, np.int32)), g.i64([m - 1])], f"{s}/ones")
    marks = g.node("ScatterElements", [marks, starts, ones], f"{s}/marks", axis=0, reduction="add")
    rows = g.node("CumSum", [marks, g.init("const/axis0", np.asarray(0, dtype=np.int32))], f"{s}/cumsum")
    rows = g.node("Slice", [rows, g.i64([0]), g.i64([nnz])], f"{s}/row_idx_flat")
    return g.node("Unsqueeze", [rows, g.i64([0])], f"{s}/row_idx")


def stored_columns(sp: CSR) -> tuple[CSR, np.ndarray]:
    """W_s and the col_idx a file stores for it: uint8 column gaps (`CSR.column_gaps`, 1 byte per non-zero) where
    their zero filler entries add at most 1% to nnz (the kernels multiply those too), else the columns as uint16
    (N <= 65536) or int32. Random columns at 95% sparsity take gaps (one filler per million), at 99% not (8%)."""
    filled, gaps = sp.column_gaps()
    if (filled.nnz - sp.nnz) * 100 <= sp.nnz:
        return filled, gaps
    return sp, sp.col_idx.astype(np.uint16 if sp.shape[1] <= 1 << 16 else np.int32)


def int32_columns(g: Graph, rp: str, ci: str, dtype: np.dtype, m: int, nnz: int, scope: str) -> str:
    """The int32 columns standard ops index with, from a `stored_columns` col_idx; constants only (folded at load)."""
    if dtype == np.uint8:
        return _columns_from_gaps(g, rp, ci, m, nnz, scope)
    return ci if dtype == np.int32 else g.node("Cast", [ci], f"{scope}/col_idx_i32", to=TensorProto.INT32)


def _columns_from_gaps(g: Graph, rp: str, gaps: str, m: int, nnz: int, scope: str) -> str:
    """int32 columns [nnz] from uint8 column gaps: the running sum of all gaps, less its value before each entry's
    row."""
    s = f"{scope}/columns"
    total = g.node("CumSum", [g.node("Cast", [gaps], f"{s}/gaps_i64", to=TensorProto.INT64),
                              g.init("const/axis0", np.asarray(0, dtype=np.int32))], f"{s}/cumsum")
    before = g.node("Concat", [g.i64([0], "const/zero_i64"), total], f"{s}/cumsum_from_0", axis=0)
    row_base = g.node("Gather", [before, g.node("Slice", [rp, g.i64([0]), g.i64([m])], f"{s}/row_starts")],
                      f"{s}/row_base", axis=0)
    rows = g.node("Reshape", [_coo_rows(g, rp, m, nnz, scope), g.i64([-1])], f"{s}/entry_rows")
    cols = g.node("Sub", [total, g.node("Gather", [row_base, rows], f"{s}/entry_base", axis=0)], f"{s}/cols_i64")
    return g.node("Cast", [cols], f"{s}/cols", to=TensorProto.INT32)


def _portable(g: Graph, x: str, sp: CSR, rp: str, ci: str, vals: str, y0: str, scope: str) -> str:
    """W_s @ x + y0 with standard ops.

    Rows padded to the longest (ELL: GatherElements, Mul, ReduceSum) when the padding costs at most 3x the
    nonzeros (the COO path costs about 5x more per nonzero in onnxruntime), else COO: GatherElements, Mul and a
    ScatterElements(reduction="add") segment sum into y0.
    """
    m, nnz = sp.shape[0], sp.nnz
    width = int(np.diff(sp.row_ptr.astype(np.int64)).max())
    if m * width <= 3 * nnz:
        col, val = _ell(g, sp, rp, ci, vals, width, scope)
        xg = g.node("Reshape", [_gather_x(g, x, col, scope), g.i64([-1, m, width])], f"{scope}/sparse/rows")
        prod = g.node("Mul", [xg, val], f"{scope}/sparse/mul")
        y = g.node("ReduceSum", [prod, g.i64([-1])], f"{scope}/sparse/row_sum", keepdims=0)
        return g.node("Add", [y, y0], f"{scope}/sparse/add")
    prod = g.node("Mul", [_gather_x(g, x, g.node("Unsqueeze", [ci, g.i64([0])], f"{scope}/sparse/col_row"), scope),
                          vals], f"{scope}/sparse/mul")
    rows = _coo_rows(g, rp, m, nnz, scope)
    idx = g.node("Expand", [rows, g.node("Shape", [prod], f"{scope}/sparse/shape")], f"{scope}/sparse/row_idx_b")
    return g.node("ScatterElements", [y0, idx, prod], f"{scope}/sparse/scatter_add", axis=1, reduction="add")


def lower(
    g: Graph,
    x: str,
    w: DopedMatrix,
    bias: np.ndarray | None,
    scope: str,
    impl: str,
    roles: dict[str, str],
    quantize: str | None = None,
) -> str:
    """Emit y = W @ x + bias for 2-D x [batch, N]; return the name of y [batch, M]. Fills `roles`.

    `quantize="int8"` writes the doped parts in int8 (undoped "dense" matrices and the dense impl stay float);
    `quantize="int8-dynamic"` also quantizes a doped matrix's input at run time (`dkp_deploy.quantize`)."""
    if impl not in SPARSE_IMPLS:
        raise ValueError(f"sparse_impl must be one of {SPARSE_IMPLS}, got {impl!r}")
    check_mode(quantize)
    m, _ = w.shape
    bias_name = None
    if w.structure == "dense" or impl == "dense":
        # the layers that are not doped, and the folded baseline: one Gemm on the M x N W
        wd = w.factors["W"] if w.structure == "dense" and w.sparse is None else w.dense(np.float64)
        roles["W"] = wn = g.init(f"{scope}/W", _f32(wd))
        if bias is not None:
            bias_name = g.init(f"{scope}/bias", _f32(bias))
        return _gemm(g, x, wn, bias_name, f"{scope}/gemm")

    sp = w.sparse
    # custom: a Kronecker half goes into the sparse node itself (its optional B, C_T inputs; the bias as Y0), which
    # saves onnxruntime five nodes and multiplies a batch of x by B in one product (docs/ops.md)
    has_ws = sp is not None and sp.nnz > 0
    fused = impl == "custom" and w.structure == "kron" and has_ws
    # int8-dynamic: a matrix with a W_s reads x quantized, both halves (one scale and zero point over the whole
    # [batch, N] tensor); a custom node quantizes a float x itself where no standard op reads x (kron, none)
    x_q = None
    if quantize == DYNAMIC and has_ws and not (impl == "custom" and (fused or w.structure == "none")):
        x_q = g.node("DynamicQuantizeLinear", [x], f"{scope}/quantize_x", outputs=3)
        x_hat = g.node("DequantizeLinear", x_q, f"{scope}/dequantize_x")
    else:
        x_hat = x
    kron = _fused_inputs(g, w, bias, scope, roles, quantize) if fused else []
    y0 = None if fused else _structured(g, x_hat, w, bias, scope, roles, quantize)
    optional = kron or ([y0] if y0 else [])  # the sparse node's inputs from Y0 on
    if sp is None or sp.nnz == 0:
        if y0 is None:  # W = 0 and no bias
            return g.node("Expand", [g.init("const/zero_row", np.zeros((1, 1), np.float32)),
                                     _batch_rows(g, x, m, scope)], f"{scope}/zeros")
        return y0
    sp, cols = stored_columns(sp)
    roles["row_ptr"] = rp = g.init(f"{scope}/W_s/row_ptr", sp.row_ptr.astype(np.int32))
    roles["col_idx"] = ci = g.init(f"{scope}/W_s/col_idx", cols)
    if quantize:
        q, row_scale = quantize_csr(sp)
        roles["values"] = vals = g.init(f"{scope}/W_s/values", q)
        roles["row_scale"] = rs = g.init(f"{scope}/W_s/row_scale", row_scale)
    else:
        roles["values"] = vals = g.init(f"{scope}/W_s/values", _f32(sp.values))
    if quantize == DYNAMIC and impl == "custom":
        # uint8 x where the graph quantized it for the structured half; else float x (x_scale, x_zero_point empty),
        # which the node quantizes as DynamicQuantizeLinear does, for its Kronecker half too (one node less)
        head = [x_q[0], rp, ci, vals, rs, x_q[1], x_q[2]] if x_q else [x, rp, ci, vals, rs, "", ""]
        inputs = [*head, *optional]
        while not inputs[-1]:
            inputs.pop()
        return g.node("SparseMatVecInteger", inputs, f"{scope}/sparse_matvec", domain=DKP_DOMAIN)
    x = x_hat  # portable int8-dynamic: DequantizeLinear(DynamicQuantizeLinear(x)), else x
    if impl == "custom":
        op, scales = ("SparseMatVecInt8", [rs]) if quantize else ("SparseMatVec", [])
        return g.node(op, [x, rp, ci, vals, *scales, *optional], f"{scope}/sparse_matvec", domain=DKP_DOMAIN)
    # portable: standard ops index with int32 and multiply floats; this work on constants folds at load
    ci = int32_columns(g, rp, ci, cols.dtype, m, sp.nnz, f"{scope}/W_s")
    if quantize:
        rows = g.node("Reshape", [_coo_rows(g, rp, m, sp.nnz, scope), g.i64([-1])], f"{scope}/W_s/entry_rows")
        scale = g.node("Gather", [rs, rows], f"{scope}/W_s/entry_scale", axis=0)
        vals = g.node("Mul", [g.node("Cast", [vals], f"{scope}/W_s/values_f32", to=TensorProto.FLOAT), scale],
                      f"{scope}/W_s/dequantize")
    if y0 is None:
        y0 = g.node("Expand", [g.init("const/zero_row", np.zeros((1, 1), np.float32)), _batch_rows(g, x, m, scope)],
                    f"{scope}/zeros")
    return _portable(g, x, sp, rp, ci, vals, y0, scope)
