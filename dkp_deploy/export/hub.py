"""The torch.onnx model -> the hub: each transient `DopedLinearRef` becomes a `DopedMatMul` with CSR W_s, each
`DopedGatherRef` a `DopedGather` (a doped embedding), each `RecurrentRef` Scan bodies."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import numpy_helper

from ..converters.onnx.graph import Graph
from ..errors import InputError
from ..hub.embedding import DOPED_GATHER_REF, doped_gather_node
from ..hub.matrix import doped_matmul_node
from ..hub.schema import DOMAIN
from ..spec import CSR, FACTOR_NAMES, DopedMatrix


def _matrix(name: str, info: dict, parts: dict[str, np.ndarray]) -> tuple[DopedMatrix, np.ndarray | None]:
    """A matrix from its parameters: a dense W, or a doped layer's factors, W_s and mask."""
    bias = parts.get("bias")
    if info["structure"] == "dense":
        return DopedMatrix(tuple(parts["W"].shape), "dense", {"W": parts["W"].astype(np.float32)}), bias
    mask = parts["mask"]
    sparse = CSR.from_mask(parts["W_s"], mask) if mask.any() else None
    factors = {role: parts[role].astype(np.float32) for role in FACTOR_NAMES[info["structure"]]}
    w = DopedMatrix(tuple(info["shape"]), info["structure"], factors, sparse)
    w.check(name)
    return w, bias


def _recurrence(cfg: dict, arrays: dict[str, np.ndarray]):
    from ..hub.recurrent import Cell, Gate, Recurrence

    by_matrix: dict[str, dict[str, np.ndarray]] = {}
    for role, value in arrays.items():
        prefix, part = role.rsplit(".", 1)
        by_matrix.setdefault(prefix, {})[part] = value
    cells = []
    for i in range(cfg["num_layers"] * cfg["directions"]):
        gates = {}
        for which in ("ih", "hh", "cat"):
            key = f"{i}.{which}"
            if key in cfg["matrices"]:
                w, b = _matrix(f"{cfg['name']}.{key}", cfg["matrices"][key], by_matrix[key])
                gates[which] = Gate(w, b)
        if cfg["kind"] != "gru" and "ih" in gates and gates["hh"].bias is not None:
            # LSTM / RNN: b_hh adds to the hoisted W_ih x + b_ih (GRU keeps it: r multiplies W_hn h + b_hn)
            ih, hh = gates["ih"], gates["hh"]
            ih.bias = hh.bias if ih.bias is None else ih.bias + hh.bias
            hh.bias = None
        cells.append(Cell(**gates))
    return Recurrence(cfg["kind"], cfg["hidden_size"], cfg["num_layers"], cfg["directions"], cells, cfg["name"])


def to_hub(model: onnx.ModelProto, opset: int, mode: str = "sequence") -> onnx.ModelProto:
    """Rewrite `model` (from torch.onnx, with DopedLinearRef nodes) into a hub, in place; returns it."""
    graph = model.graph
    arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    g = Graph(opset)
    g.reserve(*arrays, *(i.name for i in graph.input), *(o.name for o in graph.output),
              *(o for n in graph.node for o in n.output), *(n.name for n in graph.node))
    ranks = {vi.name: len(vi.type.tensor_type.shape.dim) for vi in [*graph.input, *graph.value_info]
             if vi.type.tensor_type.HasField("shape")}
    out_ranks: dict[str, int] = {}
    nodes = []
    for node in graph.node:
        if not (node.domain == DOMAIN and node.op_type in ("DopedLinearRef", "RecurrentRef", DOPED_GATHER_REF)):
            nodes.append(node)
            continue
        cfg = json.loads(onnx.helper.get_attribute_value(node.attribute[0]).decode())
        name = cfg["name"]
        first = 3 if node.op_type == "RecurrentRef" else 1
        missing = [i for i in node.input[first:] if i not in arrays]
        if missing:
            raise InputError(f"layer {name!r}: its parameters must be constants of the model, but {missing} are "
                             "computed in the graph")
        parts = {role: arrays[i] for role, i in zip(cfg["roles"], node.input[first:])}
        start = len(g.nodes)
        if node.op_type == "RecurrentRef":
            out_ranks.update(dict.fromkeys(node.output, 3))
        elif node.op_type == DOPED_GATHER_REF:  # ids [...] -> rows [..., D]
            if node.input[0] in ranks or node.input[0] in out_ranks:
                out_ranks[node.output[0]] = ranks.get(node.input[0], out_ranks.get(node.input[0])) + 1
        elif node.input[0] in ranks or node.input[0] in out_ranks:
            out_ranks[node.output[0]] = ranks.get(node.input[0], out_ranks.get(node.input[0]))
        if node.op_type == "DopedLinearRef":
            w, bias = _matrix(name, cfg, parts)
            doped_matmul_node(g, node.input[0], w, bias, name, output=node.output[0])
        elif node.op_type == DOPED_GATHER_REF:
            doped_gather_node(g, node.input[0], _matrix(name, cfg, parts)[0], name, output=node.output[0])
        else:
            from ..hub.recurrent import emit

            x, step = node.input[0], mode == "step"
            if step:  # torch's recurrence reads and writes [T = 1, B, ...]; emit's step graph [B, ...]
                x = g.node("Squeeze", [x, g.i64([0])], f"{name}/x_t")
            y, hn, cn = emit(g, x, node.input[1], node.input[2], _recurrence(cfg, parts), cfg["input_size"],
                             step=step)
            if step:
                y = g.node("Unsqueeze", [y, g.i64([0])], f"{name}/y")
            for old, new in zip((y, hn, cn if cn is not None else g.node("Identity", [hn], f"{name}/c_n")),
                                node.output):
                g.rename_output(old, new)
        nodes.extend(g.nodes[start:])
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(g.initializers.values())
    for vi in graph.output:  # the outputs of our ops reach torch.onnx untyped: float tensors of known rank
        if not vi.HasField("type") and vi.name in out_ranks:
            vi.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
            for _ in range(out_ranks[vi.name]):
                vi.type.tensor_type.shape.dim.add()
    typed = [vi for vi in graph.value_info if vi.HasField("type")]  # torch.onnx leaves some untyped
    del graph.value_info[:]
    graph.value_info.extend(typed)
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return model


__all__ = ["to_hub"]
