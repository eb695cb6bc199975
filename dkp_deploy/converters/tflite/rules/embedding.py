"""ai.dkp::DopedGather (a doped embedding, W = kron(B, C) + W_s, V x D) as TFLite builtin ops.

ids flattened to [n] (int32); i1 = FLOOR_DIV(ids, V2), i2 = ids - i1 V2; kron rows = MUL of GATHER(B, i1) as
[n, D1, 1] and GATHER(C, i2) as [n, 1, D2] (broadcast outer product), reshaped to [n, D]. W_s's rows are read per
id from the CSR arrays (stored as plain constants: no V x D or V x w tensor): positions row_ptr[id] + k, k < w
(the longest row), clipped into the arrays, their values zeroed past the row's end (SELECT_V2), then SCATTER_ND
into a flat [n D] zero buffer at id_position * D + column. TFLite's SCATTER_ND sums updates that hit one index
(its reference kernel accumulates into a zeroed output; the tests check it on ai-edge-litert and tflite-runtime),
which the padding relies on: a padded entry adds 0 at some column of its own row.
"""

from __future__ import annotations

import numpy as np
import onnx
from tflite.BuiltinOperator import BuiltinOperator as Op

from ....hub.embedding import DOPED_GATHER, read_doped_gather
from ....hub.matrix import matrix_name
from ....hub.schema import DOMAIN
from .. import graph as G
from ..graph import BATCH
from . import Context, rule


def _i32(g: G.Graph, name: str, value) -> int:
    return g.const(name, np.asarray(value, np.int32))


