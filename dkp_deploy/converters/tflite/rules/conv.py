"""1-D Conv (NCT) as TFLite's CONV_2D over NHWC with H = 1: transposes, explicit PAD, VALID convolution."""

from __future__ import annotations

import numpy as np
import onnx
from tflite.BuiltinOperator import BuiltinOperator as Op

from ....errors import InputError
from .. import graph as G
from . import Context, rule


@rule("Conv")
def conv1d(ctx: Context, node: onnx.NodeProto) -> None:
    x, out = node.input[0], node.output[0]
    w = ctx.const(node.input[1])
    a = ctx.attrs(node)
    if w is None or w.ndim != 3 or int(a.get("group", 1)) != 1:
        raise InputError(f"node {node.name!r}: only 1-D Conv with constant weights and group 1 translates")
    pads = list(a.get("pads", [0, 0]))
    stride, dilation = int(a.get("strides", [1])[0]), int(a.get("dilations", [1])[0])
    (b, c, t), (_, o, t_out) = ctx.shape(x), ctx.shape(out)
    g = ctx.g
    nt = g.op1(Op.TRANSPOSE, [ctx.tensor(x), g.const("conv/nct_ntc", np.array([0, 2, 1], np.int32))],
               f"{out}/ntc", (b, t, c))
    nhwc = g.op1(Op.EXPAND_DIMS, [nt, g.const("conv/axis1", np.array(1, np.int32))], f"{out}/nhwc", (b, 1, t, c),
                 G.expand_dims())
    if any(pads):
        padding = g.const(f"{out}/pads", np.array([[0, 0], [0, 0], [pads[0], pads[1]], [0, 0]], np.int32))
        width = t if t < 0 else t + pads[0] + pads[1]
        nhwc = g.op1(Op.PAD, [nhwc, padding], f"{out}/padded", (b, 1, width, c), G.pad())
    filt = g.const(f"{out}/filter_ohwi", np.ascontiguousarray(w.transpose(0, 2, 1)[:, None].astype(np.float32)))
    bias = ctx.tensor(node.input[2]) if len(node.input) > 2 and node.input[2] else g.const(
        f"{out}/zero_bias", np.zeros(o, np.float32))
    y = g.op1(Op.CONV_2D, [nhwc, filt, bias], f"{out}/conv", (b, 1, t_out, o), G.conv2d(stride, dilation))
    y = g.op1(Op.SQUEEZE, [y], f"{out}/nto", (b, t_out, o), G.squeeze([1]))
    ctx.bind(out, g.op1(Op.TRANSPOSE, [y, g.const("conv/nct_ntc", np.array([0, 2, 1], np.int32))], out,
                        (b, o, t_out)))
