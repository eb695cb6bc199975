"""Lowering of an `LSTM` block: the cell (shared by both modes), the step graph body, and the Scan sequence.

Per layer and step: Concat [x_t, h] once, gates = W @ [x_t, h] + b through `matrix.lower` (one kron + one
SparseMatVec for a doped layer), Split into i, f, g, o (torch order), the usual elementwise update.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ...spec import LSTM
from . import matrix
from .graph import Graph, value_info


def _per_layer(g: Graph, state: str, num_layers: int, name: str) -> list[str]:
    """[L, B, H] -> L tensors [B, H]: Squeeze (no copy) for one layer, one Gather per layer otherwise."""
    if num_layers == 1:
        return [g.node("Squeeze", [state, g.i64([0])], f"{name}/squeeze")]
    return [g.node("Gather", [state, g.init(f"const/layer{k}", np.asarray(k, np.int64))], f"{name}/layer{k}", axis=0)
            for k in range(num_layers)]


def _stack(g: Graph, states: list[str], hidden: int, name: str) -> str:
    """L tensors [B, H] -> [L, B, H]: one Concat to [L*B, H] and a Reshape (no copy)."""
    if len(states) == 1:
        return g.node("Unsqueeze", [states[0], g.i64([0])], f"{name}/unsqueeze")
    flat = g.node("Concat", states, f"{name}/concat", axis=0)
    return g.node("Reshape", [flat, g.i64([len(states), -1, hidden])], f"{name}/reshape")


def step(
    g: Graph,
    x_t: str,
    h: str,
    c: str,
    block: LSTM,
    impl: str,
    layers: dict[str, dict],
    tick: Callable[[str], None] = lambda name: None,
) -> tuple[str, str, str]:
    """Emit one time step through every layer; x_t [B, I], h, c [L, B, H]. Returns (top h, h_next, c_next)."""
    H, L = block.hidden_size, block.num_layers
    hs = _per_layer(g, h, L, f"{block.name}/h")
    cs = _per_layer(g, c, L, f"{block.name}/c")
    inp = x_t
    h_out, c_out = [], []
    for k, layer in enumerate(block.layers):
        scope = f"{block.name}.{k}"
        xh = g.node("Concat", [inp, hs[k]], f"{scope}/concat_xh", axis=1)
        roles: dict[str, str] = {}
        gates = matrix.lower(g, xh, layer.weight, layer.bias, scope, impl, roles)
        layers[scope] = roles
        i, f, gg, o = g.split(gates, [H] * 4, 1, f"{scope}/split_gates")
        i = g.node("Sigmoid", [i], f"{scope}/sigmoid_i")
        f = g.node("Sigmoid", [f], f"{scope}/sigmoid_f")
        gg = g.node("Tanh", [gg], f"{scope}/tanh_g")
        o = g.node("Sigmoid", [o], f"{scope}/sigmoid_o")
        fc = g.node("Mul", [f, cs[k]], f"{scope}/mul_fc")
        ig = g.node("Mul", [i, gg], f"{scope}/mul_ig")
        c_new = g.node("Add", [fc, ig], f"{scope}/c_next")
        h_new = g.node("Mul", [o, g.node("Tanh", [c_new], f"{scope}/tanh_c")], f"{scope}/h_next")
        h_out.append(h_new)
        c_out.append(c_new)
        inp = h_new
        tick(scope)
    return inp, _stack(g, h_out, H, f"{block.name}/h_next"), _stack(g, c_out, H, f"{block.name}/c_next")


def sequence(
    g: Graph,
    x: str,
    h0: str,
    c0: str,
    block: LSTM,
    impl: str,
    layers: dict[str, dict],
    tick: Callable[[str], None] = lambda name: None,
) -> tuple[str, str, str]:
    """Emit the whole sequence as one ONNX Scan over time; x [T, B, I] (time-major), h0, c0 [L, B, H].

    Returns (y [T, B, H], hn, cn). The LSTM weights
    are initializers of the Scan body itself, so the kernels inside see them as constants.
    """
    L, H, I = block.num_layers, block.hidden_size, block.input_size
    body = Graph(g.opset, prefix="scan/")
    bh, bc, bx = "scan/h", "scan/c", "scan/x_t"
    body.reserve(bh, bc, bx)
    y_t, h_next, c_next = step(body, bx, bh, bc, block, impl, layers, tick)
    for new, old in {"scan/h_next": h_next, "scan/c_next": c_next, "scan/y_t": y_t}.items():
        body.rename_output(old, new)
    state = (L, "batch", H)
    graph = body.make(
        f"{block.name}_step",
        [value_info(bh, np.float32, state), value_info(bc, np.float32, state),
         value_info(bx, np.float32, ("batch", I))],
        [value_info("scan/h_next", np.float32, state), value_info("scan/c_next", np.float32, state),
         value_info("scan/y_t", np.float32, ("batch", H))],
    )
    hn, cn, y = g.node("Scan", [h0, c0, x], f"{block.name}/scan", outputs=3, body=graph, num_scan_inputs=1)
    return y, hn, cn

