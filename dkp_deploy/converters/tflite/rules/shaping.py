"""Tensor plumbing: Gather, Squeeze / Unsqueeze, Concat, Split, Reshape, Transpose, Shape-free forms only."""

from __future__ import annotations

import numpy as np
import onnx
from tflite.BuiltinOperator import BuiltinOperator as Op

from ....errors import InputError
from .. import graph as G
from . import Context, axis_of, rule


def _ints(ctx: Context, node: onnx.NodeProto, slot: int, attr: str) -> list[int] | None:
    """An int list given as a constant input (opset >= 13) or an attribute (older opsets)."""
    if len(node.input) > slot and node.input[slot]:
        value = ctx.const(node.input[slot])
        if value is None:
            raise InputError(f"node {node.name!r} ({node.op_type}): input {node.input[slot]!r} must be a constant")
        return [int(v) for v in np.asarray(value).ravel()]
    got = ctx.attrs(node).get(attr)
    return None if got is None else [int(v) for v in got]


@rule("Gather")
def gather(ctx: Context, node: onnx.NodeProto) -> None:
    axis = axis_of(int(ctx.attrs(node).get("axis", 0)), len(ctx.shape(node.input[0])))
    out = node.output[0]
    data, index = ctx.tensor(node.input[0]), ctx.const(node.input[1])
    shape = ctx.shape(node.input[0])
    if index is not None and np.any(index < 0):  # ONNX counts negative indices from the end; TFLite refuses them
        if shape[axis] < 0:
            raise InputError(f"node {node.name!r}: a negative Gather index on a dynamic axis")
        index = np.where(index < 0, index + shape[axis], index)
        ctx.consts[node.input[1] + "/nonneg"] = index
        node = onnx.helper.make_node("Gather", [node.input[0], node.input[1] + "/nonneg"], list(node.output),
                                     name=node.name, axis=axis)
    if index is not None and np.ndim(index) == 0:  # TFLite reads a 0-d index as [1]: gather [i], squeeze the axis
        kept = (*shape[:axis], 1, *shape[axis + 1:])
        one = ctx.g.const(f"{out}/index", np.array([int(index)], np.int64))
        picked = ctx.g.op1(Op.GATHER, [data, one], f"{out}/gather", kept, G.gather(axis=axis))
        ctx.bind(out, ctx.g.op1(Op.SQUEEZE, [picked], out, ctx.shape(out), G.squeeze([axis])))
        return
    ctx.bind(out, ctx.g.op1(Op.GATHER, [data, ctx.tensor(node.input[1])], out, ctx.shape(out), G.gather(axis=axis)))


@rule("Squeeze")
def squeeze(ctx: Context, node: onnx.NodeProto) -> None:
    x, out = node.input[0], node.output[0]
    rank = len(ctx.shape(x))
    axes = _ints(ctx, node, 1, "axes")
    axes = [d for d in range(rank) if ctx.shape(x)[d] == 1] if axes is None else [axis_of(a, rank) for a in axes]
    ctx.bind(out, ctx.g.op1(Op.SQUEEZE, [ctx.tensor(x)], out, ctx.shape(out), G.squeeze(sorted(axes))))


@rule("Unsqueeze")
def unsqueeze(ctx: Context, node: onnx.NodeProto) -> None:
    """One EXPAND_DIMS per new axis, in increasing order (each axis counted in the output's rank)."""
    x, out = node.input[0], node.output[0]
    rank = len(ctx.shape(out))
    t, shape = ctx.tensor(x), list(ctx.shape(x))
    axes = sorted(axis_of(a, rank) for a in _ints(ctx, node, 1, "axes") or [])
    for k, axis in enumerate(axes):
        shape.insert(axis, 1)
        last = k == len(axes) - 1
        t = ctx.g.op1(Op.EXPAND_DIMS, [t, ctx.g.const(f"expand/axis{axis}", np.array(axis, np.int32))],
                      out if last else f"{out}/expand{k}", tuple(shape), G.expand_dims(),
                      dtype=ctx.g.tensors[t].dtype)
    ctx.bind(out, t)


@rule("Reshape", "Flatten")
def reshape(ctx: Context, node: onnx.NodeProto) -> None:
    """To the inferred output shape; at most one dimension may be dynamic (RESHAPE takes one -1)."""
    out = node.output[0]
    shape = ctx.shape(out)
    if sum(d < 0 for d in shape) > 1:
        raise InputError(f"node {node.name!r} ({node.op_type}): output shape {list(shape)} has more than one "
                         "dynamic dimension")
    target = ctx.g.const(f"{out}/shape", np.array(shape, np.int32))
    ctx.bind(out, ctx.g.op1(Op.RESHAPE, [ctx.tensor(node.input[0]), target], out, shape, G.reshape()))


@rule("Concat")
def concat(ctx: Context, node: onnx.NodeProto) -> None:
    out = node.output[0]
    axis = axis_of(int(ctx.attrs(node)["axis"]), len(ctx.shape(out)))
    ctx.bind(out, ctx.g.op1(Op.CONCATENATION, [ctx.tensor(i) for i in node.input], out, ctx.shape(out),
                            G.concatenation(axis)))


@rule("Split")
def split(ctx: Context, node: onnx.NodeProto) -> None:
    x = node.input[0]
    axis = axis_of(int(ctx.attrs(node).get("axis", 0)), len(ctx.shape(x)))
    sizes = _ints(ctx, node, 1, "split")
    shapes = [ctx.shape(o) for o in node.output]
    if sizes is None or len(set(sizes)) == 1:
        outs = ctx.g.op(Op.SPLIT, [ctx.g.const("split/axis", np.array(axis, np.int32)), ctx.tensor(x)],
                        node.output[0], shapes, G.split(len(node.output)))
    else:
        outs = ctx.g.op(Op.SPLIT_V, [ctx.tensor(x), ctx.g.const(f"{node.output[0]}/sizes", np.array(sizes, np.int32)),
                                     ctx.g.const("split/axis", np.array(axis, np.int32))],
                        node.output[0], shapes, G.split_v(len(node.output)))
    for name, t in zip(node.output, outs):
        ctx.bind(name, t)


@rule("Transpose")
def transpose(ctx: Context, node: onnx.NodeProto) -> None:
    out = node.output[0]
    perm = ctx.attrs(node).get("perm") or list(reversed(range(len(ctx.shape(node.input[0])))))
    value = ctx.const(node.input[0])
    if value is not None:  # a transposed weight (a tied decoder): fold it, the consumer takes a constant
        ctx.consts[out] = np.ascontiguousarray(np.transpose(value, perm))
        return
    p = ctx.g.const(f"{out}/perm", np.array(perm, np.int32))
    ctx.bind(out, ctx.g.op1(Op.TRANSPOSE, [ctx.tensor(node.input[0]), p], out, ctx.shape(out)))
