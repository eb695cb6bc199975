"""y = W @ x + b for one `DopedMatrix` W, as TFLite builtin ops; W itself (M x N) never appears in the file.

x is [batch, N] (row vectors, so y = x @ W^T: FULLY_CONNECTED's convention with weights [M, N]).

- kron(B, C): with X_b = x_b reshaped row-major to (N1, N2), kron(B, C) @ x_b = vec(B @ X_b @ C^T). Two
  FULLY_CONNECTEDs (keep_num_dims, over the last axis) and two TRANSPOSEs of small intermediates:
  RESHAPE x -> X [batch, N1, N2]; TRANSPOSE -> X^T; FC(B) -> (B X)^T [batch, N2, M1]; TRANSPOSE -> B X;
  FC(C) -> B X C^T [batch, M1, M2]; RESHAPE -> [batch, M]. Or C first (FC(C), TRANSPOSE, FC(B), TRANSPOSE) when
  that costs fewer multiply-adds. Transpose-free BATCH_MATMUL(B, X C^T) is 5-7x slower than this in the builtin
  kernels (it re-transposes its non-constant operand on every call), which sparse models must use.
- lmf U @ V: FULLY_CONNECTED(V) then FULLY_CONNECTED(U). hmd: FULLY_CONNECTED(W_top) beside the lmf of the
  rest, CONCATENATION on the feature axis. dense: one FULLY_CONNECTED.
- W_s: a FULLY_CONNECTED whose weight tensor is stored as TFLite random-sparse CSR (traversal order [0, 1],
  dim 0 DENSE, dim 1 SPARSE_CSR with array_segments = row_ptr, array_indices = col_idx); it carries the bias,
  and an ADD joins it with the structured part.

The builtin sparse FULLY_CONNECTED kernel reads its bias unconditionally, so a sparse FC always gets one (zeros
when the layer has none).
"""

from __future__ import annotations

import numpy as np

from ...spec import CSR, DopedMatrix
from . import graph as G
from .graph import BATCH, Graph, Op

# op versions: the lowest that declares the feature used (what TFLite's op_version rules assign).
FC_SPARSE_VERSION = 8
FC_KEEP_DIMS_VERSION = 5


def fully_connected(g: Graph, x: int, weight: int, bias: int | None, name: str, out_features: int) -> int:
    """FULLY_CONNECTED over the last axis of a [batch, N] tensor."""
    sparse = g.tensors[weight].sparse is not None
    inputs = [x, weight, -1 if bias is None else bias]  # -1: the optional bias is absent
    return g.op1(Op.FULLY_CONNECTED, inputs, name, (BATCH, out_features), G.fully_connected(),
                 version=FC_SPARSE_VERSION if sparse else 1)


def kron_order(b_shape: tuple[int, int], c_shape: tuple[int, int]) -> str:
    """"B" or "C": which factor to contract first, by multiply-adds (ties: B)."""
    (m1, n1), (m2, n2) = b_shape, c_shape
    return "C" if n1 * m2 * (n2 + m1) < m1 * n2 * (n1 + m2) else "B"


def _kron(g: Graph, x: int, name: str, b: np.ndarray, c: np.ndarray, roles: dict[str, str]) -> int:
    (m1, n1), (m2, n2) = b.shape, c.shape
    b_t, c_t = g.const(f"{name}/B", b.astype(np.float32)), g.const(f"{name}/C", c.astype(np.float32))
    roles.update(B=g.tensors[b_t].name, C=g.tensors[c_t].name)
    perm = g.const("kron/swap_last_axes", np.array([0, 2, 1], np.int32))

    def reshape(t: int, shape: tuple[int, ...], label: str) -> int:
        target = g.const(f"{name}/kron/{label}_shape", np.array(shape, np.int32))
        return g.op1(Op.RESHAPE, [t, target], f"{name}/kron/{label}", shape, G.reshape())

    def transpose(t: int, label: str) -> int:
        batch, rows, cols = g.shape(t)
        return g.op1(Op.TRANSPOSE, [t, perm], f"{name}/kron/{label}", (batch, cols, rows))

    def fc3(t: int, w: int, out: int, label: str) -> int:
        return g.op1(Op.FULLY_CONNECTED, [t, w, -1], f"{name}/kron/{label}", (*g.shape(t)[:2], out),
                     G.fully_connected(keep_num_dims=True), version=FC_KEEP_DIMS_VERSION)

    x3 = reshape(x, (BATCH, n1, n2), "X")
    if kron_order(b.shape, c.shape) == "B":
        p = fc3(transpose(x3, "Xt"), b_t, m1, "BX_t")  # [batch, N2, M1] = (B X)^T
        y3 = fc3(transpose(p, "BX"), c_t, m2, "BXCt")  # [batch, M1, M2]
    else:
        z = fc3(x3, c_t, m2, "XCt")  # [batch, N1, M2]
        w = fc3(transpose(z, "XCt_t"), b_t, m1, "BXCt_t")  # [batch, M2, M1] = (B X C^T)^T
        y3 = transpose(w, "BXCt")
    return reshape(y3, (BATCH, m1 * m2), "y")


