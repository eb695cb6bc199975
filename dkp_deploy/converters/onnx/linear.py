"""Lowering of a `Linear` block (x [batch, N] -> [batch, M]) and of an LM decoder over a sequence."""

from __future__ import annotations

from ...spec import Linear
from . import matrix
from .graph import Graph


def lower(g: Graph, x: str, block: Linear, impl: str, roles: dict[str, str]) -> str:
    return matrix.lower(g, x, block.weight, block.bias, block.name, impl, roles)


def lower_sequence(g: Graph, y: str, block: Linear, impl: str, roles: dict[str, str]) -> str:
    """The block applied to y [d0, d1, K]: flattened to one [d0*d1, K] product (one big GEMM), then reshaped."""
    lead = g.node("Shape", [y], f"{block.name}/lead_shape", start=0, end=2)
    flat = g.node("Reshape", [y, g.i64([-1, block.in_features])], f"{block.name}/flatten")
    out = lower(g, flat, block, impl, roles)
    shape = g.node("Concat", [lead, g.i64([block.out_features])], f"{block.name}/out_shape", axis=0)
    return g.node("Reshape", [out, shape], f"{block.name}/unflatten")
