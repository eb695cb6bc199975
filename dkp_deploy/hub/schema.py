"""ONNX schemas of the `ai.dkp` domain, registered with onnx so that checkers, onnxscript and tools accept them.

- ``DopedMatMul`` (hub node): Y = X @ W^T (+ bias) over X's last axis, W (M x N) = structured part + CSR W_s.
  Inputs by slot: X, F0, F1, F2 (the structure's factors: kron B, C; lmf U, V; hmd W_top, U, V; dense W), row_ptr,
  col_idx, values, bias; an absent optional input is the empty name. Attributes: ``structure``, ``shape``
  ([M, N]) and ``matrix`` (the matrix's name, for reports and validation).
- ``SparseMatVec`` (lowered node, the C++ op in ops/): Y = X @ W_s^T (+ Y0).
- ``DopedLinearRef``: the export front end's transient node (torch.onnx writes it, `dkp_deploy.export` rewrites
  it to a ``DopedMatMul`` before any file is written).
"""

from __future__ import annotations

from onnx import defs

DOMAIN = "ai.dkp"
VERSION = 1

_FLOATS = ["tensor(float)", "tensor(double)"]
_INDICES = ["tensor(int32)", "tensor(int64)"]


def _param(name: str, type_str: str, optional: bool = False, variadic: bool = False) -> defs.OpSchema.FormalParameter:
    option = defs.OpSchema.FormalParameterOption
    kind = option.Variadic if variadic else option.Optional if optional else option.Single
    return defs.OpSchema.FormalParameter(name, type_str, param_option=kind, is_homogeneous=not variadic)


def _schemas() -> list[defs.OpSchema]:
    attr = defs.OpSchema.Attribute
    kinds = defs.OpSchema.AttrType
    doped = defs.OpSchema(
        "DopedMatMul", DOMAIN, VERSION,
        doc="Y = X @ (structured + W_s)^T + bias over the last axis of X (see dkp_deploy.hub.schema).",
        inputs=[_param("X", "T"), _param("F0", "T", True), _param("F1", "T", True), _param("F2", "T", True),
                _param("row_ptr", "I", True), _param("col_idx", "I", True), _param("values", "T", True),
                _param("bias", "T", True)],
        outputs=[_param("Y", "T")],
        type_constraints=[("T", _FLOATS, "float tensors"), ("I", _INDICES, "CSR index tensors")],
        attributes=[attr("structure", kinds.STRING, "kron, lmf, hmd, none or dense (F0 = W)"),
                    attr("shape", kinds.INTS, "[M, N] of W"),
                    attr("matrix", kinds.STRING, "the matrix's name", required=False)],
    )
    sparse = defs.OpSchema(
        "SparseMatVec", DOMAIN, VERSION,
        doc="Y = X @ W^T (+ Y0) for the CSR matrix W (row_ptr, col_idx, values); the C++ op in dkp_deploy's ops.",
        inputs=[_param("X", "T"), _param("row_ptr", "I"), _param("col_idx", "I"), _param("values", "T"),
                _param("Y0", "T", True)],
        outputs=[_param("Y", "T")],
        type_constraints=[("T", ["tensor(float)"], "float"), ("I", ["tensor(int32)"], "int32 indices")],
    )
    ref = defs.OpSchema(
        "DopedLinearRef", DOMAIN, VERSION,
        doc="Transient node of dkp_deploy.export: a doped linear layer's input and parameters, never in a file.",
        inputs=[_param("inputs", "T", variadic=True)],
        outputs=[_param("Y", "F")],
        type_constraints=[("T", ["tensor(float)", "tensor(double)", "tensor(bool)"], "inputs"),
                          ("F", _FLOATS, "output")],
        attributes=[attr("config", kinds.STRING, "JSON: structure, shape, roles of the inputs, name")],
    )
    rec = defs.OpSchema(
        "RecurrentRef", DOMAIN, VERSION,
        doc="Transient node of dkp_deploy.export: a recurrent module (x, h0, c0, parameters), never in a file.",
        inputs=[_param("inputs", "T", variadic=True)],  # x, h0, c0, then the parameters
        outputs=[_param("y", "F"), _param("h_n", "F"), _param("c_n", "F")],
        type_constraints=[("T", ["tensor(float)", "tensor(double)", "tensor(bool)"], "inputs"),
                          ("F", _FLOATS, "outputs")],
        attributes=[attr("config", kinds.STRING, "JSON: kind, sizes, roles of the parameters, name")],
    )
    return [doped, sparse, ref, rec]


def register_schemas() -> None:
    """Register every `ai.dkp` schema with onnx (idempotent)."""
    for schema in _schemas():
        if not defs.has(schema.name, schema.domain):
            defs.register_schema(schema)


__all__ = ["DOMAIN", "VERSION", "register_schemas"]
