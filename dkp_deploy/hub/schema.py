"""ONNX schemas of the `ai.dkp` domain, registered with onnx so that checkers, onnxscript and tools accept them.

- ``DopedMatMul`` (hub node): Y = X @ W^T (+ bias) over X's last axis, W (M x N) = structured part + CSR W_s.
  Inputs by slot: X, F0, F1, F2 (the structure's factors: kron B, C; lmf U, V; hmd W_top, U, V; dense W), row_ptr,
  col_idx, values, bias; an absent optional input is the empty name. Attributes: ``structure``, ``shape``
  ([M, N]) and ``matrix`` (the matrix's name, for reports and validation).
- ``SparseMatVec`` (lowered node, the C++ op in ops/): Y = X @ W_s^T (+ Y0); col_idx int32 or uint16, or uint8
  column gaps (each entry's column minus the previous entry's in its row; what the converters write). Optional
  B [M1, N1] and C_T [N2, M2] after Y0 add the Kronecker half, kron(B, C) @ x, in the same node (all three ops;
  SparseMatVecInteger on a uint8 X reads that half's float x from a last input, X_kron).
- ``SparseMatVecInt8`` (lowered node, the same C++ op with int8 values): inputs X, row_ptr, col_idx, values (int8),
  row_scale ([M], W_s[i, :] = row_scale[i] * values), Y0.
- ``SparseMatVecInteger`` (lowered node of int8-dynamic files): inputs X (uint8, from DynamicQuantizeLinear),
  row_ptr, col_idx, values (int8), row_scale, x_scale (float scalar), x_zero_point (uint8 scalar), Y0; Y (float) =
  x_scale * row_scale[i] * sum_k values[k] * (X[..., col_idx[k]] - x_zero_point) (+ Y0), X's shape with last dim M.
  Or X float32 with x_scale and x_zero_point empty (what the converters write): the node quantizes X as
  DynamicQuantizeLinear does, then the same, and the Kronecker half reads that quantization too
  (x_scale * (X_q - x_zero_point)); X_kron is then left out.
- ``LSTMCell`` (lowered node, the C++ op in ops/): one LSTM step's nonlinearities and state update; inputs gates
  [..., 4H] (torch's order i, f, g, o, bias included) and c [..., H]; outputs h_next = sigmoid(o) * tanh(c_next)
  and c_next = sigmoid(f) * c + sigmoid(i) * tanh(g), both c's shape. The custom lowering fuses the hub's cell
  (Split, Sigmoid, Tanh, Mul, Add) into it (`dkp_deploy.lower.lstm_cell`).
- ``DopedLinearRef``: the export front end's transient node (torch.onnx writes it, `dkp_deploy.export` rewrites
  it to a ``DopedMatMul`` before any file is written).
"""

from __future__ import annotations

from onnx import TensorProto, TypeProto, defs, shape_inference

DOMAIN = "ai.dkp"
VERSION = 1

_FLOATS = ["tensor(float)", "tensor(double)"]
_INDICES = ["tensor(int32)", "tensor(int64)"]


def _param(name: str, type_str: str, optional: bool = False, variadic: bool = False) -> defs.OpSchema.FormalParameter:
    option = defs.OpSchema.FormalParameterOption
    kind = option.Variadic if variadic else option.Optional if optional else option.Single
    return defs.OpSchema.FormalParameter(name, type_str, param_option=kind, is_homogeneous=not variadic)


def _rows_output(ctx: shape_inference.InferenceContext, rows: int | None, elem_type: int | None = None) -> None:
    """Y: X's element type (or `elem_type`), X's leading dims and `rows` (unknown when None) as the last one."""
    x = ctx.get_input_type(0)
    if x is None or not x.HasField("tensor_type"):
        return
    y = TypeProto()
    y.tensor_type.elem_type = x.tensor_type.elem_type if elem_type is None else elem_type
    if x.tensor_type.HasField("shape") and len(x.tensor_type.shape.dim):
        for d in list(x.tensor_type.shape.dim)[:-1]:
            y.tensor_type.shape.dim.add().CopyFrom(d)
        last = y.tensor_type.shape.dim.add()
        if rows is not None:
            last.dim_value = rows
    ctx.set_output_type(0, y)


def _infer_doped_matmul(ctx: shape_inference.InferenceContext) -> None:
    shape = ctx.get_attribute("shape")
    _rows_output(ctx, shape.ints[0] if shape is not None and len(shape.ints) == 2 else None)


def _infer_sparse_matvec(ctx: shape_inference.InferenceContext, y0: int = 4, elem_type: int | None = None) -> None:
    # M from row_ptr [M + 1] when its shape is static, else from Y0's last dim
    rows = None
    for i, minus in ((1, 1), (y0, 0)):
        t = ctx.get_input_type(i) if ctx.has_input(i) else None
        if t is not None and t.tensor_type.HasField("shape") and len(t.tensor_type.shape.dim):
            d = t.tensor_type.shape.dim[-1 if i == y0 else 0]
            if d.HasField("dim_value"):
                rows = d.dim_value - minus
                break
    _rows_output(ctx, rows, elem_type)


