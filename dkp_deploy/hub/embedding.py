"""`DopedGather` hub nodes: a doped embedding table W (V x D) = kron(B, C) + W_s, looked up by integer ids.

- ``DopedGather`` (hub node): Y[..., :] = W[indices[...], :], Y of shape indices.shape + [D]. Inputs by slot:
  indices (int32 / int64, any shape), B (V1 x D1), C (V2 x D2), row_ptr, col_idx, values (the CSR W_s, all three
  or none). Attributes: ``structure`` ("kron"), ``shape`` ([V, D]) and ``matrix`` (the table's name).
- ``DopedGatherRef``: the export front end's transient node (ids, then the layer's parameters by the roles in its
  JSON ``config``), rewritten to a ``DopedGather`` before any file is written.

Registered with onnx from `dkp_deploy.hub.schema.register_schemas`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import TypeProto, defs, shape_inference

from ..errors import InputError
from ..spec import DopedMatrix
from .matrix import constant_inputs, matrix_name, node_header, sparse_part
from .schema import DOMAIN, VERSION, _param

DOPED_GATHER = "DopedGather"
DOPED_GATHER_REF = "DopedGatherRef"
_SLOTS = ("indices", "B", "C", "row_ptr", "col_idx", "values")


def _infer(ctx: shape_inference.InferenceContext) -> None:
    """Y: B's element type, shape indices.shape + [D] (D from the `shape` attribute)."""
    ids, b = ctx.get_input_type(0), ctx.get_input_type(1) if ctx.has_input(1) else None
    if ids is None or b is None or not b.HasField("tensor_type"):
        return
    shape = ctx.get_attribute("shape")
    y = TypeProto()
    y.tensor_type.elem_type = b.tensor_type.elem_type
    if ids.tensor_type.HasField("shape"):
        for d in ids.tensor_type.shape.dim:
            y.tensor_type.shape.dim.add().CopyFrom(d)
        last = y.tensor_type.shape.dim.add()
        if shape is not None and len(shape.ints) == 2:
            last.dim_value = shape.ints[1]
    ctx.set_output_type(0, y)


def schemas() -> list[defs.OpSchema]:
    attr, kinds = defs.OpSchema.Attribute, defs.OpSchema.AttrType
    floats, indices = ["tensor(float)", "tensor(double)"], ["tensor(int32)", "tensor(int64)"]
    gather = defs.OpSchema(
        DOPED_GATHER, DOMAIN, VERSION,
        doc="Y = W[indices] for the table W (V x D) = kron(B, C) + W_s (CSR); see dkp_deploy.hub.embedding.",
        inputs=[_param("indices", "I"), _param("B", "T"), _param("C", "T"), _param("row_ptr", "J", True),
                _param("col_idx", "J", True), _param("values", "T", True)],
        outputs=[_param("Y", "T")],
        type_constraints=[("T", floats, "float tensors"), ("I", indices, "ids"), ("J", indices, "CSR indices")],
        attributes=[attr("structure", kinds.STRING, "kron"), attr("shape", kinds.INTS, "[V, D] of W"),
                    attr("matrix", kinds.STRING, "the table's name", required=False)],
    )
    gather.set_type_and_shape_inference_function(_infer)
    ref = defs.OpSchema(
        DOPED_GATHER_REF, DOMAIN, VERSION,
        doc="Transient node of dkp_deploy.export: a doped embedding's ids and parameters, never in a file.",
        inputs=[_param("inputs", "T", variadic=True)],
        outputs=[_param("Y", "F")],
        type_constraints=[("T", [*floats, *indices, "tensor(bool)"], "inputs"), ("F", floats, "output")],
        attributes=[attr("config", kinds.STRING, "JSON: structure, shape, roles of the inputs, name")],
    )
    return [gather, ref]


def register_schemas() -> None:
    """Register DopedGather and DopedGatherRef with onnx (idempotent)."""
    for schema in schemas():
        if not defs.has(schema.name, schema.domain):
            defs.register_schema(schema)


def doped_gather_node(g, ids: str, w: DopedMatrix, name: str, output: str | None = None) -> str:
    """Emit one DopedGather into the `Graph` builder `g` (its tensors become initializers); return Y's name."""
    if w.structure != "kron":
        raise InputError(f"embedding {name!r}: a DopedGather table is kron(B, C) + W_s, not {w.structure!r}")
    inputs = [ids, g.init(f"{name}/B", np.asarray(w.factors["B"], np.float32)),
              g.init(f"{name}/C", np.asarray(w.factors["C"], np.float32))]
    if w.sparse is not None and w.sparse.nnz:
        sp = w.sparse
        inputs += [g.init(f"{name}/W_s/row_ptr", sp.row_ptr.astype(np.int32)),
                   g.init(f"{name}/W_s/col_idx", sp.col_idx.astype(np.int32)),
                   g.init(f"{name}/W_s/values", sp.values.astype(np.float32))]
    return g.node(DOPED_GATHER, inputs, f"{name}/doped_gather", domain=DOMAIN, outputs=[output] if output else 1,
                  structure="kron", shape=list(w.shape), matrix=name)


def read_doped_gather(node: onnx.NodeProto, arrays: Mapping[str, np.ndarray]) -> DopedMatrix:
    """The table a DopedGather node holds, checked (`InputError`); its tensors must be constants (`arrays`)."""
    label, structure, (v, d) = node_header(node, "[V, D]")
    if structure != "kron":
        raise InputError(f"node {label!r}: DopedGather structure must be 'kron', got {structure!r}")
    if len(node.input) > len(_SLOTS):
        raise InputError(f"node {label!r}: DopedGather takes {len(_SLOTS)} inputs, got {len(node.input)}")
    t = constant_inputs(node, (None, *_SLOTS[1:]), arrays)
    if "B" not in t or "C" not in t:
        raise InputError(f"node {label!r}: DopedGather needs factors B and C")
    factors = {k: t[k].astype(np.float32) if t[k].dtype.kind == "f" else t[k] for k in ("B", "C")}
    w = DopedMatrix((v, d), "kron", factors, sparse_part(label, (v, d), t))
    w.check(matrix_name(node))
    return w


__all__ = ["DOPED_GATHER", "DOPED_GATHER_REF", "doped_gather_node", "read_doped_gather",
           "register_schemas", "schemas"]