def _low_rank(g: Graph, x: int, name: str, u: np.ndarray, v: np.ndarray, bias: int | None,
              roles: dict[str, str]) -> int:
    u_t, v_t = g.const(f"{name}/U", u.astype(np.float32)), g.const(f"{name}/V", v.astype(np.float32))
    roles.update(U=g.tensors[u_t].name, V=g.tensors[v_t].name)
    r = fully_connected(g, x, v_t, None, f"{name}/Vx", v.shape[0])
    return fully_connected(g, r, u_t, bias, f"{name}/UVx", u.shape[0])


def _explicit_zero(shape: tuple[int, int]) -> CSR:
    """W = 0 as CSR with one stored zero: a tensor with an empty buffer would not count as constant in TFLite."""
    row_ptr = np.ones(shape[0] + 1, np.int32)
    row_ptr[0] = 0
    return CSR(shape, row_ptr, np.zeros(1, np.int32), np.zeros(1, np.float32))


def lower(g: Graph, x: int, w: DopedMatrix, bias: np.ndarray | None, name: str, roles: dict[str, str]) -> int:
    """Append the ops computing x @ W^T (+ bias) for x [batch, N]; returns the [batch, M] tensor.

    `roles` receives, per part of W ("B", "C", "U", "V", "W_top", "W", "W_s", "bias"), the tensor name holding it.
    """
    m, _ = w.shape
    f = w.factors
    has_sparse = (w.sparse is not None and w.sparse.nnz > 0) or w.structure == "none"
    b_t = None
    if bias is not None:
        b_t = g.const(f"{name}/bias", np.asarray(bias, np.float32))
        roles["bias"] = g.tensors[b_t].name
    structured_bias = None if has_sparse else b_t  # where the part's last op is an FC, it takes the bias

    if w.structure == "kron":
        s = _kron(g, x, name, f["B"], f["C"], roles)
    elif w.structure == "lmf":
        s = _low_rank(g, x, name, f["U"], f["V"], structured_bias, roles)
        structured_bias = None
    elif w.structure == "hmd":
        top = g.const(f"{name}/W_top", f["W_top"].astype(np.float32))
        roles["W_top"] = g.tensors[top].name
        s_top = fully_connected(g, x, top, None, f"{name}/W_top_x", f["W_top"].shape[0])
        s_rest = _low_rank(g, x, name, f["U"], f["V"], None, roles)
        s = g.op1(Op.CONCATENATION, [s_top, s_rest], f"{name}/hmd", (BATCH, m), G.concatenation(axis=1))
    elif w.structure == "dense":
        wt = g.const(f"{name}/W", f["W"].astype(np.float32))
        roles["W"] = g.tensors[wt].name
        s = fully_connected(g, x, wt, structured_bias, f"{name}/Wx", m)
        structured_bias = None
    else:  # "none": W = W_s only
        s = None

    if has_sparse:
        csr = w.sparse if w.sparse is not None and w.sparse.nnz else _explicit_zero(w.shape)
        ws = g.sparse_const(f"{name}/W_s", csr)
        roles["W_s"] = g.tensors[ws].name
        sb = b_t if b_t is not None else g.const(f"{name}/zero_bias", np.zeros(m, np.float32))
        p = fully_connected(g, x, ws, sb, f"{name}/W_s_x", m)
        return p if s is None else g.op1(Op.ADD, [s, p], f"{name}/y", (BATCH, m), G.add())
    if structured_bias is not None:
        return g.op1(Op.ADD, [s, structured_bias], f"{name}/y", (BATCH, m), G.add())
    return s