def _infer_lstm_cell(ctx: shape_inference.InferenceContext) -> None:
    c = ctx.get_input_type(1)
    if c is not None and c.HasField("tensor_type"):
        for i in range(2):
            ctx.set_output_type(i, c)


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
    # col_idx: int32 or uint16 columns, or uint8 column gaps (each entry's column minus the previous one's in its row)
    _COLUMNS = ("C", ["tensor(int32)", "tensor(uint16)", "tensor(uint8)"], "column indices, or uint8 column gaps")
    sparse = defs.OpSchema(
        "SparseMatVec", DOMAIN, VERSION,
        doc="Y = X @ W^T (+ Y0) for the CSR matrix W (row_ptr, col_idx, values); the C++ op in dkp_deploy's ops.",
        inputs=[_param("X", "T"), _param("row_ptr", "I"), _param("col_idx", "C"), _param("values", "T"),
                _param("Y0", "T", True), _param("B", "T", True), _param("C_T", "T", True)],
        outputs=[_param("Y", "T")],
        type_constraints=[("T", ["tensor(float)"], "float"), ("I", ["tensor(int32)"], "int32 row pointers"),
                          _COLUMNS],
    )
    sparse_int8 = defs.OpSchema(
        "SparseMatVecInt8", DOMAIN, VERSION,
        doc="Y = X @ W^T (+ Y0), W[i, :] = row_scale[i] * the int8 CSR row i; the C++ op in dkp_deploy's ops.",
        inputs=[_param("X", "T"), _param("row_ptr", "I"), _param("col_idx", "C"), _param("values", "Q"),
                _param("row_scale", "T"), _param("Y0", "T", True), _param("B", "T", True), _param("C_T", "T", True)],
        outputs=[_param("Y", "T")],
        type_constraints=[("T", ["tensor(float)"], "float"), ("I", ["tensor(int32)"], "int32 row pointers"),
                          _COLUMNS,
                          ("Q", ["tensor(int8)"], "int8 values")],
    )
    sparse_integer = defs.OpSchema(
        "SparseMatVecInteger", DOMAIN, VERSION,
        doc="Y = x_scale * row_scale[i] * sum_k values[k] * (X[..., col_idx[k]] - x_zero_point) (+ Y0): the int8 "
            "CSR W_s times uint8 X from DynamicQuantizeLinear, or times float X quantized by the node the same way "
            "(x_scale, x_zero_point empty); the C++ op in dkp_deploy's ops.",
        inputs=[_param("X", "X"), _param("row_ptr", "I"), _param("col_idx", "C"), _param("values", "Q"),
                _param("row_scale", "T"), _param("x_scale", "T", True), _param("x_zero_point", "U", True),
                _param("Y0", "T", True), _param("B", "T", True), _param("C_T", "T", True),
                _param("X_kron", "T", True)],
        outputs=[_param("Y", "T")],
        type_constraints=[("T", ["tensor(float)"], "float"), ("I", ["tensor(int32)"], "int32 row pointers"),
                          _COLUMNS,
                          ("Q", ["tensor(int8)"], "int8 values"), ("U", ["tensor(uint8)"], "uint8 zero point"),
                          ("X", ["tensor(uint8)", "tensor(float)"], "uint8 activations, or float ones to quantize")],
    )
    cell = defs.OpSchema(
        "LSTMCell", DOMAIN, VERSION,
        doc="h_next, c_next of one LSTM step from the gate pre-activations [..., 4H] (i, f, g, o) and c [..., H]; "
            "the C++ op in dkp_deploy's ops.",
        inputs=[_param("gates", "T"), _param("c", "T")],
        outputs=[_param("h_next", "T"), _param("c_next", "T")],
        type_constraints=[("T", ["tensor(float)"], "float")],
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
    doped.set_type_and_shape_inference_function(_infer_doped_matmul)
    sparse.set_type_and_shape_inference_function(_infer_sparse_matvec)
    sparse_int8.set_type_and_shape_inference_function(lambda ctx: _infer_sparse_matvec(ctx, y0=5))
    sparse_integer.set_type_and_shape_inference_function(
        lambda ctx: _infer_sparse_matvec(ctx, y0=7, elem_type=TensorProto.FLOAT))
    cell.set_type_and_shape_inference_function(_infer_lstm_cell)
    return [doped, sparse, sparse_int8, sparse_integer, cell, ref, rec]


def register_schemas() -> None:
    """Register every `ai.dkp` schema with onnx (idempotent)."""
    for schema in _schemas():
        if not defs.has(schema.name, schema.domain):
            defs.register_schema(schema)
    from .embedding import register_schemas as register_embedding  # DopedGather, DopedGatherRef

    register_embedding()


__all__ = ["DOMAIN", "VERSION", "register_schemas"]
