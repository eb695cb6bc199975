"""One LSTM time step for every layer, as TFLite builtin ops (gate order i, f, g, o as torch).

Per layer k: gates = W_k @ [inp, h[k]] + b_k (CONCATENATION, then the matrix lowering), SPLIT into four,
c' = sigmoid(f) * c[k] + sigmoid(i) * tanh(g), h' = sigmoid(o) * tanh(c') (LOGISTIC, TANH, MUL, ADD).
The states [L, batch, H] are split per layer with UNPACK and rebuilt with PACK.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ...spec import LSTM
from . import graph as G
from . import matrix
from .graph import BATCH, Graph, Op


def step(g: Graph, x: int, h: int, c: int, block: LSTM, tensors: dict[str, dict],
         tick: Callable[[str], None]) -> tuple[int, int, int]:
    """(top layer's h', h_next, c_next) for inputs x [batch, I], h and c [L, batch, H]."""
    L, H = block.num_layers, block.hidden_size
    state = (BATCH, H)
    hs = g.op(Op.UNPACK, [h], f"{block.name}/h", [state] * L, G.unpack(L))
    cs = g.op(Op.UNPACK, [c], f"{block.name}/c", [state] * L, G.unpack(L))
    split_axis = g.const(f"{block.name}/gate_axis", np.array(1, np.int32))
    inp = x
    h_new, c_new = [], []
    for k, layer in enumerate(block.layers):
        name = f"{block.name}.{k}"
        width = g.shape(inp)[-1] + H
        xh = g.op1(Op.CONCATENATION, [inp, hs[k]], f"{name}/xh", (BATCH, width), G.concatenation(axis=1))
        roles: dict[str, str] = {}
        gates = matrix.lower(g, xh, layer.weight, layer.bias, name, roles)
        tensors[name] = roles
        i, f, gg, o = g.op(Op.SPLIT, [split_axis, gates], f"{name}/gates", [state] * 4, G.split(4))
        i = g.op1(Op.LOGISTIC, [i], f"{name}/i", state)
        f = g.op1(Op.LOGISTIC, [f], f"{name}/f", state)
        gg = g.op1(Op.TANH, [gg], f"{name}/g", state)
        o = g.op1(Op.LOGISTIC, [o], f"{name}/o", state)
        fc = g.op1(Op.MUL, [f, cs[k]], f"{name}/f_c", state, G.mul())
        ig = g.op1(Op.MUL, [i, gg], f"{name}/i_g", state, G.mul())
        c_k = g.op1(Op.ADD, [fc, ig], f"{name}/c_next", state, G.add())
        tc = g.op1(Op.TANH, [c_k], f"{name}/tanh_c", state)
        h_k = g.op1(Op.MUL, [o, tc], f"{name}/h_next", state, G.mul())
        h_new.append(h_k)
        c_new.append(c_k)
        inp = h_k
        tick(name)
    stacked = (L, BATCH, H)
    h_next = g.op1(Op.PACK, h_new, f"{block.name}/h_next", stacked, G.pack(L))
    c_next = g.op1(Op.PACK, c_new, f"{block.name}/c_next", stacked, G.pack(L))
    return inp, h_next, c_next
