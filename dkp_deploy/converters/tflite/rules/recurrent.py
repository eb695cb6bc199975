"""ONNX Scan (one layer and direction of a recurrence, as `dkp_deploy.hub.recurrent` writes it) as TFLite WHILE.

Loop variables: the step i, T, the Scan's states, its scan input x [T, batch, ...] and the output buffer
[T, batch, H] (FILLed with zeros). The body subgraph gathers x[pos] (pos = i, or T - 1 - i for a reverse
direction), runs the Scan body translated by the same rules, writes y_t at pos with DYNAMIC_UPDATE_SLICE and
counts i up; the cond subgraph is i < T. Right at any T and batch.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper
from tflite.BuiltinOperator import BuiltinOperator as Op

from ....errors import InputError
from .. import graph as G
from . import RULES, Context, rule


def _translate_body(ctx: Context, body: onnx.GraphProto) -> None:
    for init in body.initializer:
        ctx.consts[init.name] = numpy_helper.to_array(init)
    for node in body.node:
        fn = RULES.get((node.domain or "", node.op_type))
        if fn is None:
            raise InputError(f"TFLite: no translation for ONNX op {node.op_type} (node {node.name!r})")
        fn(ctx, node)


@rule("Scan")
def scan(ctx: Context, node: onnx.NodeProto) -> None:
    a = ctx.attrs(node)
    body: onnx.GraphProto = a["body"]
    n_scan = int(a["num_scan_inputs"])
    if n_scan != 1 or len(node.output) - (len(node.input) - 1) != 1:
        raise InputError(f"node {node.name!r}: a Scan with {n_scan} scan inputs / several scan outputs has no "
                         "translation (the hub's recurrences have one of each)")
    reverse_in = bool((a.get("scan_input_directions") or [0])[0])
    reverse_out = bool((a.get("scan_output_directions") or [0])[0])
    if reverse_in != reverse_out:
        raise InputError(f"node {node.name!r}: a Scan reading and writing in different directions")
    states, x = list(node.input[:-1]), node.input[-1]
    y = node.output[-1]
    g = ctx.g
    x_shape, y_shape = ctx.shape(x), ctx.shape(y)
    dims = g.op1(Op.SHAPE, [ctx.tensor(x)], f"{y}/x_shape", (len(x_shape),), G.shape_of(), dtype=np.int32)
    steps = g.op1(Op.SLICE, [dims, g.const("scan/zero1", np.array([0], np.int32)),
                             g.const("scan/one1", np.array([1], np.int32))], f"{y}/T", (1,), G.slice_(),
                  dtype=np.int32)
    lead = g.op1(Op.SLICE, [dims, g.const("scan/zero1", np.array([0], np.int32)),
                            g.const("scan/two1", np.array([2], np.int32))], f"{y}/T_batch", (2,), G.slice_(),
                 dtype=np.int32)
    acc_dims = g.op1(Op.CONCATENATION, [lead, g.const(f"{y}/width", np.array(y_shape[2:], np.int32))],
                     f"{y}/acc_shape", (len(y_shape),), G.concatenation(0), dtype=np.int32)
    acc = g.op1(Op.FILL, [acc_dims, g.const("scan/zero_f", np.array(0.0, np.float32))], f"{y}/acc0", y_shape,
                G.fill())
    start = g.const("scan/zero1", np.array([0], np.int32))
    outer = [start, steps, *(ctx.tensor(s) for s in states), ctx.tensor(x), acc]
    specs = [((1,), np.int32), ((1,), np.int32), *((ctx.shape(s), np.float32) for s in states),
             (x_shape, ctx.dtype(x)), (y_shape, np.float32)]

    def loop_inputs(sub: G.Graph, label: str) -> list[int]:
        return [sub.input(sub.unique(f"{label}/v{k}"), dt, shape) for k, (shape, dt) in enumerate(specs)]

    cond, cond_index = g.subgraph(f"{node.name}/cond")
    cv = loop_inputs(cond, f"{node.name}/cond")
    more = cond.op1(Op.LESS, [cv[0], cv[1]], f"{node.name}/more", (1,), dtype=np.bool_)
    g.finish_subgraph(cond_index, cv, [more])

    sub, body_index = g.subgraph(f"{node.name}/body")
    bv = loop_inputs(sub, f"{node.name}/body")
    i, total, sv, xs, buf = bv[0], bv[1], bv[2:-2], bv[-2], bv[-1]
    one = sub.const("scan/one1", np.array([1], np.int32))
    pos = sub.op1(Op.SUB, [sub.op1(Op.SUB, [total, i], "scan/left", (1,), dtype=np.int32), one], "scan/pos",
                  (1,), dtype=np.int32) if reverse_in else i
    x_t = sub.op1(Op.GATHER, [xs, pos], "scan/x_t1", (1, *x_shape[1:]), G.gather(axis=0), dtype=ctx.dtype(x))
    x_t = sub.op1(Op.SQUEEZE, [x_t], "scan/x_t", x_shape[1:], G.squeeze([0]), dtype=ctx.dtype(x))
    inner = Context(sub, ctx.shapes, ctx.dtypes, dict(ctx.consts), layers=ctx.layers)
    for vi, t in zip(body.input, [*sv, x_t]):
        inner.bind(vi.name, t)
    _translate_body(inner, body)
    new_states = [inner.tensor(o.name) for o in body.output[:-1]]
    y_t = inner.tensor(body.output[-1].name)
    y_t = sub.op1(Op.EXPAND_DIMS, [y_t, sub.const("scan/axis0", np.array(0, np.int32))], "scan/y_t1",
                  (1, *y_shape[1:]), G.expand_dims())
    where = sub.op1(Op.CONCATENATION, [pos, sub.const("scan/zeros", np.zeros(len(y_shape) - 1, np.int32))],
                    "scan/where", (len(y_shape),), G.concatenation(0), dtype=np.int32)
    buf = sub.op1(Op.DYNAMIC_UPDATE_SLICE, [buf, y_t, where], "scan/acc", y_shape)
    step = sub.op1(Op.ADD, [i, one], "scan/next", (1,), G.add(), dtype=np.int32)
    g.finish_subgraph(body_index, bv, [step, total, *new_states, xs, buf])

    outs = g.op(Op.WHILE, outer, f"{node.name}/while", [shape for shape, _ in specs], G.while_(cond_index,
                                                                                                 body_index))
    for t, (_, dt) in zip(outs, specs):
        g.tensors[t].dtype = np.dtype(dt)
    for name, t in zip(node.output[:-1], outs[2:-2]):
        ctx.bind(name, t)
    ctx.bind(y, outs[-1])
