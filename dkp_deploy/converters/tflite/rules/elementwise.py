"""Elementwise ops: arithmetic (broadcasting as ONNX does) and activations."""

from __future__ import annotations

import onnx
from tflite.BuiltinOperator import BuiltinOperator as Op

from .. import graph as G
from . import Context, rule

_BINARY = {"Add": (Op.ADD, G.add), "Mul": (Op.MUL, G.mul), "Sub": (Op.SUB, None), "Div": (Op.DIV, None)}
_UNARY = {"Sigmoid": Op.LOGISTIC, "Tanh": Op.TANH, "Relu": Op.RELU, "Exp": Op.EXP, "Sqrt": Op.SQRT,
          "Neg": Op.NEG, "Abs": Op.ABS}


@rule(*_BINARY)
def binary(ctx: Context, node: onnx.NodeProto) -> None:
    code, options = _BINARY[node.op_type]
    a, b = (ctx.tensor(i) for i in node.input)
    out = node.output[0]
    ctx.bind(out, ctx.g.op1(code, [a, b], out, ctx.shape(out), options() if options else None,
                            dtype=ctx.dtype(node.input[0])))


@rule(*_UNARY)
def unary(ctx: Context, node: onnx.NodeProto) -> None:
    out = node.output[0]
    ctx.bind(out, ctx.g.op1(_UNARY[node.op_type], [ctx.tensor(node.input[0])], out, ctx.shape(out)))


@rule("Gelu")
def gelu(ctx: Context, node: onnx.NodeProto) -> None:
    approximate = ctx.attrs(node).get("approximate", b"none") == b"tanh"
    out = node.output[0]
    ctx.bind(out, ctx.g.op1(Op.GELU, [ctx.tensor(node.input[0])], out, ctx.shape(out), G.gelu(approximate)))


@rule("Identity", "Dropout")
def identity(ctx: Context, node: onnx.NodeProto) -> None:
    ctx.bind(node.output[0], ctx.tensor(node.input[0]))  # an alias; graph outputs get their own tensor at the end
