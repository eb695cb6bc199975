"""Activation blocks as TFLite builtin ops (GELU is the exact erf form, as torch.nn.GELU defaults to)."""

from __future__ import annotations

from ...spec import Activation
from . import graph as G
from .graph import Graph, Op

_OPS = {"relu": (Op.RELU, None), "tanh": (Op.TANH, None), "sigmoid": (Op.LOGISTIC, None),
        "gelu": (Op.GELU, G.gelu(approximate=False))}


def lower(g: Graph, x: int, block: Activation) -> int:
    """The tensor holding activation(x); identity adds no op."""
    if block.kind == "identity":
        return x
    code, options = _OPS[block.kind]
    return g.op1(code, [x], block.name, g.shape(x), options)
