"""A hub (standard ONNX ops + `ai.dkp::DopedMatMul`, from `dkp_deploy.export`) -> a .tflite file of builtin ops.

Every node is translated by the rule registered for its op type (`rules/`), on shapes inferred by onnx (a
symbolic dimension becomes TFLite's dynamic -1, resized at run time); doped matrices take the native TFLite rule
(kron as two FULLY_CONNECTEDs, W_s as a sparse FULLY_CONNECTED, 1 x 4 block sparse where W_s is in blocks). Exact
GELU, which torch.onnx writes as its erf formula, becomes TFLite's GELU. Recurrences translate in step mode
(`export(..., mode="step")`: the bodies inlined); a Scan (sequence mode) has no translation yet.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from ... import __version__
from ...errors import InputError
from ...fileio import atomic_output
from ..metadata import FORMAT_VERSION
from .graph import BATCH, MAX_FILE_BYTES, Graph, Op
from .graph import reshape as reshape_options
from .rules import RULES, Context

_NP = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.INT64: np.int64, onnx.TensorProto.INT32: np.int32,
       onnx.TensorProto.DOUBLE: np.float32, onnx.TensorProto.BOOL: np.bool_}


def _shapes(model: onnx.ModelProto) -> tuple[dict[str, tuple[int, ...]], dict[str, np.dtype]]:
    from ...hub.schema import register_schemas

    register_schemas()
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)  # data_prop: shapes computed by Shape ops
    shapes, dtypes = {}, {}
    from ..onnx.graph import all_graphs

    for g in all_graphs(inferred.graph):  # Scan bodies too (their value names are unique in a hub)
        for vi in [*g.input, *g.value_info, *g.output]:
            t = vi.type.tensor_type
            if t.HasField("shape"):
                shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else BATCH for d in t.shape.dim)
            if t.elem_type in _NP:
                dtypes[vi.name] = np.dtype(_NP[t.elem_type])
        for init in g.initializer:
            shapes[init.name] = tuple(init.dims)
    return shapes, dtypes


def _close(value: np.ndarray | None, want: float) -> bool:
    return value is not None and value.size == 1 and abs(float(value.ravel()[0]) - want) < 1e-6 * max(1.0, want)


def _fuse_gelu(nodes: list[onnx.NodeProto], consts: dict[str, np.ndarray]) -> list[onnx.NodeProto]:
    """x * 0.5 * (1 + erf(x / sqrt 2)) (torch.onnx's exact GELU, any association of the products) -> one Gelu."""
    producer = {o: n for n in nodes for o in n.output}
    users: dict[str, list[onnx.NodeProto]] = {}
    for n in nodes:
        for i in n.input:
            users.setdefault(i, []).append(n)
    drop: set[int] = set()
    replace: dict[int, onnx.NodeProto] = {}
    for erf in (n for n in nodes if n.op_type == "Erf"):
        div = producer.get(erf.input[0])
        if div is None or not (div.op_type == "Div" and _close(consts.get(div.input[1]), 2 ** 0.5)
                               or div.op_type == "Mul" and _close(consts.get(div.input[1]), 2 ** -0.5)):
            continue
        x = div.input[0]
        add = users.get(erf.output[0], [None])[0]
        if add is None or add.op_type != "Add" or not _close(consts.get(next(i for i in add.input
                                                                          if i != erf.output[0])), 1.0):
            continue
        chain, value, leaves = [], add.output[0], []
        while len(chain) < 2 and len(users.get(value, [])) == 1 and users[value][0].op_type == "Mul":
            mul = users[value][0]
            other = next(i for i in mul.input if i != value)
            inner = producer.get(other)
            if inner is not None and inner.op_type == "Mul" and len(users.get(other, [])) == 1:
                leaves += list(inner.input)
                chain.append(inner)
            else:
                leaves.append(other)
            chain.append(mul)
            value = mul.output[0]
        halves = [v for v in leaves if _close(consts.get(v), 0.5)]
        if sorted(leaves) != sorted([x, *halves]) or len(halves) != 1:
            continue
        for n in (div, erf, add, *chain[:-1]):
            drop.add(id(n))
        replace[id(chain[-1])] = onnx.helper.make_node("Gelu", [x], [chain[-1].output[0]], name=f"{erf.name}/gelu")
    return [replace.get(id(n), n) for n in nodes if id(n) not in drop]


def translate(hub: onnx.ModelProto) -> tuple[Graph, list[int], list[int], dict[str, dict]]:
    """The TFLite graph of `hub`, its signature inputs / outputs and the doped matrices' tensors by role."""
    graph = hub.graph
    shapes, dtypes = _shapes(hub)
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    nodes = list(graph.node)
    for n in nodes:
        if n.op_type == "Constant":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    nodes = _fuse_gelu([n for n in nodes if n.op_type != "Constant"], consts)
    g = Graph()
    g.reserve(*(i.name for i in graph.input), *(o.name for o in graph.output))
    ctx = Context(g, shapes, dtypes, consts)
    inputs = [i for i in graph.input if i.name not in consts]
    ins = []
    for vi in inputs:
        dtype = dtypes.get(vi.name)
        if dtype is None:
            raise InputError(f"graph input {vi.name!r}: unsupported type")
        ins.append(g.input(vi.name, dtype, shapes[vi.name]))
        ctx.bind(vi.name, ins[-1])
    for node in nodes:
        fn = RULES.get((node.domain or "", node.op_type))
        if fn is None:
            raise InputError(f"TFLite: no translation for ONNX op {node.op_type} (node {node.name!r})")
        fn(ctx, node)
    outs = []
    for vi in graph.output:
        t = ctx.tensor(vi.name)
        if t in ins or t in outs or g.tensors[t].buffer:  # an input, another output or a constant: its own copy
            shape = shapes[vi.name]
            target = g.const(f"{vi.name}/shape", np.array(shape, np.int32))
            t = g.op1(Op.RESHAPE, [t, target], vi.name, shape, reshape_options(), dtype=g.tensors[t].dtype)
        g.rename(t, vi.name)
        outs.append(t)
    return g, ins, outs, ctx.layers


def write(hub: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Translate `hub` and write the .tflite file atomically; metadata as the native converter writes it."""
    g, ins, outs, layers = translate(hub)
    if sum(len(b) for b in g.buffers) > MAX_FILE_BYTES:
        raise InputError("model exceeds the 2 GiB limit of a single TFLite flatbuffer", path)
    hub_meta = {p.key: p.value for p in hub.metadata_props}
    total = sum(v["shape"][0] * v["shape"][1] for v in layers.values())
    stored = sum(sum(int(np.prod(s)) for s in v["factor_shapes"].values()) + v["nnz"] for v in layers.values())
    meta = {"dkp.format_version": str(FORMAT_VERSION), "dkp.mode": hub_meta.get("dkp.mode", "sequence"),
            "dkp.front_end": hub_meta.get("dkp.front_end", "dkp_deploy.export"),
            "dkp.layers": json.dumps(layers, sort_keys=True), "dkp.tool_version": __version__}
    if stored:
        meta["dkp.compression_factor"] = f"{total / stored:.6g}"
    data = g.serialize(ins, outs, meta, description=f"dkp-deploy {__version__}")
    with atomic_output(path) as tmp:
        Path(tmp).write_bytes(data)
    return Path(path)


__all__ = ["translate", "write"]
