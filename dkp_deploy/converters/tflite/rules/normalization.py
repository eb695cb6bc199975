"""LayerNormalization, decomposed into builtin MEAN / SUB / MUL / ADD / RSQRT."""

from __future__ import annotations

import numpy as np
import onnx
from tflite.BuiltinOperator import BuiltinOperator as Op

from ....errors import InputError
from .. import graph as G
from . import Context, axis_of, rule


@rule("LayerNormalization")
def layer_norm(ctx: Context, node: onnx.NodeProto) -> None:
    x, out = node.input[0], node.output[0]
    shape = ctx.shape(x)
    a = ctx.attrs(node)
    axis = axis_of(int(a.get("axis", -1)), len(shape))
    if axis != len(shape) - 1:
        raise InputError(f"node {node.name!r}: LayerNormalization over axis {axis} (only the last axis translates)")
    g, t = ctx.g, ctx.tensor(x)
    last = g.const("layer_norm/axis", np.array([axis], np.int32))
    reduced = (*shape[:-1], 1)
    mean = g.op1(Op.MEAN, [t, last], f"{out}/mean", reduced, G.reducer(keep_dims=True))
    centred = g.op1(Op.SUB, [t, mean], f"{out}/centred", shape)
    var = g.op1(Op.MEAN, [g.op1(Op.MUL, [centred, centred], f"{out}/square", shape, G.mul()), last],
                f"{out}/var", reduced, G.reducer(keep_dims=True))
    eps = g.const(f"{out}/epsilon", np.array(float(a.get("epsilon", 1e-5)), np.float32))
    inv = g.op1(Op.RSQRT, [g.op1(Op.ADD, [var, eps], f"{out}/var_eps", reduced, G.add())], f"{out}/rstd", reduced)
    y = g.op1(Op.MUL, [centred, inv], f"{out}/normed", shape, G.mul())
    if len(node.input) > 1 and node.input[1]:
        y = g.op1(Op.MUL, [y, ctx.tensor(node.input[1])], f"{out}/scaled", shape, G.mul())
    if len(node.input) > 2 and node.input[2]:
        y = g.op1(Op.ADD, [y, ctx.tensor(node.input[2])], f"{out}/shifted", shape, G.add())
    ctx.bind(out, y)


def _softmax_options(log: bool):
    import tflite
    from tflite.BuiltinOptions import BuiltinOptions

    if log:
        return G._table(BuiltinOptions.LogSoftmaxOptions, tflite.LogSoftmaxOptionsStart, tflite.LogSoftmaxOptionsEnd)
    return G._table(BuiltinOptions.SoftmaxOptions, tflite.SoftmaxOptionsStart, tflite.SoftmaxOptionsEnd,
                    (tflite.SoftmaxOptionsAddBeta, 1.0))


@rule("Softmax", "LogSoftmax")
def softmax(ctx: Context, node: onnx.NodeProto) -> None:
    """Over the last axis (TFLite's); another axis is moved last and back with two TRANSPOSEs."""
    x, out = node.input[0], node.output[0]
    shape = ctx.shape(x)
    rank = len(shape)
    axis = axis_of(int(ctx.attrs(node).get("axis", -1)), rank)
    code = Op.LOG_SOFTMAX if node.op_type == "LogSoftmax" else Op.SOFTMAX
    t = ctx.tensor(x)
    if axis == rank - 1:
        ctx.bind(out, ctx.g.op1(code, [t], out, shape, _softmax_options(code == Op.LOG_SOFTMAX)))
        return
    perm = [*(d for d in range(rank) if d != axis), axis]
    moved = tuple(shape[d] for d in perm)
    p = ctx.g.const(f"{out}/perm", np.array(perm, np.int32))
    t = ctx.g.op1(Op.TRANSPOSE, [t, p], f"{out}/axis_last", moved)
    t = ctx.g.op1(code, [t], f"{out}/softmax", moved, _softmax_options(code == Op.LOG_SOFTMAX))
    back = ctx.g.const(f"{out}/perm_back", np.array(np.argsort(perm), np.int32))
    ctx.bind(out, ctx.g.op1(Op.TRANSPOSE, [t, back], out, shape))


@rule("ReduceMean", "ReduceSum")
def reduce_mean(ctx: Context, node: onnx.NodeProto) -> None:
    x, out = node.input[0], node.output[0]
    rank = len(ctx.shape(x))
    a = ctx.attrs(node)
    axes = None
    if len(node.input) > 1 and node.input[1]:
        axes = ctx.const(node.input[1])
        if axes is None:
            raise InputError(f"node {node.name!r}: ReduceMean axes must be a constant")
    axes = list(range(rank)) if axes is None and a.get("axes") is None else (axes if axes is not None else a["axes"])
    axes = sorted(axis_of(int(v), rank) for v in np.asarray(axes).ravel())
    keep = bool(a.get("keepdims", 1))
    ax = ctx.g.const(f"{out}/axes", np.array(axes, np.int32))
    code = Op.MEAN if node.op_type == "ReduceMean" else Op.SUM
    ctx.bind(out, ctx.g.op1(code, [ctx.tensor(x), ax], out, ctx.shape(out), G.reducer(keep_dims=keep)))
