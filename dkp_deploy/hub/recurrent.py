"""Recurrent layers in the hub: one ONNX Scan per layer and direction, over bodies this project builds.

torch.onnx's own nn.LSTM translation is wrong at any sequence length but the export one, so every recurrence
(doped or dense) is written here from a framework-neutral `Recurrence`. Inputs are time-major: x [T, B, I],
h0 / c0 [L*D, B, H] (index k*D + d, torch's layout); outputs y [T, B, D*H], h_n, c_n like h0. Input projections
that do not depend on h (nn.LSTM's W_ih, GRU / RNN W_ih) run once over all T before the Scan; a DopedLSTM's gate
matrix acts on [x_t, h] and so runs inside the body.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import TensorProto, helper

from ..converters.onnx.graph import Graph
from ..spec import DopedMatrix
from .matrix import doped_matmul_node

KINDS = ("lstm", "gru", "rnn_tanh", "rnn_relu")


@dataclass
class Gate:
    """y = W x + bias; W dense (structure "dense") or doped."""

    w: DopedMatrix
    bias: np.ndarray | None
    name: str | None = None  # the matrix's name in reports and validation; a named dense W stays tracked too


@dataclass
class Cell:
    """One layer and direction: `ih` (hoisted) and `hh` (per step), or `cat` on [x_t, h] (DopedLSTM)."""

    ih: Gate | None = None
    hh: Gate | None = None
    cat: Gate | None = None


@dataclass
class Recurrence:
    kind: str
    hidden_size: int
    num_layers: int
    directions: int
    cells: list[Cell]  # index k * directions + d
    name: str = "rnn"


def _apply(g: Graph, x: str, gate: Gate, name: str) -> str:
    if gate.w.structure != "dense" or gate.name is not None:
        return doped_matmul_node(g, x, gate.w, gate.bias, gate.name or name)
    wt = g.init(f"{name}/W_T", np.ascontiguousarray(gate.w.factors["W"].astype(np.float32).T))
    y = g.node("MatMul", [x, wt], f"{name}/matmul")
    if gate.bias is not None:
        y = g.node("Add", [y, g.init(f"{name}/bias", gate.bias.astype(np.float32))], f"{name}/add_bias")
    return y


def _vi(name: str, cols: int):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", cols])


def _body(rec: Recurrence, cell: Cell, scope: str, opset: int, n_in: int, with_y: bool = True):
    """The Scan body of one layer-direction: (states..., x_t) -> (states'..., y_t); without `with_y` (a step
    graph, where y_t is h' itself) no y_t output and no Identity node for it."""
    H = rec.hidden_size
    b = Graph(opset, prefix=f"{scope}/")
    lstm = rec.kind == "lstm"
    h, c, x_t = f"{scope}/h", f"{scope}/c", f"{scope}/x_t"
    b.reserve(h, c, x_t)
    width = n_in if cell.cat is not None else {"lstm": 4 * H, "gru": 3 * H}.get(rec.kind, H)
    if lstm:
        if cell.cat is not None:
            xh = b.node("Concat", [x_t, h], "concat_xh", axis=1)
            b.value_info.append(_vi(xh, n_in + H))
            gates = _apply(b, xh, cell.cat, cell.cat.name or f"{scope}/cat")
        else:
            gates = b.node("Add", [x_t, _apply(b, h, cell.hh, f"{scope}/hh")], "gates")
        i, f, gg, o = b.split(gates, [H] * 4, 1, "split_gates")
        c_new = b.node("Add", [b.node("Mul", [b.node("Sigmoid", [f], "sig_f"), c], "fc"),
                               b.node("Mul", [b.node("Sigmoid", [i], "sig_i"), b.node("Tanh", [gg], "tanh_g")],
                                      "ig")], "c_next")
        h_new = b.node("Mul", [b.node("Sigmoid", [o], "sig_o"), b.node("Tanh", [c_new], "tanh_c")], "h_next")
        outs = [(h_new, "h_out"), (c_new, "c_out")]
    elif rec.kind == "gru":
        xr, xz, xn = b.split(x_t, [H] * 3, 1, "split_x")
        hr, hz, hn = b.split(_apply(b, h, cell.hh, f"{scope}/hh"), [H] * 3, 1, "split_h")
        r = b.node("Sigmoid", [b.node("Add", [xr, hr], "r_in")], "r")
        z = b.node("Sigmoid", [b.node("Add", [xz, hz], "z_in")], "z")
        n = b.node("Tanh", [b.node("Add", [xn, b.node("Mul", [r, hn], "r_hn")], "n_in")], "n")
        h_new = b.node("Add", [n, b.node("Mul", [z, b.node("Sub", [h, n], "h_minus_n")], "z_h")], "h_next")
        outs = [(h_new, "h_out")]
    else:
        pre = b.node("Add", [x_t, _apply(b, h, cell.hh, f"{scope}/hh")], "pre")
        h_new = b.node("Tanh" if rec.kind == "rnn_tanh" else "Relu", [pre], "h_next")
        outs = [(h_new, "h_out")]
    if with_y:
        outs.append((b.node("Identity", [h_new], "y_t"), "y_out"))
    names = []
    for old, new in outs:
        b.rename_output(old, f"{scope}/{new}")
        names.append(f"{scope}/{new}")
    states = [h, c] if lstm else [h]
    graph = b.make(scope.replace("/", "_"), [*(_vi(s, H) for s in states), _vi(x_t, width)],
                   [_vi(n, H) for n in names])
    return graph


def _inline(g: Graph, body, inputs: list[str]) -> list[str]:
    """The body's nodes and initializers copied into `g` on `inputs` (one step, no Scan); its output names."""
    rename = {vi.name: name for vi, name in zip(body.input, inputs)}
    g.value_info.extend(body.value_info)
    for t in body.initializer:
        g.initializers[t.name] = t
    for node in body.node:
        copy = helper.make_node(node.op_type, [rename.get(i, i) for i in node.input], list(node.output),
                                name=node.name, domain=node.domain or None)
        copy.attribute.extend(node.attribute)
        g.nodes.append(copy)
    return [o.name for o in body.output]


def emit(
    g: Graph, x: str, h0: str, c0: str | None, rec: Recurrence, input_size: int, step: bool = False
) -> tuple[str, str, str | None]:
    """Emit the recurrence on x [T, B, I] into `g`; return (y, h_n, c_n) (c_n None unless LSTM).

    `step`: the graph of one time step, x [B, I] and y [B, D * H]: the bodies inlined on it, no Scan and no time
    axis to add and take off around each layer."""
    if rec.kind not in KINDS:
        raise ValueError(f"unknown recurrence kind {rec.kind!r}")
    D, H = rec.directions, rec.hidden_size
    lstm = rec.kind == "lstm"
    layer_in, n_in = x, input_size
    h_n, c_n = [], []
    for k in range(rec.num_layers):
        ys = []
        for d in range(D):
            idx = k * D + d
            cell = rec.cells[idx]
            scope = f"{rec.name}/l{k}" + ("_reverse" if d else "")
            seq = layer_in if cell.cat is not None else _apply(g, layer_in, cell.ih, f"{scope}/ih")
            pick = g.init(f"{rec.name}/index{idx}", np.asarray(idx, np.int64))
            states = [g.node("Gather", [h0, pick], f"{scope}/h0", axis=0)]
            if lstm:
                states.append(g.node("Gather", [c0, pick], f"{scope}/c0", axis=0))
            body = _body(rec, cell, g.prefix + scope, g.opset, n_in, with_y=not step)
            if step:  # y_t is h': one node fewer per layer than an Identity (0.5-0.7 us at batch 1)
                outs = _inline(g, body, [*states, seq])
                outs.append(outs[0])
            else:
                outs = g.node("Scan", [*states, seq], f"{scope}/scan", outputs=len(states) + 1, body=body,
                              num_scan_inputs=1, scan_input_directions=[d], scan_output_directions=[d])
            h_n.append(outs[0])
            if lstm:
                c_n.append(outs[1])
            ys.append(outs[-1])
        layer_in = ys[0] if D == 1 else g.node("Concat", ys, f"{rec.name}/l{k}/concat_directions",
                                               axis=1 if step else 2)
        n_in = D * H

    def stack(parts: list[str], label: str) -> str:
        # [B, H] each -> [L*D, B, H]: one Concat [L*D*B, H] and a Reshape (an alias in onnxruntime) where an
        # Unsqueeze per part and a Concat cost a node more per part (0.7 us each at batch 1)
        if len(parts) == 1:
            return g.node("Unsqueeze", [parts[0], g.i64([0])], f"{rec.name}/{label}")
        rows = g.node("Concat", parts, f"{rec.name}/{label}_rows", axis=0)
        return g.node("Reshape", [rows, g.i64([len(parts), -1, H])], f"{rec.name}/{label}")

    return layer_in, stack(h_n, "h_n"), (stack(c_n, "c_n") if lstm else None)


__all__ = ["Gate", "Cell", "Recurrence", "emit", "KINDS"]