@rule(DOPED_GATHER, domain=DOMAIN)
def doped_gather(ctx: Context, node: onnx.NodeProto) -> None:
    w = read_doped_gather(node, ctx.consts)
    name, (v, d) = matrix_name(node), w.shape
    g, ids, out = ctx.g, node.input[0], node.output[0]
    shape = ctx.shape(ids)
    (_, d1), (v2, d2) = w.factors["B"].shape, w.factors["C"].shape
    flat = g.op1(Op.RESHAPE, [ctx.tensor(ids), _i32(g, "embedding/flat", [-1])], f"{name}/ids_flat", (BATCH,),
                 G.reshape(), dtype=ctx.dtype(ids))
    if ctx.dtype(ids) != np.int32:  # index arithmetic in int32, as TFLite's shape arithmetic is
        flat = g.op1(Op.CAST, [flat], f"{name}/ids", (BATCH,), dtype=np.int32)
    v2_t = _i32(g, f"{name}/V2", v2)
    i1 = g.op1(Op.FLOOR_DIV, [flat, v2_t], f"{name}/i1", (BATCH,), dtype=np.int32)
    i2 = g.op1(Op.SUB, [flat, g.op1(Op.MUL, [i1, v2_t], f"{name}/i1_V2", (BATCH,), G.mul(), dtype=np.int32)],
               f"{name}/i2", (BATCH,), dtype=np.int32)
    b_t = g.const(f"{name}/B", np.asarray(w.factors["B"], np.float32))
    c_t = g.const(f"{name}/C", np.asarray(w.factors["C"], np.float32))
    roles = {"B": g.tensors[b_t].name, "C": g.tensors[c_t].name}
    rb = g.op1(Op.GATHER, [b_t, i1], f"{name}/B_rows", (BATCH, d1), G.gather(0))
    rc = g.op1(Op.GATHER, [c_t, i2], f"{name}/C_rows", (BATCH, d2), G.gather(0))
    rb = g.op1(Op.RESHAPE, [rb, _i32(g, f"{name}/col_shape", [-1, d1, 1])], f"{name}/B_col", (BATCH, d1, 1),
               G.reshape())
    rc = g.op1(Op.RESHAPE, [rc, _i32(g, f"{name}/row_shape", [-1, 1, d2])], f"{name}/C_row", (BATCH, 1, d2),
               G.reshape())
    outer = g.op1(Op.MUL, [rb, rc], f"{name}/outer", (BATCH, d1, d2), G.mul())
    rows_shape = _i32(g, f"{name}/rows_shape", [-1, d])
    y = g.op1(Op.RESHAPE, [outer, rows_shape], f"{name}/kron_rows", (BATCH, d), G.reshape())
    sp = w.sparse
    if sp is not None and sp.nnz:
        width = int(np.diff(sp.row_ptr.astype(np.int64)).max())
        s = f"{name}/W_s"
        rp, ci = _i32(g, f"{s}/row_ptr", sp.row_ptr), _i32(g, f"{s}/col_idx", sp.col_idx)
        vals = g.const(f"{s}/values", np.asarray(sp.values, np.float32))
        roles.update(row_ptr=g.tensors[rp].name, col_idx=g.tensors[ci].name, values=g.tensors[vals].name)

        def i32(op: int, inputs: list[int], label: str, out_shape: tuple[int, ...], options=None) -> int:
            return g.op1(op, inputs, f"{s}/{label}", out_shape, options, dtype=np.int32)

        start = i32(Op.GATHER, [rp, flat], "row_start", (BATCH,), G.gather(0))
        nxt = i32(Op.ADD, [flat, _i32(g, "embedding/one", 1)], "next_id", (BATCH,), G.add())
        count = i32(Op.SUB, [i32(Op.GATHER, [rp, nxt], "row_end", (BATCH,), G.gather(0)), start], "count", (BATCH,))
        col_shape = _i32(g, "embedding/col", [-1, 1])
        k = _i32(g, f"{s}/k", np.arange(width)[None, :])
        pos = i32(Op.ADD, [i32(Op.RESHAPE, [start, col_shape], "start_col", (BATCH, 1), G.reshape()), k], "pos",
                  (BATCH, width), G.add())
        valid = g.op1(Op.LESS, [k, i32(Op.RESHAPE, [count, col_shape], "count_col", (BATCH, 1), G.reshape())],
                      f"{s}/valid", (BATCH, width), dtype=np.bool_)
        pos = i32(Op.MINIMUM, [pos, _i32(g, f"{s}/last", sp.nnz - 1)], "pos_clip", (BATCH, width))
        cols = i32(Op.GATHER, [ci, pos], "cols", (BATCH, width), G.gather(0))
        val = g.op1(Op.GATHER, [vals, pos], f"{s}/val_gather", (BATCH, width), G.gather(0))
        val = g.op1(Op.SELECT_V2, [valid, val, g.const("embedding/zero", np.asarray(0, np.float32))], f"{s}/vals",
                    (BATCH, width))
        # flat position of (token p, column j) in the [n D] buffer: p D + j, with p D from RANGE(0, n D, D)
        d_t = _i32(g, f"{name}/D", d)
        total = i32(Op.MUL, [i32(Op.SHAPE, [flat], "n", (1,), G.shape_of()), d_t], "n_D", (1,), G.mul())
        limit = i32(Op.SQUEEZE, [total], "limit", (), G.squeeze([0]))
        base = i32(Op.RANGE, [_i32(g, "embedding/zero_i32", 0), limit, d_t], "row_base", (BATCH,))
        index = i32(Op.ADD, [cols, i32(Op.RESHAPE, [base, col_shape], "base_col", (BATCH, 1), G.reshape())],
                    "flat_index", (BATCH, width), G.add())
        index = i32(Op.RESHAPE, [index, col_shape], "indices", (BATCH, 1), G.reshape())
        upd = g.op1(Op.RESHAPE, [val, _i32(g, "embedding/flat", [-1])], f"{s}/updates", (BATCH,), G.reshape())
        scattered = g.op1(Op.SCATTER_ND, [index, upd, total], f"{s}/scatter", (BATCH,))
        sparse_rows = g.op1(Op.RESHAPE, [scattered, rows_shape], f"{s}/rows", (BATCH, d), G.reshape())
        y = g.op1(Op.ADD, [y, sparse_rows], f"{name}/rows", (BATCH, d), G.add())
    target = (*shape, d)
    if sum(x < 0 for x in target) <= 1:
        dims = g.const(f"{name}/out_shape", np.array(target, np.int32))
    else:  # several dynamic id dims: the shape is read at run time
        ids_shape = g.op1(Op.SHAPE, [ctx.tensor(ids)], f"{name}/ids_shape", (len(shape),), G.shape_of(),
                          dtype=np.int32)
        dims = g.op1(Op.CONCATENATION, [ids_shape, _i32(g, f"{name}/D1d", [d])], f"{name}/out_dims",
                     (len(shape) + 1,), G.concatenation(0), dtype=np.int32)
    ctx.bind(out, g.op1(Op.RESHAPE, [y, dims], out, target, G.reshape()))
    ctx.layers[name] = {"shape": [v, d], "structure": w.structure, "kind": "embedding",
                        "factor_shapes": {k: list(f.shape) for k, f in w.factors.items()}, "nnz": w.nnz,
                        "compression_factor": w.compression_factor(), "tensors": roles}
