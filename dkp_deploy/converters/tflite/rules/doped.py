"""ai.dkp::DopedMatMul: the native TFLite matrix rule (kron as two FULLY_CONNECTEDs, W_s as a sparse one)."""

from __future__ import annotations

import numpy as np
import onnx
from tflite.BuiltinOperator import BuiltinOperator as Op

from ....hub.matrix import DOPED_MATMUL, matrix_name, read_doped_matmul
from ....hub.schema import DOMAIN
from .. import graph as G
from .. import matrix
from . import Context, rule


def restore_leading(ctx: Context, x: int, shape: tuple[int, ...], y: int, m: int, name: str) -> int:
    """y [prod(lead), m] -> [*lead, m], lead = x's leading dims: static, else read at run time (SHAPE, SLICE)."""
    target = (*shape[:-1], m)
    if sum(d < 0 for d in shape[:-1]) <= 1:
        return ctx.g.op1(Op.RESHAPE, [y, ctx.g.const(f"{name}/out_shape", np.array(target, np.int32))],
                         f"{name}/unflatten", target, G.reshape())
    g, rank = ctx.g, len(shape)
    dims = g.op1(Op.SHAPE, [x], f"{name}/in_shape", (rank,), G.shape_of(), dtype=np.int32)
    lead = g.op1(Op.SLICE, [dims, g.const("shape/start", np.array([0], np.int32)),
                            g.const(f"{name}/lead_count", np.array([rank - 1], np.int32))],
                 f"{name}/lead", (rank - 1,), G.slice_(), dtype=np.int32)
    full = g.op1(Op.CONCATENATION, [lead, g.const(f"{name}/rows", np.array([m], np.int32))], f"{name}/out_dims",
                 (rank,), G.concatenation(0), dtype=np.int32)
    return g.op1(Op.RESHAPE, [y, full], f"{name}/unflatten", target, G.reshape())


@rule(DOPED_MATMUL, domain=DOMAIN)
def doped_matmul(ctx: Context, node: onnx.NodeProto) -> None:
    w, bias = read_doped_matmul(node, ctx.consts)
    name, (m, n) = matrix_name(node), w.shape
    x, out = node.input[0], node.output[0]
    shape = ctx.shape(x)
    t = ctx.tensor(x)
    if len(shape) != 2:  # the rule takes [batch, N]: fold the leading axes into one and restore them after
        t = ctx.g.op1(Op.RESHAPE, [t, ctx.g.const(f"{name}/flat_shape", np.array([-1, n], np.int32))],
                      f"{name}/flatten", (-1, n), G.reshape())
    roles: dict[str, str] = {}
    y = matrix.lower(ctx.g, t, w, bias, name, roles)
    if len(shape) != 2:
        y = restore_leading(ctx, ctx.tensor(x), shape, y, m, name)
    ctx.bind(out, y)
    ctx.layers[name] = {"shape": [m, n], "structure": w.structure,
                        "factor_shapes": {k: list(v.shape) for k, v in w.factors.items()}, "nnz": w.nnz,
                        "compression_factor": w.compression_factor(), "tensors": roles}
