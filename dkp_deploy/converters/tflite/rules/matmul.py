"""MatMul / Gemm: FULLY_CONNECTED when the right operand is a constant matrix, else BATCH_MATMUL."""

from __future__ import annotations

import numpy as np
import onnx
from tflite.BuiltinOperator import BuiltinOperator as Op

from ....errors import InputError
from .. import graph as G
from ..matrix import FC_KEEP_DIMS_VERSION
from . import Context, rule


def _fc(ctx: Context, x: str, weight: np.ndarray, bias: int | None, out: str) -> int:
    """x [..., K] @ weight^T for weight [M, K] (FULLY_CONNECTED's layout), over the last axis of x."""
    rank = len(ctx.shape(x))
    w = ctx.g.const(f"{out}/weight", np.ascontiguousarray(weight, np.float32))
    inputs = [ctx.tensor(x), w, -1 if bias is None else bias]
    if rank == 2:
        return ctx.g.op1(Op.FULLY_CONNECTED, inputs, out, ctx.shape(out), G.fully_connected())
    return ctx.g.op1(Op.FULLY_CONNECTED, inputs, out, ctx.shape(out), G.fully_connected(keep_num_dims=True),
                     version=FC_KEEP_DIMS_VERSION)


@rule("MatMul")
def matmul(ctx: Context, node: onnx.NodeProto) -> None:
    a, b = node.input
    out = node.output[0]
    weight = ctx.const(b)
    if weight is not None and weight.ndim == 2:
        ctx.bind(out, _fc(ctx, a, weight.T, None, out))
        return
    ctx.bind(out, ctx.g.op1(Op.BATCH_MATMUL, [ctx.tensor(a), ctx.tensor(b)], out, ctx.shape(out), G.batch_matmul()))


@rule("Gemm")
def gemm(ctx: Context, node: onnx.NodeProto) -> None:
    a = ctx.attrs(node)
    if a.get("transA", 0) or float(a.get("alpha", 1.0)) != 1.0 or float(a.get("beta", 1.0)) != 1.0:
        raise InputError(f"node {node.name!r}: Gemm with transA, alpha or beta has no translation")
    weight = ctx.const(node.input[1])
    if weight is None:
        raise InputError(f"node {node.name!r}: Gemm needs a constant B")
    weight = weight if a.get("transB", 0) else weight.T
    bias = ctx.tensor(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    ctx.bind(node.output[0], _fc(ctx, node.input[0], weight, bias, node.output[0]))
