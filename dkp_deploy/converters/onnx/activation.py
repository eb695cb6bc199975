"""Lowering of an `Activation` block to standard ONNX ops."""

from __future__ import annotations

import math

import numpy as np

from ...spec import Activation
from .graph import Graph

_SIMPLE = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid"}


def lower(g: Graph, x: str, block: Activation) -> str:
    if block.kind in _SIMPLE:
        return g.node(_SIMPLE[block.kind], [x], f"{block.name}/{block.kind}")
    if block.kind == "identity":
        return x
    if block.kind == "gelu":  # exact (erf) GELU
        if g.opset >= 20:
            return g.node("Gelu", [x], f"{block.name}/gelu")
        # the erf form that onnxruntime fuses back into one Gelu kernel
        half = g.init("const/half", np.asarray(0.5, np.float32))
        one = g.init("const/one", np.asarray(1.0, np.float32))
        s = g.node("Div", [x, g.init("const/sqrt2", np.asarray(math.sqrt(2.0), np.float32))], f"{block.name}/div")
        e = g.node("Erf", [s], f"{block.name}/erf")
        a = g.node("Add", [e, one], f"{block.name}/add")
        m = g.node("Mul", [x, a], f"{block.name}/mul")
        return g.node("Mul", [m, half], f"{block.name}/half")
    raise ValueError(f"unknown activation {block.kind!r}")
