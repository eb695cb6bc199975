"""Lower a hub (standard ops + `ai.dkp::DopedMatMul`) to a target ONNX model.

One pass over the graph: each DopedMatMul is replaced by the nodes of the `sparse_impl` rule (``custom``: kron
as two reshaped MatMuls + ``ai.dkp::SparseMatVec``; ``portable``: standard ops only; ``dense``: the folded W,
the baseline), emitted by `dkp_deploy.converters.onnx.matrix.lower`, which holds the per-impl rules. Everything
else is kept as it is, except that the custom rule also fuses each LSTM cell into one ``ai.dkp::LSTMCell``
(`dkp_deploy.lower.lstm_cell`). The pass also records, per matrix, which tensors of the file hold which part (the
``dkp.layers`` metadata `dkp-validate` rebuilds each W from).
"""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..converters.onnx import matrix as rules
from ..converters.onnx.graph import Graph, all_graphs
from ..hub.embedding import DOPED_GATHER
from ..hub.matrix import DOPED_MATMUL, matrix_name, read_doped_matmul
from ..hub.schema import DOMAIN
from ..quantize import check_mode, gather_tables
from ..spec import DopedMatrix
from .embedding import lower_doped_gather, lower_int8_gather
from .lstm_cell import fuse_lstm_cells

SPARSE_IMPLS = rules.SPARSE_IMPLS


def _ranks(graph: onnx.GraphProto) -> dict[str, int]:
    """Known ranks of the graph's values (inputs, outputs, value_info, initializers)."""
    out: dict[str, int] = {}
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        t = vi.type.tensor_type
        if t.HasField("shape"):
            out[vi.name] = len(t.shape.dim)
    for t in graph.initializer:
        out[t.name] = len(t.dims)
    return out


def _layer_summary(w: DopedMatrix, roles: dict[str, str]) -> dict:
    m, n = w.shape
    return {"shape": [m, n], "structure": w.structure,
            "factor_shapes": {k: list(v.shape) for k, v in w.factors.items()}, "nnz": w.nnz,
            "compression_factor": w.compression_factor(), "tensors": roles}


def _all_names(graph: onnx.GraphProto) -> set[str]:
    """Every value and node name of `graph` and its subgraphs (a subgraph must not shadow an outer name)."""
    names: set[str] = set()
    for sub in all_graphs(graph):
        names.update(t.name for t in sub.initializer)
        names.update(v.name for v in [*sub.input, *sub.output, *sub.value_info])
        for n in sub.node:
            names.update(n.output)
            names.add(n.name)
    return names


def lower_graph(
    graph: onnx.GraphProto, impl: str, opset: int, layers: dict[str, dict], names: set[str] | None = None,
    quantize: str | None = None,
) -> None:
    """Rewrite the DopedMatMul nodes of `graph` in place (subgraphs too); fill `layers` per matrix.

    `names`: the names taken in the whole model, shared by the subgraphs' rewrites so new names stay unique."""
    names = _all_names(graph) if names is None else names
    arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    ranks = _ranks(graph)
    # tensors only hub nodes read are replaced by the lowered ones: drop them now, so their names are free
    free = _hub_only(graph)
    names.difference_update(free)
    kept = [t for t in graph.initializer if t.name not in free]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    g = Graph(opset)
    g.share_names(names)
    for name, array in arrays.items():  # a lowered tensor equal to one the graph holds (tied weights) is shared
        if name not in free:
            g.adopt(name, array)
    tables = gather_tables(graph) if quantize else set()  # embedding tables int8 files (both modes) store as int8
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type == "Gather" and node.input and node.input[0] in tables:
            start = len(g.nodes)
            lower_int8_gather(g, node, arrays[node.input[0]])
            nodes.extend(g.nodes[start:])
            continue
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                lower_graph(a.g, impl, opset, layers, names, quantize)
        if node.domain == DOMAIN and node.op_type == DOPED_GATHER:  # a doped embedding: lower/embedding.py
            start = len(g.nodes)
            name, info = lower_doped_gather(g, node, arrays, impl, quantize)
            layers[name] = info
            nodes.extend(g.nodes[start:])
            continue
        if not (node.domain == DOMAIN and node.op_type == DOPED_MATMUL):
            nodes.append(node)
            continue
        w, bias = read_doped_matmul(node, arrays)
        name = matrix_name(node)
        start = len(g.nodes)
        x, (m, n) = node.input[0], w.shape
        flat = ranks.get(x) != 2
        if flat:  # the rules take [batch, N]: fold the leading axes into one and restore them after
            lead = g.node("Shape", [x], f"{name}/lead_shape", start=0, end=-1)
            x = g.node("Reshape", [x, g.i64([-1, n])], f"{name}/flatten")
        roles: dict[str, str] = {}
        y = rules.lower(g, x, w, bias, name, impl, roles, quantize)
        if flat:
            shape = g.node("Concat", [lead, g.i64([m])], f"{name}/out_shape", axis=0)
            y = g.node("Reshape", [y, shape], f"{name}/unflatten")
        if y == x or y in arrays:  # the rule returned an existing tensor: give the node's output a name
            y = g.node("Identity", [y], f"{name}/identity")
        g.rename_output(y, node.output[0])
        nodes.extend(g.nodes[start:])
        layers[name] = _layer_summary(w, roles)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(g.initializers.values())
    _drop_unused_initializers(graph)


