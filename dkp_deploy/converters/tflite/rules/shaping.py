"""Tensor plumbing: Gather, Squeeze / Unsqueeze, Concat, Split, Reshape, Transpose, Shape-free forms only."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.numpy_helper
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
    if index is not None and np.any(index < 0) and shape[axis] < 0:
        if np.ndim(index) != 0:
            raise InputError(f"node {node.name!r}: negative Gather indices on a dynamic axis")
        # x[..., -k, ...] on a dynamic axis: the index is the axis' run-time size - k
        g, dt = ctx.g, ctx.dtype(node.input[0])
        dims = g.op1(Op.SHAPE, [data], f"{out}/dims", (len(shape),), G.shape_of(), dtype=np.int32)
        size = g.op1(Op.SLICE, [dims, g.const(f"{out}/axis", np.array([axis], np.int32)),
                                g.const("gather/one1", np.array([1], np.int32))], f"{out}/size", (1,), G.slice_(),
                     dtype=np.int32)
        pos = g.op1(Op.ADD, [size, g.const(f"{out}/offset", np.array([int(index)], np.int32))], f"{out}/pos", (1,),
                    G.add(), dtype=np.int32)
        kept = (*shape[:axis], 1, *shape[axis + 1:])
        picked = g.op1(Op.GATHER, [data, pos], f"{out}/gather", kept, G.gather(axis=axis), dtype=dt)
        ctx.bind(out, g.op1(Op.SQUEEZE, [picked], out, ctx.shape(out), G.squeeze([axis]), dtype=dt))
        return
    if index is not None and np.any(index < 0):  # ONNX counts negative indices from the end; TFLite refuses them
        index = np.where(index < 0, index + shape[axis], index)
        ctx.consts[node.input[1] + "/nonneg"] = index
        node = onnx.helper.make_node("Gather", [node.input[0], node.input[1] + "/nonneg"], list(node.output),
                                     name=node.name, axis=axis)
    if index is not None and np.ndim(index) == 0:  # TFLite reads a 0-d index as [1]: gather [i], squeeze the axis
        kept = (*shape[:axis], 1, *shape[axis + 1:])
        one = ctx.g.const(f"{out}/index", np.array([int(index)], np.int64))
        dt = ctx.dtype(node.input[0])
        picked = ctx.g.op1(Op.GATHER, [data, one], f"{out}/gather", kept, G.gather(axis=axis), dtype=dt)
        ctx.bind(out, ctx.g.op1(Op.SQUEEZE, [picked], out, ctx.shape(out), G.squeeze([axis]), dtype=dt))
        return
    ctx.bind(out, ctx.g.op1(Op.GATHER, [data, ctx.tensor(node.input[1])], out, ctx.shape(out), G.gather(axis=axis),
                            dtype=ctx.dtype(node.input[0])))


@rule("Squeeze")
def squeeze(ctx: Context, node: onnx.NodeProto) -> None:
    x, out = node.input[0], node.output[0]
    rank = len(ctx.shape(x))
    axes = _ints(ctx, node, 1, "axes")
    axes = [d for d in range(rank) if ctx.shape(x)[d] == 1] if axes is None else [axis_of(a, rank) for a in axes]
    ctx.bind(out, ctx.g.op1(Op.SQUEEZE, [ctx.tensor(x)], out, ctx.shape(out), G.squeeze(sorted(axes)),
                            dtype=ctx.dtype(x)))


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
    """To the inferred output shape when at most one dimension is dynamic (RESHAPE takes one -1), else to the shape
    the graph computes (a Reshape's shape input)."""
    x, out = node.input[0], node.output[0]
    shape = ctx.shape(out)
    if sum(d < 0 for d in shape) <= 1:
        target = ctx.g.const(f"{out}/shape", np.array(shape, np.int32))
    elif node.op_type == "Reshape" and ctx.const(node.input[1]) is None:
        target = ctx.tensor(node.input[1])  # computed at run time; its values are the dims (no 0 = "copy")
    else:
        raise InputError(f"node {node.name!r} ({node.op_type}): output shape {list(shape)} has more than one "
                         "dynamic dimension")
    ctx.bind(out, ctx.g.op1(Op.RESHAPE, [ctx.tensor(x), target], out, shape, G.reshape(), dtype=ctx.dtype(x)))


@rule("Shape")
def shape_of(ctx: Context, node: onnx.NodeProto) -> None:
    x, out = node.input[0], node.output[0]
    rank = len(ctx.shape(x))
    a = ctx.attrs(node)
    start, end = axis_of(int(a.get("start", 0)), rank), int(a.get("end", rank))
    end = min(axis_of(end, rank) if end < 0 else end, rank)
    dims = ctx.g.op1(Op.SHAPE, [ctx.tensor(x)], f"{out}/all" if (start, end) != (0, rank) else out, (rank,),
                     G.shape_of(), dtype=np.int32)
    if (start, end) != (0, rank):
        dims = ctx.g.op1(Op.SLICE, [dims, ctx.g.const(f"{out}/begin", np.array([start], np.int32)),
                                    ctx.g.const(f"{out}/size", np.array([end - start], np.int32))],
                         out, (end - start,), G.slice_(), dtype=np.int32)
    ctx.bind(out, dims)


@rule("Slice")
def slice_(ctx: Context, node: onnx.NodeProto) -> None:
    """Slices with constant starts / ends / axes and step 1, as SLICE (begin, size; -1 = to the end)."""
    x, out = node.input[0], node.output[0]
    shape = ctx.shape(x)
    rank = len(shape)
    starts, ends = (_ints(ctx, node, i, k) for i, k in ((1, "starts"), (2, "ends")))
    axes = _ints(ctx, node, 3, "axes") or list(range(len(starts)))
    steps = _ints(ctx, node, 4, "steps") or [1] * len(starts)
    if any(s != 1 for s in steps):
        raise InputError(f"node {node.name!r}: Slice with a step other than 1 has no translation")
    begin, size = [0] * rank, [-1] * rank
    for s, e, ax in zip(starts, ends, axes):
        ax, dim = axis_of(ax, rank), shape[axis_of(ax, rank)]
        if dim < 0 and (s < 0 or 0 <= e < 2**31 - 1 and e != -1 and e < 0):
            raise InputError(f"node {node.name!r}: Slice from the end of a dynamic axis has no translation")
        s = s + dim if s < 0 else s
        begin[ax] = max(s, 0)
        if e < 2**31 - 1 and dim >= 0:
            e = e + dim if e < 0 else min(e, dim)
            size[ax] = max(e - begin[ax], 0)
        elif e < 2**31 - 1:
            size[ax] = e - begin[ax]
    ctx.bind(out, ctx.g.op1(Op.SLICE, [ctx.tensor(x), ctx.g.const(f"{out}/begin", np.array(begin, np.int32)),
                                       ctx.g.const(f"{out}/size", np.array(size, np.int32))],
                            out, ctx.shape(out), G.slice_(), dtype=ctx.dtype(x)))


@rule("Concat")
def concat(ctx: Context, node: onnx.NodeProto) -> None:
    out = node.output[0]
    axis = axis_of(int(ctx.attrs(node)["axis"]), len(ctx.shape(out)))
    ctx.bind(out, ctx.g.op1(Op.CONCATENATION, [ctx.tensor(i) for i in node.input], out, ctx.shape(out),
                            G.concatenation(axis), dtype=ctx.dtype(node.input[0])))


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
    version = 1 if len(perm) <= 4 else len(perm)  # TRANSPOSE declares 5-D at version 5, 6-D at version 6
    ctx.bind(out, ctx.g.op1(Op.TRANSPOSE, [ctx.tensor(node.input[0]), p], out, ctx.shape(out),
                            dtype=ctx.dtype(node.input[0]), version=version))


@rule("ConstantOfShape")
def constant_of_shape(ctx: Context, node: onnx.NodeProto) -> None:
    """FILL of the (possibly computed) shape with the node's value (a zero state torch.onnx writes for h0)."""
    out = node.output[0]
    t = ctx.attrs(node).get("value")
    value = onnx.numpy_helper.to_array(t).ravel()[0] if t is not None else np.float32(0)
    value = np.asarray(value, np.float32 if np.asarray(value).dtype.kind == "f" else np.int32)
    fill = ctx.g.const(f"{out}/value", value)
    ctx.bind(out, ctx.g.op1(Op.FILL, [ctx.tensor(node.input[0]), fill], out, ctx.shape(out), G.fill(),
                            dtype=value.dtype))


@rule("Expand")
def expand(ctx: Context, node: onnx.NodeProto) -> None:
    x, out = node.input[0], node.output[0]
    ctx.bind(out, ctx.g.op1(Op.BROADCAST_TO, [ctx.tensor(x), ctx.tensor(node.input[1])], out, ctx.shape(out),
                            dtype=ctx.dtype(x)))