def _hub_only(graph: onnx.GraphProto) -> set[str]:
    """Initializers of `graph` that only its hub nodes read (no other node, subgraph, graph input or output)."""
    other = {o.name for o in graph.output} | {i.name for i in graph.input}
    hub_used: set[str] = set()
    for node in graph.node:
        if node.domain == DOMAIN and node.op_type in (DOPED_MATMUL, DOPED_GATHER):
            hub_used.update(node.input)
        else:
            other.update(node.input)
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                other |= _used_names(a.g)
    return {t.name for t in graph.initializer if t.name in hub_used and t.name not in other}


def _used_names(graph: onnx.GraphProto) -> set[str]:
    used = {o.name for o in graph.output}
    for node in graph.node:
        used.update(node.input)
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                used |= _used_names(a.g)  # outer-scope references from subgraphs
    return used


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    used = _used_names(graph)
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    inputs = {i.name for i in graph.input}
    keep_vi = [v for v in graph.value_info if v.name in used or v.name in inputs]
    del graph.value_info[:]
    graph.value_info.extend(keep_vi)


def _type_custom_outputs(model: onnx.ModelProto) -> None:
    """Write the inferred type and shape of every ai.dkp node's output into the file's value_info.

    Tools that do not know the domain (onnxruntime's quantizer, onnxsim, polygraphy, strict shape inference in a
    process without dkp_deploy) then still see typed values downstream of the op."""
    from ..hub.schema import register_schemas

    register_schemas()
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # inference is a courtesy to other tools: a graph it cannot follow stays as it is
        return
    for graph, typed in zip(all_graphs(model.graph), all_graphs(inferred.graph)):
        wanted = {o for n in graph.node if n.domain == DOMAIN for o in n.output}
        have = {v.name for v in [*graph.value_info, *graph.output]}
        graph.value_info.extend(v for v in typed.value_info if v.name in wanted and v.name not in have)


def lower(hub: onnx.ModelProto, impl: str = "custom", quantize: str | None = None) -> onnx.ModelProto:
    """A lowered copy of `hub` for `impl` (custom, portable or dense), with the dkp.layers metadata.

    `quantize="int8"`: the doped matrices in the int8 forms of `dkp_deploy.quantize` (custom and portable);
    `"int8-dynamic"`: the same, with each doped matrix's input quantized at run time (DynamicQuantizeLinear)."""
    if impl not in SPARSE_IMPLS:
        raise ValueError(f"sparse_impl must be one of {SPARSE_IMPLS}, got {impl!r}")
    check_mode(quantize)
    if quantize and impl == "dense":
        raise ValueError(f"quantize={quantize!r} applies to the doped lowerings (custom, portable); for a dense "
                         "int8 baseline use onnxruntime.quantization.quantize_dynamic")
    model = onnx.ModelProto()
    model.CopyFrom(hub)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    layers: dict[str, dict] = {}
    lower_graph(model.graph, impl, opset, layers, quantize=quantize)
    if impl == "custom":
        model = fuse_lstm_cells(model)
        for graph in all_graphs(model.graph):  # a fused cell's Split sizes, in a Scan body
            _drop_unused_initializers(graph)
    uses_dkp = any(n.domain == DOMAIN for g in all_graphs(model.graph) for n in g.node)
    imports = [o for o in model.opset_import if o.domain != DOMAIN]
    if uses_dkp:
        imports.append(helper.make_opsetid(DOMAIN, 1))
    del model.opset_import[:]
    model.opset_import.extend(imports)
    if uses_dkp:
        _type_custom_outputs(model)
    meta = {p.key: p.value for p in model.metadata_props}
    meta.pop("dkp.hub", None)  # a lowered file is not a hub: it cannot be lowered again
    meta.update({"dkp.sparse_impl": impl, "dkp.layers": json.dumps(layers, sort_keys=True)})
    if quantize:
        meta["dkp.quantize"] = quantize
    total = sum(info["shape"][0] * info["shape"][1] for info in layers.values())
    stored = sum(sum(int(np.prod(s)) for s in info["factor_shapes"].values()) + info["nnz"]
                 for info in layers.values())
    if stored:
        meta["dkp.compression_factor"] = f"{total / stored:.6g}"
    helper.set_model_props(model, meta)
    return model


__all__ = ["lower", "lower_graph", "SPARSE_IMPLS"]
